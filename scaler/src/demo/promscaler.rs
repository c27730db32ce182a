//! The comparison: the same script and fleet model scaled through KEDA's Prometheus scaler, as
//! most clusters do today. A pure in-process emulation, no sockets: a second [`Fleet`] (same
//! script and seed; arrivals are statistically the same, not identical, since routing draws from
//! the same generator), a Prometheus that scrapes its gateways and model servers every 15 s,
//! PromQL over those samples, and the same HPA rules and [`Timing`] as the redbridge path. Only the data path
//! differs:
//!
//! - Prometheus scrapes every `scrape_interval` (15 s), each target at its own offset;
//! - queries use `rate(...[1m])` with PromQL's extrapolation, and gauges' last sample unless a
//!   failed scrape or a departed target marked them stale;
//! - KEDA polls `IsActive` every `polling` (30 s) and nothing is pushed;
//! - an empty result or NaN reads as 0, the Prometheus scaler's default (`ignoreNullValues`).
//!
//! The ScaledObject has the redbridge path's triggers written as PromQL, with the same targets:
//! `sum(rate(envoy_cluster_upstream_rq_total{zone}[1m]))` (AverageValue),
//! `sum(envoy_cluster_upstream_rq_pending_active{zone})` (AverageValue) and
//! `avg(vllm:kv_cache_usage_perc{zone})` (Value).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::keda::{Evaluation, MetricType, Targets, Timing};
use super::sim::{Fleet, PodInfo, PodKind};
use crate::hpa::{Autoscaler, Reading};

/// The Prometheus path's data settings, seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSettings {
    /// Prometheus' `scrape_interval` (a common setting; its own default is 60 s).
    pub scrape_interval: f64,
    /// The range of `rate()`.
    pub rate_window: f64,
    /// KEDA's `pollingInterval` (its default).
    pub polling: f64,
}

impl Default for PromSettings {
    fn default() -> Self {
        PromSettings {
            scrape_interval: 15.0,
            rate_window: 60.0,
            polling: 30.0,
        }
    }
}

impl PromSettings {
    /// The Prometheus path beside redbridge's at `timing`, like for like: the same KEDA, so it
    /// polls as often as the redbridge ScaledObjects do, while its data path keeps what a cluster
    /// runs (15 s scrapes, `rate[1m]`), as redbridge's keeps its 1 s scrapes and window.
    pub fn for_timing(timing: &Timing) -> PromSettings {
        PromSettings {
            polling: timing.polling,
            ..PromSettings::default()
        }
    }

    /// Seconds after traffic stops until the rate query reads zero: the `rate()` range, one
    /// scrape interval for the last sample with traffic to age out, and one poll.
    pub fn seconds_to_see_silence(&self) -> f64 {
        self.rate_window + self.scrape_interval + self.polling
    }
}

/// Prometheus' default lookback for instant vectors.
const LOOKBACK: f64 = 300.0;

/// One scrape of a gateway pod: the series the queries read.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    requests: f64,
    held: f64,
}

/// A model server's KV-cache gauge: its last sample, and a staleness marker newer than it.
#[derive(Clone, Copy, Debug)]
struct KvSeries {
    zone: usize,
    next_scrape: f64,
    last: Option<(f64, f64)>,
    stale_since: Option<f64>,
}

/// One target's series in the TSDB.
#[derive(Clone, Debug)]
struct Series {
    /// Gateways live for the whole run, so the pod is fixed.
    pod: PodInfo,
    zone: usize,
    next_scrape: f64,
    samples: VecDeque<Sample>,
    /// When the last scrape failed (a staleness marker), if it is newer than the last sample.
    stale_since: Option<f64>,
}

struct Zone {
    autoscaler: Autoscaler,
    next_hpa: f64,
    next_poll: f64,
    log: Vec<Evaluation>,
}

