//! redbridge's own counters: gRPC calls, reconciles, the controller's zone view and the triggers
//! KEDA asks about. They know nothing of the pools; [`crate::answer::metrics`] renders them with
//! everything else `/metrics` shows.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bounds of `redbridge_grpc_request_duration_seconds`.
pub const GRPC_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

#[derive(Debug)]
pub struct Metrics {
    pub(crate) grpc: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub(crate) grpc_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Per (namespace/pool, zone): the controller's latest view of the zone.
    pub(crate) zones: Mutex<BTreeMap<(String, String), ZoneStatus>>,
    /// Per outcome (`ok` or an error kind): reconciles of ZonalScaledObjects.
    pub(crate) reconciles: Mutex<BTreeMap<String, u64>>,
    /// Targets of the triggers KEDA asked about, so dashboards can draw a signal against its
    /// target. Entries expire when KEDA stops asking (it asks every polling interval).
    pub(crate) triggers: moka::sync::Cache<TriggerKey, (f64, f64)>,
    /// Configuration file reloads: applied, refused, and whether the last attempt applied.
    pub config_reloads: std::sync::atomic::AtomicU64,
    pub config_reload_failures: std::sync::atomic::AtomicU64,
    pub config_last_reload_ok: std::sync::atomic::AtomicBool,
    /// In controller mode: whether this replica holds the Lease (`None`: no election, `serve`).
    pub(crate) leader: Mutex<Option<bool>>,
}

/// (namespace, pool, zone, signal) of a trigger.
pub(crate) type TriggerKey = (String, String, String, String);

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            grpc: Mutex::default(),
            grpc_latency: Mutex::default(),
            zones: Mutex::default(),
            reconciles: Mutex::default(),
            triggers: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(300))
                .build(),
            config_reloads: Default::default(),
            config_reload_failures: Default::default(),
            config_last_reload_ok: std::sync::atomic::AtomicBool::new(true),
            leader: Mutex::new(None),
        }
    }
}

/// What the controller last computed for one zone of a ZonalScaledObject.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ZoneStatus {
    pub ready: u32,
    pub starting: u32,
    pub desired: u32,
    /// Demand in the pool's demand unit (requests/s, queue, ...).
    pub local_demand: f64,
    pub spilled_in: f64,
    pub spilled_out: f64,
    /// With `spec.routing`: the share (0 to 1) of the pool's requests the zone serves, as
    /// written to the gateway.
    pub weight: Option<f64>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Histogram {
    pub(crate) counts: [u64; GRPC_BUCKETS.len()],
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl Metrics {
    /// Records one gRPC call: method name, status code name (`OK`, `UNAVAILABLE`, ...), seconds.
    pub fn grpc_call(&self, method: &'static str, code: &'static str, seconds: f64) {
        *self
            .grpc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method, code))
            .or_default() += 1;
        let mut latency = self.grpc_latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = latency.entry(method).or_default();
        for (i, le) in GRPC_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }
}

impl Metrics {
    /// Records a trigger's target and activation target, as GetMetricSpec resolves it.
    pub fn trigger_seen(
        &self,
        namespace: &str,
        pool: &str,
        zone: &str,
        signal: &str,
        target: f64,
        activation: f64,
    ) {
        self.triggers.insert(
            (
                namespace.to_string(),
                pool.to_string(),
                zone.to_string(),
                signal.to_string(),
            ),
            (target, activation),
        );
    }

    /// Records the controller's view of one zone (`pool` is `namespace/name`).
    pub fn set_zone_status(&self, pool: &str, zone: &str, status: ZoneStatus) {
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((pool.to_string(), zone.to_string()), status);
    }

    /// Forgets every zone of a pool (its ZonalScaledObject was deleted).
    pub fn forget_pool(&self, pool: &str) {
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(p, _), _| p != pool);
    }

    /// Records whether this replica holds the controller's Lease (and so writes).
    pub fn set_leader(&self, leading: bool) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(leading);
    }

    /// Counts one reconcile by outcome: `ok`, or a short error kind such as `apply` or `invalid_spec`.
    pub fn reconciled(&self, outcome: &str) {
        *self
            .reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome.to_string())
            .or_default() += 1;
    }
}
