//! The KEDA and HPA emulator: per zone one ScaledObject whose triggers call redbridge over real
//! gRPC the way KEDA does, and an [`Autoscaler`] applying the HPA rules to the zone's simulated
//! Deployment.
//!
//! What it does as KEDA (v2.x) does:
//! - every evaluation, per trigger: `GetMetricSpec`, then `GetMetrics` for the spec's metric, then
//!   `IsActive`; the HPA target comes from the spec, the metric type from the trigger;
//! - `external-push` triggers also hold a `StreamIsActive` stream: a pushed `true` activates the
//!   zone at once, a broken stream reconnects after 2 s, doubling up to 60 s;
//! - activity: any trigger active is active; otherwise any trigger failing means KEDA decides
//!   nothing (no scale to zero while blind); otherwise inactive;
//! - a failed `GetMetrics` is an error reading, so the HPA holds instead of reading zero.
//!
//! The zones are one ZonalScaledObject: [`ZonalController`] plays its controller, feeding the
//! simulation's Pods and redbridge's unadjusted demand to the functions the Kubernetes controller
//! uses ([`spillover::fullness`], [`weights::decide`], [`weights::routed_demand`]) and publishing
//! the result as the controller does: per-zone adjustments in redbridge's [`State`] (which applies
//! spillover and warm-up through [`spillover::adjust`] to every value KEDA reads) and the zone
//! traffic weights to the simulated gateways ([`Fleet::set_flows`](super::sim::Fleet::set_flows)).
//!
//! Demo time-scale ([`Timing`]): the controllers run faster than in a cluster so the story fits in
//! two minutes. The same settings drive the Prometheus comparison, so only the data path differs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;
use tracing::debug;

use super::fleet::{lock, SharedFleet, GATEWAY_SOURCE, NAMESPACE, POOL, SERVER_SOURCE};
use super::scenario::Scenario;
use crate::config::trigger::{TriggerError, TriggerQuery};
use crate::hpa::{
    Activation, Autoscaler, AutoscalerConfig, Behavior, MetricTarget, Reading, Rules,
    DEFAULT_TOLERANCE,
};
use crate::model::{Clock, Signal};
use crate::proto::external_scaler_client::ExternalScalerClient;
use crate::proto::{GetMetricsRequest, ScaledObjectRef};
use crate::state::State;
use crate::zonal::spillover::{self, ZoneAdjustment};
use crate::zonal::weights::{self, Weights, Written, ZoneInput};

/// Controller settings both paths share, in seconds. Kubernetes' and KEDA's defaults are in
/// brackets; the demo shortens them so a two-minute script shows every transition.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// How often the HPA evaluates its metrics [15 s].
    pub hpa_sync: f64,
    /// KEDA's `pollingInterval` for the redbridge ScaledObjects [30 s]; activation is pushed anyway.
    pub polling: f64,
    /// KEDA's `cooldownPeriod` before scaling an inactive zone to zero [300 s].
    pub cooldown: f64,
    /// The HPA's scale-down stabilisation window [300 s].
    pub scale_down_window: f64,
    /// The `window` of the demand trigger (the pool keeps 30 s). Shorter follows a spike sooner;
    /// but arrivals are Poisson, so at 3 req/s a 10 s window's rate is off by 18 % (one sigma),
    /// now and then enough to cross the HPA's 10 % tolerance and hold an extra replica for the
    /// scale-down window. 20 s halves the noise but takes twice as long to see a spike in full.
    pub signal_window: f64,
    /// `maxReplicaCount` per zone.
    pub max_replicas: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            hpa_sync: 2.0,
            polling: 2.0,
            cooldown: 15.0,
            scale_down_window: 30.0,
            signal_window: 10.0,
            max_replicas: 10,
        }
    }
}

