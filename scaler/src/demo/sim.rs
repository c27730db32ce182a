//! The simulated fleet behind `redbridge demo`: per-zone gateway pods (Envoy) in front of
//! model-server replicas (vLLM v1), driven by a [`Scenario`] and by replica counts an autoscaler
//! sets, keeping the counters each real process would expose plus the ground truth the demo's
//! summary needs.
//!
//! The model, and the choices that make it so:
//! - Arrivals are Poisson per zone at the phase's rate. Each lands on the zone's gateway pods
//!   round-robin; the gateway routes it least-request (power of two choices, Envoy's default
//!   `LEAST_REQUEST`) to a Ready replica, where it waits in that replica's queue (vLLM's
//!   `num_requests_waiting`) until one of its `max_sequences` batch slots frees. With no Ready
//!   replica in the zone the request waits in the zone's pending queue (Envoy's
//!   `upstream_rq_pending_active`, as an activator or an inference gateway's flow control would
//!   hold it); past `queue_limit` it gets a 503.
//! - A running sequence first processes its prompt (the replica's prefill throughput shared by
//!   the sequences in prefill; the first token comes out of prefill), then decodes at the
//!   replica's token throughput shared by the decoding sequences, capped per sequence.
//! - A served request fails with a 500 with probability `error_rate`. Errors, 503s included,
//!   count in the ground truth as finished and not good.
//! - Replicas per zone are Pending (no GPU free), Loading (holds a GPU for `model_load` seconds),
//!   Ready, or Draining. Scale-down removes Pending first, then Loading, then Ready, newest first
//!   (a ReplicaSet's order). A removed Ready replica drains: it leaves the endpoints at once (no
//!   new work, not scrapeable) but finishes its running and waiting requests, like vLLM's graceful
//!   shutdown; whatever is left after [`DRAIN_GRACE_SECONDS`] (Kubernetes' default grace period)
//!   fails with 503. Draining replicas hold their GPU until they leave.
//! - Only Ready model servers are listed by [`Fleet::pods`]: vLLM starts its HTTP server after
//!   the model loads, so a Loading pod refuses connections. A replica that leaves takes its
//!   counters with it; a new one starts from 0 under a new generation, so consumers see target
//!   churn and counter starts as they would in a cluster.
//! - Gateway pods are a fixed set per zone and live for the whole run.
//!
//! Time is passed in: [`Fleet::tick`] advances over `(now - dt, now]`. Randomness comes from one
//! seeded [`StdRng`], so a seed and a sequence of calls always give the same run. A tick costs
//! O(pods + requests in flight + arrivals).

use std::cmp::Reverse;
use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::{CapacityOverride, Scenario};

/// Envoy's default histogram buckets (milliseconds for `upstream_rq_time`).
pub const ENVOY_RQ_TIME_BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// vLLM v1's `time_to_first_token_seconds` buckets.
pub const VLLM_TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// vLLM v1's request latency buckets (`e2e_request_latency_seconds`, `request_queue_time_seconds`).
pub const VLLM_REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Seconds a draining replica may keep serving before what it still holds fails.
pub const DRAIN_GRACE_SECONDS: f64 = 30.0;

/// Wall-clock seconds (Unix time) that simulation time 0 stands for, for `process_start_time_seconds`.
pub const SIM_EPOCH: f64 = 1_767_225_600.0;

/// Longest p95 window [`Fleet::zone_view`] can look back over, seconds.
pub const MAX_P95_WINDOW: usize = 64;

/// Ground truth is kept per second up to this many seconds (a week), bounding memory.
const MAX_TRUTH_SECONDS: usize = 7 * 86_400;

/// A Prometheus-style histogram with fixed upper bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; one more than `bounds`, the last above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts `v` in the first bucket whose bound is `>= v` (`le` semantics); ignores non-finite.
    pub fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// `(le, cumulative count)` for every bound, then `(f64::INFINITY, count)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut acc = 0;
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.counts)
            .map(move |(le, c)| {
                acc += c;
                (le, acc)
            })
    }
}

/// What one gateway pod (Envoy) exposes for the model cluster, cumulative since the pod started.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayPodState {
    /// Requests that arrived at the pod's listener (`envoy_http_downstream_rq_total`), counted
    /// when their headers arrive: before an upstream is chosen, held or refused. Demand where it
    /// arrives, where `upstream_rq_total` counts a held request only when it is released.
    pub downstream_rq_total: u64,
    /// Requests sent upstream, plus those refused with 503 for overflow (an approximation of
    /// Envoy, which charges overflow to `upstream_rq_503` only) so 5xx / total stays a ratio.
    pub upstream_rq_total: u64,
    /// Requests that got a response (including resets turned into 503).
    pub upstream_rq_completed: u64,
    /// Requests refused because the zone's pending queue was full.
    pub upstream_rq_pending_overflow: u64,
    /// Requests that entered the zone's pending queue (no Ready replica): the demand a
    /// scaled-to-zero zone still shows.
    pub upstream_rq_pending_total: u64,
    pub rq_200: u64,
    pub rq_500: u64,
    pub rq_503: u64,
    /// Milliseconds from arrival at the gateway to the end of the response, pending time included.
    pub upstream_rq_time: Histogram,
    /// Requests at a replica (waiting or running).
    pub upstream_rq_active: u64,
    /// Requests held because the zone has no Ready replica.
    pub upstream_rq_pending_active: u64,
    /// Ready replicas in the zone.
    pub membership_healthy: u64,
    /// Replicas with an address (Loading, Ready, Draining).
    pub membership_total: u64,
    pub uptime_seconds: u64,
}

impl GatewayPodState {
    fn new() -> Self {
        GatewayPodState {
            downstream_rq_total: 0,
            upstream_rq_total: 0,
            upstream_rq_completed: 0,
            upstream_rq_pending_overflow: 0,
            upstream_rq_pending_total: 0,
            rq_200: 0,
            rq_500: 0,
            rq_503: 0,
            upstream_rq_time: Histogram::new(ENVOY_RQ_TIME_BUCKETS_MS),
            upstream_rq_active: 0,
            upstream_rq_pending_active: 0,
            membership_healthy: 0,
            membership_total: 0,
            uptime_seconds: 0,
        }
    }

    /// `upstream_rq_xx{envoy_response_code_class="2"}`.
    pub fn rq_2xx(&self) -> u64 {
        self.rq_200
    }

    /// `upstream_rq_xx{envoy_response_code_class="5"}`.
    pub fn rq_5xx(&self) -> u64 {
        self.rq_500 + self.rq_503
    }
}

/// What one model-server replica (vLLM v1) exposes, cumulative since it became Ready.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPodState {
    pub num_requests_running: u32,
    pub num_requests_waiting: u32,
    /// Tokens held by running sequences over `max_sequences * (mean prompt + mean generation)`,
    /// clamped to 0..=1.
    pub kv_cache_usage_perc: f64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub request_success_total: u64,
    pub time_to_first_token_seconds: Histogram,
    pub e2e_request_latency_seconds: Histogram,
    pub request_queue_time_seconds: Histogram,
    /// Unix seconds the process started ([`SIM_EPOCH`] + simulation time).
    pub process_start_time_seconds: f64,
}

impl ModelPodState {
    fn new(started: f64) -> Self {
        ModelPodState {
            num_requests_running: 0,
            num_requests_waiting: 0,
            kv_cache_usage_perc: 0.0,
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            request_success_total: 0,
            time_to_first_token_seconds: Histogram::new(VLLM_TTFT_BUCKETS),
            e2e_request_latency_seconds: Histogram::new(VLLM_REQUEST_LATENCY_BUCKETS),
            request_queue_time_seconds: Histogram::new(VLLM_REQUEST_LATENCY_BUCKETS),
            process_start_time_seconds: SIM_EPOCH + started,
        }
    }
}

