//! The `ZonalScaledObject` custom resource (`redbridge.io/v1alpha1`, short name `zso`): one model
//! served from several zones, each zone scaled by its own KEDA ScaledObject on redbridge's signals.
//!
//! The schema carries every rule the API server can check (types, bounds, enums, patterns, CEL), so
//! most mistakes are refused at `kubectl apply` with the field's path. What it cannot check (label
//! matchers, durations' relations) is checked by [`crate::k8s::plan::Plan::from_spec`] and
//! reported in the `Degraded` condition, again with the field's path. `crds/` is generated from
//! these types by `redbridge crd`.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Go-style durations as Kubernetes users write them: `90s`, `5m`, `1h30m`, `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// An object name as Kubernetes validates most (RFC 1123 subdomain).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Zone names, as the `topology.kubernetes.io/zone` label value they are.
pub const ZONE_NAME_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

// Every string, list and map of the schema is bounded: the API server prices each CEL rule from
// these bounds and refuses the CRD when a rule could cost more than its budget. The values are
// Kubernetes' own limits for what the fields hold, where it has them.

/// A label value, DNS label name or zone name.
const LABEL_VALUE_MAX: u32 = 63;
/// A qualified name (`prefix/name`): a label key.
const LABEL_KEY_MAX: u32 = 317;
/// A condition's type, as `metav1.Condition` bounds it.
const CONDITION_TYPE_MAX: u32 = 316;
/// A condition's reason, as `metav1.Condition` bounds it.
const CONDITION_REASON_MAX: u32 = 1024;
/// A condition's message, as `metav1.Condition` bounds it.
const CONDITION_MESSAGE_MAX: u32 = 32768;
/// A duration: `1h30m` needs 5 characters; 32 leaves room for any sensible one.
const DURATION_MAX: u32 = 32;
/// The most zones of a ZonalScaledObject.
pub const ZONES_MAX: u32 = 16;
/// The longest `status.zoneSummary`: 16 zones of 63-character names with every count at its
/// widest fit in it.
pub const ZONE_SUMMARY_MAX: usize = 2048;

/// A model served from several zones, each zone scaled by KEDA on redbridge's live signals, with
/// demand spilling over from zones that are full and GPU pods counted while they load.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "redbridge.io",
    version = "v1alpha1",
    kind = "ZonalScaledObject",
    namespaced,
    shortname = "zso",
    doc = "A model served from several zones, each scaled by its own KEDA ScaledObject on redbridge's signals.",
    status = "ZonalScaledObjectStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Zones","type":"string","description":"Per zone: ready[+starting]/desired replicas, full when it is, and with spec.routing the percentage of requests it serves.","jsonPath":".status.zoneSummary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","priority":1,"description":"Ready replicas over all zones.","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","priority":1,"description":"Desired replicas over all zones.","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Signal","type":"string","priority":1,"description":"The signal the demand figures are in.","jsonPath":".status.demandSignal"}"#
)]
// Both rules compare every pair of (at most 16 × 16) zone names of at most 63 characters: far
// below the API server's per-rule cost budget.
#[x_kube(validation = Rule::new(
    "!has(self.spillover) || !has(self.spillover.order) || self.spillover.order.all(z, self.zones.exists(x, x.name == z))"
).message("spillover.order may only name zones listed in spec.zones").field_path(".spillover.order"))]
#[x_kube(validation = Rule::new(
    "!has(self.spillover) || !has(self.spillover.order) || self.spillover.order.all(z, self.spillover.order.filter(y, y == z).size() == 1)"
).message("spillover.order names a zone twice").field_path(".spillover.order"))]
// At most 16 zones: a check per zone.
#[x_kube(validation = Rule::new(
    "!has(self.routing) || !has(self.routing.httpRoute) || self.zones.all(z, has(z.service))"
).message("spec.routing.httpRoute needs spec.zones[].service in every zone").field_path(".zones"))]
#[serde(rename_all = "camelCase")]
pub struct ZonalScaledObjectSpec {
    /// The model the pool serves, as its servers name it (informational: shown in status, labels
    /// and events).
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// The zones the model runs in, each with its own scale target and bounds. Names must be unique.
    #[schemars(length(min = 1, max = ZONES_MAX))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub zones: Vec<ZoneSpec>,
    /// GPUs each replica uses; reported in status so GPU use per zone is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSpec>,
    /// Where the signals are read. Only Services and Pods of this namespace: redbridge builds every
    /// address it scrapes from them, never from a URL written here.
    pub sources: SourcesSpec,
    /// What to scale on, with a target for each. At least one.
    pub signals: SignalsSpec,
    /// Moves demand a full zone cannot serve to the next zones. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spillover: Option<SpilloverSpec>,
    /// Counts pods that are loading their model as capacity on its way. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupSpec>,
    /// Lets idle zones go to zero replicas. Off when absent: zones keep `minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZeroSpec>,
    /// How often targets are scraped and how far back signals look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeSpec>,
    /// Overrides of what redbridge writes into each zone's KEDA ScaledObject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaSpec>,
    /// Moves traffic between zones through the gateway, from capacity. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::k8s::routing::RoutingSpec>,
}

