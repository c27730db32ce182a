//! Hugging Face Text Generation Inference.

use super::{input, make_profile, term};
use crate::model::{Profile, Role};

/// Text Generation Inference. Token counters come from the `_sum` of its per-request histograms.
/// `tgi_request_count` counts every request, failed ones included (`tgi_request_failure{err}`,
/// created at the first failure of each kind). Its inter-token latency is each request's mean
/// time per token, so quantiles are over requests, not over tokens as in vLLM.
pub fn profile() -> Profile {
    let mut errors = input(Role::Errors, vec![term(&["tgi_request_failure"], vec![])]);
    errors.zero_if_present = Some(Role::Requests);
    make_profile(
        "tgi",
        vec![
            input(Role::Requests, vec![term(&["tgi_request_count"], vec![])]),
            errors,
            input(Role::Latency, vec![term(&["tgi_request_duration"], vec![])]),
            input(
                Role::InFlight,
                vec![
                    term(&["tgi_batch_current_size"], vec![]),
                    term(&["tgi_queue_size"], vec![]),
                ],
            ),
            input(Role::Queue, vec![term(&["tgi_queue_size"], vec![])]),
            input(
                Role::Running,
                vec![term(&["tgi_batch_current_size"], vec![])],
            ),
            input(
                Role::PromptTokens,
                vec![term(&["tgi_request_input_length_sum"], vec![])],
            ),
            input(
                Role::GenerationTokens,
                vec![term(&["tgi_request_generated_tokens_sum"], vec![])],
            ),
            input(
                Role::InterTokenLatency,
                vec![term(&["tgi_request_mean_time_per_token_duration"], vec![])],
            ),
            input(
                Role::QueueTime,
                vec![term(&["tgi_request_queue_duration"], vec![])],
            ),
        ],
    )
}