/// Which process a pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodKind {
    Gateway,
    ModelServer,
}

/// A pod's place: zone position, kind and a per-zone slot. Slots are reused by later pods (like
/// StatefulSet ordinals); [`PodInfo::generation`] tells the instances apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId {
    pub zone: usize,
    pub kind: PodKind,
    pub index: u32,
}

/// A live, scrapeable pod. `generation` is unique across the whole run, so `(id, generation)`
/// names one process: when it changes the old process is gone and its counters with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodInfo {
    pub id: PodId,
    pub generation: u64,
}

/// Lifecycle of a model-server replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplicaPhase {
    /// Waiting for a GPU; holds nothing.
    Pending,
    /// Holds a GPU and loads the model until `ready_at`.
    Loading { ready_at: f64 },
    /// Serving and scrapeable.
    Ready,
    /// Removed from the endpoints, finishing its work until `deadline`.
    Draining { deadline: f64 },
}

/// Ground truth for one zone and one second of simulation time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SecondTruth {
    /// Requests that arrived (the demand).
    pub arrivals: u32,
    /// Requests that ended, in any way.
    pub finished: u32,
    /// Finished successfully within the latency target.
    pub good: u32,
    /// Finished with a 5xx (500s and 503s).
    pub errors: u32,
    /// GPU-seconds held (Loading, Ready and Draining replicas; Pending hold none).
    pub gpu_seconds: f64,
}

/// Totals of [`SecondTruth`] over a run, per zone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZoneSummary {
    pub zone: String,
    pub arrivals: u64,
    pub finished: u64,
    pub good: u64,
    pub errors: u64,
    pub gpu_seconds: f64,
}

impl ZoneSummary {
    /// Share of finished requests that were good; `None` before any finished.
    pub fn good_ratio(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.good as f64 / self.finished as f64)
    }
}

/// One zone as the terminal view shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZoneView<'a> {
    pub name: &'a str,
    pub phase: &'a str,
    /// Requests/s the script asks for now.
    pub demand_rate: f64,
    /// Replica count last set (the Deployment's spec).
    pub desired: u32,
    pub pending: u32,
    pub loading: u32,
    pub ready: u32,
    pub draining: u32,
    /// Requests waiting: the zone's pending queue plus every replica's waiting queue.
    pub queued: u32,
    pub running: u32,
    /// GPU capacity in force; `None` is unlimited.
    pub gpu_capacity: Option<u32>,
    /// p95 end-to-end latency of successful requests over the requested window, seconds.
    pub p95_latency: Option<f64>,
}

/// An unknown zone name given to [`Fleet::set_desired`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown zone `{0}`")]
pub struct UnknownZone(pub String);

#[derive(Clone, Copy, Debug)]
struct Job {
    /// At the gateway.
    arrival: f64,
    /// At the replica.
    dispatched: f64,
    prompt: u32,
    gen: u32,
    /// The zone whose gateway took the request: its books count it, wherever it is served.
    source: u32,
    gateway: u32,
    /// Seconds added to the response for a hop to another zone.
    extra: f64,
}

#[derive(Clone, Copy, Debug)]
struct Seq {
    job: Job,
    prefill_left: f64,
    gen_done: f64,
}

#[derive(Clone, Debug)]
struct Replica {
    generation: u64,
    phase: ReplicaPhase,
    waiting: VecDeque<Job>,
    running: Vec<Seq>,
    state: ModelPodState,
}

impl Replica {
    fn serves(&self) -> bool {
        matches!(
            self.phase,
            ReplicaPhase::Ready | ReplicaPhase::Draining { .. }
        )
    }

    fn holds_gpu(&self) -> bool {
        !matches!(self.phase, ReplicaPhase::Pending)
    }

    fn load(&self) -> usize {
        self.running.len() + self.waiting.len()
    }
}

#[derive(Clone, Debug)]
struct GatewayPod {
    generation: u64,
    state: GatewayPodState,
}

/// Per-second latency buckets for the last [`MAX_P95_WINDOW`] seconds, so a p95 needs no
/// per-request storage.
#[derive(Clone, Debug)]
struct LatencyRing {
    slots: Vec<(i64, [u32; RING_BUCKETS])>,
}

const RING_BUCKETS: usize = 100;
const RING_BASE: f64 = 0.01;
const RING_RATIO: f64 = 1.125;

impl LatencyRing {
    fn new() -> Self {
        LatencyRing {
            slots: vec![(i64::MIN, [0; RING_BUCKETS]); MAX_P95_WINDOW],
        }
    }

    fn bucket(latency: f64) -> usize {
        if latency <= RING_BASE {
            return 0;
        }
        let i = ((latency / RING_BASE).ln() / RING_RATIO.ln()).ceil();
        (i as usize).min(RING_BUCKETS - 1)
    }

    fn upper(bucket: usize) -> f64 {
        RING_BASE * RING_RATIO.powi(bucket as i32)
    }

    fn record(&mut self, t: f64, latency: f64) {
        let sec = t.floor() as i64;
        let slot = &mut self.slots[sec.rem_euclid(MAX_P95_WINDOW as i64) as usize];
        if slot.0 != sec {
            *slot = (sec, [0; RING_BUCKETS]);
        }
        slot.1[Self::bucket(latency)] += 1;
    }

    /// Upper bound of the bucket holding the 95th percentile of the last `window` seconds.
    fn p95(&self, now: f64, window: f64) -> Option<f64> {
        let secs = if window.is_finite() {
            window.ceil().clamp(1.0, MAX_P95_WINDOW as f64) as i64
        } else {
            1
        };
        let last = now.floor() as i64;
        let mut merged = [0u64; RING_BUCKETS];
        for sec in last - secs + 1..=last {
            let (stamp, counts) = &self.slots[sec.rem_euclid(MAX_P95_WINDOW as i64) as usize];
            if *stamp == sec {
                for (m, c) in merged.iter_mut().zip(counts) {
                    *m += u64::from(*c);
                }
            }
        }
        let total: u64 = merged.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 95).div_ceil(100);
        let mut acc = 0;
        for (i, c) in merged.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return Some(Self::upper(i));
            }
        }
        Some(Self::upper(RING_BUCKETS - 1))
    }
}

fn second_index(t: f64) -> Option<usize> {
    let s = t.max(0.0).floor();
    (s < MAX_TRUTH_SECONDS as f64).then_some(s as usize)
}

/// The per-zone books that outlive replicas: gateway counters, ground truth, recent latencies.
/// A request is booked in the zone where it arrived, whichever zone serves it; GPU time in the
/// zone that holds the GPU.
#[derive(Clone, Debug)]
struct Books {
    gateways: Vec<GatewayPod>,
    truth: Vec<SecondTruth>,
    recent: LatencyRing,
    /// Latencies of every successful request of the run, in the ring's buckets.
    all: Vec<u64>,
}

impl Books {
    fn second(&mut self, t: f64) -> Option<&mut SecondTruth> {
        let i = second_index(t)?;
        if self.truth.len() <= i {
            self.truth.resize(i + 1, SecondTruth::default());
        }
        self.truth.get_mut(i)
    }

    fn arrived(&mut self, t: f64) {
        if let Some(s) = self.second(t) {
            s.arrivals += 1;
        }
    }

