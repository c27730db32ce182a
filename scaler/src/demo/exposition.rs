//! Renders simulated pods as the text their real processes serve, byte-compatible with captures
//! of Envoy's `/stats/prometheus` and vLLM v1's `/metrics`, so redbridge's parser and profiles are
//! exercised on the demo exactly as in a cluster.
//!
//! Envoy: `# TYPE` lines only, counters then gauges then histograms, families ordered by Envoy's
//! dotted stat name, label `envoy_cluster_name` last before `le`, integers for counters and
//! gauges, `{}` for unlabelled series, histogram `_sum` as C's `%.32g`. Per-code counters exist
//! only once a response with that code was seen (Envoy creates them lazily).
//!
//! vLLM (prometheus_client): `# HELP` and `# TYPE`, labels sorted by name, every value a Python
//! float string (`7431.0`, `6.634254336e+09`), histograms as buckets, `_count`, `_sum`.
//!
//! Both include unrelated families (another cluster, server and process series) so consumers must
//! select what they read.

use std::fmt::Write as _;

use super::sim::{GatewayPodState, Histogram, ModelPodState, ENVOY_RQ_TIME_BUCKETS_MS};

/// The cluster Envoy's own xDS stream uses: one long-lived request, never completed.
const XDS_CLUSTER: &str = "xds_cluster";

