//! The ZonalScaledObject CRD: `crds/` is what `redbridge crd` prints; the example is valid and
//! turns into ScaledObjects KEDA's schema accepts; invalid specs are refused, by the API server's
//! schema and CEL rules or by redbridge, with messages that name the field.

use super::schema;

use std::collections::HashMap;

use serde_json::{json, Value};

use redbridge::config::trigger::TriggerQuery;
use redbridge::k8s::crd::{crd_yaml, ZonalScaledObject, ZonalScaledObjectStatus, ZoneStatus};
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
            "exactly one of service, selector and inferencePool is required",
        ),
        (
            "no source",
            Box::new(|o| o["spec"]["sources"] = json!({})),
            "at least one of gateway, modelServer and endpointPicker is required",
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
            "spillover to a zone twice",
            Box::new(|o| o["spec"]["spillover"]["order"] = json!(["us-east-1a", "us-east-1b", "us-east-1a"])),
            "spillover.order names a zone twice",
        ),
        (
            "spillover to something that is not a zone name",
            Box::new(|o| o["spec"]["spillover"]["order"] = json!(["us east 1a"])),
            "spec.spillover.order[0]: \"us east 1a\" does not match",
        ),
        (
            "a duration longer than any",
            Box::new(|o| o["spec"]["warmup"]["modelLoadTime"] = json!("1".repeat(40) + "s")),
            "spec.warmup.modelLoadTime: longer than 32",
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

/// Paths of every string, list and map of `schema` with no bound on its size. The API server
/// prices each CEL rule from the sizes of what it reads and refuses the whole CRD when one could
/// cost more than its budget; an unbounded string counts as large as a request (3 MiB).
fn unbounded(schema: &Value, at: &str, out: &mut Vec<String>) {
    // CEL sees int-or-string as `dyn` of a fixed estimated size whatever its bounds, and a rule
    // must check its type before using it: bounds would not change a rule's price.
    if schema["x-kubernetes-int-or-string"] == true {
        return;
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        out.push(format!("{at}: preserves unknown fields"));
    }
    match schema["type"].as_str() {
        Some("string") => {
            let bounded = schema.get("maxLength").is_some()
                || schema.get("enum").is_some()
                || matches!(schema["format"].as_str(), Some("date-time" | "date"));
            if !bounded {
                out.push(format!("{at}: string without maxLength"));
            }
        }
        Some("array") => {
            if schema.get("maxItems").is_none() {
                out.push(format!("{at}: list without maxItems"));
            }
            unbounded(&schema["items"], &format!("{at}[]"), out);
        }
        Some("object") => {
            if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                if schema.get("maxProperties").is_none() {
                    out.push(format!("{at}: map without maxProperties"));
                }
                unbounded(values, &format!("{at}.*"), out);
            }
            for (k, v) in schema["properties"].as_object().into_iter().flatten() {
                unbounded(v, &format!("{at}.{k}"), out);
            }
        }
        Some(_) => {}
        None => out.push(format!("{at}: no type")),
    }
}

/// Everything redbridge declares (the API server validates apiVersion, kind and metadata itself).
fn unbounded_fields(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in root["properties"].as_object().unwrap() {
        if !["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
            unbounded(v, k, &mut out);
        }
    }
    out
}

#[test]
fn every_string_list_and_map_is_bounded() {
    let missing = unbounded_fields(&our_schema());
    assert!(
        missing.is_empty(),
        "the API server cannot price CEL rules over these: bound them in crd.rs: {missing:#?}"
    );

    // The check catches what the API server refused: spillover.order's items without maxLength.
    let mut schema = our_schema();
    let items = &mut schema["properties"]["spec"]["properties"]["spillover"]["properties"]["order"]
        ["items"];
    items.as_object_mut().unwrap().remove("maxLength");
    assert_eq!(
        unbounded_fields(&schema),
        ["spec.spillover.order[]: string without maxLength"]
    );
}

/// The API server's limits on the estimated cost of one CEL rule (`StaticEstimatedCostLimit`)
/// and of all of a CRD's rules times how often each runs (`StaticEstimatedCRDCostLimit`).
const RULE_COST_LIMIT: f64 = 10_000_000.0;
const CRD_COST_LIMIT: f64 = 100_000_000.0;
/// What the API server assumes for an unbounded string or list: as large as a request.
const REQUEST_BYTES: f64 = 3.0 * 1024.0 * 1024.0;