    /// A response from a replica: 200, or 500 when `failed`.
    fn served(&mut self, job: &Job, t: f64, failed: bool, latency_target: f64) {
        if let Some(gw) = self.gateways.get_mut(job.gateway as usize) {
            let s = &mut gw.state;
            s.upstream_rq_active = s.upstream_rq_active.saturating_sub(1);
            s.upstream_rq_completed += 1;
            if failed {
                s.rq_500 += 1;
            } else {
                s.rq_200 += 1;
            }
            s.upstream_rq_time
                .observe((t - job.arrival + job.extra) * 1000.0);
        }
        let latency = t - job.arrival + job.extra;
        if let Some(s) = self.second(t) {
            s.finished += 1;
            if failed {
                s.errors += 1;
            } else if latency <= latency_target {
                s.good += 1;
            }
        }
        if !failed {
            self.recent.record(t, latency);
            if let Some(c) = self.all.get_mut(LatencyRing::bucket(latency)) {
                *c += 1;
            }
        }
    }

    /// A 503: overflow at the gateway (`was_upstream` false) or a reset by a replica that left.
    fn unavailable(&mut self, job: &Job, t: f64, was_upstream: bool) {
        if let Some(gw) = self.gateways.get_mut(job.gateway as usize) {
            let s = &mut gw.state;
            s.rq_503 += 1;
            if was_upstream {
                s.upstream_rq_active = s.upstream_rq_active.saturating_sub(1);
                s.upstream_rq_completed += 1;
            } else {
                s.upstream_rq_total += 1;
                s.upstream_rq_pending_overflow += 1;
            }
        }
        if let Some(s) = self.second(t) {
            s.finished += 1;
            s.errors += 1;
        }
    }

    /// Adds `replicas` GPUs held over `(start, end]`, split across the seconds it spans.
    fn gpu(&mut self, start: f64, end: f64, replicas: usize) {
        if replicas == 0 || end <= start {
            return;
        }
        let n = replicas as f64;
        let mut t = start.max(0.0);
        while t < end {
            let next = (t.floor() + 1.0).min(end);
            if let Some(s) = self.second(t) {
                s.gpu_seconds += (next - t) * n;
            }
            t = next;
        }
    }
}

#[derive(Clone, Debug)]
struct Zone {
    replicas: Vec<Option<Replica>>,
    /// Requests held while no replica is Ready.
    pending: VecDeque<Job>,
    next_gateway: usize,
    desired: u32,
    base_capacity: Option<u32>,
    capacity: Option<u32>,
    /// Scratch: slots of Ready replicas, rebuilt each tick.
    ready: Vec<u32>,
}

impl Zone {
    fn gpus_held(&self) -> usize {
        self.replicas
            .iter()
            .flatten()
            .filter(|r| r.holds_gpu())
            .count()
    }

    fn count(&self, f: impl Fn(&ReplicaPhase) -> bool) -> u32 {
        self.replicas
            .iter()
            .flatten()
            .filter(|r| f(&r.phase))
            .count() as u32
    }

    fn free_slot(&self) -> usize {
        self.replicas
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.replicas.len())
    }

    /// Moves Pending replicas (oldest first) to Loading while GPUs are free.
    fn schedule(&mut self, now: f64, model_load: f64) {
        let cap = self.capacity.map_or(usize::MAX, |c| c as usize);
        let mut held = self.gpus_held();
        if held >= cap {
            return;
        }
        let mut waiting: Vec<(u64, usize)> = self
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.as_ref()
                    .filter(|r| r.phase == ReplicaPhase::Pending)
                    .map(|r| (r.generation, i))
            })
            .collect();
        waiting.sort_unstable();
        for (_, slot) in waiting {
            if held >= cap {
                break;
            }
            if let Some(r) = self.replicas[slot].as_mut() {
                r.phase = ReplicaPhase::Loading {
                    ready_at: now + model_load,
                };
                r.state = ModelPodState::new(now);
                held += 1;
            }
        }
    }
}

/// Per-request numbers the service loop needs, copied out of the scenario.
#[derive(Clone, Copy, Debug)]
struct Service {
    tokens_per_second: f64,
    sequence_tokens_per_second: f64,
    prefill_tokens_per_second: f64,
    max_sequences: usize,
    kv_capacity: f64,
    error_rate: f64,
    latency_target: f64,
}

/// Where each zone's gateway sends its requests: per arriving zone, the share each zone serves.
#[derive(Clone, Debug)]
struct Routing {
    /// `flows[from][to]`; a row that keeps everything local draws nothing from the generator, so
    /// a fleet that never routes runs exactly as one without routing.
    flows: Vec<Vec<f64>>,
    /// Seconds a request served in another zone pays on top (the hop there and back).
    extra_latency: f64,
    /// Requests routed `[from][to]` across zones so far.
    moved: Vec<Vec<u64>>,
}

impl Routing {
    fn local(n: usize) -> Routing {
        Routing {
            flows: (0..n)
                .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
                .collect(),
            extra_latency: 0.0,
            moved: vec![vec![0; n]; n],
        }
    }

    /// The zone that serves the next request arriving in `from`.
    fn pick(&self, from: usize, rng: &mut StdRng) -> usize {
        let Some(row) = self.flows.get(from) else {
            return from;
        };
        if row.get(from).is_some_and(|s| *s >= 1.0 - 1e-9) {
            return from;
        }
        let total: f64 = row.iter().filter(|s| s.is_finite() && **s > 0.0).sum();
        if total <= 0.0 {
            return from;
        }
        let mut u = rng.random::<f64>() * total;
        for (to, share) in row.iter().enumerate() {
            if !(share.is_finite() && *share > 0.0) {
                continue;
            }
            if u < *share {
                return to;
            }
            u -= share;
        }
        // Rounding left `u` past the last share: the last zone with a share takes it.
        row.iter().rposition(|s| *s > 0.0).unwrap_or(from)
    }
}

/// The whole simulated fleet. See the module documentation for the model.
#[derive(Clone, Debug)]
pub struct Fleet {
    scenario: Scenario,
    service: Service,
    zones: Vec<Zone>,
    /// Per zone, in the order of `zones`.
    books: Vec<Books>,
    routing: Routing,
    rng: StdRng,
    next_generation: u64,
    now: f64,
    phase: Option<usize>,
}

