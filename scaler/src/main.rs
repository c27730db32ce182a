//! The `redbridge` binary: thin. It parses flags, loads the configuration, starts the stages and
//! waits for SIGTERM or Ctrl-C, then drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use redbridge::answer::grpc::TlsFiles;
use redbridge::demo::report::Output;
use redbridge::demo::run::DemoOptions;
use redbridge::model::Config;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::reload;
use redbridge::{demo, run, telemetry};

#[derive(Parser)]
#[command(
    name = "redbridge",
    version,
    about = "KEDA external scaler on live gateway and model-server signals, per zone"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "REDBRIDGE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ZonalScaledObject CRD as YAML (`redbridge crd | kubectl apply -f -`).
    Crd,
    /// Run as the ZonalScaledObject controller: discover targets, write one KEDA ScaledObject per
    /// zone, and serve KEDA and /metrics as `serve` does.
    Controller(ControllerArgs),
    /// Scrape the configured pools and serve KEDA (gRPC) and /metrics (HTTP).
    Serve(ServeArgs),
    /// Validate a configuration file and print the pools it describes.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the whole scaling loop on this machine: a simulated GPU fleet in three zones, redbridge
    /// scraping it, and a KEDA + HPA emulator scaling it over gRPC. Needs no cluster.
    Demo(DemoArgs),
    /// Serve the demo's simulated fleet alone on loopback (no redbridge), and write the pools
    /// file and a Prometheus/VictoriaMetrics scrape configuration for it: for measuring scrapers.
    Fleet(FleetArgs),
    /// Compare scaling paths (redbridge, KEDA's Prometheus scaler, Knative KPA, AIBrix-like,
    /// kaito-like, the reactive limit) on the scenario library, in simulated time at a cluster's
    /// time-scales; deterministic. Prints a table per scenario and the goals.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct FleetArgs {
    /// Number of zones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Gateway (Envoy) pods per zone.
    #[arg(long, default_value_t = 2)]
    gateway_pods: u32,
    /// Model-server (vLLM) replicas per zone.
    #[arg(long, default_value_t = 10)]
    servers: u32,
    /// Seed of the simulation's random numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pools the targets are dealt across (`llama-1`, ...): many ScaledObjects' worth of pools.
    #[arg(long, default_value_t = 1)]
    pools: usize,
    /// Folder for pools.yaml (redbridge serve --config) and prometheus.yml (scrape config).
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Run this script instead of the library (repeatable).
    #[arg(long)]
    scenario: Vec<PathBuf>,
    /// Run only the library scenarios with these names (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only these paths (repeatable, e.g. `--path redbridge-zso --path reactive-limit`);
    /// every path by default. Goals are printed for the paths that ran.
    #[arg(long)]
    path: Vec<String>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// How long to run (the default script is shortened to fit below 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// A YAML traffic script instead of the default one.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Gateway pods per zone; with --zones, grows the fleet for load runs and reports redbridge's
    /// CPU and memory per target.
    #[arg(long)]
    pods: Option<u32>,
    /// Number of zones, each following one of the script's zones in turn.
    #[arg(long)]
    zones: Option<usize>,
    /// Seed of the simulation's random numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print only the final summary.
    #[arg(long)]
    headless: bool,
    /// Print the default script as YAML (a starting point for --scenario) and exit.
    #[arg(long)]
    print_scenario: bool,
    /// Extra latency of a request the gateway routes to another zone (the hop there and back).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    cross_zone_latency: std::time::Duration,
    /// Write the summary's figures as JSON to this file (per path: share within objective,
    /// GPU-minutes, per zone and per phase, traffic moved between zones).
    #[arg(long)]
    report_json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML file of pools (see docs/configuration.md).
    #[arg(long, short, env = "REDBRIDGE_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    serving: ServingArgs,
}

/// What `serve` and `controller` share: the two ports, TLS, and scrape limits.
#[derive(clap::Args)]
struct ServingArgs {
    /// Address of the KEDA external scaler (gRPC) port.
    #[arg(long, default_value = "0.0.0.0:9090", env = "REDBRIDGE_GRPC_LISTEN")]
    grpc_listen: SocketAddr,
    /// Address of the HTTP port: /metrics, /healthz, /readyz, /pools.
    #[arg(long, default_value = "0.0.0.0:8080", env = "REDBRIDGE_HTTP_LISTEN")]
    http_listen: SocketAddr,
    /// PEM certificate for the gRPC port (TLS).
    #[arg(long, env = "REDBRIDGE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the gRPC port.
    #[arg(long, env = "REDBRIDGE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, KEDA must present a client certificate (mutual TLS).
    #[arg(long, env = "REDBRIDGE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Largest exposition body accepted from a target, in bytes.
    #[arg(long, default_value_t = ScrapeSettings::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most scrapes in flight at once.
    #[arg(long, default_value_t = ScrapeSettings::default().max_in_flight)]
    max_in_flight: usize,
}

