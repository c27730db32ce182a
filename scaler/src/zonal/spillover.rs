//! Spillover and warm-up: how a zone's signal accounts for the other zones and for pods that are
//! still loading their model. Pure functions over explicit inputs; the controller feeds them what
//! discovery and the windows see (the demo feeds them its simulation), and
//! [`State`](crate::state::State) applies [`adjust`] to every value it serves for a
//! ZonalScaledObject zone.
//!
//! - **Spillover.** A zone is *full* when it runs its maximum replicas, or when some of its Pods
//!   have been unschedulable for longer than the CR allows (the cluster has no GPU node for it).
//!   A full zone's demand beyond what it can run moves, in the CR's zone order, to the next zones
//!   with headroom (up to their maximum), so they scale up for it. Only per-replica demand signals
//!   (`AverageValue`) move: a latency is not additive.
//! - **Warm-up.** A GPU pod that is scheduled but not yet Ready is capacity on its way for up to
//!   the model load time: it counts as the replica it will be (the HPA's `current` includes it).
//!   What grows *because* capacity is still loading (a backlog: queue depth, requests in flight,
//!   latency, KV-cache use) is capped while such pods exist at what asks for exactly the ready
//!   plus starting replicas, so no cascade of extra pods follows a queue that grew while the first
//!   ones loaded. An arrival rate ([`Math::Rate`]: requests or tokens per second) does not grow
//!   with a backlog; it is the demand itself, so it is never capped, and demand beyond what the
//!   starting pods will bring still asks for more at once instead of one HPA step per model load.
//!   Past the load time a pod no longer counts.

use std::collections::HashMap;

use crate::hpa::{metric_target, MetricTarget};
use crate::model::{Math, Signal};

/// Demand closer to zero than this is treated as none (floating-point dust).
const EPSILON: f64 = 1e-9;

/// What the controller publishes for one zone of a ZonalScaledObject pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneAdjustment {
    /// Replicas that are Ready.
    pub ready: u32,
    /// Replicas scheduled and loading, within the warm-up time.
    pub starting: u32,
    /// Demand moved in from full zones, per per-replica signal, in that signal's unit.
    pub spilled_in: HashMap<Signal, f64>,
    /// The CR's target per signal. The warm-up cap uses it rather than the asker's, so KEDA and
    /// `/metrics` (which asks with a neutral target) see the same value.
    pub targets: HashMap<Signal, f64>,
}

/// The value served for a zone: the raw value plus the demand spilled in (per-replica signals
/// only), then, for signals that grow with a backlog, capped while replicas warm up (see
/// [`capped_while_warming`]). `target` is the trigger's, used for signals the CR does not name.
pub fn adjust(raw: f64, signal: Signal, target: f64, adj: &ZoneAdjustment) -> f64 {
    if !raw.is_finite() {
        return raw; // the answer layer refuses it; do not turn it into a number here
    }
    let target = adj.targets.get(&signal).copied().unwrap_or(target);
    let kind = metric_target(signal, target);
    let mut value = raw;
    if let MetricTarget::AverageValue(_) = kind {
        value += adj.spilled_in.get(&signal).copied().unwrap_or(0.0).max(0.0);
    }
    if !capped_while_warming(signal) {
        return value;
    }
    match warmup_cap(kind, adj.ready, adj.starting) {
        Some(cap) => value.min(cap),
        None => value,
    }
}

/// Whether the warm-up cap applies to `signal`: every signal but arrival rates. A rate counts
/// requests (or tokens) as they come, whatever the zone can serve, so it already asks for what
/// the demand needs with starting replicas counted; a backlog signal would keep asking for more
/// while the first replicas load.
pub fn capped_while_warming(signal: Signal) -> bool {
    signal.desc().math != Math::Rate
}

/// The highest value that asks the HPA for no more than the ready and starting replicas, while
/// some are starting; `None` when nothing is starting (or, for `Value`, nothing is ready: the
/// quality signal then has no data to cap).
pub fn warmup_cap(kind: MetricTarget, ready: u32, starting: u32) -> Option<f64> {
    if starting == 0 {
        return None;
    }
    let on_the_way = f64::from(ready) + f64::from(starting);
    match kind {
        // desired = ceil(value / target)
        MetricTarget::AverageValue(t) => Some(on_the_way * t),
        // desired = ceil(ready * value / target). The HPA reads values in milli-units: one below
        // keeps float rounding (1.1 * 10 = 11.000000000000002) from asking for one more pod.
        MetricTarget::Value(t) if ready > 0 => {
            Some((t * on_the_way / f64::from(ready) - 0.001).max(t))
        }
        MetricTarget::Value(_) => None,
    }
}