impl Fleet {
    /// A fleet at time 0 with `gateway_pods_per_zone` gateways (at least 1) and
    /// `scenario.replica.initial` Ready replicas per zone (as many as fit; the rest Pending).
    pub fn new(scenario: Scenario, gateway_pods_per_zone: u32, seed: u64) -> Fleet {
        let r = &scenario.replica;
        let service = Service {
            tokens_per_second: r.tokens_per_second,
            sequence_tokens_per_second: r.sequence_tokens_per_second,
            prefill_tokens_per_second: r.prefill_tokens_per_second,
            max_sequences: r.max_sequences.max(1) as usize,
            kv_capacity: (f64::from(r.max_sequences.max(1))
                * (scenario.model.prompt_tokens + scenario.model.generation_tokens))
                .max(1.0),
            error_rate: scenario.error_rate,
            latency_target: scenario.latency_target,
        };
        let mut next_generation = 0;
        let mut books = Vec::new();
        let zones: Vec<Zone> = (0..scenario.zones.len())
            .map(|z| {
                let gateways = (0..gateway_pods_per_zone.max(1))
                    .map(|_| {
                        next_generation += 1;
                        GatewayPod {
                            generation: next_generation,
                            state: GatewayPodState::new(),
                        }
                    })
                    .collect();
                books.push(Books {
                    gateways,
                    truth: Vec::new(),
                    recent: LatencyRing::new(),
                    all: vec![0; RING_BUCKETS],
                });
                let base = scenario.gpu_capacity.get(z).copied().flatten();
                Zone {
                    replicas: Vec::new(),
                    pending: VecDeque::new(),
                    next_gateway: 0,
                    desired: 0,
                    base_capacity: base,
                    capacity: base,
                    ready: Vec::new(),
                }
            })
            .collect();
        let initial = scenario.replica.initial;
        let routing = Routing::local(zones.len());
        let mut fleet = Fleet {
            scenario,
            service,
            zones,
            books,
            routing,
            rng: StdRng::seed_from_u64(seed),
            next_generation,
            now: 0.0,
            phase: None,
        };
        for z in 0..fleet.zones.len() {
            fleet.resize(z, initial, 0.0);
            for r in fleet.zones[z].replicas.iter_mut().flatten() {
                if matches!(r.phase, ReplicaPhase::Loading { .. }) {
                    r.phase = ReplicaPhase::Ready;
                }
            }
        }
        fleet.enter_phase(0.0);
        fleet.refresh_gauges();
        fleet
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Zone names; a zone's position is the `zone` of its [`PodId`]s.
    pub fn zones(&self) -> &[String] {
        &self.scenario.zones
    }

    pub fn zone_index(&self, name: &str) -> Option<usize> {
        self.scenario.zone_index(name)
    }

    /// Time of the last tick.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// The replica count last set for a zone.
    pub fn desired(&self, zone: usize) -> Option<u32> {
        self.zones.get(zone).map(|z| z.desired)
    }

    /// Routes each zone's arrivals from now on: `flows[from][to]` is the share of the requests
    /// arriving in `from` that `to` serves (as [`crate::zonal::weights::Weights::flows`]). Rows
    /// are normalised; a missing, short or empty row keeps that zone's traffic local.
    pub fn set_flows(&mut self, flows: &[Vec<f64>]) {
        let n = self.zones.len();
        for from in 0..n {
            let row = flows
                .get(from)
                .filter(|r| r.len() == n && r.iter().any(|s| s.is_finite() && *s > 0.0));
            self.routing.flows[from] = match row {
                Some(r) => r
                    .iter()
                    .map(|s| if s.is_finite() { s.max(0.0) } else { 0.0 })
                    .collect(),
                None => (0..n).map(|j| if j == from { 1.0 } else { 0.0 }).collect(),
            };
        }
    }

    /// Seconds a request served in another zone than where it arrived pays on top (default 0).
    pub fn set_cross_zone_latency(&mut self, seconds: f64) {
        self.routing.extra_latency = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
    }

    /// Requests routed from one zone (first index) to another so far.
    pub fn moved(&self) -> &[Vec<u64>] {
        &self.routing.moved
    }

    /// The `q` quantile (0..=1) of the latency of every successful request so far that arrived
    /// in one of `zones` (all zones when empty), as the upper bound of its 12.5 %-wide bucket;
    /// `None` before any.
    pub fn latency_quantile(&self, q: f64, zones: &[usize]) -> Option<f64> {
        let mut merged = vec![0u64; RING_BUCKETS];
        for (z, b) in self.books.iter().enumerate() {
            if zones.is_empty() || zones.contains(&z) {
                for (m, c) in merged.iter_mut().zip(&b.all) {
                    *m += c;
                }
            }
        }
        let total: u64 = merged.iter().sum();
        if total == 0 || !q.is_finite() {
            return None;
        }
        let rank = ((total as f64 * q.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut acc = 0;
        for (i, c) in merged.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return Some(LatencyRing::upper(i));
            }
        }
        Some(LatencyRing::upper(RING_BUCKETS - 1))
    }

    /// Sets a zone's replica count (the Deployment's `spec.replicas`) at `now`.
    pub fn set_desired(&mut self, zone: &str, n: u32, now: f64) -> Result<(), UnknownZone> {
        let z = self
            .zone_index(zone)
            .ok_or_else(|| UnknownZone(zone.to_string()))?;
        self.resize(z, n, now);
        self.refresh_gauges();
        Ok(())
    }

    fn resize(&mut self, z: usize, n: u32, now: f64) {
        let model_load = self.scenario.replica.model_load;
        let zone = &mut self.zones[z];
        zone.desired = n;
        let live = zone.count(|p| !matches!(p, ReplicaPhase::Draining { .. }));
        if n > live {
            for _ in live..n {
                self.next_generation += 1;
                let slot = zone.free_slot();
                let replica = Replica {
                    generation: self.next_generation,
                    phase: ReplicaPhase::Pending,
                    waiting: VecDeque::new(),
                    running: Vec::new(),
                    state: ModelPodState::new(now),
                };
                if slot == zone.replicas.len() {
                    zone.replicas.push(Some(replica));
                } else {
                    zone.replicas[slot] = Some(replica);
                }
            }
        } else if n < live {
            // Pending, then Loading, then Ready; newest first within each.
            let mut victims: Vec<(u8, Reverse<u64>, usize)> = zone
                .replicas
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let r = r.as_ref()?;
                    let rank = match r.phase {
                        ReplicaPhase::Pending => 0,
                        ReplicaPhase::Loading { .. } => 1,
                        ReplicaPhase::Ready => 2,
                        ReplicaPhase::Draining { .. } => return None,
                    };
                    Some((rank, Reverse(r.generation), i))
                })
                .collect();
            victims.sort_unstable();
            for &(_, _, slot) in victims.iter().take((live - n) as usize) {
                let idle = match zone.replicas[slot].as_mut() {
                    Some(r) if r.phase == ReplicaPhase::Ready => {
                        r.phase = ReplicaPhase::Draining {
                            deadline: now + DRAIN_GRACE_SECONDS,
                        };
                        r.load() == 0
                    }
                    _ => true,
                };
                if idle {
                    zone.replicas[slot] = None;
                }
            }
        }
        zone.schedule(now, model_load);
    }

    /// Applies the capacity overrides of the phase in force at `now` when it changes.
    fn enter_phase(&mut self, now: f64) {
        let index = self.scenario.phase_index_at(now);
        if self.phase == Some(index) {
            return;
        }
        self.phase = Some(index);
        let overrides = self.scenario.rates_at(now).gpu_capacity;
        for (z, zone) in self.zones.iter_mut().enumerate() {
            zone.capacity = match overrides.get(z).copied().flatten() {
                None => zone.base_capacity,
                Some(CapacityOverride::Limit(n)) => Some(n),
                Some(CapacityOverride::Freeze) => Some(zone.gpus_held() as u32),
            };
        }
    }

    /// Advances the simulation over `(now - dt, now]`. A non-finite time or a `dt` not above 0
    /// changes nothing.
    pub fn tick(&mut self, now: f64, dt: f64) {
        if !now.is_finite() || !dt.is_finite() || dt <= 0.0 {
            return;
        }
        let start = now - dt;
        self.enter_phase(now);
        let model_load = self.scenario.replica.model_load;
        let queue_limit = self.scenario.queue_limit as usize;
        let (prompt_mean, gen_mean) = (
            self.scenario.model.prompt_tokens,
            self.scenario.model.generation_tokens,
        );
        let svc = self.service;
        let phase = self.scenario.rates_at(now);
        let books = &mut self.books;
        let routing = &mut self.routing;
        // Requests routed to another zone, dispatched once every zone has run its own.
        let mut transfers: Vec<(usize, Job)> = Vec::new();
        for (z, zone) in self.zones.iter_mut().enumerate() {
            let rate = phase.rates.get(z).copied().unwrap_or(0.0);
            lifecycle(zone, books, now, model_load);
            for r in zone.replicas.iter_mut().flatten().filter(|r| r.serves()) {
                serve(r, books, &mut self.rng, &svc, start, dt);
            }

            let mut ready = std::mem::take(&mut zone.ready);
            ready.clear();
            ready.extend(
                zone.replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.as_ref().is_some_and(|r| r.phase == ReplicaPhase::Ready))
                    .map(|(i, _)| i as u32),
            );
            if !ready.is_empty() {
                while let Some(job) = zone.pending.pop_front() {
                    if let Some(gw) = gateway_of(books, &job) {
                        gw.state.upstream_rq_pending_active =
                            gw.state.upstream_rq_pending_active.saturating_sub(1);
                    }
                    dispatch(zone, books, &ready, &mut self.rng, job, now);
                }
            }
            let gateways = books[z].gateways.len().max(1);
            for _ in 0..poisson(&mut self.rng, rate * dt) {
                let arrival = start + self.rng.random::<f64>() * dt;
                let gateway = (zone.next_gateway % gateways) as u32;
                zone.next_gateway = zone.next_gateway.wrapping_add(1);
                let mut job = Job {
                    arrival,
                    dispatched: arrival,
                    prompt: sample_tokens(&mut self.rng, prompt_mean),
                    gen: sample_tokens(&mut self.rng, gen_mean),
                    source: z as u32,
                    gateway,
                    extra: 0.0,
                };
                books[z].arrived(arrival);
                if let Some(gw) = books[z].gateways.get_mut(gateway as usize) {
                    gw.state.downstream_rq_total += 1;
                }
                let to = routing.pick(z, &mut self.rng);
                if to != z {
                    job.extra = routing.extra_latency;
                    routing.moved[z][to] += 1;
                    transfers.push((to, job));
                    continue;
                }
                admit_arrival(
                    zone,
                    books,
                    &ready,
                    &mut self.rng,
                    job,
                    arrival,
                    queue_limit,
                );
            }
            zone.ready = ready;

            for r in zone.replicas.iter_mut().flatten().filter(|r| r.serves()) {
                admit(r, now, svc.max_sequences);
            }
            let held = zone.gpus_held();
            books[z].gpu(start, now, held);
        }
        for (to, job) in transfers {
            let Some(zone) = self.zones.get_mut(to) else {
                continue;
            };
            let ready = std::mem::take(&mut zone.ready);
            admit_arrival(
                zone,
                books,
                &ready,
                &mut self.rng,
                job,
                job.arrival,
                queue_limit,
            );
            zone.ready = ready;
            for r in zone.replicas.iter_mut().flatten().filter(|r| r.serves()) {
                admit(r, now, svc.max_sequences);
            }
        }
        self.now = now;
        self.refresh_gauges();
    }

    fn refresh_gauges(&mut self) {
        let kv_capacity = self.service.kv_capacity;
        let uptime = self.now.max(0.0) as u64;
        for (z, zone) in self.zones.iter_mut().enumerate() {
            let mut healthy = 0;
            let mut addressed = 0;
            for r in zone.replicas.iter_mut().flatten() {
                match r.phase {
                    ReplicaPhase::Ready => {
                        healthy += 1;
                        addressed += 1;
                    }
                    ReplicaPhase::Loading { .. } | ReplicaPhase::Draining { .. } => addressed += 1,
                    ReplicaPhase::Pending => {}
                }
                let s = &mut r.state;
                s.num_requests_running = r.running.len() as u32;
                s.num_requests_waiting = r.waiting.len() as u32;
                let tokens: f64 = r
                    .running
                    .iter()
                    .map(|q| f64::from(q.job.prompt) - q.prefill_left + q.gen_done)
                    .sum();
                s.kv_cache_usage_perc = (tokens / kv_capacity).clamp(0.0, 1.0);
            }
            for gw in &mut self.books[z].gateways {
                gw.state.membership_healthy = healthy;
                gw.state.membership_total = addressed;
                gw.state.uptime_seconds = uptime;
            }
        }
    }

    /// Scrapeable pods: every gateway, and model servers that are Ready.
    pub fn pods(&self) -> Vec<PodInfo> {
        let mut out = Vec::new();
        for (z, zone) in self.zones.iter().enumerate() {
            for (i, gw) in self.books[z].gateways.iter().enumerate() {
                out.push(PodInfo {
                    id: PodId {
                        zone: z,
                        kind: PodKind::Gateway,
                        index: i as u32,
                    },
                    generation: gw.generation,
                });
            }
            for (i, r) in zone.replicas.iter().enumerate() {
                if let Some(r) = r.as_ref().filter(|r| r.phase == ReplicaPhase::Ready) {
                    out.push(PodInfo {
                        id: PodId {
                            zone: z,
                            kind: PodKind::ModelServer,
                            index: i as u32,
                        },
                        generation: r.generation,
                    });
                }
            }
        }
        out
    }

    /// A gateway's counters, if `pod` is a live gateway of that generation.
    pub fn gateway_state(&self, pod: PodInfo) -> Option<&GatewayPodState> {
        if pod.id.kind != PodKind::Gateway {
            return None;
        }
        let gw = self
            .books
            .get(pod.id.zone)?
            .gateways
            .get(pod.id.index as usize)?;
        (gw.generation == pod.generation).then_some(&gw.state)
    }

    /// A model server's counters, if `pod` is that generation and it is Ready (anything else
    /// would refuse the connection).
    pub fn model_state(&self, pod: PodInfo) -> Option<&ModelPodState> {
        if pod.id.kind != PodKind::ModelServer {
            return None;
        }
        let r = self
            .zones
            .get(pod.id.zone)?
            .replicas
            .get(pod.id.index as usize)?
            .as_ref()?;
        (r.generation == pod.generation && r.phase == ReplicaPhase::Ready).then_some(&r.state)
    }

    /// Phases of every model-server replica in a zone, oldest first, for views that show them.
    pub fn replica_phases(&self, zone: usize) -> Vec<(PodInfo, ReplicaPhase)> {
        let Some(z) = self.zones.get(zone) else {
            return Vec::new();
        };
        let mut out: Vec<(PodInfo, ReplicaPhase)> = z
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.as_ref()?;
                let id = PodId {
                    zone,
                    kind: PodKind::ModelServer,
                    index: i as u32,
                };
                Some((
                    PodInfo {
                        id,
                        generation: r.generation,
                    },
                    r.phase,
                ))
            })
            .collect();
        out.sort_by_key(|(p, _)| p.generation);
        out
    }

    /// The zone as the view shows it, with the p95 over the last `p95_window` seconds (at most
    /// [`MAX_P95_WINDOW`]).
    pub fn zone_view(&self, zone: usize, p95_window: f64) -> Option<ZoneView<'_>> {
        let z = self.zones.get(zone)?;
        let phase = self.scenario.rates_at(self.now);
        let mut view = ZoneView {
            name: self.scenario.zones.get(zone).map_or("", String::as_str),
            phase: phase.name,
            demand_rate: phase.rates.get(zone).copied().unwrap_or(0.0),
            desired: z.desired,
            pending: 0,
            loading: 0,
            ready: 0,
            draining: 0,
            queued: z.pending.len() as u32,
            running: 0,
            gpu_capacity: z.capacity,
            p95_latency: self.books.get(zone)?.recent.p95(self.now, p95_window),
        };
        for r in z.replicas.iter().flatten() {
            match r.phase {
                ReplicaPhase::Pending => view.pending += 1,
                ReplicaPhase::Loading { .. } => view.loading += 1,
                ReplicaPhase::Ready => view.ready += 1,
                ReplicaPhase::Draining { .. } => view.draining += 1,
            }
            view.queued += r.waiting.len() as u32;
            view.running += r.running.len() as u32;
        }
        Some(view)
    }

    /// Ground truth per second for a zone, index = second of simulation time.
    pub fn truth(&self, zone: usize) -> &[SecondTruth] {
        self.books.get(zone).map_or(&[], |b| &b.truth)
    }

    /// Ground truth totals per zone.
    pub fn summary(&self) -> Vec<ZoneSummary> {
        self.books
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut s = ZoneSummary {
                    zone: self.scenario.zones[i].clone(),
                    ..ZoneSummary::default()
                };
                for t in &b.truth {
                    s.arrivals += u64::from(t.arrivals);
                    s.finished += u64::from(t.finished);
                    s.good += u64::from(t.good);
                    s.errors += u64::from(t.errors);
                    s.gpu_seconds += t.gpu_seconds;
                }
                s
            })
            .collect()
    }
}

