//! Runs the whole pipeline: scrapers, the gRPC scaler and the HTTP port, until shutdown.
//! Used by `redbridge serve`, the demo and the end-to-end tests alike.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::answer::grpc::{ServeError, TlsFiles};
use crate::config::Config;
use crate::scrape::{ScrapeError, ScrapeSettings, Scraper};
use crate::state::State;
use crate::window::Clock;
use crate::{answer, scrape};

/// Each variant names the part that failed and keeps the cause as its source, so `{:#}` prints
/// the cause once.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Grpc(#[from] ServeError),
    #[error("HTTP server")]
    Http(#[from] std::io::Error),
    #[error("scrape client")]
    Scraper(#[from] ScrapeError),
    #[error("a server task panicked")]
    Panicked(#[from] tokio::task::JoinError),
}

/// Everything `run` needs besides the listeners.
pub struct Options {
    pub tls: TlsFiles,
    pub scrape: ScrapeSettings,
}

/// Builds the shared state for `config` (exposed so callers can read it while `run` serves).
pub fn state(config: &Config) -> Arc<State> {
    Arc::new(State::new(config, Clock::default()))
}

/// Serves until `shutdown` is cancelled or a server fails, then stops everything and drains.
pub async fn run(
    state: Arc<State>,
    grpc: TcpListener,
    http: TcpListener,
    options: &Options,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let scraper = Arc::new(Scraper::new(&options.scrape)?);
    info!(
        pools = state.pools().len(),
        grpc = ?grpc.local_addr().ok(),
        http = ?http.local_addr().ok(),
        "Starting redbridge"
    );
    let scrapes = tokio::spawn(scrape::run_all(state.clone(), scraper, shutdown.clone()));
    let http = tokio::spawn(answer::http::serve(state.clone(), http, shutdown.clone()));
    // Both listeners are bound: connections wait in their backlogs until the servers accept them.
    state.mark_serving();
    let grpc = answer::grpc::serve(state, grpc, &options.tls, shutdown.clone()).await;
    // Whatever ended first, stop the rest.
    shutdown.cancel();
    let (scrapes, http) = tokio::join!(scrapes, http);
    scrapes?;
    grpc?;
    http??;
    info!("Stopped");
    Ok(())
}
