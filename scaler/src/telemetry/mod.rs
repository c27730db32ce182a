//! Telemetry: the one place logging is set up, and redbridge's own counters ([`counters`]).

pub mod counters;

pub use counters::{Metrics, ZoneStatus};

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the level (default `info`), `json` switches the format.
/// Text is coloured only for a person at a terminal: files, pipes and log collectors get plain
/// text, and so does anyone who sets `NO_COLOR` (<https://no-color.org>).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether to colour text logs: on a terminal, unless `NO_COLOR` is set and not empty.
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "pipes and files get plain text");
        assert!(!colour(false, Some("1".into())));
    }
}
