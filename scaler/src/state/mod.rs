//! What the answering side shares: the pools, their targets' windows, and the one function that
//! turns a trigger into a number or a reason (used by gRPC, HTTP and the demo alike).

pub mod reload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::trigger::{TriggerError, TriggerQuery};
use crate::extract::Extractor;
use crate::model::{Clock, Config, Math, Pool, Profile, Signal, Source};
use crate::signals::{self, Inputs, PolledView, Rules, TargetView};
use crate::telemetry::Metrics;
use crate::window::polled::{PromState, ZoneInputs};
use crate::window::{TargetKey, TargetState};
use crate::zonal::spillover::{self, ZoneAdjustment};

/// Why a query has no value, mapped to gRPC codes by the answer layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Malformed trigger metadata (INVALID_ARGUMENT).
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// Well-formed but not servable as written (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// No such pool or zone (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// Data missing or stale (UNAVAILABLE): the HPA holds and KEDA's fallback can act.
    #[error("pool {pool:?} zone {zone:?} signal {signal}: {reason}")]
    Unavailable {
        pool: String,
        zone: String,
        signal: String,
        reason: String,
    },
}

/// A trigger bound to a pool, a source and a zone.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub query: TriggerQuery,
    pub pool: Arc<PoolState>,
    pub source_index: usize,
    pub rules: Rules,
}

/// One pool as served now: its definition, its targets' windows, and its extractors.
#[derive(Debug)]
pub struct PoolState {
    pub pool: Arc<Pool>,
    /// One per source, built once: they hold the name lookup tables the scrapers use.
    pub extractors: Vec<Arc<Extractor>>,
    pub targets: Vec<Arc<TargetState>>,
    /// Per target (indexed like `targets`): its source's extractor, or its own when the target
    /// counts only some endpoints' series ([`crate::model::EndpointScope`]).
    pub target_extractors: Vec<Arc<Extractor>>,
    /// Per source: the polled results when it is a Prometheus-compatible server.
    pub prom: Vec<Option<Arc<PromState>>>,
    /// When the pool was first served (clock seconds); kept across updates. Readiness waits for
    /// its windows from then on, for a bounded time ([`PoolState::warm_up_limit`]).
    pub since: f64,
}

