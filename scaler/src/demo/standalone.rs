//! `redbridge fleet`: the demo's simulated fleet alone, serving on loopback from its own process,
//! so a scraper (redbridge, Prometheus, VictoriaMetrics) can be measured as it runs in
//! production: in another process, paying only for its own work.
//!
//! Every zone gets `gateway_pods` Envoy gateways and `servers` vLLM replicas, all Ready from the
//! start, under steady traffic, each on its own port. Once every pod listens, three files are
//! written to the output folder: `pools.yaml` (for `redbridge serve --config`), and
//! `prometheus.yml`, a scrape configuration at 1 s that both Prometheus (`--config.file`) and
//! VictoriaMetrics (`-promscrape.config`) read, with each target's zone as a label.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::exposition::{render_gateway, render_vllm};
use super::fleet::{
    lock, Endpoint, FleetError, FleetServers, SharedFleet, CLUSTER, GATEWAY_SOURCE, NAMESPACE,
    POOL, POOL_WINDOW_SECONDS, SERVER_SOURCE,
};
use super::scenario::{Phase, Scenario};
use super::sim::{Fleet, PodKind};

/// How the simulation advances while it serves.
const TICK: Duration = Duration::from_millis(100);

/// Requests/s each replica gets: about a third of what it can serve, so nothing queues.
const RATE_PER_REPLICA: f64 = 1.0;

#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub zones: usize,
    /// Gateway pods per zone.
    pub gateway_pods: u32,
    /// Model-server replicas per zone.
    pub servers: u32,
    pub seed: u64,
    /// Pools the targets are dealt across (round-robin per kind of pod), named `llama-1`, ...;
    /// with 1, the one pool `llama`. Many pools is what a cluster of many ScaledObjects asks of
    /// one redbridge.
    pub pools: usize,
    /// Where `pools.yaml` and `prometheus.yml` are written.
    pub out: PathBuf,
    pub cancel: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("--zones and --pools must be at least 1 and --servers or --gateway-pods at least 1")]
    Empty,
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the fleet serves, printed once it listens.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSummary {
    pub gateways: usize,
    pub servers: usize,
    /// Bytes of one gateway's and one model server's exposition at start.
    pub gateway_body_bytes: usize,
    pub server_body_bytes: usize,
}

/// The steady script: every zone at `servers * RATE_PER_REPLICA` requests/s, forever, no GPU
/// limit, models already loaded.
fn steady_scenario(zones: usize, servers: u32) -> Scenario {
    let mut s = Scenario::default_demo(120.0);
    s.zones = (1..=zones).map(|i| format!("zone-{i}")).collect();
    s.gpu_capacity = vec![None; zones];
    s.replica.initial = servers;
    s.replica.model_load = 0.0;
    s.phases = vec![Phase {
        name: "steady".into(),
        start: 0.0,
        duration: f64::from(u32::MAX),
        rates: vec![f64::from(servers) * RATE_PER_REPLICA; zones],
        gpu_capacity: vec![None; zones],
        unreachable: Vec::new(),
    }];
    s
}

/// Serves the fleet until `opts.cancel`; calls `ready` once the files are written.
pub async fn run(
    opts: FleetOptions,
    ready: impl FnOnce(&FleetSummary),
) -> Result<(), StandaloneError> {
    if opts.zones == 0 || opts.pools == 0 || (opts.servers == 0 && opts.gateway_pods == 0) {
        return Err(StandaloneError::Empty);
    }
    let scenario = steady_scenario(opts.zones, opts.servers);
    let zones = scenario.zones.clone();
    let model = scenario.model.name.clone();
    let fleet: SharedFleet = Arc::new(Mutex::new(Fleet::new(
        scenario,
        opts.gateway_pods,
        opts.seed,
    )));
    let mut servers = FleetServers::new(fleet.clone(), &model);
    let live = lock(&fleet).pods();
    servers.sync(&live).await?;
    let endpoints = servers.endpoints();
    write(
        &opts.out.join("pools.yaml"),
        &pools_yaml(&endpoints, &zones, &model, opts.pools),
    )?;
    write(
        &opts.out.join("prometheus.yml"),
        &scrape_yaml(&endpoints, &zones),
    )?;
    let summary = summarise(&fleet, &endpoints, &model);
    info!(
        gateways = summary.gateways,
        servers = summary.servers,
        out = %opts.out.display(),
        "Fleet serving"
    );
    ready(&summary);

    let start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = opts.cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = start.elapsed().as_secs_f64();
        let live = {
            let mut f = lock(&fleet);
            f.tick(now, TICK.as_secs_f64());
            f.pods()
        };
        // Replicas stay Ready under steady load, so this only ever confirms the same set.
        servers.sync(&live).await?;
    }
    servers.shutdown().await;
    Ok(())
}

