//! redbridge against real Envoy: two Envoy 1.40 processes (zone-a and zone-b) in front of
//! in-process backends, open-loop load through them, and redbridge's gRPC answers checked
//! against the ground truth the load generator kept over the very interval redbridge's window
//! covered.
//!
//! Needs the pinned Envoy that scripts/install-test-deps.sh installs (scripts/test-all.sh runs
//! it and sets REDBRIDGE_ENVOY); without it the test fails and says so.

pub mod harness;

use std::time::{Duration, Instant};

use crate::common::{self, object_ref, MetricName, Redbridge};
use harness::{envoy_bucket, Backend, Envoy, Load, Shape, Truth, CLUSTER, OTHER_CLUSTER};

const WINDOW: Duration = Duration::from_secs(8);
/// Every loop and every load in this file stops by itself after this.
const LIMIT: Duration = Duration::from_secs(45);

fn config(zones: &[&Envoy]) -> String {
    let targets: String = zones
        .iter()
        .map(|e| {
            format!(
                "          - {{ url: \"{}\", zone: {} }}\n",
                e.stats_url(),
                e.zone
            )
        })
        .collect();
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: {window}s
    interval: 1s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets:
{targets}"#,
        window = WINDOW.as_secs()
    )
}

/// One GetMetricSpec + GetMetrics round trip, as KEDA makes it.
async fn get_metric(rb: &Redbridge, pairs: &[(&str, &str)]) -> f64 {
    let mut client = rb.client().await;
    let so = object_ref("ml", pairs);
    common::get_metrics(&mut client, so, MetricName::FromSpec)
        .await
        .unwrap_or_else(|s| panic!("GetMetricSpec + GetMetrics {pairs:?}: {s}"))
        .metric_value_float
}

/// Scrape times redbridge holds for `zone`'s target, in seconds on redbridge's clock.
fn scrapes(rb: &Redbridge, zone: &str) -> Vec<f64> {
    let pools = rb.state.pools();
    let target = pools[0]
        .targets
        .iter()
        .find(|t| t.key.zone == zone)
        .unwrap_or_else(|| panic!("no target in {zone}"));
    let data = target.lock();
    data.samples().iter().map(|s| s.at).collect()
}

/// A time on redbridge's clock as an instant of this process.
fn instant(rb: &Redbridge, at: f64) -> Instant {
    let now = Instant::now();
    let ago = rb.state.clock.now() - at;
    if ago >= 0.0 {
        now - Duration::from_secs_f64(ago)
    } else {
        now + Duration::from_secs_f64(-ago)
    }
}

/// redbridge's value for `signal` in `zone`, with the interval its window covered: the scrapes
/// within the window plus the last one before it, exactly as the signal math picks them. Retried
/// when a scrape lands during the call, so the interval is the one the value was computed on.
async fn measure(rb: &Redbridge, zone: &str, signal: &[(&str, &str)]) -> (f64, Instant, Instant) {
    let mut pairs = vec![("pool", "llama"), ("zone", zone), ("target", "1")];
    pairs.extend_from_slice(signal);
    for _ in 0..5 {
        let before = scrapes(rb, zone);
        let from = rb.state.clock.now() - WINDOW.as_secs_f64();
        let value = get_metric(rb, &pairs).await;
        if scrapes(rb, zone) != before {
            continue;
        }
        let start = before.partition_point(|t| *t < from).saturating_sub(1);
        let last = *before.last().expect("scrapes in the window");
        return (value, instant(rb, before[start]), instant(rb, last));
    }
    panic!("a scrape landed during each of 5 calls for {zone} {signal:?}");
}

