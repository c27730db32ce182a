//! The KEDA ScaledObjects a ZonalScaledObject stands for: one per zone, with one `external-push`
//! trigger per signal pointing at redbridge. Pure: [`desired`] builds the objects, [`drifted`]
//! tells whether what the API holds still says what redbridge wrote, and [`step`] what to do
//! about it (and whether that repairs someone else's change or follows the CR's spec).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Resource, ResourceExt};
use serde_json::{json, Map, Value};

use super::plan::Plan;
use crate::hpa::{metric_target, MetricTarget};
use crate::k8s::crd::ZonalScaledObject;

pub use super::{dns_label, MANAGED_BY, OWNER_LABEL};
pub const ZONE_LABEL: &str = "redbridge.io/zone";
/// The generation of the ZonalScaledObject a ScaledObject was written for: a ScaledObject that
/// differs from what redbridge wants for that same generation was changed by someone else.
pub const GENERATION_ANNOTATION: &str = "redbridge.io/generation";

/// KEDA's ScaledObject resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// How the triggers reach redbridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSettings {
    /// `host:port` of redbridge's gRPC Service, e.g. `redbridge.redbridge.svc:9090`.
    pub scaler_address: String,
    /// A ClusterTriggerAuthentication with the TLS material for redbridge's gRPC port; sets
    /// `enableTLS` when given.
    pub cluster_trigger_authentication: Option<String>,
}

/// The ScaledObject name for one zone of a ZonalScaledObject.
pub fn name(zso: &str, zone: &str) -> String {
    dns_label(&format!("{zso}-{zone}"))
}

/// HPA behaviour for GPU pools: up at once (no stabilisation, double or +4 pods every 30 s), down
/// slowly (the highest ask of the last 10 minutes, one pod per 2 minutes), because a released GPU
/// replica costs minutes of model loading to get back.
pub fn gpu_behavior() -> HorizontalPodAutoscalerBehavior {
    let policy = |type_: &str, value: i32, period: i32| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: period,
    };
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Pods", 4, 30), policy("Percent", 100, 30)]),
            ..Default::default()
        }),
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(600),
            select_policy: Some("Min".into()),
            policies: Some(vec![policy("Pods", 1, 120)]),
            ..Default::default()
        }),
    }
}

/// Numbers in trigger metadata: the shortest form that parses back to the same value.
fn number(v: f64) -> String {
    format!("{v}")
}

/// Why a ScaledObject cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the ZonalScaledObject has no {0} yet")]
    Missing(&'static str),
    #[error("cannot serialize a ScaledObject")]
    Json(#[from] serde_json::Error),
}

/// The ScaledObjects for `zso` (one per zone of `plan`), as server-side apply bodies, by name.
pub fn desired(
    zso: &ZonalScaledObject,
    plan: &Plan,
    settings: &TriggerSettings,
) -> Result<Vec<(String, Value)>, BuildError> {
    let zso_name = zso
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::Missing("name"))?;
    let namespace = zso
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::Missing("namespace"))?;
    let owner = zso
        .controller_owner_ref(&())
        .ok_or(BuildError::Missing("uid"))?;
    let owner = serde_json::to_value(owner)?;
    let keda = zso.spec.keda.clone().unwrap_or_default();
    let mut behavior = gpu_behavior();
    if let Some(b) = keda.behavior {
        if b.scale_up.is_some() {
            behavior.scale_up = b.scale_up;
        }
        if b.scale_down.is_some() {
            behavior.scale_down = b.scale_down;
        }
    }
    let behavior = serde_json::to_value(behavior)?;
    let mut out = Vec::new();
    for zone in &plan.zones {
        let so_name = name(zso_name, &zone.name);
        let triggers: Vec<Value> = plan
            .signals
            .iter()
            .map(|s| {
                let mut metadata = Map::new();
                metadata.insert("scalerAddress".into(), json!(settings.scaler_address));
                metadata.insert("pool".into(), json!(zso_name));
                metadata.insert("zone".into(), json!(zone.name));
                metadata.insert("signal".into(), json!(s.signal.name()));
                metadata.insert("source".into(), json!(s.source));
                metadata.insert("target".into(), json!(number(s.target)));
                metadata.insert(
                    "activationTarget".into(),
                    json!(number(s.activation_target)),
                );
                if let Some(up) = s.up_window {
                    metadata.insert(
                        crate::config::trigger::UP_WINDOW_KEY.into(),
                        json!(format!("{}ms", up.as_millis())),
                    );
                }
                let metric_type = match metric_target(s.signal, s.target) {
                    MetricTarget::AverageValue(_) => "AverageValue",
                    MetricTarget::Value(_) => "Value",
                };
                let mut trigger = json!({
                    "type": "external-push",
                    "name": s.signal.name().replace('_', "-"),
                    "metricType": metric_type,
                });
                if let Some(auth) = &settings.cluster_trigger_authentication {
                    metadata.insert("enableTLS".into(), json!("true"));
                    trigger["authenticationRef"] =
                        json!({"kind": "ClusterTriggerAuthentication", "name": auth});
                }
                trigger["metadata"] = Value::Object(metadata);
                trigger
            })
            .collect();
        let mut spec = json!({
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": zone.kind.as_str(),
                "name": zone.target,
            },
            "minReplicaCount": zone.min_replicas,
            "maxReplicaCount": zone.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": triggers,
        });
        if let Some(idle) = plan.idle_period {
            spec["idleReplicaCount"] = json!(0);
            spec["cooldownPeriod"] = json!(idle.as_secs().clamp(1, i32::MAX as u64));
        }
        if let Some(p) = keda.polling_interval {
            spec["pollingInterval"] = json!(p);
        }
        let labels: BTreeMap<&str, String> = [
            (MANAGED_BY.0, MANAGED_BY.1.to_string()),
            (OWNER_LABEL, dns_label(zso_name)),
            (ZONE_LABEL, dns_label(&zone.name)),
        ]
        .into();
        let mut body = json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": so_name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "spec": spec,
        });
        if let Some(generation) = zso.metadata.generation {
            body["metadata"]["annotations"] =
                json!({ GENERATION_ANNOTATION: generation.to_string() });
        }
        out.push((so_name, body));
    }
    Ok(out)
}

