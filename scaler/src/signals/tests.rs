//! Rate, quantile and missing-data rules against hand-computed references.

use super::*;
use crate::extract::{Hist, Reading, Value};
use crate::model::{Aggregation, Profile, Role};
use crate::window::polled::QueryPart;

fn envoy() -> Profile {
    crate::profiles::builtin("envoy").unwrap()
}

/// Envoy inputs in profile order: requests, errors, latency, in-flight, queue.
fn envoy_reading(
    requests: Option<f64>,
    errors: Option<f64>,
    hist: Option<Hist>,
    active: f64,
) -> Reading {
    vec![
        requests.map_or(Value::Absent, Value::Scalar),
        errors.map_or(Value::Absent, Value::Scalar),
        hist.map_or(Value::Absent, Value::Histogram),
        Value::Scalar(active),
        Value::Scalar(0.0),
    ]
    .into()
}

fn scrape(at: f64, reading: impl Into<Reading>) -> Scrape {
    Scrape {
        at,
        reading: reading.into(),
    }
}

/// Cumulative histogram with the given (bound, cumulative count) buckets.
fn h(buckets: &[(f64, f64)]) -> Hist {
    let count = buckets.last().map_or(0.0, |b| b.1);
    Hist::new(buckets.to_vec(), count, 0.0)
}

const RULES: Rules = Rules {
    window: 10.0,
    stale_after: 3.0,
    min_target_ratio: 0.5,
};

fn eval(
    signal: Signal,
    now: f64,
    targets: &[(Option<f64>, Vec<Scrape>)],
) -> Result<f64, Unavailable> {
    let views: Vec<TargetView<'_>> = targets
        .iter()
        .map(|(last, samples)| TargetView {
            last_success: *last,
            samples,
        })
        .collect();
    evaluate(&envoy(), signal, None, &scraped(now, &views))
}

/// Scraped inputs under [`RULES`] at `now`.
fn scraped<'a>(now: f64, views: &'a [TargetView<'a>]) -> Inputs<'a> {
    Inputs::Scraped {
        rules: &RULES,
        now,
        targets: views,
    }
}

fn counter_series(points: &[(f64, f64)]) -> Vec<Scrape> {
    points
        .iter()
        .map(|&(t, v)| scrape(t, envoy_reading(Some(v), None, None, 0.0)))
        .collect()
}

#[test]
fn rate_is_increase_over_observed_span() {
    // 100 -> 150 over 10 s: 5/s.
    let t = counter_series(&[(0.0, 100.0), (5.0, 120.0), (10.0, 150.0)]);
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), t)]),
        Ok(5.0)
    );
}

#[test]
fn counter_reset_counts_the_new_value() {
    // 100 -> 130 (+30), reset to 10 (+10), -> 30 (+20): 60 over 10 s.
    let t = counter_series(&[(0.0, 100.0), (4.0, 130.0), (6.0, 10.0), (10.0, 30.0)]);
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), t)]),
        Ok(6.0)
    );
    assert_eq!(counter_increase(5.0, 3.0), 3.0);
}

#[test]
fn new_target_is_a_baseline_not_a_burst() {
    // An old target at 2/s, and a new one whose first sample already reads 1e6.
    let old = counter_series(&[(0.0, 0.0), (10.0, 20.0)]);
    let new = counter_series(&[(10.0, 1e6)]);
    assert_eq!(
        eval(
            Signal::RequestsPerSecond,
            10.0,
            &[(Some(10.0), old.clone()), (Some(10.0), new)]
        ),
        Ok(2.0)
    );
    // A target that left is simply not there: the remaining one carries the rate.
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), old)]),
        Ok(2.0)
    );
}

#[test]
fn only_samples_inside_the_window_count() {
    // Window 10 s at now=30: points at 15 (edge sample kept), 20, 25, 30.
    let t = counter_series(&[
        (0.0, 0.0),
        (15.0, 1000.0),
        (20.0, 1010.0),
        (25.0, 1020.0),
        (30.0, 1030.0),
    ]);
    // From the last sample at or before 20 (t=20) to 30: 20 over 10 s.
    assert_eq!(
        eval(Signal::RequestsPerSecond, 30.0, &[(Some(30.0), t)]),
        Ok(2.0)
    );
}

