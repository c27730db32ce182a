//! One evaluation of a ZonalScaledObject's zones: from what discovery sees (Pods per zone, targets)
//! and the raw signal values, the per-zone adjustments [`State`](crate::state::State) applies and
//! the view status and metrics report. Pure; the controller calls it every tick.

use std::collections::{BTreeMap, HashMap};

use super::plan::{Plan, SignalPlan, DEFAULT_UNSCHEDULABLE_AFTER};
use crate::hpa::{metric_target, MetricTarget};
use crate::k8s::discovery::ZonePods;
use crate::zonal::spillover::{
    adjust, desired_replicas, fullness, spill, Full, Spill, ZoneAdjustment, ZoneLoad,
};
use crate::zonal::weights::{decide, routed_demand, Decision, Written, ZoneInput};

/// One zone as the controller last evaluated it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    pub name: String,
    pub pods: ZonePods,
    /// Scrape targets of the zone, over all sources.
    pub targets: u32,
    /// Scrape targets of the zone per source of the plan (every source, even at 0).
    pub source_targets: BTreeMap<&'static str, u32>,
    /// Raw value of the plan's demand signal.
    pub local_demand: Option<f64>,
    /// Spill of the plan's demand signal.
    pub spill: Spill,
    pub full: Option<Full>,
    /// What the adjusted signals ask for, within the zone's bounds.
    pub desired: Option<u32>,
}

/// The part of a [`ZoneView`] that changes what status says: counts and reasons, not the age of
/// an unschedulable Pod nor every flicker of demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape<'a> {
    pods: ZonePods,
    source_targets: &'a BTreeMap<&'static str, u32>,
    full: Option<&'static str>,
    desired: Option<u32>,
}

