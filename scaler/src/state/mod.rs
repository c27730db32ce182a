//! What the answering side shares: the pools, their targets' windows, and the one function that
//! turns a trigger into a number or a reason (used by gRPC, HTTP and the demo alike).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::trigger::{TriggerError, TriggerQuery};
use crate::extract::Extractor;
use crate::model::{Clock, Config, Pool, Signal, Source};
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
    /// Per source: the polled results when it is a Prometheus-compatible server.
    pub prom: Vec<Option<Arc<PromState>>>,
}

impl PoolState {
    /// Builds the pool's state, reusing the windows of targets that `previous` already had, so a
    /// pool updated by discovery keeps its history for every target that stayed.
    fn new(pool: Arc<Pool>, previous: Option<&PoolState>) -> PoolState {
        let extractors = pool
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
        let mut kept: HashMap<(TargetKey, usize), &Arc<TargetState>> = previous
            .map(|p| {
                p.targets
                    .iter()
                    .map(|t| ((t.key.clone(), t.source_index), t))
                    .collect()
            })
            .unwrap_or_default();
        let mut targets = Vec::new();
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
                let target = match kept.remove(&lookup) {
                    Some(old) => old.clone(),
                    None => Arc::new(TargetState::new(lookup.0, si)),
                };
                targets.push(target);
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
            pool,
            extractors,
            targets,
            prom,
        }
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
    /// Set once every pool had a full window; readiness stays true after that.
    warmed: AtomicBool,
}

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
        let next = Arc::new(PoolState::new(pool, at.map(|i| pools[i].as_ref())));
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

    /// Every exported signal (the common quantiles included) that some source of `pool` provides,
    /// resolved for `zone` (`None`: all zones) with the pool's defaults; what `/metrics` and
    /// `/pools` show.
    pub fn exported_signals(&self, pool: &PoolState, zone: Option<&str>) -> Vec<Resolved> {
        let namespace = pool.pool.namespace.clone().unwrap_or_default();
        Signal::exported()
            .into_iter()
            .filter_map(|signal| {
                let query = TriggerQuery {
                    pool: pool.pool.name.clone(),
                    zone: zone.map(str::to_string),
                    signal,
                    source: None,
                    aggregation: None,
                    target: 1.0,
                    activation_target: 0.0,
                    window: None,
                };
                // Fails only for signals no source of the pool provides: those are not exported.
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
        let Some(zone) = r.query.zone.as_deref() else {
            return Ok(value);
        };
        let adjustments = self.adjustments.read().unwrap_or_else(|e| e.into_inner());
        let namespace = r.pool.pool.namespace.as_deref().unwrap_or_default();
        let adjustment = adjustments
            .get(namespace)
            .and_then(|pools| pools.get(&r.pool.pool.name))
            .and_then(|zones| zones.get(zone));
        Ok(match adjustment {
            Some(adj) => spillover::adjust(value, r.query.signal, r.query.target, adj),
            None => value,
        })
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
        let profile = &r.pool.pool.sources[r.source_index].profile;
        let unavailable = |reason: signals::Unavailable| QueryError::Unavailable {
            pool: r.pool.pool.name.clone(),
            zone: r.query.zone.clone().unwrap_or_else(|| "all".into()),
            signal: r.query.signal.name(),
            reason: reason.to_string(),
        };
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
            return signals::evaluate(profile, r.query.signal, r.query.aggregation, &inputs)
                .map_err(unavailable);
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
        signals::evaluate(profile, r.query.signal, r.query.aggregation, &inputs)
            .map_err(unavailable)
    }

    /// Ready once every pool has had a full window of data from at least one target of each
    /// source, and from then on: an outage of one pool's targets must not take redbridge out of
    /// its Service (and every other pool with it); that pool answers UNAVAILABLE instead.
    pub fn readiness(&self) -> Result<(), String> {
        if self.warmed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.warm_up_status()?;
        self.warmed.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn warm_up_status(&self) -> Result<(), String> {
        let now = self.clock.now();
        for p in self.pools() {
            let window = p.pool.window.as_secs_f64();
            for (si, source) in p.pool.sources.iter().enumerate() {
                if let Some(prom) = p.prom.get(si).and_then(Option::as_ref) {
                    if prom.lock().last_success.is_none() {
                        return Err(format!(
                            "pool {:?} source {:?}: no successful Prometheus query yet",
                            p.pool.name, source.name
                        ));
                    }
                    continue;
                }
                let covered = p.targets.iter().filter(|t| t.source_index == si).any(|t| {
                    let g = t.lock();
                    g.health.up && g.health.first_success.is_some_and(|f| now - f >= window)
                });
                if !covered {
                    return Err(format!(
                        "pool {:?} source {:?}: no target has a full {window}s window yet",
                        p.pool.name, source.name
                    ));
                }
            }
        }
        Ok(())
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