impl PoolState {
    /// Builds the pool's state, reusing the windows of targets that `previous` already had, so a
    /// pool updated by discovery keeps its history for every target that stayed.
    fn new(pool: Arc<Pool>, previous: Option<&PoolState>, now: f64) -> PoolState {
        let extractors: Vec<Arc<Extractor>> = pool
            .sources
            .iter()
            .enumerate()
            .map(|(si, s)| match previous {
                Some(prev) if same_source(prev.pool.sources.get(si), s) => {
                    prev.extractors[si].clone()
                }
                _ => Arc::new(Extractor::new(s)),
            })
            .collect();
        // Indexed, because discovery re-upserts a pool on every pod change of a large fleet.
        let mut kept: HashMap<(TargetKey, usize), usize> = previous
            .map(|p| {
                p.targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ((t.key.clone(), t.source_index), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut targets = Vec::new();
        let mut target_extractors = Vec::new();
        for (si, source) in pool.sources.iter().enumerate() {
            for t in &source.targets {
                let key = TargetKey {
                    namespace: pool.namespace.clone().unwrap_or_default(),
                    pool: pool.name.clone(),
                    source: source.name.clone(),
                    zone: t.zone.clone(),
                    url: t.url.clone(),
                };
                let lookup = (key, si);
                let old = kept.remove(&lookup).and_then(|i| Some((previous?, i)));
                let target = match old {
                    Some((prev, i)) => prev.targets[i].clone(),
                    None => Arc::new(TargetState::new(lookup.0, si)),
                };
                let extractor = match &t.endpoints {
                    None => extractors[si].clone(),
                    // Reused while the scope stays, so its scrape task keeps running.
                    Some(scope) => old
                        .filter(|(prev, _)| {
                            let was = prev.pool.sources.get(si);
                            same_source(was, source)
                                && was.is_some_and(|w| {
                                    w.targets.iter().any(|o| {
                                        o.url == t.url
                                            && o.zone == t.zone
                                            && o.endpoints.as_ref() == Some(scope)
                                    })
                                })
                        })
                        .map(|(prev, i)| prev.target_extractors[i].clone())
                        .unwrap_or_else(|| Arc::new(Extractor::scoped(source, scope))),
                };
                targets.push(target);
                target_extractors.push(extractor);
            }
        }
        let prom = pool
            .sources
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let config = s.prometheus.as_ref()?;
                let kept = previous
                    .filter(|p| same_source(p.pool.sources.get(si), s))
                    .and_then(|p| p.prom.get(si).cloned().flatten())
                    .filter(|old| old.config == *config);
                Some(kept.unwrap_or_else(|| Arc::new(PromState::new(config.clone()))))
            })
            .collect();
        PoolState {
            since: previous.map_or(now, |p| p.since),
            pool,
            extractors,
            targets,
            target_extractors,
            prom,
        }
    }

    /// How long readiness waits for this pool's sources to fill a window: a window plus the
    /// staleness allowance, by when a source that answers would have. A source that does not
    /// (a typo, a target that never answers) must not keep the replica out of its Service.
    pub fn warm_up_limit(&self) -> f64 {
        (self.pool.window + self.pool.stale_after).as_secs_f64()
    }

    /// The scrape interval of a target: its own, or the pool's.
    pub fn interval_of(&self, target: &TargetState) -> Duration {
        self.pool
            .sources
            .get(target.source_index)
            .and_then(|s| {
                s.targets
                    .iter()
                    .find(|t| t.url == target.key.url && t.zone == target.key.zone)
            })
            .and_then(|t| t.interval)
            .unwrap_or(self.pool.interval)
    }
}

/// Two sources read the same series the same way (so an extractor can be reused).
fn same_source(a: Option<&Source>, b: &Source) -> bool {
    // Profiles are rebuilt with every pool update; compare what they read, not their address.
    a.is_some_and(|a| {
        a.name == b.name
            && format!("{:?}", a.profile) == format!("{:?}", b.profile)
            && a.matchers
                .iter()
                .map(|m| m.to_string())
                .eq(b.matchers.iter().map(|m| m.to_string()))
    })
}

#[derive(Debug)]
pub struct State {
    pub clock: Clock,
    pub metrics: Metrics,
    pools: RwLock<Vec<Arc<PoolState>>>,
    /// Bumped whenever pools or targets change; the scrape manager follows it.
    changes: watch::Sender<u64>,
    /// Per namespace, pool and zone: spillover and warm-up published by the Kubernetes
    /// controller, applied to every value served for that zone.
    adjustments: RwLock<ZoneAdjustments>,
    /// Set once readiness held; it stays true after that (see [`State::readiness`]).
    warmed: AtomicBool,
    /// The gRPC and HTTP servers run (set by `server::run`).
    serving: AtomicBool,
    /// The pools to serve are known: at once from a configuration file; in controller mode once
    /// discovery's first complete list is published. Until then a pool may be missing, and KEDA
    /// would be told NOT_FOUND for it.
    pools_known: AtomicBool,
    /// Per (namespace, pool): the source each signal's trigger names, as the pool's owner
    /// registered it; `/pools` and `/metrics` evaluate those signals through it.
    signal_sources: RwLock<SignalSources>,
}

/// Whether one source of a pool has data: what `/pools`, `/metrics` and readiness report.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    /// Read through a Prometheus-compatible server instead of scraped targets.
    pub prometheus: bool,
    /// Scrape targets (0 for a Prometheus-compatible source).
    pub targets: usize,
    /// Targets (or the Prometheus-compatible server) that answered within the staleness limit.
    pub answering: usize,
    /// Some answering target holds a full window (a Prometheus-compatible source: it answers).
    pub full_window: bool,
    /// Why the source has no data; `None` when it has.
    pub problem: Option<String>,
}

impl SourceStatus {
    pub fn has_data(&self) -> bool {
        self.answering > 0
    }
}

/// (namespace, pool) -> the source of each registered signal.
type SignalSources = HashMap<(String, String), Vec<(Signal, String)>>;

/// Namespace -> pool -> zone -> adjustment.
type ZoneAdjustments = HashMap<String, HashMap<String, HashMap<String, ZoneAdjustment>>>;

impl State {
    pub fn new(config: &Config, clock: Clock) -> State {
        let state = State {
            clock,
            metrics: Metrics::default(),
            pools: RwLock::new(Vec::new()),
            changes: watch::Sender::new(0),
            adjustments: RwLock::new(HashMap::new()),
            warmed: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            pools_known: AtomicBool::new(true),
            signal_sources: RwLock::new(HashMap::new()),
        };
        for pool in &config.pools {
            state.upsert_pool(pool.clone());
        }
        state
    }

    /// The pools served now.
    pub fn pools(&self) -> Vec<Arc<PoolState>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a pool or replaces the one with the same namespace and name (from discovery or a
    /// custom resource). Targets that stay keep their windows.
    pub fn upsert_pool(&self, pool: Arc<Pool>) {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        let at = pools
            .iter()
            .position(|p| p.pool.name == pool.name && p.pool.namespace == pool.namespace);
        let next = Arc::new(PoolState::new(
            pool,
            at.map(|i| pools[i].as_ref()),
            self.clock.now(),
        ));
        match at {
            Some(i) => pools[i] = next,
            None => pools.push(next),
        }
        drop(pools);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Stops serving a pool; its scrapers stop at their next tick.
    pub fn remove_pool(&self, namespace: Option<&str>, name: &str) -> bool {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        let before = pools.len();
        pools.retain(|p| !(p.pool.name == name && p.pool.namespace.as_deref() == namespace));
        let removed = pools.len() != before;
        drop(pools);
        self.signal_sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.unwrap_or_default().to_string(), name.to_string()));
        if removed {
            self.changes.send_modify(|n| *n += 1);
        }
        removed
    }

