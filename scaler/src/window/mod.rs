//! Windows: what the sources have read, kept for the signals.
//!
//! Scraped targets: each scrape task owns one [`TargetState`] (the readings of the last `window`
//! seconds and the target's health) and is its only writer; answers lock a target only to copy
//! out what they need. Time is seconds on redbridge's monotonic clock
//! ([`crate::model::Clock`]), passed in. Polled sources keep their latest results in [`polled`].

pub mod polled;

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::extract::{Reading, ValueRef};

/// Scrape-to-scrape transitions remembered for the counter check (bits of a `u16`).
const DECREASE_HISTORY: u32 = 16;
/// Counters that go down this many times among the remembered transitions are not resets.
const DECREASES_TO_FLAG: u32 = 2;
/// After one decrease, readings are refused until this many scrapes went up again: with two
/// pods behind a URL, the scrape after a "reset" jumps back by a lifetime total.
const CLEAN_AFTER_RESET: u32 = 2;

/// Why a target's counters are not believed: shown as its `last_error`.
pub fn load_balanced_message(decreases: u32, transitions: u32) -> String {
    format!(
        "counters go down on every scrape ({decreases} of the last {transitions} scrapes): is this \
         URL load-balanced across several pods (a Service address instead of pod addresses)? \
         Its rates are left out"
    )
}

/// One successful scrape. Cloning shares the reading's numbers.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub at: f64,
    pub reading: Reading,
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
    /// Counters went down on several recent scrapes (see [`TargetState::record_reading`]):
    /// the target's readings are not kept while this holds.
    pub inconsistent_counters: bool,
}

#[derive(Debug, Default)]
pub struct TargetData {
    pub health: Health,
    /// Oldest first; nothing older than the retention. Kept contiguous (see [`Self::samples`]).
    samples: VecDeque<Scrape>,
    /// The last successful reading, kept even while readings are refused, to compare with.
    last_reading: Option<Reading>,
    /// One bit per recent scrape-to-scrape transition (newest lowest): a counter went down.
    decreases: u16,
    /// Transitions recorded, saturating at [`DECREASE_HISTORY`].
    transitions: u32,
    /// Scrapes still to refuse after a decrease (see [`CLEAN_AFTER_RESET`]).
    hold: u32,
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

    /// Records a successful scrape whose inputs carry no counter the caller knows of; see
    /// [`Self::record_reading`].
    pub fn record_success(
        &self,
        at: f64,
        duration: f64,
        bytes: usize,
        reading: Reading,
        retention: f64,
    ) {
        self.record_reading(at, duration, bytes, reading, retention, &[]);
    }

