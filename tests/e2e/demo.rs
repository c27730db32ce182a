//! `redbridge demo` end to end, headless and shortened to 40 s: the simulated fleet on real
//! sockets, redbridge scraping it, and the KEDA + HPA emulator scaling it over gRPC. Asserts the
//! scaling loop's promises: the spiking zone scales up within a bound, a zone whose pods cannot be
//! reached is never scaled down while blind, and the pool reaches zero and comes back.

use redbridge::demo::keda::{Evaluation, Timing};
use redbridge::demo::report::{DemoReport, Outage, Output};
use redbridge::demo::run::{run, DemoOptions};
use redbridge::demo::scenario::{Phase, Scenario};

/// Seconds each phase lasts, and zone-a/b/c request rates.
const SCRIPT: [(&str, f64, [f64; 3]); 4] = [
    ("steady", 8.0, [6.0, 3.0, 3.0]),
    ("spike", 10.0, [6.0, 13.0, 3.0]),
    ("quiet", 14.0, [0.0, 0.0, 0.0]),
    ("return", 8.0, [6.0, 3.0, 3.0]),
];
const SPIKE_START: f64 = 8.0;
const QUIET_START: f64 = 18.0;
const RETURN_START: f64 = 32.0;
/// zone-a is partitioned off for the whole spike phase.
const OUTAGE: (f64, f64) = (8.0, 18.0);
/// A zone goes blind once its targets' last answers are older than the pool's staleAfter (3 s).
const STALE_AFTER: f64 = 3.0;

fn scenario() -> Scenario {
    let mut s = Scenario::default_demo(120.0);
    s.replica.model_load = 2.0;
    let mut start = 0.0;
    s.phases = SCRIPT
        .iter()
        .map(|(name, duration, rates)| {
            let p = Phase {
                name: name.to_string(),
                start,
                duration: *duration,
                rates: rates.to_vec(),
                gpu_capacity: vec![None; 3],
                unreachable: Vec::new(),
            };
            start += duration;
            p
        })
        .collect();
    s
}

async fn short_demo() -> DemoReport {
    let opts = DemoOptions {
        scenario: Some(scenario()),
        seed: 7,
        output: Output::Silent,
        timing: Some(Timing {
            hpa_sync: 1.0,
            polling: 1.0,
            cooldown: 4.0,
            scale_down_window: 4.0,
            signal_window: 4.0,
            max_replicas: 10,
        }),
        outages: vec![Outage {
            zone: "zone-a".into(),
            start: OUTAGE.0,
            end: OUTAGE.1,
        }],
        ..DemoOptions::default()
    };
    run(opts).await.expect("the demo runs")
}

