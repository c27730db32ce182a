//! `spec.routing` of a ZonalScaledObject, and the objects redbridge owns to set zone traffic
//! weights through the gateway: one of an HTTPRoute (any Gateway API implementation), an Envoy
//! Gateway BackendTrafficPolicy, or an Istio DestinationRule. Pure: the render functions build the
//! server-side apply bodies from the CR and [`Weights`]; the controller applies them.
//!
//! | mode           | object                          | lever                                         | per source zone |
//! |----------------|---------------------------------|-----------------------------------------------|-----------------|
//! | `httpRoute`    | HTTPRoute, one Service per zone | `backendRefs[].weight` (0 to 1,000,000)        | no: `shares`    |
//! | `envoyGateway` | BackendTrafficPolicy            | `loadBalancer.zoneAware.weightedZones` (>= 1) | no: `shares`    |
//! | `istio`        | DestinationRule                 | `localityLbSetting.distribute` (sum 100)      | yes: `flows`    |
//!
//! HTTPRoute weights and `weightedZones` are the same for every gateway pod, so they set how much
//! each zone serves, not which requests stay in their zone; Istio's `distribute` is per source
//! locality and keeps requests local where the weights do.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, GroupVersionKind};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::k8s::{dns_label, MANAGED_BY, OWNER_LABEL};
use crate::zonal::weights::{
    envoy_zone_weights, http_route_weights, istio_distribute, Policy, Weights,
    ENVOY_ZONE_WEIGHT_SCALE, HTTP_ROUTE_WEIGHT_TOTAL, ISTIO_WEIGHT_TOTAL,
};

/// The owner's `apiVersion` and `kind`, as `crd.rs` declares the ZonalScaledObject (its tests
/// check they agree; this file cannot name the type, which embeds [`RoutingSpec`]).
pub const OWNER_API_VERSION: &str = "redbridge.io/v1alpha1";
pub const OWNER_KIND: &str = "ZonalScaledObject";

/// How redbridge moves traffic between zones. Exactly one mode; remove `spec.routing` to leave
/// routing to the gateway (redbridge then deletes what it wrote).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "(has(self.httpRoute) ? 1 : 0) + (has(self.envoyGateway) ? 1 : 0) + (has(self.istio) ? 1 : 0) == 1"
).message("exactly one of httpRoute, envoyGateway and istio is required; remove spec.routing to turn routing off"))]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// redbridge writes an HTTPRoute with one backend per zone (the zone's `service`), weighted.
    /// Works with every Gateway API implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteRouting>,
    /// redbridge writes an Envoy Gateway (v1.8 or later) BackendTrafficPolicy on your HTTPRoute
    /// with a weight per zone (`loadBalancer.zoneAware.weightedZones`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_gateway: Option<EnvoyGatewayRouting>,
    /// redbridge writes an Istio DestinationRule for the model's Service with a split per source
    /// zone (`localityLbSetting.distribute`) and the outlier detection it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// Smallest change of a weight, in percentage points, that is written. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub change_threshold: Option<i32>,
    /// Largest change of a weight per update, in percentage points. Default 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_step: Option<i32>,
    /// Shortest time between two changes of the weights. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub min_change_interval: Option<String>,
}

/// An HTTPRoute redbridge owns: the parents, hostnames and matches given here, and one rule whose
/// backends are the zones' Services (`spec.zones[].service`), weighted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRouting {
    /// The Gateways (or other parents) the route attaches to, as HTTPRoute `spec.parentRefs`.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route answers, as HTTPRoute `spec.hostnames`. Default: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 253),
            pattern(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    pub hostnames: Vec<String>,
    /// Requests the route takes, as HTTPRoute `rules[].matches`. Default: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub matches: Vec<HttpRouteMatch>,
    /// Port of the zones' Services.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Request timeouts, as HTTPRoute `rules[].timeouts`. Long generations need more than some
    /// gateways' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// A parent of the route (Gateway API `ParentReference`).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Default `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        pattern(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub group: Option<String>,
    /// Default `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        pattern(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    )]
    pub kind: Option<String>,
    /// Default: the ZonalScaledObject's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A listener of the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Which requests the route takes (Gateway API `HTTPRouteMatch`); all given conditions must hold.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<HttpHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub query_params: Vec<HttpQueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// A path condition.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "(has(self.type) && self.type == 'RegularExpression') || !has(self.value) || self.value.startsWith('/')"
).message("an Exact or PathPrefix path must start with '/'").field_path(".value"))]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// Default `PathPrefix`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<PathMatchType>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringMatchType {
    Exact,
    RegularExpression,
}