    /// Records a successful scrape. `counters[i]` says input `i` is a counter (histograms always
    /// are).
    ///
    /// A decrease looks like a reset (a container restarted), but it is also what several pods
    /// behind one URL look like, each scrape answered by another: the next scrape then jumps
    /// back by a lifetime total, which a rate would take for traffic. So on a decrease the
    /// window is dropped and readings are refused until the counters went up on
    /// [`CLEAN_AFTER_RESET`] scrapes; counters that go down on [`DECREASES_TO_FLAG`] of the last
    /// [`DECREASE_HISTORY`] scrapes mark the target (`inconsistent_counters`, a `last_error`
    /// that says why) until they have not gone down for [`DECREASE_HISTORY`] scrapes. A refused
    /// scrape counts as a failure: the target is down, and no rate is made from it.
    pub fn record_reading(
        &self,
        at: f64,
        duration: f64,
        bytes: usize,
        reading: Reading,
        retention: f64,
        counters: &[bool],
    ) {
        let mut data = self.lock();
        let mut reading = reading;
        // Usually the same shape already (the extractor's); one per target when its targets
        // differ.
        if let Some(prev) = &data.last_reading {
            reading.share_shape(prev);
        }
        if let Some(prev) = data.last_reading.replace(reading.clone()) {
            let down = went_down(&prev, &reading, counters);
            data.decreases = (data.decreases << 1) | u16::from(down);
            data.transitions = (data.transitions + 1).min(DECREASE_HISTORY);
            if down {
                data.samples.clear();
                data.hold = CLEAN_AFTER_RESET;
            } else {
                data.hold = data.hold.saturating_sub(1);
            }
        }
        let decreases = data.decreases.count_ones();
        let flagged = if data.health.inconsistent_counters {
            decreases > 0
        } else {
            decreases >= DECREASES_TO_FLAG
        };
        if flagged || data.hold > 0 {
            let error = if flagged {
                load_balanced_message(decreases, data.transitions)
            } else {
                format!(
                    "counters went down (a restart?): their rates resume after {} more scrapes \
                     on which they go up",
                    data.hold
                )
            };
            let h = &mut data.health;
            h.inconsistent_counters = flagged;
            h.up = false;
            h.last_attempt = Some(at);
            h.last_duration = duration;
            h.last_error = Some(error);
            h.scrapes += 1;
            h.failures += 1;
            h.last_body_bytes = bytes;
            data.samples.clear();
            return;
        }
        data.health.inconsistent_counters = false;
        let h = &mut data.health;
        h.up = true;
        h.first_success.get_or_insert(at);
        h.last_success = Some(at);
        h.last_attempt = Some(at);
        h.last_duration = duration;
        h.last_error = None;
        h.scrapes += 1;
        h.last_body_bytes = bytes;
        data.samples.push_back(Scrape { at, reading });
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

/// Whether any counter input of `cur` is below its value in `prev`.
fn went_down(prev: &Reading, cur: &Reading, counters: &[bool]) -> bool {
    prev.iter()
        .zip(cur.iter())
        .enumerate()
        .any(|(i, pair)| match pair {
            (ValueRef::Scalar(a), ValueRef::Scalar(b)) => {
                counters.get(i).copied().unwrap_or(false) && b < a
            }
            (ValueRef::Histogram(a), ValueRef::Histogram(b)) => b.count < a.count,
            _ => false,
        })
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
    use crate::extract::{HistRef, Value};

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
            t.record_success(f64::from(i), 0.01, 10, Reading::default(), 3.0);
        }
        let data = t.lock();
        let ats: Vec<f64> = data.samples().iter().map(|s| s.at).collect();
        assert_eq!(ats, vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(data.health.first_success, Some(0.0));
        assert_eq!(data.health.scrapes, 10);
    }

    fn scalar(v: f64) -> Reading {
        vec![Value::Scalar(v)].into()
    }

    #[test]
    fn one_decrease_restarts_the_window_after_two_scrapes_that_go_up() {
        let t = TargetState::new(key(), 0);
        let mut states = Vec::new();
        for (i, v) in [100.0, 110.0, 5.0, 15.0, 25.0, 35.0]
            .into_iter()
            .enumerate()
        {
            t.record_reading(i as f64, 0.01, 10, scalar(v), 60.0, &[true]);
            let data = t.lock();
            states.push((data.health.up, data.samples().len()));
        }
        assert_eq!(
            states,
            vec![
                (true, 1),
                (true, 2),
                (false, 0),
                (false, 0),
                (true, 1),
                (true, 2)
            ]
        );
        let data = t.lock();
        assert!(!data.health.inconsistent_counters);
        assert_eq!(data.health.last_error, None);
        assert_eq!(data.samples()[0].at, 4.0);
    }

    #[test]
    fn a_gauge_going_down_is_not_a_counter_decrease() {
        let t = TargetState::new(key(), 0);
        for i in 0..10 {
            t.record_reading(
                f64::from(i),
                0.01,
                10,
                scalar(f64::from(10 - i)),
                60.0,
                &[false],
            );
        }
        assert!(t.lock().health.up);
        assert_eq!(t.lock().samples().len(), 10);
    }

    /// Two pods behind one URL, answered in turn: the counter alternates between their totals.
    #[test]
    fn counters_alternating_between_two_pods_mark_the_target_and_drop_its_window() {
        let t = TargetState::new(key(), 0);
        let mut flagged_at = None;
        for i in 0..12u32 {
            let v = if i % 2 == 0 {
                1e9 + f64::from(i)
            } else {
                10.0 + f64::from(i)
            };
            t.record_reading(f64::from(i), 0.01, 10, scalar(v), 60.0, &[true]);
            if flagged_at.is_none() && t.lock().health.inconsistent_counters {
                flagged_at = Some(i);
            }
        }
        // Decreases at scrapes 1 and 3: the second one flags it.
        assert_eq!(flagged_at, Some(3));
        let data = t.lock();
        assert!(!data.health.up);
        assert!(
            data.samples().is_empty(),
            "no reading of a flagged target is kept"
        );
        let err = data.health.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("load-balanced across several pods"), "{err}");
        // Nothing after the first decrease was taken: not even the jump back up at scrape 2.
        assert_eq!(data.health.last_success, Some(0.0));
    }

