//! Linkerd's proxy (`linkerd-proxy` :4191/metrics).

use super::{five_xx, input, make_profile, term};
use crate::model::{MatchOp, Matcher, Profile, Role};

/// The proxy of the serving pods: what they received (`direction="inbound"`).
pub fn inbound() -> Profile {
    classic("linkerd", "inbound")
}

/// The proxy of the calling pods (a gateway, a client): what they sent, per destination
/// (`dst_service`, `dst_deployment`, `dst_namespace`, ... labels).
pub fn outbound() -> Profile {
    classic("linkerd-outbound", "outbound")
}

/// `request_total`, `response_total{classification}` and `response_latency_ms`. A
/// classification's series appears at its first response, and the latency histogram with the
/// first response, so both read as zero once the request counter exists.
fn classic(name: &str, direction: &str) -> Profile {
    let dir = || vec![Matcher::eq("direction", direction)];
    let mut failures = dir();
    failures.push(Matcher::eq("classification", "failure"));
    let mut errors = input(Role::Errors, vec![term(&["response_total"], failures)]);
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(Role::Latency, vec![term(&["response_latency_ms"], dir())]);
    latency.scale = 0.001;
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        name,
        vec![
            input(Role::Requests, vec![term(&["request_total"], dir())]),
            errors,
            latency,
        ],
    )
}

/// Linkerd 2.15+ route-level families of a caller's proxy, per Gateway API route
/// (`route_name`, `route_namespace`, `parent_name`, ...): statuses and a duration histogram in
/// seconds. Errors are 5xx statuses and requests that failed without one (`error` set).
pub fn route() -> Profile {
    let failed = Matcher::new("error", MatchOp::Re, ".+").expect("static regex is valid");
    let mut errors = input(
        Role::Errors,
        vec![
            term(
                &["outbound_http_route_request_statuses_total"],
                vec![five_xx("http_status")],
            ),
            term(
                &["outbound_http_route_request_statuses_total"],
                vec![
                    failed,
                    Matcher::new("http_status", MatchOp::NotRe, "5..")
                        .expect("static regex is valid"),
                ],
            ),
        ],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(
            &["outbound_http_route_request_duration_seconds"],
            vec![],
        )],
    );
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        "linkerd-route",
        vec![
            input(
                Role::Requests,
                vec![term(
                    &["outbound_http_route_request_statuses_total"],
                    vec![],
                )],
            ),
            errors,
            latency,
        ],
    )
}
