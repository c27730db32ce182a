//! PromQL planning: from a source's profile to the instant queries one poll runs.
//!
//! For every input role one query (rates over `rateWindow`, grouped by the zone label) is
//! generated, or the user's own query is used.

use std::fmt::Write;

use crate::model::{Input, Kind, Matcher, Profile, PromSource, Role, Source};
use crate::window::polled::QueryPart;

/// One query of a poll, and how to read its result.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    pub role: Role,
    pub part: QueryPart,
    pub promql: String,
}

/// Formats `name{matchers}` in PromQL.
fn selector(name: &str, matchers: &[&Matcher]) -> String {
    let mut s = name.to_string();
    if !matchers.is_empty() {
        s.push('{');
        for (i, m) in matchers.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{}{}\"{}\"", m.label, m.op, promql_escape(&m.value));
        }
        s.push('}');
    }
    s
}

fn promql_escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The expression for one input: terms added per zone, a term absent in a zone adding nothing
/// (`(a + b) or a or b`), as direct scraping sums the terms present; so an input with no term in
/// a zone has no value there. Alternative names are joined by `or` (the first present wins, as
/// in direct scraping).
fn input_expr(
    input: &Input,
    source_matchers: &[Matcher],
    by: &str,
    each: impl Fn(&str) -> String,
) -> String {
    let terms: Vec<String> = input
        .terms
        .iter()
        .map(|term| {
            let matchers: Vec<&Matcher> =
                source_matchers.iter().chain(term.matchers.iter()).collect();
            let alts: Vec<String> = term
                .names
                .iter()
                .map(|name| format!("{by} ({})", each(&selector(name, &matchers))))
                .collect();
            alts.join(" or ")
        })
        .collect();
    let mut terms = terms.into_iter();
    let first = terms.next().unwrap_or_default();
    terms.fold(first, |acc, t| {
        format!("(({acc}) + ({t})) or ({acc}) or ({t})")
    })
}

