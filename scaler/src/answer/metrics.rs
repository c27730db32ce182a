//! `/metrics`: redbridge's own series, in the Prometheus text format.
//!
//! Counters live in [`crate::telemetry::counters`]; everything else (signal values, target
//! health) is read from the state when `/metrics` is scraped, so nothing is computed in the scrape
//! loop for telemetry's sake.

use std::fmt::Write;

use crate::state::{QueryError, State};
use crate::telemetry::counters::{Metrics, TriggerKey, GRPC_BUCKETS};

/// Escapes a label value for the text format.
fn esc(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every series redbridge exports.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let now = state.clock.now();
    render_signals(state, now, &mut out);
    render_targets(state, &mut out);
    render_prometheus_sources(state, &mut out);
    render_sources(state, now, &mut out);
    render_grpc(&state.metrics, &mut out);
    render_controller(&state.metrics, &mut out);
    render_triggers(&state.metrics, &mut out);
    render_reloads(&state.metrics, &mut out);
    header(
        &mut out,
        "redbridge_ready",
        "gauge",
        "1 once this replica can answer KEDA: serving, pools known, windows filled or warm-up over.",
    );
    let _ = writeln!(
        out,
        "redbridge_ready {}",
        u8::from(state.readiness().is_ok())
    );
    out
}

fn render_signals(state: &State, now: f64, out: &mut String) {
    let mut values = String::new();
    let mut available = String::new();
    for p in state.pools() {
        let mut zones: Vec<Option<String>> = p
            .pool
            .zones()
            .into_iter()
            .map(|z| Some(z.to_string()))
            .collect();
        zones.push(None);
        for zone in zones {
            let exported = state.exported_signals(&p, zone.as_deref());
            let results = state.evaluate_all_at(&exported, now);
            for (resolved, result) in exported.iter().zip(results) {
                let signal = resolved.query.signal;
                let labels = format!(
                    "namespace=\"{}\",pool=\"{}\",zone=\"{}\",signal=\"{}\"",
                    esc(p.pool.namespace.as_deref().unwrap_or("")),
                    esc(&p.pool.name),
                    esc(zone.as_deref().unwrap_or("all")),
                    signal.name()
                );
                if let Ok(v) = result {
                    let _ = writeln!(values, "redbridge_signal_value{{{labels}}} {v}");
                }
                let ok = !matches!(result, Err(QueryError::Unavailable { .. }));
                let _ = writeln!(
                    available,
                    "redbridge_signal_available{{{labels}}} {}",
                    u8::from(ok)
                );
            }
        }
    }
    header(
        out,
        "redbridge_signal_value",
        "gauge",
        "Current value of a signal per pool, zone and signal, in the signal's unit (absent while unavailable).",
    );
    out.push_str(&values);
    header(
        out,
        "redbridge_signal_available",
        "gauge",
        "1 when the signal has fresh data, 0 when KEDA is answered UNAVAILABLE.",
    );
    out.push_str(&available);
}