    /// Counts changes of pools or targets; caches of resolved triggers key on it.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A receiver that sees every change of pools or targets.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Binds trigger metadata to a pool, source and zone; fails on anything a user must fix.
    pub fn resolve(&self, namespace: &str, query: TriggerQuery) -> Result<Resolved, QueryError> {
        let pool_state = self
            .pools()
            .into_iter()
            .find(|p| {
                p.pool.name == query.pool
                    && p.pool.namespace.as_deref().is_none_or(|ns| ns == namespace)
            })
            .ok_or_else(|| {
                QueryError::NotFound(format!(
                    "no pool {:?} for namespace {namespace:?}; pools: {}",
                    query.pool,
                    self.pool_names(namespace)
                ))
            })?;
        let pool = pool_state.pool.clone();
        if let Some(zone) = &query.zone {
            let zones = pool.zones();
            if !zones.contains(&zone.as_str()) {
                return Err(QueryError::NotFound(format!(
                    "pool {:?} has no zone {zone:?}; zones: {}",
                    pool.name,
                    zones.join(", ")
                )));
            }
        }
        let source_index = match &query.source {
            Some(name) => {
                let (i, s) = pool
                    .sources
                    .iter()
                    .enumerate()
                    .find(|(_, s)| &s.name == name)
                    .ok_or_else(|| {
                        QueryError::Invalid(format!(
                            "metadata key `source`: pool {:?} has no source {name:?}; sources: {}",
                            pool.name,
                            pool.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                if !s.profile.supports(query.signal) {
                    return Err(QueryError::Invalid(format!(
                        "metadata key `signal`: source {name:?} (profile {}) does not provide {}",
                        s.profile.name,
                        query.signal.name()
                    )));
                }
                i
            }
            None => pool
                .sources
                .iter()
                .position(|s| s.profile.supports(query.signal))
                .ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "metadata key `signal`: no source of pool {:?} provides {}; signals it has: {}",
                        pool.name,
                        query.signal.base_name(),
                        supported_signals(&pool).join(", ")
                    ))
                })?,
        };
        if query.window.is_some()
            && pool_state
                .prom
                .get(source_index)
                .is_some_and(Option::is_some)
        {
            return Err(QueryError::Invalid(
                "metadata key `window`: this source reads a Prometheus-compatible server; its \
                 rate window is the source's prometheus.rateWindow"
                    .into(),
            ));
        }
        let window = match query.window {
            Some(w) if w > pool.window => {
                return Err(QueryError::Invalid(format!(
                    "metadata key `window`: {}s is longer than pool {:?}'s window of {}s",
                    w.as_secs_f64(),
                    pool.name,
                    pool.window.as_secs_f64()
                )))
            }
            Some(w) if w < pool.interval * 2 => {
                return Err(QueryError::Invalid(format!(
                "metadata key `window`: {}s holds fewer than two scrapes at pool {:?}'s interval",
                w.as_secs_f64(),
                pool.name
            )))
            }
            Some(w) => w,
            None => pool.window,
        };
        if let Some(up) = query.up_window {
            if pool_state
                .prom
                .get(source_index)
                .is_some_and(Option::is_some)
            {
                return Err(QueryError::Invalid(
                    "metadata key `upWindow`: this source reads a Prometheus-compatible server; \
                     it has one rate window, the source's prometheus.rateWindow"
                        .into(),
                ));
            }
            if up >= window || up < pool.interval * 2 {
                return Err(QueryError::Invalid(format!(
                    "metadata key `upWindow`: {}s must be shorter than the trigger's window of \
                     {}s and hold two scrapes at pool {:?}'s interval of {}s",
                    up.as_secs_f64(),
                    window.as_secs_f64(),
                    pool.name,
                    pool.interval.as_secs_f64()
                )));
            }
        }
        let rules = Rules {
            window: window.as_secs_f64(),
            stale_after: pool.stale_after.as_secs_f64(),
            min_target_ratio: pool.min_target_ratio,
        };
        Ok(Resolved {
            query,
            pool: pool_state,
            source_index,
            rules,
        })
    }

