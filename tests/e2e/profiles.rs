//! Every built-in profile on a real capture of its data plane or model server
//! (`../shared/fixtures/exposition/`, the first line of each names its source): the values each
//! role reads, by hand from the capture, and the signals that follow from two scrapes.

use std::sync::Arc;

use redbridge::extract::{Extractor, Hist, Reading, Scratch, Value, ValueRef};
use redbridge::model::{Matcher, Role, Signal, Source};
use redbridge::signals::{evaluate, Inputs, Rules, TargetView, Unavailable};
use redbridge::window::Scrape;

fn fixture(name: &str) -> Vec<u8> {
    redbridge_fixtures::read(format!("exposition/{name}")).into_bytes()
}

fn source(profile: &str, matchers: &[&str]) -> Source {
    Source {
        name: "s".into(),
        profile: Arc::new(
            redbridge::profiles::builtin(profile).unwrap_or_else(|| panic!("no {profile}")),
        ),
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).unwrap())
            .collect(),
        targets: vec![],
        prometheus: None,
    }
}

/// The capture's reading under `profile` and `matchers`.
fn read(file: &str, profile: &str, matchers: &[&str]) -> (Source, Reading) {
    let s = source(profile, matchers);
    let ex = Extractor::new(&s);
    let (r, stats) = ex
        .extract(&fixture(file), &mut Scratch::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(stats.selected > 0, "{file}: nothing selected");
    (s, r)
}

fn get(s: &Source, r: &Reading, role: Role) -> Value {
    let (i, _) = s
        .profile
        .input(role)
        .unwrap_or_else(|| panic!("{} has no {role:?}", s.profile.name));
    r.get(i)
        .unwrap_or_else(|| panic!("{} has no input {i}", s.profile.name))
        .to_value()
}

fn scalar(s: &Source, r: &Reading, role: Role) -> f64 {
    match get(s, r, role) {
        Value::Scalar(v) => v,
        v => panic!("{} {role:?}: {v:?}", s.profile.name),
    }
}

fn hist(s: &Source, r: &Reading, role: Role) -> Hist {
    match get(s, r, role) {
        Value::Histogram(h) => h,
        v => panic!("{} {role:?}: {v:?}", s.profile.name),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

const RULES: Rules = Rules {
    window: 60.0,
    stale_after: 30.0,
    min_target_ratio: 1.0,
};

/// `signal` for one target scraped as `before` at 0 s and `after` at 10 s.
fn signal(s: &Source, sig: Signal, before: Reading, after: Reading) -> Result<f64, Unavailable> {
    let samples = vec![
        Scrape {
            at: 0.0,
            reading: before,
        },
        Scrape {
            at: 10.0,
            reading: after,
        },
    ];
    let views = [TargetView {
        last_success: Some(10.0),
        samples: &samples,
    }];
    let inputs = Inputs::Scraped {
        rules: &RULES,
        now: 10.0,
        targets: &views,
    };
    evaluate(&s.profile, sig, None, &inputs)
}

/// A baseline where every counter and histogram was empty: the capture is then the increase.
fn zeroes(r: &Reading) -> Reading {
    r.iter()
        .map(|v| match v {
            ValueRef::Absent => Value::Absent,
            ValueRef::Scalar(_) => Value::Scalar(0.0),
            ValueRef::Histogram(h) => Value::Histogram(Hist::new(
                h.buckets().map(|(le, _)| (le, 0.0)).collect(),
                0.0,
                0.0,
            )),
        })
        .collect()
}

#[test]
fn traefik_service_level_on_a_v3_capture() {
    let (s, r) = read(
        "traefik-v3-sample.prom",
        "traefik",
        &[r#"service="readiness@http""#],
    );
    assert_eq!(scalar(&s, &r, Role::Requests), 70424.0);
    // No 5xx yet: the code's series does not exist, which reads as zero.
    assert_eq!(get(&s, &r, Role::Errors), Value::Absent);
    let h = hist(&s, &r, Role::Latency);
    // Traefik's default buckets, in seconds already.
    assert_eq!(
        h.buckets().map(|b| b.0).collect::<Vec<_>>(),
        vec![0.1, 0.3, 1.2, 5.0, f64::INFINITY]
    );
    assert_eq!(h.count, 70424.0);
    assert_eq!(scalar(&s, &r, Role::InFlight), 0.0);
    let base = zeroes(&r);
    assert_eq!(
        signal(&s, Signal::ErrorRatio, base.clone(), r.clone()),
        Ok(0.0)
    );
    assert!(close(
        signal(&s, Signal::RequestsPerSecond, base.clone(), r.clone()).unwrap(),
        7042.4
    ));
    // Every request fell under 0.1 s: the p95 interpolates inside the first bucket.
    assert!(close(
        signal(&s, Signal::Latency { permille: 950 }, base, r).unwrap(),
        0.095
    ));
    // Entrypoint series carry no `service` label and are not read.
    let (s, r) = read("traefik-v3-sample.prom", "traefik", &[r#"service="nope""#]);
    assert_eq!(get(&s, &r, Role::Requests), Value::Absent);
}

#[test]
fn traefik_router_level_when_the_service_family_does_not_match() {
    let body = br#"# TYPE traefik_service_requests_total counter
traefik_service_requests_total{code="200",method="GET",protocol="http",service="ml-llama-80@kubernetes"} 90
# TYPE traefik_router_requests_total counter
traefik_router_requests_total{code="200",method="GET",protocol="http",router="ml-llama@kubernetes",service="ml-llama-80@kubernetes"} 60
traefik_router_requests_total{code="503",method="GET",protocol="http",router="ml-llama@kubernetes",service="ml-llama-80@kubernetes"} 6
"#;
    let s = source("traefik", &[r#"router="ml-llama@kubernetes""#]);
    let ex = Extractor::new(&s);
    let (r, _) = ex.extract(body, &mut Scratch::default()).unwrap();
    assert_eq!(scalar(&s, &r, Role::Requests), 66.0);
    assert_eq!(scalar(&s, &r, Role::Errors), 6.0);
    let s = source("traefik", &[r#"service="ml-llama-80@kubernetes""#]);
    let (r, _) = Extractor::new(&s)
        .extract(body, &mut Scratch::default())
        .unwrap();
    // The service family comes first when both match.
    assert_eq!(scalar(&s, &r, Role::Requests), 90.0);
}

#[test]
fn kong_3_capture_per_route_in_milliseconds() {
    for (profile, sum) in [("kong", 0.006), ("kong-upstream", 0.002)] {
        let (s, r) = read(
            "kong-3.0-sample.prom",
            profile,
            &[r#"service="google""#, r#"route="google.route-1""#],
        );
        assert_eq!(scalar(&s, &r, Role::Requests), 1.0, "{profile}");
        assert_eq!(get(&s, &r, Role::Errors), Value::Absent, "{profile}");
        let h = hist(&s, &r, Role::Latency);
        assert_eq!(h.count, 1.0, "{profile}");
        assert!(close(h.sum, sum), "{profile}: {}", h.sum);
        // Milliseconds become seconds: Kong's first bucket is 25 ms.
        assert_eq!(h.to_buckets()[0], (0.025, 1.0), "{profile}");
        let base = zeroes(&r);
        assert_eq!(signal(&s, Signal::ErrorRatio, base, r), Ok(0.0));
    }
}

#[test]
fn kong_latency_switched_off_stays_unavailable() {
    // `status_code_metrics` on, `latency_metrics` off: no histogram is not zero latency.
    let body = br#"# TYPE kong_http_requests_total counter
kong_http_requests_total{service="s",route="r",code="200",source="service",consumer=""} 5
"#;
    let s = source("kong", &[]);
    let (r, _) = Extractor::new(&s)
        .extract(body, &mut Scratch::default())
        .unwrap();
    let err = signal(&s, Signal::Latency { permille: 950 }, zeroes(&r), r).unwrap_err();
    assert!(
        matches!(
            err,
            Unavailable::NoSeries {
                role: Role::Latency,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn linkerd_proxy_capture_by_direction_and_destination() {
    let (s, r) = read("linkerd2-proxy-sample.prom", "linkerd", &[]);
    // The inbound request_total series of the capture, summed.
    assert_eq!(
        scalar(&s, &r, Role::Requests),
        852.0 + 1.0 + 1.0 + 4.0 + 582.0 + 2.0 + 5.0 + 1.0 + 1.0 + 3.0
    );
    let h = hist(&s, &r, Role::Latency);
    assert_eq!(h.count, 853.0);
    assert!(close(h.sum, 2.316));
    assert_eq!(h.to_buckets()[0], (0.001, 705.0));
    let (s, r) = read(
        "linkerd2-proxy-sample.prom",
        "linkerd-outbound",
        &[r#"dst_service="linkerd-prometheus""#],
    );
    assert_eq!(scalar(&s, &r, Role::Requests), 16275.0);
    // The capture was cut before response_total: errors are zero where requests exist.
    assert_eq!(
        signal(&s, Signal::ErrorRatio, zeroes(&r), r.clone()),
        Ok(0.0)
    );
}

#[test]
fn linkerd_routes_count_5xx_and_failed_requests() {
    let body = br#"# TYPE outbound_http_route_request_statuses_total counter
outbound_http_route_request_statuses_total{parent_name="llama",route_name="chat",http_status="200",error=""} 90
outbound_http_route_request_statuses_total{parent_name="llama",route_name="chat",http_status="503",error=""} 6
outbound_http_route_request_statuses_total{parent_name="llama",route_name="chat",http_status="",error="LOAD_SHED"} 4
"#;
    let s = source("linkerd-route", &[r#"route_name="chat""#]);
    let (r, _) = Extractor::new(&s)
        .extract(body, &mut Scratch::default())
        .unwrap();
    assert_eq!(scalar(&s, &r, Role::Requests), 100.0);
    assert_eq!(scalar(&s, &r, Role::Errors), 10.0);
}

#[test]
fn hubble_http_v2_capture_server_side() {
    let (s, r) = read(
        "cilium-hubble-http-v2-sample.prom",
        "hubble",
        &[r#"destination="destination-ns/destination-deploy-pod""#],
    );
    assert_eq!(scalar(&s, &r, Role::Requests), 1.0);
    assert_eq!(get(&s, &r, Role::Errors), Value::Absent);
    let h = hist(&s, &r, Role::Latency);
    assert_eq!(h.count, 1.0);
    assert!(close(h.sum, 0.012345678));
    let p50 = signal(&s, Signal::Latency { permille: 500 }, zeroes(&r), r).unwrap();
    // The one request fell in (0.01, 0.025]: the median is midway.
    assert!(close(p50, 0.0175), "{p50}");
}

#[test]
fn ingress_nginx_capture_per_ingress() {
    let (s, r) = read(
        "ingress-nginx-sample.prom",
        "ingress-nginx",
        &[r#"ingress="ingress-resource""#, r#"namespace="default""#],
    );
    assert_eq!(scalar(&s, &r, Role::Requests), 3.0);
    let h = hist(&s, &r, Role::Latency);
    assert_eq!(h.count, 3.0);
    assert!(close(h.sum, 0.009));
    // Without a matcher the 404 and 499 of the default backend count too; none is a 5xx.
    let (s, r) = read("ingress-nginx-sample.prom", "ingress-nginx", &[]);
    assert_eq!(scalar(&s, &r, Role::Requests), 5.0);
    assert_eq!(signal(&s, Signal::ErrorRatio, zeroes(&r), r), Ok(0.0));
}

#[test]
fn tgi_capture() {
    let (s, r) = read("tgi-sample.prom", "tgi", &[]);
    // `tgi_request_count` counts failed requests too: 109 successes and 2 validation failures.
    assert_eq!(scalar(&s, &r, Role::Requests), 111.0);
    assert_eq!(scalar(&s, &r, Role::Errors), 2.0);
    assert_eq!(hist(&s, &r, Role::Latency).count, 109.0);
    assert_eq!(scalar(&s, &r, Role::Queue), 0.0);
    assert_eq!(scalar(&s, &r, Role::Running), 0.0);
    assert_eq!(scalar(&s, &r, Role::PromptTokens), 662.0);
    assert_eq!(scalar(&s, &r, Role::GenerationTokens), 3423.0);
    let itl = hist(&s, &r, Role::InterTokenLatency);
    assert_eq!(itl.count, 109.0);
    assert!(close(itl.sum, 8.643160945));
    let queue = hist(&s, &r, Role::QueueTime);
    assert!(close(queue.sum, 295.275961956));
    let base = zeroes(&r);
    assert!(close(
        signal(&s, Signal::ErrorRatio, base.clone(), r.clone()).unwrap(),
        2.0 / 111.0
    ));
    assert!(close(
        signal(
            &s,
            Signal::GenerationTokensPerSecond,
            base.clone(),
            r.clone()
        )
        .unwrap(),
        342.3
    ));
    for sig in [
        Signal::InterTokenLatency { permille: 950 },
        Signal::QueueTime { permille: 500 },
    ] {
        let v = signal(&s, sig, base.clone(), r.clone()).unwrap();
        assert!(v > 0.0 && v.is_finite(), "{sig}: {v}");
    }
}

#[test]
fn triton_capture_mean_latency_from_microsecond_counters() {
    let (s, r) = read(
        "triton-sample.prom",
        "triton",
        &[r#"model="densenet_onnx""#],
    );
    assert_eq!(scalar(&s, &r, Role::Requests), 3.0);
    assert_eq!(scalar(&s, &r, Role::Errors), 0.0);
    assert_eq!(scalar(&s, &r, Role::Queue), 0.0);
    let body = String::from_utf8(fixture("triton-sample.prom")).unwrap();
    let counter = |name: &str| -> f64 {
        let prefix = format!("{name}{{model=\"densenet_onnx\",version=\"1\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{name} not in the capture"))
            .trim()
            .parse()
            .unwrap()
    };
    let (request_us, queue_us) = (
        counter("nv_inference_request_duration_us"),
        counter("nv_inference_queue_duration_us"),
    );
    assert!(request_us > 0.0 && queue_us > 0.0);
    // Counters stay in their unit; the input's scale turns the mean into seconds.
    assert_eq!(scalar(&s, &r, Role::LatencyTotal), request_us);
    assert_eq!(scalar(&s, &r, Role::QueueTimeTotal), queue_us);
    let base = zeroes(&r);
    let mean = signal(&s, Signal::MeanLatency, base.clone(), r.clone()).unwrap();
    assert!(close(mean, request_us * 1e-6 / 3.0), "{mean}");
    let queued = signal(&s, Signal::MeanQueueTime, base.clone(), r.clone()).unwrap();
    assert!(close(queued, queue_us * 1e-6 / 3.0), "{queued}");
    // No request in the window: no request waited.
    assert_eq!(
        signal(&s, Signal::MeanLatency, r.clone(), r.clone()),
        Ok(0.0)
    );
    // Triton has no histogram: quantiles are not offered.
    assert!(matches!(
        signal(&s, Signal::Latency { permille: 950 }, base, r),
        Err(Unavailable::Unsupported { .. })
    ));
}

#[test]
fn vllm_decode_signals_on_the_mixed_capture() {
    let (s, r) = read("vllm-v0-v1-mixed-sample.prom", "vllm", &[]);
    let itl = hist(&s, &r, Role::InterTokenLatency);
    assert!(itl.count > 0.0);
    assert!(matches!(get(&s, &r, Role::QueueTime), Value::Histogram(_)));
    assert!(matches!(get(&s, &r, Role::Preemptions), Value::Scalar(_)));
    let base = zeroes(&r);
    for sig in [
        Signal::InterTokenLatency { permille: 990 },
        Signal::QueueTime { permille: 950 },
        Signal::PreemptionsPerSecond,
    ] {
        let v = signal(&s, sig, base.clone(), r.clone()).unwrap();
        assert!(v >= 0.0 && v.is_finite(), "{sig}: {v}");
    }
}

#[test]
fn vllm_v0_inter_token_latency_name() {
    let body = br#"# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="0.01"} 3
vllm:time_per_output_token_seconds_bucket{le="0.025"} 9
vllm:time_per_output_token_seconds_bucket{le="+Inf"} 10
vllm:time_per_output_token_seconds_sum 0.2
vllm:time_per_output_token_seconds_count 10
"#;
    let s = source("vllm", &[]);
    let (r, _) = Extractor::new(&s)
        .extract(body, &mut Scratch::default())
        .unwrap();
    assert_eq!(hist(&s, &r, Role::InterTokenLatency).count, 10.0);
}

#[test]
fn sglang_decode_signals_on_its_capture() {
    let (s, r) = read("sglang-sample.prom", "sglang", &[]);
    assert!(matches!(
        get(&s, &r, Role::InterTokenLatency),
        Value::Histogram(_)
    ));
    assert!(matches!(get(&s, &r, Role::QueueTime), Value::Histogram(_)));
}

/// Envoy's deferred stat creation (on in Envoy Gateway 1.8): the real 1.40 capture with every
/// cluster traffic stat (`envoy_cluster_upstream_rq*`) removed, as Envoy exposes a cluster before
/// its first request; its membership gauges are there from the start.
fn envoy_before_first_request() -> Vec<u8> {
    let body = String::from_utf8(fixture("envoy-1.40-real-capture.prom")).unwrap();
    let kept: Vec<&str> = body
        .lines()
        .filter(|l| {
            let name = l.trim_start_matches("# TYPE ").split(['{', ' ']).next();
            !name.is_some_and(|n| n.starts_with("envoy_cluster_upstream_rq"))
        })
        .collect();
    assert!(kept
        .iter()
        .any(|l| l.starts_with("envoy_cluster_membership_total")));
    (kept.join("\n") + "\n").into_bytes()
}

#[test]
fn envoy_route_without_traffic_reads_zero_under_deferred_stats() {
    let body = envoy_before_first_request();
    let s = source("envoy", &[r#"envoy_cluster_name="backend""#]);
    let ex = Extractor::new(&s);
    let (r, _) = ex.extract(&body, &mut Scratch::default()).unwrap();
    assert_eq!(get(&s, &r, Role::Requests), Value::Absent);
    assert_eq!(scalar(&s, &r, Role::Members), 1.0);
    for sig in [
        Signal::RequestsPerSecond,
        Signal::ErrorRatio,
        Signal::Latency { permille: 950 },
        Signal::Concurrency,
        Signal::QueueDepth,
    ] {
        assert_eq!(
            signal(&s, sig, r.clone(), r.clone()),
            Ok(0.0),
            "{sig} on a cluster with members and no traffic yet"
        );
    }
    // The first request creates the traffic stats: the same cluster in the full capture.
    let (_, full) = read(
        "envoy-1.40-real-capture.prom",
        "envoy",
        &[r#"envoy_cluster_name="backend""#],
    );
    assert!(close(
        signal(&s, Signal::RequestsPerSecond, r.clone(), full).unwrap(),
        40.0
    ));
}

#[test]
fn envoy_matcher_naming_no_cluster_stays_unavailable() {
    let body = envoy_before_first_request();
    let s = source(
        "envoy",
        &[r#"envoy_cluster_name="httproute/ml/nope/rule/0""#],
    );
    let (r, _) = Extractor::new(&s)
        .extract(&body, &mut Scratch::default())
        .unwrap();
    for sig in [
        Signal::RequestsPerSecond,
        Signal::ErrorRatio,
        Signal::Latency { permille: 950 },
        Signal::Concurrency,
    ] {
        let err = signal(&s, sig, r.clone(), r.clone()).unwrap_err();
        assert!(
            matches!(err, Unavailable::NoSeries { .. }),
            "{sig}: {err:?}"
        );
    }
}

#[test]
fn epp_request_duration_on_an_llm_d_capture() {
    let (s, r) = read(
        "epp-request-duration-sample.prom",
        "epp",
        &[r#"model_name="m10""#],
    );
    let h = hist(&s, &r, Role::Latency);
    assert_eq!(h.count, 3.0);
    assert!(close(h.sum, 1.67), "{}", h.sum);
    assert_eq!(h.to_buckets()[0], (0.005, 0.0));
    // The capture holds only the histogram: no request counter, so no rate, and errors are not
    // implied.
    assert_eq!(get(&s, &r, Role::Requests), Value::Absent);
    assert!(matches!(
        signal(&s, Signal::ErrorRatio, r.clone(), r.clone()),
        Err(Unavailable::NoSeries {
            role: Role::Requests,
            ..
        })
    ));
    let p50 = signal(&s, Signal::Latency { permille: 500 }, zeroes(&r), r).unwrap();
    assert!(p50 > 0.0 && p50 < 3600.0, "{p50}");
}

#[test]
fn epp_reads_the_first_generation_of_names_a_picker_exposes() {
    // The legacy names of the Gateway API Inference Extension's picker.
    let legacy = br#"# TYPE inference_objective_request_total counter
inference_objective_request_total{model_name="llama",target_model_name="llama",priority="0"} 40
# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{fairness_id="a",priority="0",inference_pool="llama",model_name="llama",target_model_name="llama"} 3
inference_extension_flow_control_queue_size{fairness_id="b",priority="0",inference_pool="llama",model_name="llama",target_model_name="llama"} 4
# TYPE inference_pool_average_kv_cache_utilization gauge
inference_pool_average_kv_cache_utilization{name="llama"} 0.5
# TYPE inference_extension_flow_control_pool_saturation gauge
inference_extension_flow_control_pool_saturation{inference_pool="llama"} 0.75
"#;
    let s = source("epp", &[]);
    let ex = Extractor::new(&s);
    let (r, _) = ex.extract(legacy, &mut Scratch::default()).unwrap();
    assert_eq!(scalar(&s, &r, Role::Requests), 40.0);
    assert_eq!(scalar(&s, &r, Role::Queue), 7.0);
    assert_eq!(scalar(&s, &r, Role::KvCache), 0.5);
    assert_eq!(
        signal(&s, Signal::PoolSaturation, r.clone(), r.clone()),
        Ok(0.75)
    );
    // Held at the picker with no server ready: demand that can wake a pool at zero.
    assert_eq!(
        signal(&s, Signal::QueueDepth, r.clone(), r.clone()),
        Ok(7.0)
    );
    assert_eq!(signal(&s, Signal::ErrorRatio, zeroes(&r), r), Ok(0.0));
    // Both generations on one picker (a release exporting both): the newer one wins.
    let both = [
        &legacy[..],
        br#"# TYPE llm_d_epp_flow_control_queue_size gauge
llm_d_epp_flow_control_queue_size{fairness_id="a",priority="0",inference_pool="llama",model_name="llama",target_model_name="llama"} 1
"#,
    ]
    .concat();
    let (r, _) = ex.extract(&both, &mut Scratch::default()).unwrap();
    assert_eq!(scalar(&s, &r, Role::Queue), 1.0);
}