fn render_targets(state: &State, out: &mut String) {
    let series: [(&str, &str, &str); 6] = [
        (
            "redbridge_target_up",
            "gauge",
            "1 if the last scrape of the target succeeded.",
        ),
        (
            "redbridge_target_scrape_duration_seconds",
            "gauge",
            "Duration of the last scrape of the target.",
        ),
        (
            "redbridge_target_staleness_seconds",
            "gauge",
            "Seconds since the last successful scrape of the target (absent before the first).",
        ),
        (
            "redbridge_target_scrapes_total",
            "counter",
            "Scrapes of the target, successful or not.",
        ),
        (
            "redbridge_target_scrape_errors_total",
            "counter",
            "Failed scrapes of the target.",
        ),
        (
            "redbridge_target_body_bytes",
            "gauge",
            "Size of the last body scraped from the target.",
        ),
    ];
    let mut bodies: Vec<String> = vec![String::new(); series.len()];
    for p in state.pools() {
        for t in &p.targets {
            let k = &t.key;
            let labels = format!(
                "pool=\"{}\",source=\"{}\",zone=\"{}\",target=\"{}\"",
                esc(&k.pool),
                esc(&k.source),
                esc(&k.zone),
                esc(&k.url)
            );
            let h = t.lock().health.clone();
            // Read after the health, not once per render: the render takes a while with many
            // targets, and a scrape that finished meanwhile would read as 0 s (or negative).
            let now = state.clock.now();
            let _ = writeln!(bodies[0], "{}{{{labels}}} {}", series[0].0, u8::from(h.up));
            let _ = writeln!(bodies[1], "{}{{{labels}}} {}", series[1].0, h.last_duration);
            if let Some(at) = h.last_success {
                let _ = writeln!(bodies[2], "{}{{{labels}}} {}", series[2].0, now - at);
            }
            let _ = writeln!(bodies[3], "{}{{{labels}}} {}", series[3].0, h.scrapes);
            let _ = writeln!(bodies[4], "{}{{{labels}}} {}", series[4].0, h.failures);
            let _ = writeln!(
                bodies[5],
                "{}{{{labels}}} {}",
                series[5].0, h.last_body_bytes
            );
        }
    }
    for ((name, kind, help), body) in series.iter().zip(bodies) {
        header(out, name, kind, help);
        out.push_str(&body);
    }
}

fn render_prometheus_sources(state: &State, out: &mut String) {
    let series: [(&str, &str, &str); 5] = [
        (
            "redbridge_prometheus_up",
            "gauge",
            "1 if the last poll of a Prometheus-compatible source succeeded.",
        ),
        (
            "redbridge_prometheus_poll_duration_seconds",
            "gauge",
            "Duration of the last poll (all queries) of the source.",
        ),
        (
            "redbridge_prometheus_staleness_seconds",
            "gauge",
            "Seconds since the last successful poll of the source (absent before the first).",
        ),
        (
            "redbridge_prometheus_polls_total",
            "counter",
            "Polls of the source, successful or not.",
        ),
        (
            "redbridge_prometheus_poll_errors_total",
            "counter",
            "Failed polls of the source.",
        ),
    ];
    let mut bodies: Vec<String> = vec![String::new(); series.len()];
    for p in state.pools() {
        for (si, prom) in p.prom.iter().enumerate() {
            let Some(prom) = prom else { continue };
            let labels = format!(
                "pool=\"{}\",source=\"{}\"",
                esc(&p.pool.name),
                esc(&p.pool.sources[si].name)
            );
            let d = prom.lock().clone();
            let now = state.clock.now();
            let up = d.last_attempt.is_some() && d.last_error.is_none();
            let _ = writeln!(bodies[0], "{}{{{labels}}} {}", series[0].0, u8::from(up));
            let _ = writeln!(bodies[1], "{}{{{labels}}} {}", series[1].0, d.last_duration);
            if let Some(at) = d.last_success {
                let _ = writeln!(bodies[2], "{}{{{labels}}} {}", series[2].0, now - at);
            }
            let _ = writeln!(bodies[3], "{}{{{labels}}} {}", series[3].0, d.polls);
            let _ = writeln!(bodies[4], "{}{{{labels}}} {}", series[4].0, d.failures);
        }
    }
    for ((name, kind, help), body) in series.iter().zip(bodies) {
        header(out, name, kind, help);
        out.push_str(&body);
    }
}

fn render_sources(state: &State, now: f64, out: &mut String) {
    header(
        out,
        "redbridge_source_has_data",
        "gauge",
        "1 if some target of the pool's source answered within staleAfter (a Prometheus-compatible source: a recent successful poll).",
    );
    for p in state.pools() {
        for s in state.source_status(&p, now) {
            let _ = writeln!(
                out,
                "redbridge_source_has_data{{namespace=\"{}\",pool=\"{}\",source=\"{}\"}} {}",
                esc(p.pool.namespace.as_deref().unwrap_or("")),
                esc(&p.pool.name),
                esc(&s.name),
                u8::from(s.has_data())
            );
        }
    }
}