/// The gateway pod that took `job`.
fn gateway_of<'a>(books: &'a mut [Books], job: &Job) -> Option<&'a mut GatewayPod> {
    books
        .get_mut(job.source as usize)?
        .gateways
        .get_mut(job.gateway as usize)
}

/// A new request in the zone that serves it: to a Ready replica, else the zone's pending queue,
/// else a 503.
fn admit_arrival(
    zone: &mut Zone,
    books: &mut [Books],
    ready: &[u32],
    rng: &mut StdRng,
    job: Job,
    at: f64,
    queue_limit: usize,
) {
    if !ready.is_empty() {
        dispatch(zone, books, ready, rng, job, at);
    } else if zone.pending.len() < queue_limit {
        if let Some(gw) = gateway_of(books, &job) {
            gw.state.upstream_rq_pending_active += 1;
            gw.state.upstream_rq_pending_total += 1;
        }
        zone.pending.push_back(job);
    } else if let Some(b) = books.get_mut(job.source as usize) {
        b.unavailable(&job, at, false);
    }
}

/// Loading -> Ready when loaded, drained replicas leave, Pending ones get freed GPUs.
fn lifecycle(zone: &mut Zone, books: &mut [Books], now: f64, model_load: f64) {
    for slot in zone.replicas.iter_mut() {
        let Some(r) = slot.as_mut() else { continue };
        match r.phase {
            ReplicaPhase::Loading { ready_at } if ready_at <= now => r.phase = ReplicaPhase::Ready,
            ReplicaPhase::Draining { deadline } => {
                if r.load() == 0 {
                    *slot = None;
                } else if deadline <= now {
                    for job in r
                        .waiting
                        .drain(..)
                        .chain(r.running.drain(..).map(|s| s.job))
                    {
                        if let Some(b) = books.get_mut(job.source as usize) {
                            b.unavailable(&job, now, true);
                        }
                    }
                    *slot = None;
                }
            }
            _ => {}
        }
    }
    zone.schedule(now, model_load);
}

