//! A Prometheus-compatible server (Prometheus, Thanos, Mimir, VictoriaMetrics) as a source, for
//! fleets too large to scrape directly.
//!
//! The same profiles drive it: for every input role one instant query (rates over `rateWindow`,
//! grouped by the zone label) is generated, or the user's own query is used. A poller runs them
//! every `interval` and keeps the latest per-zone results; answers read those. The missing-data
//! rule is the same as for direct scraping: an empty result, a NaN, a failed or stale query is
//! UNAVAILABLE, never 0.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{Aggregation, Matcher, Source};
use crate::profiles::{Input, Kind, Profile, Role};
use crate::window::Clock;

/// Where and how to query; validated from the `prometheus:` block of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSource {
    /// Base URL; `/api/v1/query` is appended (keep a path prefix such as Mimir's `/prometheus`).
    pub url: String,
    /// Label carrying the zone on the queried series (e.g. `topology_kubernetes_io_zone`).
    pub zone_label: String,
    /// Zones this source serves: triggers may name only these.
    pub zones: Vec<String>,
    /// Range of `rate()` in generated queries.
    pub rate_window: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub auth: PromAuth,
    pub tls: PromTls,
    /// Extra request headers, e.g. `X-Scope-OrgID` for a Mimir tenant.
    pub headers: Vec<(String, String)>,
    /// A user query per role, replacing the generated one. Must group by the zone label (and `le`
    /// for histograms).
    pub queries: BTreeMap<Role, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum PromAuth {
    #[default]
    None,
    /// The token is re-read at every poll, so a rotated projected token keeps working.
    Bearer { token_file: PathBuf },
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("query `{query}`: {reason}")]
    Query { query: String, reason: String },
}

/// One query of a poll, and how to read its result.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    pub role: Role,
    pub part: QueryPart,
    pub promql: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryPart {
    /// A per-second rate (counters) or the `Sum` aggregate (gauges).
    Value,
    /// Per-`le` bucket rates of a histogram.
    Buckets,
    /// Gauge aggregates beyond the sum, so any trigger aggregation can be served.
    Count,
    Max,
}

/// What one role reads in one zone at the last poll.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZoneInputs {
    pub values: BTreeMap<(Role, QueryPart), f64>,
    /// Bucket rates by bound (seconds), sorted, per histogram role.
    pub buckets: BTreeMap<Role, Vec<(f64, f64)>>,
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

/// The expression for one input: terms added (`+` matches per zone, so a zone missing a term has
/// no value: unavailable, not low), alternative names joined by `or` (the first present wins,
/// as in direct scraping).
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
    if terms.len() == 1 {
        terms.into_iter().next().unwrap_or_default()
    } else {
        terms
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" + ")
    }
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
                    let a = input_expr(anchor, &source.matchers, &format!("sum by ({zone})"), rate);
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

// === Responses ===

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses an `/api/v1/query` response body into an instant vector.
pub fn parse_response(body: &[u8]) -> Result<Vec<Sample>, String> {
    let resp: ApiResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus API response: {e}"))?;
    if resp.status != "success" {
        return Err(format!(
            "{}: {}",
            resp.error_type.unwrap_or_else(|| "error".into()),
            resp.error.unwrap_or_default()
        ));
    }
    let data = resp.data.ok_or("response has no data")?;
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed vector: {e}"))?;
            samples
                .into_iter()
                .map(|s| {
                    let value = parse_value(&s.value.1)?;
                    Ok(Sample {
                        labels: s.metric,
                        value,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed scalar: {e}"))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&v)?,
            }])
        }
        other => Err(format!("expected an instant vector, got a {other}")),
    }
}

/// Prometheus writes values as strings: "1.5", "NaN", "+Inf".
fn parse_value(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("value {s:?} is not a number"))
}

