//! Istio's standard metrics: sidecars, gateways and ambient waypoints.

use super::{input, make_profile, term};
use crate::model::{MatchOp, Matcher};
use crate::model::{Profile, Role};

/// Sidecars report as `destination`.
pub fn sidecar() -> Profile {
    istio(Some("destination"), "istio")
}

/// Gateways report as `source`.
pub fn gateway() -> Profile {
    istio(Some("source"), "istio-gateway")
}

/// A waypoint reports each request once, as `waypoint` (older releases: `source`).
pub fn waypoint() -> Profile {
    istio(None, "istio-waypoint")
}

/// Istio standard metrics as one reporter sees them: sidecars report as `destination`, gateways
/// as `source`, ambient waypoints as `waypoint`.
fn istio(reporter: Option<&str>, name: &str) -> Profile {
    let by_reporter = || -> Vec<Matcher> {
        reporter
            .map(|r| Matcher::eq("reporter", r))
            .into_iter()
            .collect()
    };
    let five_xx = Matcher::new("response_code", MatchOp::Re, "5..").expect("static regex is valid");
    let mut error_matchers = by_reporter();
    error_matchers.push(five_xx);
    let mut errors = input(
        Role::Errors,
        vec![term(&["istio_requests_total"], error_matchers)],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(
            &["istio_request_duration_milliseconds"],
            by_reporter(),
        )],
    );
    latency.scale = 0.001;
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        name,
        vec![
            input(
                Role::Requests,
                vec![term(&["istio_requests_total"], by_reporter())],
            ),
            errors,
            latency,
        ],
    )
}