#[test]
fn zero_traffic_on_healthy_targets_is_zero() {
    let t = counter_series(&[(0.0, 7.0), (5.0, 7.0), (10.0, 7.0)]);
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), t.clone())]),
        Ok(0.0)
    );
    assert_eq!(
        eval(Signal::ErrorRatio, 10.0, &[(Some(10.0), t.clone())]),
        Ok(0.0)
    );
    // No histogram yet (Envoy creates it at the first request): latency 0, not unavailable.
    assert_eq!(
        eval(Signal::Latency { permille: 950 }, 10.0, &[(Some(10.0), t)]),
        Ok(0.0)
    );
}

#[test]
fn stale_or_missing_targets_are_unavailable_never_zero() {
    let t = counter_series(&[(0.0, 0.0), (10.0, 20.0)]);
    // No targets at all.
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[]),
        Err(Unavailable::NoTargets)
    );
    // The only target's last success is 7 s old (stale after 3 s).
    assert!(matches!(
        eval(Signal::RequestsPerSecond, 17.0, &[(Some(10.0), t.clone())]),
        Err(Unavailable::TooFewAnswered {
            answered: 0,
            total: 1,
            needed: 1,
            ..
        })
    ));
    // One of three answered; 50 % means 2 are needed.
    let r = eval(
        Signal::RequestsPerSecond,
        10.0,
        &[(Some(10.0), t.clone()), (None, vec![]), (Some(1.0), vec![])],
    );
    assert!(
        matches!(
            r,
            Err(Unavailable::TooFewAnswered {
                answered: 1,
                total: 3,
                needed: 2,
                ..
            })
        ),
        "{r:?}"
    );
    // Two of three is enough; the answering targets' rates are summed.
    let r = eval(
        Signal::RequestsPerSecond,
        10.0,
        &[
            (Some(10.0), t.clone()),
            (Some(10.0), t.clone()),
            (None, vec![]),
        ],
    );
    assert_eq!(r, Ok(4.0));
    // Warming up: fresh, but only one scrape each.
    let one = counter_series(&[(10.0, 5.0)]);
    assert_eq!(
        eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), one)]),
        Err(Unavailable::WarmingUp)
    );
}