/// Prometheus label-value escaping (`\`, `"`, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// C's `printf("%.32g", v)`, which Envoy uses for histogram sums and bounds.
pub fn format_g32(v: f64) -> String {
    const P: i32 = 32;
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.*e}", (P - 1) as usize, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..P).contains(&exp) {
        let fixed = format!("{:.*}", (P - 1 - exp) as usize, v);
        strip_fraction_zeros(&fixed).to_string()
    } else {
        let m = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Python's `repr(float)` (shortest round-trip digits; exponent form below 1e-4 or from 1e16).
fn python_repr(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the same shortest round-trip digits Python uses.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        if exp < 0 {
            let zeros = "0".repeat((-exp - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                let pad = "0".repeat(int_len - digits.len());
                format!("{sign}{digits}{pad}.0")
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        }
    } else {
        let frac = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

/// prometheus_client's `floatToGoString`: Python's repr, switched to Go's exponent form for
/// positive values with seven or more integer digits (`1.048576e+06`).
pub fn format_python_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = python_repr(v);
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 => {
            let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            // Python pads with a literal 0: `e+0{dot - 1}`, so 1e10 prints as `1e+010`.
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => s,
    }
}

/// A per-cluster family: name, Prometheus type, and how to read it.
type ClusterFamily = (&'static str, &'static str, fn(&ClusterStats) -> u64);

/// One cluster's series as a gateway renders them.
struct ClusterStats<'a> {
    name: &'a str,
    rq_total: u64,
    completed: u64,
    pending_overflow: u64,
    pending_total: u64,
    /// Response codes seen, ascending.
    codes: [(u16, u64); 3],
    active: u64,
    pending_active: u64,
    healthy: u64,
    total: u64,
    rq_time: &'a Histogram,
}

impl ClusterStats<'_> {
    fn class(&self, class: u16) -> u64 {
        self.codes
            .iter()
            .filter(|(c, _)| c / 100 == class)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The stat prefix of the gateway's HTTP connection manager (`envoy_http_conn_manager_prefix`).
pub const LISTENER_PREFIX: &str = "ingress_http";

/// Renders one gateway pod as Envoy's `/stats/prometheus`, its model cluster named
/// `cluster_name`, its listener's request counters, plus Envoy's xDS cluster and server series.
pub fn render_gateway(pod: &GatewayPodState, cluster_name: &str, out: &mut String) {
    let empty = Histogram::new(ENVOY_RQ_TIME_BUCKETS_MS);
    let model = ClusterStats {
        name: cluster_name,
        rq_total: pod.upstream_rq_total,
        completed: pod.upstream_rq_completed,
        pending_overflow: pod.upstream_rq_pending_overflow,
        pending_total: pod.upstream_rq_pending_total,
        codes: [(200, pod.rq_200), (500, pod.rq_500), (503, pod.rq_503)],
        active: pod.upstream_rq_active,
        pending_active: pod.upstream_rq_pending_active,
        healthy: pod.membership_healthy,
        total: pod.membership_total,
        rq_time: &pod.upstream_rq_time,
    };
    let xds = ClusterStats {
        name: XDS_CLUSTER,
        rq_total: 1,
        completed: 0,
        pending_overflow: 0,
        pending_total: 0,
        codes: [(200, 0), (500, 0), (503, 0)],
        active: 1,
        pending_active: 0,
        healthy: 1,
        total: 1,
        rq_time: &empty,
    };
    let mut clusters = vec![model];
    if cluster_name != XDS_CLUSTER {
        clusters.push(xds);
    }
    clusters.sort_by(|a, b| a.name.cmp(b.name));
    let names: Vec<String> = clusters.iter().map(|c| escape(c.name)).collect();

    // Counters.
    let mut codes = String::new();
    for (c, name) in clusters.iter().zip(&names) {
        for (code, n) in c.codes.iter().filter(|(_, n)| *n > 0) {
            let _ = writeln!(
                codes,
                "envoy_cluster_upstream_rq{{envoy_response_code=\"{code}\",envoy_cluster_name=\"{name}\"}} {n}"
            );
        }
    }
    if !codes.is_empty() {
        out.push_str("# TYPE envoy_cluster_upstream_rq counter\n");
        out.push_str(&codes);
    }
    let per_cluster: [ClusterFamily; 4] = [
        ("envoy_cluster_upstream_rq_completed", "counter", |c| {
            c.completed
        }),
        (
            "envoy_cluster_upstream_rq_pending_overflow",
            "counter",
            |c| c.pending_overflow,
        ),
        ("envoy_cluster_upstream_rq_pending_total", "counter", |c| {
            c.pending_total
        }),
        ("envoy_cluster_upstream_rq_total", "counter", |c| c.rq_total),
    ];
    cluster_families(out, &clusters, &names, &per_cluster);
    let mut classes = String::new();
    for (c, name) in clusters.iter().zip(&names) {
        for class in [2u16, 5] {
            let n = c.class(class);
            if n > 0 {
                let _ = writeln!(
                    classes,
                    "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"{class}\",envoy_cluster_name=\"{name}\"}} {n}"
                );
            }
        }
    }
    if !classes.is_empty() {
        out.push_str("# TYPE envoy_cluster_upstream_rq_xx counter\n");
        out.push_str(&classes);
    }
    let added = clusters.len();
    let _ = writeln!(out, "# TYPE envoy_cluster_manager_cluster_added counter\nenvoy_cluster_manager_cluster_added{{}} {added}");
    // The listener's connection manager counts every request at arrival, held or not.
    let _ = writeln!(
        out,
        "# TYPE envoy_http_downstream_rq_total counter\nenvoy_http_downstream_rq_total{{envoy_http_conn_manager_prefix=\"{LISTENER_PREFIX}\"}} {}",
        pod.downstream_rq_total
    );
    out.push_str("# TYPE envoy_server_debug_assertion_failures counter\nenvoy_server_debug_assertion_failures{} 0\n");

    // Gauges.
    let gauges: [ClusterFamily; 4] = [
        ("envoy_cluster_membership_healthy", "gauge", |c| c.healthy),
        ("envoy_cluster_membership_total", "gauge", |c| c.total),
        ("envoy_cluster_upstream_rq_active", "gauge", |c| c.active),
        ("envoy_cluster_upstream_rq_pending_active", "gauge", |c| {
            c.pending_active
        }),
    ];
    cluster_families(out, &clusters, &names, &gauges);
    let _ = writeln!(
        out,
        "# TYPE envoy_http_downstream_rq_active gauge\nenvoy_http_downstream_rq_active{{envoy_http_conn_manager_prefix=\"{LISTENER_PREFIX}\"}} {}",
        pod.upstream_rq_active + pod.upstream_rq_pending_active
    );
    out.push_str("# TYPE envoy_server_concurrency gauge\nenvoy_server_concurrency{} 2\n");
    out.push_str("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n");
    let _ = writeln!(
        out,
        "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{{}} {}",
        pod.uptime_seconds
    );

    // Histograms.
    out.push_str("# TYPE envoy_cluster_upstream_rq_time histogram\n");
    for (c, name) in clusters.iter().zip(&names) {
        for (le, n) in c.rq_time.cumulative() {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format_g32(le)
            };
            let _ = writeln!(out, "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{name}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name=\"{name}\"}} {}",
            format_g32(c.rq_time.sum())
        );
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{name}\"}} {}",
            c.rq_time.count()
        );
    }
}

/// One `# TYPE` per family, then a line per cluster.
fn cluster_families(
    out: &mut String,
    clusters: &[ClusterStats],
    names: &[String],
    families: &[ClusterFamily],
) {
    for (family, kind, value) in families {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for (c, name) in clusters.iter().zip(names) {
            let _ = writeln!(
                out,
                "{family}{{envoy_cluster_name=\"{name}\"}} {}",
                value(c)
            );
        }
    }
}

/// Renders one model-server pod as vLLM v1's `/metrics` for `model_name` (engine 0), after the
/// Python runtime and process families every prometheus_client process serves.
pub fn render_vllm(pod: &ModelPodState, model_name: &str, out: &mut String) {
    let f = format_python_float;
    let family = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };

    family(
        out,
        "python_gc_objects_collected_total",
        "Objects collected during gc",
        "counter",
    );
    for (generation, n) in [(0, 7431.0), (1, 4936.0), (2, 1661.0)] {
        let _ = writeln!(
            out,
            "python_gc_objects_collected_total{{generation=\"{generation}\"}} {}",
            f(n)
        );
    }
    family(
        out,
        "python_gc_collections_total",
        "Number of times this generation was collected",
        "counter",
    );
    for (generation, n) in [(0, 1151.0), (1, 104.0), (2, 6.0)] {
        let _ = writeln!(
            out,
            "python_gc_collections_total{{generation=\"{generation}\"}} {}",
            f(n)
        );
    }
    family(out, "python_info", "Python platform information", "gauge");
    out.push_str(
        "python_info{implementation=\"CPython\",major=\"3\",minor=\"12\",patchlevel=\"9\",version=\"3.12.9\"} 1.0\n",
    );
    family(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", f(5.106151424e9));
    family(
        out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        f(pod.process_start_time_seconds)
    );
    family(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
    );
    let cpu = 10.95 + pod.generation_tokens_total as f64 * 1e-4;
    let _ = writeln!(out, "process_cpu_seconds_total {}", f(cpu));
    family(
        out,
        "process_open_fds",
        "Number of open file descriptors.",
        "gauge",
    );
    let _ = writeln!(out, "process_open_fds {}", f(49.0));

    let model = escape(model_name);
    let labels = format!("engine=\"0\",model_name=\"{model}\"");
    let scalar = |out: &mut String, name: &str, help: &str, kind: &str, v: f64| {
        family(out, name, help, kind);
        let _ = writeln!(out, "{name}{{{labels}}} {}", f(v));
    };
    scalar(
        out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        "gauge",
        f64::from(pod.num_requests_running),
    );
    scalar(
        out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        "gauge",
        f64::from(pod.num_requests_waiting),
    );
    scalar(
        out,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        "gauge",
        pod.kv_cache_usage_perc,
    );
    scalar(
        out,
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        "counter",
        pod.prompt_tokens_total as f64,
    );
    scalar(
        out,
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        "counter",
        0.0,
    );
    scalar(
        out,
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        "counter",
        0.0,
    );
    scalar(
        out,
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        "counter",
        pod.prompt_tokens_total as f64,
    );
    scalar(
        out,
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        "counter",
        pod.generation_tokens_total as f64,
    );

    family(
        out,
        "vllm:request_success_total",
        "Count of successfully processed requests.",
        "counter",
    );
    for (reason, n) in [
        ("stop", pod.request_success_total),
        ("length", 0),
        ("abort", 0),
    ] {
        let _ = writeln!(
            out,
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"{reason}\",model_name=\"{model}\"}} {}",
            f(n as f64)
        );
    }

    let histograms = [
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &pod.time_to_first_token_seconds,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &pod.e2e_request_latency_seconds,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &pod.request_queue_time_seconds,
        ),
    ];
    for (name, help, h) in histograms {
        family(out, name, help, "histogram");
        for (le, n) in h.cumulative() {
            let _ = writeln!(
                out,
                "{name}_bucket{{engine=\"0\",le=\"{}\",model_name=\"{model}\"}} {}",
                f(le),
                f(n as f64)
            );
        }
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", f(h.count() as f64));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", f(h.sum()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::scenario::Scenario;
    use super::super::sim::{Fleet, PodKind};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn python_floats_match_prometheus_client() {
        // Values as printed in real vLLM captures, and Python's repr edge cases.
        let cases: &[(f64, &str)] = &[
            (7431.0, "7431.0"),
            (0.0, "0.0"),
            (1.0, "1.0"),
            (6.634254336e9, "6.634254336e+09"),
            (5.106151424e9, "5.106151424e+09"),
            (1.7181405583e9, "1.7181405583e+09"),
            (1.048576e6, "1.048576e+06"),
            (1e6, "1e+06"),
            (999999.0, "999999.0"),
            (10.950000000000001, "10.950000000000001"),
            (0.31326723098754883, "0.31326723098754883"),
            (7.358146831393242e-05, "7.358146831393242e-05"),
            (0.0001, "0.0001"),
            (0.001, "0.001"),
            (2560.0, "2560.0"),
            (0.3, "0.3"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (1e10, "1e+010"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(format_python_float(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn g32_matches_envoy() {
        let cases: &[(f64, &str)] = &[
            (3.1500000000000004, "3.1500000000000003552713678800501"),
            (3.15, "3.1499999999999999111821580299875"),
            (17506.15, "17506.150000000001455191522836685"),
            (26128.216449495772, "26128.216449495772394584491848946"),
            (15.100000000000001, "15.1000000000000014210854715202"),
            (76.5, "76.5"),
            (0.0, "0"),
            (0.5, "0.5"),
            (3600000.0, "3600000"),
            (1e40, "1.0000000000000000303786028427004e+40"),
            (1e-5, "1.0000000000000000818030539140313e-05"),
        ];
        for (v, want) in cases {
            assert_eq!(format_g32(*v), *want, "{v:e}");
        }
    }

    /// Checks every histogram in `text`: buckets cumulative, `+Inf` equal to `_count`; returns
    /// how many it checked.
    fn check_histograms(text: &str) -> usize {
        let mut buckets: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("number");
            if let Some((name, labels)) = series.split_once("_bucket{") {
                let le_start = labels.find("le=\"").expect("le label");
                let le_end = labels[le_start + 4..].find('"').expect("le end") + le_start + 4;
                let le = labels[le_start + 4..le_end].to_string();
                let rest = format!("{}{}", &labels[..le_start], &labels[le_end + 1..]);
                let rest = rest
                    .replace(",,", ",")
                    .trim_matches(|c| c == ',' || c == '}')
                    .to_string();
                buckets
                    .entry(format!("{name}|{rest}"))
                    .or_default()
                    .push((le, value));
            } else if let Some((name, labels)) = series.split_once("_count{") {
                counts.insert(format!("{name}|{}", labels.trim_end_matches('}')), value);
            }
        }
        for (key, series) in &buckets {
            let mut prev = 0.0;
            let mut prev_le = f64::NEG_INFINITY;
            for (le, v) in series {
                let le_v: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le number")
                };
                assert!(le_v > prev_le, "{key}: bounds increase");
                assert!(*v >= prev, "{key}: cumulative at le={le}");
                prev = *v;
                prev_le = le_v;
            }
            let last = series.last().expect("buckets");
            assert_eq!(last.0, "+Inf", "{key}");
            assert_eq!(Some(&last.1), counts.get(key), "{key}: +Inf == _count");
        }
        buckets.len()
    }

    fn busy_fleet() -> Fleet {
        let mut f = Fleet::new(Scenario::default_demo(120.0), 2, 99);
        let mut t = 0.0;
        while t < 30.0 {
            t += 0.1;
            f.tick(t, 0.1);
        }
        f
    }

    #[test]
    fn gateway_text() {
        let f = busy_fleet();
        let pod = f
            .pods()
            .into_iter()
            .find(|p| p.id.kind == PodKind::Gateway)
            .expect("gateway");
        let state = f.gateway_state(pod).expect("live");
        let mut out = String::new();
        render_gateway(state, "httproute/default/llm/rule/0", &mut out);
        assert!(out.ends_with('\n'));
        assert!(!out.contains("\n\n"));
        let c = "envoy_cluster_name=\"httproute/default/llm/rule/0\"";
        let total = format!(
            "envoy_cluster_upstream_rq_total{{{c}}} {}\n",
            state.upstream_rq_total
        );
        assert!(out.contains(&total), "{out}");
        let ok = format!(
            "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"2\",{c}}} {}\n",
            state.rq_2xx()
        );
        assert!(out.contains(&ok), "{out}");
        assert!(out.contains(&format!(
            "envoy_cluster_upstream_rq{{envoy_response_code=\"200\",{c}}} {}\n",
            state.rq_200
        )));
        assert!(out.contains(&format!(
            "envoy_cluster_upstream_rq_time_bucket{{{c},le=\"0.5\"}} "
        )));
        assert!(out.contains(&format!(
            "envoy_cluster_upstream_rq_time_bucket{{{c},le=\"3600000\"}} "
        )));
        assert!(
            out.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"xds_cluster\"} 1\n")
        );
        assert!(out.contains("envoy_server_live{} 1\n"));
        assert!(out.contains(&format!(
            "envoy_cluster_upstream_rq_active{{{c}}} {}\n",
            state.upstream_rq_active
        )));
        // One TYPE per family, and every sample's family was declared before it.
        let mut declared = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or("");
                assert!(
                    !declared.contains(&name.to_string()),
                    "duplicate TYPE {name}"
                );
                declared.push(name.to_string());
            } else {
                let name = line.split('{').next().unwrap_or("");
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(
                    declared.iter().any(|d| d == name || d == base),
                    "undeclared {line}"
                );
            }
        }
        // Counters, then gauges, then histograms.
        let kinds: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        let mut sorted = kinds.clone();
        sorted.sort_by_key(|k| match *k {
            "counter" => 0,
            "gauge" => 1,
            _ => 2,
        });
        assert_eq!(kinds, sorted);
        assert_eq!(check_histograms(&out), 2);
        // Sum printed like Envoy, count as an integer.
        let sum = format!(
            "envoy_cluster_upstream_rq_time_sum{{{c}}} {}\n",
            format_g32(state.upstream_rq_time.sum())
        );
        assert!(out.contains(&sum));
        assert!(state.upstream_rq_time.count() > 10);
    }

    #[test]
    fn gateway_without_errors_has_no_5xx_series() {
        let f = Fleet::new(Scenario::default_demo(120.0), 1, 1);
        let pod = f.pods()[0];
        let mut out = String::new();
        render_gateway(f.gateway_state(pod).expect("live"), "vllm", &mut out);
        assert!(!out.contains("envoy_response_code_class=\"5\""));
        assert!(!out.contains("# TYPE envoy_cluster_upstream_rq counter"));
        assert!(out.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"vllm\"} 0\n"));
        assert_eq!(check_histograms(&out), 2);
    }

    #[test]
    fn vllm_text() {
        let f = busy_fleet();
        let pod = f
            .pods()
            .into_iter()
            .find(|p| p.id.kind == PodKind::ModelServer)
            .expect("model server");
        let state = f.model_state(pod).expect("ready");
        let mut out = String::new();
        render_vllm(state, "meta-llama/Llama-3.1-8B-Instruct", &mut out);
        assert!(out.ends_with('\n'));
        let l = "engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"";
        let running = format!(
            "vllm:num_requests_running{{{l}}} {}\n",
            format_python_float(f64::from(state.num_requests_running))
        );
        assert!(out.contains(&running), "{out}");
        assert!(out.contains(&format!(
            "vllm:generation_tokens_total{{{l}}} {}\n",
            format_python_float(state.generation_tokens_total as f64)
        )));
        assert!(out.contains(&format!(
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"stop\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {}\n",
            format_python_float(state.request_success_total as f64)
        )));
        assert!(out.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} "
        ));
        assert!(out.contains(
            "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"7680.0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} "
        ));
        assert!(out.contains("# TYPE vllm:kv_cache_usage_perc gauge\n"));
        assert!(
            out.contains("process_start_time_seconds 1.7672256e+09\n"),
            "{out}"
        );
        assert_eq!(check_histograms(&out), 3);
        assert!(state.e2e_request_latency_seconds.count() > 10);
        // Every value is a Python float string.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap_or("");
            assert!(
                v.contains('.') || v.contains('e') || v.ends_with("Inf"),
                "{line}"
            );
        }
    }

    #[test]
    fn labels_are_escaped() {
        let f = Fleet::new(Scenario::default_demo(120.0), 1, 1);
        let pods = f.pods();
        let mut out = String::new();
        render_vllm(f.model_state(pods[1]).expect("ready"), "a\"b\\c", &mut out);
        assert!(out.contains("model_name=\"a\\\"b\\\\c\""));
        out.clear();
        render_gateway(f.gateway_state(pods[0]).expect("live"), "x\ny", &mut out);
        assert!(out.contains("envoy_cluster_name=\"x\\ny\""));
    }
}
