//! NVIDIA Triton Inference Server.

use super::{input, make_profile, term};
use crate::model::{Profile, Role};

/// Triton Inference Server. Its durations are cumulative counters, not histograms, so it has no
/// latency quantiles.
pub fn profile() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(&["nv_inference_request_failure"], vec![])],
    );
    errors.zero_if_present = Some(Role::Requests);
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
        ],
    )
}
