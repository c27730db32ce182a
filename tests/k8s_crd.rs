//! The ZonalScaledObject CRD: `crds/` is what `redbridge crd` prints; the example is valid and
//! turns into ScaledObjects KEDA's schema accepts; invalid specs are refused, by the API server's
//! schema and CEL rules or by redbridge, with messages that name the field.

#[path = "k8s/schema.rs"]
mod schema;

use std::collections::HashMap;

use serde_json::{json, Value};

use redbridge::config::trigger::TriggerQuery;
use redbridge::k8s::crd::{crd_yaml, ZonalScaledObject};
use redbridge::k8s::plan::Plan;
use redbridge::k8s::scaledobject::{self, TriggerSettings};

const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/zonalscaledobjects.yaml"
);
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/zonalscaledobject.yaml"
);

fn example() -> Value {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn our_schema() -> Value {
    schema::crd_schema(&crd_yaml().unwrap())
}

#[test]
fn crds_folder_is_current() {
    let generated = crd_yaml().unwrap();
    let on_disk = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
    assert!(
        on_disk == generated,
        "crds/zonalscaledobjects.yaml is stale: regenerate it with\n  \
         cargo run -q -- crd > crds/zonalscaledobjects.yaml"
    );
}

#[test]
fn the_example_is_valid_and_becomes_valid_scaled_objects() {
    let object = example();
    let problems = schema::validate_all(&our_schema(), &object);
    assert!(problems.is_empty(), "{problems:#?}");

    // deploy/rbac runs the controller with deploy/base's pools: the example must not take a name.
    let base = redbridge::model::Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/base/pools.yaml"
    )))
    .unwrap();
    let (name, ns) = (
        object["metadata"]["name"].as_str().unwrap(),
        object["metadata"]["namespace"].as_str().unwrap(),
    );
    assert!(
        base.pool(name, ns).is_none(),
        "{ns}/{name} is also a pool of deploy/base"
    );
    let mut zso: ZonalScaledObject = serde_json::from_value(object).unwrap();
    zso.metadata.uid = Some("5b1d5e0e-1111-4c7e-9a4c-000000000001".into());
    let plan = Plan::from_spec(&zso.spec).unwrap();
    assert_eq!(plan.zones.len(), 3);
    let settings = TriggerSettings {
        scaler_address: "redbridge.redbridge.svc:9090".into(),
        cluster_trigger_authentication: Some("redbridge-tls".into()),
    };
    let objects = scaledobject::desired(&zso, &plan, &settings).unwrap();
    let keda = schema::keda_scaledobject_schema();
    let names: Vec<&str> = objects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "llama-3-70b-zonal-us-east-1a",
            "llama-3-70b-zonal-us-east-1b",
            "llama-3-70b-zonal-us-east-1c"
        ]
    );
    for (name, so) in &objects {
        let problems = schema::validate_all(&keda, so);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
        let spec = &so["spec"];
        assert_eq!(spec["idleReplicaCount"], 0, "scale to zero");
        assert_eq!(spec["cooldownPeriod"], 1800);
        assert_eq!(spec["pollingInterval"], 15);
        let behavior = &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
        assert_eq!(
            behavior["scaleDown"]["stabilizationWindowSeconds"], 900,
            "override"
        );
        assert_eq!(
            behavior["scaleUp"]["stabilizationWindowSeconds"], 0,
            "GPU default kept"
        );
        let owner = &so["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ZonalScaledObject");
        assert_eq!(owner["controller"], true);
        let triggers = spec["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 5, "one trigger per signal");
        for t in triggers {
            assert_eq!(t["type"], "external-push");
            assert_eq!(
                t["authenticationRef"]["kind"],
                "ClusterTriggerAuthentication"
            );
            let meta: HashMap<String, String> =
                serde_json::from_value(t["metadata"].clone()).unwrap();
            assert_eq!(meta["enableTLS"], "true");
            // Exactly what KEDA will forward: redbridge's strict parser must accept it.
            let q = TriggerQuery::from_metadata(&meta).unwrap();
            assert_eq!(q.pool, "llama-3-70b-zonal");
            assert_eq!(
                Some(q.zone.as_deref().unwrap()),
                so["metadata"]["labels"]["redbridge.io/zone"].as_str()
            );
            let want = match q.signal.base_name() {
                "latency" | "time_to_first_token" | "kv_cache_utilization" => "Value",
                "queue_depth" | "generation_tokens_per_second" | "concurrency" => "AverageValue",
                other => panic!("unexpected signal {other}"),
            };
            assert_eq!(t["metricType"], want, "{}", q.signal.name());
        }
    }
}

/// What the API server (schema, then CEL) or redbridge says about the example with one change.
fn verdict(edit: impl FnOnce(&mut Value)) -> String {
    let mut object = example();
    edit(&mut object);
    let mut problems = schema::validate_all(&our_schema(), &object);
    if problems.is_empty() {
        let zso: ZonalScaledObject = serde_json::from_value(object).unwrap();
        if let Err(e) = Plan::from_spec(&zso.spec) {
            problems.push(format!("redbridge: {e}"));
        }
    }
    problems.join("\n")
}

