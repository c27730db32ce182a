//! The control-quality benchmark behind `redbridge bench` and `cargo bench --bench scenarios`:
//! every path of [`PathKind`] scales its own twin of the simulated fleet ([`Fleet`], same script
//! and seed) through a script, in simulated time, at a real cluster's time-scales (HPA sync 15 s,
//! KEDA polling 30 s, cooldown and scale-down stabilisation 300 s, model loads in minutes), so
//! hours of traffic run in seconds and give the same figures on every machine.
//!
//! The redbridge paths run the production code with only sockets and the wall clock left out:
//! each pod's exposition is rendered ([`super::exposition`]), parsed by the pool's
//! [`Extractor`](crate::extract::Extractor), kept in its [`TargetState`](crate::window::TargetState)
//! window at simulated time, and served through [`State::evaluate_at`] (which applies the
//! ZonalScaledObject adjustments with [`crate::zonal::spillover::adjust`]); the zone weights come
//! from [`crate::zonal::weights::decide`] and [`crate::zonal::weights::routed_demand`], and the
//! HPA and KEDA rules from [`Autoscaler`]. The KEDA Prometheus scaler is [`PromPath`]. The other
//! peers are emulated here from their documented defaults; the reactive limit sees the script's
//! true rates.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::exposition::{render_gateway, render_vllm, LISTENER_PREFIX};
use super::fleet::{pod_name, Discovery, Endpoint, CLUSTER, NAMESPACE, POOL};
use super::keda::{triggers, Targets, Timing, TriggerSpec};
use super::promscaler::{PromPath, PromSettings};
use super::scenario::{Scenario, ScenarioError};
use super::sim::{Fleet, PodInfo, PodKind};
use crate::config::file::ConfigError;
use crate::config::trigger::{TriggerQuery, UP_WINDOW_KEY};
use crate::extract::Scratch;
use crate::hpa::{
    Activation, Autoscaler, AutoscalerConfig, Behavior, MetricTarget, Policy, PolicyKind, Reading,
    Rules, Select, DEFAULT_TOLERANCE,
};
use crate::model::{Clock, Matcher, Pool, Signal, Source};
use crate::state::{Resolved, State};
use crate::zonal::spillover::{self, ZoneAdjustment};
use crate::zonal::weights::{self, Written, ZoneInput};

/// The scenario library: name and script, as kept in the repository's `scenarios/` folder.
pub const LIBRARY: &[(&str, &str)] = &[
    (
        "flash-crowd",
        include_str!("../../../scenarios/flash-crowd.yaml"),
    ),
    ("diurnal", include_str!("../../../scenarios/diurnal.yaml")),
    (
        "quiet-return",
        include_str!("../../../scenarios/quiet-return.yaml"),
    ),
    (
        "zone-stockout",
        include_str!("../../../scenarios/zone-stockout.yaml"),
    ),
    (
        "pool-shortage",
        include_str!("../../../scenarios/pool-shortage.yaml"),
    ),
    (
        "targets-failing",
        include_str!("../../../scenarios/targets-failing.yaml"),
    ),
    (
        "demo-default",
        include_str!("../../../scenarios/demo-default.yaml"),
    ),
];

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("scenario {name}")]
    Scenario { name: String, source: ScenarioError },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("trigger `{trigger}` of zone {zone}: {message}")]
    Trigger {
        zone: String,
        trigger: &'static str,
        message: String,
    },
}

/// The paths compared, each set up as its users would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// redbridge with a ZonalScaledObject: spillover, warm-up and zone weights.
    RedbridgeZonal,
    /// redbridge with one plain ScaledObject per zone.
    RedbridgeZones,
    /// KEDA's Prometheus scaler: 15 s scrapes, `rate[1m]`, 30 s polling, `ignoreNullValues`.
    Prometheus,
    /// Knative's KPA: concurrency scraped every second, 60 s stable and 6 s panic windows.
    Kpa,
    /// An AIBrix-like pod autoscaler: model servers scraped every 10 s, KPA windows, a failed
    /// scrape reads 0.
    Aibrix,
    /// A keda-kaito-like scaler: mean request latency over 300 s, one replica per 300 s.
    Kaito,
    /// Sees the true demand at once and routes it as capacity allows; bound only by model load,
    /// GPU capacity and the maximum replicas.
    Reactive,
}

impl PathKind {
    pub const ALL: [PathKind; 7] = [
        PathKind::RedbridgeZonal,
        PathKind::RedbridgeZones,
        PathKind::Prometheus,
        PathKind::Kpa,
        PathKind::Aibrix,
        PathKind::Kaito,
        PathKind::Reactive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::RedbridgeZonal => "redbridge-zso",
            PathKind::RedbridgeZones => "redbridge-so",
            PathKind::Prometheus => "keda-prometheus",
            PathKind::Kpa => "knative-kpa",
            PathKind::Aibrix => "aibrix-like",
            PathKind::Kaito => "kaito-like",
            PathKind::Reactive => "reactive-limit",
        }
    }

    /// A peer: neither redbridge nor the limit.
    pub fn is_peer(self) -> bool {
        !matches!(
            self,
            PathKind::RedbridgeZonal | PathKind::RedbridgeZones | PathKind::Reactive
        )
    }
}

/// How a benchmark runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub seed: u64,
    /// Simulation step, seconds.
    pub dt: f64,
    pub gateway_pods: u32,
    /// Controller settings of every KEDA-based path (Kubernetes' and KEDA's defaults).
    pub timing: Timing,
    /// Seconds a request served in another zone pays on top.
    pub cross_zone_latency: f64,
    pub paths: Vec<PathKind>,
    /// The redbridge paths' demand trigger reads rises over this many seconds (`upWindow`), falls
    /// over its window; `None`: the window alone.
    pub up_window: Option<f64>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            seed: 1,
            dt: 0.25,
            gateway_pods: 2,
            timing: cluster_timing(),
            cross_zone_latency: 0.05,
            paths: PathKind::ALL.to_vec(),
            up_window: Some(2.0),
        }
    }
}

/// A real cluster's controller settings: HPA sync 15 s, KEDA polling 30 s, cooldown 300 s,
/// scale-down stabilisation 300 s; the demand trigger keeps the demo's 10 s window.
pub fn cluster_timing() -> Timing {
    Timing {
        hpa_sync: 15.0,
        polling: 30.0,
        cooldown: 300.0,
        scale_down_window: 300.0,
        signal_window: 10.0,
        max_replicas: 10,
    }
}

/// One slice of a path's run: a zone, a phase, or the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub arrivals: u64,
    /// Finished within the objective, successfully.
    pub good: u64,
    /// 500s and 503s, plus requests still unfinished at the end.
    pub failed: u64,
    pub gpu_minutes: f64,
    /// `good / arrivals`; `None` without arrivals.
    pub within_objective: Option<f64>,
}

impl Figures {
    fn finish(mut self) -> Figures {
        self.within_objective =
            (self.arrivals > 0).then(|| self.good as f64 / self.arrivals as f64);
        self
    }
}

/// What one path did on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct PathResult {
    pub path: PathKind,
    pub name: &'static str,
    pub total: Figures,
    /// p95 end-to-end latency of successful requests, seconds.
    pub p95_latency: Option<f64>,
    /// Times a zone's replica count was changed.
    pub replica_changes: u64,
    /// Requests served in another zone than where they arrived.
    pub moved_requests: u64,
    pub zones: Vec<(String, Figures)>,
    pub phases: Vec<(String, Figures)>,
}

/// Every path on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub simulated_seconds: f64,
    pub latency_objective: f64,
    pub paths: Vec<PathResult>,
}

impl ScenarioResult {
    pub fn path(&self, kind: PathKind) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.path == kind)
    }
}

/// Parses the library's scripts.
pub fn library() -> Result<Vec<(String, Scenario)>, BenchError> {
    LIBRARY
        .iter()
        .map(|(name, text)| {
            Scenario::from_yaml(text)
                .map(|s| (name.to_string(), s))
                .map_err(|source| BenchError::Scenario {
                    name: name.to_string(),
                    source,
                })
        })
        .collect()
}