impl Timing {
    /// The default timing, shortened in proportion for a script shorter than two minutes so the
    /// quiet phase still reaches zero (floors keep two scrapes per window).
    pub fn for_duration(seconds: f64) -> Timing {
        let f = if seconds.is_finite() && seconds > 0.0 {
            (seconds / 120.0).clamp(0.25, 1.0)
        } else {
            1.0
        };
        let d = Timing::default();
        Timing {
            hpa_sync: (d.hpa_sync * f).max(1.0),
            polling: (d.polling * f).max(1.0),
            cooldown: (d.cooldown * f).max(4.0),
            scale_down_window: (d.scale_down_window * f).max(6.0),
            signal_window: (d.signal_window * f).max(4.0).round(),
            max_replicas: d.max_replicas,
        }
    }

    /// The ZonalScaledObject controller's settings on this time-scale. In a cluster (HPA every
    /// 15 s) the controller evaluates every 5 s, calls a zone full after its Pods waited 1-2
    /// minutes for a GPU and changes weights at most every 30 s; here each is a fraction of the
    /// HPA's period, so a zone out of GPUs is routed around within the length of a demo phase.
    pub fn zonal(&self) -> ZonalSettings {
        ZonalSettings {
            period: (self.hpa_sync / 2.0).max(0.5),
            unschedulable_after: 2.0 * self.hpa_sync,
            policy: weights::Policy {
                min_interval: self.hpa_sync,
                ..weights::Policy::default()
            },
        }
    }

    /// The HPA and KEDA settings of every zone's ScaledObject: Kubernetes' scale-up policies,
    /// the shortened scale-down window and cooldown, minimum 0 (scale to zero).
    pub fn autoscaler(&self) -> AutoscalerConfig {
        AutoscalerConfig {
            max_replicas: self.max_replicas,
            tolerance: DEFAULT_TOLERANCE,
            behavior: Behavior {
                scale_up: Rules::default_scale_up(),
                scale_down: Rules {
                    stabilization_window: self.scale_down_window,
                    ..Rules::default_scale_down()
                },
            },
            activation: Activation {
                cooldown: self.cooldown,
                min_replicas: 0,
                idle_replicas: None,
            },
        }
    }
}

/// How the ZonalScaledObject controller runs, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct ZonalSettings {
    /// How often it evaluates the zones.
    pub period: f64,
    /// `spillover.unschedulableAfter`: how long Pods wait for a GPU before their zone is full.
    pub unschedulable_after: f64,
    /// `spec.routing`'s limits on weight changes.
    pub policy: weights::Policy,
}

/// How the HPA reads a trigger's value (`metricType` in the ScaledObject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Additive demand shared by the replicas.
    AverageValue,
    /// A per-replica quality compared to the target as is.
    Value,
}

impl MetricType {
    pub fn target(self, target: f64) -> MetricTarget {
        match self {
            MetricType::AverageValue => MetricTarget::AverageValue(target),
            MetricType::Value => MetricTarget::Value(target),
        }
    }
}

/// Targets an operator would set after load-testing one replica of the scenario's model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Targets {
    /// Requests/s per replica: 80 % of what one replica sustains.
    pub demand: f64,
    /// Requests held at the gateway (no Ready replica) per replica: what one clears in ~6 s.
    pub held: f64,
    /// Mean KV-cache use per replica: a batch about full.
    pub kv_cache: f64,
}

impl Targets {
    pub fn for_scenario(s: &Scenario) -> Targets {
        let per_replica = s.replica.tokens_per_second / s.model.generation_tokens.max(1.0);
        Targets {
            demand: ((0.8 * per_replica * 10.0).round() / 10.0).max(0.1),
            held: (6.0 * per_replica).round().max(1.0),
            kv_cache: 0.8,
        }
    }

    /// Replicas a zone needs for `rate` requests/s at the demand target.
    pub fn replicas_for(&self, rate: f64) -> u32 {
        let n = (rate / self.demand).ceil();
        if n.is_finite() && n > 0.0 {
            n.min(f64::from(u32::MAX)) as u32
        } else {
            0
        }
    }
}