    /// Records the source each signal of a pool is read from, as the triggers written for it name
    /// them (a ZonalScaledObject's); replaces the previous list. A quantile signal's source also
    /// serves that signal's other exported quantiles.
    pub fn set_signal_sources(&self, namespace: &str, pool: &str, sources: Vec<(Signal, String)>) {
        let mut all = self
            .signal_sources
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), pool.to_string());
        if sources.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, sources);
        }
    }

    /// Every exported signal (the common quantiles included, and every registered signal) that
    /// some source of `pool` provides, resolved for `zone` (`None`: all zones) through the source
    /// its trigger names ([`State::set_signal_sources`]), else the pool's first source that
    /// provides it; what `/metrics` and `/pools` show.
    pub fn exported_signals(&self, pool: &PoolState, zone: Option<&str>) -> Vec<Resolved> {
        let namespace = pool.pool.namespace.clone().unwrap_or_default();
        let registered = self
            .signal_sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.clone(), pool.pool.name.clone()))
            .cloned()
            .unwrap_or_default();
        let mut signals = Signal::exported();
        for (signal, _) in &registered {
            if !signals.contains(signal) {
                signals.push(*signal);
            }
        }
        signals
            .into_iter()
            .filter_map(|signal| {
                let source = registered
                    .iter()
                    .find(|(s, _)| *s == signal)
                    .or_else(|| {
                        registered
                            .iter()
                            .find(|(s, _)| s.base_name() == signal.base_name())
                    })
                    .map(|(_, source)| source.clone());
                let query = TriggerQuery {
                    pool: pool.pool.name.clone(),
                    zone: zone.map(str::to_string),
                    signal,
                    source,
                    aggregation: None,
                    target: 1.0,
                    activation_target: 0.0,
                    window: None,
                    up_window: None,
                };
                // Fails only for signals the chosen source (or no source) provides: those are
                // not exported.
                self.resolve(&namespace, query).ok()
            })
            .collect()
    }

    /// The signal's current value, or why there is none.
    pub fn evaluate(&self, r: &Resolved) -> Result<f64, QueryError> {
        self.evaluate_at(r, self.clock.now())
    }

    /// The value served: the signal's value with the controller's adjustments for the zone, if it
    /// published any (a ZonalScaledObject's pool); every other pool's value is unchanged.
    pub fn evaluate_at(&self, r: &Resolved, now: f64) -> Result<f64, QueryError> {
        let value = self.evaluate_unadjusted_at(r, now)?;
        Ok(self.adjusted(r, value))
    }

    /// [`State::evaluate_at`] for each of `group`, in order. Quantiles of one histogram signal
    /// read through the same source for the same zone (`latency_p50` ... `latency_p99`, as
    /// `/metrics` exports them) come from one merge of the zone's histograms instead of one each:
    /// the same values, a fraction of the work.
    pub fn evaluate_all_at(&self, group: &[Resolved], now: f64) -> Vec<Result<f64, QueryError>> {
        let mut out: Vec<Option<Result<f64, QueryError>>> = vec![None; group.len()];
        for i in 0..group.len() {
            if out[i].is_some() {
                continue;
            }
            let first = &group[i];
            if first.query.signal.desc().math != Math::Quantile || first.query.up_window.is_some() {
                out[i] = Some(self.evaluate_at(first, now));
                continue;
            }
            let members: Vec<usize> = (i..group.len())
                .filter(|&j| out[j].is_none() && same_histogram(first, &group[j]))
                .collect();
            let signals: Vec<Signal> = members.iter().map(|&j| group[j].query.signal).collect();
            let values = self.with_inputs(first, now, |profile, inputs| {
                signals::evaluate_quantiles(profile, &signals, inputs)
            });
            for (&j, value) in members.iter().zip(values) {
                let r = &group[j];
                out[j] = Some(
                    value
                        .map(|v| self.adjusted(r, v))
                        .map_err(|reason| unavailable(r, &reason)),
                );
            }
        }
        out.into_iter()
            // Every slot is filled above (a group's first is its own member).
            .map(|v| v.unwrap_or_else(|| Err(QueryError::Invalid("signal not evaluated".into()))))
            .collect()
    }

    /// `value` with the controller's adjustment for the trigger's zone, if it published one.
    fn adjusted(&self, r: &Resolved, value: f64) -> f64 {
        let Some(zone) = r.query.zone.as_deref() else {
            return value;
        };
        let adjustments = self.adjustments.read().unwrap_or_else(|e| e.into_inner());
        let namespace = r.pool.pool.namespace.as_deref().unwrap_or_default();
        let adjustment = adjustments
            .get(namespace)
            .and_then(|pools| pools.get(&r.pool.pool.name))
            .and_then(|zones| zones.get(zone));
        match adjustment {
            Some(adj) => spillover::adjust(value, r.query.signal, r.query.target, adj),
            None => value,
        }
    }

    /// Publishes the per-zone adjustments of a pool, replacing the previous ones; an empty map
    /// removes them.
    pub fn set_zone_adjustments(
        &self,
        namespace: &str,
        pool: &str,
        zones: HashMap<String, ZoneAdjustment>,
    ) {
        let mut all = self.adjustments.write().unwrap_or_else(|e| e.into_inner());
        if zones.is_empty() {
            if let Some(pools) = all.get_mut(namespace) {
                pools.remove(pool);
                if pools.is_empty() {
                    all.remove(namespace);
                }
            }
        } else {
            all.entry(namespace.to_string())
                .or_default()
                .insert(pool.to_string(), zones);
        }
    }

    /// The signal's value from the windows, before any adjustment: what the controller's
    /// spillover and warm-up are computed from.
    pub fn evaluate_unadjusted_at(&self, r: &Resolved, now: f64) -> Result<f64, QueryError> {
        self.with_inputs(r, now, |profile, inputs| match r.query.up_window {
            Some(up) => signals::evaluate_fast_up(
                profile,
                r.query.signal,
                r.query.aggregation,
                inputs,
                up.as_secs_f64(),
            ),
            None => signals::evaluate(profile, r.query.signal, r.query.aggregation, inputs),
        })
        .map_err(|reason| unavailable(r, &reason))
    }

    /// `f` on the inputs `r` reads at `now`: its source's targets in its zone, under their locks,
    /// or its polled zones.
    fn with_inputs<T>(
        &self,
        r: &Resolved,
        now: f64,
        f: impl FnOnce(&Profile, &Inputs<'_>) -> T,
    ) -> T {
        let profile = &r.pool.pool.sources[r.source_index].profile;
        if let Some(prom) = r.pool.prom.get(r.source_index).and_then(Option::as_ref) {
            let data = prom.lock();
            let zones: Vec<&ZoneInputs> = data
                .zones
                .iter()
                .filter(|(z, _)| r.query.zone.as_ref().is_none_or(|want| want == *z))
                .map(|(_, inputs)| inputs)
                .collect();
            let polled = PolledView {
                now,
                stale_after: r
                    .rules
                    .stale_after
                    .max(3.0 * prom.config.interval.as_secs_f64()),
                last_success: data.last_success,
                last_error: data.last_error.as_deref(),
            };
            let inputs = Inputs::Polled {
                view: polled,
                zones: &zones,
            };
            return f(profile, &inputs);
        }
        let targets: Vec<&Arc<TargetState>> = r
            .pool
            .targets
            .iter()
            .filter(|t| {
                t.source_index == r.source_index
                    && r.query.zone.as_ref().is_none_or(|z| &t.key.zone == z)
            })
            .collect();
        let guards: Vec<_> = targets.iter().map(|t| t.lock()).collect();
        let views: Vec<TargetView<'_>> = guards
            .iter()
            .map(|g| TargetView {
                last_success: g.health.last_success,
                samples: g.samples(),
            })
            .collect();
        let inputs = Inputs::Scraped {
            rules: &r.rules,
            now,
            targets: &views,
        };
        f(profile, &inputs)
    }

    /// Marks the gRPC and HTTP servers as running.
    pub fn mark_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// The pools come from discovery (controller mode): not ready before its first complete list
    /// is published ([`State::discovery_listed`]).
    pub fn wait_for_discovery(&self) {
        self.pools_known.store(false, Ordering::Relaxed);
    }

    /// Discovery published the pools of its first complete list.
    pub fn discovery_listed(&self) {
        self.pools_known.store(true, Ordering::Relaxed);
    }

    /// Whether this replica can answer KEDA: it serves, and every pool it is asked about exists.
    /// It also waits, for at most each pool's [`PoolState::warm_up_limit`], until every source
    /// has a full window, so a replica joining a rollout does not answer UNAVAILABLE for a
    /// window's time. A source without data never holds it longer: that pool answers
    /// UNAVAILABLE (never a made-up value) and `/pools` says why. Once ready, a replica stays
    /// ready: an outage of one pool's targets must not take every pool out of the Service.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_at(self.clock.now())
    }

    fn readiness_at(&self, now: f64) -> Result<(), String> {
        if self.warmed.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.serving.load(Ordering::Relaxed) {
            return Err("the gRPC and HTTP servers are starting".into());
        }
        if !self.pools_known.load(Ordering::Relaxed) {
            return Err(
                "waiting for the first complete list of ZonalScaledObjects and endpoints".into(),
            );
        }
        for p in self.pools() {
            let left = p.warm_up_limit() - (now - p.since);
            if left <= 0.0 {
                continue;
            }
            for s in self.source_status(&p, now) {
                // A source without targets has nothing to wait for.
                if s.full_window || (!s.prometheus && s.targets == 0) {
                    continue;
                }
                let what = if s.prometheus {
                    "no successful Prometheus query yet".to_string()
                } else {
                    format!(
                        "no target has a full {}s window yet",
                        p.pool.window.as_secs_f64()
                    )
                };
                return Err(format!(
                    "pool {:?} source {:?}: {what} (waiting at most {}s more)",
                    p.pool.name,
                    s.name,
                    left.ceil()
                ));
            }
        }
        self.warmed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Per source of `pool`: whether it has data now, and why not.
    pub fn source_status(&self, pool: &PoolState, now: f64) -> Vec<SourceStatus> {
        let window = pool.pool.window.as_secs_f64();
        let stale_after = pool.pool.stale_after.as_secs_f64();
        pool.pool
            .sources
            .iter()
            .enumerate()
            .map(|(si, source)| {
                if let Some(prom) = pool.prom.get(si).and_then(Option::as_ref) {
                    let stale_after = stale_after.max(3.0 * prom.config.interval.as_secs_f64());
                    let data = prom.lock();
                    let fresh = data.last_success.is_some_and(|at| now - at <= stale_after);
                    let problem = (!fresh).then(|| {
                        let mut why = match data.last_success {
                            None => "no successful Prometheus query yet".to_string(),
                            Some(_) => {
                                format!("no successful Prometheus query in the last {stale_after}s")
                            }
                        };
                        if let Some(e) = &data.last_error {
                            why.push_str(&format!("; last error: {e}"));
                        }
                        why
                    });
                    return SourceStatus {
                        name: source.name.clone(),
                        prometheus: true,
                        targets: 0,
                        answering: usize::from(fresh),
                        full_window: fresh,
                        problem,
                    };
                }
                let (mut targets, mut answering, mut ever, mut full_window) = (0, 0, false, false);
                let mut last_error = None;
                for t in pool.targets.iter().filter(|t| t.source_index == si) {
                    targets += 1;
                    let g = t.lock();
                    let h = &g.health;
                    ever |= h.last_success.is_some();
                    if h.last_success.is_some_and(|at| now - at <= stale_after) {
                        answering += 1;
                        full_window |= h.first_success.is_some_and(|f| now - f >= window);
                    } else if last_error.is_none() {
                        last_error.clone_from(&h.last_error);
                    }
                }
                let problem = (answering == 0).then(|| {
                    let mut why = match (targets, ever) {
                        (0, _) => "no targets".to_string(),
                        (n, false) => format!("none of its {n} targets has answered yet"),
                        (n, true) => {
                            format!("none of its {n} targets answered in the last {stale_after}s")
                        }
                    };
                    if let Some(e) = last_error {
                        why.push_str(&format!("; last error: {e}"));
                    }
                    why
                });
                SourceStatus {
                    name: source.name.clone(),
                    prometheus: false,
                    targets,
                    answering,
                    full_window,
                    problem,
                }
            })
            .collect()
    }

    fn pool_names(&self, namespace: &str) -> String {
        let pools = self.pools();
        let names: Vec<&str> = pools
            .iter()
            .filter(|p| p.pool.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .map(|p| p.pool.name.as_str())
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

fn supported_signals(pool: &Pool) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Signal::exported()
        .into_iter()
        .filter(|s| pool.sources.iter().any(|src| src.profile.supports(*s)))
        .map(|s| s.base_name())
        .collect();
    names.dedup();
    names
}

/// How long a resolved trigger stays cached: GetMetricSpec is called on every HPA query.
pub const RESOLVE_CACHE_TTL: Duration = Duration::from_secs(60);

/// The query's error for `reason`.
fn unavailable(r: &Resolved, reason: &signals::Unavailable) -> QueryError {
    QueryError::Unavailable {
        pool: r.pool.pool.name.clone(),
        zone: r.query.zone.clone().unwrap_or_else(|| "all".into()),
        signal: r.query.signal.name(),
        reason: reason.to_string(),
    }
}

/// Whether `b` is a quantile of the histogram `a` reads: same pool, source, zone and rules, the
/// same base signal, no short window.
fn same_histogram(a: &Resolved, b: &Resolved) -> bool {
    Arc::ptr_eq(&a.pool, &b.pool)
        && a.source_index == b.source_index
        && a.query.zone == b.query.zone
        && a.rules == b.rules
        && b.query.up_window.is_none()
        && b.query.signal.desc().math == Math::Quantile
        && a.query.signal.base_name() == b.query.signal.base_name()
}

#[cfg(test)]
mod resolve_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// `/metrics` evaluates a zone's exported signals together; each value, and each refusal,
    /// must be what a trigger asking for that signal alone is answered, adjustments included.
    #[test]
    fn evaluating_together_answers_what_each_alone_does() {
        let yaml = r#"
pools:
  - name: llama
    namespace: ml
    window: 4s
    interval: 1s
    sources:
      - name: servers
        profile: vllm
        targets:
          - { url: "http://127.0.0.1:1/metrics", zone: zone-a }
          - { url: "http://127.0.0.1:2/metrics", zone: zone-a }
          - { url: "http://127.0.0.1:3/metrics", zone: zone-b }
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://127.0.0.1:4/stats/prometheus", zone: zone-a }
"#;
        let config = Config::from_yaml(yaml, "test.yaml").expect("valid test config");
        let state = State::new(&config, Clock::default());
        let p = state.pools()[0].clone();
        let body = |n: u32, t: u32| {
            let mut b = String::new();
            for (name, scale) in [
                ("vllm:e2e_request_latency_seconds", 1.0),
                ("vllm:time_to_first_token_seconds", 0.1),
            ] {
                let mut cumulative = 0;
                for (k, le) in [0.5, 1.0, 2.5, 5.0].iter().enumerate() {
                    cumulative += (k as u32 + 1) * n * t;
                    b.push_str(&format!(
                        "{name}_bucket{{model_name=\"llama\",le=\"{}\"}} {cumulative}\n",
                        le * scale
                    ));
                }
                b.push_str(&format!(
                    "{name}_bucket{{model_name=\"llama\",le=\"+Inf\"}} {}\n",
                    cumulative + n * t
                ));
                b.push_str(&format!(
                    "{name}_count{{model_name=\"llama\"}} {}\n",
                    cumulative + n * t
                ));
                b.push_str(&format!(
                    "{name}_sum{{model_name=\"llama\"}} {}\n",
                    f64::from(cumulative) * scale
                ));
            }
            b.push_str(&format!(
                "vllm:num_requests_waiting{{model_name=\"llama\"}} {n}\n"
            ));
            b
        };
        let now = 100.0;
        // zone-b's server was last scraped long ago: its zone is stale, and refused.
        for (n, target) in p
            .targets
            .iter()
            .filter(|t| t.key.source == "servers")
            .enumerate()
        {
            let n = n as u32 + 1;
            let times: &[f64] = if target.key.zone == "zone-b" {
                &[10.0, 11.0]
            } else {
                &[96.0, 97.0, 98.0, 99.0]
            };
            for (k, &at) in times.iter().enumerate() {
                let text = body(n, k as u32 + 1);
                let (reading, _) = p.extractors[target.source_index]
                    .extract(text.as_bytes(), &mut crate::extract::Scratch::default())
                    .expect("parses");
                target.record_success(at, 0.01, text.len(), reading, 30.0);
            }
        }
        state.set_zone_adjustments(
            "ml",
            "llama",
            HashMap::from([(
                "zone-a".to_string(),
                ZoneAdjustment {
                    ready: 1,
                    starting: 1,
                    ..ZoneAdjustment::default()
                },
            )]),
        );
        let mut compared = 0;
        for zone in [Some("zone-a"), Some("zone-b"), None] {
            let exported = state.exported_signals(&p, zone);
            let together = state.evaluate_all_at(&exported, now);
            assert_eq!(together.len(), exported.len());
            for (r, value) in exported.iter().zip(&together) {
                assert_eq!(
                    value,
                    &state.evaluate_at(r, now),
                    "{zone:?} {}",
                    r.query.signal.name()
                );
                compared += 1;
            }
            if zone == Some("zone-a") {
                let p95 = exported
                    .iter()
                    .position(|r| r.query.signal.name() == "latency_p95")
                    .expect("latency_p95 exported");
                assert!(
                    matches!(together[p95], Ok(v) if v > 0.0),
                    "{:?}",
                    together[p95]
                );
            }
            if zone == Some("zone-b") {
                assert!(
                    together.iter().all(Result::is_err),
                    "zone-b is stale: {together:?}"
                );
            }
        }
        assert!(compared > 40, "{compared}");
    }

    /// Two pools with a 3 s window and `staleAfter` 1 s (a warm-up limit of 4 s): `live` and
    /// `dead`, one gateway target each.
    fn two_pools() -> State {
        let pool = |name: &str, port: u16| {
            format!(
                "  - name: {name}\n    window: 3s\n    interval: 500ms\n    staleAfter: 1s\n    sources:\n      - name: gateway\n        profile: envoy\n        targets:\n          - {{ url: \"http://127.0.0.1:{port}/stats/prometheus\", zone: zone-a }}\n"
            )
        };
        let yaml = format!("pools:\n{}{}", pool("live", 1), pool("dead", 2));
        let config = Config::from_yaml(&yaml, "test.yaml").expect("valid test config");
        State::new(&config, Clock::default())
    }

    fn pool(state: &State, name: &str) -> Arc<PoolState> {
        state
            .pools()
            .into_iter()
            .find(|p| p.pool.name == name)
            .expect("pool exists")
    }

    /// Scrapes every 0.5 s from `from` to `to`, successful or failing.
    fn scrape(state: &State, name: &str, from: f64, to: f64, ok: bool) {
        let p = pool(state, name);
        let mut at = from;
        while at <= to {
            for t in &p.targets {
                if ok {
                    t.record_success(at, 0.01, 10, Default::default(), 3.0);
                } else {
                    t.record_failure(at, 0.01, "connection refused".into(), 3.0);
                }
            }
            at += 0.5;
        }
    }

    /// A target scoped to some Pods reads through its own extractor: kept while its scope
    /// stays (so its scrape task runs on), rebuilt when its Pods change, its window kept.
    #[test]
    fn scoped_targets_get_their_own_extractor_following_their_pods() {
        let state = two_pools();
        let base = pool(&state, "live").pool.clone();
        let scoped = |pods: &[&str]| {
            let mut p = (*base).clone();
            p.sources[0].targets[0].endpoints = Some(crate::model::EndpointScope {
                pods: pods.iter().map(|p| p.to_string()).collect(),
                pool_wide: false,
            });
            Arc::new(p)
        };
        let ptr = |p: &PoolState| Arc::as_ptr(&p.target_extractors[0]);
        let shared = pool(&state, "live");
        assert_eq!(ptr(&shared), Arc::as_ptr(&shared.extractors[0]));
        state.upsert_pool(scoped(&["a-0"]));
        let first = pool(&state, "live");
        assert_ne!(ptr(&first), Arc::as_ptr(&first.extractors[0]));
        assert!(Arc::ptr_eq(&first.targets[0], &shared.targets[0]));
        state.upsert_pool(scoped(&["a-0"]));
        let same = pool(&state, "live");
        assert_eq!(ptr(&same), ptr(&first));
        state.upsert_pool(scoped(&["a-0", "a-1"]));
        let grown = pool(&state, "live");
        assert_ne!(ptr(&grown), ptr(&first));
        assert!(Arc::ptr_eq(&grown.targets[0], &shared.targets[0]));
    }

    #[test]
    fn ready_only_once_serving_and_the_pools_are_known() {
        let state = two_pools();
        scrape(&state, "live", 0.0, 5.0, true);
        scrape(&state, "dead", 0.0, 5.0, true);
        let err = state.readiness_at(5.0).unwrap_err();
        assert!(err.contains("servers are starting"), "{err}");
        state.mark_serving();
        state.wait_for_discovery();
        let err = state.readiness_at(5.0).unwrap_err();
        assert!(err.contains("first complete list"), "{err}");
        state.discovery_listed();
        assert_eq!(state.readiness_at(5.0), Ok(()));
    }

    #[test]
    fn a_pool_without_data_holds_readiness_only_until_its_warm_up_limit() {
        let state = two_pools();
        state.mark_serving();
        scrape(&state, "live", 0.0, 3.5, true);
        scrape(&state, "dead", 0.0, 3.5, false);
        // The live pool has its full window; the dead one holds readiness for a while.
        let err = state.readiness_at(3.5).unwrap_err();
        assert!(
            err.contains("pool \"dead\" source \"gateway\": no target has a full 3s window yet"),
            "{err}"
        );
        assert!(err.contains("waiting at most 1s more"), "{err}");
        // Past the warm-up limit (window + staleAfter), it no longer does.
        assert_eq!(state.readiness_at(4.1), Ok(()));
        // Ready stays ready, whatever the pools do next.
        scrape(&state, "live", 4.0, 10.0, false);
        assert_eq!(state.readiness_at(10.0), Ok(()));
    }

    #[test]
    fn ready_at_once_when_every_source_has_a_full_window_or_no_targets() {
        let state = two_pools();
        state.mark_serving();
        // A source that found no targets (a misspelt Service) has nothing to wait for.
        let mut empty = (*pool(&state, "dead").pool).clone();
        empty.sources[0].targets.clear();
        state.upsert_pool(Arc::new(empty));
        assert!(state.readiness_at(2.0).is_err(), "live has no window yet");
        scrape(&state, "live", 0.0, 3.0, true);
        assert_eq!(state.readiness_at(3.0), Ok(()));
    }

    #[test]
    fn source_status_says_which_source_has_no_data_and_why() {
        let state = two_pools();
        scrape(&state, "live", 0.0, 2.0, true);
        scrape(&state, "dead", 0.0, 2.0, false);
        let live = state.source_status(&pool(&state, "live"), 2.0);
        assert_eq!(live.len(), 1);
        assert!(live[0].has_data() && !live[0].full_window && live[0].problem.is_none());
        let dead = &state.source_status(&pool(&state, "dead"), 2.0)[0];
        assert!(!dead.has_data());
        assert_eq!(
            dead.problem.as_deref(),
            Some("none of its 1 targets has answered yet; last error: connection refused")
        );
        // Answered once, then went quiet for longer than staleAfter.
        let live = state.source_status(&pool(&state, "live"), 3.5);
        assert_eq!(
            live[0].problem.as_deref(),
            Some("none of its 1 targets answered in the last 1s")
        );
    }

    #[test]
    fn an_upsert_keeps_when_the_pool_was_first_served() {
        let state = two_pools();
        let since = pool(&state, "dead").since;
        std::thread::sleep(Duration::from_millis(20));
        let same = (*pool(&state, "dead").pool).clone();
        state.upsert_pool(Arc::new(same));
        assert_eq!(pool(&state, "dead").since, since);
    }
}
