//! vLLM.

use super::{input, make_profile, term};
use crate::model::{Profile, Role};

/// vLLM, v1 names first and the v0 names still in the field second.
pub fn profile() -> Profile {
    make_profile(
        "vllm",
        vec![
            input(
                Role::Requests,
                vec![term(&["vllm:request_success_total"], vec![])],
            ),
            input(
                Role::Latency,
                vec![term(&["vllm:e2e_request_latency_seconds"], vec![])],
            ),
            input(
                Role::InFlight,
                vec![
                    term(&["vllm:num_requests_running"], vec![]),
                    term(&["vllm:num_requests_waiting"], vec![]),
                ],
            ),
            input(
                Role::Queue,
                vec![term(&["vllm:num_requests_waiting"], vec![])],
            ),
            input(
                Role::Running,
                vec![term(&["vllm:num_requests_running"], vec![])],
            ),
            input(
                Role::KvCache,
                vec![term(
                    &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
                    vec![],
                )],
            ),
            input(
                Role::PromptTokens,
                vec![term(&["vllm:prompt_tokens_total"], vec![])],
            ),
            input(
                Role::GenerationTokens,
                vec![term(&["vllm:generation_tokens_total"], vec![])],
            ),
            input(
                Role::TimeToFirstToken,
                vec![term(&["vllm:time_to_first_token_seconds"], vec![])],
            ),
            input(
                Role::InterTokenLatency,
                vec![term(
                    &[
                        "vllm:inter_token_latency_seconds",
                        "vllm:time_per_output_token_seconds",
                    ],
                    vec![],
                )],
            ),
            input(
                Role::QueueTime,
                vec![term(&["vllm:request_queue_time_seconds"], vec![])],
            ),
            input(
                Role::Preemptions,
                vec![term(&["vllm:num_preemptions_total"], vec![])],
            ),
        ],
    )
}