    #[test]
    fn a_flagged_target_recovers_after_a_clean_history() {
        let t = TargetState::new(key(), 0);
        let mut at = 0.0;
        for v in [10.0, 5.0, 4.0, 3.0] {
            t.record_reading(at, 0.01, 10, scalar(v), 60.0, &[true]);
            at += 1.0;
        }
        assert!(t.lock().health.inconsistent_counters);
        // Fifteen clean transitions are not enough: the last decrease is still remembered.
        for i in 0..15 {
            t.record_reading(at, 0.01, 10, scalar(10.0 + f64::from(i)), 60.0, &[true]);
            at += 1.0;
        }
        assert!(t.lock().health.inconsistent_counters);
        t.record_reading(at, 0.01, 10, scalar(100.0), 60.0, &[true]);
        let data = t.lock();
        assert!(data.health.up);
        assert_eq!(data.health.last_error, None);
        assert_eq!(
            data.samples().len(),
            1,
            "the window restarts from the first clean reading"
        );
    }

    #[test]
    fn histogram_counts_going_down_count_as_decreases() {
        let t = TargetState::new(key(), 0);
        for (i, c) in [50.0, 40.0, 30.0, 20.0].into_iter().enumerate() {
            let h = crate::extract::Hist::new(vec![(f64::INFINITY, c)], c, 0.0);
            t.record_reading(
                i as f64,
                0.01,
                10,
                vec![Value::Histogram(h)].into(),
                60.0,
                &[false],
            );
        }
        assert!(t.lock().health.inconsistent_counters);
    }

    fn hist_reading(bounds: &[f64], counts: &[f64]) -> Reading {
        let buckets = bounds.iter().copied().zip(counts.iter().copied()).collect();
        let count = counts.last().copied().unwrap_or(0.0);
        vec![
            Value::Scalar(count),
            Value::Histogram(crate::extract::Hist::new(buckets, count, 0.5 * count)),
        ]
        .into()
    }