/// Runs every path of `opts` on `scenario`.
pub fn run_scenario(
    name: &str,
    scenario: &Scenario,
    opts: &BenchOptions,
) -> Result<ScenarioResult, BenchError> {
    let paths = opts
        .paths
        .iter()
        .map(|&kind| run_path(kind, scenario, opts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ScenarioResult {
        scenario: name.to_string(),
        simulated_seconds: scenario.total_duration(),
        latency_objective: scenario.latency_target,
        paths,
    })
}

/// A controller driving one fleet, called once per simulated second.
trait Control {
    fn control(&mut self, fleet: &mut Fleet, now: f64) -> Result<(), BenchError>;
    fn changes(&self) -> u64;
}

fn run_path(
    kind: PathKind,
    scenario: &Scenario,
    opts: &BenchOptions,
) -> Result<PathResult, BenchError> {
    let mut fleet = Fleet::new(scenario.clone(), opts.gateway_pods, opts.seed);
    fleet.set_cross_zone_latency(opts.cross_zone_latency);
    let total = scenario.total_duration();
    let dt = if opts.dt.is_finite() && opts.dt > 0.0 {
        opts.dt.min(1.0)
    } else {
        0.25
    };
    let steps = (total / dt).round() as u64;
    let per_second = (1.0 / dt).round().max(1.0) as u64;
    let (fleet, changes) = if kind == PathKind::Prometheus {
        let mut prom = PromPath::new(fleet, opts.timing.clone(), PromSettings::default());
        for i in 1..=steps {
            let now = i as f64 * dt;
            let phase = prom.fleet().scenario().rates_at(now);
            let unreachable: Vec<bool> = (0..scenario.zones.len())
                .map(|z| !phase.reachable(z))
                .collect();
            prom.advance(now, dt, &|z| !unreachable.get(z).copied().unwrap_or(false));
        }
        let changes = prom
            .evaluations()
            .iter()
            .flatten()
            .filter(|e| e.desired != e.current)
            .count() as u64;
        (prom.fleet().clone(), changes)
    } else {
        let mut control: Box<dyn Control> = match kind {
            PathKind::RedbridgeZonal => Box::new(Redbridge::new(&fleet, opts, true)?),
            PathKind::RedbridgeZones => Box::new(Redbridge::new(&fleet, opts, false)?),
            PathKind::Kpa => Box::new(Kpa::knative(&fleet, opts)),
            PathKind::Aibrix => Box::new(Kpa::aibrix(&fleet, opts)),
            PathKind::Kaito => Box::new(Kaito::new(&fleet, opts)),
            PathKind::Reactive | PathKind::Prometheus => Box::new(Reactive::new(&fleet, opts)),
        };
        for i in 1..=steps {
            let now = i as f64 * dt;
            fleet.tick(now, dt);
            if i % per_second == 0 {
                control.control(&mut fleet, now)?;
            }
        }
        let changes = control.changes();
        (fleet, changes)
    };
    Ok(figures(kind, &fleet, changes))
}

fn figures(kind: PathKind, fleet: &Fleet, replica_changes: u64) -> PathResult {
    let scenario = fleet.scenario();
    let zones: Vec<(String, Figures)> = fleet
        .summary()
        .into_iter()
        .map(|s| {
            let f = Figures {
                arrivals: s.arrivals,
                good: s.good,
                failed: s.errors + s.arrivals.saturating_sub(s.finished),
                gpu_minutes: s.gpu_seconds / 60.0,
                within_objective: None,
            };
            (s.zone, f.finish())
        })
        .collect();
    let mut total = Figures::default();
    for (_, f) in &zones {
        total.arrivals += f.arrivals;
        total.good += f.good;
        total.failed += f.failed;
        total.gpu_minutes += f.gpu_minutes;
    }
    let phases = scenario
        .phases
        .iter()
        .map(|p| {
            let mut f = Figures::default();
            let (from, to) = (
                p.start.floor() as usize,
                (p.start + p.duration).ceil() as usize,
            );
            for z in 0..scenario.zones.len() {
                for t in fleet
                    .truth(z)
                    .get(from..to.min(fleet.truth(z).len()))
                    .unwrap_or(&[])
                {
                    f.arrivals += u64::from(t.arrivals);
                    f.good += u64::from(t.good);
                    f.failed += u64::from(t.errors);
                    f.gpu_minutes += t.gpu_seconds / 60.0;
                }
            }
            (p.name.clone(), f.finish())
        })
        .collect();
    let moved = fleet
        .moved()
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n)
                .sum::<u64>()
        })
        .sum();
    PathResult {
        path: kind,
        name: kind.name(),
        total: total.finish(),
        p95_latency: fleet.latency_quantile(0.95, &[]),
        replica_changes,
        moved_requests: moved,
        zones,
        phases,
    }
}

/// Sets a zone's replicas, counting changes.
fn apply(fleet: &mut Fleet, z: usize, desired: u32, now: f64, changes: &mut u64) {
    let current = fleet.desired(z).unwrap_or(0);
    if desired == current {
        return;
    }
    *changes += 1;
    let name = fleet.zones()[z].clone();
    // The zone exists: its name came from the fleet.
    let _ = fleet.set_desired(&name, desired, now);
}

/// Ready, loading and pending replicas, and requests waiting, of a zone.
fn counts(fleet: &Fleet, z: usize) -> (u32, u32, u32, u32) {
    fleet
        .zone_view(z, 1.0)
        .map_or((0, 0, 0, 0), |v| (v.ready, v.loading, v.pending, v.queued))
}

/// One zone's KEDA ScaledObject and HPA.
struct HpaZone {
    autoscaler: Autoscaler,
    next_hpa: f64,
    next_poll: f64,
}

impl HpaZone {
    fn new(config: AutoscalerConfig, timing: &Timing) -> HpaZone {
        HpaZone {
            autoscaler: Autoscaler::new(config),
            next_hpa: timing.hpa_sync,
            next_poll: timing.polling,
        }
    }

    /// Whether the HPA, and KEDA's poll, are due at `now`.
    fn due(&mut self, now: f64, timing: &Timing) -> Option<bool> {
        if now + 1e-9 < self.next_hpa {
            return None;
        }
        self.next_hpa += timing.hpa_sync;
        let poll = now + 1e-9 >= self.next_poll;
        if poll {
            self.next_poll += timing.polling;
        }
        Some(poll)
    }
}

/// One trigger bound to the pool, re-bound whenever discovery replaces the pool.
struct BoundTrigger {
    spec: TriggerSpec,
    query: TriggerQuery,
    resolved: Option<Resolved>,
}

/// The source the redbridge paths read demand from: the gateways' listener counters.
pub const ARRIVALS_SOURCE: &str = "arrivals";

/// `pool` with a source reading its gateways' HTTP connection manager ([`ARRIVALS_SOURCE`],
/// profile `envoy-downstream`) over the same targets as its first (gateway) source.
///
/// Envoy counts `upstream_rq_total` when a request is attached to an upstream connection, so a
/// request held while the zone has no Ready replica is counted when it is released, and a backlog
/// released at once reads as a burst that holds extra replicas for the scale-down window. The
/// listener's `downstream_rq_total` counts each request when its headers arrive.
fn with_arrivals(mut pool: Pool) -> Pool {
    let Some(gateway) = pool.sources.first().cloned() else {
        return pool;
    };
    let Some(profile) = crate::profiles::builtin("envoy-downstream") else {
        return pool;
    };
    let source = Source {
        name: ARRIVALS_SOURCE.into(),
        profile: Arc::new(profile),
        matchers: vec![Matcher::eq(
            "envoy_http_conn_manager_prefix",
            LISTENER_PREFIX,
        )],
        targets: gateway.targets,
        prometheus: None,
    };
    match pool.sources.iter_mut().find(|s| s.name == ARRIVALS_SOURCE) {
        Some(existing) => existing.targets = source.targets,
        None => pool.sources.push(source),
    }
    pool
}

/// The ZonalScaledObject controller's state between evaluations.
struct Zonal {
    last: Option<Written>,
    policy: weights::Policy,
    order: Vec<String>,
    /// Per zone, since when some replica has been Pending.
    pending_since: Vec<Option<f64>>,
    /// `spillover.unschedulableAfter`.
    unschedulable_after: f64,
    /// The controller's evaluation period, seconds.
    period: f64,
    next: f64,
}

