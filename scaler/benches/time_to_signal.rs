//! Time to signal: how many seconds after a load step each path shows it, through a real Envoy.
//!
//! - redbridge, scraping Envoy's admin `/stats/prometheus` every 1 s, asked over gRPC
//!   (GetMetrics) every 1 s like an HPA at its fastest: with the pool's 30 s window and with a
//!   trigger `window: 10s`, and fast up, careful down (`upWindow: 2s` over the 30 s window);
//! - Prometheus scraping the same Envoy every 15 s, asked every 1 s for
//!   `sum(rate(envoy_cluster_upstream_rq_total{...}[1m]))` the way KEDA's Prometheus scaler asks.
//!
//! The load steps between LOW and HIGH requests/s three times (up, down, up), each level held
//! HOLD; a path "shows" a step when its value crosses the midpoint. The KEDA columns add KEDA's
//! default 30 s polling interval: 15 s on average, 30 s at worst.
//!
//! Run: `cargo bench --bench time_to_signal` (about 7 minutes; needs scripts/install-test-deps.sh).
//! Without `--bench` (as under `cargo test --all-targets`) it prints one line and exits.

#[path = "../../tests/e2e/common.rs"]
mod common;
#[path = "../../tests/e2e/envoy/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{object_ref, MetricName, Redbridge};
use harness::{Backend, Envoy, Load, Shape, CLUSTER};

const LOW: f64 = 20.0;
const HIGH: f64 = 100.0;
/// Long enough for Prometheus's 1 m rate to forget the previous level, plus a scrape and a margin.
const HOLD: Duration = Duration::from_secs(100);
const POLL: Duration = Duration::from_secs(1);
const STEPS: [(f64, f64); 3] = [(LOW, HIGH), (HIGH, LOW), (LOW, HIGH)];
const KEDA_POLLING: f64 = 30.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("time_to_signal: skipped; run `cargo bench --bench time_to_signal`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

/// The paths compared, in table order.
const PATHS: [&str; 4] = [
    "redbridge, window 10 s",
    "redbridge, window 30 s",
    "Prometheus, rate[1m]",
    "redbridge, upWindow 2 s / window 30 s",
];

#[derive(Debug, Clone, Copy)]
struct Poll {
    at: Instant,
    values: [Option<f64>; 4],
}

async fn run() {
    let backend = Backend::start(Shape::constant(5.0)).await;
    let envoy = Envoy::start("zone-a", backend.addr).await;
    let rb = Redbridge::start(&format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 30s
    interval: 1s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets:
          - {{ url: "{}", zone: zone-a }}
"#,
        envoy.stats_url()
    ))
    .await;
    let prometheus = Prometheus::start(&envoy).await;
    let total = HOLD * (STEPS.len() as u32 + 1) + Duration::from_secs(30);
    let load = Load::start(envoy.url(), LOW, total);
    eprintln!(
        "time_to_signal: {LOW} -> {HIGH} req/s steps through Envoy, {} s per level, ~{} min",
        HOLD.as_secs(),
        total.as_secs() / 60
    );

    let mut polls: Vec<Poll> = Vec::new();
    let mut steps: Vec<(Instant, f64, f64)> = Vec::new();
    let http = reqwest::Client::new();
    let mut client = rb.client().await;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(POLL);
    // Warm-up at LOW, then each step.
    let mut phase_end = started + HOLD;
    let mut next_step = STEPS.iter();
    loop {
        ticks.tick().await;
        let now = Instant::now();
        if now >= phase_end {
            let settled = polls.last().map(|p| p.values);
            eprintln!(
                "  {:>5.0}s at {:>3} req/s, settled on {settled:?}",
                (now - started).as_secs_f64(),
                load.rate()
            );
            let Some(&(from, to)) = next_step.next() else {
                break;
            };
            load.set_rate(to);
            steps.push((Instant::now(), from, to));
            phase_end = Instant::now() + HOLD;
        }
        let mut second = client.clone();
        let mut third = client.clone();
        let (w10, w30, prom, up) = tokio::join!(
            rps(&mut second, &[("window", "10s")]),
            rps(&mut client, &[]),
            prometheus.rps(&http),
            rps(&mut third, &[("upWindow", "2s")]),
        );
        polls.push(Poll {
            at: Instant::now(),
            values: [w10, w30, prom, up],
        });
    }
    let errors = load.transport_errors();
    if !errors.is_empty() {
        eprintln!("warning: {} requests got no answer", errors.len());
    }
    drop(load);
    rb.stop().await;
    drop(prometheus);
    print_table(&steps, &polls);
}

