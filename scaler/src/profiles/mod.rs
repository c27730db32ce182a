//! Profiles: which series of a data plane or model server feed which signal.
//!
//! A profile lists [`Input`]s by [`Role`]. Each input sums one or more [`Term`]s; a term names
//! alternative metric names (newest first) because the field runs several generations of the same
//! server, and the first name a target exposes wins for that target. Signals are then plain math on
//! roles (see `signals.rs`), so a custom mapping works exactly like a built-in one.

use std::collections::BTreeMap;

use crate::config::{Aggregation, Matcher, Signal};

/// What an input means, independent of any server's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Counter of finished requests.
    Requests,
    /// Counter of failed requests (a subset of `Requests`).
    Errors,
    /// Histogram of request latency.
    Latency,
    /// Gauge of requests in flight.
    InFlight,
    /// Gauge of requests waiting for capacity.
    Queue,
    /// Gauge of requests being executed.
    Running,
    /// Gauge of KV-cache use, 0..1.
    KvCache,
    /// Counter of prompt (input) tokens.
    PromptTokens,
    /// Counter of generated (output) tokens.
    GenerationTokens,
    /// Histogram of time to first token.
    TimeToFirstToken,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Requests,
        Role::Errors,
        Role::Latency,
        Role::InFlight,
        Role::Queue,
        Role::Running,
        Role::KvCache,
        Role::PromptTokens,
        Role::GenerationTokens,
        Role::TimeToFirstToken,
    ];

    /// Name used in configuration files (`custom:` mappings).
    pub fn name(self) -> &'static str {
        match self {
            Role::Requests => "requests",
            Role::Errors => "errors",
            Role::Latency => "latency",
            Role::InFlight => "in_flight",
            Role::Queue => "queue",
            Role::Running => "running",
            Role::KvCache => "kv_cache",
            Role::PromptTokens => "prompt_tokens",
            Role::GenerationTokens => "generation_tokens",
            Role::TimeToFirstToken => "time_to_first_token",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The kind of series a role must be read from.
    pub fn kind(self) -> Kind {
        match self {
            Role::Requests | Role::Errors | Role::PromptTokens | Role::GenerationTokens => {
                Kind::Counter
            }
            Role::Latency | Role::TimeToFirstToken => Kind::Histogram,
            Role::InFlight | Role::Queue | Role::Running | Role::KvCache => Kind::Gauge,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }
}

/// One family (by alternative names) with its own label matchers.
#[derive(Debug, Clone)]
pub struct Term {
    /// Alternative names, newest first; per target the first one present is used.
    pub names: Vec<String>,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub role: Role,
    /// Summed; every term must be of the role's kind.
    pub terms: Vec<Term>,
    /// Multiplies histogram bounds and sums into seconds (0.001 for milliseconds).
    pub scale: f64,
    /// When this input is absent but the given role is present on a target, read it as zero.
    /// Envoy creates `_xx{class="5"}` only at the first 5xx, and its latency histogram only at the
    /// first request; a zero there is real, whereas an absent request counter means we are blind.
    pub zero_if_present: Option<Role>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub inputs: Vec<Input>,
    /// How gauges of this profile combine across targets, unless the trigger says otherwise.
    pub gauge_aggregation: BTreeMap<Role, Aggregation>,
}

/// Names of the built-in profiles, for error messages and docs.
pub const BUILTIN: [&str; 9] = [
    "envoy",
    "envoy-downstream",
    "istio",
    "istio-gateway",
    "istio-waypoint",
    "vllm",
    "sglang",
    "tgi",
    "triton",
];

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Profile> {
        let p = match name {
            "envoy" => envoy_upstream(),
            "envoy-downstream" => envoy_downstream(),
            "istio" => istio(Some("destination"), name),
            "istio-gateway" => istio(Some("source"), name),
            // A waypoint reports each request once, as `waypoint` (older releases: `source`).
            "istio-waypoint" => istio(None, name),
            "vllm" => vllm(),
            "sglang" => sglang(),
            "tgi" => tgi(),
            "triton" => triton(),
            _ => return None,
        };
        Some(p)
    }

    pub fn input(&self, role: Role) -> Option<(usize, &Input)> {
        self.inputs.iter().enumerate().find(|(_, i)| i.role == role)
    }

    /// Roles a signal needs, the first being the one whose absence makes the signal unavailable.
    pub fn roles_for(signal: Signal) -> &'static [Role] {
        match signal {
            Signal::RequestsPerSecond => &[Role::Requests],
            Signal::ErrorRatio => &[Role::Requests, Role::Errors],
            Signal::Latency { .. } => &[Role::Latency],
            Signal::Concurrency => &[Role::InFlight],
            Signal::QueueDepth => &[Role::Queue],
            Signal::Running => &[Role::Running],
            Signal::KvCacheUtilization => &[Role::KvCache],
            Signal::PromptTokensPerSecond => &[Role::PromptTokens],
            Signal::GenerationTokensPerSecond => &[Role::GenerationTokens],
            Signal::TimeToFirstToken { .. } => &[Role::TimeToFirstToken],
        }
    }

    pub fn supports(&self, signal: Signal) -> bool {
        Profile::roles_for(signal)
            .iter()
            .all(|r| self.input(*r).is_some())
    }

    pub fn aggregation(&self, role: Role) -> Aggregation {
        self.gauge_aggregation
            .get(&role)
            .copied()
            .unwrap_or(match role {
                Role::KvCache => Aggregation::Avg,
                _ => Aggregation::Sum,
            })
    }
}

