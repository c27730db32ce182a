//! Zone routing: `spec.routing` refuses what it should at `kubectl apply` (schema and CEL, every
//! string and list bounded), and every object redbridge renders for it is valid against the real
//! CRD schemas in `../shared/fixtures/crds/` (Gateway API HTTPRoute, Envoy Gateway
//! BackendTrafficPolicy, Istio DestinationRule), and against the rules Istio's webhook adds for
//! locality weights.

use super::schema;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use redbridge::k8s::routing::{self, Lever, Owner, RoutingSpec, ZoneService};
use redbridge::zonal::weights::{decide, Full, Policy, Weights, ZoneInput};

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// The schema of `version` of the CRD in `../shared/fixtures/crds/<file>`.
fn fixture(file: &str, version: &str) -> Value {
    let path = redbridge_fixtures::path(format!("crds/{file}"));
    let text = redbridge_fixtures::read(&path);
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: Value = Deserialize::deserialize(doc).expect("CRD YAML parses");
        if crd["kind"] != "CustomResourceDefinition" {
            continue;
        }
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        if let Some(v) = versions.iter().find(|v| v["name"] == version) {
            return v["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("{} has no version {version}", path.display());
}

/// The CRD schema an object of `lever` must satisfy, at the version redbridge writes.
fn schema_for(lever: Lever, body: &Value) -> Value {
    let file = match lever {
        Lever::HttpRoute => "gateway.networking.k8s.io_httproutes.yaml",
        Lever::EnvoyGateway => "gateway.envoyproxy.io_backendtrafficpolicies.yaml",
        Lever::Istio => "networking.istio.io_destinationrules.yaml",
    };
    let api = lever.api_resource();
    assert_eq!(body["apiVersion"], api.api_version, "{lever:?}");
    assert_eq!(body["kind"], api.kind, "{lever:?}");
    fixture(file, &api.version)
}

/// `spec.routing` inside a CRD built as the ZonalScaledObject's is, so the schema is the one the
/// API server would get (structural, with kube's rewrites) once `spec.routing` is added there.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "probe.redbridge.io",
    version = "v1",
    kind = "RoutingProbe",
    namespaced
)]
struct RoutingProbeSpec {
    routing: RoutingSpec,
}