/// The whole Prometheus path: its fleet, its Prometheus and its controllers.
pub struct PromPath {
    fleet: Fleet,
    settings: PromSettings,
    timing: Timing,
    targets: Targets,
    series: Vec<Series>,
    /// Model servers come and go; a departed one's series ends (Prometheus marks it stale).
    /// Ordered, so the zone's average sums in the same order on every run.
    servers: BTreeMap<PodInfo, KvSeries>,
    zones: Vec<Zone>,
}

impl PromPath {
    /// Scales `fleet` (a twin of the redbridge path's) from now on, with a Prometheus that starts
    /// with it (no history).
    pub fn new(fleet: Fleet, timing: Timing, settings: PromSettings) -> PromPath {
        let mut p = PromPath::opening_in_first_phase(fleet, timing, settings);
        for s in &mut p.series {
            s.samples.clear();
        }
        p
    }

    /// [`PromPath::new`] for a fleet that opens in steady state in the script's first phase (the
    /// demo's): Prometheus opens with the history it would have scraped there, one `rate()` range
    /// of the gateways' counters growing at the first phase's rates. A Prometheus started with
    /// the fleet would read nothing for a whole range and scale the pool away.
    pub fn opening_in_first_phase(
        fleet: Fleet,
        timing: Timing,
        settings: PromSettings,
    ) -> PromPath {
        let targets = Targets::for_scenario(fleet.scenario());
        let gateways = fleet.pods();
        let gateways: Vec<PodInfo> = gateways
            .into_iter()
            .filter(|p| p.id.kind == PodKind::Gateway)
            .collect();
        let first = fleet.scenario().rates_at(0.0).rates.to_vec();
        let interval = settings.scrape_interval.max(1e-3);
        let series = gateways
            .iter()
            .map(|&pod| {
                let zone = pod.id.zone;
                let per_gateway = gateways.iter().filter(|g| g.id.zone == zone).count().max(1);
                let rate = first.get(zone).copied().unwrap_or(0.0) / per_gateway as f64;
                let next_scrape = offset(pod, settings.scrape_interval);
                let mut samples = VecDeque::new();
                let mut t = next_scrape - interval;
                while t >= -(settings.rate_window + interval) {
                    // Counters at 0 when the demo starts, as the fleet's are.
                    samples.push_front(Sample {
                        t,
                        requests: rate * t,
                        held: 0.0,
                    });
                    t -= interval;
                }
                Series {
                    pod,
                    zone,
                    next_scrape,
                    samples,
                    stale_since: None,
                }
            })
            .collect();
        let zones = (0..fleet.zones().len())
            .map(|_| Zone {
                autoscaler: Autoscaler::new(timing.autoscaler()),
                next_hpa: timing.hpa_sync,
                next_poll: settings.polling,
                log: Vec::new(),
            })
            .collect();
        PromPath {
            fleet,
            settings,
            timing,
            targets,
            series,
            servers: BTreeMap::new(),
            zones,
        }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn settings(&self) -> &PromSettings {
        &self.settings
    }

    /// Trigger `trigger`'s value at zone `z`'s last evaluation.
    pub fn last_value(&self, z: usize, trigger: usize) -> Option<f64> {
        self.zones
            .get(z)?
            .log
            .last()?
            .values
            .get(trigger)
            .copied()
            .flatten()
    }

    /// Evaluations per zone so far.
    pub fn evaluations(&self) -> Vec<Vec<Evaluation>> {
        self.zones.iter().map(|z| z.log.clone()).collect()
    }

    /// Advances to `now`: the fleet, the scrapes due (failing for zones `reachable` says no to),
    /// and the HPA and KEDA evaluations due.
    pub fn advance(&mut self, now: f64, dt: f64, reachable: &dyn Fn(usize) -> bool) {
        self.fleet.tick(now, dt);
        self.scrape(now, reachable);
        for z in 0..self.zones.len() {
            if now < self.zones[z].next_hpa {
                continue;
            }
            let zone = &mut self.zones[z];
            zone.next_hpa = next_due(zone.next_hpa, self.timing.hpa_sync, now);
            let poll = now >= zone.next_poll;
            if poll {
                zone.next_poll = next_due(zone.next_poll, self.settings.polling, now);
            }
            self.evaluate(z, now, poll);
        }
    }

    fn scrape(&mut self, now: f64, reachable: &dyn Fn(usize) -> bool) {
        let interval = self.settings.scrape_interval;
        let keep = self.settings.rate_window.max(LOOKBACK) + interval;
        for s in &mut self.series {
            if now < s.next_scrape {
                continue;
            }
            s.next_scrape = next_due(s.next_scrape, interval, now);
            let state = self.fleet.gateway_state(s.pod);
            match state.filter(|_| reachable(s.zone)) {
                Some(gw) => {
                    s.samples.push_back(Sample {
                        t: now,
                        requests: gw.upstream_rq_total as f64,
                        held: gw.upstream_rq_pending_active as f64,
                    });
                    s.stale_since = None;
                }
                None => {
                    s.stale_since.get_or_insert(now);
                }
            }
            while s.samples.front().is_some_and(|x| x.t < now - keep) {
                s.samples.pop_front();
            }
        }
        // Service discovery: model servers that came, and those that left.
        let live: BTreeSet<PodInfo> = self
            .fleet
            .pods()
            .into_iter()
            .filter(|p| p.id.kind == PodKind::ModelServer)
            .collect();
        self.servers.retain(|pod, _| live.contains(pod));
        for pod in live {
            let kv = self.servers.entry(pod).or_insert_with(|| KvSeries {
                zone: pod.id.zone,
                next_scrape: now + offset(pod, interval),
                last: None,
                stale_since: None,
            });
            if now < kv.next_scrape {
                continue;
            }
            kv.next_scrape = next_due(kv.next_scrape, interval, now);
            match self.fleet.model_state(pod).filter(|_| reachable(kv.zone)) {
                Some(m) => {
                    kv.last = Some((now, m.kv_cache_usage_perc));
                    kv.stale_since = None;
                }
                None => {
                    kv.stale_since.get_or_insert(now);
                }
            }
        }
    }

    /// The three queries for zone `z` at `now`, each as the Prometheus scaler reads it.
    fn queries(&self, z: usize, now: f64) -> [f64; 3] {
        let from = now - self.settings.rate_window;
        let zone = self.series.iter().filter(|s| s.zone == z);
        // sum(rate(requests[1m])): empty when no series has two samples in range.
        let rates: Vec<f64> = zone
            .clone()
            .filter_map(|s| {
                let points: Vec<(f64, f64)> = s
                    .samples
                    .iter()
                    .filter(|x| x.t > from && x.t <= now)
                    .map(|x| (x.t, x.requests))
                    .collect();
                extrapolated_rate(&points, from, now)
            })
            .collect();
        // Folded from +0.0: an empty float sum is -0.0.
        let demand = rates.iter().fold(0.0, |a, r| a + r);
        // sum(held): each series' last sample in the lookback, unless marked stale since.
        let held = zone
            .filter_map(|s| {
                let last = s.samples.back()?;
                instant(last.t, s.stale_since, now).then_some(last.held)
            })
            .fold(0.0, |a, h| a + h);
        // avg(kv): empty (read as 0) when the zone has no live model server.
        let kv: Vec<f64> = self
            .servers
            .values()
            .filter(|k| k.zone == z)
            .filter_map(|k| {
                let (t, v) = k.last?;
                instant(t, k.stale_since, now).then_some(v)
            })
            .collect();
        let kv = if kv.is_empty() {
            0.0
        } else {
            kv.iter().sum::<f64>() / kv.len() as f64
        };
        [demand, held, kv]
    }

    fn evaluate(&mut self, z: usize, now: f64, poll: bool) {
        let values = self.queries(z, now);
        let t = &self.targets;
        let specs = [
            (MetricType::AverageValue, t.demand, 0.1),
            (MetricType::AverageValue, t.held, 0.0),
            (MetricType::Value, t.kv_cache, 0.0),
        ];
        let readings: Vec<Reading> = values
            .iter()
            .zip(specs)
            .map(|(v, (kind, target, _))| Ok((*v, kind.target(target))))
            .collect();
        let active = values
            .iter()
            .zip(specs)
            .any(|(v, (_, _, activation))| *v > activation);
        let view = self.fleet.zone_view(z, 1.0);
        let (current, ready) = view.map_or((0, 0), |v| (v.desired, v.ready));
        let zone = &mut self.zones[z];
        let decision = zone
            .autoscaler
            .step(now, ready, current, &readings, poll.then_some(active));
        if decision.desired != current {
            let name = self.fleet.zones()[z].clone();
            let _ = self.fleet.set_desired(&name, decision.desired, now);
        }
        zone.log.push(Evaluation {
            t: now,
            current,
            ready,
            desired: decision.desired,
            values: values.iter().map(|v| Some(*v)).collect(),
            active: poll.then_some(active),
            pushed: false,
            reason: decision.reason,
            error: None,
        });
    }
}

/// The next time a periodic job is due: one period on, or skipping the periods a stalled
/// process missed (as Prometheus and controllers do) instead of running them back to back.
fn next_due(due: f64, period: f64, now: f64) -> f64 {
    let next = due + period;
    if next > now {
        next
    } else {
        now + period
    }
}

/// Prometheus spreads targets over the interval by a hash of their labels.
fn offset(pod: PodInfo, interval: f64) -> f64 {
    let h = (pod.id.zone as u64)
        .wrapping_mul(7919)
        .wrapping_add(u64::from(pod.id.index).wrapping_mul(104_729))
        .wrapping_add(pod.generation.wrapping_mul(31));
    interval * (h % 1000) as f64 / 1000.0
}

/// Whether a gauge's last sample at `t` is an instant-vector value at `now`: inside the lookback
/// and not followed by a staleness marker.
fn instant(t: f64, stale_since: Option<f64>, now: f64) -> bool {
    t > now - LOOKBACK && t <= now && stale_since.is_none_or(|at| at < t)
}

/// PromQL's `rate()` for one series (`extrapolatedRate`): the increase over the samples in
/// `(from, to]`, counter resets added back, extrapolated towards the range's edges by at most
/// half a sample interval (and never below zero), per second of the range. `None` with fewer
/// than two samples, which PromQL returns as no series.
pub fn extrapolated_rate(points: &[(f64, f64)], from: f64, to: f64) -> Option<f64> {
    let (first, last) = match points {
        [first, .., last] => (*first, *last),
        _ => return None,
    };
    let mut increase = last.1 - first.1;
    for w in points.windows(2) {
        if w[1].1 < w[0].1 {
            increase += w[0].1;
        }
    }
    let sampled = last.0 - first.0;
    if sampled <= 0.0 || to <= from {
        return None;
    }
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    let mut to_start = first.0 - from;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if increase > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / increase);
        to_start = to_start.min(to_zero);
    }
    let mut to_end = to - last.0;
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let factor = (sampled + to_start + to_end) / sampled;
    Some(increase * factor / (to - from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::Scenario;

    #[test]
    fn rate_matches_promql_on_a_steady_counter() {
        // 10/s, scraped every 15 s, range 60 s ending 5 s after the last scrape.
        let points: Vec<(f64, f64)> = (0..4)
            .map(|i| (10.0 + 15.0 * i as f64, 100.0 + 150.0 * i as f64))
            .collect();
        let r = extrapolated_rate(&points, 0.0, 60.0).unwrap();
        assert!((r - 10.0).abs() < 0.5, "{r}");
        assert_eq!(extrapolated_rate(&points[..1], 0.0, 60.0), None);
    }

    #[test]
    fn rate_adds_back_counter_resets() {
        let points = [(0.0, 100.0), (15.0, 250.0), (30.0, 50.0), (45.0, 200.0)];
        let r = extrapolated_rate(&points, -15.0, 45.0).unwrap();
        // Increase 150, then 50 after the reset, then 150: 350 over 45 s, extrapolated back to where
        // the counter would have been 0 (12.9 s before the first sample, within the range).
        assert!((r - 7.5).abs() < 1e-9, "{r}");
    }

    #[test]
    fn unreachable_targets_read_as_zero_after_the_range() {
        let mut s = Scenario::default_demo(120.0);
        s.phases.truncate(1);
        s.phases[0].duration = 1000.0;
        let fleet = Fleet::new(s, 1, 3);
        let mut p = PromPath::new(fleet, Timing::default(), PromSettings::default());
        let mut t = 0.0;
        while t < 90.0 {
            t += 0.5;
            p.advance(t, 0.5, &|_| true);
        }
        let demand = p.queries(0, t)[0];
        assert!((4.0..8.0).contains(&demand), "zone-a serves 6/s: {demand}");
        while t < 180.0 {
            t += 0.5;
            p.advance(t, 0.5, &|z| z != 0);
        }
        assert_eq!(
            p.queries(0, t)[0],
            0.0,
            "no samples in range: empty, read as 0"
        );
        assert!(p.queries(1, t)[0] > 0.0, "other zones still scraped");
    }

    /// Prometheus opens with the first phase's history, as the fleet opens in it: its rate
    /// reads the demand at once instead of nothing for a whole range.
    #[test]
    fn prometheus_opens_with_history() {
        let s = Scenario::default_demo(180.0);
        let mut p = PromPath::opening_in_first_phase(
            Fleet::new(s.clone(), 2, 3),
            Timing::default(),
            PromSettings::default(),
        );
        p.advance(0.5, 0.5, &|_| true);
        let demand = p.queries(0, 0.5)[0];
        assert!((5.0..7.0).contains(&demand), "zone-a's 6/s: {demand}");
        let mut cold = PromPath::new(
            Fleet::new(s, 2, 3),
            Timing::default(),
            PromSettings::default(),
        );
        cold.advance(0.5, 0.5, &|_| true);
        assert_eq!(cold.queries(0, 0.5)[0], 0.0, "no history: empty, read as 0");
    }

    /// Like for like: the default demo's quiet phase is long enough for the Prometheus path (at
    /// the demo's controllers, its own data path) to scale every zone to zero, so the return
    /// phase compares scaling from zero.
    #[test]
    fn the_default_demo_lets_the_prometheus_path_reach_zero() {
        use super::super::scenario::DEFAULT_DEMO_SECONDS;
        let s = Scenario::default_demo(DEFAULT_DEMO_SECONDS);
        let quiet = s.phases[3].clone();
        assert_eq!(quiet.name, "quiet");
        let timing = Timing::for_duration(DEFAULT_DEMO_SECONDS);
        let settings = PromSettings::for_timing(&timing);
        assert_eq!(settings.polling, timing.polling, "one KEDA for both paths");
        assert!(
            quiet.duration > settings.seconds_to_see_silence() + timing.cooldown,
            "{quiet:?}"
        );
        let mut p = PromPath::new(Fleet::new(s, 1, 3), timing, settings);
        let (mut t, dt) = (0.0, 0.25);
        let mut zero_at = None;
        while t < quiet.start + quiet.duration {
            t += dt;
            p.advance(t, dt, &|_| true);
            let all_zero = (0..3).all(|z| p.fleet().desired(z) == Some(0));
            if t >= quiet.start && all_zero && zero_at.is_none() {
                zero_at = Some(t);
            }
        }
        let zero_at = zero_at.expect("the Prometheus path reaches zero in the quiet phase");
        assert!(zero_at > quiet.start + 60.0, "rate[1m] keeps it up a while");
    }
}