#[test]
fn invalid_specs_are_refused_naming_the_field() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("no zones", Box::new(|o| o["spec"]["zones"] = json!([])), "spec.zones: needs at least 1 items"),
        (
            "min above max",
            Box::new(|o| o["spec"]["zones"][2]["minReplicas"] = json!(6)),
            "minReplicas must be at most maxReplicas",
        ),
        (
            "zone listed twice",
            Box::new(|o| o["spec"]["zones"][1]["name"] = json!("us-east-1a")),
            "spec.zones: duplicate entry",
        ),
        (
            "unknown kind",
            Box::new(|o| o["spec"]["zones"][0]["scaleTargetRef"]["kind"] = json!("DaemonSet")),
            "spec.zones[0].scaleTargetRef.kind: \"DaemonSet\" is not one of",
        ),
        (
            "a URL instead of a Service",
            Box::new(|o| o["spec"]["sources"]["gateway"]["service"] = json!("http://169.254.169.254")),
            "spec.sources.gateway.service: \"http://169.254.169.254\" does not match",
        ),
        (
            "a path that changes the host",
            Box::new(|o| o["spec"]["sources"]["modelServer"]["path"] = json!("@evil.example/metrics")),
            "spec.sources.modelServer.path: \"@evil.example/metrics\" does not match",
        ),
        (
            "an address field",
            Box::new(|o| o["spec"]["sources"]["modelServer"]["url"] = json!("http://10.0.0.1/metrics")),
            "spec.sources.modelServer.url: unknown field",
        ),
        (
            "both service and selector",
            Box::new(|o| o["spec"]["sources"]["modelServer"]["service"] = json!("llama")),
            "exactly one of service and selector is required",
        ),
        (
            "no source",
            Box::new(|o| o["spec"]["sources"] = json!({})),
            "at least one of gateway and modelServer is required",
        ),
        (
            "port out of range",
            Box::new(|o| o["spec"]["sources"]["gateway"]["port"] = json!(70000)),
            "redbridge: spec.sources.gateway.port: 70000 is not a port number",
        ),
        ("no signal", Box::new(|o| o["spec"]["signals"] = json!({})), "at least one signal is required"),
        (
            "zero target",
            Box::new(|o| o["spec"]["signals"]["latency"]["target"] = json!(0)),
            "target must be greater than 0",
        ),
        (
            "quantile of 1",
            Box::new(|o| o["spec"]["signals"]["latency"]["quantile"] = json!(1)),
            "quantile must be between 0 and 1",
        ),
        (
            "KV cache above 1",
            Box::new(|o| o["spec"]["signals"]["kvCacheUtilization"]["target"] = json!(1.5)),
            "target is a fraction of the KV cache",
        ),
        (
            "spillover to an unknown zone",
            Box::new(|o| o["spec"]["spillover"]["order"] = json!(["us-east-1a", "eu-west-1a"])),
            "spillover.order may only name zones listed in spec.zones",
        ),
        (
            "not a duration",
            Box::new(|o| o["spec"]["warmup"]["modelLoadTime"] = json!("six minutes")),
            "spec.warmup.modelLoadTime: \"six minutes\" does not match",
        ),
        (
            "a route matcher that is not one",
            Box::new(|o| o["spec"]["sources"]["gateway"]["routeMatcher"] = json!("llama-route")),
            "redbridge: spec.sources.gateway.routeMatcher: `llama-route` is not a label matcher",
        ),
        (
            "a signal the source cannot give",
            Box::new(|o| o["spec"]["signals"]["kvCacheUtilization"]["source"] = json!("gateway")),
            "redbridge: spec.signals.kvCacheUtilization: the gateway source (profile envoy) does not provide kv_cache_utilization",
        ),
        (
            "a window too short for the interval",
            Box::new(|o| o["spec"]["scrape"] = json!({"interval": "20s", "window": "30s"})),
            "redbridge: spec.scrape.interval: must be at most half the window",
        ),
    ];
    for (case, edit, want) in cases {
        let got = verdict(edit);
        assert!(got.contains(want), "{case}: want {want:?} in:\n{got}");
    }
    assert_eq!(verdict(|_| {}), "", "the example itself is valid");
}

#[test]
fn the_keda_schema_check_refuses_a_broken_scaled_object() {
    // The checks that validate every ScaledObject redbridge writes must be able to fail.
    let keda = schema::keda_scaledobject_schema();
    let broken = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": ""},
            "minReplicaCount": 5,
            "maxReplicaCount": 2,
            "triggers": [{"type": "external-push", "metadata": {"a": 1}, "metricTyp": "Value"}]
        }
    });
    let problems = schema::validate_all(&keda, &broken).join("\n");
    for want in [
        "spec.scaleTargetRef.name: shorter than 1",
        "spec.triggers[0].metadata.a: must be string",
        "spec.triggers[0].metricTyp: unknown field",
        "minReplicaCount must be less than or equal to maxReplicaCount",
    ] {
        assert!(problems.contains(want), "{want} not in:\n{problems}");
    }
}

/// Field paths of a schema, `spec.zones[].name` style, not descending into Kubernetes' own types.
fn field_paths(schema: &Value, at: &str, out: &mut Vec<String>) {
    let opaque = [
        "spec.sources.modelServer.selector",
        "spec.keda.behavior",
        "status.conditions",
    ];
    if opaque.contains(&at) {
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            // `spec` and `status` themselves are the sections, not fields.
            if !at.is_empty() {
                out.push(path.clone());
            }
            field_paths(v, &path, out);
        }
    }
    if schema["type"] == "array" {
        field_paths(&schema["items"], &format!("{at}[]"), out);
    }
}

#[test]
fn docs_describe_every_field() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/crd.md")).unwrap();
    let mut paths = Vec::new();
    field_paths(&our_schema(), "", &mut paths);
    assert!(paths.len() > 50, "{paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            let generic = p
                .strip_prefix("spec.signals.")
                .and_then(|rest| rest.split_once('.'))
                .map(|(_, field)| format!("spec.signals.<signal>.{field}"));
            !doc.contains(&format!("`{p}`"))
                && generic.is_none_or(|g| !doc.contains(&format!("`{g}`")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/crd.md does not describe: {missing:#?}"
    );
}