/// `namespace/name` (as the controller keys pools) as `namespace="...",pool="..."`.
fn pool_labels(key: &str) -> String {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    format!("namespace=\"{}\",pool=\"{}\"", esc(namespace), esc(name))
}

fn render_triggers(m: &Metrics, out: &mut String) {
    let mut rows: Vec<(TriggerKey, (f64, f64))> =
        m.triggers.iter().map(|(k, v)| ((*k).clone(), v)).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, help, pick) in [
        (
            "redbridge_trigger_target",
            "Target of a KEDA trigger reading this signal, in the signal's unit.",
            0,
        ),
        (
            "redbridge_trigger_activation_target",
            "Activation target of a KEDA trigger reading this signal.",
            1,
        ),
    ] {
        header(out, name, "gauge", help);
        for ((ns, pool, zone, signal), (target, activation)) in &rows {
            let v = if pick == 0 { target } else { activation };
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{}\",pool=\"{}\",zone=\"{}\",signal=\"{}\"}} {v}",
                esc(ns),
                esc(pool),
                esc(zone),
                esc(signal)
            );
        }
    }
}

fn render_reloads(m: &Metrics, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "redbridge_config_reloads_total",
        "counter",
        "Changes of the configuration file applied without a restart.",
    );
    let _ = writeln!(
        out,
        "redbridge_config_reloads_total {}",
        m.config_reloads.load(Relaxed)
    );
    header(
        out,
        "redbridge_config_reload_failures_total",
        "counter",
        "Changes of the configuration file refused as invalid; the previous configuration keeps serving.",
    );
    let _ = writeln!(
        out,
        "redbridge_config_reload_failures_total {}",
        m.config_reload_failures.load(Relaxed)
    );
    header(
        out,
        "redbridge_config_last_reload_success",
        "gauge",
        "1 when the configuration file as it is now is the one served; 0 after a refused change.",
    );
    let _ = writeln!(
        out,
        "redbridge_config_last_reload_success {}",
        u8::from(m.config_last_reload_ok.load(Relaxed))
    );
}

fn render_controller(m: &Metrics, out: &mut String) {
    // Only where there is an election (`redbridge controller`).
    if let Some(leading) = *m.leader.lock().unwrap_or_else(|e| e.into_inner()) {
        header(
            out,
            "redbridge_leader",
            "gauge",
            "1 while this replica holds the controller's Lease and writes; 0 on a follower (which still serves KEDA).",
        );
        let _ = writeln!(out, "redbridge_leader {}", u8::from(leading));
    }
    let zones = m.zones.lock().unwrap_or_else(|e| e.into_inner()).clone();
    header(
        out,
        "redbridge_zone_replicas",
        "gauge",
        "Replicas of a zone's scale target by state (ready, starting, desired), as the controller sees them.",
    );
    for ((key, zone), z) in &zones {
        let pool = pool_labels(key);
        for (state, n) in [
            ("ready", z.ready),
            ("starting", z.starting),
            ("desired", z.desired),
        ] {
            let _ = writeln!(
                out,
                "redbridge_zone_replicas{{{pool},zone=\"{}\",state=\"{state}\"}} {n}",
                esc(zone)
            );
        }
    }
    header(
        out,
        "redbridge_zone_demand",
        "gauge",
        "Demand of a zone (local, spilled_in from full zones, spilled_out to other zones), in the demand signal's unit.",
    );
    for ((key, zone), z) in &zones {
        let pool = pool_labels(key);
        for (kind, v) in [
            ("local", z.local_demand),
            ("spilled_in", z.spilled_in),
            ("spilled_out", z.spilled_out),
        ] {
            let _ = writeln!(
                out,
                "redbridge_zone_demand{{{pool},zone=\"{}\",kind=\"{kind}\"}} {v}",
                esc(zone)
            );
        }
    }
    header(
        out,
        "redbridge_zone_weight",
        "gauge",
        "With spec.routing: the share (0 to 1) of the pool's requests a zone serves, as written to the gateway.",
    );
    for ((key, zone), z) in &zones {
        if let Some(w) = z.weight {
            let pool = pool_labels(key);
            let _ = writeln!(
                out,
                "redbridge_zone_weight{{{pool},zone=\"{}\"}} {w}",
                esc(zone)
            );
        }
    }
    header(
        out,
        "redbridge_reconciles_total",
        "counter",
        "Reconciles of ZonalScaledObjects by outcome (ok, or the error kind).",
    );
    for (outcome, n) in m
        .reconciles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "redbridge_reconciles_total{{outcome=\"{}\"}} {n}",
            esc(outcome)
        );
    }
}