/// redbridge over the fleet: scrapes every second into the pool's windows, answers KEDA's
/// queries through [`State`], and (as a ZonalScaledObject) publishes spillover, warm-up and
/// weights.
struct Redbridge {
    state: State,
    discovery: Discovery,
    zones: Vec<String>,
    model: String,
    endpoints: Vec<Endpoint>,
    by_url: HashMap<String, PodInfo>,
    scratch: Scratch,
    body: String,
    triggers: Vec<Vec<BoundTrigger>>,
    hpa: Vec<HpaZone>,
    timing: Timing,
    targets: Targets,
    zonal: Option<Zonal>,
    changes: u64,
}

impl Redbridge {
    fn new(fleet: &Fleet, opts: &BenchOptions, zonal: bool) -> Result<Redbridge, BenchError> {
        let scenario = fleet.scenario();
        let model = scenario.model.name.clone();
        let discovery = Discovery::new(&model)?;
        let zones = scenario.zones.clone();
        let targets = Targets::for_scenario(scenario);
        let mut config = discovery.config(&[], &zones);
        for pool in &mut config.pools {
            *pool = Arc::new(with_arrivals((**pool).clone()));
        }
        let state = State::new(&config, Clock::default());
        let mut bound = Vec::new();
        for zone in &zones {
            let mut list = Vec::new();
            for mut spec in triggers(zone, &targets, &opts.timing, "in-process") {
                if spec.metadata.get("signal").map(String::as_str) == Some("requests_per_second") {
                    // Demand where it arrives: the listener's counter, not the cluster's.
                    spec.metadata
                        .insert("source".into(), ARRIVALS_SOURCE.into());
                    if let Some(up) = opts.up_window {
                        spec.metadata
                            .insert(UP_WINDOW_KEY.into(), format!("{}ms", (up * 1000.0) as u64));
                    }
                }
                let query = TriggerQuery::from_metadata(&spec.metadata).map_err(|e| {
                    BenchError::Trigger {
                        zone: zone.clone(),
                        trigger: spec.name,
                        message: e.to_string(),
                    }
                })?;
                list.push(BoundTrigger {
                    spec,
                    query,
                    resolved: None,
                });
            }
            bound.push(list);
        }
        let hpa = zones
            .iter()
            .map(|_| HpaZone::new(opts.timing.autoscaler(), &opts.timing))
            .collect();
        let zonal = zonal.then(|| Zonal {
            last: None,
            policy: weights::Policy::default(),
            order: zones.clone(),
            pending_since: vec![None; zones.len()],
            unschedulable_after: 60.0,
            period: 5.0,
            next: 0.0,
        });
        Ok(Redbridge {
            state,
            discovery,
            zones,
            model,
            endpoints: Vec::new(),
            by_url: HashMap::new(),
            scratch: Scratch::default(),
            body: String::new(),
            triggers: bound,
            hpa,
            timing: opts.timing.clone(),
            targets,
            zonal,
            changes: 0,
        })
    }

    /// Discovery: when the live pods changed, the pool gets them as targets (windows of pods
    /// that stayed are kept) and the triggers are bound to the new pool.
    fn discover(&mut self, fleet: &Fleet) -> Result<(), BenchError> {
        let pods = fleet.pods();
        if pods.len() == self.endpoints.len()
            && pods.iter().zip(&self.endpoints).all(|(p, e)| *p == e.pod)
        {
            return Ok(());
        }
        self.endpoints = pods
            .iter()
            .map(|p| {
                let path = match p.id.kind {
                    PodKind::Gateway => "stats/prometheus",
                    PodKind::ModelServer => "metrics",
                };
                Endpoint {
                    pod: *p,
                    zone: p.id.zone,
                    url: format!("http://{}.g{}/{path}", pod_name(*p), p.generation),
                }
            })
            .collect();
        self.by_url = self
            .endpoints
            .iter()
            .map(|e| (e.url.clone(), e.pod))
            .collect();
        let current = self.state.pools().first().map(|p| p.pool.clone());
        if let Some(current) = current {
            let pool = self.discovery.pool(&current, &self.endpoints, &self.zones);
            self.state.upsert_pool(Arc::new(with_arrivals(pool)));
        }
        for (zone, list) in self.zones.iter().zip(&mut self.triggers) {
            for t in list.iter_mut() {
                let r = self
                    .state
                    .resolve(NAMESPACE, t.query.clone())
                    .map_err(|e| BenchError::Trigger {
                        zone: zone.clone(),
                        trigger: t.spec.name,
                        message: e.to_string(),
                    })?;
                t.resolved = Some(r);
            }
        }
        Ok(())
    }

    /// One scrape of every target, as the scrape manager does at the pool's 1 s interval.
    fn scrape(&mut self, fleet: &Fleet, now: f64) {
        let Some(pool) = self.state.pools().into_iter().next() else {
            return;
        };
        let retention = pool.pool.window.as_secs_f64();
        let phase = fleet.scenario().rates_at(now);
        for target in &pool.targets {
            let Some(pod) = self.by_url.get(&target.key.url).copied() else {
                continue;
            };
            if !phase.reachable(pod.id.zone) {
                target.record_failure(now, 0.0, "connection refused".into(), retention);
                continue;
            }
            self.body.clear();
            let rendered = match pod.id.kind {
                PodKind::Gateway => fleet.gateway_state(pod).map(|s| {
                    render_gateway(s, CLUSTER, &mut self.body);
                }),
                PodKind::ModelServer => fleet.model_state(pod).map(|s| {
                    render_vllm(s, &self.model, &mut self.body);
                }),
            };
            if rendered.is_none() {
                target.record_failure(now, 0.0, "connection refused".into(), retention);
                continue;
            }
            let Some(extractor) = pool.extractors.get(target.source_index) else {
                continue;
            };
            match extractor.extract(self.body.as_bytes(), &mut self.scratch) {
                Ok((reading, _)) => {
                    target.record_success(now, 0.0, self.body.len(), reading, retention)
                }
                Err(e) => target.record_failure(now, 0.0, e.to_string(), retention),
            }
        }
    }

    /// The trigger values KEDA would read for zone `z` now.
    fn readings(&self, z: usize, now: f64) -> Vec<(Reading, Result<bool, ()>)> {
        self.triggers[z]
            .iter()
            .map(|t| {
                let value = t
                    .resolved
                    .as_ref()
                    .map(|r| self.state.evaluate_at(r, now).map_err(|e| e.to_string()));
                match value {
                    Some(Ok(v)) => (
                        Ok((v, t.spec.metric_type.target(t.query.target))),
                        Ok(v > t.query.activation_target),
                    ),
                    Some(Err(e)) => (Err(e), Err(())),
                    None => (Err("not bound".into()), Err(())),
                }
            })
            .collect()
    }

    /// The ZonalScaledObject controller's evaluation: fullness, weights, spillover agreeing with
    /// them, and warm-up, published to the state that answers KEDA.
    fn evaluate_zones(&mut self, fleet: &mut Fleet, now: f64) {
        let Some(zonal) = self.zonal.as_mut() else {
            return;
        };
        if now + 1e-9 < zonal.next {
            return;
        }
        zonal.next = now + zonal.period;
        let max = self.timing.max_replicas;
        let mut inputs = Vec::with_capacity(self.zones.len());
        let mut starting = Vec::with_capacity(self.zones.len());
        for (z, name) in self.zones.iter().enumerate() {
            let (ready, loading, pending, _) = counts(fleet, z);
            let since = &mut zonal.pending_since[z];
            if pending == 0 {
                *since = None;
            } else {
                since.get_or_insert(now);
            }
            let full = spillover::fullness(
                ready + loading + pending,
                max,
                since.map(|s| now - s),
                zonal.unschedulable_after,
            );
            let demand = self.triggers[z]
                .first()
                .and_then(|t| t.resolved.as_ref())
                .and_then(|r| self.state.evaluate_unadjusted_at(r, now).ok());
            inputs.push(ZoneInput {
                name: name.clone(),
                ready,
                starting: loading,
                max_replicas: max,
                full,
                capacity_per_replica: self.targets.demand,
                demand,
            });
            starting.push(loading);
        }
        let decision = weights::decide(
            &inputs,
            &zonal.order,
            zonal.last.as_ref(),
            now,
            &zonal.policy,
        );
        if decision.changed {
            fleet.set_flows(&decision.weights.flows);
            zonal.last = Some(Written {
                weights: decision.weights.clone(),
                at: now,
            });
        }
        let routed = weights::routed_demand(&decision.weights, &inputs);
        let targets: HashMap<Signal, f64> = self.triggers[0]
            .iter()
            .map(|t| (t.query.signal, t.query.target))
            .collect();
        let adjustments = self
            .zones
            .iter()
            .enumerate()
            .map(|(z, name)| {
                let spilled = routed.get(z).map_or(0.0, |r| r.spilled_in);
                let adj = ZoneAdjustment {
                    ready: inputs[z].ready,
                    starting: starting[z],
                    spilled_in: if spilled > 0.0 {
                        HashMap::from([(Signal::RequestsPerSecond, spilled)])
                    } else {
                        HashMap::new()
                    },
                    targets: targets.clone(),
                };
                (name.clone(), adj)
            })
            .collect();
        self.state
            .set_zone_adjustments(NAMESPACE, POOL, adjustments);
    }
}