/// One zone: the workload that runs the model there, and its bounds.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be at most maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpec {
    /// The zone, as in the nodes' `topology.kubernetes.io/zone` label (e.g. `us-east-1a`).
    #[schemars(length(min = 1, max = LABEL_VALUE_MAX), pattern(ZONE_NAME_PATTERN))]
    pub name: String,
    /// The Deployment or StatefulSet (in this namespace) whose Pods serve the model in this zone.
    pub scale_target_ref: ScaleTargetRef,
    /// Fewest replicas while the zone is active.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas; a zone at this count is full and spills over.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// A Service (in this namespace) selecting only this zone's model servers: the zone's
    /// backend in the HTTPRoute of `spec.routing.httpRoute`, which needs it in every zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = LABEL_VALUE_MAX), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: Option<String>,
}

fn one() -> i32 {
    1
}

/// A workload in the ZonalScaledObject's namespace.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default)]
    pub kind: ScaleTargetKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of workload a zone can scale.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleTargetKind {
    #[default]
    Deployment,
    StatefulSet,
}

impl ScaleTargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleTargetKind::Deployment => "Deployment",
            ScaleTargetKind::StatefulSet => "StatefulSet",
        }
    }
}

/// GPUs per replica.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// Extended resource name of the GPU.
    #[serde(default = "default_gpu_resource")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub resource: String,
    /// GPUs each replica requests.
    #[schemars(range(min = 1, max = 64))]
    pub count: i32,
}

fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}

/// The endpoints signals are read from. At least one.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.gateway) || has(self.modelServer) || has(self.endpointPicker)").message("at least one of gateway, modelServer and endpointPicker is required"))]
#[serde(rename_all = "camelCase")]
pub struct SourcesSpec {
    /// The gateway in front of the model: request rate, latency and queue per route, per zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySource>,
    /// The model servers themselves: queue, running requests, tokens, KV cache, time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_server: Option<ModelServerSource>,
    /// The Gateway API Inference Extension's endpoint picker in front of an InferencePool: the
    /// requests it holds in its flow-control queue (demand while no server is ready), pool
    /// saturation, request totals and latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker: Option<EndpointPickerSource>,
}

/// The endpoint picker (EPP), found through the EndpointSlices of its Service: the one an
/// InferencePool's `spec.endpointPickerRef` names, or one named here.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(one_of_rule(&["service", "inferencePool"])).message("exactly one of service and inferencePool is required"))]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerSource {
    /// The picker's Service (in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: Option<String>,
    /// An InferencePool (in this namespace) whose `spec.endpointPickerRef` (a Service) is the
    /// picker, followed as it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub inference_pool: Option<String>,
    /// The picker's metrics port: a number, or the name of one of the EndpointSlices' ports.
    /// Default 9090, the picker's metrics port (its `endpointPickerRef` port serves ext-proc).
    #[serde(default = "default_picker_port")]
    pub port: IntOrString,
    /// Path of the metrics on that port.
    #[serde(default = "default_model_server_path")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
    )]
    pub path: String,
    /// PromQL label matchers on the picker's series, e.g. `model_name="llama"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 3, max = 1024)))]
    pub matchers: Vec<String>,
}

fn default_picker_port() -> IntOrString {
    IntOrString::Int(9090)
}

/// A gateway's proxies, found through the EndpointSlices of a Service of this namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySource {
    /// Service (in this namespace) whose EndpointSlices list the proxies.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: String,
    /// Metrics port of each proxy: a number, or the name of one of the EndpointSlices' ports.
    pub port: IntOrString,
    /// Path of the metrics on that port.
    #[serde(default = "default_gateway_path")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
    )]
    pub path: String,
    /// How the proxies name their series.
    #[serde(default)]
    pub profile: GatewayProfile,
    /// PromQL label matcher that picks this model's route out of the gateway's series, e.g.
    /// `envoy_cluster_name="httproute/ml/llama/rule/0"`.
    #[schemars(length(min = 3, max = 1024))]
    pub route_matcher: String,
}

fn default_gateway_path() -> String {
    "/stats/prometheus".into()
}

/// Gateway profiles (see docs/signals.md).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayProfile {
    #[default]
    #[serde(rename = "envoy")]
    Envoy,
    #[serde(rename = "envoy-downstream")]
    EnvoyDownstream,
    #[serde(rename = "istio")]
    Istio,
    #[serde(rename = "istio-gateway")]
    IstioGateway,
    #[serde(rename = "istio-waypoint")]
    IstioWaypoint,
    #[serde(rename = "traefik")]
    Traefik,
    #[serde(rename = "kong")]
    Kong,
    #[serde(rename = "kong-upstream")]
    KongUpstream,
    #[serde(rename = "linkerd")]
    Linkerd,
    #[serde(rename = "linkerd-outbound")]
    LinkerdOutbound,
    #[serde(rename = "linkerd-route")]
    LinkerdRoute,
    #[serde(rename = "hubble")]
    Hubble,
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
}