fn render_grpc(m: &Metrics, out: &mut String) {
    header(
        out,
        "redbridge_grpc_requests_total",
        "counter",
        "gRPC calls from KEDA by method and status code.",
    );
    for ((method, code), n) in m.grpc.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "redbridge_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
        );
    }
    header(
        out,
        "redbridge_grpc_request_duration_seconds",
        "histogram",
        "Time redbridge took to answer a gRPC call.",
    );
    for (method, h) in m
        .grpc_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        for (le, c) in GRPC_BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                out,
                "redbridge_grpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"{le}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "redbridge_grpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "redbridge_grpc_request_duration_seconds_sum{{method=\"{method}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "redbridge_grpc_request_duration_seconds_count{{method=\"{method}\"}} {}",
            h.count
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::extract::Scratch;
    use crate::model::{Clock, Config};

    /// Pool `llama` in `ml`: one Envoy gateway per zone, a 2 s window scraped every second.
    const POOL: &str = r#"
pools:
  - name: llama
    namespace: ml
    window: 2s
    interval: 1s
    staleAfter: 5s
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://10.0.0.1:9901/stats/prometheus", zone: zone-a }
          - { url: "http://10.0.0.2:9901/stats/prometheus", zone: zone-b }
"#;

    /// An Envoy body: `requests` so far and `active` requests in flight.
    fn envoy(requests: u64, active: u64) -> String {
        format!(
            "envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"c\"}} {requests}\n\
             envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"2\",envoy_cluster_name=\"c\"}} {requests}\n\
             envoy_cluster_upstream_rq_active{{envoy_cluster_name=\"c\"}} {active}\n"
        )
    }

    /// The state after three scrapes one second apart (clock at 2 s): zone-a counted 10
    /// requests/s with 4 in flight; zone-b answered once, then failed twice.
    fn scraped() -> State {
        let config = Config::from_yaml(POOL, "test.yaml").expect("valid test config");
        let state = State::new(&config, Clock::default());
        let p = state.pools()[0].clone();
        let mut scratch = Scratch::default();
        for (i, at) in [0.0, 1.0, 2.0].into_iter().enumerate() {
            for t in &p.targets {
                if t.key.zone == "zone-b" && i > 0 {
                    t.record_failure(at, 0.25, "connection refused".into(), 30.0);
                    continue;
                }
                let body = envoy(100 + 10 * i as u64, 4);
                let (reading, _) = p.extractors[t.source_index]
                    .extract(body.as_bytes(), &mut scratch)
                    .expect("parses");
                t.record_success(at, 0.125, body.len(), reading, 30.0);
            }
        }
        state
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .collect()
    }

    /// The sample of `name` with exactly `labels`, parsed.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().expect("a number"))
    }

    const A: &str = r#"namespace="ml",pool="llama",zone="zone-a""#;
    const B: &str = r#"namespace="ml",pool="llama",zone="zone-b""#;
    const ALL: &str = r#"namespace="ml",pool="llama",zone="all""#;

    // Paused time: the state's clock reads exactly 2 s when /metrics is rendered.
    #[tokio::test(start_paused = true)]
    async fn signal_values_per_zone_and_for_all_zones() {
        let state = scraped();
        tokio::time::advance(Duration::from_secs(2)).await;
        let text = render(&state);
        let value = |zone: &str, signal: &str| {
            sample(
                &text,
                "redbridge_signal_value",
                &format!("{zone},signal=\"{signal}\""),
            )
        };
        assert_eq!(value(A, "requests_per_second"), Some(10.0), "{text}");
        assert_eq!(value(ALL, "requests_per_second"), Some(10.0), "{text}");
        assert_eq!(value(A, "concurrency"), Some(4.0), "{text}");
        // A gauge: zone-b's one answer is still within staleAfter, and all zones add up.
        assert_eq!(value(B, "concurrency"), Some(4.0), "{text}");
        assert_eq!(value(ALL, "concurrency"), Some(8.0), "{text}");
        // A rate needs two scrapes: zone-b has no value, and says it is unavailable.
        assert_eq!(value(B, "requests_per_second"), None, "{text}");
        let available = |zone: &str, signal: &str| {
            sample(
                &text,
                "redbridge_signal_available",
                &format!("{zone},signal=\"{signal}\""),
            )
        };
        assert_eq!(available(A, "requests_per_second"), Some(1.0), "{text}");
        assert_eq!(available(B, "requests_per_second"), Some(0.0), "{text}");
        // Envoy has no queue of its own here: exported, and unavailable.
        assert_eq!(available(ALL, "queue_depth"), Some(0.0), "{text}");
        assert!(!text.contains("zone=\"zone-c\""), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn target_health_per_target() {
        let state = scraped();
        tokio::time::advance(Duration::from_secs(2)).await;
        let text = render(&state);
        let target = |zone: &str, host: &str| {
            format!(
                "pool=\"llama\",source=\"gateway\",zone=\"{zone}\",target=\"http://{host}:9901/stats/prometheus\""
            )
        };
        let (a, b) = (target("zone-a", "10.0.0.1"), target("zone-b", "10.0.0.2"));
        for (name, at_a, at_b) in [
            ("redbridge_target_up", Some(1.0), Some(0.0)),
            (
                "redbridge_target_scrape_duration_seconds",
                Some(0.125),
                Some(0.25),
            ),
            ("redbridge_target_staleness_seconds", Some(0.0), Some(2.0)),
            ("redbridge_target_scrapes_total", Some(3.0), Some(3.0)),
            ("redbridge_target_scrape_errors_total", Some(0.0), Some(2.0)),
        ] {
            assert_eq!(sample(&text, name, &a), at_a, "{name}: {text}");
            assert_eq!(sample(&text, name, &b), at_b, "{name}: {text}");
        }
        let has_data = r#"namespace="ml",pool="llama",source="gateway""#;
        assert_eq!(
            sample(&text, "redbridge_source_has_data", has_data),
            Some(1.0)
        );
        // Not serving yet: not ready.
        assert!(text.lines().any(|l| l == "redbridge_ready 0"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_never_answered_has_no_staleness_and_every_family_is_typed() {
        let config = Config::from_yaml(POOL, "test.yaml").expect("valid test config");
        let state = State::new(&config, Clock::default());
        let p = state.pools()[0].clone();
        p.targets[0].record_failure(0.0, 0.5, "timed out".into(), 30.0);
        state
            .metrics
            .trigger_seen("ml", "llama", "zone-a", "queue_depth", 5.0, 1.0);
        tokio::time::advance(Duration::from_secs(1)).await;
        let text = render(&state);
        assert!(
            lines_of(&text, "redbridge_target_staleness_seconds").is_empty(),
            "{text}"
        );
        assert!(
            lines_of(&text, "redbridge_signal_value").is_empty(),
            "{text}"
        );
        let trigger = r#"namespace="ml",pool="llama",zone="zone-a",signal="queue_depth""#;
        assert_eq!(
            sample(&text, "redbridge_trigger_target", trigger),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "redbridge_trigger_activation_target", trigger),
            Some(1.0)
        );
        // Every sample follows the HELP and TYPE of its family.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().expect("a name").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("a name");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line} has no TYPE before it");
            }
        }
    }
}
