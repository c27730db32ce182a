//! Cilium's Hubble L7 (HTTP) metrics, exported by each node's agent.

use super::{five_xx, input, make_profile, term};
use crate::model::{Matcher, Profile, Role};

/// `hubble_http_requests_total` and `hubble_http_request_duration_seconds` (the `httpV2`
/// handler), as the server side reports them: a request between two pods on managed nodes is
/// counted once by each side, so `reporter="server"` keeps one. A status code's series appears
/// at its first response, so absent errors read as zero once the request counter exists; the
/// duration histogram carries no status label and appears with the first request.
pub fn profile() -> Profile {
    let server = || vec![Matcher::eq("reporter", "server")];
    let mut fails = server();
    fails.push(five_xx("status"));
    let mut errors = input(
        Role::Errors,
        vec![term(&["hubble_http_requests_total"], fails)],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(&["hubble_http_request_duration_seconds"], server())],
    );
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        "hubble",
        vec![
            input(
                Role::Requests,
                vec![term(&["hubble_http_requests_total"], server())],
            ),
            errors,
            latency,
        ],
    )
}