/// One trigger of a zone's ScaledObject.
#[derive(Clone, Debug)]
pub struct TriggerSpec {
    /// Short name for the view and the HPA's reasons (`m0`, `m1`... follow this order).
    pub name: &'static str,
    /// `external-push` (holds a `StreamIsActive` stream) rather than `external`.
    pub push: bool,
    pub metric_type: MetricType,
    /// The trigger's `metadata`, forwarded by KEDA as `scalerMetadata`.
    pub metadata: HashMap<String, String>,
}

/// The zone's triggers, all answered by redbridge:
/// - `demand`: requests/s at the gateway (AverageValue), pushed; active above 0.1/s. Demand, not
///   its symptoms: a backlog stays on the replica that queued it, so latency or queue triggers
///   keep asking for replicas that cannot help (and `Value` on latency compounds as `ready` grows);
/// - `held`: requests the gateway holds while the zone has no Ready replica (AverageValue),
///   pushed; the only signal a zone at zero still shows, so it is what wakes it;
/// - `kv`: the model servers' mean KV-cache use (Value): bounded, so it adds a replica when
///   batches are full without running away.
pub fn triggers(zone: &str, targets: &Targets, timing: &Timing, scaler: &str) -> Vec<TriggerSpec> {
    let window = format!("{}ms", (timing.signal_window * 1000.0).round() as u64);
    let meta = |pairs: &[(&str, String)]| -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        m.insert("scalerAddress".into(), scaler.to_string());
        m.insert("pool".into(), POOL.into());
        m.insert("zone".into(), zone.to_string());
        m
    };
    vec![
        TriggerSpec {
            name: "demand",
            push: true,
            metric_type: MetricType::AverageValue,
            metadata: meta(&[
                ("source", GATEWAY_SOURCE.into()),
                ("signal", "requests_per_second".into()),
                ("window", window),
                ("target", targets.demand.to_string()),
                ("activationTarget", "0.1".into()),
            ]),
        },
        TriggerSpec {
            name: "held",
            push: true,
            metric_type: MetricType::AverageValue,
            metadata: meta(&[
                ("source", GATEWAY_SOURCE.into()),
                ("signal", "queue_depth".into()),
                ("target", targets.held.to_string()),
                ("activationTarget", "0".into()),
            ]),
        },
        TriggerSpec {
            name: "kv",
            push: false,
            metric_type: MetricType::Value,
            metadata: meta(&[
                ("source", SERVER_SOURCE.into()),
                ("signal", "kv_cache_utilization".into()),
                ("target", targets.kv_cache.to_string()),
            ]),
        },
    ]
}

/// One HPA evaluation or KEDA decision, for the report and the tests.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Demo seconds.
    pub t: f64,
    /// Replicas before (the Deployment's `spec.replicas`) and Ready.
    pub current: u32,
    pub ready: u32,
    pub desired: u32,
    /// Per trigger, the value read or `None` when it failed.
    pub values: Vec<Option<f64>>,
    /// What KEDA made of `IsActive` when it polled; `None` when it did not poll or could not tell.
    pub active: Option<bool>,
    /// A pushed activation rather than a periodic evaluation.
    pub pushed: bool,
    /// The autoscaler's reason (`keda: ...` or `hpa: ...`).
    pub reason: String,
    /// The first error, when a reading failed.
    pub error: Option<String>,
}

impl Evaluation {
    /// Every reading failed: the controller was blind.
    pub fn blind(&self) -> bool {
        !self.pushed && !self.values.is_empty() && self.values.iter().all(Option::is_none)
    }
}