/// Folds one query's samples into per-zone inputs. Samples without the zone label, or zones the
/// source does not list, are ignored: they belong to no zone we answer for.
pub fn fold(
    zones: &mut BTreeMap<String, ZoneInputs>,
    query: &PlannedQuery,
    zone_label: &str,
    scale: f64,
    samples: &[Sample],
) {
    for s in samples {
        let Some(zone) = s.labels.get(zone_label) else {
            continue;
        };
        let Some(inputs) = zones.get_mut(zone) else {
            continue;
        };
        match query.part {
            QueryPart::Buckets => {
                let Some(le) = s.labels.get("le").and_then(|le| le.parse::<f64>().ok()) else {
                    continue;
                };
                let le = if le.is_finite() { le * scale } else { le };
                let buckets = inputs.buckets.entry(query.role).or_default();
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, v)) => *v += s.value,
                    None => buckets.push((le, s.value)),
                }
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            part => {
                *inputs.values.entry((query.role, part)).or_insert(0.0) += s.value;
            }
        }
    }
}

// === State and polling ===

#[derive(Debug, Default, Clone)]
pub struct PromData {
    pub last_success: Option<f64>,
    pub last_attempt: Option<f64>,
    pub last_duration: f64,
    pub last_error: Option<String>,
    pub polls: u64,
    pub failures: u64,
    pub zones: BTreeMap<String, ZoneInputs>,
}

/// The latest results of one Prometheus source of a pool.
#[derive(Debug)]
pub struct PromState {
    pub config: Arc<PromSource>,
    pub queries: Vec<PlannedQuery>,
    /// Per role, the factor from the histogram's unit to seconds.
    scales: BTreeMap<Role, f64>,
    data: Mutex<PromData>,
}