/// A header condition.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    /// Default `Exact`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<StringMatchType>,
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// A query parameter condition.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpQueryParamMatch {
    /// Default `Exact`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<StringMatchType>,
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

/// Timeouts of the route's rule (Gateway API durations, e.g. `10m`; `0s` for none).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!(has(self.request) && has(self.backendRequest) && duration(self.request) != duration('0s') && duration(self.backendRequest) > duration(self.request))"
).message("backendRequest must be no more than request").field_path(".backendRequest"))]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// From the gateway receiving the request to the end of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub request: Option<String>,
    /// One try from the gateway to the model server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub backend_request: Option<String>,
}

/// A BackendTrafficPolicy redbridge owns, on an HTTPRoute of yours whose backends span the zones.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyGatewayRouting {
    /// The HTTPRoute (in this namespace) the policy targets. No other BackendTrafficPolicy should
    /// target it: Envoy Gateway applies one per route.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Envoy's load balancer within a zone. Default `LeastRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<EnvoyLoadBalancer>,
}

/// The Envoy Gateway load balancers that take zone weights without further settings.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnvoyLoadBalancer {
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

impl EnvoyLoadBalancer {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvoyLoadBalancer::LeastRequest => "LeastRequest",
            EnvoyLoadBalancer::RoundRobin => "RoundRobin",
            EnvoyLoadBalancer::Random => "Random",
        }
    }
}

/// A DestinationRule redbridge owns for the model's Service.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// The model's Service (in this namespace), spanning the zones: the DestinationRule's host.
    /// No other DestinationRule should name it.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: String,
    /// The zones' region, as the nodes' `topology.kubernetes.io/region` label. Istio names a
    /// locality `region/zone/subzone` and allows a wildcard only at the end, so the region is
    /// needed to name a zone.
    #[schemars(
        length(min = 1, max = 63),
        pattern(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub region: String,
    /// The cluster's DNS domain, for the host's full name. Default `cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub cluster_domain: Option<String>,
}

/// The kinds of object redbridge may own for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lever {
    HttpRoute,
    EnvoyGateway,
    Istio,
}

impl Lever {
    pub const ALL: [Lever; 3] = [Lever::HttpRoute, Lever::EnvoyGateway, Lever::Istio];

    /// The API resource of the owned object, for a dynamic API.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Lever::HttpRoute => ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            Lever::EnvoyGateway => (
                "gateway.envoyproxy.io",
                "v1alpha1",
                "BackendTrafficPolicy",
                "backendtrafficpolicies",
            ),
            Lever::Istio => (
                "networking.istio.io",
                "v1",
                "DestinationRule",
                "destinationrules",
            ),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// The `spec.routing` field of this mode.
    pub fn field(self) -> &'static str {
        match self {
            Lever::HttpRoute => "httpRoute",
            Lever::EnvoyGateway => "envoyGateway",
            Lever::Istio => "istio",
        }
    }
}

