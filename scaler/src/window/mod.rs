//! Windows: what the sources have read, kept for the signals.
//!
//! Scraped targets: each scrape task owns one [`TargetState`] (the readings of the last `window`
//! seconds and the target's health) and is its only writer; answers lock a target only to copy
//! out what they need. Time is seconds on redbridge's monotonic clock
//! ([`crate::model::Clock`]), passed in. Polled sources keep their latest results in [`polled`].

pub mod polled;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::extract::Reading;

/// One successful scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub at: f64,
    pub reading: Arc<Reading>,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The last scrape succeeded.
    pub up: bool,
    pub first_success: Option<f64>,
    pub last_success: Option<f64>,
    pub last_attempt: Option<f64>,
    /// Seconds the last scrape took, successful or not.
    pub last_duration: f64,
    pub last_error: Option<String>,
    pub scrapes: u64,
    pub failures: u64,
    pub last_body_bytes: usize,
}

#[derive(Debug, Default)]
pub struct TargetData {
    pub health: Health,
    /// Oldest first; nothing older than the retention. Kept contiguous (see [`Self::samples`]).
    samples: VecDeque<Scrape>,
}

impl TargetData {
    /// The retained scrapes, oldest first, as one slice that answers can binary-search.
    pub fn samples(&self) -> &[Scrape] {
        self.samples.as_slices().0
    }
}

/// Identity of a target inside a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// Empty for pools visible to every namespace.
    pub namespace: String,
    pub pool: String,
    pub source: String,
    pub zone: String,
    pub url: String,
}

#[derive(Debug)]
pub struct TargetState {
    pub key: TargetKey,
    /// Index of the source in the pool, so answers find the profile without a lookup by name.
    pub source_index: usize,
    data: Mutex<TargetData>,
}

impl TargetState {
    pub fn new(key: TargetKey, source_index: usize) -> TargetState {
        TargetState {
            key,
            source_index,
            data: Mutex::new(TargetData::default()),
        }
    }

    /// A poisoned lock only means a panic elsewhere while holding it; the data is still whole
    /// (every update is a push or a field write), so keep serving it.
    pub fn lock(&self) -> MutexGuard<'_, TargetData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record_success(
        &self,
        at: f64,
        duration: f64,
        bytes: usize,
        reading: Reading,
        retention: f64,
    ) {
        let mut data = self.lock();
        let h = &mut data.health;
        h.up = true;
        h.first_success.get_or_insert(at);
        h.last_success = Some(at);
        h.last_attempt = Some(at);
        h.last_duration = duration;
        h.last_error = None;
        h.scrapes += 1;
        h.last_body_bytes = bytes;
        data.samples.push_back(Scrape {
            at,
            reading: Arc::new(reading),
        });
        prune(&mut data.samples, at - retention);
        data.samples.make_contiguous();
    }

    pub fn record_failure(&self, at: f64, duration: f64, error: String, retention: f64) {
        let mut data = self.lock();
        let h = &mut data.health;
        h.up = false;
        h.last_attempt = Some(at);
        h.last_duration = duration;
        h.last_error = Some(error);
        h.scrapes += 1;
        h.failures += 1;
        prune(&mut data.samples, at - retention);
    }
}

/// Drops samples older than `oldest`, but always keeps one sample at or before it, so a rate over
/// exactly the window still has its starting point.
fn prune(samples: &mut VecDeque<Scrape>, oldest: f64) {
    while samples.len() > 1 && samples.get(1).is_some_and(|s| s.at <= oldest) {
        samples.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TargetKey {
        TargetKey {
            namespace: String::new(),
            pool: "p".into(),
            source: "s".into(),
            zone: "z".into(),
            url: "http://x".into(),
        }
    }

    #[test]
    fn keeps_one_sample_before_the_window_and_nothing_older() {
        let t = TargetState::new(key(), 0);
        for i in 0..10 {
            t.record_success(f64::from(i), 0.01, 10, vec![], 3.0);
        }
        let data = t.lock();
        let ats: Vec<f64> = data.samples().iter().map(|s| s.at).collect();
        assert_eq!(ats, vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(data.health.first_success, Some(0.0));
        assert_eq!(data.health.scrapes, 10);
    }

    #[test]
    fn failure_keeps_data_but_marks_down() {
        let t = TargetState::new(key(), 0);
        t.record_success(1.0, 0.01, 10, vec![], 30.0);
        t.record_failure(2.0, 0.5, "connection refused".into(), 30.0);
        let data = t.lock();
        assert!(!data.health.up);
        assert_eq!(data.health.last_success, Some(1.0));
        assert_eq!(
            data.health.last_error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(data.samples().len(), 1);
    }
}