struct Zone {
    name: &'static str,
    rate: f64,
    shape: Shape,
    /// Requests held open at the backend in the concurrency phase.
    held: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoys_per_zone_signals_match_the_load_generators_truth() {
    let started = Instant::now();
    // Distinct on every signal, so a mixed-up zone fails: the slow tenth puts p95 mid-bucket,
    // (25, 50] ms in zone-a and (100, 250] ms in zone-b, well away from either bound.
    let zones = [
        Zone {
            name: "zone-a",
            rate: 100.0,
            shape: Shape {
                fast_ms: (1.0, 15.0),
                slow_ms: (30.0, 38.0),
                slow_share: 0.10,
                error_share: 0.02,
            },
            held: 6,
        },
        Zone {
            name: "zone-b",
            rate: 35.0,
            shape: Shape {
                fast_ms: (1.0, 15.0),
                slow_ms: (140.0, 200.0),
                slow_share: 0.10,
                error_share: 0.07,
            },
            held: 2,
        },
    ];
    let mut backends = Vec::new();
    let mut envoys = Vec::new();
    for z in &zones {
        let backend = Backend::start(z.shape).await;
        envoys.push(Envoy::start(z.name, backend.addr).await);
        backends.push(backend);
    }
    let rb = Redbridge::start(&config(&envoys.iter().collect::<Vec<_>>())).await;
    let loads: Vec<Load> = zones
        .iter()
        .zip(&envoys)
        .map(|(z, e)| Load::start(e.url(), z.rate, LIMIT))
        .collect();
    // Traffic to another cluster on zone-a's Envoy: the matcher must keep it out.
    let other = Load::start(format!("{}/other", envoys[0].url()), 60.0, LIMIT);

    // One full window of steady load (the scrapes before it hold no load and drop out).
    tokio::time::sleep(WINDOW + Duration::from_millis(1500)).await;

    let mut rates = Vec::new();
    for (z, load) in zones.iter().zip(&loads) {
        let (rps, from, to) = measure(&rb, z.name, &[("signal", "requests_per_second")]).await;
        let truth: Truth = load.truth(from, to);
        eprintln!("{}: requests/s {rps:.2}, truth {truth:?}", z.name);
        assert!(
            (rps - truth.rate).abs() <= 0.05 * truth.rate,
            "{}: requests/s {rps:.2} vs truth {:.2} over {:.2}s",
            z.name,
            truth.rate,
            (to - from).as_secs_f64()
        );
        rates.push(rps);

        let (errors, from, to) = measure(&rb, z.name, &[("signal", "error_ratio")]).await;
        let truth = load.truth(from, to);
        eprintln!(
            "{}: error ratio {errors:.4}, truth {:.4}",
            z.name, truth.error_ratio
        );
        assert!(
            (errors - truth.error_ratio).abs() <= 0.01,
            "{}: error ratio {errors:.4} vs truth {:.4}",
            z.name,
            truth.error_ratio
        );

        let (p95, from, to) =
            measure(&rb, z.name, &[("signal", "latency"), ("quantile", "0.95")]).await;
        let truth = load.truth(from, to);
        let (lower, upper) = envoy_bucket(truth.p95_ms);
        eprintln!(
            "{}: p95 {:.1} ms, truth {:.1} ms in ({lower}, {upper}]",
            z.name,
            p95 * 1000.0,
            truth.p95_ms
        );
        assert!(
            (lower..=upper).contains(&(p95 * 1000.0)),
            "{}: p95 {:.1} ms is outside the Envoy bucket ({lower}, {upper}] ms of the true \
             p95 {:.1} ms",
            z.name,
            p95 * 1000.0,
            truth.p95_ms
        );
    }
    assert!(
        rates[0] > 2.0 * rates[1],
        "zones kept apart: zone-a {} vs zone-b {} requests/s",
        rates[0],
        rates[1]
    );
    let all = get_metric(
        &rb,
        &[
            ("pool", "llama"),
            ("signal", "requests_per_second"),
            ("target", "1"),
        ],
    )
    .await;
    let sum = rates[0] + rates[1];
    assert!(
        (all - sum).abs() <= 0.05 * sum,
        "all zones {all:.2} vs zone-a + zone-b {sum:.2} (the {OTHER_CLUSTER} load must not count)"
    );

    // Concurrency: stop the scheduled load, hold a known number of requests open at each
    // backend, and read Envoy's rq_active once a scrape has seen them all.
    for load in &loads {
        load.set_rate(0.0);
    }
    drop(other);
    for (z, load) in zones.iter().zip(&loads) {
        wait_for(&format!("{} drained", z.name), || load.in_flight() == 0).await;
        load.send_extra("/hold", z.held);
    }
    for ((z, load), backend) in zones.iter().zip(&loads).zip(&backends) {
        wait_for(&format!("{} requests held", z.name), || {
            backend.held() == z.held
        })
        .await;
        assert_eq!(
            load.in_flight(),
            z.held,
            "{}: generator's in-flight",
            z.name
        );
    }
    let all_held = rb.state.clock.now();
    for z in &zones {
        wait_for(&format!("a {} scrape after the hold", z.name), || {
            scrapes(&rb, z.name).last().is_some_and(|t| *t > all_held)
        })
        .await;
    }
    for (z, load) in zones.iter().zip(&loads) {
        let (concurrency, _, _) = measure(&rb, z.name, &[("signal", "concurrency")]).await;
        let truth = load.in_flight();
        eprintln!("{}: concurrency {concurrency}, truth {truth}", z.name);
        assert!(
            (concurrency - truth as f64).abs() <= 1.0,
            "{}: concurrency {concurrency} vs {truth} requests in flight",
            z.name
        );
    }

    // Released: back to zero.
    for backend in &backends {
        backend.release();
    }
    for (z, load) in zones.iter().zip(&loads) {
        wait_for(&format!("{} released", z.name), || load.in_flight() == 0).await;
    }
    let released = rb.state.clock.now();
    for z in &zones {
        wait_for(&format!("a {} scrape after the release", z.name), || {
            scrapes(&rb, z.name).last().is_some_and(|t| *t > released)
        })
        .await;
        let (concurrency, _, _) = measure(&rb, z.name, &[("signal", "concurrency")]).await;
        assert_eq!(concurrency, 0.0, "{}: nothing in flight", z.name);
    }

    for (z, load) in zones.iter().zip(&loads) {
        let errors = load.transport_errors();
        assert!(
            errors.is_empty(),
            "{}: requests without an HTTP answer: {errors:?}",
            z.name
        );
        assert_eq!(load.skipped(), 0, "{}: the generator fell behind", z.name);
    }
    rb.stop().await;
    eprintln!("took {:.1}s", started.elapsed().as_secs_f64());
}

/// Polls `ok` every 50 ms; panics naming `what` after 10 s.
async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