/// `desired` holds nothing `observed` does not: the fields redbridge applies are all still there
/// with its values. Fields others added (KEDA's defaults, other managers) do not count.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| o.get(k).is_some_and(|ov| contains(ov, dv))),
        (Value::Array(o), Value::Array(d)) => {
            o.len() == d.len() && o.iter().zip(d).all(|(ov, dv)| contains(ov, dv))
        }
        (Value::Number(o), Value::Number(d)) => o.as_f64() == d.as_f64(),
        (o, d) => o == d,
    }
}

/// Whether the object in the API no longer says what redbridge applies (someone edited or
/// removed a field redbridge owns): then it is applied again.
pub fn drifted(observed: &kube::api::DynamicObject, desired: &Value) -> bool {
    let Ok(observed_json) = serde_json::to_value(observed) else {
        return true;
    };
    let labels = &desired["metadata"]["labels"];
    let owners = desired["metadata"]["ownerReferences"].as_array();
    let owned = owners.is_some_and(|want| {
        want.iter().all(|w| {
            observed
                .owner_references()
                .iter()
                .any(|o| serde_json::to_value(o).is_ok_and(|o| contains(&o, w)))
        })
    });
    !(owned
        && contains(&observed_json["metadata"]["labels"], labels)
        && contains(&observed_json["spec"], &desired["spec"]))
}

/// What a reconcile does with one ScaledObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It says what redbridge wants for this generation: nothing to do.
    InPlace,
    /// Not there yet (a new CR or zone), or written for another spec: applied, nothing to report.
    Apply,
    /// Someone else's change undone: applied again, and recorded as `DriftRepaired`.
    Repair(Drift),
    /// Written for a newer generation than this copy of the CR: the copy is behind (another
    /// replica already follows the new spec); leave it until the new generation arrives.
    Wait,
}

/// How a ScaledObject differs from what redbridge wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Edited since redbridge wrote it for this generation.
    Changed,
    /// Gone from redbridge's watch (deleted, or its labels removed) after being in place.
    Missing,
}

/// The generation a ScaledObject was written for, by its annotation.
pub fn written_for(observed: &kube::api::DynamicObject) -> Option<i64> {
    observed
        .annotations()
        .get(GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok())
}

