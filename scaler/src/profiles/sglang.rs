//! SGLang.

use super::{input, make_profile, term};
use crate::model::{Profile, Role};

pub fn profile() -> Profile {
    make_profile(
        "sglang",
        vec![
            input(
                Role::Requests,
                vec![term(
                    &[
                        "sglang:num_requests_total",
                        "sglang:e2e_request_latency_seconds_count",
                    ],
                    vec![],
                )],
            ),
            input(
                Role::Latency,
                vec![term(&["sglang:e2e_request_latency_seconds"], vec![])],
            ),
            input(
                Role::InFlight,
                vec![
                    term(&["sglang:num_running_reqs"], vec![]),
                    term(&["sglang:num_queue_reqs"], vec![]),
                ],
            ),
            input(Role::Queue, vec![term(&["sglang:num_queue_reqs"], vec![])]),
            input(
                Role::Running,
                vec![term(&["sglang:num_running_reqs"], vec![])],
            ),
            input(Role::KvCache, vec![term(&["sglang:token_usage"], vec![])]),
            input(
                Role::PromptTokens,
                vec![term(&["sglang:prompt_tokens_total"], vec![])],
            ),
            input(
                Role::GenerationTokens,
                vec![term(&["sglang:generation_tokens_total"], vec![])],
            ),
            input(
                Role::TimeToFirstToken,
                vec![term(&["sglang:time_to_first_token_seconds"], vec![])],
            ),
            input(
                Role::InterTokenLatency,
                vec![term(
                    &[
                        "sglang:inter_token_latency_seconds",
                        "sglang:time_per_output_token_seconds",
                    ],
                    vec![],
                )],
            ),
            input(
                Role::QueueTime,
                vec![term(&["sglang:queue_time_seconds"], vec![])],
            ),
        ],
    )
}
