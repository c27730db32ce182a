//! What the answering side shares: the pools, their targets' windows, and the one function that
//! turns a trigger into a number or a reason (used by gRPC, HTTP and the demo alike).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::trigger::{TriggerError, TriggerQuery};
use crate::config::{Config, Pool, Signal};
use crate::metrics::Metrics;
use crate::signals::{self, Rules, TargetView};
use crate::window::{Clock, TargetKey, TargetState};

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
    pub pool: Arc<Pool>,
    pub pool_index: usize,
    pub source_index: usize,
    pub rules: Rules,
}

#[derive(Debug)]
pub struct PoolState {
    pub pool: Arc<Pool>,
    /// Written by discovery (or once from the file), read by answers.
    pub targets: RwLock<Vec<Arc<TargetState>>>,
}

#[derive(Debug)]
pub struct State {
    pub clock: Clock,
    pub pools: Vec<PoolState>,
    pub metrics: Metrics,
}

impl State {
    /// State for a static configuration: every target known up front.
    pub fn new(config: &Config, clock: Clock) -> State {
        let pools = config
            .pools
            .iter()
            .map(|pool| {
                let targets = pool
                    .sources
                    .iter()
                    .enumerate()
                    .flat_map(|(si, source)| {
                        source.targets.iter().map(move |t| {
                            Arc::new(TargetState::new(
                                TargetKey {
                                    pool: pool.name.clone(),
                                    source: source.name.clone(),
                                    zone: t.zone.clone(),
                                    url: t.url.clone(),
                                },
                                si,
                            ))
                        })
                    })
                    .collect();
                PoolState {
                    pool: pool.clone(),
                    targets: RwLock::new(targets),
                }
            })
            .collect();
        State {
            clock,
            pools,
            metrics: Metrics::default(),
        }
    }

    pub fn targets(&self, pool_index: usize) -> Vec<Arc<TargetState>> {
        self.pools
            .get(pool_index)
            .map(|p| p.targets.read().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Binds trigger metadata to a pool, source and zone; fails on anything a user must fix.
    pub fn resolve(&self, namespace: &str, query: TriggerQuery) -> Result<Resolved, QueryError> {
        let (pool_index, pool) = self
            .pools
            .iter()
            .enumerate()
            .find(|(_, p)| {
                p.pool.name == query.pool
                    && p.pool.namespace.as_deref().is_none_or(|ns| ns == namespace)
            })
            .map(|(i, p)| (i, p.pool.clone()))
            .ok_or_else(|| {
                QueryError::NotFound(format!(
                    "no pool {:?} for namespace {namespace:?}; pools: {}",
                    query.pool,
                    self.pool_names(namespace)
                ))
            })?;
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
            pool,
            pool_index,
            source_index,
            rules,
        })
    }

    /// The signal's current value, or why there is none.
    pub fn evaluate(&self, r: &Resolved) -> Result<f64, QueryError> {
        self.evaluate_at(r, self.clock.now())
    }

    pub fn evaluate_at(&self, r: &Resolved, now: f64) -> Result<f64, QueryError> {
        let targets: Vec<Arc<TargetState>> = self
            .targets(r.pool_index)
            .into_iter()
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
        let profile = &r.pool.sources[r.source_index].profile;
        signals::evaluate(
            profile,
            r.query.signal,
            r.query.aggregation,
            &r.rules,
            now,
            &views,
        )
        .map_err(|reason| QueryError::Unavailable {
            pool: r.pool.name.clone(),
            zone: r.query.zone.clone().unwrap_or_else(|| "all".into()),
            signal: r.query.signal.name(),
            reason: reason.to_string(),
        })
    }

    /// Ready once every pool has a full window of data from at least one target of each source.
    pub fn readiness(&self) -> Result<(), String> {
        let now = self.clock.now();
        for (i, p) in self.pools.iter().enumerate() {
            let window = p.pool.window.as_secs_f64();
            for (si, source) in p.pool.sources.iter().enumerate() {
                let covered = self
                    .targets(i)
                    .iter()
                    .filter(|t| t.source_index == si)
                    .any(|t| {
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
        let names: Vec<&str> = self
            .pools
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