impl GatewayProfile {
    /// Every variant, in the order of the profile table.
    pub const ALL: [GatewayProfile; 13] = [
        GatewayProfile::Envoy,
        GatewayProfile::EnvoyDownstream,
        GatewayProfile::Istio,
        GatewayProfile::IstioGateway,
        GatewayProfile::IstioWaypoint,
        GatewayProfile::Traefik,
        GatewayProfile::Kong,
        GatewayProfile::KongUpstream,
        GatewayProfile::Linkerd,
        GatewayProfile::LinkerdOutbound,
        GatewayProfile::LinkerdRoute,
        GatewayProfile::Hubble,
        GatewayProfile::IngressNginx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GatewayProfile::Envoy => "envoy",
            GatewayProfile::EnvoyDownstream => "envoy-downstream",
            GatewayProfile::Istio => "istio",
            GatewayProfile::IstioGateway => "istio-gateway",
            GatewayProfile::IstioWaypoint => "istio-waypoint",
            GatewayProfile::Traefik => "traefik",
            GatewayProfile::Kong => "kong",
            GatewayProfile::KongUpstream => "kong-upstream",
            GatewayProfile::Linkerd => "linkerd",
            GatewayProfile::LinkerdOutbound => "linkerd-outbound",
            GatewayProfile::LinkerdRoute => "linkerd-route",
            GatewayProfile::Hubble => "hubble",
            GatewayProfile::IngressNginx => "ingress-nginx",
        }
    }
}

#[cfg(test)]
mod gateway_profile_tests {
    use super::*;

    /// The enum is the profile table's gateway rows: every built-in profile is a model server,
    /// the endpoint picker (a source of its own) or a gateway variant, under the same name.
    #[test]
    fn gateway_profiles_are_the_table_rows_that_are_not_model_servers() {
        let model_servers = [
            ModelServerProfile::Vllm,
            ModelServerProfile::Sglang,
            ModelServerProfile::Tgi,
            ModelServerProfile::Triton,
        ]
        .map(ModelServerProfile::name);
        let gateways: Vec<&str> = crate::profiles::names()
            .filter(|n| !model_servers.contains(n) && *n != "epp")
            .collect();
        let variants: Vec<&str> = GatewayProfile::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(variants, gateways);
        for p in GatewayProfile::ALL {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, serde_json::json!(p.name()));
            assert_eq!(serde_json::from_value::<GatewayProfile>(json).unwrap(), p);
        }
    }
}

/// A CEL rule: exactly one of `fields` is set.
fn one_of_rule(fields: &[&str]) -> String {
    let each: Vec<String> = fields
        .iter()
        .map(|f| format!("(has(self.{f}) ? 1 : 0)"))
        .collect();
    format!("{} == 1", each.join(" + "))
}

/// The model servers: the Pods of a selector, the endpoints of a Service, or the Pods an
/// InferencePool selects, in this namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(one_of_rule(&["service", "selector", "inferencePool"])).message("exactly one of service, selector and inferencePool is required"))]
#[x_kube(validation = Rule::new("has(self.port) || has(self.inferencePool)").message("port is required unless inferencePool gives it").field_path(".port"))]
#[serde(rename_all = "camelCase")]
pub struct ModelServerSource {
    /// Service (in this namespace) whose EndpointSlices list the model servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: Option<String>,
    /// Label selector of the model-server Pods (in this namespace). A Pod's zone is the zone whose
    /// scale target owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bound_label_selector)]
    pub selector: Option<LabelSelector>,
    /// An InferencePool (`inference.networking.k8s.io/v1`, in this namespace) whose
    /// `spec.selector` picks the model-server Pods, followed as it changes. The metrics port
    /// defaults to the pool's first `targetPorts` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub inference_pool: Option<String>,
    /// Metrics port of each server: a number, or a port name (of the EndpointSlices, or of the Pods'
    /// containers). Required unless `inferencePool` is given (its first target port by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// Path of the metrics on that port.
    #[serde(default = "default_model_server_path")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
    )]
    pub path: String,
    /// How the servers name their series.
    #[serde(default)]
    pub profile: ModelServerProfile,
    /// PromQL label matchers that pick this model's series when a server hosts several, e.g.
    /// `model_name="meta-llama/Llama-3.1-70B-Instruct"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 3, max = 1024)))]
    pub matchers: Vec<String>,
}

fn default_model_server_path() -> String {
    "/metrics".into()
}

/// Model-server profiles (see docs/profiles.md).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelServerProfile {
    #[default]
    Vllm,
    Sglang,
    Tgi,
    Triton,
}

impl ModelServerProfile {
    pub fn name(self) -> &'static str {
        match self {
            ModelServerProfile::Vllm => "vllm",
            ModelServerProfile::Sglang => "sglang",
            ModelServerProfile::Tgi => "tgi",
            ModelServerProfile::Triton => "triton",
        }
    }
}