fn summarise(fleet: &SharedFleet, endpoints: &[Endpoint], model: &str) -> FleetSummary {
    let f = lock(fleet);
    let mut summary = FleetSummary {
        gateways: 0,
        servers: 0,
        gateway_body_bytes: 0,
        server_body_bytes: 0,
    };
    for e in endpoints {
        let mut body = String::new();
        match e.pod.id.kind {
            PodKind::Gateway => {
                summary.gateways += 1;
                if let Some(state) = f.gateway_state(e.pod) {
                    render_gateway(state, CLUSTER, &mut body);
                    summary.gateway_body_bytes = body.len();
                }
            }
            PodKind::ModelServer => {
                summary.servers += 1;
                if let Some(state) = f.model_state(e.pod) {
                    render_vllm(state, model, &mut body);
                    summary.server_body_bytes = body.len();
                }
            }
        }
    }
    summary
}

fn write(path: &Path, text: &str) -> Result<(), StandaloneError> {
    std::fs::write(path, text).map_err(|source| StandaloneError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The pool `redbridge demo` serves, with this fleet's pods as targets; with several pools,
/// each pool gets every `pools`-th pod of each kind, so every pool spans the zones.
fn pools_yaml(endpoints: &[Endpoint], zones: &[String], model: &str, pools: usize) -> String {
    let mut out = String::from(
        "# Written by `redbridge fleet`: the simulated fleet's pods as targets.\npools:\n",
    );
    let pools = pools.max(1);
    for p in 0..pools {
        let name = if pools == 1 {
            POOL.to_string()
        } else {
            format!("{POOL}-{}", p + 1)
        };
        let _ = write!(
            out,
            "  - name: {name}\n    namespace: {NAMESPACE}\n    window: {POOL_WINDOW_SECONDS}s\n    interval: 1s\n    sources:\n"
        );
        for (source, profile, matcher, kind) in [
            (
                GATEWAY_SOURCE,
                "envoy",
                format!("envoy_cluster_name=\"{CLUSTER}\""),
                PodKind::Gateway,
            ),
            (
                SERVER_SOURCE,
                "vllm",
                format!("model_name=\"{model}\""),
                PodKind::ModelServer,
            ),
        ] {
            let targets: Vec<&Endpoint> = endpoints
                .iter()
                .filter(|e| e.pod.id.kind == kind)
                .skip(p)
                .step_by(pools)
                .collect();
            if targets.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "      - name: {source}\n        profile: {profile}\n        matchers: ['{matcher}']\n        targets:\n"
            );
            for e in targets {
                let zone = zones.get(e.zone).map(String::as_str).unwrap_or_default();
                let _ = writeln!(out, "          - {{ url: \"{}\", zone: {zone} }}", e.url);
            }
        }
    }
    out
}

/// One job per kind of pod, targets grouped by zone, scraped every second.
fn scrape_yaml(endpoints: &[Endpoint], zones: &[String]) -> String {
    let mut out = String::from(
        "# Written by `redbridge fleet`: Prometheus --config.file, or VictoriaMetrics -promscrape.config.\nglobal:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n",
    );
    for (job, path, kind) in [
        ("gateway", "/stats/prometheus", PodKind::Gateway),
        ("servers", "/metrics", PodKind::ModelServer),
    ] {
        if !endpoints.iter().any(|e| e.pod.id.kind == kind) {
            continue;
        }
        let _ = write!(
            out,
            "  - job_name: {job}\n    metrics_path: {path}\n    static_configs:\n"
        );
        for (z, zone) in zones.iter().enumerate() {
            let hosts: Vec<String> = endpoints
                .iter()
                .filter(|e| e.pod.id.kind == kind && e.zone == z)
                .filter_map(|e| {
                    let rest = e.url.strip_prefix("http://")?;
                    Some(format!("\"{}\"", rest.split('/').next()?))
                })
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "      - targets: [{}]\n        labels: {{ zone: {zone} }}\n",
                hosts.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    #[tokio::test]
    async fn serves_every_pod_and_writes_files_redbridge_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cancel = CancellationToken::new();
        let opts = FleetOptions {
            zones: 2,
            gateway_pods: 1,
            servers: 3,
            seed: 1,
            pools: 1,
            out: dir.path().to_path_buf(),
            cancel: cancel.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(opts, move |s| {
            let _ = tx.send(s.clone());
        }));
        let summary = rx.await.expect("fleet started");
        assert_eq!((summary.gateways, summary.servers), (2, 6));
        assert!(summary.server_body_bytes > 1000, "{summary:?}");
        let config = Config::load(&dir.path().join("pools.yaml")).expect("pools.yaml is valid");
        let pool = &config.pools[0];
        assert_eq!(pool.sources.len(), 2);
        assert_eq!(pool.sources[0].targets.len(), 2);
        assert_eq!(pool.sources[1].targets.len(), 6);
        assert_eq!(pool.zones(), vec!["zone-1", "zone-2"]);
        // Each target answers with its exposition.
        let url = &pool.sources[1].targets[0].url;
        let body = reqwest::get(url)
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        assert!(body.contains("vllm:num_requests_running"), "{body}");
        let scrape = std::fs::read_to_string(dir.path().join("prometheus.yml")).expect("scrape");
        assert_eq!(scrape.matches("zone: zone-").count(), 4, "{scrape}");
        cancel.cancel();
        task.await.expect("joined").expect("ran");
    }

    #[test]
    fn several_pools_each_get_every_nth_pod_of_each_kind_across_the_zones() {
        use crate::demo::sim::{PodId, PodInfo};
        let zones: Vec<String> = vec!["zone-1".into(), "zone-2".into()];
        let mut endpoints = Vec::new();
        for zone in 0..2 {
            for (kind, n) in [(PodKind::Gateway, 2), (PodKind::ModelServer, 5)] {
                for index in 0..n {
                    endpoints.push(Endpoint {
                        pod: PodInfo {
                            id: PodId { zone, kind, index },
                            generation: 0,
                        },
                        zone,
                        url: format!("http://127.0.0.1:{}/m", 1000 + endpoints.len()),
                    });
                }
            }
        }
        let yaml = pools_yaml(&endpoints, &zones, "m", 2);
        let config = Config::from_yaml(&yaml, "pools.yaml").expect("valid pools");
        assert_eq!(config.pools.len(), 2);
        let mut seen = std::collections::HashSet::new();
        for (i, pool) in config.pools.iter().enumerate() {
            assert_eq!(pool.name, format!("{POOL}-{}", i + 1));
            assert_eq!(pool.zones(), vec!["zone-1", "zone-2"], "{yaml}");
            let counts: Vec<usize> = pool.sources.iter().map(|s| s.targets.len()).collect();
            assert_eq!(counts, vec![2, 5], "{yaml}");
            for t in pool.sources.iter().flat_map(|s| &s.targets) {
                assert!(seen.insert(t.url.clone()), "{} in two pools", t.url);
            }
        }
        assert_eq!(seen.len(), endpoints.len());
        // One pool keeps the demo's name.
        let one = Config::from_yaml(&pools_yaml(&endpoints, &zones, "m", 1), "p.yaml")
            .expect("valid pool");
        assert_eq!(one.pools[0].name, POOL);
    }
}