/// Bytes of the widest string in `schema` (maxLength counts characters, up to 4 bytes each).
fn widest_string(schema: &Value) -> f64 {
    if schema["x-kubernetes-int-or-string"] == true {
        return REQUEST_BYTES;
    }
    let own = match schema["type"].as_str() {
        Some("string") => match (schema["maxLength"].as_f64(), schema["enum"].as_array()) {
            (Some(n), _) => 4.0 * n,
            (None, Some(e)) => e
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.len() as f64)
                .fold(0.0, f64::max),
            _ if schema["format"] == "date-time" => 32.0,
            _ => REQUEST_BYTES,
        },
        _ => 0.0,
    };
    let mut children: Vec<&Value> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .collect();
    children.extend(schema.get("items"));
    children.extend(schema.get("additionalProperties").filter(|v| v.is_object()));
    children.into_iter().map(widest_string).fold(own, f64::max)
}

/// The list a rule iterates, from the rule's node: `self.a.b` → (maxItems, widest item string).
fn iterated(node: &Value, receiver: &str, rule: &str) -> (f64, f64) {
    let mut at = node;
    for field in receiver.split('.').skip(1) {
        at = &at["properties"][field];
    }
    assert_eq!(
        at["type"], "array",
        "{rule}: {receiver} is not a list of the schema"
    );
    let max_items = at["maxItems"].as_f64().unwrap_or(REQUEST_BYTES);
    (max_items, widest_string(&at["items"]))
}