impl Control for Redbridge {
    fn control(&mut self, fleet: &mut Fleet, now: f64) -> Result<(), BenchError> {
        self.discover(fleet)?;
        self.scrape(fleet, now);
        self.evaluate_zones(fleet, now);
        for z in 0..self.zones.len() {
            let (ready, _, _, _) = counts(fleet, z);
            let current = fleet.desired(z).unwrap_or(0);
            let due = self.hpa[z].due(now, &self.timing);
            // StreamIsActive pushes `true` as soon as a pushed trigger turns active.
            let pushed = current == 0
                && due.is_none()
                && self
                    .readings(z, now)
                    .iter()
                    .zip(&self.triggers[z])
                    .any(|((_, active), t)| t.spec.push && matches!(active, Ok(true)));
            let decision = if pushed {
                self.hpa[z]
                    .autoscaler
                    .step(now, ready, current, &[], Some(true))
            } else if let Some(poll) = due {
                let answers = self.readings(z, now);
                let activity = if answers.iter().any(|(_, a)| matches!(a, Ok(true))) {
                    Some(true)
                } else if answers.iter().any(|(_, a)| a.is_err()) {
                    None
                } else {
                    Some(false)
                };
                let readings: Vec<Reading> = answers.into_iter().map(|(r, _)| r).collect();
                self.hpa[z].autoscaler.step(
                    now,
                    ready,
                    current,
                    &readings,
                    if poll { activity } else { None },
                )
            } else {
                continue;
            };
            apply(fleet, z, decision.desired, now, &mut self.changes);
        }
        Ok(())
    }

    fn changes(&self) -> u64 {
        self.changes
    }
}

/// What a KPA-style autoscaler reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KpaInput {
    /// Requests in flight at the gateway, held ones included (queue-proxy and activator).
    GatewayConcurrency,
    /// Running plus waiting requests of the Ready model servers; an unreachable zone reads 0.
    ServerConcurrency,
}

struct KpaZone {
    samples: VecDeque<(f64, f64)>,
    panic_since: Option<f64>,
    max_panic_pods: u32,
    zero_since: Option<f64>,
}

/// Knative's KPA decider (`autoscaler.go`), and the AIBrix-like variant of it.
struct Kpa {
    input: KpaInput,
    scrape_interval: f64,
    /// The decider's tick.
    tick: f64,
    next_tick: f64,
    next_scrape: f64,
    /// Concurrency per replica the autoscaler aims at.
    target: f64,
    stable_window: f64,
    panic_window: f64,
    panic_threshold: f64,
    max_scale_down_rate: f64,
    scale_to_zero_grace: f64,
    min_replicas: u32,
    max_replicas: u32,
    zones: Vec<KpaZone>,
    changes: u64,
}

impl Kpa {
    fn zones(fleet: &Fleet) -> Vec<KpaZone> {
        (0..fleet.zones().len())
            .map(|_| KpaZone {
                samples: VecDeque::new(),
                panic_since: None,
                max_panic_pods: 0,
                zero_since: None,
            })
            .collect()
    }

    /// Knative's defaults: concurrency scraped every second, 60 s stable and 6 s panic windows
    /// (10 %), panic at 200 %, 2x scale-down rate, 30 s scale-to-zero grace, decider every 2 s;
    /// `containerConcurrency` the batch size at Knative's 70 % target utilisation.
    fn knative(fleet: &Fleet, opts: &BenchOptions) -> Kpa {
        let batch = f64::from(fleet.scenario().replica.max_sequences.max(1));
        Kpa {
            input: KpaInput::GatewayConcurrency,
            scrape_interval: 1.0,
            tick: 2.0,
            next_tick: 2.0,
            next_scrape: 1.0,
            target: 0.7 * batch,
            stable_window: 60.0,
            panic_window: 6.0,
            panic_threshold: 2.0,
            max_scale_down_rate: 2.0,
            scale_to_zero_grace: 30.0,
            min_replicas: 0,
            max_replicas: opts.timing.max_replicas,
            zones: Kpa::zones(fleet),
            changes: 0,
        }
    }

    /// AIBrix's pod autoscaler with its KPA strategy: the model servers scraped directly every
    /// 10 s, a failed scrape read as 0, the KPA windows; `minReplicas` 1 (nothing to scrape at 0).
    fn aibrix(fleet: &Fleet, opts: &BenchOptions) -> Kpa {
        Kpa {
            input: KpaInput::ServerConcurrency,
            scrape_interval: 10.0,
            tick: 10.0,
            next_tick: 10.0,
            next_scrape: 10.0,
            min_replicas: 1,
            ..Kpa::knative(fleet, opts)
        }
    }

    fn read(&self, fleet: &Fleet, z: usize, now: f64) -> f64 {
        match self.input {
            KpaInput::GatewayConcurrency => fleet
                .pods()
                .iter()
                .filter(|p| p.id.zone == z)
                .filter_map(|p| fleet.gateway_state(*p))
                .map(|g| (g.upstream_rq_active + g.upstream_rq_pending_active) as f64)
                .sum(),
            KpaInput::ServerConcurrency => {
                if !fleet.scenario().rates_at(now).reachable(z) {
                    return 0.0;
                }
                fleet
                    .pods()
                    .iter()
                    .filter(|p| p.id.zone == z)
                    .filter_map(|p| fleet.model_state(*p))
                    .map(|m| f64::from(m.num_requests_running + m.num_requests_waiting))
                    .sum()
            }
        }
    }
}