/// Each field of [`SignalsSpec`] and the signal of [`crate::model::signal::SIGNALS`] it scales
/// on, with whether it takes a quantile: every signal has exactly one field (a test checks the
/// table against the signal table and the schema).
pub const SIGNAL_FIELDS: [(&str, &str); 16] = [
    ("latency", "latency"),
    ("timeToFirstToken", "time_to_first_token"),
    ("queuePerReplica", "queue_depth"),
    ("tokensPerSecondPerReplica", "generation_tokens_per_second"),
    ("concurrencyPerReplica", "concurrency"),
    ("kvCacheUtilization", "kv_cache_utilization"),
    ("requestsPerSecondPerReplica", "requests_per_second"),
    ("errorRatio", "error_ratio"),
    ("runningPerReplica", "running"),
    (
        "promptTokensPerSecondPerReplica",
        "prompt_tokens_per_second",
    ),
    ("interTokenLatency", "inter_token_latency"),
    ("queueTime", "queue_time"),
    ("preemptionsPerSecond", "preemptions_per_second"),
    ("meanLatency", "mean_latency"),
    ("meanQueueTime", "mean_queue_time"),
    ("poolSaturation", "pool_saturation"),
];

/// The CEL rule that at least one of [`SIGNAL_FIELDS`] is set.
fn any_signal_rule() -> String {
    let each: Vec<String> = SIGNAL_FIELDS
        .iter()
        .map(|(f, _)| format!("has(self.{f})"))
        .collect();
    each.join(" || ")
}

/// One field of [`SignalsSpec`]: read at a quantile, or a plain target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignalField<'a> {
    Quantile(&'a QuantileSignal),
    Plain(&'a DemandSignal),
}

/// The signals to scale on. Each becomes one trigger of every zone's ScaledObject; the HPA
/// follows whichever asks for the most replicas. Per-replica signals are demand
/// (`metricType: AverageValue`), the others quality figures to hold (`metricType: Value`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(any_signal_rule()).message("at least one signal is required"))]
#[serde(rename_all = "camelCase")]
pub struct SignalsSpec {
    /// Finished requests per second, per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second_per_replica: Option<DemandSignal>,
    /// Failed requests over all requests, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.target <= 1.0").message("target is a fraction of the requests: at most 1"))]
    pub error_ratio: Option<DemandSignal>,
    /// Request latency at a quantile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<QuantileSignal>,
    /// Requests in flight, per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_per_replica: Option<DemandSignal>,
    /// Requests waiting, per replica. From the endpoint picker: its flow-control queue, which
    /// holds requests while no server is ready, so it wakes a pool scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_per_replica: Option<DemandSignal>,
    /// Requests being executed, per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_per_replica: Option<DemandSignal>,
    /// KV-cache use, 0 to 1, averaged over replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.target <= 1.0").message("target is a fraction of the KV cache: at most 1"))]
    pub kv_cache_utilization: Option<DemandSignal>,
    /// Prompt (input) tokens per second, per replica: prefill work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_per_second_per_replica: Option<DemandSignal>,
    /// Generated tokens per second, per replica: decode work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second_per_replica: Option<DemandSignal>,
    /// Time to first token at a quantile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token: Option<QuantileSignal>,
    /// Time between generated tokens (decode) at a quantile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_token_latency: Option<QuantileSignal>,
    /// Time requests waited before being scheduled, at a quantile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<QuantileSignal>,
    /// Requests preempted from the running batch per second (KV cache exhausted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptions_per_second: Option<DemandSignal>,
    /// Mean request duration over the window, in seconds (servers without a latency histogram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_latency: Option<DemandSignal>,
    /// Mean time a request waited in the queue over the window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_queue_time: Option<DemandSignal>,
    /// The pool's saturation as the endpoint picker's flow control sees it, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.target <= 1.0").message("target is a fraction: at most 1"))]
    pub pool_saturation: Option<DemandSignal>,
}

impl SignalsSpec {
    /// The fields that are set, in the order of [`SIGNAL_FIELDS`], with their field names.
    pub fn fields(&self) -> Vec<(&'static str, SignalField<'_>)> {
        use SignalField::{Plain, Quantile};
        let all: [Option<SignalField<'_>>; 16] = [
            self.latency.as_ref().map(Quantile),
            self.time_to_first_token.as_ref().map(Quantile),
            self.queue_per_replica.as_ref().map(Plain),
            self.tokens_per_second_per_replica.as_ref().map(Plain),
            self.concurrency_per_replica.as_ref().map(Plain),
            self.kv_cache_utilization.as_ref().map(Plain),
            self.requests_per_second_per_replica.as_ref().map(Plain),
            self.error_ratio.as_ref().map(Plain),
            self.running_per_replica.as_ref().map(Plain),
            self.prompt_tokens_per_second_per_replica
                .as_ref()
                .map(Plain),
            self.inter_token_latency.as_ref().map(Quantile),
            self.queue_time.as_ref().map(Quantile),
            self.preemptions_per_second.as_ref().map(Plain),
            self.mean_latency.as_ref().map(Plain),
            self.mean_queue_time.as_ref().map(Plain),
            self.pool_saturation.as_ref().map(Plain),
        ];
        SIGNAL_FIELDS
            .iter()
            .zip(all)
            .filter_map(|((field, _), f)| f.map(|f| (*field, f)))
            .collect()
    }
}

/// A target for a per-replica or averaged signal.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.target > 0.0").message("target must be greater than 0").field_path(".target"))]
#[x_kube(validation = Rule::new("!has(self.activationTarget) || self.activationTarget >= 0.0").message("activationTarget must be 0 or more").field_path(".activationTarget"))]
#[serde(rename_all = "camelCase")]
pub struct DemandSignal {
    /// The value each replica should carry (per-replica signals) or the value to hold (others).
    pub target: f64,
    /// The zone is active (scaled up from zero) above this value. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<f64>,
    /// Which source to read: `gateway`, `modelServer` or `endpointPicker`. Default: the first
    /// configured source that provides the signal, model servers first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceName>,
    /// Rate signals only (`tokensPerSecondPerReplica`, `promptTokensPerSecondPerReplica`,
    /// `requestsPerSecondPerReplica`, `preemptionsPerSecond`): fast up, careful down. The value is the
    /// larger of the rate over this short window and over `spec.scrape.window`, so a rise shows
    /// within it and a fall only after the whole window (the trigger's `upWindow`). Default: the
    /// window alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub up_window: Option<String>,
}

/// A target for a latency-like signal read at a quantile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.target > 0.0").message("target must be greater than 0").field_path(".target"))]
#[x_kube(validation = Rule::new("!has(self.activationTarget) || self.activationTarget >= 0.0").message("activationTarget must be 0 or more").field_path(".activationTarget"))]
#[x_kube(validation = Rule::new("!has(self.quantile) || (self.quantile > 0.0 && self.quantile < 1.0)").message("quantile must be between 0 and 1, exclusive").field_path(".quantile"))]
#[serde(rename_all = "camelCase")]
pub struct QuantileSignal {
    /// Seconds.
    pub target: f64,
    /// Default 0.95; at most three decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// The zone is active above this many seconds. Default 0 (any traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<f64>,
    /// Which source to read. Default: the first configured source that provides the signal
    /// (for latency the gateway first, for the others the model servers first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceName>,
}

/// One of the sources.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SourceName {
    Gateway,
    ModelServer,
    EndpointPicker,
}