/// requests/s from redbridge over gRPC, or None while it is unavailable.
async fn rps(
    client: &mut redbridge::proto::external_scaler_client::ExternalScalerClient<
        tonic::transport::Channel,
    >,
    extra: &[(&str, &str)],
) -> Option<f64> {
    let mut pairs = vec![
        ("pool", "llama"),
        ("zone", "zone-a"),
        ("signal", "requests_per_second"),
        ("target", "10"),
    ];
    pairs.extend_from_slice(extra);
    let so = object_ref("ml", &pairs);
    let value = common::get_metrics(client, so, MetricName::FromSpec)
        .await
        .ok()?;
    Some(value.metric_value_float)
}

fn print_table(steps: &[(Instant, f64, f64)], polls: &[Poll]) {
    // Seconds from each step until each path's value first crossed the midpoint.
    let times: Vec<[Option<f64>; 4]> = steps
        .iter()
        .map(|&(at, from, to)| {
            let mid = (from + to) / 2.0;
            std::array::from_fn(|path| {
                polls
                    .iter()
                    .filter(|p| p.at > at && p.at <= at + HOLD)
                    .find(|p| {
                        p.values[path].is_some_and(|v| if to > from { v >= mid } else { v <= mid })
                    })
                    .map(|p| (p.at - at).as_secs_f64())
            })
        })
        .collect();
    let cell =
        |t: Option<f64>| t.map_or(format!("> {} s", HOLD.as_secs()), |s| format!("{s:.0} s"));
    // A trigger polled every 30 s sees the change up to 30 s later, 15 s on average.
    let keda = |t: Option<f64>| {
        t.map_or("-".to_string(), |s| {
            format!(
                "{:.0} s / {:.0} s",
                s + KEDA_POLLING / 2.0,
                s + KEDA_POLLING
            )
        })
    };
    let mean = |path: usize| -> Option<f64> {
        let all: Option<Vec<f64>> = times.iter().map(|t| t[path]).collect();
        all.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
    };
    println!();
    println!(
        "| step (req/s) | {} | {} | {} | {} | {} + KEDA polling, mean / worst | {} + KEDA \
         polling, mean / worst |",
        PATHS[0], PATHS[1], PATHS[2], PATHS[3], PATHS[0], PATHS[2]
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = steps
        .iter()
        .zip(&times)
        .map(|(&(_, from, to), t)| (format!("{from:.0} → {to:.0}"), *t));
    let means = [mean(0), mean(1), mean(2), mean(3)];
    for (label, t) in rows.chain(std::iter::once(("mean".to_string(), means))) {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            cell(t[0]),
            cell(t[1]),
            cell(t[2]),
            cell(t[3]),
            keda(t[0]),
            keda(t[2])
        );
    }
}

/// A real Prometheus scraping the Envoy every 15 s on a loopback port, its data in a temp dir.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(envoy: &Envoy) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                r#"global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: ["{}"]
"#,
                envoy.admin
            ),
        )
        .expect("write prometheus.yml");
        let check = Command::new(tool("REDBRIDGE_PROMTOOL", "promtool"))
            .args(["check", "config"])
            .arg(&config)
            .output()
            .expect("run promtool");
        assert!(
            check.status.success(),
            "promtool rejects the config: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        // Prometheus cannot report the port it bound to, so take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(tool("REDBRIDGE_PROMETHEUS", "prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}");
            }
            let ready = http
                .get(format!("http://{}/-/ready", p.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The KEDA Prometheus scaler's query, or None while Prometheus has no value.
    async fn rps(&self, http: &reqwest::Client) -> Option<f64> {
        let query = format!(
            "sum(rate(envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}}[1m]))"
        );
        let body = http
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", query.as_str())])
            .send()
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$var` if set, else `name` from PATH (scripts/test-all.sh sets the variables).
fn tool(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(name), PathBuf::from)
}
