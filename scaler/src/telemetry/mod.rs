//! Telemetry: the one place logging is set up, and redbridge's own counters ([`counters`]).

pub mod counters;

pub use counters::{Metrics, ZoneStatus};

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the level (default `info`), `json` switches the format.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