/// When and where demand moves between zones.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SpilloverSpec {
    /// Zones in order of preference; a full zone's excess goes to the zones after it (wrapping
    /// around). Default: the order of `zones`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = ZONES_MAX),
        inner(length(min = 1, max = LABEL_VALUE_MAX), pattern(ZONE_NAME_PATTERN))
    )]
    pub order: Option<Vec<String>>,
    /// A zone with a Pod unschedulable for this long is full (no GPU node for it). Default `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub unschedulable_after: Option<String>,
}

/// Model loading.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarmupSpec {
    /// How long a Pod takes from scheduled to Ready (pulling the image, loading the weights). A Pod
    /// counts as capacity on its way for at most this long.
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub model_load_time: String,
}

/// Scale to zero.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZeroSpec {
    /// How long a zone must be idle (no signal above its activation target) before it goes to zero.
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub idle_period: String,
}

/// Scraping.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeSpec {
    /// Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub interval: Option<String>,
    /// How far back rates and quantiles look. Default `30s`, at most `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX), pattern(DURATION_PATTERN))]
    pub window: Option<String>,
}

/// What may be changed in the ScaledObjects redbridge writes.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KedaSpec {
    /// Seconds between KEDA's activity checks (`pollingInterval`). Default KEDA's (30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub polling_interval: Option<i32>,
    /// HPA behaviour; each direction given here replaces redbridge's default for GPU pools (scale
    /// up at once, scale down slowly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bound_hpa_behavior)]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// What redbridge observes and decides, per zone. It is written with the totals and the summary
/// `kubectl get zso` prints (see `StatusDocument`), which are derived from `zones`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", into = "StatusDocument")]
pub struct ZonalScaledObjectStatus {
    /// The generation of the spec this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready` (ScaledObjects written and signals flowing) and `Degraded` (with the reason).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The signal the demand figures are in (e.g. `queue_depth`), when there is one.
    #[serde(default)]
    pub demand_signal: Option<String>,
    #[serde(default)]
    pub zones: Vec<ZoneStatus>,
}

impl ZonalScaledObjectStatus {
    /// One entry per zone, `<zone> <ready>[+<starting>]/<desired>[ full][ <weight>%]` (`?` while
    /// the desired count is unknown; the weight with `spec.routing`), e.g.
    /// `us-east-1a 4/4 full 30%, us-east-1b 1+1/3 70%`; none without zones.
    pub fn zone_summary(&self) -> Option<String> {
        if self.zones.is_empty() {
            return None;
        }
        let entries: Vec<String> = self
            .zones
            .iter()
            .map(|z| {
                let starting = if z.starting_replicas > 0 {
                    format!("+{}", z.starting_replicas)
                } else {
                    String::new()
                };
                let desired = z
                    .desired_replicas
                    .map_or_else(|| "?".to_string(), |d| d.to_string());
                let full = if z.full.is_some() { " full" } else { "" };
                let weight = z.weight.map_or_else(String::new, |w| format!(" {w}%"));
                format!(
                    "{} {}{starting}/{desired}{full}{weight}",
                    z.name, z.ready_replicas
                )
            })
            .collect();
        let summary = entries.join(", ");
        // The schema bounds the field: a longer value would make the API server refuse the
        // whole status. 16 zones always fit; the cut is only a guard.
        if summary.chars().count() <= ZONE_SUMMARY_MAX {
            return Some(summary);
        }
        let mut cut: String = summary.chars().take(ZONE_SUMMARY_MAX - 1).collect();
        cut.push('…');
        Some(cut)
    }