/// The queries a poll runs for `source`: one per counter and histogram role, three per gauge.
pub fn plan(source: &Source, prom: &PromSource) -> Vec<PlannedQuery> {
    let profile: &Profile = &source.profile;
    let zone = &prom.zone_label;
    let window = format!("{}s", prom.rate_window.as_secs().max(1));
    let mut out = Vec::new();
    for input in &profile.inputs {
        let role = input.role;
        if let Some(q) = prom.queries.get(&role) {
            let part = if role.kind() == Kind::Histogram {
                QueryPart::Buckets
            } else {
                QueryPart::Value
            };
            out.push(PlannedQuery {
                role,
                part,
                promql: q.clone(),
            });
            continue;
        }
        let rate = |sel: &str| format!("rate({sel}[{window}])");
        match role.kind() {
            Kind::Counter => {
                let mut q = input_expr(input, &source.matchers, &format!("sum by ({zone})"), rate);
                // Envoy-style "absent until the first error": zero wherever the anchor exists.
                if let Some((_, anchor)) = input.zero_if_present.and_then(|a| profile.input(a)) {
                    let by = format!("sum by ({zone})");
                    // A gauge anchor (Envoy's membership) is read as is; a counter's rate is.
                    let a = if anchor.role.kind() == Kind::Gauge {
                        input_expr(anchor, &source.matchers, &by, |s| s.to_string())
                    } else {
                        input_expr(anchor, &source.matchers, &by, rate)
                    };
                    q = format!("({q}) or (0 * ({a}))");
                }
                out.push(PlannedQuery {
                    role,
                    part: QueryPart::Value,
                    promql: q,
                });
            }
            Kind::Histogram => {
                let mut bucket_input = input.clone();
                for term in &mut bucket_input.terms {
                    for name in &mut term.names {
                        name.push_str("_bucket");
                    }
                }
                let q = input_expr(
                    &bucket_input,
                    &source.matchers,
                    &format!("sum by ({zone}, le)"),
                    rate,
                );
                out.push(PlannedQuery {
                    role,
                    part: QueryPart::Buckets,
                    promql: q,
                });
            }
            Kind::Gauge => {
                for (part, agg) in [
                    (QueryPart::Value, "sum"),
                    (QueryPart::Count, "count"),
                    (QueryPart::Max, "max"),
                ] {
                    let q = input_expr(
                        input,
                        &source.matchers,
                        &format!("{agg} by ({zone})"),
                        |s| s.to_string(),
                    );
                    out.push(PlannedQuery {
                        role,
                        part,
                        promql: q,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::{Matcher, PromAuth, PromTls};

    fn prom() -> PromSource {
        PromSource {
            url: "http://prometheus:9090".into(),
            zone_label: "zone".into(),
            zones: vec!["a".into(), "b".into()],
            rate_window: Duration::from_secs(60),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            auth: PromAuth::None,
            tls: PromTls::default(),
            headers: vec![],
            queries: BTreeMap::new(),
        }
    }

    fn source(profile: &str, matchers: &[&str]) -> Source {
        Source {
            name: "s".into(),
            profile: Arc::new(crate::profiles::builtin(profile).unwrap()),
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap())
                .collect(),
            targets: vec![],
            prometheus: None,
        }
    }

    fn find(plan: &[PlannedQuery], role: Role, part: QueryPart) -> String {
        plan.iter()
            .find(|q| q.role == role && q.part == part)
            .map(|q| q.promql.clone())
            .unwrap()
    }

    #[test]
    fn generates_envoy_queries_from_the_profile() {
        let p = plan(
            &source(
                "envoy",
                &[r#"envoy_cluster_name="httproute/ml/llama/rule/0""#],
            ),
            &prom(),
        );
        assert_eq!(
            find(&p, Role::Requests, QueryPart::Value),
            r#"(sum by (zone) (rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="httproute/ml/llama/rule/0"}[60s]))) or (0 * (sum by (zone) (envoy_cluster_membership_total{envoy_cluster_name="httproute/ml/llama/rule/0"})))"#
        );
        assert_eq!(
            find(&p, Role::Errors, QueryPart::Value),
            r#"(sum by (zone) (rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="httproute/ml/llama/rule/0",envoy_response_code_class="5"}[60s]))) or (0 * (sum by (zone) (rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="httproute/ml/llama/rule/0"}[60s]))))"#
        );
        assert_eq!(
            find(&p, Role::Latency, QueryPart::Buckets),
            r#"sum by (zone, le) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="httproute/ml/llama/rule/0"}[60s]))"#
        );
        assert_eq!(
            find(&p, Role::Queue, QueryPart::Max),
            r#"max by (zone) (envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="httproute/ml/llama/rule/0"})"#
        );
    }

    #[test]
    fn alternatives_use_or_and_terms_add() {
        let p = plan(&source("vllm", &[r#"model_name="llama""#]), &prom());
        assert_eq!(
            find(&p, Role::KvCache, QueryPart::Value),
            r#"sum by (zone) (vllm:kv_cache_usage_perc{model_name="llama"}) or sum by (zone) (vllm:gpu_cache_usage_perc{model_name="llama"})"#
        );
        assert_eq!(
            find(&p, Role::InFlight, QueryPart::Value),
            r#"((sum by (zone) (vllm:num_requests_running{model_name="llama"})) + (sum by (zone) (vllm:num_requests_waiting{model_name="llama"}))) or (sum by (zone) (vllm:num_requests_running{model_name="llama"})) or (sum by (zone) (vllm:num_requests_waiting{model_name="llama"}))"#
        );
    }

    /// The picker's queue: its flow-control queue plus its per-endpoint queues, either alone
    /// when the other is absent (no endpoint at zero replicas), as when scraped directly.
    #[test]
    fn a_term_absent_in_a_zone_adds_nothing() {
        let p = plan(&source("epp", &[]), &prom());
        let alts = |names: [&str; 3]| names.map(|n| format!("max by (zone) ({n})")).join(" or ");
        let flow = alts([
            "llm_d_router_epp_flow_control_queue_size",
            "llm_d_epp_flow_control_queue_size",
            "inference_extension_flow_control_queue_size",
        ]);
        let each = alts([
            "llm_d_router_epp_per_endpoint_queue_size",
            "llm_d_epp_per_endpoint_queue_size",
            "inference_pool_per_pod_queue_size",
        ]);
        assert_eq!(
            find(&p, Role::Queue, QueryPart::Max),
            format!("(({flow}) + ({each})) or ({flow}) or ({each})")
        );
    }

    #[test]
    fn user_queries_replace_generated_ones() {
        let mut cfg = prom();
        cfg.queries
            .insert(Role::Requests, "sum by (zone) (rate(my_total[2m]))".into());
        let p = plan(&source("envoy", &[]), &cfg);
        assert_eq!(
            find(&p, Role::Requests, QueryPart::Value),
            "sum by (zone) (rate(my_total[2m]))"
        );
    }
}