    fn hist_at(s: &Scrape) -> Option<HistRef<'_>> {
        match s.reading.get(1)? {
            ValueRef::Histogram(h) => Some(h),
            _ => None,
        }
    }

    /// The window's (at, buckets) per scrape.
    type Kept = Vec<(f64, Vec<(f64, f64)>)>;

    /// Feeds `readings` at 0, 1, 2... s; returns the window's (at, buckets) and, per neighbouring
    /// pair of histograms, whether they share one bound allocation.
    fn record_all(readings: Vec<Reading>) -> (Kept, Vec<bool>) {
        let t = TargetState::new(key(), 0);
        for (i, r) in readings.into_iter().enumerate() {
            t.record_reading(i as f64, 0.01, 10, r, 60.0, &[true, false]);
        }
        let data = t.lock();
        let kept = data
            .samples()
            .iter()
            .map(|s| (s.at, hist_at(s).map(|h| h.to_buckets()).unwrap_or_default()))
            .collect();
        let hists: Vec<_> = data.samples().iter().filter_map(hist_at).collect();
        let shared = hists
            .windows(2)
            .map(|w| w[0].shares_bounds_with(&w[1]))
            .collect();
        (kept, shared)
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn unchanged_bounds_are_stored_once_per_target() {
        let b = [0.1, 1.0, INF];
        let (kept, shared) = record_all(vec![
            hist_reading(&b, &[1.0, 2.0, 3.0]),
            hist_reading(&b, &[2.0, 4.0, 6.0]),
            hist_reading(&b, &[3.0, 6.0, 9.0]),
        ]);
        assert_eq!(shared, vec![true, true]);
        assert_eq!(
            kept[2],
            (2.0, vec![(0.1, 3.0), (1.0, 6.0), (INF, 9.0)]),
            "counts are each reading's own"
        );
    }

    #[test]
    fn bounds_that_change_mid_window_get_their_own_copy() {
        let (a, b) = ([0.1, 1.0, INF], [0.1, 0.5, 1.0, INF]);
        let (kept, shared) = record_all(vec![
            hist_reading(&a, &[1.0, 2.0, 3.0]),
            hist_reading(&a, &[2.0, 4.0, 6.0]),
            hist_reading(&b, &[2.0, 3.0, 4.0, 7.0]),
            hist_reading(&b, &[3.0, 4.0, 5.0, 8.0]),
            hist_reading(&a, &[4.0, 6.0, 9.0]),
        ]);
        assert_eq!(shared, vec![true, false, true, false]);
        assert_eq!(kept[1].1, vec![(0.1, 2.0), (1.0, 4.0), (INF, 6.0)]);
        assert_eq!(
            kept[2].1,
            vec![(0.1, 2.0), (0.5, 3.0), (1.0, 4.0), (INF, 7.0)]
        );
        assert_eq!(kept[4].1, vec![(0.1, 4.0), (1.0, 6.0), (INF, 9.0)]);
        // Bit for bit what each scrape read, as if each owned its bounds.
        let t = TargetState::new(key(), 0);
        let mut own = Vec::new();
        for (i, (bounds, counts)) in [
            (&a[..], &[1.0, 2.0, 3.0][..]),
            (&a, &[2.0, 4.0, 6.0]),
            (&b, &[2.0, 3.0, 4.0, 7.0]),
            (&b, &[3.0, 4.0, 5.0, 8.0]),
            (&a, &[4.0, 6.0, 9.0]),
        ]
        .into_iter()
        .enumerate()
        {
            own.push(hist_reading(bounds, counts));
            t.record_reading(i as f64, 0.01, 10, own[i].clone(), 60.0, &[true, false]);
        }
        let bits = |h: HistRef<'_>| -> (Vec<(u64, u64)>, u64, u64) {
            let b = h.buckets().map(|(a, b)| (a.to_bits(), b.to_bits()));
            (b.collect(), h.count.to_bits(), h.sum.to_bits())
        };
        let data = t.lock();
        let windowed: Vec<_> = data
            .samples()
            .iter()
            .filter_map(hist_at)
            .map(bits)
            .collect();
        let owned: Vec<_> = own
            .iter()
            .filter_map(|r| match r.get(1)? {
                ValueRef::Histogram(h) => Some(bits(h)),
                _ => None,
            })
            .collect();
        assert_eq!(windowed, owned);
    }

    #[test]
    fn a_family_that_disappears_and_returns_keeps_its_values() {
        let b = [0.1, 1.0, INF];
        let (kept, shared) = record_all(vec![
            hist_reading(&b, &[1.0, 2.0, 3.0]),
            hist_reading(&b, &[2.0, 4.0, 6.0]),
            vec![Value::Scalar(6.0), Value::Absent].into(),
            hist_reading(&b, &[3.0, 6.0, 9.0]),
            hist_reading(&b, &[4.0, 8.0, 12.0]),
        ]);
        assert_eq!(kept[2], (2.0, vec![]));
        assert_eq!(kept[3].1, vec![(0.1, 3.0), (1.0, 6.0), (INF, 9.0)]);
        // Shared before the gap and after it; the gap's neighbours need not share.
        assert_eq!(shared.len(), 3);
        assert!(shared[0] && shared[2], "{shared:?}");
    }

    #[test]
    fn a_reset_restarts_the_window_with_the_new_counts_and_shared_bounds() {
        let b = [0.1, 1.0, INF];
        let (kept, shared) = record_all(vec![
            hist_reading(&b, &[10.0, 20.0, 30.0]),
            hist_reading(&b, &[11.0, 21.0, 31.0]),
            // The container restarted: counts start over.
            hist_reading(&b, &[1.0, 1.0, 1.0]),
            hist_reading(&b, &[2.0, 2.0, 2.0]),
            hist_reading(&b, &[3.0, 3.0, 3.0]),
            hist_reading(&b, &[4.0, 5.0, 6.0]),
        ]);
        assert_eq!(
            kept,
            vec![
                (4.0, vec![(0.1, 3.0), (1.0, 3.0), (INF, 3.0)]),
                (5.0, vec![(0.1, 4.0), (1.0, 5.0), (INF, 6.0)]),
            ]
        );
        assert_eq!(shared, vec![true]);
    }

    #[test]
    fn failure_keeps_data_but_marks_down() {
        let t = TargetState::new(key(), 0);
        t.record_success(1.0, 0.01, 10, Reading::default(), 30.0);
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