fn routing_schema() -> Value {
    let crd = serde_json::to_value(RoutingProbe::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

const HTTP_ROUTE: &str = r#"
httpRoute:
  parentRefs:
    - name: inference
      namespace: gateways
      sectionName: https
  hostnames: ["llama.example.com"]
  matches:
    - path: {type: PathPrefix, value: /v1}
      headers:
        - {name: x-model, value: llama-70b}
    - path: {type: Exact, value: /health}
      method: GET
  port: 8000
  timeouts: {request: 10m, backendRequest: 5m}
changeThreshold: 5
maxStep: 25
minChangeInterval: 30s
"#;

const ENVOY_GATEWAY: &str = r#"
envoyGateway:
  httpRoute: llama
  loadBalancer: LeastRequest
"#;

const ISTIO: &str = r#"
istio:
  service: llama
  region: us-east-1
"#;

fn routing(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap()
}

fn probe(routing: Value) -> Value {
    json!({
        "apiVersion": "probe.redbridge.io/v1",
        "kind": "RoutingProbe",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": {"routing": routing},
    })
}

fn problems(routing: Value) -> String {
    schema::validate_all(&routing_schema(), &probe(routing)).join("\n")
}

#[test]
fn one_example_per_mode_is_valid_and_reads_back() {
    for (yaml, lever) in [
        (HTTP_ROUTE, Lever::HttpRoute),
        (ENVOY_GATEWAY, Lever::EnvoyGateway),
        (ISTIO, Lever::Istio),
    ] {
        let value = routing(yaml);
        let found = problems(value.clone());
        assert!(found.is_empty(), "{lever:?}: {found}");
        let spec: RoutingSpec = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(spec.lever().unwrap(), lever);
        // What redbridge reads is what was written: no field lost or renamed.
        assert_eq!(serde_json::to_value(&spec).unwrap(), value, "{lever:?}");
    }
}

#[test]
fn the_schema_refuses_what_the_render_cannot_use() {
    let mut both = routing(HTTP_ROUTE);
    both["istio"] = routing(ISTIO)["istio"].clone();
    let mut bad_path = routing(HTTP_ROUTE);
    bad_path["httpRoute"]["matches"][0]["path"]["value"] = json!("v1");
    let mut no_parent = routing(HTTP_ROUTE);
    no_parent["httpRoute"]["parentRefs"] = json!([]);
    let mut bad_host = routing(HTTP_ROUTE);
    bad_host["httpRoute"]["hostnames"] = json!(["Llama_Host"]);
    let mut slow_backend = routing(HTTP_ROUTE);
    slow_backend["httpRoute"]["timeouts"] = json!({"request": "5m", "backendRequest": "10m"});
    let mut two_headers = routing(HTTP_ROUTE);
    two_headers["httpRoute"]["matches"][0]["headers"] =
        json!([{"name": "x-a", "value": "1"}, {"name": "x-a", "value": "2"}]);
    let mut bad_region = routing(ISTIO);
    bad_region["istio"]["region"] = json!("us/east");
    let mut bad_balancer = routing(ENVOY_GATEWAY);
    bad_balancer["envoyGateway"]["loadBalancer"] = json!("ConsistentHash");
    let mut knobs = routing(ISTIO);
    knobs["changeThreshold"] = json!(0);
    knobs["maxStep"] = json!(101);
    knobs["minChangeInterval"] = json!("soon");
    let cases = [
        (
            json!({}),
            "exactly one of httpRoute, envoyGateway and istio",
        ),
        (both, "exactly one of httpRoute, envoyGateway and istio"),
        (bad_path, "an Exact or PathPrefix path must start with '/'"),
        (
            no_parent,
            "spec.routing.httpRoute.parentRefs: needs at least 1 items",
        ),
        (
            bad_host,
            "spec.routing.httpRoute.hostnames[0]: \"Llama_Host\" does not match",
        ),
        (slow_backend, "backendRequest must be no more than request"),
        (two_headers, "headers: duplicate entry"),
        (
            bad_region,
            "spec.routing.istio.region: \"us/east\" does not match",
        ),
        (
            bad_balancer,
            "loadBalancer: \"ConsistentHash\" is not one of",
        ),
        (knobs.clone(), "changeThreshold: 0 is below the minimum 1"),
        (knobs.clone(), "maxStep: 101 is above the maximum 100"),
        (knobs, "minChangeInterval: \"soon\" does not match"),
    ];
    for (value, want) in cases {
        let found = problems(value.clone());
        assert!(
            found.contains(want),
            "{want:?} not in:\n{found}\nfor {value}"
        );
    }
}

/// Strings without a bound, lists without `maxItems` and maps without `maxProperties` under `at`:
/// the API server's CEL cost estimate needs them, and they keep an object's size reasonable.
fn unbounded(schema: &Value, at: &str, out: &mut Vec<String>) {
    match schema["type"].as_str() {
        Some("string") if schema["maxLength"].is_null() && schema["enum"].is_null() => {
            out.push(format!("{at}: string without maxLength"));
        }
        Some("array") => {
            if schema["maxItems"].is_null() {
                out.push(format!("{at}: list without maxItems"));
            }
            unbounded(&schema["items"], &format!("{at}[]"), out);
        }
        Some("object") => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in props {
                    unbounded(v, &format!("{at}.{k}"), out);
                }
            }
            if schema["additionalProperties"].is_object() && schema["maxProperties"].is_null() {
                out.push(format!("{at}: map without maxProperties"));
            }
        }
        _ => {}
    }
}

