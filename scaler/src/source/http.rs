//! What every HTTP source shares.

/// The `User-Agent` redbridge sends to targets and Prometheus-compatible servers.
pub const USER_AGENT: &str = concat!("redbridge/", env!("CARGO_PKG_VERSION"));

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
