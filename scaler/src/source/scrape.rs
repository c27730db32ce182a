//! Scraping: one task per target, fetching its exposition over HTTP at the target's interval and
//! feeding the extracted reading into the target's window.
//!
//! `http://` targets are fetched by [`PlainClient`], which keeps only each target's idle socket
//! between scrapes; everything else by one shared reqwest client. Both keep connections alive
//! across scrapes. A semaphore bounds scrapes in flight; body buffers and parse scratch space are pooled across targets and taken only while a
//! scrape holds its permit, so an idle target holds no buffer and a warmed-up scrape allocates
//! only the reading it stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::http::{error_chain, PlainClient, PlainError, PlainUrl, SCRAPE_ACCEPT};
use crate::extract::{ExtractError, Extractor, Reading, Scratch};
use crate::model::Clock;
use crate::parse::ParseError;
use crate::window::TargetState;

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
    /// A web page where metrics were expected: a wrong path, a login or error page.
    #[error("answered {0}, not the Prometheus text format: is the URL right?")]
    NotMetrics(&'static str),
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("cannot parse exposition: {0}")]
    Parse(#[from] ParseError),
    /// Parsed, but not a reading to trust (a non-finite counter, a duplicate series).
    #[error("{0}")]
    Invalid(String),
}

impl From<PlainError> for ScrapeError {
    fn from(e: PlainError) -> ScrapeError {
        match e {
            PlainError::Status(code) => ScrapeError::Status(code),
            PlainError::TooLarge { limit } => ScrapeError::TooLarge { limit },
            PlainError::Html => ScrapeError::NotMetrics("an HTML page (Content-Type text/html)"),
            e => ScrapeError::Request(e.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct Scraper {
    client: reqwest::Client,
    permits: Semaphore,
    max_body_bytes: usize,
    buffers: BufferPool,
    plain: PlainClient,
}

/// Buffers larger than this are not pooled: a huge one-off body must not pin its memory.
const MAX_POOLED_BUFFER: usize = 4 << 20;

/// Body buffers and parse scratch space of the scrapes in flight. A target holds one only while
/// it scrapes (under a permit), so the pool never holds more than `max_in_flight` of each, and
/// memory follows the scrapes in flight rather than the number of targets: a per-target buffer
/// of a 100 KB body is 1 GB at 10,000 targets.
#[derive(Debug, Default)]
struct BufferPool {
    free: Mutex<Vec<(Vec<u8>, Scratch)>>,
}

impl BufferPool {
    fn take(&self) -> (Vec<u8>, Scratch) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Returns a buffer for the next scrape. One that grew past [`MAX_POOLED_BUFFER`], far
    /// past the body it held, or past 1 MiB for a refused body (a hostile target may send one
    /// on every scrape) is freed instead of pinning its memory.
    fn give(&self, mut buf: Vec<u8>, scratch: Scratch, refused: bool) {
        let cap = buf.capacity();
        if cap > MAX_POOLED_BUFFER || cap > 4 * buf.len().max(1 << 20) || (refused && cap > 1 << 20)
        {
            buf = Vec::new();
        }
        buf.clear();
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((buf, scratch));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
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
            .user_agent(crate::source::http::USER_AGENT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ScrapeError::Request(e.to_string()))?;
        Ok(Scraper {
            client,
            permits: Semaphore::new(settings.max_in_flight.max(1)),
            max_body_bytes: settings.max_body_bytes,
            buffers: BufferPool::default(),
            plain: PlainClient::default(),
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
            if let Some(plain) = PlainUrl::parse(url) {
                match self.plain.get(&plain, buf, self.max_body_bytes).await {
                    // Redirects are followed by reqwest, as every other URL is fetched.
                    Err(PlainError::Redirect) => buf.clear(),
                    other => return other.map_err(ScrapeError::from),
                }
            }
            let mut resp = self
                .client
                .get(url)
                // Ask for the text format: some servers would otherwise answer OpenMetrics or protobuf.
                .header(reqwest::header::ACCEPT, SCRAPE_ACCEPT)
                .send()
                .await
                .map_err(|e| ScrapeError::Request(error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(ScrapeError::Status(resp.status().as_u16()));
            }
            let html = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
            if html {
                return Err(ScrapeError::NotMetrics(
                    "an HTML page (Content-Type text/html)",
                ));
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

    /// Scrapes one target until `shutdown`, on the target's wall-clock phase (see [`phase`]):
    /// a fleet's targets are spread over the interval, and every replica scrapes a target at
    /// the same instants, so replicas behind one Service answer KEDA alike.
    pub async fn run(self: Arc<Self>, job: TargetJob, clock: Clock, shutdown: CancellationToken) {
        let mut ticks = phase_ticks(&job.target.key.url, job.interval, SystemTime::now());
        let retention = job.retention.as_secs_f64();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // Boxed: the fetch's state is big, and every idle target's task would otherwise
            // hold room for it between scrapes.
            let Some((started, result, bytes)) = Box::pin(self.scrape_permitted(&job, clock)).await
            else {
                return; // the semaphore is never closed; stop if it ever is
            };
            let counters = job.extractor.counters();
            let finished = clock.now();
            let duration = finished - started;
            match result {
                Ok(reading) => {
                    let was_flagged = job.target.lock().health.inconsistent_counters;
                    // Stamped when asked, as Prometheus does: a target renders its counters as
                    // it starts answering, and a large body takes a while to arrive.
                    job.target
                        .record_reading(started, duration, bytes, reading, retention, counters);
                    let data = job.target.lock();
                    if data.health.inconsistent_counters && !was_flagged {
                        warn!(target_url = %job.target.key.url, pool = %job.target.key.pool,
                            error = data.health.last_error.as_deref().unwrap_or_default(),
                            "Counters go down on every scrape; leaving the target's rates out");
                    }
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
        }
    }

    /// One scrape under a permit, with a pooled buffer: when it started, what it read, and the
    /// body's length. `None` if the semaphore was closed.
    async fn scrape_permitted(
        &self,
        job: &TargetJob,
        clock: Clock,
    ) -> Option<(f64, Result<Reading, ScrapeError>, usize)> {
        let _permit = self.permits.acquire().await.ok()?;
        let (mut buf, mut scratch) = self.buffers.take();
        let started = clock.now();
        let result = self.scrape_once(job, &mut buf, &mut scratch).await;
        let bytes = buf.len();
        self.buffers.give(buf, scratch, result.is_err());
        Some((started, result, bytes))
    }

    async fn scrape_once(
        &self,
        job: &TargetJob,
        buf: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Result<Reading, ScrapeError> {
        self.fetch(&job.target.key.url, job.timeout, buf).await?;
        if buf.len() < BLOCKING_PARSE_BYTES {
            return parse_body(&job.extractor, buf, scratch);
        }
        // A big body takes tens of milliseconds to parse: off the async workers, so gRPC
        // answers and other scrapes do not wait behind it.
        let (extractor, body, mut own) = (
            job.extractor.clone(),
            std::mem::take(buf),
            std::mem::take(scratch),
        );
        let (body, own, result) = tokio::task::spawn_blocking(move || {
            let result = parse_body(&extractor, &body, &mut own);
            (body, own, result)
        })
        .await
        .map_err(|e| ScrapeError::Request(format!("parse task failed: {e}")))?;
        *buf = body;
        *scratch = own;
        result
    }
}

/// Where within its interval a target is scraped, the same in every process: FNV-1a of the
/// URL (stable across builds and platforms, unlike std's hasher) modulo the interval.
pub fn phase(url: &str, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let period = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(h) % period) as u64)
}

/// How long from `wall_now` until the next instant whose time since the Unix epoch, modulo
/// `interval`, is the target's [`phase`].
pub fn until_phase(url: &str, interval: Duration, wall_now: SystemTime) -> Duration {
    let period = interval.as_nanos().max(1);
    let since_epoch = wall_now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let target = phase(url, interval).as_nanos();
    let wait = (target + period - since_epoch % period) % period;
    Duration::from_nanos(wait as u64)
}

/// The scrape ticks of a target, starting at its next phase after `wall_now`.
fn phase_ticks(url: &str, interval: Duration, wall_now: SystemTime) -> PhaseTicks {
    PhaseTicks {
        next: tokio::time::Instant::now() + until_phase(url, interval, wall_now),
        interval: interval.max(Duration::from_millis(1)),
    }
}

/// Ticks one interval apart on a fixed phase. A tick missed (a scrape longer than the interval)
/// is skipped, and the next one comes on the phase again: never a late scrape off the phase,
/// which `tokio::time::Interval` would make right away.
struct PhaseTicks {
    next: tokio::time::Instant,
    interval: Duration,
}

impl PhaseTicks {
    async fn tick(&mut self) {
        let now = tokio::time::Instant::now();
        if now > self.next {
            let behind = (now - self.next).as_nanos();
            let skip = behind.div_ceil(self.interval.as_nanos());
            self.next += self.interval * u32::try_from(skip).unwrap_or(u32::MAX);
        }
        tokio::time::sleep_until(self.next).await;
        self.next += self.interval;
    }
}

/// Bodies at least this large are parsed on a blocking thread.
const BLOCKING_PARSE_BYTES: usize = 1 << 20;

fn parse_body(
    extractor: &Extractor,
    body: &[u8],
    scratch: &mut Scratch,
) -> Result<Reading, ScrapeError> {
    let (reading, stats) = extractor.extract(body, scratch).map_err(|e| match e {
        ExtractError::Parse(e) => ScrapeError::Parse(e),
        e => ScrapeError::Invalid(e.to_string()),
    })?;
    // Unselected lines are skipped unread, so a page without a Content-Type parses as an
    // exposition of nothing; say what it is instead of "no series".
    if stats.selected == 0 && looks_like_markup(body) {
        return Err(ScrapeError::NotMetrics("an HTML or XML document"));
    }
    Ok(reading)
}

/// Whether `body` starts (after blanks) with `<`, which no exposition line does.
fn looks_like_markup(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

#[cfg(test)]
mod markup_tests {
    use super::*;

    #[test]
    fn the_phase_depends_on_the_url_only_and_stays_inside_the_interval() {
        let i = Duration::from_secs(15);
        let a = phase("http://10.0.0.1:9901/stats/prometheus", i);
        assert_eq!(a, phase("http://10.0.0.1:9901/stats/prometheus", i));
        assert!(a < i);
        // FNV-1a is fixed: the same offset from every build of every replica.
        assert_eq!(
            phase("a", Duration::from_nanos(1_000_000_007)).as_nanos(),
            0xaf63dc4c8601ec8c % 1_000_000_007
        );
        let spread: std::collections::HashSet<u128> = (0..100)
            .map(|n| phase(&format!("http://10.0.0.{n}:9901/stats"), i).as_millis() / 1500)
            .collect();
        assert!(
            spread.len() >= 8,
            "a fleet's targets spread over the interval: {spread:?}"
        );
    }

    /// Three replicas started 0.3 s and 7.2 s apart (on paused time) scrape the target at the
    /// same wall-clock instants, also after a scrape that overran the interval.
    #[tokio::test(start_paused = true)]
    async fn replicas_started_apart_scrape_a_target_at_the_same_wall_clock_instants() {
        let url = "http://10.1.2.3:8000/metrics";
        let interval = Duration::from_secs(1);
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_633_600_123);
        let mono0 = tokio::time::Instant::now();
        let mut replicas = Vec::new();
        for started_after in [0, 300, 7200] {
            let start = mono0 + Duration::from_millis(started_after);
            replicas.push(tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                // Wall-clock time of a simulated instant.
                let wall = |at: tokio::time::Instant| wall0 + (at - mono0);
                let mut ticks = phase_ticks(url, interval, wall(tokio::time::Instant::now()));
                let mut seen = Vec::new();
                for n in 0..4 {
                    ticks.tick().await;
                    seen.push(wall(tokio::time::Instant::now()));
                    if n == 1 {
                        // A scrape that takes 1.5 s: the next tick is skipped, not shifted.
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                }
                seen
            }));
        }
        let want = phase(url, interval).as_nanos();
        let mut firsts = Vec::new();
        for r in replicas {
            let seen = r.await.expect("replica task");
            for at in &seen {
                let ns = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                // tokio's timer has millisecond resolution.
                let off = (ns % interval.as_nanos()).abs_diff(want);
                assert!(off <= 1_000_000, "tick {off} ns off phase: {seen:?}");
            }
            let gaps: Vec<u128> = seen
                .windows(2)
                .map(|w| w[1].duration_since(w[0]).unwrap().as_millis())
                .collect();
            assert_eq!(gaps, vec![1000, 2000, 1000], "{seen:?}");
            firsts.push(seen[0]);
        }
        // The first two replicas started within one interval: their first scrapes coincide.
        assert!(firsts[0] == firsts[1] || firsts[1].duration_since(firsts[0]).unwrap() == interval);
    }

    #[test]
    fn markup_is_told_from_an_exposition() {
        assert!(looks_like_markup(b"\n  <!DOCTYPE html><html></html>"));
        assert!(looks_like_markup(b"<?xml version=\"1.0\"?>"));
        assert!(!looks_like_markup(b"# HELP x\nx 1\n"));
        assert!(!looks_like_markup(b""));
    }
}

#[cfg(test)]
mod tests;