#[test]
fn every_string_and_list_of_spec_routing_is_bounded() {
    let schema = routing_schema();
    let spec_routing = &schema["properties"]["spec"]["properties"]["routing"];
    assert!(
        spec_routing["properties"]["httpRoute"].is_object(),
        "{spec_routing}"
    );
    let mut found = Vec::new();
    unbounded(spec_routing, "spec.routing", &mut found);
    assert!(found.is_empty(), "{found:#?}");
    // The check itself finds what it should.
    let mut found = Vec::new();
    unbounded(
        &json!({"type": "object", "properties": {
            "s": {"type": "string"},
            "l": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 3}},
            "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}},
        }}),
        "x",
        &mut found,
    );
    assert_eq!(
        found,
        vec![
            "x.m: map without maxProperties",
            "x.s: string without maxLength"
        ]
    );
}

fn zone(name: &str, ready: u32, full: Option<Full>, demand: f64) -> ZoneInput {
    ZoneInput {
        name: name.into(),
        ready,
        starting: 0,
        max_replicas: 10,
        full,
        capacity_per_replica: 2.0,
        demand: Some(demand),
    }
}

/// Weights in the situations that shape the objects differently: all local, one zone stocked out,
/// one zone without a Ready replica, every zone full, nothing Ready anywhere.
fn situations() -> Vec<(&'static str, Weights)> {
    let unschedulable = Some(Full::Unschedulable { for_secs: 180.0 });
    let at_max = Some(Full::AtMax);
    let cases = vec![
        (
            "local",
            vec![
                zone(ZONES[0], 2, None, 3.0),
                zone(ZONES[1], 2, None, 2.0),
                zone(ZONES[2], 1, None, 1.0),
            ],
        ),
        (
            "stocked out",
            vec![
                zone(ZONES[0], 3, None, 1.0),
                zone(ZONES[1], 3, None, 1.0),
                zone(ZONES[2], 1, unschedulable, 12.0),
            ],
        ),
        (
            "asleep",
            vec![
                zone(ZONES[0], 0, None, 2.0),
                zone(ZONES[1], 3, None, 1.0),
                zone(ZONES[2], 1, None, 0.5),
            ],
        ),
        (
            "pool full",
            vec![
                zone(ZONES[0], 1, at_max, 9.0),
                zone(ZONES[1], 2, at_max, 9.0),
                zone(ZONES[2], 4, at_max, 1.0),
            ],
        ),
        (
            "nothing ready",
            vec![
                zone(ZONES[0], 0, None, 1.0),
                zone(ZONES[1], 0, None, 0.0),
                zone(ZONES[2], 0, None, 0.0),
            ],
        ),
    ];
    cases
        .into_iter()
        .map(|(name, zones)| {
            (
                name,
                decide(&zones, &[], None, 0.0, &Policy::default()).weights,
            )
        })
        .collect()
}

fn owner() -> Owner {
    Owner {
        name: "llama-70b".into(),
        namespace: "ml".into(),
        uid: "5b0c7c3e-5d0e-4a59-9c53-7f1d1b7a2c11".into(),
    }
}

fn services() -> Vec<ZoneService> {
    ZONES
        .iter()
        .map(|z| ZoneService {
            zone: z.to_string(),
            service: Some(format!("llama-70b-{z}")),
        })
        .collect()
}

fn render(yaml: &str, weights: &Weights) -> routing::Owned {
    let spec: RoutingSpec = serde_json::from_value(routing(yaml)).unwrap();
    routing::render(&owner(), &spec, &services(), weights).unwrap()
}

#[test]
fn every_rendered_object_is_valid_against_its_crd() {
    for (situation, weights) in situations() {
        for yaml in [HTTP_ROUTE, ENVOY_GATEWAY, ISTIO] {
            let owned = render(yaml, &weights);
            let schema = schema_for(owned.lever, &owned.body);
            let found = schema::validate_all(&schema, &owned.body);
            assert!(
                found.is_empty(),
                "{situation}, {:?}: the CRD refuses what redbridge writes: {found:#?}\n{}",
                owned.lever,
                serde_json::to_string_pretty(&owned.body).unwrap()
            );
            assert_eq!(owned.body["metadata"]["name"], owned.name);
            if owned.lever == Lever::Istio {
                let found = istio_webhook(&owned.body);
                assert!(found.is_empty(), "{situation}: {found:#?}");
            }
        }
    }
}