/// The mode of a routing spec, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode<'a> {
    HttpRoute(&'a HttpRouteRouting),
    EnvoyGateway(&'a EnvoyGatewayRouting),
    Istio(&'a IstioRouting),
}

/// Why an owned object cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the ZonalScaledObject has no {0} yet")]
    Missing(&'static str),
    #[error("spec.routing: exactly one of httpRoute, envoyGateway and istio is required")]
    Mode,
    #[error("spec.routing.httpRoute needs spec.zones[].service for zone {0}")]
    NoService(String),
    #[error("spec.routing.{field}: {value:?} is not a duration")]
    Duration { field: &'static str, value: String },
}

impl RoutingSpec {
    /// The one mode given; `Err` when none or several are (the schema refuses those).
    pub fn mode(&self) -> Result<Mode<'_>, RenderError> {
        match (&self.http_route, &self.envoy_gateway, &self.istio) {
            (Some(h), None, None) => Ok(Mode::HttpRoute(h)),
            (None, Some(e), None) => Ok(Mode::EnvoyGateway(e)),
            (None, None, Some(i)) => Ok(Mode::Istio(i)),
            _ => Err(RenderError::Mode),
        }
    }

    pub fn lever(&self) -> Result<Lever, RenderError> {
        Ok(match self.mode()? {
            Mode::HttpRoute(_) => Lever::HttpRoute,
            Mode::EnvoyGateway(_) => Lever::EnvoyGateway,
            Mode::Istio(_) => Lever::Istio,
        })
    }

    /// The limits on changes of the weights, defaults filled in; `parse` reads durations.
    pub fn policy(
        &self,
        parse: impl Fn(&str) -> Option<std::time::Duration>,
    ) -> Result<Policy, RenderError> {
        let default = Policy::default();
        let min_interval = match &self.min_change_interval {
            None => default.min_interval,
            Some(raw) => parse(raw)
                .ok_or_else(|| RenderError::Duration {
                    field: "minChangeInterval",
                    value: raw.clone(),
                })?
                .as_secs_f64(),
        };
        let points = |p: Option<i32>, default: f64| p.map_or(default, |p| f64::from(p) / 100.0);
        Ok(Policy {
            threshold: points(self.change_threshold, default.threshold),
            min_interval,
            max_step: points(self.max_step, default.max_step),
        })
    }
}

/// The ZonalScaledObject an owned object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl Owner {
    /// The owner from the ZonalScaledObject's metadata.
    pub fn of(meta: &ObjectMeta) -> Result<Owner, RenderError> {
        Ok(Owner {
            name: meta.name.clone().ok_or(RenderError::Missing("name"))?,
            namespace: meta
                .namespace
                .clone()
                .ok_or(RenderError::Missing("namespace"))?,
            uid: meta.uid.clone().ok_or(RenderError::Missing("uid"))?,
        })
    }

    /// The controller owner reference, as the ScaledObjects carry it: the object goes with the CR.
    fn reference(&self) -> Value {
        json!({
            "apiVersion": OWNER_API_VERSION,
            "kind": OWNER_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
        })
    }

    fn metadata(&self) -> Value {
        let labels: BTreeMap<&str, String> = [
            (MANAGED_BY.0, MANAGED_BY.1.to_string()),
            (OWNER_LABEL, dns_label(&self.name)),
        ]
        .into();
        json!({
            "name": name(&self.name),
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.reference()],
        })
    }
}

/// The name of every routing object of a ZonalScaledObject (one per kind): the CR's own, so an
/// HTTPRoute's statistics (`httproute/<namespace>/<name>/rule/0`) read as the model's.
pub fn name(zso: &str) -> String {
    dns_label(zso)
}

/// A zone and the Service that selects only its model servers (`spec.zones[].service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneService {
    pub zone: String,
    pub service: Option<String>,
}

/// An object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub lever: Lever,
    pub name: String,
    pub body: Value,
}

/// The object `routing` asks for, with `weights`. `services` is needed for `httpRoute` only.
pub fn render(
    owner: &Owner,
    routing: &RoutingSpec,
    services: &[ZoneService],
    weights: &Weights,
) -> Result<Owned, RenderError> {
    let (lever, body) = match routing.mode()? {
        Mode::HttpRoute(spec) => (
            Lever::HttpRoute,
            http_route(owner, spec, services, weights)?,
        ),
        Mode::EnvoyGateway(spec) => (
            Lever::EnvoyGateway,
            backend_traffic_policy(owner, spec, weights),
        ),
        Mode::Istio(spec) => (Lever::Istio, destination_rule(owner, spec, weights)),
    };
    Ok(Owned {
        lever,
        name: name(&owner.name),
        body,
    })
}