/// What the view shows of a zone's controller.
#[derive(Clone, Debug, Default)]
pub struct ZoneStatus {
    pub values: Vec<Option<f64>>,
    pub blind: bool,
    pub last_change: Option<(f64, String)>,
    /// The zone's share of all requests under the weights in place (`status.zones[].weight`).
    pub weight: Option<f64>,
    /// Of the requests arriving in the zone, the share other zones serve.
    pub moved_out: Option<f64>,
    /// The last change of the zone traffic weights and its reason (the same in every zone).
    pub weight_change: Option<(f64, String)>,
}

/// Shared with the view, per zone.
pub type Statuses = Arc<Mutex<Vec<ZoneStatus>>>;

/// Everything one zone's controller needs.
pub struct ZoneController {
    pub zone: String,
    pub zone_index: usize,
    pub triggers: Vec<TriggerSpec>,
    pub autoscaler: Autoscaler,
    pub timing: Timing,
    pub client: ExternalScalerClient<Channel>,
    pub fleet: SharedFleet,
    pub clock: Clock,
    pub statuses: Statuses,
}

/// A pushed `true` from one of the zone's streams.
#[derive(Debug)]
struct Push {
    trigger: usize,
}

impl ZoneController {
    fn object_ref(&self, trigger: &TriggerSpec) -> ScaledObjectRef {
        ScaledObjectRef {
            name: format!("{POOL}-{}", self.zone),
            namespace: NAMESPACE.into(),
            scaler_metadata: trigger.metadata.clone(),
        }
    }

    /// Runs until `shutdown`, returning every evaluation made.
    pub async fn run(mut self, shutdown: CancellationToken) -> Vec<Evaluation> {
        let (tx, mut pushes) = mpsc::channel(16);
        let mut streams = tokio::task::JoinSet::new();
        for (i, t) in self.triggers.iter().enumerate().filter(|(_, t)| t.push) {
            streams.spawn(watch_stream(
                self.client.clone(),
                self.object_ref(t),
                i,
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        let mut log = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(self.timing.hpa_sync));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_poll = 0.0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(push) = pushes.recv() => {
                    let e = self.apply(&[], Some(true), true);
                    debug!(zone = %self.zone, trigger = self.triggers[push.trigger].name, reason = %e.reason, "Activation pushed");
                    log.push(e);
                }
                _ = ticks.tick() => {
                    let (readings, activity) = self.query().await;
                    let poll = self.clock.now() >= next_poll;
                    if poll {
                        next_poll = self.clock.now() + self.timing.polling;
                    }
                    log.push(self.apply(&readings, if poll { activity } else { None }, false));
                }
            }
        }
        streams.abort_all();
        while streams.join_next().await.is_some() {}
        log
    }

    /// One KEDA/HPA query round over every trigger: readings for the HPA and KEDA's activity.
    async fn query(&mut self) -> (Vec<Reading>, Option<bool>) {
        let mut readings = Vec::with_capacity(self.triggers.len());
        let mut any_active = false;
        let mut any_error = false;
        for i in 0..self.triggers.len() {
            let trigger = &self.triggers[i];
            let so = self.object_ref(trigger);
            let metric_type = trigger.metric_type;
            let (reading, active) = query_trigger(&mut self.client, so, metric_type).await;
            match active {
                Ok(true) => any_active = true,
                Ok(false) => {}
                Err(_) => any_error = true,
            }
            readings.push(reading);
        }
        let activity = if any_active {
            Some(true)
        } else if any_error {
            None
        } else {
            Some(false)
        };
        (readings, activity)
    }

    /// The HPA's reasons number metrics (`m0=3`); name them after the triggers (`demand=3`).
    fn name_metrics(&self, reason: String) -> String {
        self.triggers.iter().enumerate().fold(reason, |r, (i, t)| {
            r.replace(&format!(" m{i}="), &format!(" {}=", t.name))
        })
    }