impl ServingArgs {
    /// Binds both ports (errors name the flag) and builds the server options.
    async fn bind(self) -> anyhow::Result<(TcpListener, TcpListener, run::Options)> {
        let grpc = TcpListener::bind(self.grpc_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--grpc-listen)", self.grpc_listen))?;
        let http = TcpListener::bind(self.http_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--http-listen)", self.http_listen))?;
        let options = run::Options {
            tls: TlsFiles {
                cert: self.tls_cert,
                key: self.tls_key,
                client_ca: self.tls_client_ca,
            },
            scrape: ScrapeSettings {
                max_body_bytes: self.max_body_bytes,
                max_in_flight: self.max_in_flight,
            },
        };
        Ok((grpc, http, options))
    }
}

fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    use redbridge::demo::bench;
    let scenarios = if args.scenario.is_empty() {
        let mut lib = bench::library()?;
        if !args.only.is_empty() {
            let unknown: Vec<&String> = args
                .only
                .iter()
                .filter(|n| !lib.iter().any(|(name, _)| name == *n))
                .collect();
            if !unknown.is_empty() {
                let names: Vec<&str> = bench::LIBRARY.iter().map(|(n, _)| *n).collect();
                anyhow::bail!(
                    "no library scenario {unknown:?}; the library has {}",
                    names.join(", ")
                );
            }
            lib.retain(|(name, _)| args.only.contains(name));
        }
        lib
    } else {
        args.scenario
            .iter()
            .map(|p| {
                let s = demo::run::scenario_from_file(p)?;
                let name = p
                    .file_stem()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
                Ok((name, s))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut opts = bench::BenchOptions {
        seed: args.seed,
        ..bench::BenchOptions::default()
    };
    if !args.path.is_empty() {
        let names: Vec<&str> = bench::PathKind::ALL.iter().map(|p| p.name()).collect();
        if let Some(unknown) = args.path.iter().find(|p| !names.contains(&p.as_str())) {
            anyhow::bail!("no path {unknown:?}; the paths are {}", names.join(", "));
        }
        opts.paths
            .retain(|p| args.path.iter().any(|name| name == p.name()));
    }
    bench::run_and_report(
        &scenarios,
        &opts,
        args.json.as_deref(),
        &mut std::io::stdout(),
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo(_)) && std::env::var_os("RUST_LOG").is_none() {
        // The live view owns stdout; stderr gets what needs attention. The demo's pods come and
        // go by design, so a failed scrape of one that just left is not news.
        std::env::set_var("RUST_LOG", "warn,redbridge::source::scrape=error");
    }
    telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Crd => print_crd(),
        Command::Controller(args) => run_controller(args),
        Command::Check { config } => check(&config),
        Command::Demo(args) => run_demo(args),
        Command::Fleet(args) => run_fleet(args),
        Command::Bench(args) => run_bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Printed, not logged: it must reach the operator whatever the log level.
            eprintln!("redbridge: {e:#}");
            // 64: bad usage or configuration (sysexits), as operators' tooling expects.
            ExitCode::from(64)
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for pool in &config.pools {
        println!(
            "pool {} (namespace {}): window {:?}, interval {:?}, zones {}",
            pool.name,
            pool.namespace.as_deref().unwrap_or("any"),
            pool.window,
            pool.interval,
            pool.zones().join(", ")
        );
        for s in &pool.sources {
            println!(
                "  source {} (profile {}): {} targets",
                s.name,
                s.profile.name,
                s.targets.len()
            );
        }
    }
    Ok(())
}

/// Loads the configuration file, and a watch that applies its later changes.
fn load_watched(path: &std::path::Path) -> anyhow::Result<(Config, reload::Watch)> {
    let content = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = std::str::from_utf8(&content)
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let config = Config::from_yaml(text, &path.display().to_string())?;
    let watch = reload::Watch::new(path.to_path_buf(), content, &config);
    Ok((config, watch))
}

/// How often the configuration file is read again for changes.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, watch) = load_watched(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let (grpc, http, options) = args.serving.bind().await?;
        let state = run::state(&config);
        tokio::spawn(watch.run(state.clone(), RELOAD_EVERY, shutdown.clone()));
        run::run(state, grpc, http, &options, shutdown).await?;
        Ok(())
    })
}

fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let opts = demo::standalone::FleetOptions {
        zones: args.zones,
        gateway_pods: args.gateway_pods,
        servers: args.servers,
        seed: args.seed,
        pools: args.pools,
        out: args.out,
        cancel: cancel.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        tokio::spawn(wait_for_signal(cancel));
        let out = opts.out.clone();
        demo::standalone::run(opts, |s| {
            println!(
                "fleet: {} gateway and {} model-server targets on 127.0.0.1 ({} and {} bytes per \
                 body); wrote {}/pools.yaml and {}/prometheus.yml; Ctrl-C stops",
                s.gateways,
                s.servers,
                s.gateway_body_bytes,
                s.server_body_bytes,
                out.display(),
                out.display()
            );
        })
        .await?;
        Ok(())
    })
}

fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.print_scenario {
        print!("{}", redbridge::demo::scenario::EXAMPLE_YAML);
        return Ok(());
    }
    let opts = DemoOptions {
        duration: args.duration.map(|d| d.as_secs_f64()),
        scenario: args
            .scenario
            .as_deref()
            .map(demo::run::scenario_from_file)
            .transpose()?,
        gateway_pods: args.pods.unwrap_or(DemoOptions::default().gateway_pods),
        zones: args.zones,
        seed: args.seed,
        output: if args.headless {
            Output::Headless
        } else {
            Output::Auto
        },
        show_resources: args.pods.is_some() || args.zones.is_some(),
        cross_zone_latency: args.cross_zone_latency.as_secs_f64(),
        scenario_name: args.scenario.as_ref().map(|p| p.display().to_string()),
        report_json: args.report_json,
        ..DemoOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        tokio::spawn(wait_for_signal(opts.cancel.clone()));
        demo::run::run(opts).await?;
        Ok(())
    })
}

/// SIGTERM is how Kubernetes asks a pod to stop; Ctrl-C is how a person does.
async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                error!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops redbridge");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("Shutting down");
    shutdown.cancel();
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// `host:port` of redbridge's gRPC Service, written into every trigger as `scalerAddress`.
    #[arg(long, env = "REDBRIDGE_SCALER_ADDRESS")]
    scaler_address: String,
    /// Watch this namespace only (a RoleBinding suffices); every namespace by default.
    #[arg(long, env = "REDBRIDGE_NAMESPACE")]
    namespace: Option<String>,
    /// kubeconfig to use; by default in-cluster configuration, then KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "REDBRIDGE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// ClusterTriggerAuthentication with the CA (and client certificate) for redbridge's gRPC
    /// TLS; triggers then set `enableTLS`.
    #[arg(long, env = "REDBRIDGE_CLUSTER_TRIGGER_AUTHENTICATION")]
    cluster_trigger_authentication: Option<String>,
    /// YAML file of pools served besides the ZonalScaledObjects' (optional).
    #[arg(long, short, env = "REDBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// The Lease whose holder alone writes; every replica discovers, scrapes and serves.
    #[arg(
        long,
        env = "REDBRIDGE_LEASE_NAME",
        default_value = "redbridge-controller"
    )]
    lease_name: String,
    /// The Lease's namespace; by default the Pod's own (that of the kubeconfig's context outside).
    #[arg(long, env = "REDBRIDGE_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease holds without renewal: failover takes at most this long.
    #[arg(long, env = "REDBRIDGE_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    lease_duration: std::time::Duration,
    #[command(flatten)]
    serving: ServingArgs,
}

/// A lease duration: whole seconds, at least 2 (the Lease holds whole seconds).
fn parse_lease_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(2) || d.subsec_nanos() != 0 {
        return Err(format!(
            "{s}: the lease duration must be whole seconds, at least 2s"
        ));
    }
    Ok(d)
}

fn print_crd() -> anyhow::Result<()> {
    print!("{}", redbridge::k8s::crd::crd_yaml()?);
    Ok(())
}

/// `serve` plus the ZonalScaledObject controller, sharing one state; either ending stops both.
fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    use redbridge::k8s::{self, controller, scaledobject::TriggerSettings};
    let (config, watch) = match &args.config {
        Some(path) => {
            let (config, watch) = load_watched(path)?;
            (config, Some(watch))
        }
        None => (Config::default(), None),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let client = k8s::client(args.kubeconfig.as_deref()).await?;
        let (grpc, http, options) = args.serving.bind().await?;
        let mut settings = controller::Options::new(TriggerSettings {
            scaler_address: args.scaler_address,
            cluster_trigger_authentication: args.cluster_trigger_authentication,
        });
        settings.namespace = args.namespace;
        settings.instance = std::env::var("POD_NAME").ok();
        settings.leader = k8s::leader::Settings {
            name: args.lease_name,
            namespace: args.lease_namespace,
            identity: k8s::leader::identity(settings.instance.clone()),
            duration: args.lease_duration,
        };
        let state = run::state(&config);
        if let Some(watch) = watch {
            tokio::spawn(watch.run(state.clone(), RELOAD_EVERY, shutdown.clone()));
        }
        // Before anything serves: a replica is not ready until discovery has listed the cluster
        // and published the ZonalScaledObjects' pools (KEDA would get NOT_FOUND for them).
        state.wait_for_discovery();
        let kube = tokio::spawn(controller::run(
            client,
            state.clone(),
            settings,
            shutdown.clone(),
        ));
        let served = run::run(state, grpc, http, &options, shutdown.clone()).await;
        shutdown.cancel();
        kube.await.context("the controller panicked")??;
        served?;
        Ok(())
    })
}