/// Whether a pod scheduled `age` seconds ago and not yet Ready still counts as starting.
pub fn still_warming(age: f64, warmup: f64) -> bool {
    age >= 0.0 && age < warmup
}

/// Why a zone cannot take more demand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Full {
    /// It runs its maximum replicas.
    AtMax,
    /// Some Pods have been unschedulable for this many seconds (at least the allowed time).
    Unschedulable { for_secs: f64 },
}

impl Full {
    /// Short reason used in status and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Full::AtMax => "AtMaxReplicas",
            Full::Unschedulable { .. } => "PodsUnschedulable",
        }
    }
}

/// Whether a zone is full. `replicas` counts its Pods that are not terminating; `unschedulable_for`
/// is how long its oldest unschedulable Pod has been so; `after` is the CR's allowance.
pub fn fullness(
    replicas: u32,
    max_replicas: u32,
    unschedulable_for: Option<f64>,
    after: f64,
) -> Option<Full> {
    if let Some(for_secs) = unschedulable_for.filter(|s| *s >= after) {
        return Some(Full::Unschedulable { for_secs });
    }
    (replicas >= max_replicas).then_some(Full::AtMax)
}

/// One zone's load for one per-replica signal.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneLoad {
    pub zone: String,
    /// Raw value of the signal; `None` when the zone has no fresh data (it neither gives nor takes).
    pub demand: Option<f64>,
    pub max_replicas: u32,
    /// Ready plus starting replicas: what the zone can run now.
    pub runnable: u32,
    pub full: Option<Full>,
}

/// Demand moved into and out of one zone, in the signal's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spill {
    pub spilled_in: f64,
    pub spilled_out: f64,
}

/// Moves each full zone's excess over what it can run to the next zones of `order` with headroom
/// (each up to `max_replicas * target`), wrapping around. Zones missing from `order` follow it in
/// the order given. Demand that finds no room stays where it is. Returns one [`Spill`] per zone,
/// in the order of `zones`; what moves in equals what moves out.
pub fn spill(order: &[String], zones: &[ZoneLoad], target: f64) -> Vec<Spill> {
    let mut out = vec![Spill::default(); zones.len()];
    if !(target.is_finite() && target > 0.0) {
        return out;
    }
    let mut sequence: Vec<usize> = order
        .iter()
        .filter_map(|name| zones.iter().position(|z| &z.zone == name))
        .collect();
    for i in 0..zones.len() {
        if !sequence.contains(&i) {
            sequence.push(i);
        }
    }
    let mut headroom: Vec<f64> = zones
        .iter()
        .map(|z| match (z.full, z.demand) {
            (None, Some(d)) if d.is_finite() => (f64::from(z.max_replicas) * target - d).max(0.0),
            _ => 0.0,
        })
        .collect();
    for (pos, &from) in sequence.iter().enumerate() {
        let zone = &zones[from];
        let (Some(full), Some(demand)) = (zone.full, zone.demand) else {
            continue;
        };
        let runs = match full {
            Full::Unschedulable { .. } => zone.runnable.min(zone.max_replicas),
            Full::AtMax => zone.max_replicas,
        };
        let mut excess = demand - f64::from(runs) * target;
        if !excess.is_finite() || excess <= EPSILON {
            continue;
        }
        let after = sequence[pos + 1..].iter().chain(&sequence[..pos]);
        for &to in after {
            let take = excess.min(headroom[to]);
            if take <= EPSILON {
                continue;
            }
            headroom[to] -= take;
            out[to].spilled_in += take;
            out[from].spilled_out += take;
            excess -= take;
            if excess <= EPSILON {
                break;
            }
        }
    }
    out
}

