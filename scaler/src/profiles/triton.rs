//! NVIDIA Triton Inference Server.

use super::{input, make_profile, term};
use crate::model::{Profile, Role};

/// Triton Inference Server. Its durations are cumulative microsecond counters, not histograms,
/// so it has no latency quantiles: the mean request and queue times over the window come from
/// those counters over the request counter (`mean_latency`, `mean_queue_time`). Every family
/// exists per model from load, at 0, so nothing is read as zero when absent but errors (newer
/// releases label failures by `reason` and create each at its first failure).
pub fn profile() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(&["nv_inference_request_failure"], vec![])],
    );
    errors.zero_if_present = Some(Role::Requests);
    let micros = |role, name| {
        let mut i = input(role, vec![term(&[name], vec![])]);
        i.scale = 1e-6;
        i
    };
    make_profile(
        "triton",
        vec![
            input(
                Role::Requests,
                vec![
                    term(&["nv_inference_request_success"], vec![]),
                    term(&["nv_inference_request_failure"], vec![]),
                ],
            ),
            errors,
            input(
                Role::Queue,
                vec![term(&["nv_inference_pending_request_count"], vec![])],
            ),
            input(
                Role::InFlight,
                vec![term(&["nv_inference_pending_request_count"], vec![])],
            ),
            micros(Role::LatencyTotal, "nv_inference_request_duration_us"),
            micros(Role::QueueTimeTotal, "nv_inference_queue_duration_us"),
        ],
    )
}
