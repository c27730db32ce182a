//! A Prometheus-compatible server (Prometheus, Thanos, Mimir, VictoriaMetrics) as a source, for
//! fleets too large to scrape directly.
//!
//! The same profiles drive it: [`plan`] turns a source's inputs into instant queries, [`query`]
//! runs one and decodes it, and the poller here runs them every `interval`, keeping the latest
//! per-zone results in the source's [`PromState`]. The missing-data rule is the same as for
//! direct scraping: an empty result, a NaN, a failed or stale query is UNAVAILABLE, never 0.

pub mod plan;
pub mod query;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::model::{Clock, Role, Source};
use crate::window::polled::{PromState, ZoneInputs};
use plan::PlannedQuery;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("query `{query}`: {reason}")]
    Query { query: String, reason: String },
}

/// What a poll runs for one source: its planned queries and, per role, the factor from the
/// histogram's unit to seconds.
#[derive(Debug, Clone)]
pub struct Poller {
    pub queries: Vec<PlannedQuery>,
    scales: BTreeMap<Role, f64>,
}

impl Poller {
    pub fn new(source: &Source, state: &PromState) -> Poller {
        Poller {
            queries: plan::plan(source, &state.config),
            scales: source
                .profile
                .inputs
                .iter()
                .map(|i| (i.role, i.scale))
                .collect(),
        }
    }
}

/// Runs every planned query once and replaces the stored results. A failed query fails the whole
/// poll: half a poll would mix fresh and missing inputs.
pub async fn poll_once(
    state: &PromState,
    poller: &Poller,
    client: &reqwest::Client,
    clock: &Clock,
) {
    let started = clock.now();
    let mut zones: BTreeMap<String, ZoneInputs> = state
        .config
        .zones
        .iter()
        .map(|z| (z.clone(), ZoneInputs::default()))
        .collect();
    let mut error = None;
    for q in &poller.queries {
        match query::query(client, &state.config, &q.promql).await {
            Ok(samples) => {
                let scale = poller.scales.get(&q.role).copied().unwrap_or(1.0);
                query::fold(&mut zones, q, &state.config.zone_label, scale, &samples);
            }
            Err(reason) => {
                error = Some(PromError::Query {
                    query: q.promql.clone(),
                    reason,
                });
                break;
            }
        }
    }
    let finished = clock.now();
    let mut data = state.lock();
    data.polls += 1;
    data.last_attempt = Some(finished);
    data.last_duration = finished - started;
    match error {
        None => {
            data.last_success = Some(finished);
            data.last_error = None;
            data.zones = zones;
        }
        Some(e) => {
            if data.last_error.is_none() {
                warn!(url = %state.config.url, error = %e, "Prometheus query failed");
            }
            data.failures += 1;
            data.last_error = Some(e.to_string());
        }
    }
}

/// Polls one source every `interval` until `shutdown`.
pub async fn run(state: Arc<PromState>, source: Source, clock: Clock, shutdown: CancellationToken) {
    let poller = Poller::new(&source, &state);
    let client = match query::client(&state.config) {
        Ok(c) => c,
        Err(e) => {
            // Validation builds the same client, so this only happens if files vanished since.
            warn!(url = %state.config.url, error = %e, "Cannot set up the Prometheus client");
            state.lock().last_error = Some(e.to_string());
            return;
        }
    };
    let mut ticks = tokio::time::interval(state.config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        poll_once(&state, &poller, &client, &clock).await;
    }
}
