//! The KEDA gRPC contract end to end: fake Envoys over real HTTP, redbridge scraping them, and a
//! real tonic client calling it over a socket the way KEDA does.

use std::time::Duration;

use crate::common::{self, eventually, object_ref, FakeEnvoy, MetricName, Redbridge};
use tonic::Code;

const CLUSTER: &str = "httproute/ml/llama/rule/0";

fn config(zone_a: &[&FakeEnvoy], zone_b: &[&FakeEnvoy]) -> String {
    let mut targets = String::new();
    for (zone, envoys) in [("zone-a", zone_a), ("zone-b", zone_b)] {
        for e in envoys {
            targets.push_str(&format!(
                "          - {{ url: \"{}\", zone: {zone} }}\n",
                e.url()
            ));
        }
    }
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 3s
    interval: 200ms
    staleAfter: 1s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets:
{targets}"#
    )
}

async fn get_metric(rb: &Redbridge, pairs: &[(&str, &str)]) -> Result<f64, tonic::Status> {
    let mut client = rb.client().await;
    let so = object_ref("ml", pairs);
    let v = &common::get_metrics(&mut client, so, MetricName::FromSpec).await?;
    assert!(v.metric_value_float.is_finite() && v.metric_value_float >= 0.0);
    #[allow(deprecated)]
    let int = v.metric_value;
    assert_eq!(
        int,
        v.metric_value_float.round() as i64,
        "int and float fields agree"
    );
    Ok(v.metric_value_float)
}

