//! `cargo bench --bench keda_load`: GetMetrics latency under a KEDA-heavy cluster's load.
//!
//! `redbridge fleet` serves TARGETS simulated pods (one Envoy gateway and 99 vLLM servers per
//! zone, dealt across 100 pools) in its own process, and `redbridge serve` scrapes them at 1 s
//! in another, as in production. This process is KEDA: for 1,000 distinct triggers (10 per pool:
//! ten signals, each on one of the pool's zones or on all of them) it calls GetMetricSpec,
//! GetMetrics and IsActive in KEDA's proportions (the metrics adapter asks for the spec and the
//! value on each HPA sync, the operator asks IsActive at half that rate) over two HTTP/2
//! connections (operator and metrics adapter), open-loop at each RATES calls/s for SECONDS.
//!
//! Latency is measured from when a call was due, not from when it was sent, so a stall shows up
//! in full; "all from send" is the same answers timed from when they were sent, and "sent late by"
//! how late the generator sent (tokio's 1 ms timer and its share of the cores), so the
//! generator's own delay can be told from redbridge's. Printed per rate: p50, p99, p99.9 and maximum, errors by code, and whether scraping
//! kept up meanwhile: scrapes/s against the targets, the largest `redbridge_target_staleness_seconds`
//! seen (at most 2 s means no scrape ran more than one interval late), and redbridge's CPU and
//! peak RSS from /proc.
//!
//!   TARGETS=5000 RATES=1000,10000 SECONDS=30 cargo bench --bench keda_load
//!
//! `STALENESS_EVERY=0` reads /metrics only before and after each rate's load, so GetMetrics is
//! timed without a render of every series beside it (the default reads it every 15 s, from the
//! load's start).
//!
//! The load generator runs on the same machine as redbridge and the fleet, so it competes with
//! both for CPU. `PIN=1` (at least two cores, `taskset` installed) gives redbridge the last core
//! to itself and keeps the fleet and the generator on the others, so its latency is not the
//! neighbours' scheduling: what it then does is what one core can. Nothing is asserted;
//! BENCHMARKS.md states what it printed. Without `--bench` (as under `cargo test --all-targets`)
//! it prints one line and exits.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_redbridge");
const POOLS: usize = 100;
/// Signals every pool can answer from its vLLM servers alone (half the pools have no gateway).
const SIGNALS: [&str; 10] = [
    "requests_per_second",
    "concurrency",
    "queue_depth",
    "running",
    "kv_cache_utilization",
    "prompt_tokens_per_second",
    "generation_tokens_per_second",
    "latency",
    "time_to_first_token",
    "inter_token_latency",
];
/// The fleet's model-server source, in every pool.
const SERVERS: &str = "servers";
/// KEDA's mix, repeated: spec and value per HPA sync (every 15 s), IsActive per polling (30 s).
const MIX: [Call; 5] = [
    Call::Spec,
    Call::Metrics,
    Call::Spec,
    Call::Metrics,
    Call::IsActive,
];
/// Calls that take longer than this count as errors (a KEDA client would have timed out).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often /metrics is read for target staleness while the load runs, by default (env
/// `STALENESS_EVERY`, seconds; 0: only before and right after the load).
const STALENESS_EVERY: u64 = 15;

#[derive(Debug, Clone, Copy)]
enum Call {
    Spec,
    Metrics,
    IsActive,
}