impl PromState {
    pub fn new(source: &Source, config: Arc<PromSource>) -> PromState {
        let scales = source
            .profile
            .inputs
            .iter()
            .map(|i| (i.role, i.scale))
            .collect();
        PromState {
            queries: plan(source, &config),
            config,
            scales,
            data: Mutex::new(PromData::default()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, PromData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A client set up with the source's TLS and timeout.
pub fn client(config: &PromSource) -> Result<reqwest::Client, PromError> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| PromError::File {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("redbridge/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
        .danger_accept_invalid_certs(config.tls.insecure_skip_verify);
    if let Some(ca) = &config.tls.ca_file {
        let cert = reqwest::Certificate::from_pem(&read("CA file", ca)?)
            .map_err(|e| PromError::Tls(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let id =
                reqwest::Identity::from_pem(&pem).map_err(|e| PromError::Tls(e.to_string()))?;
            builder = builder.identity(id);
        }
        (None, None) => {}
        _ => return Err(PromError::Tls("certFile and keyFile go together".into())),
    }
    builder.build().map_err(|e| PromError::Tls(e.to_string()))
}

async fn query(
    client: &reqwest::Client,
    config: &PromSource,
    promql: &str,
) -> Result<Vec<Sample>, String> {
    let url = format!("{}/api/v1/query", config.url.trim_end_matches('/'));
    let mut req = client.post(url).form(&[("query", promql)]);
    for (k, v) in &config.headers {
        req = req.header(k, v);
    }
    match &config.auth {
        PromAuth::None => {}
        PromAuth::Bearer { token_file } => {
            let token = std::fs::read_to_string(token_file)
                .map_err(|e| format!("cannot read bearer token {}: {e}", token_file.display()))?;
            req = req.bearer_auth(token.trim());
        }
        PromAuth::Basic {
            username,
            password_file,
        } => {
            let password = std::fs::read_to_string(password_file)
                .map_err(|e| format!("cannot read password {}: {e}", password_file.display()))?;
            req = req.basic_auth(username, Some(password.trim()));
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {}", crate::scrape::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    if !status.is_success() && body.is_empty() {
        return Err(format!("HTTP status {status}"));
    }
    parse_response(&body).map_err(|e| format!("HTTP status {status}: {e}"))
}

/// Runs every planned query once and replaces the stored results. A failed query fails the whole
/// poll: half a poll would mix fresh and missing inputs.
pub async fn poll_once(state: &PromState, client: &reqwest::Client, clock: &Clock) {
    let started = clock.now();
    let mut zones: BTreeMap<String, ZoneInputs> = state
        .config
        .zones
        .iter()
        .map(|z| (z.clone(), ZoneInputs::default()))
        .collect();
    let mut error = None;
    for q in &state.queries {
        match query(client, &state.config, &q.promql).await {
            Ok(samples) => {
                let scale = state.scales.get(&q.role).copied().unwrap_or(1.0);
                fold(&mut zones, q, &state.config.zone_label, scale, &samples);
            }
            Err(reason) => {
                error = Some(PromError::Query {
                    query: q.promql.clone(),
                    reason,
                });
                break;
            }
        }
    }
    let finished = clock.now();
    let mut data = state.lock();
    data.polls += 1;
    data.last_attempt = Some(finished);
    data.last_duration = finished - started;
    match error {
        None => {
            data.last_success = Some(finished);
            data.last_error = None;
            data.zones = zones;
        }
        Some(e) => {
            if data.last_error.is_none() {
                warn!(url = %state.config.url, error = %e, "Prometheus query failed");
            }
            data.failures += 1;
            data.last_error = Some(e.to_string());
        }
    }
}

/// Polls one source every `interval` until `shutdown`.
pub async fn run(state: Arc<PromState>, clock: Clock, shutdown: CancellationToken) {
    let client = match client(&state.config) {
        Ok(c) => c,
        Err(e) => {
            // Validation builds the same client, so this only happens if files vanished since.
            warn!(url = %state.config.url, error = %e, "Cannot set up the Prometheus client");
            state.lock().last_error = Some(e.to_string());
            return;
        }
    };
    let mut ticks = tokio::time::interval(state.config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        poll_once(&state, &client, &clock).await;
    }
}

/// The gauge aggregate a trigger asked for, from the polled sum, count and max.
pub fn gauge(inputs: &ZoneInputs, role: Role, agg: Aggregation) -> Option<f64> {
    let get = |part| inputs.values.get(&(role, part)).copied();
    match agg {
        Aggregation::Sum => get(QueryPart::Value),
        Aggregation::Max => get(QueryPart::Max),
        Aggregation::Avg => {
            let (sum, count) = (get(QueryPart::Value)?, get(QueryPart::Count)?);
            (count > 0.0).then(|| sum / count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            profile: Arc::new(Profile::builtin(profile).unwrap()),
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
            r#"sum by (zone) (rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="httproute/ml/llama/rule/0"}[60s]))"#
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
            r#"(sum by (zone) (vllm:num_requests_running{model_name="llama"})) + (sum by (zone) (vllm:num_requests_waiting{model_name="llama"}))"#
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

    #[test]
    fn parses_vectors_errors_and_nan() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"zone":"a"},"value":[1700000000.1,"2.5"]},
            {"metric":{"zone":"b"},"value":[1700000000.1,"NaN"]}]}}"#;
        let v = parse_response(body).unwrap();
        assert_eq!(v[0].value, 2.5);
        assert!(v[1].value.is_nan());
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_response(err).unwrap_err(),
            "bad_data: parse error at char 5"
        );
        assert!(parse_response(b"<html>")
            .unwrap_err()
            .contains("not a Prometheus API response"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_response(matrix).unwrap_err().contains("got a matrix"));
    }

    #[test]
    fn folds_samples_into_zones_and_scales_buckets() {
        let mut zones: BTreeMap<String, ZoneInputs> = [("a".to_string(), ZoneInputs::default())]
            .into_iter()
            .collect();
        let q = PlannedQuery {
            role: Role::Latency,
            part: QueryPart::Buckets,
            promql: String::new(),
        };
        let s = |zone: &str, le: &str, v: f64| Sample {
            labels: [
                ("zone".to_string(), zone.to_string()),
                ("le".to_string(), le.to_string()),
            ]
            .into_iter()
            .collect(),
            value: v,
        };
        fold(
            &mut zones,
            &q,
            "zone",
            0.001,
            &[s("a", "+Inf", 4.0), s("a", "50", 3.0), s("z", "50", 9.0)],
        );
        assert_eq!(
            zones["a"].buckets[&Role::Latency],
            vec![(0.05, 3.0), (f64::INFINITY, 4.0)]
        );
    }
}
