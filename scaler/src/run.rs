//! Wires the stages together: sources that follow the pools, the gRPC scaler and the HTTP port,
//! until shutdown, then drains. Used by `redbridge serve`, the controller, the demo and the
//! end-to-end tests alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::answer;
use crate::answer::grpc::{ServeError, TlsFiles};
use crate::model::{Clock, Config};
use crate::source::prometheus;
use crate::source::scrape::{ScrapeError, ScrapeSettings, Scraper, TargetJob};
use crate::state::State;

/// Each variant names the part that failed and keeps the cause as its source, so `{:#}` prints
/// the cause once.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Grpc(#[from] ServeError),
    #[error("HTTP server")]
    Http(#[from] std::io::Error),
    #[error("scrape client")]
    Scraper(#[from] ScrapeError),
    #[error("a server task panicked")]
    Panicked(#[from] tokio::task::JoinError),
}

/// Everything `run` needs besides the listeners.
pub struct Options {
    pub tls: TlsFiles,
    pub scrape: ScrapeSettings,
}

/// Builds the shared state for `config` (exposed so callers can read it while `run` serves).
pub fn state(config: &Config) -> Arc<State> {
    Arc::new(State::new(config, Clock::default()))
}

/// Serves until `shutdown` is cancelled or a server fails, then stops everything and drains.
pub async fn run(
    state: Arc<State>,
    grpc: TcpListener,
    http: TcpListener,
    options: &Options,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let scraper = Arc::new(Scraper::new(&options.scrape)?);
    info!(
        pools = state.pools().len(),
        grpc = ?grpc.local_addr().ok(),
        http = ?http.local_addr().ok(),
        "Starting redbridge"
    );
    let scrapes = tokio::spawn(run_sources(state.clone(), scraper, shutdown.clone()));
    let http = tokio::spawn(answer::http::serve(state.clone(), http, shutdown.clone()));
    // Both listeners are bound: connections wait in their backlogs until the servers accept them.
    state.mark_serving();
    let grpc = answer::grpc::serve(state, grpc, &options.tls, shutdown.clone()).await;
    // Whatever ended first, stop the rest.
    shutdown.cancel();
    let (scrapes, http) = tokio::join!(scrapes, http);
    scrapes?;
    grpc?;
    http??;
    info!("Stopped");
    Ok(())
}

/// Keeps one scrape task per target of every pool, following pool and target changes (from the
/// file at start, later from discovery) until `shutdown`; then waits for the tasks to stop.
pub async fn run_sources(state: Arc<State>, scraper: Arc<Scraper>, shutdown: CancellationToken) {
    /// A task is replaced when anything it was started with changes.
    #[derive(PartialEq, Eq, Hash)]
    struct TaskKey {
        /// Addresses of the target and extractor: identity, never dereferenced.
        target: usize,
        extractor: usize,
        interval: Duration,
        timeout: Duration,
        retention: Duration,
    }
    let mut running: HashMap<TaskKey, CancellationToken> = HashMap::new();
    let mut pollers: HashMap<usize, CancellationToken> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut changes = state.subscribe();
    loop {
        changes.borrow_and_update();
        let mut wanted = HashMap::new();
        for p in state.pools() {
            for (target, extractor) in p.targets.iter().zip(&p.target_extractors) {
                let interval = p.interval_of(target);
                let job = TargetJob {
                    extractor: extractor.clone(),
                    interval,
                    timeout: p.pool.timeout.min(interval),
                    retention: p.pool.window,
                    target: target.clone(),
                };
                let key = TaskKey {
                    target: Arc::as_ptr(&job.target) as usize,
                    extractor: Arc::as_ptr(&job.extractor) as usize,
                    interval: job.interval,
                    timeout: job.timeout,
                    retention: job.retention,
                };
                wanted.insert(key, job);
            }
        }
        // Prometheus-compatible sources: one poller each, keyed by the state's address.
        let mut wanted_polls = HashMap::new();
        for p in state.pools() {
            for (si, prom) in p.prom.iter().enumerate() {
                if let (Some(prom), Some(source)) = (prom, p.pool.sources.get(si)) {
                    wanted_polls.insert(Arc::as_ptr(prom) as usize, (prom.clone(), source.clone()));
                }
            }
        }
        pollers.retain(|key, token| {
            let keep = wanted_polls.contains_key(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (key, (prom, source)) in wanted_polls {
            if let std::collections::hash_map::Entry::Vacant(slot) = pollers.entry(key) {
                let token = shutdown.child_token();
                slot.insert(token.clone());
                tasks.spawn(prometheus::run(prom, source, state.clock, token));
            }
        }
        running.retain(|key, token| {
            let keep = wanted.contains_key(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (key, job) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let token = shutdown.child_token();
                slot.insert(token.clone());
                tasks.spawn(scraper.clone().run(job, state.clock, token));
            }
        }
        debug!(tasks = running.len(), "Scrape tasks reconciled");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
            // Reap finished tasks so the set does not grow with churn.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}