    /// Ready replicas over all zones; none without zones.
    pub fn ready_replicas(&self) -> Option<i32> {
        (!self.zones.is_empty()).then(|| {
            self.zones
                .iter()
                .fold(0i32, |sum, z| sum.saturating_add(z.ready_replicas))
        })
    }

    /// Desired replicas over the zones whose desired count is known; none when no zone's is.
    pub fn desired_replicas(&self) -> Option<i32> {
        self.zones
            .iter()
            .filter_map(|z| z.desired_replicas)
            .reduce(|sum, d| sum.saturating_add(d))
    }
}

/// The status as the API server stores it: [`ZonalScaledObjectStatus`] and, derived from its
/// zones when it is written, what `kubectl get zso` prints. Derived, they cannot disagree with
/// the zones, and they change only when a zone's counts do.
#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "camelCase")]
#[schemars(
    rename = "ZonalScaledObjectStatus",
    description = "What redbridge observes and decides, per zone."
)]
struct StatusDocument {
    /// The generation of the spec this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    /// `Ready` (ScaledObjects written and signals flowing) and `Degraded` (with the reason).
    #[serde(default)]
    #[schemars(length(max = 8), transform = bound_conditions)]
    conditions: Vec<Condition>,
    /// The signal the demand figures are in (e.g. `queue_depth`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    demand_signal: Option<String>,
    /// Per zone: ready[+starting]/desired replicas, `full` when the zone is full, and with
    /// `spec.routing` the share of requests it serves, e.g. `us-east-1a 4/4 full 30%, us-east-1b 1+1/3 70%`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ZONE_SUMMARY_MAX))]
    zone_summary: Option<String>,
    /// Ready replicas over all zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_replicas: Option<i32>,
    /// Desired replicas over the zones whose desired count is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    desired_replicas: Option<i32>,
    #[serde(default)]
    #[schemars(length(max = ZONES_MAX))]
    zones: Vec<ZoneStatus>,
}

impl From<ZonalScaledObjectStatus> for StatusDocument {
    fn from(status: ZonalScaledObjectStatus) -> Self {
        StatusDocument {
            zone_summary: status.zone_summary(),
            ready_replicas: status.ready_replicas(),
            desired_replicas: status.desired_replicas(),
            observed_generation: status.observed_generation,
            conditions: status.conditions,
            demand_signal: status.demand_signal,
            zones: status.zones,
        }
    }
}

impl JsonSchema for ZonalScaledObjectStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        StatusDocument::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        StatusDocument::json_schema(generator)
    }
}

/// One zone as redbridge sees it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    #[schemars(length(max = LABEL_VALUE_MAX))]
    pub name: String,
    /// The KEDA ScaledObject redbridge writes for the zone.
    #[schemars(length(max = 253))]
    pub scaled_object: String,
    pub ready_replicas: i32,
    /// Scheduled and loading their model (not yet Ready).
    pub starting_replicas: i32,
    /// Pods the scheduler cannot place (unmet capacity).
    pub unschedulable_replicas: i32,
    /// Replicas the zone's signals ask for, after spillover and warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// GPUs held by ready and starting replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i32>,
    /// Scrape targets found in the zone.
    pub targets: i32,
    /// The zone's own demand, in the demand signal's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_demand: Option<f64>,
    /// Demand moved in from full zones.
    pub spilled_in: f64,
    /// Demand moved out to other zones.
    pub spilled_out: f64,
    /// Why the zone is full (`AtMaxReplicas`, `PodsUnschedulable`), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub full: Option<String>,
    /// With `spec.routing`: the percentage of the pool's requests the zone serves, as written to
    /// the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
}

/// Merges `bounds` into the subschema at `pointer` (a JSON pointer) when it is there. A bound
/// that finds no subschema (Kubernetes' types changed shape) leaves a field unbounded, which the
/// bounds test of `tests/e2e/k8s/crd.rs` reports.
fn bound(schema: &mut Schema, pointer: &str, bounds: Value) {
    if let (Some(Value::Object(node)), Value::Object(bounds)) =
        (schema.pointer_mut(pointer), bounds)
    {
        node.extend(bounds);
    }
}

/// `LabelSelector` as Kubernetes validates it: label keys and values, and the four operators.
fn bound_label_selector(schema: &mut Schema) {
    bound(
        schema,
        "/properties/matchLabels",
        json!({"maxProperties": 64}),
    );
    bound(
        schema,
        "/properties/matchLabels/additionalProperties",
        json!({"maxLength": LABEL_VALUE_MAX}),
    );
    bound(
        schema,
        "/properties/matchExpressions",
        json!({"maxItems": 16}),
    );
    let requirement = "/properties/matchExpressions/items/properties";
    bound(
        schema,
        &format!("{requirement}/key"),
        json!({"maxLength": LABEL_KEY_MAX}),
    );
    bound(
        schema,
        &format!("{requirement}/operator"),
        json!({"enum": ["In", "NotIn", "Exists", "DoesNotExist"]}),
    );
    bound(
        schema,
        &format!("{requirement}/values"),
        json!({"maxItems": 64}),
    );
    bound(
        schema,
        &format!("{requirement}/values/items"),
        json!({"maxLength": LABEL_VALUE_MAX}),
    );
}