#[test]
fn absent_series_is_unavailable() {
    // The target answers, but nothing matched the request counter (e.g. a wrong route matcher).
    let t: Vec<Scrape> = (0..3)
        .map(|i| scrape(f64::from(i) * 5.0, envoy_reading(None, None, None, 1.0)))
        .collect();
    let r = eval(Signal::RequestsPerSecond, 10.0, &[(Some(10.0), t.clone())]);
    assert!(
        matches!(
            r,
            Err(Unavailable::NoSeries {
                role: Role::Requests,
                with_series: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("`requests`"));
    // Latency on Envoy is anchored to the request counter: absent too, so unavailable.
    let r = eval(
        Signal::Latency { permille: 950 },
        10.0,
        &[(Some(10.0), t.clone())],
    );
    assert!(matches!(r, Err(Unavailable::NoSeries { .. })), "{r:?}");
    // Gauges do not depend on the counter.
    assert_eq!(eval(Signal::Concurrency, 10.0, &[(Some(10.0), t)]), Ok(1.0));
}

#[test]
fn error_ratio_treats_absent_5xx_counter_as_zero_then_counts_its_appearance() {
    let t = vec![
        scrape(0.0, envoy_reading(Some(100.0), None, None, 0.0)),
        scrape(5.0, envoy_reading(Some(150.0), None, None, 0.0)),
        // First 5xx series appears with 5: all five happened in this interval.
        scrape(10.0, envoy_reading(Some(200.0), Some(5.0), None, 0.0)),
    ];
    // errors 5 / requests 100 over the same 10 s.
    assert_eq!(eval(Signal::ErrorRatio, 10.0, &[(Some(10.0), t)]), Ok(0.05));
}

#[test]
fn histogram_quantile_matches_promql() {
    let b = [
        (0.1, 10.0),
        (0.5, 60.0),
        (1.0, 90.0),
        (f64::INFINITY, 100.0),
    ];
    // rank 50 falls in (0.1, 0.5]: 0.1 + 0.4 * (50-10)/50 = 0.42.
    assert!((histogram_quantile(0.5, &b).unwrap() - 0.42).abs() < 1e-12);
    // rank 95 falls in +Inf: the highest finite bound.
    assert_eq!(histogram_quantile(0.95, &b), Some(1.0));
    // rank 5 in the first bucket: 0 + 0.1 * 5/10.
    assert!((histogram_quantile(0.05, &b).unwrap() - 0.05).abs() < 1e-12);
    // rank 90 exactly at a bound: that bound.
    assert!((histogram_quantile(0.9, &b).unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(
        histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
        None
    );
    assert_eq!(
        histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 3.0)]),
        None,
        "no +Inf bucket"
    );
    // Non-monotonic input is repaired like PromQL.
    let bad = [(0.1, 10.0), (0.5, 5.0), (f64::INFINITY, 20.0)];
    assert!((histogram_quantile(0.5, &bad).unwrap() - 0.1).abs() < 1e-12);
}

#[test]
fn quantile_from_increases_summed_across_targets() {
    let inf = f64::INFINITY;
    // Target A: 10 new observations, all <= 0.1 s. Target B: 10 new, all in (0.1, 1].
    let a = vec![
        scrape(
            0.0,
            envoy_reading(
                Some(0.0),
                None,
                Some(h(&[(0.1, 50.0), (1.0, 50.0), (inf, 50.0)])),
                0.0,
            ),
        ),
        scrape(
            10.0,
            envoy_reading(
                Some(10.0),
                None,
                Some(h(&[(0.1, 60.0), (1.0, 60.0), (inf, 60.0)])),
                0.0,
            ),
        ),
    ];
    let b = vec![
        scrape(
            0.0,
            envoy_reading(
                Some(0.0),
                None,
                Some(h(&[(0.1, 0.0), (1.0, 1000.0), (inf, 1000.0)])),
                0.0,
            ),
        ),
        scrape(
            10.0,
            envoy_reading(
                Some(10.0),
                None,
                Some(h(&[(0.1, 0.0), (1.0, 1010.0), (inf, 1010.0)])),
                0.0,
            ),
        ),
    ];
    // Merged increase: (0.1: 10, 1.0: 20, inf: 20). p50 rank 10 -> 0.1; p75 rank 15 -> 0.1 + 0.9*5/10.
    let targets = [(Some(10.0), a), (Some(10.0), b)];
    let p50 = eval(Signal::Latency { permille: 500 }, 10.0, &targets).unwrap();
    assert!((p50 - 0.1).abs() < 1e-12, "{p50}");
    let p75 = eval(Signal::Latency { permille: 750 }, 10.0, &targets).unwrap();
    assert!((p75 - 0.55).abs() < 1e-12, "{p75}");
}

#[test]
fn histogram_reset_uses_the_new_histogram() {
    let inf = f64::INFINITY;
    let hs = [
        h(&[(0.1, 100.0), (1.0, 200.0), (inf, 200.0)]),
        h(&[(0.1, 2.0), (1.0, 4.0), (inf, 4.0)]),
        h(&[(0.1, 3.0), (1.0, 8.0), (inf, 8.0)]),
    ];
    let refs: Vec<_> = hs.iter().map(Hist::view).collect();
    assert_eq!(
        histogram_increase(&refs),
        vec![(0.1, 3.0), (1.0, 8.0), (inf, 8.0)]
    );
}

#[test]
fn histogram_increase_across_a_layout_change_keeps_every_bound() {
    let inf = f64::INFINITY;
    let hs = [
        h(&[(0.1, 1.0), (1.0, 2.0), (inf, 2.0)]),
        h(&[(0.1, 2.0), (1.0, 4.0), (inf, 5.0)]),
        // A bucket added: counted from its first reading, as after a reset.
        h(&[(0.1, 1.0), (0.5, 1.0), (1.0, 1.0), (inf, 1.0)]),
        h(&[(0.1, 2.0), (0.5, 3.0), (1.0, 3.0), (inf, 4.0)]),
    ];
    let refs: Vec<_> = hs.iter().map(Hist::view).collect();
    assert_eq!(
        histogram_increase(&refs),
        vec![(0.1, 3.0), (0.5, 3.0), (1.0, 5.0), (inf, 7.0)]
    );
}

#[test]
fn merging_different_layouts_stays_cumulative() {
    let inf = f64::INFINITY;
    let merged = merge_buckets(&[
        vec![(0.1, 1.0), (1.0, 2.0), (inf, 2.0)],
        vec![(0.5, 3.0), (inf, 4.0)],
    ]);
    assert_eq!(merged, vec![(0.1, 1.0), (0.5, 4.0), (1.0, 5.0), (inf, 6.0)]);
}

#[test]
fn gauges_use_latest_values_and_the_profile_aggregation() {
    let t1 = vec![
        scrape(0.0, envoy_reading(Some(0.0), None, None, 9.0)),
        scrape(10.0, envoy_reading(Some(0.0), None, None, 3.0)),
    ];
    let t2 = vec![scrape(10.0, envoy_reading(Some(0.0), None, None, 4.0))];
    let targets = [(Some(10.0), t1), (Some(10.0), t2)];
    assert_eq!(eval(Signal::Concurrency, 10.0, &targets), Ok(7.0));
    let views: Vec<TargetView<'_>> = targets
        .iter()
        .map(|(l, s)| TargetView {
            last_success: *l,
            samples: s,
        })
        .collect();
    let max = evaluate(
        &envoy(),
        Signal::Concurrency,
        Some(Aggregation::Max),
        &scraped(10.0, &views),
    );
    assert_eq!(max, Ok(4.0));
}

#[test]
fn unsupported_signal_names_the_profile() {
    let r = eval(Signal::KvCacheUtilization, 10.0, &[]);
    assert_eq!(
        r,
        Err(Unavailable::Unsupported {
            profile: "envoy".into()
        })
    );
}

#[test]
fn error_ratio_without_any_error_series_is_unavailable_not_zero() {
    // A custom mapping whose error counter matches nothing, and that does not declare absence as
    // zero (Envoy's profile does): blind, not 0 %.
    let mut profile = envoy();
    for input in &mut profile.inputs {
        input.zero_if_present = None;
    }
    let t: Vec<Scrape> = counter_series(&[(0.0, 100.0), (10.0, 200.0)]);
    let views = [TargetView {
        last_success: Some(10.0),
        samples: &t,
    }];
    let r = evaluate(&profile, Signal::ErrorRatio, None, &scraped(10.0, &views));
    assert!(
        matches!(
            r,
            Err(Unavailable::NoSeries {
                role: Role::Errors,
                ..
            })
        ),
        "{r:?}"
    );
    // With Envoy's rule (absent 5xx counter while requests exist is zero), it is a real 0.
    assert_eq!(eval(Signal::ErrorRatio, 10.0, &[(Some(10.0), t)]), Ok(0.0));
}

/// Two pods behind one URL (a Service address): each scrape reads another pod's totals. Through
/// the window, on simulated time: the target is refused, and the zone answers from its other
/// target or, when that is not enough, UNAVAILABLE; never the 1e9/s the "resets" would add up to.
#[test]
fn load_balanced_target_is_left_out_of_rates() {
    use crate::window::{TargetKey, TargetState};
    let key = |url: &str| TargetKey {
        namespace: String::new(),
        pool: "p".into(),
        source: "s".into(),
        zone: "z".into(),
        url: url.into(),
    };
    let (vip, pod) = (
        TargetState::new(key("vip"), 0),
        TargetState::new(key("pod"), 0),
    );
    let counters = [true, true, false, false, false];
    for i in 0..10u32 {
        let at = f64::from(i);
        let v = if i % 2 == 0 {
            1e9 + at * 10.0
        } else {
            at * 10.0
        };
        vip.record_reading(
            at,
            0.01,
            10,
            envoy_reading(Some(v), Some(0.0), None, 0.0),
            60.0,
            &counters,
        );
        pod.record_reading(
            at,
            0.01,
            10,
            envoy_reading(Some(at * 3.0), Some(0.0), None, 0.0),
            60.0,
            &counters,
        );
    }
    let (gv, gp) = (vip.lock(), pod.lock());
    fn view(g: &crate::window::TargetData) -> TargetView<'_> {
        TargetView {
            last_success: g.health.last_success,
            samples: g.samples(),
        }
    }
    let both = [view(&gv), view(&gp)];
    let rate = evaluate(
        &envoy(),
        Signal::RequestsPerSecond,
        None,
        &scraped(9.0, &both),
    );
    let rate = rate.expect("the pod target alone meets min_target_ratio 0.5");
    assert!((rate - 3.0).abs() < 1e-9, "{rate}");
    let alone = [view(&gv)];
    assert!(matches!(
        evaluate(
            &envoy(),
            Signal::RequestsPerSecond,
            None,
            &scraped(9.0, &alone)
        ),
        Err(Unavailable::TooFewAnswered { answered: 0, .. })
    ));
    // Just after one decrease, the last good scrape is still recent, but its window was dropped:
    // it has not answered anything usable (rather than "no series": check the matchers).
    let restarted = TargetState::new(key("restarted"), 0);
    for (i, v) in [100.0, 200.0, 5.0].into_iter().enumerate() {
        let r = envoy_reading(Some(v), Some(0.0), None, 0.0);
        restarted.record_reading(i as f64, 0.01, 10, r, 60.0, &counters);
    }
    let g = restarted.lock();
    let just_reset = [view(&g)];
    assert!(matches!(
        evaluate(
            &envoy(),
            Signal::RequestsPerSecond,
            None,
            &scraped(2.5, &just_reset)
        ),
        Err(Unavailable::TooFewAnswered { answered: 0, .. })
    ));
}

fn triton() -> Profile {
    crate::profiles::builtin("triton").unwrap()
}

/// Triton inputs in profile order: requests, errors, queue, in-flight, latency total, queue total.
fn triton_reading(requests: f64, latency_us: Option<f64>, queue_us: f64) -> Reading {
    vec![
        Value::Scalar(requests),
        Value::Scalar(0.0),
        Value::Scalar(0.0),
        Value::Scalar(0.0),
        latency_us.map_or(Value::Absent, Value::Scalar),
        Value::Scalar(queue_us),
    ]
    .into()
}

fn eval_with(
    profile: &Profile,
    signal: Signal,
    now: f64,
    samples: Vec<Scrape>,
) -> Result<f64, Unavailable> {
    let views = [TargetView {
        last_success: Some(now),
        samples: &samples,
    }];
    evaluate(profile, signal, None, &scraped(now, &views))
}

#[test]
fn mean_is_the_duration_rate_over_the_request_rate_in_seconds() {
    // 10 requests, 2.5 s of request time and 0.5 s queued (in microseconds) over 10 s.
    let t = vec![
        scrape(0.0, triton_reading(100.0, Some(1e6), 1e5)),
        scrape(10.0, triton_reading(110.0, Some(3.5e6), 6e5)),
    ];
    let p = triton();
    let mean = eval_with(&p, Signal::MeanLatency, 10.0, t.clone()).unwrap();
    assert!((mean - 0.25).abs() < 1e-12, "{mean}");
    let queued = eval_with(&p, Signal::MeanQueueTime, 10.0, t).unwrap();
    assert!((queued - 0.05).abs() < 1e-12, "{queued}");
    // No request in the window: nothing waited, a real 0.
    let idle = vec![
        scrape(0.0, triton_reading(110.0, Some(3.5e6), 6e5)),
        scrape(10.0, triton_reading(110.0, Some(3.5e6), 6e5)),
    ];
    assert_eq!(eval_with(&p, Signal::MeanLatency, 10.0, idle), Ok(0.0));
    // A duration counter that is absent is not a zero duration.
    let blind = vec![
        scrape(0.0, triton_reading(100.0, None, 0.0)),
        scrape(10.0, triton_reading(110.0, None, 0.0)),
    ];
    assert!(matches!(
        eval_with(&p, Signal::MeanLatency, 10.0, blind),
        Err(Unavailable::NoSeries {
            role: Role::LatencyTotal,
            ..
        })
    ));
}

#[test]
fn polled_mean_uses_the_server_rates() {
    let mut zone = ZoneInputs::default();
    zone.values.insert((Role::Requests, QueryPart::Value), 4.0);
    zone.values
        .insert((Role::LatencyTotal, QueryPart::Value), 2e6);
    let zones = [&zone];
    let inputs = Inputs::Polled {
        view: PolledView {
            now: 10.0,
            stale_after: 5.0,
            last_success: Some(9.0),
            last_error: None,
        },
        zones: &zones,
    };
    assert_eq!(
        evaluate(&triton(), Signal::MeanLatency, None, &inputs),
        Ok(0.5)
    );
    assert_eq!(
        evaluate(&triton(), Signal::MeanQueueTime, None, &inputs),
        Err(Unavailable::NoResult {
            role: Role::QueueTimeTotal,
            nan: false
        })
    );
}

#[test]
fn polled_infinities_are_unavailable_not_an_answer() {
    // +Inf in one zone and -Inf in the other summed to NaN, which the rate's clamp turned into a
    // made-up 0, and the error ratio (Inf / Inf) answered NaN; a lone +Inf answered +Inf.
    let zone = |requests: f64, errors: f64| {
        let mut z = ZoneInputs::default();
        z.values
            .insert((Role::Requests, QueryPart::Value), requests);
        z.values.insert((Role::Errors, QueryPart::Value), errors);
        z
    };
    let view = PolledView {
        now: 10.0,
        stale_after: 5.0,
        last_success: Some(9.0),
        last_error: None,
    };
    let (a, b) = (
        zone(f64::INFINITY, f64::INFINITY),
        zone(f64::NEG_INFINITY, 1.0),
    );
    for zones in [vec![&a, &b], vec![&a]] {
        let inputs = Inputs::Polled {
            view,
            zones: &zones,
        };
        for signal in [Signal::RequestsPerSecond, Signal::ErrorRatio] {
            let got = evaluate(&envoy(), signal, None, &inputs);
            assert!(
                matches!(got, Err(Unavailable::NoResult { nan: true, .. })),
                "{signal:?} over {} zones: {got:?}",
                zones.len()
            );
        }
    }
    // A histogram rate that is not finite is no quantile either.
    let mut z = ZoneInputs::default();
    z.buckets.insert(
        Role::Latency,
        vec![(0.1, f64::INFINITY), (f64::INFINITY, f64::INFINITY)],
    );
    let zones = [&z];
    let inputs = Inputs::Polled {
        view,
        zones: &zones,
    };
    assert!(matches!(
        evaluate(&envoy(), Signal::Latency { permille: 950 }, None, &inputs),
        Err(Unavailable::NoResult { nan: true, .. })
    ));
}

#[test]
fn zero_if_present_chains_and_a_cycle_ends_absent() {
    use crate::model::{Input, Term};
    let term = |n: &str| Term {
        names: vec![n.into()],
        matchers: vec![],
    };
    let input = |role, anchor| Input {
        role,
        terms: vec![term("x")],
        scale: 1.0,
        zero_if_present: anchor,
    };
    // errors -> requests -> members: absent errors and requests read 0 where members exist.
    let chain = Profile {
        name: "chain".into(),
        inputs: vec![
            input(Role::Requests, Some(Role::Members)),
            input(Role::Errors, Some(Role::Requests)),
            input(Role::Members, None),
        ],
        gauge_aggregation: Default::default(),
        endpoint_labels: Vec::new(),
    };
    let r = |members: Value| vec![Value::Absent, Value::Absent, members];
    let t = vec![
        scrape(0.0, r(Value::Scalar(2.0))),
        scrape(10.0, r(Value::Scalar(2.0))),
    ];
    assert_eq!(eval_with(&chain, Signal::ErrorRatio, 10.0, t), Ok(0.0));
    let t = vec![
        scrape(0.0, r(Value::Absent)),
        scrape(10.0, r(Value::Absent)),
    ];
    assert!(eval_with(&chain, Signal::ErrorRatio, 10.0, t).is_err());
    // requests <-> errors: neither present, so neither is implied.
    let cycle = Profile {
        name: "cycle".into(),
        inputs: vec![
            input(Role::Requests, Some(Role::Errors)),
            input(Role::Errors, Some(Role::Requests)),
        ],
        gauge_aggregation: Default::default(),
        endpoint_labels: Vec::new(),
    };
    let t = vec![
        scrape(0.0, vec![Value::Absent, Value::Absent]),
        scrape(10.0, vec![Value::Absent, Value::Absent]),
    ];
    assert!(matches!(
        eval_with(&cycle, Signal::RequestsPerSecond, 10.0, t),
        Err(Unavailable::NoSeries { .. })
    ));
}

/// One target scraped every second at `before` requests/s until `step`, then at `after`.
fn stepped(before: f64, after: f64, step: f64, until: f64) -> Vec<Scrape> {
    let mut total = 0.0;
    let mut out = Vec::new();
    let mut t = 0.0;
    while t <= until {
        out.push(scrape(t, envoy_reading(Some(total), None, None, 0.0)));
        total += if t < step { before } else { after };
        t += 1.0;
    }
    out
}

fn fast_up_at(samples: &[Scrape], now: f64, up: f64) -> Result<f64, Unavailable> {
    let upto = samples.partition_point(|s| s.at <= now);
    let views = [TargetView {
        last_success: Some(now),
        samples: &samples[..upto],
    }];
    evaluate_fast_up(
        &envoy(),
        Signal::RequestsPerSecond,
        None,
        &scraped(now, &views),
        up,
    )
}

#[test]
fn fast_up_shows_a_step_up_within_the_short_window() {
    // 1/s for 20 s, then 9/s. A window starts at the last scrape before its edge, so the 2 s
    // window spans the scrapes at 20..23 and holds only the new rate three seconds after the
    // step, while the 10 s window alone (11..23 s) still reads (8 * 1 + 3 * 9) / 11.
    let s = stepped(1.0, 9.0, 20.0, 60.0);
    let long = fast_up_at(&s, 23.0, 10.0).expect("value");
    assert!((long - 35.0 / 11.0).abs() < 1e-9, "{long}");
    let fast = fast_up_at(&s, 23.0, 2.0).expect("value");
    assert!((fast - 9.0).abs() < 1e-9, "{fast}");
    // Two seconds after the step it already reads two thirds of the rise.
    let fast = fast_up_at(&s, 22.0, 2.0).expect("value");
    assert!((fast - 19.0 / 3.0).abs() < 1e-9, "{fast}");
}

#[test]
fn fast_up_lets_a_drop_show_only_after_the_long_window() {
    // 9/s, then 1/s from 20 s: 5 s after the drop the short window reads 1 but the answer keeps
    // the long window's (6 * 9 + 5 * 1) / 11; once the window has let go of the old rate, 1.
    let s = stepped(9.0, 1.0, 20.0, 60.0);
    let v = fast_up_at(&s, 25.0, 2.0).expect("value");
    assert!((v - 59.0 / 11.0).abs() < 1e-9, "{v}");
    let v = fast_up_at(&s, 31.0, 2.0).expect("value");
    assert!((v - 1.0).abs() < 1e-9, "{v}");
}

#[test]
fn fast_up_leaves_other_signals_and_warm_up_alone() {
    assert_eq!(rise_fast(3.0, Some(5.0)), 5.0);
    assert_eq!(rise_fast(3.0, Some(1.0)), 3.0);
    assert_eq!(rise_fast(3.0, None), 3.0);
    assert_eq!(rise_fast(3.0, Some(f64::NAN)), 3.0);
    // A gauge has no short rate: the value is the plain one.
    let t: Vec<Scrape> = (0..12)
        .map(|i| {
            scrape(
                f64::from(i),
                envoy_reading(Some(0.0), None, None, f64::from(i)),
            )
        })
        .collect();
    let views = [TargetView {
        last_success: Some(11.0),
        samples: &t,
    }];
    let plain = evaluate(&envoy(), Signal::Concurrency, None, &scraped(11.0, &views));
    let fast = evaluate_fast_up(
        &envoy(),
        Signal::Concurrency,
        None,
        &scraped(11.0, &views),
        2.0,
    );
    assert_eq!(plain, Ok(11.0));
    assert_eq!(fast, plain);
}