    /// Runs the autoscaler on the zone's current counts and applies its decision.
    fn apply(&mut self, readings: &[Reading], active: Option<bool>, pushed: bool) -> Evaluation {
        let now = self.clock.now();
        let mut fleet = lock(&self.fleet);
        let view = fleet.zone_view(self.zone_index, 1.0);
        let (current, ready) = view.map_or((0, 0), |v| (v.desired, v.ready));
        let decision = self.autoscaler.step(now, ready, current, readings, active);
        if decision.desired != current {
            // The zone exists: it came from the fleet's own list.
            let _ = fleet.set_desired(&self.zone, decision.desired, now);
        }
        drop(fleet);
        let values: Vec<Option<f64>> = readings
            .iter()
            .map(|r| r.as_ref().ok().map(|(v, _)| *v))
            .collect();
        let error = readings.iter().find_map(|r| r.as_ref().err().cloned());
        let e = Evaluation {
            t: now,
            current,
            ready,
            desired: decision.desired,
            values,
            active,
            pushed,
            reason: self.name_metrics(decision.reason),
            error,
        };
        let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = statuses.get_mut(self.zone_index) {
            if !pushed {
                s.values.clone_from(&e.values);
                s.blind = e.blind();
            }
            if e.desired != e.current {
                s.last_change = Some((now, e.reason.clone()));
            }
        }
        e
    }
}

/// A change of the zone traffic weights, as the controller's Event records it.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightChange {
    /// Demo seconds.
    pub t: f64,
    pub weights: Weights,
    pub reason: String,
}

/// The ZonalScaledObject controller over the demo's zones: every [`ZonalSettings::period`] it
/// reads each zone's Pods (Ready, loading, waiting for a GPU) from the simulation, as discovery
/// reads them from the API server, and each zone's unadjusted demand from redbridge, then:
/// - decides the zone traffic weights ([`weights::decide`]) and sets them on the gateways;
/// - publishes per zone the Ready and starting replicas (warm-up) and the demand routed to it from
///   other zones ([`weights::routed_demand`], so spillover and routing agree) as the
///   [`ZoneAdjustment`]s redbridge applies to every value KEDA reads.
pub struct ZonalController {
    zones: Vec<String>,
    /// redbridge's state: the same one its gRPC server answers from.
    state: Arc<State>,
    /// Per zone, the query of its demand trigger (requests/s at the gateway).
    demand: Vec<TriggerQuery>,
    /// The CR's target per signal.
    targets: HashMap<Signal, f64>,
    /// The demand trigger's signal: what routed demand adds to.
    demand_signal: Signal,
    capacity_per_replica: f64,
    max_replicas: u32,
    settings: ZonalSettings,
    fleet: SharedFleet,
    clock: Clock,
    statuses: Statuses,
    last: Option<Written>,
    /// Per zone, since when some Pod has waited for a GPU (demo seconds).
    pending_since: Vec<Option<f64>>,
}