/// HPA behaviour as the HPA validates it: a few policies per direction, and the known kinds.
fn bound_hpa_behavior(schema: &mut Schema) {
    for direction in ["scaleUp", "scaleDown"] {
        let rules = format!("/properties/{direction}/properties");
        bound(schema, &format!("{rules}/policies"), json!({"maxItems": 8}));
        bound(
            schema,
            &format!("{rules}/policies/items/properties/type"),
            json!({"enum": ["Pods", "Percent"]}),
        );
        bound(
            schema,
            &format!("{rules}/selectPolicy"),
            json!({"enum": ["Max", "Min", "Disabled"]}),
        );
    }
}

/// `metav1.Condition`'s own bounds.
fn bound_conditions(schema: &mut Schema) {
    let condition = "/items/properties";
    bound(
        schema,
        &format!("{condition}/type"),
        json!({"maxLength": CONDITION_TYPE_MAX}),
    );
    bound(
        schema,
        &format!("{condition}/status"),
        json!({"enum": ["True", "False", "Unknown"]}),
    );
    bound(
        schema,
        &format!("{condition}/reason"),
        json!({"maxLength": CONDITION_REASON_MAX}),
    );
    bound(
        schema,
        &format!("{condition}/message"),
        json!({"maxLength": CONDITION_MESSAGE_MAX}),
    );
}

/// The CRD, with `apiVersion`, `kind` and `metadata` declared at the root as controller-gen
/// declares them, so strict schema checkers (and `kubectl explain`) see every top-level field.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = ZonalScaledObject::crd();
    let describe = |type_: &str, description: &str| JSONSchemaProps {
        type_: Some(type_.into()),
        description: Some(description.into()),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(props) = root.and_then(|r| r.properties.as_mut()) {
            props.insert(
                "apiVersion".into(),
                describe(
                    "string",
                    "The versioned schema of this object: redbridge.io/v1alpha1.",
                ),
            );
            props.insert("kind".into(), describe("string", "ZonalScaledObject."));
            props.insert(
                "metadata".into(),
                JSONSchemaProps {
                    type_: Some("object".into()),
                    ..Default::default()
                },
            );
        }
    }
    crd
}