impl ZoneView {
    pub fn shape(&self) -> Shape<'_> {
        Shape {
            // The age grows every tick; the time it started is what status shows.
            pods: ZonePods {
                unschedulable_for: None,
                ..self.pods
            },
            source_targets: &self.source_targets,
            full: self.full.map(|f| f.reason()),
            desired: self.desired,
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub zones: Vec<ZoneView>,
    pub adjustments: HashMap<String, ZoneAdjustment>,
    /// With `spec.routing`: the zone traffic weights to have in place, and whether they changed
    /// from `last` (see [`weights::decide`]).
    pub routing: Option<Decision>,
}

/// Evaluates every zone of `plan`. `raw(zone, signal)` is the signal's unadjusted value (`None`
/// when the zone has no fresh data); `targets` counts scrape targets per zone and source.
pub fn evaluate(
    plan: &Plan,
    pods: &BTreeMap<String, ZonePods>,
    targets: &BTreeMap<(String, String), u32>,
    raw: impl Fn(&str, &SignalPlan) -> Option<f64>,
) -> Evaluation {
    evaluate_routed(plan, pods, targets, raw, None, 0.0)
}

/// [`evaluate`], with the zone traffic weights last written (`last`) at `now` (the clock of
/// [`Written::at`]) when the plan routes. With routing, demand moves between zones as the
/// weights move requests ([`routed_demand`]): a zone scales for what is routed to it, not for
/// what the spillover arithmetic alone would move, so the two always agree.
pub fn evaluate_routed(
    plan: &Plan,
    pods: &BTreeMap<String, ZonePods>,
    targets: &BTreeMap<(String, String), u32>,
    raw: impl Fn(&str, &SignalPlan) -> Option<f64>,
    last: Option<&Written>,
    now: f64,
) -> Evaluation {
    // Routing needs to know when a zone cannot grow, with or without spillover.
    let after = match (&plan.spillover, &plan.routing) {
        (Some(s), _) => s.unschedulable_after.as_secs_f64(),
        (None, Some(_)) => DEFAULT_UNSCHEDULABLE_AFTER.as_secs_f64(),
        (None, None) => f64::INFINITY,
    };
    let zone_pods: Vec<ZonePods> = plan
        .zones
        .iter()
        .map(|z| pods.get(&z.name).copied().unwrap_or_default())
        .collect();
    let full: Vec<Option<Full>> = plan
        .zones
        .iter()
        .zip(&zone_pods)
        .map(|(z, p)| fullness(p.replicas, z.max_replicas, p.unschedulable_for, after))
        .collect();
    // values[signal][zone]
    let values: Vec<Vec<Option<f64>>> = plan
        .signals
        .iter()
        .map(|s| {
            plan.zones
                .iter()
                .map(|z| raw(&z.name, s).filter(|v| v.is_finite() && *v >= 0.0))
                .collect()
        })
        .collect();
    let demand_index = plan
        .demand_signal()
        .and_then(|d| plan.signals.iter().position(|s| s.signal == d.signal));
    // The zones as the weights see them, for one signal's values.
    let inputs = |vals: &[Option<f64>], capacity: f64| -> Vec<ZoneInput> {
        plan.zones
            .iter()
            .enumerate()
            .map(|(i, z)| ZoneInput {
                name: z.name.clone(),
                ready: zone_pods[i].ready,
                starting: zone_pods[i].loading,
                max_replicas: z.max_replicas,
                full: full[i],
                capacity_per_replica: capacity,
                demand: vals[i],
            })
            .collect()
    };
    let routing = match (&plan.routing, demand_index) {
        (Some(r), Some(di)) => {
            let order = plan
                .spillover
                .as_ref()
                .map(|s| s.order.clone())
                .unwrap_or_default();
            let zones = inputs(&values[di], plan.signals[di].target);
            Some(decide(&zones, &order, last, now, &r.policy))
        }
        _ => None,
    };
    // spills[signal][zone], only for per-replica signals and only with spillover or routing on.
    let spills: Vec<Vec<Spill>> = plan
        .signals
        .iter()
        .zip(&values)
        .map(
            |(s, vals)| match (&plan.spillover, metric_target(s.signal, s.target)) {
                (_, MetricTarget::AverageValue(t)) if routing.is_some() => {
                    let w = routing.as_ref().map(|d| &d.weights);
                    let routed = w.map(|w| routed_demand(w, &inputs(vals, t)));
                    routed
                        .unwrap_or_default()
                        .into_iter()
                        .map(|d| Spill {
                            spilled_in: d.spilled_in,
                            spilled_out: d.spilled_out,
                        })
                        .collect()
                }
                (Some(sp), MetricTarget::AverageValue(t)) => {
                    let loads: Vec<ZoneLoad> = plan
                        .zones
                        .iter()
                        .enumerate()
                        .map(|(i, z)| ZoneLoad {
                            zone: z.name.clone(),
                            demand: vals[i],
                            max_replicas: z.max_replicas,
                            runnable: zone_pods[i].ready + zone_pods[i].loading,
                            full: full[i],
                        })
                        .collect();
                    spill(&sp.order, &loads, t)
                }
                _ => vec![Spill::default(); plan.zones.len()],
            },
        )
        .collect();
    let mut out = Evaluation {
        routing,
        ..Default::default()
    };
    for (zi, zone) in plan.zones.iter().enumerate() {
        let p = zone_pods[zi];
        let adjustment = ZoneAdjustment {
            ready: p.ready,
            starting: p.warming,
            spilled_in: plan
                .signals
                .iter()
                .enumerate()
                .filter(|(si, _)| spills[*si][zi].spilled_in > 0.0)
                .map(|(si, s)| (s.signal, spills[si][zi].spilled_in))
                .collect(),
            targets: plan.signals.iter().map(|s| (s.signal, s.target)).collect(),
        };
        let mut readings = Vec::new();
        let mut active = false;
        for (si, s) in plan.signals.iter().enumerate() {
            if let Some(v) = values[si][zi] {
                let adjusted = adjust(v, s.signal, s.target, &adjustment);
                active |= adjusted > s.activation_target;
                readings.push((adjusted, metric_target(s.signal, s.target)));
            }
        }
        let mut desired = desired_replicas(
            &readings,
            p.ready,
            p.replicas,
            zone.min_replicas,
            zone.max_replicas,
        );
        if plan.idle_period.is_some() && !readings.is_empty() && !active {
            desired = Some(0);
        }
        let source_targets: BTreeMap<&'static str, u32> = plan
            .sources
            .iter()
            .map(|s| {
                let key = (zone.name.clone(), s.name.to_string());
                (s.name, targets.get(&key).copied().unwrap_or(0))
            })
            .collect();
        out.zones.push(ZoneView {
            name: zone.name.clone(),
            pods: p,
            targets: source_targets.values().sum(),
            source_targets,
            local_demand: demand_index.and_then(|i| values[i][zi]),
            spill: demand_index.map(|i| spills[i][zi]).unwrap_or_default(),
            full: full[zi],
            desired,
        });
        out.adjustments.insert(zone.name.clone(), adjustment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Signal;

    fn plan(extra: &str) -> Plan {
        let yaml = format!(
            r#"
model: m
zones:
  - {{ name: a, scaleTargetRef: {{ name: m-a }}, maxReplicas: 4 }}
  - {{ name: b, scaleTargetRef: {{ name: m-b }}, maxReplicas: 4 }}
  - {{ name: c, scaleTargetRef: {{ name: m-c }}, maxReplicas: 4 }}
sources:
  modelServer: {{ selector: {{ matchLabels: {{ app: m }} }}, port: 8000 }}
signals:
  queuePerReplica: {{ target: 10, activationTarget: 1 }}
  kvCacheUtilization: {{ target: 0.8 }}
{extra}"#
        );
        Plan::from_spec(&serde_yaml::from_str(&yaml).unwrap()).unwrap()
    }

    fn pods(
        replicas: u32,
        ready: u32,
        loading: u32,
        warming: u32,
        unsched: Option<f64>,
    ) -> ZonePods {
        ZonePods {
            replicas,
            ready,
            loading,
            warming,
            unschedulable: u32::from(unsched.is_some()),
            unschedulable_for: unsched,
            ..Default::default()
        }
    }

    #[test]
    fn spillover_and_warm_up_in_one_evaluation() {
        let plan = plan("spillover: { order: [a, b, c], unschedulableAfter: 2m }\nwarmup: { modelLoadTime: 5m }\n");
        let zone_pods: BTreeMap<String, ZonePods> = [
            ("a".to_string(), pods(4, 4, 0, 0, None)),        // at max
            ("b".to_string(), pods(3, 2, 1, 1, None)),        // one loading
            ("c".to_string(), pods(2, 1, 0, 0, Some(300.0))), // stuck on GPUs
        ]
        .into();
        let queue = |zone: &str| match zone {
            "a" => 55.0,
            "b" => 10.0,
            _ => 25.0,
        };
        let raw = |zone: &str, s: &SignalPlan| match s.signal {
            Signal::QueueDepth => Some(queue(zone)),
            _ => Some(0.5),
        };
        let targets = [(("a".to_string(), "model-server".to_string()), 4u32)].into();
        let ev = evaluate(&plan, &zone_pods, &targets, raw);
        let full: Vec<Option<&str>> = ev
            .zones
            .iter()
            .map(|z| z.full.map(|f| f.reason()))
            .collect();
        assert_eq!(
            full,
            vec![Some("AtMaxReplicas"), None, Some("PodsUnschedulable")]
        );
        // a: 55 - 4*10 = 15 out, to b (headroom 40 - 10 = 30). c: 25 - 1*10 = 15 out, wraps to a
        // (full) then b (15 left of headroom).
        let flows: Vec<(f64, f64)> = ev
            .zones
            .iter()
            .map(|z| (z.spill.spilled_in, z.spill.spilled_out))
            .collect();
        assert_eq!(flows, vec![(0.0, 15.0), (30.0, 0.0), (0.0, 15.0)]);
        let b = &ev.adjustments["b"];
        assert_eq!((b.ready, b.starting), (2, 1));
        assert_eq!(b.spilled_in.get(&Signal::QueueDepth), Some(&30.0));
        // b's queue: 10 + 30 = 40, capped while warming at (2 + 1) * 10 = 30: asks for 3, not 4.
        assert_eq!(adjust(10.0, Signal::QueueDepth, 10.0, b), 30.0);
        assert_eq!(ev.zones[1].desired, Some(3));
        assert_eq!(ev.zones[0].desired, Some(4), "bounded by maxReplicas");
        assert_eq!(ev.zones[0].targets, 4);
        assert_eq!(ev.zones[0].source_targets, [("model-server", 4)].into());
        assert_eq!(ev.zones[1].source_targets, [("model-server", 0)].into());
        assert_eq!(ev.zones[1].local_demand, Some(10.0));
        assert!(ev.adjustments["a"].spilled_in.is_empty());
    }

    #[test]
    fn without_spillover_nothing_moves_and_missing_data_is_not_zero() {
        let plan = plan("");
        let zone_pods = [("a".to_string(), pods(4, 4, 0, 0, None))].into();
        let ev = evaluate(&plan, &zone_pods, &BTreeMap::new(), |zone, _| {
            (zone == "a").then_some(100.0)
        });
        assert!(ev.zones.iter().all(|z| z.spill == Spill::default()));
        assert_eq!(
            ev.zones[0].full,
            Some(Full::AtMax),
            "reported even without spillover"
        );
        assert_eq!(ev.zones[1].local_demand, None);
        assert_eq!(ev.zones[1].desired, None, "no data: no ask");
    }

    #[test]
    fn shape_ignores_how_long_pods_have_been_unschedulable() {
        let plan = plan("spillover: { order: [a, b, c], unschedulableAfter: 2m }\n");
        let since: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |secs: f64| {
            let mut p = pods(2, 1, 0, 0, Some(secs));
            p.unschedulable_since = Some(since);
            let zone_pods = [("c".to_string(), p)].into();
            evaluate(&plan, &zone_pods, &BTreeMap::new(), |_, _| None)
        };
        let (first, later) = (at(600.0), at(612.0));
        assert_ne!(first.zones[2].pods, later.zones[2].pods);
        assert!(first
            .zones
            .iter()
            .map(ZoneView::shape)
            .eq(later.zones.iter().map(ZoneView::shape)));
        // One more unschedulable Pod is a change, and so is the zone not being full yet.
        let mut more = at(612.0);
        more.zones[2].pods.unschedulable += 1;
        assert_ne!(first.zones[2].shape(), more.zones[2].shape());
        assert_ne!(
            at(60.0).zones[2].shape(),
            first.zones[2].shape(),
            "not yet full"
        );
    }

    #[test]
    fn with_routing_demand_moves_as_the_weights_move_requests() {
        // c is stuck on GPUs with one Ready replica and a queue of 60; a and b have room.
        // Routing without spillover: c is full after the default allowance all the same.
        let plan = plan("routing: { envoyGateway: { httpRoute: m }, maxStep: 100 }\n");
        let zone_pods: BTreeMap<String, ZonePods> = [
            ("a".to_string(), pods(1, 1, 0, 0, None)),
            ("b".to_string(), pods(1, 1, 0, 0, None)),
            ("c".to_string(), pods(2, 1, 0, 0, Some(300.0))),
        ]
        .into();
        let queue = |zone: &str| if zone == "c" { 60.0 } else { 5.0 };
        let raw = |zone: &str, s: &SignalPlan| match s.signal {
            Signal::QueueDepth => Some(queue(zone)),
            _ => Some(0.5),
        };
        let ev = evaluate_routed(&plan, &zone_pods, &BTreeMap::new(), raw, None, 0.0);
        let decision = ev.routing.as_ref().expect("routing decides");
        assert!(decision.changed);
        assert!(
            decision
                .reason
                .starts_with("c full: PodsUnschedulable for 5m; moving 83 % to a, b"),
            "{}",
            decision.reason
        );
        // c keeps 10 (its Ready replica); 35 go to a, 15 to b: the demand they scale for.
        let flows: Vec<(f64, f64)> = ev
            .zones
            .iter()
            .map(|z| (round(z.spill.spilled_in), round(z.spill.spilled_out)))
            .collect();
        assert_eq!(flows, vec![(35.0, 0.0), (15.0, 0.0), (0.0, 50.0)]);
        assert_eq!(
            ev.adjustments["a"]
                .spilled_in
                .get(&Signal::QueueDepth)
                .map(|v| round(*v)),
            Some(35.0)
        );
        assert_eq!(ev.zones[0].desired, Some(4), "5 + 35 over a target of 10");
        // Without routing (nor spillover) nothing moves, and nothing is decided.
        let off = evaluate(&super::tests::plan(""), &zone_pods, &BTreeMap::new(), raw);
        assert!(off.routing.is_none());
        assert!(off.zones.iter().all(|z| z.spill == Spill::default()));
        assert_eq!(
            off.zones[2].full, None,
            "no allowance without spillover or routing"
        );
    }

    fn round(v: f64) -> f64 {
        (v * 1000.0).round() / 1000.0
    }

    #[test]
    fn idle_zone_with_scale_to_zero_asks_for_zero() {
        let plan = plan("scaleToZero: { idlePeriod: 10m }\n");
        let zone_pods = [("a".to_string(), pods(1, 1, 0, 0, None))].into();
        let ev = evaluate(&plan, &zone_pods, &BTreeMap::new(), |_, s| match s.signal {
            Signal::QueueDepth => Some(0.5),
            _ => Some(0.0),
        });
        assert_eq!(ev.zones[0].desired, Some(0));
        let busy = evaluate(&plan, &zone_pods, &BTreeMap::new(), |_, s| match s.signal {
            Signal::QueueDepth => Some(5.0),
            _ => Some(0.1),
        });
        assert_eq!(busy.zones[0].desired, Some(1));
    }
}