/// Least request over two random Ready replicas.
fn dispatch(
    zone: &mut Zone,
    books: &mut [Books],
    ready: &[u32],
    rng: &mut StdRng,
    mut job: Job,
    at: f64,
) {
    let pick = |rng: &mut StdRng| ready[rng.random_range(0..ready.len())] as usize;
    let (a, b) = if ready.len() == 1 {
        (ready[0] as usize, ready[0] as usize)
    } else {
        (pick(rng), pick(rng))
    };
    let load = |i: usize| zone.replicas[i].as_ref().map_or(usize::MAX, Replica::load);
    let slot = if load(b) < load(a) { b } else { a };
    let Some(r) = zone.replicas[slot].as_mut() else {
        return;
    };
    job.dispatched = at;
    if let Some(gw) = gateway_of(books, &job) {
        gw.state.upstream_rq_total += 1;
        gw.state.upstream_rq_active += 1;
    }
    r.waiting.push_back(job);
}

/// Fills free batch slots from the replica's queue at `now`.
fn admit(r: &mut Replica, now: f64, max_sequences: usize) {
    while r.running.len() < max_sequences {
        let Some(job) = r.waiting.pop_front() else {
            break;
        };
        r.state
            .request_queue_time_seconds
            .observe((now - job.dispatched).max(0.0));
        r.running.push(Seq {
            job,
            prefill_left: f64::from(job.prompt),
            gen_done: 0.0,
        });
    }
}

/// Runs a replica's batch over `(start, start + dt]`; rates are fixed at the start of the tick.
fn serve(
    r: &mut Replica,
    books: &mut [Books],
    rng: &mut StdRng,
    svc: &Service,
    start: f64,
    dt: f64,
) {
    let n = r.running.len();
    if n == 0 {
        return;
    }
    let in_prefill = r.running.iter().filter(|s| s.prefill_left > 0.0).count();
    let prefill_rate = svc.prefill_tokens_per_second / in_prefill.max(1) as f64;
    let decode_rate = (svc.tokens_per_second / (n - in_prefill).max(1) as f64)
        .min(svc.sequence_tokens_per_second);
    let mut i = 0;
    while i < r.running.len() {
        let s = &mut r.running[i];
        let mut t = start;
        let mut budget = dt;
        let mut done = false;
        if s.prefill_left > 0.0 {
            let need = s.prefill_left / prefill_rate;
            if need <= budget {
                t += need;
                budget -= need;
                s.prefill_left = 0.0;
                // Prefill emits the first token.
                s.gen_done = 1.0;
                r.state.prompt_tokens_total += u64::from(s.job.prompt);
                r.state.generation_tokens_total += 1;
                r.state
                    .time_to_first_token_seconds
                    .observe(t - s.job.dispatched);
                done = s.job.gen <= 1;
            } else {
                s.prefill_left -= prefill_rate * budget;
                budget = 0.0;
            }
        }
        if !done && budget > 0.0 && s.prefill_left <= 0.0 {
            let before = s.gen_done;
            let need = (f64::from(s.job.gen) - s.gen_done) / decode_rate;
            if need <= budget {
                t += need;
                s.gen_done = f64::from(s.job.gen);
                done = true;
            } else {
                s.gen_done += decode_rate * budget;
            }
            r.state.generation_tokens_total += (s.gen_done.floor() - before.floor()) as u64;
        }
        if done {
            let job = s.job;
            r.running.swap_remove(i);
            let failed = rng.random::<f64>() < svc.error_rate;
            if !failed {
                r.state.request_success_total += 1;
                r.state
                    .e2e_request_latency_seconds
                    .observe(t - job.dispatched);
            }
            if let Some(b) = books.get_mut(job.source as usize) {
                b.served(&job, t, failed, svc.latency_target);
            }
        } else {
            i += 1;
        }
    }
}

/// Poisson-distributed count with mean `lambda`: Knuth's method when small, a rounded normal
/// when large (where it is indistinguishable and O(1)).
fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    if !lambda.is_finite() || lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = rng.random::<f64>();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        return k;
    }
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u64
}