/// The CRD as YAML, as `redbridge crd` prints it and `crds/zonalscaledobjects.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated by `redbridge crd` from scaler/src/k8s/crd.rs; do not edit.\n---\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn names_and_scope() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("zonalscaledobjects.redbridge.io")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["zso".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
    }

    #[test]
    fn schema_carries_the_rules() {
        let s = schema();
        let spec = &s["properties"]["spec"];
        let zones = &spec["properties"]["zones"];
        assert_eq!(zones["x-kubernetes-list-type"], "map");
        assert_eq!(zones["minItems"].as_f64(), Some(1.0));
        let zone = &zones["items"];
        assert_eq!(
            zone["properties"]["maxReplicas"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert!(zone["x-kubernetes-validations"]
            .to_string()
            .contains("minReplicas <= self.maxReplicas"));
        assert_eq!(
            zone["properties"]["scaleTargetRef"]["properties"]["kind"]["enum"],
            serde_json::json!(["Deployment", "StatefulSet"])
        );
        let gw = &spec["properties"]["sources"]["properties"]["gateway"];
        assert_eq!(gw["properties"]["port"]["x-kubernetes-int-or-string"], true);
        assert!(gw["properties"]["path"]["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^/"));
        assert!(spec["properties"]["signals"]["x-kubernetes-validations"].is_array());
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for field in ["model", "zones", "sources", "signals"] {
            assert!(required.contains(&field), "{field} required: {required:?}");
        }
    }

    #[test]
    fn durations_pattern_matches_the_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["90s", "5m", "1h30m", "500ms", "1.5h"] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["", "5", "m", "5 m", "-5m", "5d"] {
            assert!(!re.is_match(bad), "{bad}");
        }
        assert!(schema()
            .to_string()
            .contains(&DURATION_PATTERN.replace('\\', "\\\\")));
    }

    fn zone(name: &str, ready: i32, starting: i32, desired: Option<i32>) -> ZoneStatus {
        ZoneStatus {
            name: name.into(),
            ready_replicas: ready,
            starting_replicas: starting,
            desired_replicas: desired,
            ..Default::default()
        }
    }

    #[test]
    fn the_status_is_written_with_its_summary() {
        let mut status = ZonalScaledObjectStatus {
            zones: vec![zone("a", 2, 1, Some(4)), zone("b", 3, 0, None)],
            ..Default::default()
        };
        status.zones[0].full = Some("AtMaxReplicas".into());
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(written["zoneSummary"], "a 2+1/4 full, b 3/?");
        assert_eq!(written["readyReplicas"], 5);
        assert_eq!(written["desiredReplicas"], 4);
        assert_eq!(written["zones"][1]["name"], "b");
        let read: ZonalScaledObjectStatus = serde_json::from_value(written).unwrap();
        assert_eq!(read, status);

        let empty = serde_json::to_value(ZonalScaledObjectStatus::default()).unwrap();
        for derived in ["zoneSummary", "readyReplicas", "desiredReplicas"] {
            assert!(empty.get(derived).is_none(), "{derived} in {empty}");
        }
    }

    #[test]
    fn the_summary_fits_its_bound() {
        let widest = |i: usize| {
            let mut z = zone(&format!("{i:0>63}"), i32::MIN, i32::MAX, Some(i32::MIN));
            z.full = Some("PodsUnschedulable".into());
            z.weight = Some(100);
            z
        };
        let status = |n: usize| ZonalScaledObjectStatus {
            zones: (0..n).map(widest).collect(),
            ..Default::default()
        };
        let most = status(ZONES_MAX as usize).zone_summary().unwrap();
        assert!(most.chars().count() <= ZONE_SUMMARY_MAX, "{}", most.len());
        assert!(!most.ends_with('…'));
        let too_many = status(40).zone_summary().unwrap();
        assert_eq!(too_many.chars().count(), ZONE_SUMMARY_MAX);
        assert!(too_many.ends_with('…'));
        let schema = schema();
        assert_eq!(
            schema["properties"]["status"]["properties"]["zoneSummary"]["maxLength"].as_u64(),
            Some(ZONE_SUMMARY_MAX as u64)
        );
    }

    #[test]
    fn the_summary_names_each_zones_weight_with_routing() {
        let mut status = ZonalScaledObjectStatus {
            zones: vec![zone("a", 2, 0, Some(2)), zone("c", 1, 0, Some(4))],
            ..Default::default()
        };
        status.zones[1].full = Some("PodsUnschedulable".into());
        (status.zones[0].weight, status.zones[1].weight) = (Some(58), Some(42));
        assert_eq!(
            status.zone_summary().as_deref(),
            Some("a 2/2 58%, c 1/4 full 42%")
        );
    }

    #[test]
    fn routing_objects_name_this_kind_as_their_owner() {
        use kube::Resource;
        assert_eq!(
            ZonalScaledObject::api_version(&()),
            crate::k8s::routing::OWNER_API_VERSION
        );
        assert_eq!(
            ZonalScaledObject::kind(&()),
            crate::k8s::routing::OWNER_KIND
        );
    }

    /// Every signal of the signal table has exactly one field of `spec.signals`, a quantile
    /// field exactly when it takes a quantile, and the schema and the CEL rule list the same.
    #[test]
    fn signal_fields_are_the_signal_table() {
        use crate::model::signal::SIGNALS;
        let mut named: Vec<&str> = SIGNAL_FIELDS.iter().map(|(_, n)| *n).collect();
        named.sort_unstable();
        let mut table: Vec<&str> = SIGNALS.iter().map(|d| d.name).collect();
        table.sort_unstable();
        assert_eq!(named, table, "one field per signal of SIGNALS");

        let signals = &schema()["properties"]["spec"]["properties"]["signals"];
        let mut props: Vec<&str> = signals["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        props.sort_unstable();
        let mut fields: Vec<&str> = SIGNAL_FIELDS.iter().map(|(f, _)| *f).collect();
        fields.sort_unstable();
        assert_eq!(props, fields, "the schema's fields are the table's");
        let rule = signals["x-kubernetes-validations"].to_string();
        for (field, name) in SIGNAL_FIELDS {
            assert!(rule.contains(&format!("has(self.{field})")), "{field}");
            let quantile = SIGNALS.iter().find(|d| d.name == name).unwrap().quantile;
            let one = serde_json::json!({ field: {"target": 0.5} });
            let spec: SignalsSpec = serde_json::from_value(one).unwrap();
            let got = spec.fields();
            assert_eq!(got.len(), 1, "{field}");
            assert_eq!(got[0].0, field, "fields() names {field} by its own field");
            assert_eq!(
                matches!(got[0].1, SignalField::Quantile(_)),
                quantile,
                "{field}: a quantile field exactly when {name} takes a quantile"
            );
        }
    }

    #[test]
    fn sources_are_one_of_each_kind() {
        let s = schema();
        let sources = &s["properties"]["spec"]["properties"]["sources"];
        let rules = |at: &str| sources["properties"][at]["x-kubernetes-validations"].to_string();
        assert!(rules("modelServer")
            .contains("(has(self.service) ? 1 : 0) + (has(self.selector) ? 1 : 0) + (has(self.inferencePool) ? 1 : 0) == 1"));
        assert!(rules("modelServer").contains("has(self.port) || has(self.inferencePool)"));
        assert!(rules("endpointPicker")
            .contains("(has(self.service) ? 1 : 0) + (has(self.inferencePool) ? 1 : 0) == 1"));
        assert!(sources["x-kubernetes-validations"]
            .to_string()
            .contains("has(self.endpointPicker)"));
        let picker: EndpointPickerSource =
            serde_json::from_value(serde_json::json!({"inferencePool": "llama"})).unwrap();
        assert_eq!(picker.port, IntOrString::Int(9090));
        assert_eq!(picker.path, "/metrics");
    }

    #[test]
    fn yaml_starts_with_the_generated_marker() {
        let y = crd_yaml().unwrap();
        assert!(y.starts_with("# Generated by `redbridge crd`"));
        assert!(y.contains("kind: CustomResourceDefinition"));
    }
}