fn describe(es: &[Evaluation]) -> String {
    es.iter()
        .map(|e| {
            format!(
                "{:5.1}s {}->{} ready {} {:?} {}",
                e.t, e.current, e.desired, e.ready, e.values, e.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_scenario_scales_up_holds_while_blind_and_returns_from_zero() {
    let report = short_demo().await;
    let rb = &report.redbridge;
    assert_eq!(report.zones, ["zone-a", "zone-b", "zone-c"]);
    assert!(report.seconds >= 39.0, "ran to the end: {}", report.seconds);

    // The external-push streams work: every zone got at least one pushed activation.
    for (z, es) in rb.evaluations.iter().enumerate() {
        assert!(
            es.iter().any(|e| e.pushed),
            "zone {z} never saw a pushed activation:\n{}",
            describe(es)
        );
    }

    // 1. The spike in zone-b is followed within 5 s, and reaches what 13 req/s needs.
    let spike = report.spike.as_ref().expect("the script has a spike");
    assert_eq!((spike.zone, spike.start), (1, SPIKE_START));
    let zone_b = &rb.evaluations[1];
    let first = rb.first_scale_up.unwrap_or(f64::INFINITY);
    assert!(
        first <= 5.0,
        "zone-b first scaled up {first} s after the spike:\n{}",
        describe(zone_b)
    );
    let peak = zone_b
        .iter()
        .filter(|e| e.t < QUIET_START)
        .map(|e| e.desired)
        .max();
    assert!(
        peak >= Some(4),
        "13 req/s at 3.2 per replica: {peak:?}\n{}",
        describe(zone_b)
    );

    // 2. zone-a is unreachable over the outage: redbridge answers UNAVAILABLE, the HPA holds and
    //    KEDA does not scale to zero, so desired never drops while the zone is blind.
    let zone_a = &rb.evaluations[0];
    let during: Vec<&Evaluation> = zone_a
        .iter()
        .filter(|e| e.t >= OUTAGE.0 && e.t < OUTAGE.1)
        .collect();
    let blind = during.iter().filter(|e| e.blind()).count();
    assert!(
        blind >= 4,
        "the outage made zone-a blind ({blind} blind evaluations):\n{}",
        describe(zone_a)
    );
    for e in &during {
        assert!(
            e.desired >= e.current,
            "zone-a scaled down at {:.1}s while unreachable: {}\n{}",
            e.t,
            e.reason,
            describe(zone_a)
        );
    }
    let at_start = during
        .iter()
        .find(|e| e.t >= OUTAGE.0 + STALE_AFTER + 1.0)
        .map(|e| e.current)
        .expect("evaluations during the outage");
    assert!(at_start >= 2, "zone-a served 6 req/s with 2 replicas");
    assert_eq!(rb.blind_scale_downs, 0);

    // 3. The pool reaches zero in the quiet phase, every zone at once ...
    let samples = &rb.samples;
    let seconds = samples[0].len();
    let all_zero = (0..seconds).find(|&i| {
        samples.iter().all(|zone| {
            zone.get(i)
                .is_some_and(|s| s.t >= QUIET_START && s.desired == 0 && s.ready == 0)
        })
    });
    let all_zero = all_zero.unwrap_or_else(|| {
        panic!(
            "the pool never reached zero:\n{}",
            rb.evaluations
                .iter()
                .map(|es| describe(es))
                .collect::<Vec<_>>()
                .join("\n--\n")
        )
    });
    assert!(samples[0][all_zero].t < RETURN_START + 1.0);
    // ... and every zone comes back once traffic returns.
    for (z, zone) in samples.iter().enumerate() {
        let back = zone[all_zero..]
            .iter()
            .find(|s| s.t >= RETURN_START && s.ready >= 1 && s.desired >= 1);
        assert!(
            back.is_some(),
            "zone {z} did not come back from zero:\n{}",
            describe(&rb.evaluations[z])
        );
        let woke = rb.evaluations[z]
            .iter()
            .find(|e| e.t >= RETURN_START && e.current == 0 && e.desired >= 1);
        let woke = woke.expect("an activation from zero");
        assert!(
            woke.t - RETURN_START <= 5.0,
            "zone {z} woke {:.1}s after traffic returned",
            woke.t - RETURN_START
        );
        assert!(woke.reason.starts_with("keda:"), "{}", woke.reason);
    }

    // Both paths ran the same script to the end.
    let prom = &report.prometheus_path;
    assert_eq!(prom.samples.len(), 3);
    assert!(prom.samples[0].len() >= 39);
    assert!(rb.finished() > 300 && prom.finished() > 300);
}

/// zone-c can hold one replica while its demand grows to 10 req/s; zone-a and zone-b have room.
const STOCKOUT: [(&str, f64, [f64; 3]); 3] = [
    ("steady", 6.0, [1.0, 1.0, 2.0]),
    ("stockout", 10.0, [1.0, 1.0, 10.0]),
    ("stockout-held", 8.0, [1.0, 1.0, 10.0]),
];

fn stockout() -> Scenario {
    let mut s = scenario();
    s.gpu_capacity = vec![Some(10), Some(10), Some(1)];
    s.error_rate = 0.0;
    let mut start = 0.0;
    s.phases = STOCKOUT
        .iter()
        .map(|(name, duration, rates)| {
            let p = Phase {
                name: name.to_string(),
                start,
                duration: *duration,
                rates: rates.to_vec(),
                gpu_capacity: vec![None; 3],
                unreachable: Vec::new(),
            };
            start += duration;
            p
        })
        .collect();
    s
}

/// The ZonalScaledObject loop on real sockets: zone-c runs out of GPUs, the weights send its
/// excess to zone-a and zone-b, which scale up for it; no zone is full before. The JSON
/// report holds the figures the summary prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stocked_out_zone_is_routed_around_and_the_json_report_matches_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("report.json");
    let opts = DemoOptions {
        scenario: Some(stockout()),
        scenario_name: Some("stockout".into()),
        seed: 3,
        output: Output::Silent,
        timing: Some(Timing {
            hpa_sync: 1.0,
            polling: 1.0,
            cooldown: 4.0,
            scale_down_window: 4.0,
            signal_window: 4.0,
            max_replicas: 10,
        }),
        report_json: Some(json_path.clone()),
        ..DemoOptions::default()
    };
    let report = run(opts).await.expect("the demo runs");
    let rb = &report.redbridge;
    let weights = rb
        .weight_changes
        .iter()
        .map(|c| format!("{:5.1}s {}", c.t, c.reason))
        .collect::<Vec<_>>()
        .join("\n");

    // Routing: zone-c's excess goes to the zones with room, and only once it is full.
    let from_c: u64 = rb.moved[2].iter().take(2).sum();
    assert!(
        from_c > 40,
        "zone-c sent {from_c} requests away:\n{weights}"
    );
    // Before the stock-out only a zone short of Ready capacity (demand noise above its one
    // replica) may borrow another's Ready room; no zone is full yet.
    assert!(
        rb.weight_changes
            .iter()
            .filter(|c| c.t < STOCKOUT[0].1)
            .all(|c| !c.reason.contains("full:")),
        "{weights}"
    );
    assert!(
        rb.weight_changes
            .iter()
            .any(|c| c.reason.contains("zone-c full: PodsUnschedulable")),
        "{weights}"
    );
    // Spillover agrees: zone-a and zone-b, one replica each for their own 1 req/s, scale beyond
    // that for zone-c's traffic (how far within the 24 s script depends on how many HPA syncs a
    // busy machine fits in; without spillover they stay at 2 together).
    let peak = |z: usize| rb.evaluations[z].iter().map(|e| e.desired).max();
    assert!(
        peak(0).unwrap_or(0) + peak(1).unwrap_or(0) >= 3,
        "zone-a {:?}, zone-b {:?}\n{}",
        peak(0),
        peak(1),
        describe(&rb.evaluations[0])
    );
    // Once they have, most of zone-c's requests finish in time; without routing one replica
    // serves 4 of its 10 req/s.
    let held = &rb.zone_phases[2][2];
    assert_eq!(held.name, "stockout-held");
    let share = held.good_share().unwrap_or(0.0);
    assert!(
        share >= 0.6,
        "zone-c within objective once routed: {share}\n{weights}"
    );

    // The JSON report: the summary's figures, consistent with each other.
    let text = std::fs::read_to_string(&json_path).expect("report written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let summary = redbridge::demo::view::summary(&report);
    let line = |label: &str| {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in\n{summary}"))
            .to_string()
    };
    assert_eq!(json["scenario"], "stockout");
    assert_eq!(
        json["zones"],
        serde_json::json!(["zone-a", "zone-b", "zone-c"])
    );
    let paths = json["paths"].as_array().expect("paths");
    let names: Vec<&str> = paths.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["redbridge", "Prometheus scaler", "reactive limit"]);
    let (within, gpu, moved) = (
        line("requests within 5 s"),
        line("GPU-minutes"),
        line("requests moved between zones"),
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for p in paths {
        let name = &p["name"];
        let share = number(&p["within_objective"]);
        let arrivals = p["arrivals"].as_u64().expect("arrivals");
        assert!(
            within.contains(&format!("{:.1} % of {arrivals}", share * 100.0)),
            "{name}: {within}"
        );
        assert!(
            gpu.contains(&format!("{:.1}", number(&p["gpu_minutes"]))),
            "{name}: {gpu}"
        );
        assert!(
            moved.contains(&p["moved_requests"].to_string()),
            "{name}: {moved}"
        );
        let zones = p["zones"].as_array().expect("zones");
        assert_eq!(zones.len(), 3);
        let sum = |xs: &[serde_json::Value], key: &str| -> f64 {
            xs.iter().map(|x| number(&x[key])).sum()
        };
        assert_eq!(sum(zones, "arrivals"), arrivals as f64, "{name}");
        assert!((sum(zones, "gpu_minutes") - number(&p["gpu_minutes"])).abs() < 1e-6);
        let phases = p["phases"].as_array().expect("phases");
        assert_eq!(phases.len(), 3, "{name}");
        // The limit counts a second at both ends of a boundary it does not fall on; the demo
        // once.
        let phase_arrivals = sum(phases, "arrivals");
        assert!(
            (phase_arrivals - arrivals as f64).abs() <= 0.02 * arrivals as f64,
            "{name}: {phase_arrivals} vs {arrivals}"
        );
    }
    let rbj = &paths[0];
    assert_eq!(rbj["moved_requests"], rb.moved_requests());
    let flows: u64 = rbj["moved"]
        .as_array()
        .expect("moved")
        .iter()
        .filter_map(|m| m["requests"].as_u64())
        .sum();
    assert_eq!(flows, rb.moved_requests());
    let c = &rbj["zones"][2];
    assert_eq!(c["name"], "zone-c");
    assert_eq!(c["moved_requests"], from_c);
    let c_phases: u64 = c["phases"]
        .as_array()
        .expect("zone phases")
        .iter()
        .filter_map(|p| p["arrivals"].as_u64())
        .sum();
    assert_eq!(Some(c_phases), c["arrivals"].as_u64());
    assert_eq!(rbj["phases"][0]["moved_requests"], rb.phases[0].moved);
}