struct Trigger {
    object: ScaledObjectRef,
    metric_name: String,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which cores each process runs on (`PIN=1`), or anywhere.
enum Pinning {
    Anywhere,
    /// redbridge on `redbridge`, the fleet and this process on `others` (`taskset` lists).
    Split {
        redbridge: String,
        others: String,
    },
}

#[derive(Clone, Copy)]
enum Role {
    Redbridge,
    Neighbour,
}

impl Pinning {
    fn from_env() -> Result<Pinning, Box<dyn std::error::Error>> {
        if std::env::var("PIN").map_or(true, |v| v.is_empty() || v == "0") {
            return Ok(Pinning::Anywhere);
        }
        let cores = std::thread::available_parallelism()?.get();
        if cores < 2 {
            return Err("PIN=1 needs at least two cores".into());
        }
        let (redbridge, others) = ((cores - 1).to_string(), format!("0-{}", cores - 2));
        // Every thread of this process, the runtime's included.
        let status = Command::new("taskset")
            .args(["-a", "-cp", &others, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("PIN=1 runs taskset: {e}"))?;
        if !status.success() {
            return Err(format!("taskset -a -cp {others} failed: {status}").into());
        }
        println!(
            "keda_load: redbridge on core {redbridge}, fleet and load generator on cores {others}"
        );
        Ok(Pinning::Split { redbridge, others })
    }

    /// `redbridge` with the role's cores.
    fn command(&self, role: Role) -> Command {
        match self {
            Pinning::Anywhere => Command::new(BIN),
            Pinning::Split { redbridge, others } => {
                let mut c = Command::new("taskset");
                c.arg("-c")
                    .arg(match role {
                        Role::Redbridge => redbridge,
                        Role::Neighbour => others,
                    })
                    .arg(BIN);
                c
            }
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("keda_load: skipped; run `cargo bench --bench keda_load`");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let targets: usize = env_or("TARGETS", 5000);
    let seconds: u64 = env_or("SECONDS", 30);
    let rates: Vec<u64> = std::env::var("RATES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let zones = targets.div_ceil(100);
    let pin = Pinning::from_env()?;
    let dir = tempfile::tempdir()?;
    let out = dir.path();

    let fleet = Proc(
        pin.command(Role::Neighbour)
            .args(["fleet", "--zones", &zones.to_string()])
            .args(["--gateway-pods", "1", "--servers", "99"])
            .args(["--pools", &POOLS.to_string()])
            .arg("--out")
            .arg(out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pools = out.join("pools.yaml");
    wait_for("the fleet's pools.yaml", Duration::from_secs(300), || {
        pools.exists() && out.join("prometheus.yml").exists()
    })
    .await?;
    let config = Config::load(&pools)?;
    let (grpc, http) = (free_port()?, free_port()?);
    let serve = Proc(
        pin.command(Role::Redbridge)
            .arg("serve")
            .arg("--config")
            .arg(&pools)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = serve.0.id();
    let base = format!("http://127.0.0.1:{http}");
    let web = reqwest::Client::new();
    // Ready once every pool has a full window (or its warm-up limit passed).
    let started = Instant::now();
    loop {
        let ready = web
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err("redbridge did not become ready in 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "keda_load: {} targets in {} pools, {} triggers; redbridge ready after {:.0} s",
        config
            .pools
            .iter()
            .flat_map(|p| &p.sources)
            .map(|s| s.targets.len())
            .sum::<usize>(),
        config.pools.len(),
        POOLS * SIGNALS.len(),
        started.elapsed().as_secs_f64()
    );

    let endpoint = format!("http://127.0.0.1:{grpc}");
    let channels = vec![
        Channel::from_shared(endpoint.clone())?.connect().await?,
        Channel::from_shared(endpoint)?.connect().await?,
    ];
    let triggers = Arc::new(triggers(&config, &channels[0]).await?);

    for rate in rates {
        let before = Sample::take(pid, &web, &base).await?;
        let load = drive(
            &channels,
            &triggers,
            rate,
            Duration::from_secs(seconds),
            || {
                let (web, base) = (web.clone(), base.clone());
                async move { max_staleness(&web, &base).await }
            },
        )
        .await;
        let mut load = load;
        // Once more right after the load, awaited, so a run shorter than the sampling period
        // still has a reading taken under load.
        if let Some(s) = max_staleness(&web, &base).await {
            load.max_staleness = Some(load.max_staleness.map_or(s, |m| m.max(s)));
        }
        let after = Sample::take(pid, &web, &base).await?;
        report(rate, seconds, &load, &before, &after, targets);
    }
    drop(serve);
    drop(fleet);
    Ok(())
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Ten triggers per pool, each with its metric name from one GetMetricSpec.
async fn triggers(
    config: &Config,
    channel: &Channel,
) -> Result<Vec<Trigger>, Box<dyn std::error::Error>> {
    let mut client = ExternalScalerClient::new(channel.clone());
    let mut out = Vec::new();
    for (p, pool) in config.pools.iter().take(POOLS).enumerate() {
        let zones = pool.zones();
        for (s, signal) in SIGNALS.iter().enumerate() {
            // Named: the gateway source comes first and would take the signals it also
            // provides, and a pool's one gateway sits in one zone of fifty.
            let mut meta = HashMap::from([
                ("pool".to_string(), pool.name.clone()),
                ("signal".to_string(), signal.to_string()),
                ("target".to_string(), "10".to_string()),
                ("source".to_string(), SERVERS.to_string()),
            ]);
            // Most triggers per zone (a ZonalScaledObject's), every fifth on the whole pool.
            if s % 5 != 4 && !zones.is_empty() {
                let zone = zones[(p + s) % zones.len()];
                meta.insert("zone".into(), zone.to_string());
            }
            let object = ScaledObjectRef {
                name: format!("so-{p}-{s}"),
                namespace: pool.namespace.clone().unwrap_or_else(|| "default".into()),
                scaler_metadata: meta,
            };
            let spec = client.get_metric_spec(object.clone()).await?.into_inner();
            let metric_name = spec
                .metric_specs
                .first()
                .map(|m| m.metric_name.clone())
                .ok_or("GetMetricSpec returned no metric")?;
            out.push(Trigger {
                object,
                metric_name,
            });
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Load {
    /// Microseconds from when each call was due until its answer, per kind of call.
    latencies: BTreeMap<&'static str, Vec<u64>>,
    errors: BTreeMap<String, u64>,
    /// Microseconds from when each answered call was sent until its answer: the part that is
    /// redbridge and the connection, without the generator's own lateness.
    from_send: Vec<u64>,
    /// Microseconds each call was sent after it was due (the generator's timer and its share of
    /// the cores).
    late: Vec<u64>,
    /// The first message seen per kind of error, to tell missing data from a fault.
    messages: BTreeMap<String, String>,
    /// Largest target staleness seen while the load ran; `None` if /metrics never answered.
    max_staleness: Option<f64>,
}

/// Calls at `rate` per second for `duration`, open-loop; samples `staleness` every 15 s
/// (`STALENESS_EVERY`), as a Prometheus scraping redbridge's /metrics would (each read renders
/// every series redbridge has: tens of megabytes with 100 pools across 50 zones).
async fn drive<F, Fut>(
    channels: &[Channel],
    triggers: &Arc<Vec<Trigger>>,
    rate: u64,
    duration: Duration,
    staleness: F,
) -> Load
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<f64>> + Send + 'static,
{
    let load = Arc::new(Mutex::new(Load::default()));
    let total = rate * duration.as_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    let mut stale_checks = Vec::new();
    // The first read comes with the load's start, as a Prometheus scrape could.
    let every = Duration::from_secs(env_or("STALENESS_EVERY", STALENESS_EVERY));
    let mut next_check = if every.is_zero() {
        start + duration * 2
    } else {
        start
    };
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        if due >= next_check {
            stale_checks.push(tokio::spawn(staleness()));
            next_check += every;
        }
        // Each trigger in turn gets the whole mix, so any stretch of the run has KEDA's mix.
        let trigger = (i as usize / MIX.len()) % triggers.len();
        let call = MIX[i as usize % MIX.len()];
        let mut client = ExternalScalerClient::new(channels[i as usize % channels.len()].clone());
        let (triggers, load) = (triggers.clone(), load.clone());
        tasks.spawn(async move {
            let t = &triggers[trigger];
            let sent = tokio::time::Instant::now();
            let (name, result) = tokio::time::timeout(CALL_TIMEOUT, async {
                match call {
                    Call::Spec => (
                        "GetMetricSpec",
                        client.get_metric_spec(t.object.clone()).await.map(drop),
                    ),
                    Call::Metrics => (
                        "GetMetrics",
                        client
                            .get_metrics(GetMetricsRequest {
                                scaled_object_ref: Some(t.object.clone()),
                                metric_name: t.metric_name.clone(),
                            })
                            .await
                            .map(drop),
                    ),
                    Call::IsActive => (
                        "IsActive",
                        client.is_active(t.object.clone()).await.map(drop),
                    ),
                }
            })
            .await
            .unwrap_or(("timeout", Err(tonic::Status::deadline_exceeded("timeout"))));
            let micros = due.elapsed().as_micros() as u64;
            let own = sent.elapsed().as_micros() as u64;
            let mut l = load.lock().unwrap_or_else(|e| e.into_inner());
            l.late.push((sent - due).as_micros() as u64);
            match result {
                Ok(()) => {
                    l.latencies.entry(name).or_default().push(micros);
                    l.from_send.push(own);
                }
                Err(s) => {
                    let kind = format!("{name} {:?}", s.code());
                    l.messages
                        .entry(kind.clone())
                        .or_insert_with(|| s.message().to_string());
                    *l.errors.entry(kind).or_default() += 1
                }
            }
        });
        // Reap finished calls as we go, so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut max_stale: Option<f64> = None;
    for c in stale_checks {
        if let Ok(Some(s)) = c.await {
            max_stale = Some(max_stale.map_or(s, |m: f64| m.max(s)));
        }
    }
    let mut load = std::mem::take(&mut *load.lock().unwrap_or_else(|e| e.into_inner()));
    load.max_staleness = max_stale;
    load
}

/// The largest `redbridge_target_staleness_seconds` on redbridge's /metrics.
async fn max_staleness(web: &reqwest::Client, base: &str) -> Option<f64> {
    let body = web
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .filter(|l| l.starts_with("redbridge_target_staleness_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

/// redbridge's CPU ticks, peak RSS and scrape count at one instant.
struct Sample {
    at: Instant,
    cpu_ticks: u64,
    peak_rss_kb: u64,
    scrapes: f64,
    /// Per method: seconds spent inside redbridge's handlers and calls, from its own histogram
    /// (what a call costs redbridge, apart from queueing and transport).
    handler: BTreeMap<String, (f64, f64)>,
}

impl Sample {
    async fn take(
        pid: u32,
        web: &reqwest::Client,
        base: &str,
    ) -> Result<Sample, Box<dyn std::error::Error>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu_ticks = tick(11) + tick(12);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let peak_rss_kb = proc_kb(&status, "VmHWM:");
        let body = web
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let scrapes = body
            .lines()
            .filter(|l| l.starts_with("redbridge_target_scrapes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let mut handler: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for l in body.lines() {
            let Some(rest) = l.strip_prefix("redbridge_grpc_request_duration_seconds_") else {
                continue;
            };
            let Some((series, v)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Some(method) = series.split('"').nth(1) else {
                continue;
            };
            let v: f64 = v.parse().unwrap_or(0.0);
            let e = handler.entry(method.to_string()).or_default();
            if series.starts_with("sum{") {
                e.0 += v;
            } else if series.starts_with("count{") {
                e.1 += v;
            }
        }
        Ok(Sample {
            at: Instant::now(),
            cpu_ticks,
            peak_rss_kb,
            scrapes,
            handler,
        })
    }
}

fn proc_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn report(rate: u64, seconds: u64, load: &Load, before: &Sample, after: &Sample, targets: usize) {
    let secs = (after.at - before.at).as_secs_f64();
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every common platform.
    let cores = (after.cpu_ticks - before.cpu_ticks) as f64 / 100.0 / secs;
    let scrapes = (after.scrapes - before.scrapes) / secs;
    let mut all: Vec<u64> = load.latencies.values().flatten().copied().collect();
    all.sort_unstable();
    let errors: u64 = load.errors.values().sum();
    println!(
        "{rate} calls/s for {seconds} s: {} answered, {errors} errors{}",
        all.len(),
        if load.errors.is_empty() {
            String::new()
        } else {
            format!(" {:?}", load.errors)
        }
    );
    let line = |name: &str, v: &[u64]| {
        println!(
            "  {name:14} p50 {:7.3} ms  p99 {:7.3} ms  p99.9 {:7.3} ms  max {:8.3} ms  ({} calls)",
            percentile(v, 0.50),
            percentile(v, 0.99),
            percentile(v, 0.999),
            percentile(v, 1.0),
            v.len()
        );
    };
    for (kind, message) in &load.messages {
        println!("  first {kind}: {message}");
    }
    line("all", &all);
    for (name, v) in &load.latencies {
        let mut v = v.clone();
        v.sort_unstable();
        line(name, &v);
    }
    let mut v = load.from_send.clone();
    v.sort_unstable();
    line("all from send", &v);
    let mut v = load.late.clone();
    v.sort_unstable();
    line("sent late by", &v);
    for (method, (sum, count)) in &after.handler {
        let (s0, c0) = before.handler.get(method).copied().unwrap_or_default();
        if count > &c0 {
            println!(
                "  {method:14} in redbridge's handler: mean {:.1} µs ({} calls)",
                (sum - s0) / (count - c0) * 1e6,
                count - c0
            );
        }
    }
    println!(
        "  scraping: {scrapes:.0} scrapes/s of {targets} targets, stalest target {}; \
         redbridge {cores:.2} cores, peak RSS {} MiB",
        load.max_staleness.map_or(
            "not read (/metrics did not answer)".to_string(),
            |s| format!("{s:.2} s")
        ),
        after.peak_rss_kb / 1024
    );
}
