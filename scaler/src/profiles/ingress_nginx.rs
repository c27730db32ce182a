//! The ingress-nginx controller (:10254/metrics), per Ingress.

use super::{five_xx, input, make_profile, term};
use crate::model::{Profile, Role};

/// `nginx_ingress_controller_requests{ingress,namespace,service,status}` and
/// `nginx_ingress_controller_request_duration_seconds`. A status's series appears at its first
/// response, so absent errors read as zero once the request counter exists. The duration
/// histogram can be switched off (`--exclude-socket-metrics`), so its absence stays unavailable.
pub fn profile() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(
            &["nginx_ingress_controller_requests"],
            vec![five_xx("status")],
        )],
    );
    errors.zero_if_present = Some(Role::Requests);
    make_profile(
        "ingress-nginx",
        vec![
            input(
                Role::Requests,
                vec![term(&["nginx_ingress_controller_requests"], vec![])],
            ),
            errors,
            input(
                Role::Latency,
                vec![term(
                    &["nginx_ingress_controller_request_duration_seconds"],
                    vec![],
                )],
            ),
        ],
    )
}