fn within(v: f64, expected: f64, tolerance: f64) -> bool {
    (v - expected).abs() <= expected * tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_per_zone_rates_errors_latency_and_concurrency() {
    let (a1, a2, b1) = (
        FakeEnvoy::start(CLUSTER).await,
        FakeEnvoy::start(CLUSTER).await,
        FakeEnvoy::start(CLUSTER).await,
    );
    a1.set_traffic(30.0, 0.10, 40.0);
    a2.set_traffic(10.0, 0.10, 40.0);
    b1.set_traffic(8.0, 0.0, 300.0);
    a1.set_gauges(3.0, 1.0);
    a2.set_gauges(4.0, 2.0);
    let rb = Redbridge::start(&config(&[&a1, &a2], &[&b1])).await;
    let base = [("pool", "llama"), ("target", "10")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        base.iter().chain(extra.iter()).copied().collect()
    };
    // Wait for a full window so rates settle.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let rps_a = get_metric(
        &rb,
        &with(&[("zone", "zone-a"), ("signal", "requests_per_second")]),
    )
    .await
    .unwrap();
    assert!(
        within(rps_a, 40.0, 0.15),
        "zone-a requests/s {rps_a}, expected 40"
    );
    let rps_b = get_metric(
        &rb,
        &with(&[("zone", "zone-b"), ("signal", "requests_per_second")]),
    )
    .await
    .unwrap();
    assert!(
        within(rps_b, 8.0, 0.2),
        "zone-b requests/s {rps_b}, expected 8"
    );
    let rps_all = get_metric(&rb, &with(&[("signal", "requests_per_second")]))
        .await
        .unwrap();
    assert!(
        within(rps_all, 48.0, 0.15),
        "all zones {rps_all}, expected 48"
    );

    let err_a = get_metric(&rb, &with(&[("zone", "zone-a"), ("signal", "error_ratio")]))
        .await
        .unwrap();
    assert!((err_a - 0.10).abs() < 0.03, "zone-a error ratio {err_a}");
    let err_b = get_metric(&rb, &with(&[("zone", "zone-b"), ("signal", "error_ratio")]))
        .await
        .unwrap();
    assert_eq!(err_b, 0.0);

    // Every request took 40 ms: p95 lies in Envoy's (25, 50] ms bucket, reported in seconds.
    let p95_a = get_metric(
        &rb,
        &with(&[
            ("zone", "zone-a"),
            ("signal", "latency"),
            ("quantile", "0.95"),
        ]),
    )
    .await
    .unwrap();
    assert!((0.025..=0.05).contains(&p95_a), "zone-a p95 {p95_a}");
    let p99_b = get_metric(&rb, &with(&[("zone", "zone-b"), ("signal", "latency_p99")]))
        .await
        .unwrap();
    assert!((0.25..=0.5).contains(&p99_b), "zone-b p99 {p99_b}");

    let conc = get_metric(&rb, &with(&[("zone", "zone-a"), ("signal", "concurrency")]))
        .await
        .unwrap();
    assert_eq!(conc, 7.0);
    let queue = get_metric(
        &rb,
        &with(&[
            ("zone", "zone-a"),
            ("signal", "queue_depth"),
            ("aggregation", "max"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(queue, 2.0);
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_spec_is_stable_lowercase_and_carries_the_target() {
    let a = FakeEnvoy::start(CLUSTER).await;
    let rb = Redbridge::start(&config(&[&a], &[])).await;
    let mut client = rb.client().await;
    let so = object_ref(
        "ml",
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "latency_p95"),
            ("target", "0.25"),
        ],
    );
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let s = &spec.metric_specs[0];
    assert_eq!(s.metric_name, "redbridge-llama-zone-a-latency_p95");
    assert_eq!(s.target_size_float, 0.25);
    #[allow(deprecated)]
    let int = s.target_size;
    assert_eq!(int, 1, "the deprecated int field is set too, rounded up");
    let again = client.get_metric_spec(so).await.unwrap().into_inner();
    assert_eq!(again, spec);
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_and_unknown_pools_get_clear_codes() {
    let a = FakeEnvoy::start(CLUSTER).await;
    let rb = Redbridge::start(&config(&[&a], &[])).await;
    let mut client = rb.client().await;
    /// (metadata, namespace, expected code, text the message must contain)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Code, &'a str);
    let cases: &[Case<'_>] = &[
        (
            &[
                ("zone", "zone-a"),
                ("signal", "requests_per_second"),
                ("target", "1"),
            ],
            "ml",
            Code::InvalidArgument,
            "`pool` is required",
        ),
        (
            &[("pool", "llama"), ("signal", "rps"), ("target", "1")],
            "ml",
            Code::InvalidArgument,
            "valid values: requests_per_second",
        ),
        (
            &[
                ("pool", "llama"),
                ("signal", "requests_per_second"),
                ("target", "-3"),
            ],
            "ml",
            Code::InvalidArgument,
            "`target`: `-3`",
        ),
        (
            &[
                ("pool", "llama"),
                ("signal", "requests_per_second"),
                ("target", "1"),
                ("treshold", "2"),
            ],
            "ml",
            Code::InvalidArgument,
            "unknown metadata key `treshold`",
        ),
        (
            &[
                ("pool", "llama"),
                ("signal", "kv_cache_utilization"),
                ("target", "1"),
            ],
            "ml",
            Code::InvalidArgument,
            "no source of pool \"llama\" provides kv_cache_utilization",
        ),
        (
            &[
                ("pool", "mistral"),
                ("signal", "requests_per_second"),
                ("target", "1"),
            ],
            "ml",
            Code::NotFound,
            "no pool \"mistral\"",
        ),
        (
            &[
                ("pool", "llama"),
                ("signal", "requests_per_second"),
                ("target", "1"),
            ],
            "other-team",
            Code::NotFound,
            "no pool \"llama\" for namespace \"other-team\"",
        ),
        (
            &[
                ("pool", "llama"),
                ("zone", "zone-z"),
                ("signal", "requests_per_second"),
                ("target", "1"),
            ],
            "ml",
            Code::NotFound,
            "zones: zone-a",
        ),
    ];
    for (pairs, ns, code, text) in cases {
        let so = object_ref(ns, pairs);
        for status in [
            client.get_metric_spec(so.clone()).await.unwrap_err(),
            client.is_active(so.clone()).await.unwrap_err(),
            common::get_metrics(&mut client, so.clone(), MetricName::Given("x"))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), *code, "{pairs:?}: {}", status.message());
            assert!(
                status.message().contains(text),
                "{pairs:?}: {:?} lacks {text:?}",
                status.message()
            );
        }
    }
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_data_is_unavailable_and_zero_traffic_is_zero() {
    let a = FakeEnvoy::start(CLUSTER).await;
    let rb = Redbridge::start(&config(&[&a], &[])).await;
    let rps = [
        ("pool", "llama"),
        ("zone", "zone-a"),
        ("signal", "requests_per_second"),
        ("target", "5"),
        ("activationTarget", "0.5"),
    ];

    // Healthy target, no traffic: a real 0, and not active.
    let v = eventually(Duration::from_secs(5), "a first value", || async {
        get_metric(&rb, &rps).await.ok()
    })
    .await;
    assert_eq!(v, 0.0);
    let mut client = rb.client().await;
    assert!(
        !client
            .is_active(object_ref("ml", &rps))
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // Traffic: active.
    a.set_traffic(20.0, 0.0, 10.0);
    eventually(Duration::from_secs(5), "activity", || {
        let mut c = client.clone();
        async move {
            c.is_active(object_ref("ml", &rps))
                .await
                .ok()
                .filter(|r| r.get_ref().result)
        }
    })
    .await;

    // The target starts failing: after staleAfter, UNAVAILABLE naming the reason, never 0.
    a.set_mode(common::Mode::Failing(503));
    let status = eventually(Duration::from_secs(5), "UNAVAILABLE", || async {
        get_metric(&rb, &rps)
            .await
            .err()
            .filter(|s| s.code() == Code::Unavailable)
    })
    .await;
    assert!(
        status.message().contains("only 0 of 1 targets answered"),
        "{}",
        status.message()
    );
    let active = client.is_active(object_ref("ml", &rps)).await.unwrap_err();
    assert_eq!(active.code(), Code::Unavailable);

    // Back: values again.
    a.set_mode(common::Mode::Serving);
    eventually(Duration::from_secs(5), "recovery", || async {
        get_metric(&rb, &rps).await.ok().filter(|v| *v > 0.0)
    })
    .await;

    // Gone for good (connection refused): unavailable again.
    a.kill();
    eventually(Duration::from_secs(5), "UNAVAILABLE after kill", || async {
        get_metric(&rb, &rps)
            .await
            .err()
            .filter(|s| s.code() == Code::Unavailable)
    })
    .await;
    let health = rb.state.pools()[0].targets[0].lock().health.clone();
    assert!(!health.up);
    assert!(health.last_error.is_some_and(|e| !e.is_empty()));
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_pushes_once_on_each_transition() {
    let a = FakeEnvoy::start(CLUSTER).await;
    let rb = Redbridge::start(&config(&[&a], &[])).await;
    let pairs = [
        ("pool", "llama"),
        ("zone", "zone-a"),
        ("signal", "requests_per_second"),
        ("target", "5"),
        ("activationTarget", "1"),
    ];
    let mut client = rb.client().await;
    let mut stream = client
        .stream_is_active(object_ref("ml", &pairs))
        .await
        .unwrap()
        .into_inner();

    // Idle: nothing is pushed.
    let idle = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(idle.is_err(), "pushed while idle: {idle:?}");

    a.set_traffic(25.0, 0.0, 10.0);
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    let msg = pushed
        .expect("a push within 5 s of traffic")
        .unwrap()
        .expect("stream open");
    assert!(msg.result);
    // Still active: no further pushes (each true would block scale-to-zero).
    let again = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(again.is_err(), "pushed twice: {again:?}");

    // Idle, then active again: one new push.
    a.set_traffic(0.0, 0.0, 10.0);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    a.set_traffic(25.0, 0.0, 10.0);
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(msg.expect("second push").unwrap().expect("open").result);
    drop(stream);
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_port_serves_metrics_health_readiness_and_explanations() {
    let a = FakeEnvoy::start(CLUSTER).await;
    a.set_traffic(10.0, 0.0, 10.0);
    let rb = Redbridge::start(&config(&[&a], &[])).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", rb.http);
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).send().await.ok()?;
            let code = r.status().as_u16();
            Some((code, r.text().await.ok()?))
        }
    };
    let (code, _) = eventually(Duration::from_secs(5), "healthz", || get("/healthz")).await;
    assert_eq!(code, 200);
    let (code, body) = get("/readyz").await.unwrap();
    assert_eq!(code, 503, "not ready before a full window: {body}");
    assert!(body.contains("full 3s window"), "{body}");
    eventually(Duration::from_secs(8), "readiness", || async {
        get("/readyz").await.filter(|(c, _)| *c == 200)
    })
    .await;

    // A gRPC call, so its series exist.
    let _ = get_metric(
        &rb,
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "1"),
        ],
    )
    .await;
    let (_, metrics) = get("/metrics").await.unwrap();
    for needle in [
        "redbridge_signal_value{namespace=\"ml\",pool=\"llama\",zone=\"zone-a\",signal=\"requests_per_second\"}",
        "redbridge_signal_available{namespace=\"ml\",pool=\"llama\",zone=\"all\",signal=\"latency_p95\"} 1",
        "redbridge_trigger_target{namespace=\"ml\",pool=\"llama\",zone=\"zone-a\",signal=\"requests_per_second\"} 1",
        "redbridge_target_up{pool=\"llama\",source=\"gateway\",zone=\"zone-a\"",
        "redbridge_grpc_requests_total{method=\"GetMetrics\",code=\"OK\"}",
        "redbridge_grpc_request_duration_seconds_bucket{method=\"GetMetricSpec\",le=\"+Inf\"}",
        "redbridge_ready 1",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    let (_, pools) = get("/pools").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&pools).unwrap();
    let rps = &v["pools"][0]["zones"][0]["signals"]["requests_per_second"]["value"];
    assert!(rps.as_f64().is_some_and(|r| r > 5.0), "{pools}");

    // Once warmed up, an outage of the pool's targets does not make redbridge unready (that would
    // drop it from its Service for every pool); the pool answers UNAVAILABLE instead.
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get("/readyz").await.unwrap().0, 200);
    let (_, metrics) = get("/metrics").await.unwrap();
    assert!(
        metrics.contains("redbridge_target_up{pool=\"llama\",source=\"gateway\",zone=\"zone-a\"")
    );
    assert!(metrics.contains("redbridge_signal_available{namespace=\"ml\",pool=\"llama\",zone=\"zone-a\",signal=\"requests_per_second\"} 0"), "{metrics}");
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_data_does_not_keep_the_replica_unready() {
    let live = FakeEnvoy::start(CLUSTER).await;
    live.set_traffic(10.0, 0.0, 10.0);
    // `typo` scrapes a port nothing listens on, as a misspelt target would.
    let yaml = format!(
        "{}  - name: typo\n    namespace: ml\n    window: 3s\n    interval: 200ms\n    staleAfter: 1s\n    sources:\n      - name: gateway\n        profile: envoy\n        targets:\n          - {{ url: \"http://127.0.0.1:1/stats/prometheus\", zone: zone-a }}\n",
        config(&[&live], &[])
    );
    let rb = Redbridge::start(&yaml).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", rb.http);
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).send().await.ok()?;
            let code = r.status().as_u16();
            Some((code, r.text().await.ok()?))
        }
    };
    // Ready within the warm-up limit (window + staleAfter = 4 s), though `typo` has no data.
    eventually(Duration::from_secs(8), "readiness", || async {
        get("/readyz").await.filter(|(c, _)| *c == 200)
    })
    .await;

    let (_, pools) = get("/pools").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(v["ready"], true, "{pools}");
    let source = |pool: &str| {
        v["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .map(|p| p["sources"][0].clone())
            .unwrap()
    };
    assert_eq!(source("llama")["has_data"], true, "{pools}");
    let typo = source("typo");
    assert_eq!(typo["has_data"], false, "{pools}");
    assert!(
        typo["problem"]
            .as_str()
            .is_some_and(|p| p.contains("none of its 1 targets has answered yet")),
        "{pools}"
    );

    let (_, metrics) = get("/metrics").await.unwrap();
    for needle in [
        "redbridge_source_has_data{namespace=\"ml\",pool=\"llama\",source=\"gateway\"} 1",
        "redbridge_source_has_data{namespace=\"ml\",pool=\"typo\",source=\"gateway\"} 0",
        "redbridge_ready 1",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }

    // The ready replica answers the live pool, and refuses to guess for the other.
    let pairs = |pool| {
        [
            ("pool", pool),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "1"),
        ]
    };
    let rps = rb.value(&pairs("llama")).await.unwrap();
    assert!(rps > 5.0, "{rps}");
    let err = rb.value(&pairs("typo")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    rb.stop().await;
}