impl ZonalController {
    /// The controller of `zones`, whose ScaledObjects have `triggers` (per zone, in order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        zones: Vec<String>,
        triggers: &[Vec<TriggerSpec>],
        targets: &Targets,
        timing: &Timing,
        state: Arc<State>,
        fleet: SharedFleet,
        clock: Clock,
        statuses: Statuses,
    ) -> Result<ZonalController, TriggerError> {
        let mut demand = Vec::with_capacity(zones.len());
        let mut signal_targets = HashMap::new();
        for list in triggers {
            for (i, t) in list.iter().enumerate() {
                let q = TriggerQuery::from_metadata(&t.metadata)?;
                signal_targets.insert(q.signal, q.target);
                if i == 0 {
                    demand.push(q);
                }
            }
        }
        let n = zones.len();
        let demand_signal = demand
            .first()
            .map_or(Signal::RequestsPerSecond, |q| q.signal);
        Ok(ZonalController {
            zones,
            state,
            demand,
            targets: signal_targets,
            demand_signal,
            capacity_per_replica: targets.demand,
            max_replicas: timing.max_replicas,
            settings: timing.zonal(),
            fleet,
            clock,
            statuses,
            last: None,
            pending_since: vec![None; n],
        })
    }

    /// Runs until `shutdown`, returning every change of the weights.
    pub async fn run(mut self, shutdown: CancellationToken) -> Vec<WeightChange> {
        let mut log = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(self.settings.period));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let now = self.clock.now();
            if let Some(change) = self.evaluate(now) {
                log.push(change);
            }
        }
        log
    }

    /// Unadjusted demand of zone `z` now; `None` without fresh data.
    fn demand(&self, z: usize) -> Option<f64> {
        let query = self.demand.get(z)?.clone();
        // Resolved each time: discovery replaces the pool whenever pods come and go.
        let resolved = self.state.resolve(NAMESPACE, query).ok()?;
        self.state
            .evaluate_unadjusted_at(&resolved, self.state.clock.now())
            .ok()
    }

    /// One evaluation at demo time `now`; the weight change it made, if any.
    pub fn evaluate(&mut self, now: f64) -> Option<WeightChange> {
        let demand: Vec<Option<f64>> = (0..self.zones.len()).map(|z| self.demand(z)).collect();
        let mut fleet = lock(&self.fleet);
        let mut inputs = Vec::with_capacity(self.zones.len());
        for (z, name) in self.zones.iter().enumerate() {
            let (ready, loading, pending) = fleet
                .zone_view(z, 1.0)
                .map_or((0, 0, 0), |v| (v.ready, v.loading, v.pending));
            let since = &mut self.pending_since[z];
            if pending == 0 {
                *since = None;
            } else {
                since.get_or_insert(now);
            }
            let full = spillover::fullness(
                ready + loading + pending,
                self.max_replicas,
                since.map(|s| now - s),
                self.settings.unschedulable_after,
            );
            inputs.push(ZoneInput {
                name: name.clone(),
                ready,
                starting: loading,
                max_replicas: self.max_replicas,
                full,
                capacity_per_replica: self.capacity_per_replica,
                demand: demand[z],
            });
        }
        let decision = weights::decide(
            &inputs,
            &self.zones,
            self.last.as_ref(),
            now,
            &self.settings.policy,
        );
        let change = decision.changed.then(|| {
            fleet.set_flows(&decision.weights.flows);
            self.last = Some(Written {
                weights: decision.weights.clone(),
                at: now,
            });
            WeightChange {
                t: now,
                weights: decision.weights.clone(),
                reason: decision.reason.clone(),
            }
        });
        drop(fleet);
        let routed = weights::routed_demand(&decision.weights, &inputs);
        let adjustments = inputs
            .iter()
            .zip(&routed)
            .map(|(zone, r)| {
                let spilled_in = if r.spilled_in > 0.0 {
                    HashMap::from([(self.demand_signal, r.spilled_in)])
                } else {
                    HashMap::new()
                };
                let adj = ZoneAdjustment {
                    ready: zone.ready,
                    starting: zone.starting,
                    spilled_in,
                    targets: self.targets.clone(),
                };
                (zone.name.clone(), adj)
            })
            .collect();
        self.state
            .set_zone_adjustments(NAMESPACE, POOL, adjustments);
        let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        for (z, s) in statuses.iter_mut().enumerate() {
            let name = &self.zones[z];
            s.weight = decision.weights.share(name);
            s.moved_out = decision.weights.moved_out(name);
            if let Some(c) = &change {
                s.weight_change = Some((c.t, c.reason.clone()));
            }
        }
        change
    }
}