/// A rough upper estimate of one rule's cost, not the API server's own algorithm: every
/// iteration of a macro (`all`, `exists`, `filter`, ...) costs one unit per byte of the widest
/// string in the items of its list and of the lists around it (comparing two strings costs the
/// API server a tenth of that), nested iterations multiply, and the rest of the rule is free.
/// It follows only macros over `self` paths, and fails on any other so that it cannot miss one.
fn estimated_cost(node: &Value, rule: &str) -> f64 {
    let bytes = rule.as_bytes();
    let macros = regex::Regex::new(r"\.(all|exists_one|exists|filter|map)\(").unwrap();
    // Each macro: its span in the rule, the size of its list and its items' widest string.
    let mut loops: Vec<(usize, usize, f64, f64)> = Vec::new();
    for m in macros.find_iter(rule) {
        let start = rule[..m.start()]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let receiver = &rule[start..m.start()];
        assert!(
            receiver == "self" || receiver.starts_with("self."),
            "{rule}: cannot estimate a macro over {receiver:?}; extend estimated_cost"
        );
        let mut depth = 0;
        let mut end = m.end() - 1;
        for (i, b) in bytes.iter().enumerate().skip(m.end() - 1) {
            match b {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        let (items, widest) = iterated(node, receiver, rule);
        loops.push((m.start(), end, items, widest));
    }
    let mut cost = 1.0;
    for &(start, end, _, _) in &loops {
        let around: Vec<&(usize, usize, f64, f64)> = loops
            .iter()
            .filter(|(s, e, _, _)| *s <= start && end <= *e)
            .collect();
        let iterations: f64 = around.iter().map(|l| l.2).product();
        let widest = around.iter().map(|l| l.3).fold(0.0, f64::max);
        cost += iterations * (1.0 + widest);
    }
    cost
}

/// Every rule of `schema` with its estimated cost and how many times it can run per object.
fn rule_costs(schema: &Value, at: &str, runs: f64, out: &mut Vec<(String, String, f64, f64)>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap();
        out.push((at.into(), text.into(), estimated_cost(schema, text), runs));
    }
    for (k, v) in schema["properties"].as_object().into_iter().flatten() {
        let child = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        rule_costs(v, &child, runs, out);
    }
    if let Some(items) = schema.get("items") {
        let n = schema["maxItems"].as_f64().unwrap_or(REQUEST_BYTES);
        rule_costs(items, &format!("{at}[]"), runs * n, out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        let n = schema["maxProperties"].as_f64().unwrap_or(REQUEST_BYTES);
        rule_costs(values, &format!("{at}.*"), runs * n, out);
    }
}

#[test]
fn every_cel_rule_fits_the_api_servers_cost_budget() {
    let mut costs = Vec::new();
    rule_costs(&our_schema(), "", 1.0, &mut costs);
    assert!(costs.len() >= 10, "{costs:#?}");
    for (at, rule, cost, _) in &costs {
        assert!(
            *cost < RULE_COST_LIMIT,
            "{at}: {rule}: estimated cost {cost} exceeds {RULE_COST_LIMIT}"
        );
    }
    let total: f64 = costs.iter().map(|(_, _, cost, runs)| cost * runs).sum();
    assert!(total < CRD_COST_LIMIT, "total {total}: {costs:#?}");

    // The estimate prices the rule the API server refused (8.1 times its budget) out of budget.
    let mut schema = our_schema();
    let spec = &mut schema["properties"]["spec"];
    spec["properties"]["spillover"]["properties"]["order"]["items"]
        .as_object_mut()
        .unwrap()
        .remove("maxLength");
    let spec = spec.clone();
    let rule = "!has(self.spillover) || !has(self.spillover.order) || self.spillover.order.all(z, self.spillover.order.filter(y, y == z).size() == 1)";
    assert!(estimated_cost(&spec, rule) > RULE_COST_LIMIT);
}

/// A printer column's value, as the API server's table convertor reads it: the first match of a
/// simple JSONPath (`.a.b`, with `[?(@.k=="v")]` filters on lists).
fn column(object: &Value, path: &str) -> Value {
    let segment = regex::Regex::new(r#"\.(\w+)(?:\[\?\(@\.(\w+)=="([^"]*)"\)\])?"#).unwrap();
    let mut at = object.clone();
    let mut read = 0;
    for c in segment.captures_iter(path) {
        let whole = c.get(0).unwrap();
        assert_eq!(whole.start(), read, "{path}: not a simple JSONPath");
        read = whole.end();
        at = at[&c[1]].clone();
        if let (Some(key), Some(value)) = (c.get(2), c.get(3)) {
            at = at
                .as_array()
                .and_then(|items| items.iter().find(|i| i[key.as_str()] == value.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
        }
    }
    assert_eq!(read, path.len(), "{path}: not a simple JSONPath");
    at
}

#[test]
fn kubectl_get_shows_each_zones_replicas() {
    let mut zso: ZonalScaledObject = serde_json::from_value(example()).unwrap();
    let zone = |name: &str, ready, starting, desired, full: Option<&str>| ZoneStatus {
        name: name.into(),
        scaled_object: format!("llama-3-70b-zonal-{name}"),
        ready_replicas: ready,
        starting_replicas: starting,
        desired_replicas: desired,
        full: full.map(String::from),
        ..Default::default()
    };
    let condition = |type_: &str, status: &str, reason: &str| {
        serde_json::from_value(json!({
            "type": type_, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2025-01-01T00:00:00Z"
        }))
        .unwrap()
    };
    zso.status = Some(ZonalScaledObjectStatus {
        observed_generation: Some(1),
        conditions: vec![
            condition("Ready", "True", "ScaledObjectsReady"),
            condition("Degraded", "True", "AtMaxReplicas"),
        ],
        demand_signal: Some("queue_depth".into()),
        zones: vec![
            zone("us-east-1a", 8, 0, Some(8), Some("AtMaxReplicas")),
            zone("us-east-1b", 1, 2, Some(3), None),
            zone("us-east-1c", 0, 0, None, None),
        ],
    });
    let mut object = serde_json::to_value(&zso).unwrap();
    object["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    // As written, the status is valid: nothing a column reads is pruned or refused.
    let problems = schema::validate_all(&our_schema(), &object);
    assert!(problems.is_empty(), "{problems:#?}");

    let crd = serde_json::to_value(redbridge::k8s::crd::crd()).unwrap();
    let shown: Vec<(String, Value)> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            (name, column(&object, c["jsonPath"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("Model".into(), json!("meta-llama/Llama-3.1-70B-Instruct")),
            (
                "Zones".into(),
                json!("us-east-1a 8/8 full, us-east-1b 1+2/3, us-east-1c 0/?")
            ),
            ("Ready".into(), json!("True")),
            ("Reason".into(), json!("AtMaxReplicas")),
            ("Age".into(), json!("2025-01-01T00:00:00Z")),
        ]
    );
    let wide: Vec<(String, Value)> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) > 0)
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            (name, column(&object, c["jsonPath"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        wide,
        [
            ("Replicas".into(), json!(9)),
            ("Desired".into(), json!(11)),
            ("Signal".into(), json!("queue_depth")),
        ]
    );

    // Read back, the status is what was written: the derived fields are not stored twice.
    let back: ZonalScaledObject = serde_json::from_value(object).unwrap();
    assert_eq!(back.status, zso.status);
}
