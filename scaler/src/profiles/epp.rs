//! The Gateway API Inference Extension's endpoint picker (EPP), as llm-d and the reference
//! implementation ship it.

use super::{input, make_profile, term};
use crate::model::{Aggregation, Input, Profile, Role};

/// Newest first: llm-d's `llm_d_router_epp_` names, the `llm_d_epp_` names, then the legacy
/// `inference_objective_` / `inference_pool_` / `inference_extension_` names.
fn names(suffix: &str, legacy: &str) -> Vec<String> {
    vec![
        format!("llm_d_router_epp_{suffix}"),
        format!("llm_d_epp_{suffix}"),
        legacy.to_string(),
    ]
}

fn named(role: Role, suffix: &str, legacy: &str) -> Input {
    let all = names(suffix, legacy);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    input(role, vec![term(&all, vec![])])
}

/// The picker of one InferencePool. Its flow-control queue holds the requests it could not yet
/// dispatch: demand that exists while the pool has no ready server, so `queue_depth` here can
/// wake a pool scaled to zero. Gauges of one picker are per pool; with several picker replicas
/// the busiest one counts. An error counter appears per error code at its first error, so absent
/// errors read as zero once the request counter exists; the queue gauge appears per fairness
/// and priority at the first queued request, so before any request it is unavailable.
pub fn profile() -> Profile {
    let mut errors = named(
        Role::Errors,
        "request_error_total",
        "inference_objective_request_error_total",
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut p = make_profile(
        "epp",
        vec![
            named(
                Role::Requests,
                "request_total",
                "inference_objective_request_total",
            ),
            errors,
            named(
                Role::Latency,
                "request_duration_seconds",
                "inference_objective_request_duration_seconds",
            ),
            queue(),
            named(
                Role::QueueTime,
                "flow_control_request_queue_duration_seconds",
                "inference_extension_flow_control_request_queue_duration_seconds",
            ),
            named(
                Role::KvCache,
                "average_kv_cache_utilization",
                "inference_pool_average_kv_cache_utilization",
            ),
            named(
                Role::Saturation,
                "flow_control_pool_saturation",
                "inference_extension_flow_control_pool_saturation",
            ),
        ],
    );
    for role in [Role::Queue, Role::KvCache, Role::Saturation] {
        p.gauge_aggregation.insert(role, Aggregation::Max);
    }
    p.endpoint_labels = ENDPOINT_LABELS.iter().map(|l| l.to_string()).collect();
    p
}

/// Labels naming the model server a per-endpoint series is about: llm-d's, then the legacy
/// one. Their value is the Pod's name, or `<pod>-rank-<N>` for a data-parallel rank.
pub const ENDPOINT_LABELS: [&str; 2] = ["model_server_endpoint", "model_server_pod"];

/// Requests waiting, as the picker sees them: its flow-control queue (held at the picker, a
/// pool-wide figure) plus the queue of each model server it reports (per endpoint, so a target
/// scoped to a zone's Pods reads that zone's share). Both are waiting requests, never the
/// same ones: a request leaves the picker's queue when it is dispatched to a server.
fn queue() -> Input {
    let flow = names(
        "flow_control_queue_size",
        "inference_extension_flow_control_queue_size",
    );
    let per_endpoint = names(
        "per_endpoint_queue_size",
        "inference_pool_per_pod_queue_size",
    );
    let flow: Vec<&str> = flow.iter().map(String::as_str).collect();
    let per_endpoint: Vec<&str> = per_endpoint.iter().map(String::as_str).collect();
    input(
        Role::Queue,
        vec![term(&flow, vec![]), term(&per_endpoint, vec![])],
    )
}