#[test]
fn weights_reach_each_lever() {
    let (_, weights) = situations().remove(2); // zone-a asleep: served by zone-b
    let route = render(HTTP_ROUTE, &weights).body;
    let refs = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
    let http: Vec<u64> = refs.iter().map(|r| r["weight"].as_u64().unwrap()).collect();
    assert_eq!(http.iter().sum::<u64>(), 1_000_000);
    assert_eq!(http[0], 0, "{refs:?}");
    let rule = &route["spec"]["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["value"], "/v1");
    assert_eq!(rule["timeouts"]["request"], "10m");
    assert_eq!(route["spec"]["hostnames"], json!(["llama.example.com"]));
    assert_eq!(route["spec"]["parentRefs"][0]["sectionName"], "https");

    let btp = render(ENVOY_GATEWAY, &weights).body;
    let zones = btp["spec"]["loadBalancer"]["zoneAware"]["weightedZones"]
        .as_array()
        .unwrap();
    assert_eq!(zones.len(), 3);
    assert_eq!(zones[0], json!({"zone": "zone-a", "weight": 1}));
    assert_eq!(btp["spec"]["targetRefs"][0]["name"], "llama");

    let dr = render(ISTIO, &weights).body;
    let distribute =
        &dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"];
    assert_eq!(
        distribute[0],
        json!({"from": "us-east-1/zone-a/*", "to": {"us-east-1/zone-b/*": 100}})
    );
    assert_eq!(dr["spec"]["host"], "llama.ml.svc.cluster.local");
}

/// What Istio's validation adds for `localityLbSetting` beyond the CRD schema (istio/istio
/// pkg/config/validation, `ValidateLocalityLbSetting`): weights of 1 to 100 summing to 100 per
/// source, localities `region[/zone[/subzone]]` with no empty part and at most one `*`, at the end,
/// no source named twice; and outlier detection present, without which the setting does nothing.
fn istio_webhook(dr: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let policy = &dr["spec"]["trafficPolicy"];
    if !policy["outlierDetection"].is_object() {
        out.push("no outlierDetection: localityLbSetting has no effect".into());
    }
    let check_locality = |l: &str, out: &mut Vec<String>| {
        let stars = l.matches('*').count();
        if stars > 1 || (stars == 1 && !l.ends_with('*')) {
            out.push(format!("locality {l}: '*' only once, at the end"));
        }
        if l.splitn(3, '/').any(str::is_empty) {
            out.push(format!("locality {l}: empty region/zone/subzone"));
        }
    };
    let mut sources = Vec::new();
    let rows = policy["loadBalancer"]["localityLbSetting"]["distribute"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for row in rows {
        let from = row["from"].as_str().unwrap_or_default().to_string();
        check_locality(&from, &mut out);
        if sources.contains(&from) {
            out.push(format!("source {from} named twice"));
        }
        let mut total = 0;
        for (to, w) in row["to"].as_object().into_iter().flatten() {
            check_locality(to, &mut out);
            match w.as_u64() {
                Some(w @ 1..=100) => total += w,
                _ => out.push(format!("{from} -> {to}: weight {w} not in 1..=100")),
            }
        }
        if total != 100 {
            out.push(format!("{from}: total weight {total} != 100"));
        }
        sources.push(from);
    }
    out
}

#[test]
fn the_checks_refuse_broken_objects() {
    let (_, weights) = situations().remove(1);
    let route = render(HTTP_ROUTE, &weights).body;
    let route_schema = schema_for(Lever::HttpRoute, &route);
    let mut heavy = route.clone();
    heavy["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(1_000_001);
    let mut portless = route.clone();
    portless["spec"]["rules"][0]["backendRefs"][0]
        .as_object_mut()
        .unwrap()
        .remove("port");
    let btp = render(ENVOY_GATEWAY, &weights).body;
    let btp_schema = schema_for(Lever::EnvoyGateway, &btp);
    let mut untyped = btp.clone();
    untyped["spec"]["loadBalancer"]
        .as_object_mut()
        .unwrap()
        .remove("type");
    let mut both = btp.clone();
    both["spec"]["loadBalancer"]["zoneAware"]["preferLocal"] = json!({});
    let dr = render(ISTIO, &weights).body;
    let dr_schema = schema_for(Lever::Istio, &dr);
    let mut negative = dr.clone();
    negative["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"][0]["to"]
        ["us-east-1/zone-a/*"] = json!(-1);
    let cases = [
        (
            &route_schema,
            heavy,
            "weight: 1000001 is above the maximum 1000000",
        ),
        (
            &route_schema,
            portless,
            "Must have port for Service reference",
        ),
        (
            &btp_schema,
            untyped,
            "loadBalancer: required field type is missing",
        ),
        (
            &btp_schema,
            both,
            "ZoneAware PreferLocal and WeightedZones cannot be specified together",
        ),
        (&dr_schema, negative, "-1 is below the minimum 0"),
    ];
    for (schema, body, want) in cases {
        let found = schema::validate_all(schema, &body).join("\n");
        assert!(found.contains(want), "{want:?} not in:\n{found}");
    }

    let mut wildcard = dr.clone();
    wildcard["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"] =
        json!([{"from": "*/zone-a/*", "to": {"*/zone-a/*": 60, "us-east-1/zone-b/*": 39}}]);
    wildcard["spec"]["trafficPolicy"]
        .as_object_mut()
        .unwrap()
        .remove("outlierDetection");
    let found = istio_webhook(&wildcard).join("\n");
    for want in [
        "no outlierDetection",
        "locality */zone-a/*: '*' only once, at the end",
        "*/zone-a/*: total weight 99 != 100",
    ] {
        assert!(found.contains(want), "{want:?} not in:\n{found}");
    }
}

/// The ZonalScaledObject CRD itself: `spec.routing` is there, and a CEL rule refuses an
/// `httpRoute` without a Service in every zone (the zones' pattern and bounds hold too).
#[test]
fn the_zonal_scaled_object_crd_needs_a_service_per_zone_for_http_route() {
    let crd = redbridge::k8s::crd::crd_yaml().unwrap();
    let schema = schema::crd_schema(&crd);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/zonalscaledobject.yaml"
    );
    let example: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let with = |routing: Value, services: bool| {
        let mut zso = example.clone();
        zso["spec"]["routing"] = routing;
        if services {
            for (i, zone) in zso["spec"]["zones"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .enumerate()
            {
                zone["service"] = json!(format!("llama-{i}"));
            }
        }
        schema::validate_all(&schema, &zso).join("\n")
    };
    let http = json!({"httpRoute": {"parentRefs": [{"name": "gw"}], "port": 8000}});
    assert_eq!(with(http.clone(), true), "");
    let missing = with(http, false);
    assert!(
        missing.contains("spec.routing.httpRoute needs spec.zones[].service in every zone"),
        "{missing}"
    );
    let envoy = json!({"envoyGateway": {"httpRoute": "llama"}});
    assert_eq!(with(envoy, false), "", "only httpRoute needs them");
    let mut bad = example.clone();
    bad["spec"]["zones"][0]["service"] = json!("Not_A_Label");
    assert!(schema::validate_all(&schema, &bad)
        .join("\n")
        .contains("spec.zones[0].service"));
    let two = with(
        json!({"envoyGateway": {"httpRoute": "llama"}, "istio": {"service": "llama", "region": "r"}}),
        false,
    );
    assert!(
        two.contains("exactly one of httpRoute, envoyGateway and istio"),
        "{two}"
    );
}