fn term(names: &[&str], matchers: Vec<Matcher>) -> Term {
    Term {
        names: names.iter().map(|s| s.to_string()).collect(),
        matchers,
    }
}

fn input(role: Role, terms: Vec<Term>) -> Input {
    Input {
        role,
        terms,
        scale: 1.0,
        zero_if_present: None,
    }
}

fn profile(name: &str, inputs: Vec<Input>) -> Profile {
    Profile {
        name: name.to_string(),
        inputs,
        gauge_aggregation: BTreeMap::new(),
    }
}

/// Envoy / Envoy Gateway, per upstream cluster (`envoy_cluster_name`, e.g. `httproute/ns/route/rule/0`).
fn envoy_upstream() -> Profile {
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
    profile(
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
fn envoy_downstream() -> Profile {
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
    profile(
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

/// Istio standard metrics as one reporter sees them: sidecars report as `destination`, gateways
/// as `source`, ambient waypoints as `waypoint`.
fn istio(reporter: Option<&str>, name: &str) -> Profile {
    let by_reporter = || -> Vec<Matcher> {
        reporter
            .map(|r| Matcher::eq("reporter", r))
            .into_iter()
            .collect()
    };
    let five_xx = Matcher::new("response_code", crate::config::MatchOp::Re, "5..")
        .expect("static regex is valid");
    let mut error_matchers = by_reporter();
    error_matchers.push(five_xx);
    let mut errors = input(
        Role::Errors,
        vec![term(&["istio_requests_total"], error_matchers)],
    );
    errors.zero_if_present = Some(Role::Requests);
    let mut latency = input(
        Role::Latency,
        vec![term(
            &["istio_request_duration_milliseconds"],
            by_reporter(),
        )],
    );
    latency.scale = 0.001;
    latency.zero_if_present = Some(Role::Requests);
    profile(
        name,
        vec![
            input(
                Role::Requests,
                vec![term(&["istio_requests_total"], by_reporter())],
            ),
            errors,
            latency,
        ],
    )
}

/// vLLM, v1 names first and the v0 names still in the field second.
fn vllm() -> Profile {
    profile(
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
        ],
    )
}

fn sglang() -> Profile {
    profile(
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
        ],
    )
}

/// Text Generation Inference. Token counters come from the `_sum` of its per-request histograms.
fn tgi() -> Profile {
    let mut errors = input(Role::Errors, vec![term(&["tgi_request_failure"], vec![])]);
    errors.zero_if_present = Some(Role::Requests);
    profile(
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
        ],
    )
}

/// Triton Inference Server. Its durations are cumulative counters, not histograms, so it has no
/// latency quantiles.
fn triton() -> Profile {
    let mut errors = input(
        Role::Errors,
        vec![term(&["nv_inference_request_failure"], vec![])],
    );
    errors.zero_if_present = Some(Role::Requests);
    profile(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_consistent() {
        for name in BUILTIN {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
            assert!(p.supports(Signal::RequestsPerSecond) || name == "triton");
            for input in &p.inputs {
                assert!(!input.terms.is_empty(), "{name} {:?}", input.role);
                if let Some(anchor) = input.zero_if_present {
                    assert!(p.input(anchor).is_some(), "{name} {:?}", input.role);
                }
            }
        }
        assert!(Profile::builtin("nginx").is_none());
    }

    #[test]
    fn signal_support_matches_the_catalog() {
        let vllm = Profile::builtin("vllm").unwrap();
        assert!(vllm.supports(Signal::TimeToFirstToken { permille: 950 }));
        assert!(!vllm.supports(Signal::ErrorRatio));
        let envoy = Profile::builtin("envoy").unwrap();
        assert!(envoy.supports(Signal::ErrorRatio));
        assert!(envoy.supports(Signal::QueueDepth));
        assert!(!envoy.supports(Signal::KvCacheUtilization));
        assert_eq!(envoy.aggregation(Role::Queue), Aggregation::Sum);
        assert_eq!(vllm.aggregation(Role::KvCache), Aggregation::Avg);
    }
}