/// What to do with the ScaledObject redbridge wants as `desired` for generation `generation` of
/// its CR, given what the watch shows (`observed`) and whether this controller has seen it in
/// place for this generation before (`was_in_place`). A spec change is never drift: the
/// ScaledObject was written for an older generation.
pub fn step(
    observed: Option<&kube::api::DynamicObject>,
    desired: &Value,
    generation: Option<i64>,
    was_in_place: bool,
) -> Step {
    let Some(observed) = observed else {
        return if was_in_place {
            Step::Repair(Drift::Missing)
        } else {
            Step::Apply
        };
    };
    let ours = desired["metadata"]["ownerReferences"][0]["uid"].as_str();
    // Left by a CR of the same name that was deleted: its generations are not ours.
    let foreign = observed
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) != ours);
    let written = if foreign { None } else { written_for(observed) };
    if let (Some(written), Some(generation)) = (written, generation) {
        if written > generation {
            return Step::Wait;
        }
    }
    if written != generation || foreign {
        Step::Apply
    } else if drifted(observed, desired) {
        Step::Repair(Drift::Changed)
    } else {
        Step::InPlace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_valid_and_stable() {
        assert_eq!(dns_label("llama-70b-us-east-1a"), "llama-70b-us-east-1a");
        assert_eq!(dns_label("Llama.70B_us"), "llama-70b-us");
        let long = "a".repeat(80);
        let l = dns_label(&long);
        assert!(l.len() <= 63, "{l}");
        assert_eq!(l, dns_label(&long));
        assert_ne!(l, dns_label(&format!("{long}b")));
        assert_eq!(dns_label("--"), "x");
    }

    #[test]
    fn contains_ignores_added_fields_but_not_changed_ones() {
        let desired = json!({"a": 1, "b": {"c": [1, {"d": "x"}]}});
        assert!(contains(
            &json!({"a": 1.0, "z": 3, "b": {"c": [1, {"d": "x", "e": 1}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"a": 2, "b": {"c": [1, {"d": "x"}]}}),
            &desired
        ));
        assert!(!contains(&json!({"a": 1, "b": {"c": [1]}}), &desired));
        assert!(!contains(&json!({"a": 1}), &desired));
    }

    fn zso(generation: i64) -> ZonalScaledObject {
        let mut zso: ZonalScaledObject = serde_json::from_value(json!({
            "apiVersion": "redbridge.io/v1alpha1",
            "kind": "ZonalScaledObject",
            "metadata": {"name": "llama", "namespace": "ml", "uid": "u-1"},
            "spec": {
                "model": "llama",
                "zones": [{"name": "a", "scaleTargetRef": {"name": "llama-a"}, "maxReplicas": 4}],
                "sources": {"modelServer": {"selector": {"matchLabels": {"app": "llama"}}, "port": 8000}},
                "signals": {"queuePerReplica": {"target": 4}}
            }
        }))
        .unwrap();
        zso.metadata.generation = Some(generation);
        zso
    }

    fn desired_for(generation: i64) -> Value {
        let zso = zso(generation);
        let plan = Plan::from_spec(&zso.spec).unwrap();
        let settings = TriggerSettings {
            scaler_address: "redbridge:9090".into(),
            cluster_trigger_authentication: None,
        };
        desired(&zso, &plan, &settings).unwrap().remove(0).1
    }

    /// `body` as the API serves it back: with what KEDA and the API server add.
    fn served(body: &Value, edit: impl FnOnce(&mut Value)) -> kube::api::DynamicObject {
        let mut o = body.clone();
        o["metadata"]["resourceVersion"] = json!("7");
        o["metadata"]["labels"]["scaledobject.keda.sh/name"] = json!("llama-a");
        o["spec"]["cooldownPeriod"] = json!(300);
        o["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        edit(&mut o);
        serde_json::from_value(o).unwrap()
    }

    #[test]
    fn drift_is_a_change_to_what_was_written_for_this_generation() {
        let want = desired_for(3);
        assert_eq!(want["metadata"]["annotations"][GENERATION_ANNOTATION], "3");
        let same = served(&want, |_| {});
        assert_eq!(written_for(&same), Some(3));
        assert_eq!(step(Some(&same), &want, Some(3), false), Step::InPlace);
        let edited = served(&want, |o| o["spec"]["maxReplicaCount"] = json!(99));
        assert_eq!(
            step(Some(&edited), &want, Some(3), true),
            Step::Repair(Drift::Changed)
        );
        let unowned = served(&want, |o| {
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("ownerReferences");
        });
        assert_eq!(
            step(Some(&unowned), &want, Some(3), true),
            Step::Repair(Drift::Changed)
        );
        // Gone after being in place: deleted, or its labels removed (out of the watch).
        assert_eq!(
            step(None, &want, Some(3), true),
            Step::Repair(Drift::Missing)
        );
        // Never seen in place: a new CR or zone.
        assert_eq!(step(None, &want, Some(3), false), Step::Apply);
    }

    #[test]
    fn a_spec_change_is_not_drift() {
        // Written for generation 3; the CR is at 4 and wants more replicas.
        let old = served(&desired_for(3), |_| {});
        let mut want = desired_for(4);
        want["spec"]["maxReplicaCount"] = json!(8);
        assert!(drifted(&old, &want));
        assert_eq!(step(Some(&old), &want, Some(4), true), Step::Apply);
        // The same spec for this zone: only the annotation moves, still silently.
        assert_eq!(
            step(Some(&old), &desired_for(4), Some(4), true),
            Step::Apply
        );
        // Another replica already wrote generation 4 while this copy of the CR is at 3.
        let newer = served(&want, |_| {});
        assert_eq!(
            step(Some(&newer), &desired_for(3), Some(3), true),
            Step::Wait
        );
        // Left by a deleted CR of the same name (another uid): taken over, not reported.
        let foreign = served(&desired_for(9), |o| {
            o["metadata"]["ownerReferences"][0]["uid"] = json!("u-0");
        });
        assert_eq!(step(Some(&foreign), &want, Some(4), true), Step::Apply);
    }

    #[test]
    fn gpu_behavior_is_fast_up_slow_down() {
        let b = gpu_behavior();
        let up = b.scale_up.unwrap();
        let down = b.scale_down.unwrap();
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert!(down.stabilization_window_seconds.unwrap() >= 300);
        assert_eq!(down.policies.unwrap()[0].value, 1);
    }
}
