//! Traefik (v2 and v3), per service or per router.

use super::{five_xx, input, make_profile, term};
use crate::model::{Profile, Role};

/// Traefik's service-level families (`service="ns-name-port@kubernetes"`), and the router-level
/// ones (`router=...`, enabled by `addRoutersLabels`) for series the service names do not match:
/// per target, the first family with a series matching the pool's matchers wins. Every family is
/// created at its first request, with one series per status code, so absent errors and latency
/// read as zero once the request counter exists.
pub fn profile() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(
            &[
                "traefik_service_requests_total",
                "traefik_router_requests_total",
            ],
            vec![five_xx("code")],
        )],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(
            &[
                "traefik_service_request_duration_seconds",
                "traefik_router_request_duration_seconds",
            ],
            vec![],
        )],
    );
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        "traefik",
        vec![
            input(
                Role::Requests,
                vec![term(
                    &[
                        "traefik_service_requests_total",
                        "traefik_router_requests_total",
                    ],
                    vec![],
                )],
            ),
            errors,
            latency,
            input(
                Role::InFlight,
                vec![term(&["traefik_open_connections"], vec![])],
            ),
        ],
    )
}