fn window_mean(samples: &VecDeque<(f64, f64)>, now: f64, window: f64) -> f64 {
    let (sum, n) = samples
        .iter()
        .filter(|(t, _)| *t > now - window)
        .fold((0.0, 0u32), |(s, n), (_, v)| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

impl Control for Kpa {
    fn control(&mut self, fleet: &mut Fleet, now: f64) -> Result<(), BenchError> {
        if now + 1e-9 >= self.next_scrape {
            self.next_scrape += self.scrape_interval;
            for z in 0..self.zones.len() {
                let v = self.read(fleet, z, now);
                let zone = &mut self.zones[z];
                zone.samples.push_back((now, v));
                while zone
                    .samples
                    .front()
                    .is_some_and(|(t, _)| *t <= now - self.stable_window)
                {
                    zone.samples.pop_front();
                }
            }
        }
        if now + 1e-9 < self.next_tick {
            return Ok(());
        }
        self.next_tick += self.tick;
        for z in 0..self.zones.len() {
            let (ready, _, _, _) = counts(fleet, z);
            let current = fleet.desired(z).unwrap_or(0);
            let zone = &mut self.zones[z];
            // The panic window holds at least one scrape.
            let panic_window = self.panic_window.max(self.scrape_interval);
            let stable = window_mean(&zone.samples, now, self.stable_window);
            let panic = window_mean(&zone.samples, now, panic_window);
            let ready_pods = f64::from(ready.max(1));
            let max_up = (1000.0 * ready_pods).ceil();
            let max_down = (f64::from(ready) / self.max_scale_down_rate).floor();
            let want = |v: f64| (v / self.target).ceil().clamp(max_down, max_up) as u32;
            let (desired_stable, desired_panic) = (want(stable), want(panic));
            let over = panic / ready_pods / self.target >= self.panic_threshold;
            if over {
                zone.panic_since = Some(now);
            } else if zone
                .panic_since
                .is_some_and(|t| now > t + self.stable_window)
            {
                zone.panic_since = None;
                zone.max_panic_pods = 0;
            }
            let mut desired = desired_stable;
            if zone.panic_since.is_some() {
                zone.max_panic_pods = zone.max_panic_pods.max(desired_panic).max(current);
                desired = zone.max_panic_pods;
            }
            desired = desired.clamp(self.min_replicas, self.max_replicas.max(self.min_replicas));
            if desired == 0 && current > 0 {
                let since = *zone.zero_since.get_or_insert(now);
                if now - since < self.scale_to_zero_grace {
                    desired = current.min(1);
                }
            } else {
                zone.zero_since = None;
            }
            apply(fleet, z, desired, now, &mut self.changes);
        }
        Ok(())
    }

    fn changes(&self) -> u64 {
        self.changes
    }
}

/// A keda-kaito-like scaler: KEDA asks it every HPA sync, it scrapes the Ready model servers
/// directly and answers the mean request latency over 300 s (the histogram's sum and count
/// increase) as a `Value` metric against half the objective; the HPA may move one replica up or
/// down per 300 s; `minReplicaCount` 1.
struct Kaito {
    timing: Timing,
    zones: Vec<HpaZone>,
    /// Per pod, `(t, sum, count)` of its e2e latency histogram.
    series: BTreeMap<PodInfo, VecDeque<(f64, f64, u64)>>,
    window: f64,
    threshold: f64,
    changes: u64,
}

impl Kaito {
    fn new(fleet: &Fleet, opts: &BenchOptions) -> Kaito {
        let one_per_window = |window: f64| Rules {
            stabilization_window: window,
            policies: vec![Policy {
                kind: PolicyKind::Pods,
                value: 1,
                period: 300.0,
            }],
            select: Select::Max,
        };
        let config = AutoscalerConfig {
            max_replicas: opts.timing.max_replicas,
            tolerance: DEFAULT_TOLERANCE,
            behavior: Behavior {
                scale_up: one_per_window(0.0),
                scale_down: one_per_window(300.0),
            },
            activation: Activation {
                cooldown: opts.timing.cooldown,
                min_replicas: 1,
                idle_replicas: None,
            },
        };
        Kaito {
            timing: opts.timing.clone(),
            zones: (0..fleet.zones().len())
                .map(|_| HpaZone::new(config.clone(), &opts.timing))
                .collect(),
            series: BTreeMap::new(),
            window: 300.0,
            threshold: fleet.scenario().latency_target / 2.0,
            changes: 0,
        }
    }
}

impl Control for Kaito {
    fn control(&mut self, fleet: &mut Fleet, now: f64) -> Result<(), BenchError> {
        let pods = fleet.pods();
        self.series.retain(|p, _| pods.contains(p));
        let phase_reachable: Vec<bool> = {
            let phase = fleet.scenario().rates_at(now);
            (0..fleet.zones().len())
                .map(|z| phase.reachable(z))
                .collect()
        };
        for (z, reachable) in phase_reachable.into_iter().enumerate() {
            let (ready, _, _, _) = counts(fleet, z);
            let current = fleet.desired(z).unwrap_or(0);
            let Some(poll) = self.zones[z].due(now, &self.timing) else {
                continue;
            };
            let reading: Reading = if reachable {
                let (mut sum, mut count) = (0.0, 0u64);
                for pod in pods
                    .iter()
                    .filter(|p| p.id.zone == z && p.id.kind == PodKind::ModelServer)
                {
                    let Some(m) = fleet.model_state(*pod) else {
                        continue;
                    };
                    let h = &m.e2e_request_latency_seconds;
                    let s = self.series.entry(*pod).or_default();
                    s.push_back((now, h.sum(), h.count()));
                    while s.len() > 1 && s.front().is_some_and(|x| x.0 < now - self.window) {
                        s.pop_front();
                    }
                    if let (Some(first), Some(last)) = (s.front(), s.back()) {
                        sum += last.1 - first.1;
                        count += last.2 - first.2;
                    }
                }
                let mean = if count > 0 { sum / count as f64 } else { 0.0 };
                Ok((mean, MetricTarget::Value(self.threshold)))
            } else {
                Err("scrape failed".into())
            };
            let active = poll.then_some(true);
            let d = self.zones[z]
                .autoscaler
                .step(now, ready, current, &[reading], active);
            apply(fleet, z, d.desired, now, &mut self.changes);
        }
        Ok(())
    }

    fn changes(&self) -> u64 {
        self.changes
    }
}

/// The reactive limit: what no policy can beat on share within objective without predicting
/// traffic. Every second it reads the script's true arrival rates (no scrape, no window, no
/// polling, no HPA sync), moves what a zone's Ready replicas cannot carry to other zones' Ready
/// room and no further ([`limit_flows`]), and gives each zone at once the replicas that carry
/// its arrivals plus what is routed to it at the load where a request rarely waits for a batch
/// slot ([`limit_replica_rate`]; not the users' 80 % demand target, at which a zone queues past
/// the objective and a path holding more replicas serves more), and clear its backlog within half
/// the objective at full speed. It never releases a replica the same information would ask for
/// again: a zone's count falls only when its true rate falls (to what the new rate needs), and a
/// zone that has served traffic keeps one replica, since scaling to zero is a bet on the future
/// that only costs requests when traffic returns. Bound by model load, GPUs and max replicas.
struct Reactive {
    /// Requests/s one replica carries with queueing kept off the objective.
    carry_per_replica: f64,
    /// Requests/s a Ready replica may take from another zone's overflow: the demand target.
    /// Room counted at the stricter carry load would leave a zone that cannot grow queueing
    /// past the objective while other zones' replicas run well below it.
    route_per_replica: f64,
    /// Requests/s one replica completes at full speed.
    per_replica: f64,
    /// Seconds a backlog may take to clear.
    clear_within: f64,
    max_replicas: u32,
    /// The flows last given to the gateways.
    flows: Option<Vec<Vec<f64>>>,
    /// Per zone: the true rate the held count was decided at, and that count.
    held: Vec<Option<(f64, u32)>>,
    served: Vec<bool>,
    changes: u64,
}

impl Reactive {
    fn new(fleet: &Fleet, opts: &BenchOptions) -> Reactive {
        let s = fleet.scenario();
        let service = s.model.prompt_tokens / s.replica.prefill_tokens_per_second.max(1.0)
            + s.model.generation_tokens
                / s.replica
                    .sequence_tokens_per_second
                    .min(s.replica.tokens_per_second / f64::from(s.replica.max_sequences.max(1)))
                    .max(1e-9);
        Reactive {
            carry_per_replica: limit_replica_rate(
                s.replica.max_sequences,
                service,
                LIMIT_WAIT_PROBABILITY,
            ),
            route_per_replica: Targets::for_scenario(s).demand,
            per_replica: s.replica.tokens_per_second / s.model.generation_tokens.max(1.0),
            clear_within: (s.latency_target / 2.0).max(1.0),
            max_replicas: opts.timing.max_replicas,
            flows: None,
            held: vec![None; s.zones.len()],
            served: vec![false; s.zones.len()],
            changes: 0,
        }
    }
}

/// Share of requests allowed to wait for a batch slot at the load [`Reactive`] sizes for.
const LIMIT_WAIT_PROBABILITY: f64 = 0.05;

/// Erlang C: probability that an arrival waits in an M/M/c queue with `servers` servers and
/// `load` Erlangs offered (1 at or beyond saturation).
fn erlang_c(servers: u32, load: f64) -> f64 {
    let c = f64::from(servers);
    if servers == 0 || load >= c {
        return 1.0;
    }
    if load <= 0.0 {
        return 0.0;
    }
    // Erlang B by its recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=servers {
        b = load * b / (f64::from(k) + load * b);
    }
    c * b / (c - load * (1.0 - b))
}

/// Requests/s one replica carries while at most `wait_probability` of its requests wait for one
/// of its `slots` batch slots, each request holding a slot `service` seconds: the load where
/// latency stays the service time (within the objective) rather than a utilisation target.
/// M/M/c is pessimistic for the simulation's bounded request lengths, so the limit errs towards
/// more replicas, never fewer.
fn limit_replica_rate(slots: u32, service: f64, wait_probability: f64) -> f64 {
    if slots == 0 || !service.is_finite() || service <= 0.0 {
        return 0.0;
    }
    // Bisection on the offered load: Erlang C rises with it from 0 to 1.
    let (mut lo, mut hi) = (0.0, f64::from(slots));
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if erlang_c(slots, mid) <= wait_probability {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo / service
}

/// Replicas that carry `rate` requests/s at `carry` requests/s each and clear `backlog`
/// requests within `clear_within` seconds at `per_replica` requests/s each.
fn limit_need(carry: f64, per_replica: f64, rate: f64, backlog: u32, clear_within: f64) -> u32 {
    let replicas = |v: f64, each: f64| {
        let n = if each > 0.0 { (v / each).ceil() } else { 0.0 };
        if n.is_finite() && n > 0.0 {
            n.min(f64::from(u32::MAX)) as u32
        } else {
            0
        }
    };
    replicas(rate, carry).max(replicas(
        rate + f64::from(backlog) / clear_within,
        per_replica,
    ))
}

/// Where the limit sends each zone's arrivals, and what each zone is sized for beyond that.
/// `flows[i][j]` is the share of zone `i`'s `demand` served in zone `j`. A zone keeps what its
/// Ready replicas carry (`ready_capacity`); the rest goes, in zone order after it, to other
/// zones' Ready room left after their own demand, and what finds no room stays home. Traffic is
/// never sent to capacity that is still loading nor spread over zones already full: that only
/// makes their requests queue past the objective too (`weights::decide` spreads a full zone's
/// excess by Ready capacity, a gateway's policy and not a bound). What a `full` zone (it cannot
/// grow) still cannot place is pledged to the other zones that can grow, up to their
/// `max_capacity`: they are sized for it and take it as their replicas become Ready.
fn limit_flows(
    ready_capacity: &[f64],
    max_capacity: &[f64],
    full: &[bool],
    demand: &[f64],
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = demand
        .len()
        .min(ready_capacity.len())
        .min(max_capacity.len())
        .min(full.len());
    let mut flows = vec![vec![0.0; n]; n];
    let mut pledged = vec![0.0; n];
    let own = |i: usize| demand[i].max(0.0);
    let mut room: Vec<f64> = (0..n)
        .map(|i| (ready_capacity[i] - own(i)).max(0.0))
        .collect();
    let mut growth: Vec<f64> = (0..n)
        .map(|i| {
            if full[i] {
                0.0
            } else {
                (max_capacity[i] - own(i).max(ready_capacity[i])).max(0.0)
            }
        })
        .collect();
    for i in 0..n {
        let d = own(i);
        if d <= 0.0 {
            flows[i][i] = 1.0;
            continue;
        }
        let mut left = (d - ready_capacity[i].max(0.0)).max(0.0);
        for k in 1..n {
            let j = (i + k) % n;
            let take = left.min(room[j]);
            if take > 0.0 {
                room[j] -= take;
                left -= take;
                flows[i][j] = take / d;
            }
        }
        flows[i][i] = 1.0 - flows[i].iter().sum::<f64>();
        if full[i] {
            for k in 1..n {
                let j = (i + k) % n;
                let take = left.min(growth[j]);
                if take > 0.0 {
                    growth[j] -= take;
                    left -= take;
                    pledged[j] += take;
                }
            }
        }
    }
    (flows, pledged)
}

/// The limit's count for a zone: `need` now, held at the highest need seen since the zone's
/// true rate last fell (`held`: the rate and count decided at); returns the new hold.
fn limit_hold(held: Option<(f64, u32)>, rate: f64, need: u32, current: u32) -> (f64, u32) {
    match held {
        // The same or a higher rate: nothing says a replica it holds is no longer needed.
        Some((at, count)) if rate >= at - 1e-9 => (rate.max(at), count.max(need)),
        // A lower rate: the count is what it needs now.
        Some(_) => (rate, need),
        // The first decision keeps the replicas the fleet starts with.
        None => (rate, need.max(current)),
    }
}

impl Control for Reactive {
    fn control(&mut self, fleet: &mut Fleet, now: f64) -> Result<(), BenchError> {
        let rates: Vec<f64> = fleet.scenario().rates_at(now).rates.to_vec();
        let n = fleet.zones().len();
        let demand: Vec<f64> = (0..n)
            .map(|z| rates.get(z).copied().unwrap_or(0.0))
            .collect();
        let mut ready_capacity = Vec::with_capacity(n);
        let mut max_capacity = Vec::with_capacity(n);
        let mut full = Vec::with_capacity(n);
        let mut queued = Vec::with_capacity(n);
        for z in 0..n {
            let (ready, _, pending, q) = counts(fleet, z);
            let desired = fleet.desired(z).unwrap_or(0);
            ready_capacity.push(f64::from(ready) * self.route_per_replica);
            // A zone with a Pending replica has no GPU for more: it can hold what it has.
            let most = if pending > 0 {
                desired.saturating_sub(pending).max(ready)
            } else {
                self.max_replicas.max(ready)
            };
            max_capacity.push(f64::from(most) * self.route_per_replica);
            full.push(pending > 0 || desired >= self.max_replicas);
            queued.push(q);
        }
        let (flows, pledged) = limit_flows(&ready_capacity, &max_capacity, &full, &demand);
        if self.flows.as_ref() != Some(&flows) {
            fleet.set_flows(&flows);
            self.flows = Some(flows.clone());
        }
        for z in 0..n {
            // What the zone serves: its own arrivals, including what it sends away while its own
            // replicas load (it needs them for its own traffic), plus what it takes in.
            let spilled_in: f64 = (0..n)
                .filter(|&i| i != z)
                .map(|i| demand[i] * flows[i][z])
                .sum();
            let rate = demand[z] + spilled_in + pledged[z];
            let need = limit_need(
                self.carry_per_replica,
                self.per_replica,
                rate,
                queued[z],
                self.clear_within,
            );
            let current = fleet.desired(z).unwrap_or(0);
            let (at, mut want) = limit_hold(self.held[z], rate, need, current);
            self.held[z] = Some((at, want));
            self.served[z] |= rate > 0.0 || queued[z] > 0;
            if self.served[z] {
                want = want.max(1);
            }
            apply(
                fleet,
                z,
                want.min(self.max_replicas),
                now,
                &mut self.changes,
            );
        }
        Ok(())
    }

    fn changes(&self) -> u64 {
        self.changes
    }
}

/// Noise of one rate reading at one steady Poisson rate, in simulated time.
#[derive(Clone, Debug, Serialize)]
pub struct RateNoise {
    /// Requests/s the arrivals are drawn at.
    pub rate: f64,
    /// The reading: `2s`, `10s`, `30s`, or fast up `2s/10s`, `2s/30s`.
    pub window: String,
    /// Mean reading over the true rate.
    pub mean_ratio: f64,
    /// Coefficient of variation: standard deviation over mean of the readings.
    pub cv: f64,
}

/// The readings [`rate_noise`] compares: (name, window, upWindow).
const NOISE_READINGS: [(&str, f64, Option<f64>); 5] = [
    ("2s", 2.0, None),
    ("10s", 10.0, None),
    ("30s", 30.0, None),
    ("2s/10s", 10.0, Some(2.0)),
    ("2s/30s", 30.0, Some(2.0)),
];

/// Noise of `requests_per_second` at steady Poisson rates: one Envoy target scraped every second
/// for `seconds` of simulated time per rate, read once a second through the production math
/// ([`signals::evaluate`] and [`signals::evaluate_fast_up`]) over each window of
/// [`NOISE_READINGS`], after a warm-up of one long window. Deterministic for a seed.
pub fn rate_noise(rates: &[f64], seconds: f64, seed: u64) -> Vec<RateNoise> {
    use crate::model::Role;
    use crate::signals::{self, Inputs, Rules as SignalRules, TargetView};
    use crate::window::Scrape;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let Some(profile) = crate::profiles::builtin("envoy") else {
        return Vec::new();
    };
    let Some((requests, _)) = profile.input(Role::Requests) else {
        return Vec::new();
    };
    let inputs = profile.inputs.len();
    let mut out = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        let mut next = 0.0;
        let mut total = 0u64;
        let mut samples: Vec<Scrape> = Vec::new();
        let mut readings = vec![Vec::new(); NOISE_READINGS.len()];
        let warm_up = 30.0;
        let mut t = 0.0;
        while t <= seconds + warm_up {
            while next <= t {
                total += 1;
                // Exponential gaps: a Poisson process at `rate`.
                next += -(1.0 - rng.random::<f64>()).ln() / rate.max(1e-9);
            }
            let mut reading = vec![crate::extract::Value::Absent; inputs];
            reading[requests] = crate::extract::Value::Scalar(total as f64);
            samples.push(Scrape {
                at: t,
                reading: reading.into(),
            });
            // The pool keeps one long window (and the scrape before it).
            let keep = samples.partition_point(|s| s.at < t - 31.0);
            samples.drain(..keep.saturating_sub(1));
            if t >= warm_up {
                let views = [TargetView {
                    last_success: Some(t),
                    samples: &samples,
                }];
                for (k, (_, window, up)) in NOISE_READINGS.iter().enumerate() {
                    let rules = SignalRules {
                        window: *window,
                        stale_after: 3.0,
                        min_target_ratio: 0.5,
                    };
                    let inputs = Inputs::Scraped {
                        rules: &rules,
                        now: t,
                        targets: &views,
                    };
                    let v = match up {
                        Some(up) => signals::evaluate_fast_up(
                            &profile,
                            Signal::RequestsPerSecond,
                            None,
                            &inputs,
                            *up,
                        ),
                        None => {
                            signals::evaluate(&profile, Signal::RequestsPerSecond, None, &inputs)
                        }
                    };
                    if let Ok(v) = v {
                        readings[k].push(v);
                    }
                }
            }
            t += 1.0;
        }
        for ((name, _, _), values) in NOISE_READINGS.iter().zip(&readings) {
            let n = values.len().max(1) as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            out.push(RateNoise {
                rate,
                window: (*name).to_string(),
                mean_ratio: mean / rate,
                cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
            });
        }
    }
    out
}

/// [`rate_noise`] as a table: one row per rate, the coefficient of variation of each reading
/// (and, in brackets, its mean over the true rate).
pub fn noise_table(noise: &[RateNoise]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("requests_per_second at a steady Poisson rate, 1 s scrapes: coefficient of variation (mean / true rate)\n");
    let _ = write!(out, "  {:>8}", "req/s");
    for (name, _, _) in NOISE_READINGS {
        let _ = write!(out, " {:>14}", name);
    }
    out.push('\n');
    let mut rates: Vec<f64> = noise.iter().map(|n| n.rate).collect();
    rates.dedup();
    for rate in rates {
        let _ = write!(out, "  {rate:>8}");
        for (name, _, _) in NOISE_READINGS {
            match noise.iter().find(|n| n.rate == rate && n.window == name) {
                Some(n) => {
                    let _ = write!(out, " {:>6.2} ({:.2})", n.cv, n.mean_ratio);
                }
                None => {
                    let _ = write!(out, " {:>14}", "-");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// One goal as checked on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub scenario: String,
    pub goal: String,
    pub met: bool,
    pub detail: String,
}

fn pct(v: Option<f64>) -> f64 {
    v.unwrap_or(0.0) * 100.0
}

/// The benchmark's goals for the ZonalScaledObject path on one scenario: within 5 points of the
/// reactive limit's share within objective at no more than 1.15 times its GPU-minutes, and ahead
/// of every peer on share at no more GPU-minutes than that peer.
pub fn goals(r: &ScenarioResult) -> Vec<Goal> {
    let mut out = Vec::new();
    let Some(zso) = r.path(PathKind::RedbridgeZonal) else {
        return out;
    };
    let share = pct(zso.total.within_objective);
    if let Some(limit) = r.path(PathKind::Reactive) {
        let lshare = pct(limit.total.within_objective);
        let ratio = if limit.total.gpu_minutes > 0.0 {
            zso.total.gpu_minutes / limit.total.gpu_minutes
        } else {
            f64::INFINITY
        };
        out.push(Goal {
            scenario: r.scenario.clone(),
            goal: "near the reactive limit".into(),
            met: share >= lshare - 5.0 && ratio <= 1.15,
            detail: format!(
                "{share:.1} % vs {lshare:.1} % within objective ({:+.1} points), {ratio:.2}x its GPU-minutes",
                share - lshare
            ),
        });
    }
    for peer in r.paths.iter().filter(|p| p.path.is_peer()) {
        let pshare = pct(peer.total.within_objective);
        out.push(Goal {
            scenario: r.scenario.clone(),
            goal: format!("ahead of {}", peer.name),
            met: share > pshare && zso.total.gpu_minutes <= peer.total.gpu_minutes,
            detail: format!(
                "{share:.1} % vs {pshare:.1} % at {:.0} vs {:.0} GPU-minutes",
                zso.total.gpu_minutes, peer.total.gpu_minutes
            ),
        });
    }
    out
}

/// Share points by which a path may exceed the reactive limit before the benchmark itself is
/// wrong: arrivals are drawn per path (the same seed, consumed differently), so shares differ by
/// that noise alone.
pub const LIMIT_SLACK: f64 = 0.01;

/// The paths whose share within objective beats the reactive limit's by more than
/// [`LIMIT_SLACK`]: none, or the limit is not the ceiling it stands for.
pub fn beating_the_limit(r: &ScenarioResult) -> Vec<&PathResult> {
    let Some(limit) = r
        .path(PathKind::Reactive)
        .and_then(|l| l.total.within_objective)
    else {
        return Vec::new();
    };
    r.paths
        .iter()
        .filter(|p| p.path != PathKind::Reactive)
        .filter(|p| {
            p.total
                .within_objective
                .is_some_and(|s| s > limit + LIMIT_SLACK)
        })
        .collect()
}

/// Runs `scenarios` one after another, printing each table and its goals to `out` as it ends,
/// then a summary of the goals; writes every result as JSON to `json` when given.
pub fn run_and_report(
    scenarios: &[(String, Scenario)],
    opts: &BenchOptions,
    json: Option<&std::path::Path>,
    out: &mut dyn std::io::Write,
) -> Result<Vec<ScenarioResult>, BenchError> {
    let mut results = Vec::new();
    let mut all_goals = Vec::new();
    for (name, scenario) in scenarios {
        let started = std::time::Instant::now();
        let r = run_scenario(name, scenario, opts)?;
        let goals = goals(&r);
        let mut text = table(&r);
        for g in &goals {
            text.push_str(&format!(
                "  goal {:<28} {:<4} {}\n",
                g.goal,
                if g.met { "met" } else { "MISS" },
                g.detail
            ));
        }
        for p in beating_the_limit(&r) {
            text.push_str(&format!(
                "  sanity: {} beats the reactive limit ({:.1} % vs {:.1} %)\n",
                p.name,
                pct(p.total.within_objective),
                pct(r
                    .path(PathKind::Reactive)
                    .and_then(|l| l.total.within_objective))
            ));
        }
        text.push_str(&format!(
            "  ({:.1} s of computer time for {:.0} simulated minutes x {} paths)\n\n",
            started.elapsed().as_secs_f64(),
            r.simulated_seconds / 60.0,
            r.paths.len()
        ));
        // The report is best effort: a closed stdout must not lose the JSON.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        all_goals.extend(goals);
        results.push(r);
    }
    let met = all_goals.iter().filter(|g| g.met).count();
    let _ = writeln!(out, "goals met: {met} of {}", all_goals.len());
    for g in all_goals.iter().filter(|g| !g.met) {
        let _ = writeln!(out, "  missed: {} / {}: {}", g.scenario, g.goal, g.detail);
    }
    if let Some(path) = json {
        #[derive(Serialize)]
        struct Report<'a> {
            seed: u64,
            results: &'a [ScenarioResult],
            goals: &'a [Goal],
        }
        let report = Report {
            seed: opts.seed,
            results: &results,
            goals: &all_goals,
        };
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| BenchError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(results)
}

/// The scenario's table, one row per path.
pub fn table(r: &ScenarioResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({:.0} simulated minutes, objective {} s)",
        r.scenario,
        r.simulated_seconds / 60.0,
        r.latency_objective
    );
    let _ = writeln!(
        out,
        "  {:<16} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "path", "within", "p95 s", "GPU-min", "failed", "changes", "moved"
    );
    for p in &r.paths {
        let p95 = p
            .p95_latency
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "  {:<16} {:>8.1}% {:>8} {:>9.0} {:>8} {:>8} {:>8}",
            p.name,
            pct(p.total.within_objective),
            p95,
            p.total.gpu_minutes,
            p.total.failed,
            p.replica_changes,
            p.moved_requests
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> Scenario {
        let text = r#"
zones: [a, b]
replica: { model_load: 60s, initial: 1 }
gpu_capacity: { a: 6, b: 6 }
error_rate: 0
phases:
  - { name: steady, duration: 2m, rates: { a: 3, b: 2 } }
  - { name: spike, duration: 4m, rates: { a: 12, b: 2 } }
  - { name: after, duration: 2m, rates: { a: 3, b: 2 } }
"#;
        Scenario::from_yaml(text).expect("script")
    }

    #[test]
    fn short_windows_are_noisier_and_fast_up_reads_high_at_low_rates() {
        let noise = rate_noise(&[0.5, 20.0], 1200.0, 7);
        let get = |rate: f64, w: &str| {
            noise
                .iter()
                .find(|n| n.rate == rate && n.window == w)
                .cloned()
                .expect("reading")
        };
        for rate in [0.5, 20.0] {
            assert!(get(rate, "2s").cv > get(rate, "10s").cv);
            assert!(get(rate, "10s").cv > get(rate, "30s").cv);
            // Plain windows are unbiased; the larger of two readings is not.
            assert!((get(rate, "30s").mean_ratio - 1.0).abs() < 0.1);
            assert!(get(rate, "2s/30s").mean_ratio > get(rate, "30s").mean_ratio);
        }
        // Poisson: a 2 s window at 0.5/s holds one request on average, CV about 1.
        assert!(get(0.5, "2s").cv > 0.7, "{:?}", get(0.5, "2s"));
        assert!(get(20.0, "2s").cv < 0.3, "{:?}", get(20.0, "2s"));
        assert!(noise_table(&noise).contains("2s/30s"));
    }

    #[test]
    fn the_limit_holds_replicas_while_the_rate_holds() {
        // Same rate: a backlog that cleared does not release the replicas it asked for.
        assert_eq!(limit_hold(Some((5.0, 4)), 5.0, 2, 4), (5.0, 4));
        // Higher rate or backlog: up at once.
        assert_eq!(limit_hold(Some((5.0, 4)), 6.0, 6, 4), (6.0, 6));
        // A lower rate: down to what it needs.
        assert_eq!(limit_hold(Some((5.0, 4)), 2.0, 1, 4), (2.0, 1));
        // The replicas the fleet starts with are kept until the rate falls.
        assert_eq!(limit_hold(None, 1.0, 1, 3), (1.0, 3));
        assert_eq!(limit_need(2.0, 4.0, 6.0, 0, 2.5), 3);
        // 40 queued to clear in 2.5 s at 4/s each, on top of 6/s: (6 + 16) / 4.
        assert_eq!(limit_need(2.0, 4.0, 6.0, 40, 2.5), 6);
        assert_eq!(limit_need(2.0, 4.0, 0.0, 0, 2.5), 0);
    }

    #[test]
    fn the_limit_routes_only_into_ready_room() {
        // zone-a has 1 Ready replica (room 2/s) for 6/s, zone-b 1 for 4/s, zone-c 2 for 3/s:
        // only zone-c has room now (1/s), and zone-b's overload is not spread to it first
        // because zone-a comes before it.
        let (flows, pledged) = limit_flows(
            &[2.0, 2.0, 4.0],
            &[20.0, 20.0, 20.0],
            &[false; 3],
            &[6.0, 4.0, 3.0],
        );
        assert!((flows[0][2] - 1.0 / 6.0).abs() < 1e-12, "{flows:?}");
        assert_eq!(flows[0][1], 0.0, "zone-b is over its Ready capacity");
        assert!((flows[0][0] - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(flows[1], vec![0.0, 1.0, 0.0], "no room left for zone-b");
        assert_eq!(flows[2], vec![0.0, 0.0, 1.0]);
        // Nobody is full: nothing pledged, the zones grow for their own traffic.
        assert_eq!(pledged, vec![0.0; 3]);
        // A full zone (no GPU for more) pledges what finds no room to zones that can grow, up
        // to their maximum; the traffic moves only once their replicas are Ready.
        let (flows, pledged) = limit_flows(
            &[2.0, 4.0, 4.0],
            &[2.0, 6.0, 20.0],
            &[true, false, false],
            &[10.0, 3.0, 3.0],
        );
        assert!((flows[0][1] - 0.1).abs() < 1e-12 && (flows[0][2] - 0.1).abs() < 1e-12);
        assert!((flows[0][0] - 0.8).abs() < 1e-12);
        // 8/s over its Ready capacity, 2 of it routed now: zone-b grows by 2/s (its maximum
        // 6/s less its Ready 4/s), zone-c takes the other 4/s.
        assert_eq!(pledged, vec![0.0, 2.0, 4.0]);
        // Zones without demand keep their (empty) traffic home.
        let (flows, _) = limit_flows(&[0.0, 2.0], &[20.0, 20.0], &[false; 2], &[0.0, 1.0]);
        assert_eq!(flows, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }

    #[test]
    fn the_limit_sizes_where_requests_rarely_wait_for_a_slot() {
        // Erlang C against known values: one server is M/M/1 (waits with probability rho).
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        // Two servers at 1 Erlang: 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(erlang_c(8, 8.0), 1.0);
        assert_eq!(erlang_c(8, 0.0), 0.0);
        // The library's replica: 8 slots, 300 prompt tokens at 8000/s plus 150 generated at
        // 75/s (a full batch) hold a slot 2.04 s; 5 % waiting is about 1.9 requests/s, well
        // under the 3.2/s demand target, so zone-a's 6/s gets 4 replicas, not 2.
        let service = 300.0 / 8000.0 + 150.0 / 75.0;
        let rate = limit_replica_rate(8, service, 0.05);
        assert!((erlang_c(8, rate * service) - 0.05).abs() < 1e-6, "{rate}");
        assert!(rate > 1.8 && rate < 2.0, "{rate}");
        assert_eq!(limit_need(rate, 4.0, 6.0, 0, 2.5), 4);
        // Fewer waits asked for: a lower load per replica.
        assert!(limit_replica_rate(8, service, 0.01) < rate);
        assert_eq!(limit_replica_rate(0, service, 0.05), 0.0);
        assert_eq!(limit_replica_rate(8, 0.0, 0.05), 0.0);
    }

    #[test]
    fn library_parses() {
        let lib = library().expect("library");
        assert_eq!(lib.len(), LIBRARY.len());
        for (name, s) in &lib {
            assert!(s.total_duration() > 0.0, "{name}");
        }
    }

    #[test]
    fn same_seed_same_figures_and_the_limit_leads() {
        let opts = BenchOptions {
            dt: 0.5,
            ..BenchOptions::default()
        };
        let s = short();
        let a = run_scenario("short", &s, &opts).expect("run");
        let b = run_scenario("short", &s, &opts).expect("run");
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            serde_json::to_string(&b).expect("json"),
            "deterministic"
        );
        let limit = a.path(PathKind::Reactive).expect("limit");
        let lshare = limit.total.within_objective.expect("traffic");
        for p in &a.paths {
            assert!(p.total.arrivals > 2000, "{}: {:?}", p.name, p.total);
            let share = p.total.within_objective.expect("traffic");
            assert!(
                share <= lshare + 0.01,
                "{} beats the limit: {share} > {lshare}",
                p.name
            );
        }
        assert!(table(&a).contains("redbridge-zso"));
        assert!(!goals(&a).is_empty());
    }
}