/// Token count with the given mean: triangular on `[0, 2 * mean]`, at least 1. Bounded, so one
/// request cannot dominate a short demo the way an exponential tail would.
fn sample_tokens(rng: &mut StdRng, mean: f64) -> u32 {
    let v = (rng.random::<f64>() + rng.random::<f64>()) * mean;
    (v.ceil().max(1.0)).min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::super::scenario::{Phase, Scenario};
    use super::*;

    /// One zone, constant `rate`, unlimited GPUs, no errors, instant model load.
    fn flat(rate: f64, initial: u32) -> Scenario {
        let mut s = Scenario::default_demo(120.0);
        s.zones = vec!["z".into()];
        s.gpu_capacity = vec![None];
        s.error_rate = 0.0;
        s.replica.initial = initial;
        s.replica.model_load = 0.0;
        s.phases = vec![Phase {
            name: "flat".into(),
            start: 0.0,
            duration: 1000.0,
            rates: vec![rate],
            gpu_capacity: vec![None],
            unreachable: Vec::new(),
        }];
        s
    }

    fn run(f: &mut Fleet, from: f64, to: f64, dt: f64) {
        let mut t = from;
        while t + dt <= to + 1e-9 {
            t += dt;
            f.tick(t, dt);
        }
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN] {
            h.observe(v);
        }
        let c: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(c, vec![(1.0, 2), (2.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 6.0);
    }

    #[test]
    fn poisson_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        for lambda in [0.4, 5.0, 80.0] {
            let n = 20_000;
            let total: u64 = (0..n).map(|_| poisson(&mut rng, lambda)).sum();
            let mean = total as f64 / n as f64;
            assert!(
                (mean - lambda).abs() < lambda * 0.03 + 0.02,
                "lambda {lambda}: mean {mean}"
            );
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
        assert_eq!(poisson(&mut rng, f64::NAN), 0);
    }

    #[test]
    fn tokens_have_the_mean() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let total: u64 = (0..n)
            .map(|_| u64::from(sample_tokens(&mut rng, 150.0)))
            .sum();
        let mean = total as f64 / f64::from(n);
        assert!((mean - 150.5).abs() < 3.0, "{mean}");
    }

    #[test]
    fn same_seed_same_run() {
        let mut a = Fleet::new(Scenario::default_demo(60.0), 2, 42);
        let mut b = Fleet::new(Scenario::default_demo(60.0), 2, 42);
        run(&mut a, 0.0, 20.0, 0.1);
        run(&mut b, 0.0, 20.0, 0.1);
        assert_eq!(a.summary(), b.summary());
        let mut c = Fleet::new(Scenario::default_demo(60.0), 2, 43);
        run(&mut c, 0.0, 20.0, 0.1);
        assert_ne!(a.summary(), c.summary());
    }

    #[test]
    fn light_load_meets_the_target() {
        // 2 req/s against one replica good for ~4 req/s.
        let mut f = Fleet::new(flat(2.0, 1), 1, 1);
        run(&mut f, 0.0, 60.0, 0.1);
        let s = &f.summary()[0];
        assert!((90..=150).contains(&s.arrivals), "{s:?}");
        assert!(s.good_ratio().is_some_and(|r| r > 0.95), "{s:?}");
        assert_eq!(s.errors, 0);
        // One replica held a GPU the whole minute.
        assert!((s.gpu_seconds - 60.0).abs() < 1e-6, "{s:?}");
        // Latency is about generation / per-sequence speed: ~150 tokens at 80 tok/s.
        let p95 = f
            .zone_view(0, 30.0)
            .and_then(|v| v.p95_latency)
            .unwrap_or(0.0);
        assert!((1.5..5.0).contains(&p95), "p95 {p95}");
        // Counters agree across the processes.
        let pods = f.pods();
        let gw = f.gateway_state(pods[0]).expect("gateway");
        let model = f.model_state(pods[1]).expect("model server");
        assert_eq!(gw.rq_2xx(), model.request_success_total);
        assert_eq!(gw.upstream_rq_time.count(), gw.upstream_rq_completed);
        assert_eq!(
            gw.upstream_rq_total,
            gw.upstream_rq_completed + gw.upstream_rq_active,
            "every request sent is done or in flight"
        );
        assert_eq!(
            gw.upstream_rq_active,
            u64::from(model.num_requests_running + model.num_requests_waiting)
        );
        assert!(model.generation_tokens_total > 100 * model.request_success_total);
        assert!(model.prompt_tokens_total > 200 * model.request_success_total);
    }

    #[test]
    fn overload_builds_a_queue_and_more_replicas_drain_it() {
        let mut f = Fleet::new(flat(12.0, 1), 2, 5);
        run(&mut f, 0.0, 30.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert!(v.queued > 50, "one replica cannot keep up: {v:?}");
        assert_eq!(v.running, 8, "batch is full: {v:?}");
        let pods = f.pods();
        let model = f.model_state(pods[2]).expect("model server");
        assert!(
            model.kv_cache_usage_perc > 0.5,
            "{}",
            model.kv_cache_usage_perc
        );
        assert_eq!(model.num_requests_waiting, v.queued);
        // New replicas only get new arrivals: the backlog stays where it queued (vLLM does not
        // hand work back), so recovery takes the old replica's backlog / its throughput.
        f.set_desired("z", 6, 30.0).expect("zone");
        run(&mut f, 30.0, 130.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.ready, 6);
        assert!(v.queued < 10, "{v:?}");
        let p95 = v.p95_latency.unwrap_or(f64::INFINITY);
        assert!(p95 < 5.0, "recovered p95 {p95}");
    }

    #[test]
    fn gpu_capacity_keeps_replicas_pending() {
        let mut s = flat(1.0, 1);
        s.gpu_capacity = vec![Some(2)];
        s.replica.model_load = 5.0;
        let mut f = Fleet::new(s, 1, 9);
        f.set_desired("z", 4, 0.0).expect("zone");
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!((v.ready, v.loading, v.pending), (1, 1, 2));
        run(&mut f, 0.0, 4.0, 0.1);
        assert_eq!(f.pods().len(), 2, "Loading replicas are not scrapeable");
        run(&mut f, 4.0, 6.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!((v.ready, v.loading, v.pending), (2, 0, 2));
        assert_eq!(f.pods().len(), 3);
        // Pending hold no GPU: two replicas for the rest of the ten seconds.
        let gpu: f64 = f.truth(0).iter().map(|t| t.gpu_seconds).sum();
        assert!((gpu - 12.0).abs() < 1e-6, "{gpu}");
        // Scale down removes the Pending ones first.
        f.set_desired("z", 2, 6.0).expect("zone");
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!((v.ready, v.loading, v.pending, v.draining), (2, 0, 0, 0));
        assert!(f.set_desired("nowhere", 1, 6.0).is_err());
    }

    #[test]
    fn scale_down_order_is_pending_loading_ready() {
        let mut s = flat(0.0, 1);
        s.gpu_capacity = vec![Some(2)];
        s.replica.model_load = 5.0;
        let mut f = Fleet::new(s, 1, 9);
        f.set_desired("z", 4, 0.0).expect("zone");
        let counts = |f: &Fleet| {
            let v = f.zone_view(0, 10.0).expect("zone");
            (v.ready, v.loading, v.pending)
        };
        assert_eq!(counts(&f), (1, 1, 2));
        let loading = |f: &Fleet| {
            let phases = f.replica_phases(0);
            let l = phases
                .iter()
                .find(|(_, p)| matches!(p, ReplicaPhase::Loading { .. }));
            l.map(|(pod, _)| pod.generation)
        };
        let was_loading = loading(&f);
        f.set_desired("z", 3, 0.0).expect("zone");
        assert_eq!(counts(&f), (1, 1, 1));
        assert_eq!(
            loading(&f),
            was_loading,
            "a Pending replica went, not the Loading one"
        );
        f.set_desired("z", 1, 0.0).expect("zone");
        assert_eq!(counts(&f), (1, 0, 0));
        // Idle Ready replicas leave at once instead of draining.
        f.set_desired("z", 0, 0.0).expect("zone");
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!((v.ready, v.draining), (0, 0));
        assert_eq!(f.replica_phases(0), vec![]);
    }

    #[test]
    fn freeze_override_stops_new_replicas() {
        let mut s = flat(1.0, 2);
        s.phases[0].duration = 10.0;
        s.phases.push(Phase {
            name: "frozen".into(),
            start: 10.0,
            duration: 100.0,
            rates: vec![1.0],
            gpu_capacity: vec![Some(CapacityOverride::Freeze)],
            unreachable: Vec::new(),
        });
        let mut f = Fleet::new(s, 1, 1);
        run(&mut f, 0.0, 12.0, 0.1);
        f.set_desired("z", 5, 12.0).expect("zone");
        run(&mut f, 12.0, 20.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.phase, "frozen");
        assert_eq!((v.ready, v.pending, v.gpu_capacity), (2, 3, Some(2)));
    }

    #[test]
    fn scale_down_drains_then_leaves() {
        let mut f = Fleet::new(flat(8.0, 3), 1, 11);
        run(&mut f, 0.0, 20.0, 0.1);
        let before: Vec<PodInfo> = f.pods();
        f.set_desired("z", 1, 20.0).expect("zone");
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.ready, 1);
        assert!(v.draining >= 1, "busy replicas drain: {v:?}");
        // Draining replicas vanish from the scrape list at once, the newest first.
        let after = f.pods();
        assert_eq!(after.len(), 2);
        let survivor = after[1];
        assert_eq!(
            survivor.generation, before[1].generation,
            "the oldest stays"
        );
        run(&mut f, 20.0, 40.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.draining, 0);
        // Nothing was dropped: drained requests finished normally.
        let s = &f.summary()[0];
        assert_eq!(s.errors, 0, "{s:?}");
        // A new replica reuses the slot with a new generation and fresh counters.
        f.set_desired("z", 2, 40.0).expect("zone");
        run(&mut f, 40.0, 40.2, 0.1);
        let pods = f.pods();
        let fresh = pods
            .iter()
            .find(|p| p.id.kind == PodKind::ModelServer && p.id != survivor.id);
        let fresh = fresh.copied().expect("new replica");
        assert!(before.iter().all(|p| p.generation != fresh.generation));
        assert!(f
            .model_state(fresh)
            .is_some_and(|m| m.request_success_total < 3));
        // An old generation no longer answers.
        for old in before
            .iter()
            .filter(|p| p.id.kind == PodKind::ModelServer && p.id != survivor.id)
        {
            assert!(f.model_state(*old).is_none());
        }
    }

    #[test]
    fn drain_grace_fails_what_is_left() {
        let mut s = flat(20.0, 1);
        s.replica.max_sequences = 1;
        let mut f = Fleet::new(s, 1, 2);
        run(&mut f, 0.0, 10.0, 0.1);
        f.set_desired("z", 0, 10.0).expect("zone");
        let queued = f.zone_view(0, 10.0).map_or(0, |v| v.queued);
        assert!(queued > 50, "{queued}");
        run(&mut f, 10.0, 10.0 + DRAIN_GRACE_SECONDS + 1.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.draining, 0);
        let s = &f.summary()[0];
        assert!(s.errors > 0, "{s:?}");
    }

    #[test]
    fn zero_replicas_queue_then_503() {
        let mut s = flat(10.0, 0);
        s.queue_limit = 20;
        let mut f = Fleet::new(s, 2, 4);
        run(&mut f, 0.0, 20.0, 0.1);
        let v = f.zone_view(0, 10.0).expect("zone");
        assert_eq!(v.queued, 20);
        let gws: Vec<&GatewayPodState> = f
            .pods()
            .iter()
            .filter_map(|p| f.gateway_state(*p))
            .collect();
        assert_eq!(gws.len(), 2);
        let pending: u64 = gws.iter().map(|g| g.upstream_rq_pending_active).sum();
        assert_eq!(pending, 20);
        let held: u64 = gws.iter().map(|g| g.upstream_rq_pending_total).sum();
        assert_eq!(held, 20);
        let rejected: u64 = gws.iter().map(|g| g.rq_5xx()).sum();
        let s = &f.summary()[0];
        assert_eq!(rejected, s.errors);
        assert_eq!(s.arrivals, s.errors + 20);
        // Round robin spreads arrivals over both gateways.
        assert!(gws.iter().all(|g| g.upstream_rq_total > 30), "{gws:?}");
        // A replica arrives: the held requests are served.
        f.set_desired("z", 3, 20.0).expect("zone");
        run(&mut f, 20.0, 30.0, 0.1);
        let pending: u64 = f
            .pods()
            .iter()
            .filter_map(|p| f.gateway_state(*p))
            .map(|g| g.upstream_rq_pending_active)
            .sum();
        assert_eq!(pending, 0);
        assert!(f.summary()[0].good > 0);
    }

    #[test]
    fn routing_serves_a_zone_elsewhere_and_books_it_where_it_arrived() {
        let mut s = flat(3.0, 1);
        s.zones = vec!["a".into(), "b".into()];
        s.gpu_capacity = vec![None, None];
        s.phases[0].rates = vec![3.0, 0.0];
        s.phases[0].gpu_capacity = vec![None, None];
        // Local flows draw nothing: the run is the one without routing.
        let mut plain = Fleet::new(s.clone(), 1, 21);
        let mut local = Fleet::new(s.clone(), 1, 21);
        local.set_flows(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        run(&mut plain, 0.0, 30.0, 0.1);
        run(&mut local, 0.0, 30.0, 0.1);
        assert_eq!(plain.summary(), local.summary());
        assert_eq!(local.moved(), &[vec![0, 0], vec![0, 0]]);

        // Zone a has no replica; all of its traffic goes to b and pays 2 s more.
        let mut f = Fleet::new(s, 1, 21);
        f.set_desired("a", 0, 0.0).expect("zone");
        f.set_flows(&[vec![0.0, 1.0], vec![0.0, 1.0]]);
        f.set_cross_zone_latency(2.0);
        run(&mut f, 0.0, 60.0, 0.1);
        let sum = f.summary();
        assert!(sum[0].arrivals > 100, "{sum:?}");
        assert_eq!(sum[1].arrivals, 0, "b's own gateway took nothing");
        assert!(sum[0].good > 0 && sum[0].errors == 0, "{sum:?}");
        assert_eq!(sum[0].gpu_seconds, 0.0, "a holds no GPU");
        assert!(sum[1].gpu_seconds > 59.0, "b serves it");
        assert_eq!(f.moved()[0][1], sum[0].arrivals);
        // a's gateway counts what it sent upstream; b's replica served it.
        let pods = f.pods();
        let gw_a = f.gateway_state(pods[0]).expect("a's gateway");
        assert_eq!(gw_a.upstream_rq_total, sum[0].arrivals);
        assert_eq!(gw_a.rq_2xx(), gw_a.upstream_rq_completed);
        let p50 = f.latency_quantile(0.5, &[0]).expect("served");
        assert!(p50 > 2.5, "the hop's 2 s are in the latency: {p50}");
        assert_eq!(f.latency_quantile(0.5, &[1]), None);
    }

    #[test]
    fn error_rate_shows_up_as_500s() {
        let mut s = flat(4.0, 2);
        s.error_rate = 0.2;
        let mut f = Fleet::new(s, 1, 8);
        run(&mut f, 0.0, 60.0, 0.1);
        let gw = f.gateway_state(f.pods()[0]).cloned().expect("gateway");
        let share = gw.rq_500 as f64 / gw.upstream_rq_completed as f64;
        assert!((0.12..0.28).contains(&share), "{share}");
        assert_eq!(gw.rq_503, 0);
        assert_eq!(f.summary()[0].errors, gw.rq_500);
    }

    #[test]
    fn default_demo_plays_out() {
        // A crude autoscaler (capacity ~4 req/s per replica) to see the script's story.
        let scenario = Scenario::default_demo(120.0);
        let mut f = Fleet::new(scenario, 2, 1234);
        let mut t = 0.0;
        let mut saw_pending = false;
        let mut saw_zero = false;
        while t < 120.0 {
            t += 0.1;
            f.tick(t, 0.1);
            if ((t * 10.0).round() as u64).is_multiple_of(50) {
                for z in 0..3 {
                    let v = f.zone_view(z, 10.0).expect("zone");
                    let want = (v.demand_rate / 3.0).ceil() as u32;
                    let name = v.name.to_string();
                    f.set_desired(&name, want, t).expect("zone");
                }
            }
            let b = f.zone_view(1, 10.0).expect("zone");
            saw_pending |= b.phase == "gpu-shortage" && b.pending > 0;
            saw_zero |= b.phase == "quiet" && b.ready + b.loading + b.draining == 0;
        }
        assert!(saw_pending, "zone-b runs out of GPUs");
        assert!(saw_zero, "quiet scales to zero");
        let total: u64 = f.summary().iter().map(|s| s.arrivals).sum();
        // (6 + 4 + 3) * 40 + (6 + 16 + 3) * 20 + (6 + 24 + 3) * 20 = 1680 expected arrivals.
        assert!((1500..1860).contains(&total), "{total}");
        assert!((120..=121).contains(&f.truth(0).len()));
    }
}
