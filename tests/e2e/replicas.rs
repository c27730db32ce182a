//! Two `redbridge serve` processes behind one Service answer KEDA alike: both scrape the same
//! real Envoy (at the same wall-clock phase, derived from the target's URL), under load that
//! steps up and down, and their GetMetrics answers for the same trigger stay within 5 % of each
//! other throughout, and within 5 % of the load generator's truth once a step has filled the
//! window.
//!
//! Needs the pinned Envoy (REDBRIDGE_ENVOY, as tests/envoy.rs). About 50 s.

use crate::common;
use crate::envoy::harness;
use crate::serve;

use std::time::{Duration, Instant};

use common::object_ref;
use harness::{Backend, Envoy, Load, Shape, CLUSTER};
use serve::Serve;

const WINDOW: Duration = Duration::from_secs(8);
/// Every load in this file stops by itself after this.
const LIMIT: Duration = Duration::from_secs(90);
/// Requests per second, each held for a window and a few seconds.
const STEPS: [f64; 3] = [40.0, 120.0, 60.0];
const STEP: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_envoy_answer_within_five_percent_of_each_other_and_the_truth() {
    let backend = Backend::start(Shape::constant(2.0)).await;
    let envoy = Envoy::start("zone-a", backend.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - name: llama\n    namespace: ml\n    window: {}s\n    interval: 1s\n    \
             sources:\n      - name: gateway\n        profile: envoy\n        \
             matchers: ['envoy_cluster_name=\"{CLUSTER}\"']\n        targets:\n          \
             - {{ url: \"{}\", zone: zone-a }}\n",
            WINDOW.as_secs(),
            envoy.stats_url()
        ),
    )
    .expect("write config");
    let a = Serve::start(&config, &dir.path().join("a.log"), &[]).await;
    // The second replica starts a moment later, as a rolling update would.
    tokio::time::sleep(Duration::from_millis(430)).await;
    let b = Serve::start(&config, &dir.path().join("b.log"), &[]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let trigger = || {
        object_ref(
            "ml",
            &[
                ("pool", "llama"),
                ("zone", "zone-a"),
                ("signal", "requests_per_second"),
                ("target", "10"),
            ],
        )
    };

    let load = Load::start(envoy.url(), STEPS[0], LIMIT);
    let mut compared = 0;
    let mut worst = 0.0f64;
    for (i, rate) in STEPS.into_iter().enumerate() {
        load.set_rate(rate);
        let step_start = Instant::now();
        while step_start.elapsed() < STEP {
            // KEDA asks one replica, then (next poll) perhaps the other: ask both at once.
            let (mut va, mut vb) = tokio::join!(
                serve::value(&mut ca, trigger()),
                serve::value(&mut cb, trigger())
            );
            // Both scrape at the same instant, but each answer changes when its own scrape lands,
            // and on a busy machine one lands tens of milliseconds after the other: a call in
            // between sees one replica a scrape ahead. KEDA asks every few seconds, so what
            // matters is that they agree once both scrapes are in: ask again a moment later.
            if let (Ok(x), Ok(y)) = (&va, &vb) {
                if (x - y).abs() / x.max(*y).max(1.0) > 0.05 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    (va, vb) = tokio::join!(
                        serve::value(&mut ca, trigger()),
                        serve::value(&mut cb, trigger())
                    );
                }
            }
            // Until a window (and the sample kept before it) has passed since the load began, the
            // replica started first still holds idle scrapes from before it in its window, and the
            // other does not: both are right for their windows. Then they hold the same scrapes.
            let settled = i > 0 || step_start.elapsed() >= WINDOW + Duration::from_secs(2);
            match (&va, &vb) {
                (Ok(va), Ok(vb)) if settled => {
                    let diff = (va - vb).abs() / va.max(*vb).max(1.0);
                    worst = worst.max(diff);
                    assert!(
                        diff <= 0.05,
                        "step {i} ({rate}/s) after {:.1}s: replicas answered {va:.2} and {vb:.2}",
                        step_start.elapsed().as_secs_f64()
                    );
                    compared += 1;
                }
                (Ok(_), Ok(_)) => {}
                _ if i > 0 || step_start.elapsed() > WINDOW => {
                    panic!("a replica is unavailable after warm-up: {va:?} / {vb:?}");
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        // The step has filled the window: both agree with what the generator sent over it.
        let now = Instant::now();
        let truth = load.truth(now - WINDOW, now).rate;
        let (va, vb) = tokio::join!(
            serve::value(&mut ca, trigger()),
            serve::value(&mut cb, trigger())
        );
        for (name, v) in [("a", va), ("b", vb)] {
            let v = v.unwrap_or_else(|s| panic!("replica {name} at the end of step {i}: {s}"));
            eprintln!("step {i}: replica {name} {v:.2}/s, truth {truth:.2}/s");
            assert!(
                (v - truth).abs() <= 0.05 * truth,
                "replica {name} at the end of step {i}: {v:.2}/s, truth {truth:.2}/s"
            );
        }
    }
    eprintln!(
        "{compared} simultaneous answers compared; worst difference {:.2} %",
        worst * 100.0
    );
    assert!(compared >= 40, "only {compared} answers compared");
    assert!(
        load.transport_errors().len() < 5,
        "{:?}",
        load.transport_errors()
    );
}