/// The replicas a zone's signals ask for, as the HPA would compute them from the adjusted values
/// (largest over signals), within `[min, max]`; `None` when no signal has a value.
pub fn desired_replicas(
    readings: &[(f64, MetricTarget)],
    ready: u32,
    current: u32,
    min_replicas: u32,
    max_replicas: u32,
) -> Option<u32> {
    readings
        .iter()
        .filter_map(|(value, target)| {
            crate::hpa::replicas_for_metric(
                *value,
                *target,
                ready,
                current,
                crate::hpa::DEFAULT_TOLERANCE,
            )
            .ok()
        })
        .max()
        .map(|d| d.clamp(min_replicas, max_replicas.max(min_replicas)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: Signal = Signal::QueueDepth;
    const P95: Signal = Signal::Latency { permille: 950 };
    const RPS: Signal = Signal::RequestsPerSecond;

    fn adj(ready: u32, starting: u32, spilled: &[(Signal, f64)]) -> ZoneAdjustment {
        ZoneAdjustment {
            ready,
            starting,
            spilled_in: spilled.iter().copied().collect(),
            targets: HashMap::new(),
        }
    }

    #[test]
    fn adjust_table() {
        // (case, raw, signal, target, adjustment, expected)
        let cases: Vec<(&str, f64, Signal, f64, ZoneAdjustment, f64)> = vec![
            ("nothing to adjust", 37.0, QUEUE, 4.0, adj(5, 0, &[]), 37.0),
            (
                "spill adds demand",
                10.0,
                QUEUE,
                4.0,
                adj(3, 0, &[(QUEUE, 6.0)]),
                16.0,
            ),
            (
                "spill of another signal is ignored",
                10.0,
                QUEUE,
                4.0,
                adj(3, 0, &[(Signal::Concurrency, 6.0)]),
                10.0,
            ),
            (
                "latency does not take spill",
                0.8,
                P95,
                0.5,
                adj(2, 0, &[(P95, 3.0)]),
                0.8,
            ),
            (
                "warm-up caps demand at ready+starting",
                60.0,
                QUEUE,
                4.0,
                adj(6, 4, &[]),
                40.0,
            ),
            (
                "warm-up leaves demand below the cap",
                30.0,
                QUEUE,
                4.0,
                adj(6, 4, &[]),
                30.0,
            ),
            (
                "spill then warm-up cap",
                30.0,
                QUEUE,
                4.0,
                adj(6, 2, &[(QUEUE, 10.0)]),
                32.0,
            ),
            (
                "warm-up caps latency ratio at (ready+starting)/ready",
                3.0,
                P95,
                1.0,
                adj(4, 4, &[]),
                1.999,
            ),
            (
                "latency with nothing ready is left alone",
                3.0,
                P95,
                1.0,
                adj(0, 4, &[]),
                3.0,
            ),
            (
                "warm-up leaves an arrival rate alone: demand past what is starting asks for more",
                60.0,
                RPS,
                4.0,
                adj(6, 4, &[]),
                60.0,
            ),
            (
                "a rate with demand spilled in is not capped either",
                30.0,
                RPS,
                4.0,
                adj(6, 2, &[(RPS, 30.0)]),
                60.0,
            ),
            (
                "negative spill is ignored",
                5.0,
                QUEUE,
                1.0,
                adj(1, 0, &[(QUEUE, -3.0)]),
                5.0,
            ),
        ];
        for (name, raw, signal, target, a, want) in cases {
            let got = adjust(raw, signal, target, &a);
            assert!((got - want).abs() < 1e-9, "{name}: got {got}, want {want}");
        }
        assert!(adjust(f64::NAN, QUEUE, 1.0, &adj(1, 1, &[])).is_nan());
        // The CR's target wins over the asker's: /metrics asks with 1.
        let mut with_target = adj(6, 4, &[]);
        with_target.targets.insert(QUEUE, 4.0);
        assert_eq!(adjust(60.0, QUEUE, 1.0, &with_target), 40.0);
        assert_eq!(adjust(60.0, Signal::Concurrency, 1.0, &with_target), 10.0);
    }

    #[test]
    fn warm_up_cap_asks_for_exactly_ready_plus_starting() {
        // The HPA's own arithmetic on the capped value gives ready + starting: no extra pods.
        for (ready, starting) in [(1, 1), (3, 5), (6, 4), (10, 1)] {
            let avg = warmup_cap(MetricTarget::AverageValue(4.0), ready, starting).unwrap();
            let wanted = crate::hpa::replicas_for_metric(
                avg * 3.0,
                MetricTarget::AverageValue(4.0),
                0,
                0,
                0.1,
            )
            .unwrap();
            assert_eq!(
                crate::hpa::replicas_for_metric(
                    avg,
                    MetricTarget::AverageValue(4.0),
                    ready,
                    ready + starting,
                    0.0
                )
                .unwrap(),
                ready + starting
            );
            assert!(
                wanted > ready + starting,
                "uncapped demand would ask for more"
            );
            let val = warmup_cap(MetricTarget::Value(0.5), ready, starting).unwrap();
            assert_eq!(
                crate::hpa::replicas_for_metric(
                    val,
                    MetricTarget::Value(0.5),
                    ready,
                    ready + starting,
                    0.0
                )
                .unwrap(),
                ready + starting
            );
        }
        assert_eq!(warmup_cap(MetricTarget::AverageValue(4.0), 3, 0), None);
        assert_eq!(warmup_cap(MetricTarget::Value(4.0), 0, 2), None);
    }

    #[test]
    fn only_backlog_signals_are_capped_while_warming() {
        for s in [
            Signal::RequestsPerSecond,
            Signal::PromptTokensPerSecond,
            Signal::GenerationTokensPerSecond,
        ] {
            assert!(!capped_while_warming(s), "{}", s.name());
        }
        for s in [
            QUEUE,
            Signal::Concurrency,
            Signal::Running,
            Signal::KvCacheUtilization,
            P95,
            Signal::ErrorRatio,
        ] {
            assert!(capped_while_warming(s), "{}", s.name());
        }
        // A pool waking under 40 req/s with 2 replicas loading and a 4 req/s target asks for all
        // 10 at once; its held queue (same target) still asks for no more than the 2 loading.
        let waking = adj(0, 2, &[]);
        let rate = adjust(40.0, RPS, 4.0, &waking);
        assert_eq!(
            crate::hpa::replicas_for_metric(rate, MetricTarget::AverageValue(4.0), 0, 2, 0.1),
            Ok(10)
        );
        let queue = adjust(43.0, QUEUE, 4.0, &waking);
        assert_eq!(
            crate::hpa::replicas_for_metric(queue, MetricTarget::AverageValue(4.0), 0, 2, 0.1),
            Ok(2)
        );
    }

    #[test]
    fn warming_window() {
        assert!(still_warming(0.0, 300.0));
        assert!(still_warming(299.9, 300.0));
        assert!(!still_warming(300.0, 300.0));
        assert!(!still_warming(-1.0, 300.0), "clock skew: not counted");
    }

    #[test]
    fn fullness_table() {
        // (replicas, max, unschedulable for, allowed, expected)
        let cases = [
            (3, 8, None, 120.0, None),
            (8, 8, None, 120.0, Some(Full::AtMax)),
            (9, 8, None, 120.0, Some(Full::AtMax)),
            (5, 8, Some(60.0), 120.0, None),
            (
                5,
                8,
                Some(120.0),
                120.0,
                Some(Full::Unschedulable { for_secs: 120.0 }),
            ),
            (
                8,
                8,
                Some(500.0),
                120.0,
                Some(Full::Unschedulable { for_secs: 500.0 }),
            ),
        ];
        for (replicas, max, unsched, after, want) in cases {
            assert_eq!(
                fullness(replicas, max, unsched, after),
                want,
                "{replicas}/{max} {unsched:?}"
            );
        }
    }

    fn load(
        zone: &str,
        demand: Option<f64>,
        max: u32,
        runnable: u32,
        full: Option<Full>,
    ) -> ZoneLoad {
        ZoneLoad {
            zone: zone.into(),
            demand,
            max_replicas: max,
            runnable,
            full,
        }
    }

    fn order(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn flows(s: &[Spill]) -> Vec<(f64, f64)> {
        s.iter().map(|s| (s.spilled_in, s.spilled_out)).collect()
    }

    #[test]
    fn spill_table() {
        let unsched = Some(Full::Unschedulable { for_secs: 300.0 });
        // (case, order, zones, target, expected (in, out) per zone)
        type Case = (
            &'static str,
            Vec<String>,
            Vec<ZoneLoad>,
            f64,
            Vec<(f64, f64)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no full zone, nothing moves",
                order(&["a", "b", "c"]),
                vec![
                    load("a", Some(30.0), 8, 3, None),
                    load("b", Some(10.0), 8, 1, None),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 0.0); 3],
            ),
            (
                "zone at max spills its excess to the next zone",
                order(&["a", "b", "c"]),
                vec![
                    load("a", Some(100.0), 8, 8, Some(Full::AtMax)),
                    load("b", Some(10.0), 8, 1, None),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 20.0), (20.0, 0.0), (0.0, 0.0)],
            ),
            (
                "order decides who takes it first",
                order(&["a", "c", "b"]),
                vec![
                    load("a", Some(100.0), 8, 8, Some(Full::AtMax)),
                    load("b", Some(10.0), 8, 1, None),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 20.0), (0.0, 0.0), (20.0, 0.0)],
            ),
            (
                "a receiving zone fills to its max, the rest cascades",
                order(&["a", "b", "c"]),
                vec![
                    load("a", Some(150.0), 8, 8, Some(Full::AtMax)),
                    load("b", Some(60.0), 8, 6, None),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 70.0), (20.0, 0.0), (50.0, 0.0)],
            ),
            (
                "order wraps around",
                order(&["a", "b", "c"]),
                vec![
                    load("a", Some(0.0), 4, 1, None),
                    load("b", Some(0.0), 4, 1, None),
                    load("c", Some(50.0), 4, 4, Some(Full::AtMax)),
                ],
                10.0,
                vec![(10.0, 0.0), (0.0, 0.0), (0.0, 10.0)],
            ),
            (
                "unschedulable pods: only what runs counts as capacity",
                order(&["a", "b"]),
                vec![
                    load("a", Some(50.0), 8, 3, unsched),
                    load("b", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 20.0), (20.0, 0.0)],
            ),
            (
                "no room anywhere: demand stays",
                order(&["a", "b"]),
                vec![
                    load("a", Some(120.0), 4, 4, Some(Full::AtMax)),
                    load("b", Some(50.0), 4, 4, Some(Full::AtMax)),
                ],
                10.0,
                vec![(0.0, 0.0), (0.0, 0.0)],
            ),
            (
                "a zone without data neither gives nor takes",
                order(&["a", "b", "c"]),
                vec![
                    load("a", Some(100.0), 8, 8, Some(Full::AtMax)),
                    load("b", None, 8, 0, None),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 20.0), (0.0, 0.0), (20.0, 0.0)],
            ),
            (
                "zones missing from the order come after it",
                order(&["b"]),
                vec![
                    load("a", Some(5.0), 8, 1, None),
                    load("b", Some(100.0), 8, 8, Some(Full::AtMax)),
                    load("c", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(20.0, 0.0), (0.0, 20.0), (0.0, 0.0)],
            ),
            (
                "full zone under its capacity spills nothing",
                order(&["a", "b"]),
                vec![
                    load("a", Some(70.0), 8, 8, Some(Full::AtMax)),
                    load("b", Some(0.0), 8, 1, None),
                ],
                10.0,
                vec![(0.0, 0.0), (0.0, 0.0)],
            ),
        ];
        for (name, order, zones, target, want) in cases {
            let got = spill(&order, &zones, target);
            assert_eq!(flows(&got), want, "{name}");
            let moved_in: f64 = got.iter().map(|s| s.spilled_in).sum();
            let moved_out: f64 = got.iter().map(|s| s.spilled_out).sum();
            assert!((moved_in - moved_out).abs() < 1e-9, "{name}: conserved");
        }
    }

    #[test]
    fn spill_refuses_a_bad_target() {
        let zones = vec![
            load("a", Some(100.0), 1, 1, Some(Full::AtMax)),
            load("b", Some(0.0), 8, 1, None),
        ];
        for t in [0.0, -1.0, f64::NAN] {
            assert_eq!(flows(&spill(&[], &zones, t)), vec![(0.0, 0.0); 2]);
        }
    }

    #[test]
    fn desired_is_the_largest_ask_within_bounds() {
        let readings = [
            (40.0, MetricTarget::AverageValue(4.0)), // 10
            (0.9, MetricTarget::Value(0.5)),         // ceil(4 * 1.8) = 8
        ];
        assert_eq!(desired_replicas(&readings, 4, 4, 1, 8), Some(8));
        assert_eq!(desired_replicas(&readings, 4, 4, 1, 20), Some(10));
        assert_eq!(
            desired_replicas(&[(0.0, MetricTarget::AverageValue(4.0))], 4, 4, 2, 8),
            Some(2)
        );
        assert_eq!(desired_replicas(&[], 4, 4, 1, 8), None);
        assert_eq!(
            desired_replicas(&[(f64::NAN, MetricTarget::AverageValue(1.0))], 1, 1, 1, 8),
            None
        );
    }

    #[test]
    fn metric_types_follow_the_keda_contract() {
        for s in [
            QUEUE,
            Signal::Concurrency,
            Signal::GenerationTokensPerSecond,
        ] {
            assert_eq!(metric_target(s, 2.0), MetricTarget::AverageValue(2.0));
        }
        for s in [
            P95,
            Signal::TimeToFirstToken { permille: 950 },
            Signal::KvCacheUtilization,
        ] {
            assert_eq!(metric_target(s, 2.0), MetricTarget::Value(2.0));
        }
    }
}
