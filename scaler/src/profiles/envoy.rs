//! Envoy and what runs it (Envoy Gateway, Contour, Cilium's Gateway API proxies).

use super::{input, make_profile, term};
use crate::model::Matcher;
use crate::model::{Profile, Role};

/// Envoy / Envoy Gateway, per upstream cluster (`envoy_cluster_name`, e.g. `httproute/ns/route/rule/0`).
///
/// Under deferred stat creation (Envoy Gateway 1.8 turns it on) a cluster's traffic stats appear
/// only at its first request, while its membership gauges exist from the start: a cluster with
/// members and no traffic stats yet reads 0, and a matcher naming no cluster stays unavailable.
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
    let deferred = |role, name| {
        let mut i = input(role, vec![term(&[name], vec![])]);
        i.zero_if_present = Some(Role::Members);
        i
    };
    make_profile(
        "envoy",
        vec![
            deferred(Role::Requests, "envoy_cluster_upstream_rq_total"),
            errors,
            latency,
            deferred(Role::InFlight, "envoy_cluster_upstream_rq_active"),
            deferred(Role::Queue, "envoy_cluster_upstream_rq_pending_active"),
            input(
                Role::Members,
                vec![term(&["envoy_cluster_membership_total"], vec![])],
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