/// The HTTPRoute: one rule, a backend per zone weighted by the zone's share of all traffic (0 for
/// a zone that serves nothing, kept listed so the route's shape does not change).
pub fn http_route(
    owner: &Owner,
    spec: &HttpRouteRouting,
    services: &[ZoneService],
    weights: &Weights,
) -> Result<Value, RenderError> {
    let backend_refs = weights
        .zones
        .iter()
        .zip(http_route_weights(&weights.shares))
        .map(|(zone, weight)| {
            let service = services
                .iter()
                .find(|s| &s.zone == zone)
                .and_then(|s| s.service.as_deref())
                .ok_or_else(|| RenderError::NoService(zone.clone()))?;
            // group and kind as the API server stores them after defaulting, for drift checks.
            Ok(json!({
                "group": "",
                "kind": "Service",
                "name": service,
                "port": spec.port,
                "weight": weight,
            }))
        })
        .collect::<Result<Vec<Value>, RenderError>>()?;
    let mut rule = json!({ "backendRefs": backend_refs });
    if !spec.matches.is_empty() {
        rule["matches"] = json!(spec.matches);
    }
    if let Some(t) = &spec.timeouts {
        rule["timeouts"] = json!(t);
    }
    let mut body = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": owner.metadata(),
        "spec": {
            "parentRefs": spec.parent_refs,
            "rules": [rule],
        },
    });
    if !spec.hostnames.is_empty() {
        body["spec"]["hostnames"] = json!(spec.hostnames);
    }
    Ok(body)
}

/// The BackendTrafficPolicy: on the user's HTTPRoute, a weight per zone from the zones' shares of
/// all traffic, every zone listed (an unlisted zone would get 1).
pub fn backend_traffic_policy(
    owner: &Owner,
    spec: &EnvoyGatewayRouting,
    weights: &Weights,
) -> Value {
    let zones: Vec<Value> = weights
        .zones
        .iter()
        .zip(envoy_zone_weights(&weights.shares))
        .map(|(zone, weight)| json!({"zone": zone, "weight": weight}))
        .collect();
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": owner.metadata(),
        "spec": {
            "targetRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": spec.http_route,
            }],
            "loadBalancer": {
                "type": spec.load_balancer.unwrap_or_default().as_str(),
                "zoneAware": {"weightedZones": zones},
            },
        },
    })
}

/// The weights an object redbridge wrote says, over `base` (the same zones): the shares of an
/// HTTPRoute or BackendTrafficPolicy, the flows of a DestinationRule; the rest from `base`.
/// `None` when the object does not name every zone. A restarted controller starts from these,
/// so it neither rewrites the object nor jumps away from what the gateway does.
pub fn read_back(
    routing: &RoutingSpec,
    observed: &Value,
    base: &Weights,
    services: &[ZoneService],
) -> Option<Weights> {
    let spec = observed.get("spec")?;
    let mut out = base.clone();
    match routing.mode().ok()? {
        Mode::HttpRoute(_) => {
            let refs = spec.pointer("/rules/0/backendRefs")?.as_array()?;
            out.shares = base
                .zones
                .iter()
                .map(|zone| {
                    let service = services
                        .iter()
                        .find(|s| &s.zone == zone)?
                        .service
                        .as_deref()?;
                    let r = refs.iter().find(|r| r["name"] == service)?;
                    Some(r["weight"].as_f64()? / f64::from(HTTP_ROUTE_WEIGHT_TOTAL))
                })
                .collect::<Option<Vec<f64>>>()?;
        }
        Mode::EnvoyGateway(_) => {
            let zones = spec
                .pointer("/loadBalancer/zoneAware/weightedZones")?
                .as_array()?;
            out.shares = base
                .zones
                .iter()
                .map(|zone| {
                    let z = zones.iter().find(|z| z["zone"] == zone.as_str())?;
                    // A drained zone's 1 is Envoy's floor, not a share.
                    let w = z["weight"].as_f64()?;
                    Some(if w <= 1.0 { 0.0 } else { w } / f64::from(ENVOY_ZONE_WEIGHT_SCALE))
                })
                .collect::<Option<Vec<f64>>>()?;
        }
        Mode::Istio(istio) => {
            let rows = spec
                .pointer("/trafficPolicy/loadBalancer/localityLbSetting/distribute")?
                .as_array()?;
            out.flows = base
                .zones
                .iter()
                .map(|from| {
                    let from = locality(&istio.region, from);
                    let row = rows.iter().find(|r| r["from"] == from.as_str())?;
                    let to = row["to"].as_object()?;
                    Some(
                        base.zones
                            .iter()
                            .map(|z| {
                                to.get(&locality(&istio.region, z))
                                    .and_then(Value::as_f64)
                                    .unwrap_or(0.0)
                                    / f64::from(ISTIO_WEIGHT_TOTAL)
                            })
                            .collect(),
                    )
                })
                .collect::<Option<Vec<Vec<f64>>>>()?;
        }
    }
    Some(out)
}

