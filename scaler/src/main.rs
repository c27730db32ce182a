//! The `redbridge` binary: thin. It parses flags, loads the configuration, starts the stages and
//! waits for SIGTERM or Ctrl-C, then drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use redbridge::answer::grpc::TlsFiles;
use redbridge::config::Config;
use redbridge::scrape::ScrapeSettings;
use redbridge::{server, telemetry};

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
    /// Scrape the configured pools and serve KEDA (gRPC) and /metrics (HTTP).
    Serve(ServeArgs),
    /// Validate a configuration file and print the pools it describes.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML file of pools (see docs/configuration.md).
    #[arg(long, short, env = "REDBRIDGE_CONFIG")]
    config: PathBuf,
    #[arg(long, default_value = "0.0.0.0:9090", env = "REDBRIDGE_GRPC_LISTEN")]
    grpc_listen: SocketAddr,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Check { config } => check(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
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

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let settings = ScrapeSettings {
            max_body_bytes: args.max_body_bytes,
            max_in_flight: args.max_in_flight,
        };
        let tls = TlsFiles {
            cert: args.tls_cert,
            key: args.tls_key,
            client_ca: args.tls_client_ca,
        };
        let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--grpc-listen)", args.grpc_listen))?;
        let http = tokio::net::TcpListener::bind(args.http_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--http-listen)", args.http_listen))?;
        let options = server::Options {
            tls,
            scrape: settings,
        };
        server::run(server::state(&config), grpc, http, &options, shutdown).await?;
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
