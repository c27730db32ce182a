//! Test fixtures: fake data planes that serve real HTTP, and a running redbridge.
#![allow(dead_code)] // each test binary uses a different part

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::{GetMetricsRequest, MetricValue, ScaledObjectRef};
use redbridge::run::{self as server, Options};
use redbridge::source::scrape::ScrapeSettings;

/// Envoy's default latency buckets, in milliseconds: the demo's copy, the only one.
pub use redbridge::demo::sim::ENVOY_RQ_TIME_BUCKETS_MS as ENVOY_BUCKETS_MS;

/// What a fake Envoy has counted so far, for one cluster.
#[derive(Debug, Default, Clone)]
pub struct EnvoyCounters {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative per bucket of ENVOY_BUCKETS_MS, plus +Inf last.
    pub buckets: Vec<f64>,
    pub sum_ms: f64,
    pub active: f64,
    pub pending: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Serving,
    Failing(u16),
}

#[derive(Debug)]
struct Inner {
    counters: EnvoyCounters,
    cluster: String,
    mode: Mode,
    /// Requests per second the traffic task adds, error share and latency of each request.
    rate: f64,
    error_share: f64,
    latency_ms: f64,
}

/// An HTTP server answering `/stats/prometheus` like Envoy, driven by a traffic task.
#[derive(Clone)]
pub struct FakeEnvoy {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl FakeEnvoy {
    pub async fn start(cluster: &str) -> FakeEnvoy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            counters: EnvoyCounters {
                buckets: vec![0.0; ENVOY_BUCKETS_MS.len() + 1],
                ..Default::default()
            },
            cluster: cluster.to_string(),
            mode: Mode::Serving,
            rate: 0.0,
            error_share: 0.0,
            latency_ms: 30.0,
        }));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/stats/prometheus", get(stats))
            .with_state(inner.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        // Traffic: every 20 ms, add rate * 0.02 requests (fractional counts accumulate exactly).
        let (i, s) = (inner.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let mut g = i.lock().unwrap();
                let n = g.rate * 0.02;
                let (share, lat) = (g.error_share, g.latency_ms);
                let c = &mut g.counters;
                c.requests += n;
                c.errors += n * share;
                for (b, le) in c
                    .buckets
                    .iter_mut()
                    .zip(ENVOY_BUCKETS_MS.iter().chain([f64::INFINITY].iter()))
                {
                    if lat <= *le {
                        *b += n;
                    }
                }
                c.sum_ms += n * lat;
            }
        });
        FakeEnvoy { addr, inner, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/stats/prometheus", self.addr)
    }

    pub fn set_traffic(&self, rate: f64, error_share: f64, latency_ms: f64) {
        let mut g = self.inner.lock().unwrap();
        g.rate = rate;
        g.error_share = error_share;
        g.latency_ms = latency_ms;
    }

    pub fn set_gauges(&self, active: f64, pending: f64) {
        let mut g = self.inner.lock().unwrap();
        g.counters.active = active;
        g.counters.pending = pending;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = mode;
    }

    /// Stops listening: scrapes now get "connection refused".
    pub fn kill(&self) {
        self.stop.cancel();
    }

    pub fn counters(&self) -> EnvoyCounters {
        self.inner.lock().unwrap().counters.clone()
    }
}

async fn stats(State(inner): State<Arc<Mutex<Inner>>>) -> impl IntoResponse {
    let g = inner.lock().unwrap();
    if let Mode::Failing(code) = g.mode {
        return (StatusCode::from_u16(code).unwrap(), String::new());
    }
    (StatusCode::OK, render_envoy(&g.cluster, &g.counters))
}

/// Envoy's exposition for one cluster plus an unrelated one, which matchers must filter out.
pub fn render_envoy(cluster: &str, c: &EnvoyCounters) -> String {
    let mut out = String::new();
    for (name, other) in [(cluster, false), ("other_cluster", true)] {
        let k = if other { 1000.0 } else { 1.0 };
        let req = (c.requests * k).floor();
        let err = (c.errors * k).floor();
        let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_total counter");
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{name}\"}} {req}"
        );
        let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_xx counter");
        let _ = writeln!(out, "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"2\",envoy_cluster_name=\"{name}\"}} {}", req - err);
        if err > 0.0 {
            let _ = writeln!(out, "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"5\",envoy_cluster_name=\"{name}\"}} {err}");
        }
        let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_active gauge");
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_active{{envoy_cluster_name=\"{name}\"}} {}",
            c.active * k
        );
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_pending_active{{envoy_cluster_name=\"{name}\"}} {}",
            c.pending * k
        );
        if req > 0.0 {
            let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_time histogram");
            for (i, b) in c.buckets.iter().enumerate() {
                let le = ENVOY_BUCKETS_MS
                    .get(i)
                    .map_or("+Inf".to_string(), |l| format!("{l}"));
                let _ = writeln!(out, "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{name}\",le=\"{le}\"}} {}", (b * k).floor());
            }
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name=\"{name}\"}} {}",
                c.sum_ms * k
            );
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{name}\"}} {req}"
            );
        }
    }
    out
}