/// Outlier detection on the DestinationRule: Istio applies locality settings only with it. Set to
/// eject only a server failing everything, so a busy GPU replica is not taken out for an
/// occasional error.
fn outlier_detection() -> Value {
    json!({
        "consecutive5xxErrors": 100,
        "interval": "10s",
        "baseEjectionTime": "30s",
    })
}

/// An Istio locality for a zone: `region/zone/*`.
pub fn locality(region: &str, zone: &str) -> String {
    format!("{region}/{zone}/*")
}

/// The DestinationRule: for the model's Service, per source zone the split of its requests over
/// the zones (Istio weights, summing to 100), plus outlier detection.
pub fn destination_rule(owner: &Owner, spec: &IstioRouting, weights: &Weights) -> Value {
    let domain = spec.cluster_domain.as_deref().unwrap_or("cluster.local");
    let distribute: Vec<Value> = weights
        .zones
        .iter()
        .zip(istio_distribute(weights))
        .map(|(from, row)| {
            let to: BTreeMap<String, u32> = row
                .into_iter()
                .filter_map(|(j, w)| weights.zones.get(j).map(|z| (locality(&spec.region, z), w)))
                .collect();
            json!({"from": locality(&spec.region, from), "to": to})
        })
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": owner.metadata(),
        "spec": {
            "host": format!("{}.{}.svc.{domain}", spec.service, owner.namespace),
            "trafficPolicy": {
                "loadBalancer": {
                    "localityLbSetting": {"enabled": true, "distribute": distribute},
                },
                "outlierDetection": outlier_detection(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zonal::weights::{decide, Full, ZoneInput};

    fn owner() -> Owner {
        Owner {
            name: "llama".into(),
            namespace: "ml".into(),
            uid: "0000-1111".into(),
        }
    }

    fn stocked_out() -> Weights {
        let zone = |name: &str, ready, full, demand| ZoneInput {
            name: name.into(),
            ready,
            starting: 0,
            max_replicas: 10,
            full,
            capacity_per_replica: 1.0,
            demand: Some(demand),
        };
        let zones = [
            zone("zone-a", 4, None, 1.0),
            zone("zone-b", 4, None, 1.0),
            zone(
                "zone-c",
                5,
                Some(Full::Unschedulable { for_secs: 180.0 }),
                12.0,
            ),
        ];
        decide(&zones, &[], None, 0.0, &Policy::default()).weights
    }

    #[test]
    fn one_mode_and_its_policy() {
        let mut spec = RoutingSpec::default();
        assert!(matches!(spec.mode(), Err(RenderError::Mode)));
        spec.istio = Some(IstioRouting {
            service: "llama".into(),
            region: "us-east-1".into(),
            cluster_domain: None,
        });
        assert_eq!(spec.lever().unwrap(), Lever::Istio);
        // The controller passes the CRD's duration parser; two minutes is all this test needs.
        let parse = |s: &str| (s == "2m").then_some(std::time::Duration::from_secs(120));
        assert_eq!(spec.policy(parse).unwrap(), Policy::default());
        spec.change_threshold = Some(10);
        spec.max_step = Some(50);
        spec.min_change_interval = Some("2m".into());
        let p = spec.policy(parse).unwrap();
        assert_eq!((p.threshold, p.max_step, p.min_interval), (0.1, 0.5, 120.0));
        spec.min_change_interval = Some("soon".into());
        assert!(spec.policy(parse).is_err());
        spec.envoy_gateway = Some(EnvoyGatewayRouting {
            http_route: "llama".into(),
            load_balancer: None,
        });
        assert!(matches!(spec.mode(), Err(RenderError::Mode)));
    }

    #[test]
    fn what_was_written_reads_back_to_the_same_object() {
        let w = stocked_out();
        let base = Weights::local(&w.zones);
        let services: Vec<ZoneService> = w
            .zones
            .iter()
            .map(|z| ZoneService {
                zone: z.clone(),
                service: Some(format!("llama-{z}")),
            })
            .collect();
        let specs = [
            json!({"httpRoute": {"parentRefs": [{"name": "gw"}], "port": 8000}}),
            json!({"envoyGateway": {"httpRoute": "llama"}}),
            json!({"istio": {"service": "llama", "region": "us-east-1"}}),
        ];
        for spec in specs {
            let routing: RoutingSpec = serde_json::from_value(spec).unwrap();
            let written = render(&owner(), &routing, &services, &w).unwrap();
            let back = read_back(&routing, &written.body, &base, &services).unwrap();
            let again = render(&owner(), &routing, &services, &back).unwrap();
            assert_eq!(again.body, written.body, "{:?}", written.lever);
            assert_ne!(back, base, "{:?}", written.lever);
        }
        let routing: RoutingSpec =
            serde_json::from_value(json!({"envoyGateway": {"httpRoute": "llama"}})).unwrap();
        assert_eq!(
            read_back(&routing, &json!({"spec": {}}), &base, &services),
            None
        );
    }

    #[test]
    fn owned_objects_carry_the_owner_and_labels() {
        let w = stocked_out();
        let spec = EnvoyGatewayRouting {
            http_route: "llama-route".into(),
            load_balancer: None,
        };
        let btp = backend_traffic_policy(&owner(), &spec, &w);
        let meta = &btp["metadata"];
        assert_eq!(meta["name"], "llama");
        assert_eq!(meta["namespace"], "ml");
        assert_eq!(meta["labels"][MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(meta["labels"][OWNER_LABEL], "llama");
        let reference = &meta["ownerReferences"][0];
        assert_eq!(reference["apiVersion"], "redbridge.io/v1alpha1");
        assert_eq!(reference["kind"], "ZonalScaledObject");
        assert_eq!(reference["uid"], "0000-1111");
        assert_eq!(reference["controller"], true);
        let zones = &btp["spec"]["loadBalancer"]["zoneAware"]["weightedZones"];
        assert_eq!(
            zones,
            &json!([
                {"zone": "zone-a", "weight": 357},
                {"zone": "zone-b", "weight": 286},
                {"zone": "zone-c", "weight": 357},
            ])
        );
        assert_eq!(btp["spec"]["loadBalancer"]["type"], "LeastRequest");
    }

    #[test]
    fn http_route_needs_a_service_per_zone() {
        let w = stocked_out();
        let spec = HttpRouteRouting {
            parent_refs: vec![ParentRef {
                group: None,
                kind: None,
                namespace: Some("gateways".into()),
                name: "inference".into(),
                section_name: None,
                port: None,
            }],
            hostnames: vec![],
            matches: vec![],
            port: 8000,
            timeouts: None,
        };
        let services: Vec<ZoneService> = ["zone-a", "zone-b"]
            .iter()
            .map(|z| ZoneService {
                zone: z.to_string(),
                service: Some(format!("llama-{z}")),
            })
            .collect();
        let err = http_route(&owner(), &spec, &services, &w).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.routing.httpRoute needs spec.zones[].service for zone zone-c"
        );
        let mut services = services;
        services.push(ZoneService {
            zone: "zone-c".into(),
            service: Some("llama-zone-c".into()),
        });
        let route = http_route(&owner(), &spec, &services, &w).unwrap();
        let refs = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
        let weights: Vec<u64> = refs.iter().map(|r| r["weight"].as_u64().unwrap()).collect();
        assert_eq!(weights, vec![357_143, 285_714, 357_143]);
        assert_eq!(refs[2]["name"], "llama-zone-c");
        assert!(route["spec"].get("hostnames").is_none());
        assert!(route["spec"]["rules"][0].get("matches").is_none());
    }

    #[test]
    fn destination_rule_splits_per_source_zone() {
        let w = stocked_out();
        let spec = IstioRouting {
            service: "llama".into(),
            region: "us-east-1".into(),
            cluster_domain: None,
        };
        let dr = destination_rule(&owner(), &spec, &w);
        assert_eq!(dr["spec"]["host"], "llama.ml.svc.cluster.local");
        let lb = &dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"];
        assert_eq!(lb["enabled"], true);
        assert_eq!(
            lb["distribute"],
            json!([
                {"from": "us-east-1/zone-a/*", "to": {"us-east-1/zone-a/*": 100}},
                {"from": "us-east-1/zone-b/*", "to": {"us-east-1/zone-b/*": 100}},
                {"from": "us-east-1/zone-c/*", "to": {
                    "us-east-1/zone-a/*": 33, "us-east-1/zone-b/*": 25, "us-east-1/zone-c/*": 42,
                }},
            ])
        );
        assert!(dr["spec"]["trafficPolicy"]["outlierDetection"].is_object());
    }
}