/// `GetMetricSpec`, `GetMetrics` and `IsActive` for one trigger, as KEDA calls them.
async fn query_trigger(
    client: &mut ExternalScalerClient<Channel>,
    so: ScaledObjectRef,
    metric_type: MetricType,
) -> (Reading, Result<bool, String>) {
    let failed = |s: tonic::Status| -> String {
        match s.code() {
            Code::Unavailable => format!("UNAVAILABLE: {}", s.message()),
            code => format!("{code:?}: {}", s.message()),
        }
    };
    let reading = async {
        let spec = client
            .get_metric_spec(so.clone())
            .await
            .map_err(failed)?
            .into_inner();
        let spec = spec
            .metric_specs
            .into_iter()
            .next()
            .ok_or_else(|| "GetMetricSpec returned no spec".to_string())?;
        #[allow(deprecated)] // KEDA reads targetSize when targetSizeFloat is 0.
        let target = if spec.target_size_float > 0.0 {
            spec.target_size_float
        } else {
            spec.target_size as f64
        };
        let values = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(so.clone()),
                metric_name: spec.metric_name,
            })
            .await
            .map_err(failed)?
            .into_inner()
            .metric_values;
        // The HPA sums every value returned for a metric.
        #[allow(deprecated)] // KEDA reads metricValue when metricValueFloat is 0.
        let value: f64 = values
            .iter()
            .map(|v| {
                if v.metric_value_float > 0.0 {
                    v.metric_value_float
                } else {
                    v.metric_value as f64
                }
            })
            .fold(0.0, |a, v| a + v);
        Ok((value, metric_type.target(target)))
    }
    .await;
    let active = client
        .is_active(so)
        .await
        .map(|r| r.into_inner().result)
        .map_err(failed);
    (reading, active)
}

/// Holds a `StreamIsActive` stream, forwarding each pushed `true`; reconnects after 2 s,
/// doubling to 60 s, as KEDA does.
async fn watch_stream(
    mut client: ExternalScalerClient<Channel>,
    so: ScaledObjectRef,
    trigger: usize,
    pushes: mpsc::Sender<Push>,
    shutdown: CancellationToken,
) {
    let mut backoff = 2.0_f64;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.stream_is_active(so.clone()) => r,
        };
        match opened {
            Ok(stream) => {
                backoff = 2.0;
                let mut stream = stream.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(m)) if m.result => {
                            if pushes.send(Push { trigger }).await.is_err() {
                                return;
                            }
                        }
                        // A pushed false is ignored by KEDA.
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "StreamIsActive broke; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => debug!(error = %e, "StreamIsActive refused; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs_f64(backoff)) => {}
        }
        backoff = (backoff * 2.0).min(60.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trigger::TriggerQuery;

    #[test]
    fn triggers_are_valid_metadata() {
        let s = Scenario::default_demo(120.0);
        let targets = Targets::for_scenario(&s);
        assert_eq!(
            targets.demand, 3.2,
            "600 tok/s / 150 tokens = 4 req/s, 80 %"
        );
        assert_eq!(targets.replicas_for(6.0), 2);
        assert_eq!(targets.replicas_for(0.0), 0);
        for t in triggers("zone-b", &targets, &Timing::default(), "127.0.0.1:1") {
            let q = TriggerQuery::from_metadata(&t.metadata)
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
            assert_eq!(q.zone.as_deref(), Some("zone-b"));
            assert!(q.target > 0.0);
        }
    }

    #[test]
    fn short_scripts_get_shorter_controllers() {
        let d = Timing::for_duration(120.0);
        assert_eq!(d, Timing::default());
        let short = Timing::for_duration(30.0);
        assert!(short.cooldown < d.cooldown && short.cooldown >= 4.0);
        assert!(
            short.signal_window >= 4.0,
            "two scrapes per window at least"
        );
        assert_eq!(Timing::for_duration(600.0), d);
    }

    #[test]
    fn blind_means_every_reading_failed() {
        let mut e = Evaluation {
            t: 0.0,
            current: 2,
            ready: 2,
            desired: 2,
            values: vec![None, None],
            active: None,
            pushed: false,
            reason: String::new(),
            error: None,
        };
        assert!(e.blind());
        e.values[1] = Some(0.0);
        assert!(!e.blind());
    }
}