/// A running redbridge on ephemeral ports.
pub struct Redbridge {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub state: Arc<redbridge::state::State>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), server::RunError>>,
}

impl Redbridge {
    pub async fn start(yaml: &str) -> Redbridge {
        Self::start_with(
            yaml,
            Options {
                tls: Default::default(),
                scrape: ScrapeSettings::default(),
            },
        )
        .await
    }

    pub async fn start_with(yaml: &str, options: Options) -> Redbridge {
        let config = Config::from_yaml(yaml, "test.yaml").expect("test config is valid");
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let state = server::state(&config);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (state, shutdown) = (state.clone(), shutdown.clone());
            async move { server::run(state, grpc, http, &options, shutdown).await }
        });
        Redbridge {
            grpc: grpc_addr,
            http: http_addr,
            state,
            shutdown,
            task,
        }
    }

    pub async fn client(&self) -> ExternalScalerClient<tonic::transport::Channel> {
        let endpoint = format!("http://{}", self.grpc);
        for _ in 0..50 {
            if let Ok(c) = ExternalScalerClient::connect(endpoint.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redbridge gRPC did not come up on {endpoint}");
    }

    /// GetMetrics for a trigger in namespace `ml` with `pairs` as its metadata: the value, or the
    /// status KEDA would see.
    pub async fn value(&self, pairs: &[(&str, &str)]) -> Result<f64, tonic::Status> {
        let mut client = self.client().await;
        let value =
            get_metrics(&mut client, object_ref("ml", pairs), MetricName::Given("")).await?;
        Ok(value.metric_value_float)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("redbridge drains within 10 s")
            .expect("no panic")
            .expect("clean stop");
    }
}

/// The metric name a GetMetrics call asks for.
#[derive(Debug, Clone, Copy)]
pub enum MetricName<'a> {
    /// The one GetMetricSpec returns, as KEDA asks.
    FromSpec,
    /// This one (empty: none, and redbridge answers the trigger's own metric).
    Given(&'a str),
}

/// GetMetrics for `so`, the one value it returns (exactly one: one metric per trigger, never a
/// vector of zones), or the status KEDA would see (from GetMetricSpec or GetMetrics).
pub async fn get_metrics(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    so: ScaledObjectRef,
    name: MetricName<'_>,
) -> Result<MetricValue, tonic::Status> {
    let metric_name = match name {
        MetricName::FromSpec => {
            let spec = client.get_metric_spec(so.clone()).await?.into_inner();
            spec.metric_specs
                .first()
                .map(|s| s.metric_name.clone())
                .ok_or_else(|| tonic::Status::internal("GetMetricSpec returned no metric"))?
        }
        MetricName::Given(name) => name.to_string(),
    };
    let mut values = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so),
            metric_name,
        })
        .await?
        .into_inner()
        .metric_values;
    assert_eq!(
        values.len(),
        1,
        "one value per metric, never a vector of zones"
    );
    Ok(values.remove(0))
}

/// A ScaledObjectRef as KEDA sends it: the trigger metadata plus KEDA's own keys.
pub fn object_ref(namespace: &str, pairs: &[(&str, &str)]) -> ScaledObjectRef {
    let mut meta: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    meta.insert(
        "scalerAddress".into(),
        "redbridge.redbridge.svc:9090".into(),
    );
    ScaledObjectRef {
        name: "llama-zone-a".into(),
        namespace: namespace.into(),
        scaler_metadata: meta,
    }
}

/// Polls `f` every 100 ms until it returns Some, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free port on 127.0.0.1, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server binary the tests run: `$env` when set, else `name` in /usr/bin or /usr/local/bin
/// (scripts/install-test-deps.sh installs the Debian packages).
pub fn installed(name: &str, env: &str) -> std::path::PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/test-all.sh (it installs it) or set {env}")
        })
}
