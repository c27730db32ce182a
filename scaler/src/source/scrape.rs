//! Scraping: one task per target, fetching its exposition over HTTP at the target's interval and
//! feeding the extracted reading into the target's window.
//!
//! One shared reqwest client keeps connections alive across scrapes; a semaphore bounds scrapes in
//! flight; each task reuses its body buffer and parse scratch space, so a warmed-up scrape
//! allocates only the reading it stores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::extract::{Extractor, Reading, Scratch};
use crate::parse::ParseError;
use crate::state::State;
use crate::window::{Clock, TargetState};

#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// Bodies larger than this (after decompression) fail the scrape.
    pub max_body_bytes: usize,
    /// At most this many scrapes run at once across all targets.
    pub max_in_flight: usize,
}

impl Default for ScrapeSettings {
    fn default() -> Self {
        ScrapeSettings {
            max_body_bytes: 32 << 20,
            max_in_flight: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("cannot parse exposition: {0}")]
    Parse(#[from] ParseError),
}

#[derive(Debug)]
pub struct Scraper {
    client: reqwest::Client,
    permits: Semaphore,
    max_body_bytes: usize,
}

/// Everything one target's loop needs.
pub struct TargetJob {
    pub target: Arc<TargetState>,
    pub extractor: Arc<Extractor>,
    pub interval: Duration,
    pub timeout: Duration,
    /// How long readings are kept: the pool's window.
    pub retention: Duration,
}

impl Scraper {
    pub fn new(settings: &ScrapeSettings) -> Result<Scraper, ScrapeError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("redbridge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ScrapeError::Request(e.to_string()))?;
        Ok(Scraper {
            client,
            permits: Semaphore::new(settings.max_in_flight.max(1)),
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// Fetches `url` into `buf` (cleared first), enforcing the timeout and the body cap.
    pub async fn fetch(
        &self,
        url: &str,
        timeout: Duration,
        buf: &mut Vec<u8>,
    ) -> Result<(), ScrapeError> {
        buf.clear();
        let work = async {
            let mut resp = self
                .client
                .get(url)
                // Ask for the text format: some servers would otherwise answer OpenMetrics or protobuf.
                .header(
                    reqwest::header::ACCEPT,
                    "text/plain;version=0.0.4;q=1,*/*;q=0.1",
                )
                .send()
                .await
                .map_err(|e| ScrapeError::Request(error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(ScrapeError::Status(resp.status().as_u16()));
            }
            let limit = self.max_body_bytes;
            if resp.content_length().is_some_and(|n| n as usize > limit) {
                return Err(ScrapeError::TooLarge { limit });
            }
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| ScrapeError::Request(error_chain(&e)))?
            {
                if buf.len() + chunk.len() > limit {
                    return Err(ScrapeError::TooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ScrapeError::Timeout(timeout))?
    }

    /// Scrapes one target until `shutdown`. The first scrape waits a random part of the interval,
    /// so a fleet's targets are spread over the interval instead of scraped in bursts.
    pub async fn run(self: Arc<Self>, job: TargetJob, clock: Clock, shutdown: CancellationToken) {
        let offset = job.interval.mul_f64(rand::rng().random_range(0.0..1.0));
        let start = tokio::time::Instant::now() + offset;
        let mut ticks = tokio::time::interval_at(start, job.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = Vec::new();
        let mut scratch = Scratch::default();
        let retention = job.retention.as_secs_f64();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let started = clock.now();
            let result = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return; // the semaphore is never closed; stop if it ever is
                };
                self.scrape_once(&job, &mut buf, &mut scratch).await
            };
            let finished = clock.now();
            let duration = finished - started;
            match result {
                Ok(reading) => {
                    job.target
                        .record_success(finished, duration, buf.len(), reading, retention);
                }
                Err(e) => {
                    // Warn when a target goes down, not on every failed scrape while it stays down.
                    let first_failure = {
                        let data = job.target.lock();
                        data.health.up || data.health.scrapes == 0
                    };
                    if first_failure {
                        warn!(target_url = %job.target.key.url, pool = %job.target.key.pool, error = %e, "Scrape failed");
                    } else {
                        debug!(target_url = %job.target.key.url, error = %e, "Scrape failed again");
                    }
                    job.target
                        .record_failure(finished, duration, e.to_string(), retention);
                }
            }
            // Keep a huge one-off body from pinning memory forever.
            if buf.capacity() > 4 * buf.len().max(1 << 20) {
                buf = Vec::new();
            }
        }
    }

    async fn scrape_once(
        &self,
        job: &TargetJob,
        buf: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Result<Reading, ScrapeError> {
        self.fetch(&job.target.key.url, job.timeout, buf).await?;
        let (reading, _) = job.extractor.extract(buf, scratch)?;
        Ok(reading)
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Keeps one scrape task per target of every pool, following pool and target changes (from the
/// file at start, later from discovery) until `shutdown`; then waits for the tasks to stop.
pub async fn run_all(state: Arc<State>, scraper: Arc<Scraper>, shutdown: CancellationToken) {
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
            for target in &p.targets {
                let interval = p.interval_of(target);
                let job = TargetJob {
                    extractor: p.extractors[target.source_index].clone(),
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
            for prom in p.prom.iter().flatten() {
                wanted_polls.insert(Arc::as_ptr(prom) as usize, prom.clone());
            }
        }
        pollers.retain(|key, token| {
            let keep = wanted_polls.contains_key(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (key, prom) in wanted_polls {
            if let std::collections::hash_map::Entry::Vacant(slot) = pollers.entry(key) {
                let token = shutdown.child_token();
                slot.insert(token.clone());
                tasks.spawn(crate::promsource::run(prom, state.clock, token));
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
