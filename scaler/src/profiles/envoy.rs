//! Envoy and what runs it (Envoy Gateway, Contour, Cilium's Gateway API proxies).

use super::{input, make_profile, term};
use crate::model::Matcher;
use crate::model::{Profile, Role};

/// Envoy / Envoy Gateway, per upstream cluster (`envoy_cluster_name`, e.g. `httproute/ns/route/rule/0`).
pub fn upstream() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(
            &["envoy_cluster_upstream_rq_xx"],
            vec![Matcher::eq("envoy_response_code_class", "5")],
        )],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(&["envoy_cluster_upstream_rq_time"], vec![])],
    );
    latency.scale = 0.001;
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        "envoy",
        vec![
            input(
                Role::Requests,
                vec![term(&["envoy_cluster_upstream_rq_total"], vec![])],
            ),
            errors,
            latency,
            input(
                Role::InFlight,
                vec![term(&["envoy_cluster_upstream_rq_active"], vec![])],
            ),
            input(
                Role::Queue,
                vec![term(&["envoy_cluster_upstream_rq_pending_active"], vec![])],
            ),
        ],
    )
}

/// Envoy listeners, per HTTP connection manager (`envoy_http_conn_manager_prefix`).
pub fn downstream() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(
            &["envoy_http_downstream_rq_xx"],
            vec![Matcher::eq("envoy_response_code_class", "5")],
        )],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(&["envoy_http_downstream_rq_time"], vec![])],
    );
    latency.scale = 0.001;
    latency.zero_if_present = Some(Role::Requests);
    make_profile(
        "envoy-downstream",
        vec![
            input(
                Role::Requests,
                vec![term(&["envoy_http_downstream_rq_total"], vec![])],
            ),
            errors,
            latency,
            input(
                Role::InFlight,
                vec![term(&["envoy_http_downstream_rq_active"], vec![])],
            ),
        ],
    )
}
