//! Polled inputs: what a Prometheus-compatible source last answered, per zone. The poller
//! ([`crate::source::prometheus`]) is its only writer; answers copy out what they need.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{PromSource, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryPart {
    /// A per-second rate (counters) or the `Sum` aggregate (gauges).
    Value,
    /// Per-`le` bucket rates of a histogram.
    Buckets,
    /// Gauge aggregates beyond the sum, so any trigger aggregation can be served.
    Count,
    Max,
}

/// What one role reads in one zone at the last poll.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZoneInputs {
    pub values: BTreeMap<(Role, QueryPart), f64>,
    /// Bucket rates by bound (seconds), sorted, per histogram role.
    pub buckets: BTreeMap<Role, Vec<(f64, f64)>>,
}

#[derive(Debug, Default, Clone)]
pub struct PromData {
    pub last_success: Option<f64>,
    pub last_attempt: Option<f64>,
    pub last_duration: f64,
    pub last_error: Option<String>,
    pub polls: u64,
    pub failures: u64,
    pub zones: BTreeMap<String, ZoneInputs>,
}

/// The latest results of one Prometheus source of a pool.
#[derive(Debug)]
pub struct PromState {
    pub config: Arc<PromSource>,
    data: Mutex<PromData>,
}

impl PromState {
    pub fn new(config: Arc<PromSource>) -> PromState {
        PromState {
            config,
            data: Mutex::new(PromData::default()),
        }
    }

    /// A poisoned lock only means a panic elsewhere while holding it; the data is still whole.
    pub fn lock(&self) -> MutexGuard<'_, PromData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}
