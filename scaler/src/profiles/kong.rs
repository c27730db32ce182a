//! Kong Gateway's Prometheus plugin (3.x names), per service and route.

use super::{five_xx, input, make_profile, term};
use crate::model::{Profile, Role};

/// Kong with latency from `kong_request_latency_ms` (the whole request as the client sees it).
pub fn request() -> Profile {
    kong("kong", "kong_request_latency_ms")
}

/// Kong with latency from `kong_upstream_latency_ms` (the upstream's share only).
pub fn upstream() -> Profile {
    kong("kong-upstream", "kong_upstream_latency_ms")
}

/// The plugin's status-code and latency families are opt-in (`status_code_metrics`,
/// `latency_metrics`) and can be enabled apart, so only errors read as zero when absent: a
/// status code's series appears at its first response, but an absent latency histogram may be
/// switched off, not idle.
fn kong(name: &str, latency: &str) -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(
            &["kong_http_requests_total", "kong_http_status"],
            vec![five_xx("code")],
        )],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(Role::Latency, vec![term(&[latency], vec![])]);
    latency.scale = 0.001;
    make_profile(
        name,
        vec![
            input(
                Role::Requests,
                vec![term(
                    &["kong_http_requests_total", "kong_http_status"],
                    vec![],
                )],
            ),
            errors,
            latency,
        ],
    )
}
