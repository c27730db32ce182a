use super::*;
use proptest::prelude::*;

const A: &str = "zone-a";
const B: &str = "zone-b";
const C: &str = "zone-c";

/// A zone with `ready` replicas (none starting), at most `max`, one unit of demand per replica.
fn zone(name: &str, ready: u32, max: u32, demand: f64) -> ZoneInput {
    ZoneInput {
        name: name.into(),
        ready,
        starting: 0,
        max_replicas: max,
        full: None,
        capacity_per_replica: 1.0,
        demand: Some(demand),
    }
}

fn full(mut z: ZoneInput, why: Full) -> ZoneInput {
    z.full = Some(why);
    z
}

fn starting(mut z: ZoneInput, n: u32) -> ZoneInput {
    z.starting = n;
    z
}

fn order(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn first(zones: &[ZoneInput], order: &[String]) -> Decision {
    decide(zones, order, None, 0.0, &Policy::default())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn assert_rows(w: &Weights, want: &[&[f64]], case: &str) {
    for (i, row) in want.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert!(
                close(w.flows[i][j], *v),
                "{case}: flows[{i}][{j}] = {}, want {v}\n{w:?}",
                w.flows[i][j]
            );
        }
    }
}

const UNSCHEDULABLE_3M: Full = Full::Unschedulable { for_secs: 180.0 };

#[test]
fn target_table() {
    let abc = order(&[A, B, C]);
    // (case, zones, spillover order, expected flows[from][to])
    type Case = (&'static str, Vec<ZoneInput>, Vec<String>, Vec<Vec<f64>>);
    let cases: Vec<Case> = vec![
        (
            "capacity covers demand: every zone keeps its traffic",
            vec![
                zone(A, 4, 10, 3.0),
                zone(B, 4, 10, 2.0),
                zone(C, 2, 10, 2.0),
            ],
            abc.clone(),
            vec![vec![1., 0., 0.], vec![0., 1., 0.], vec![0., 0., 1.]],
        ),
        (
            "Ready capacity covers demand: no hop, whatever room other zones have",
            vec![zone(A, 2, 10, 2.0), zone(B, 8, 10, 0.0)],
            abc.clone(),
            vec![vec![1., 0.], vec![0., 1.]],
        ),
        (
            "short zone: the excess into other zones' Ready headroom only, the rest kept",
            vec![
                starting(zone(A, 1, 10, 5.0), 4),
                starting(zone(B, 2, 10, 0.5), 3),
                zone(C, 1, 10, 1.0),
            ],
            abc.clone(),
            // a keeps its 1 and the 2.5 that find no Ready room; b's 1.5 spare takes the rest, not
            // its starting replicas, its growth or c (no spare).
            vec![vec![0.7, 0.3, 0.], vec![0., 1., 0.], vec![0., 0., 1.]],
        ),
        (
            "Ready headroom goes to a full zone's excess before a short zone's",
            vec![
                starting(zone(A, 1, 10, 3.0), 2),
                zone(B, 2, 10, 0.0),
                full(zone(C, 1, 10, 3.0), UNSCHEDULABLE_3M),
            ],
            abc.clone(),
            // c's 2 take b's 2 spare; a finds none and keeps its traffic.
            vec![
                vec![1., 0., 0.],
                vec![0., 1., 0.],
                vec![0., 2. / 3., 1. / 3.],
            ],
        ),
        (
            "a short zone grows for a full zone's excess, and borrows no growth itself",
            vec![zone(A, 1, 10, 2.0), full(zone(B, 1, 1, 3.0), Full::AtMax)],
            abc.clone(),
            // b's excess of 2 goes to a's growth (a's 10 less its own 2): a grows for it.
            vec![vec![1., 0.], vec![2. / 3., 1. / 3.]],
        ),
        (
            "full zone: Ready headroom first, in spillover order, then growth headroom",
            vec![
                zone(A, 4, 10, 1.0),
                zone(B, 4, 10, 1.0),
                full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
            ],
            abc.clone(),
            // c keeps 5; a and b take 3 each now; a (next in order after c, wrapping) grows for 1.
            vec![
                vec![1., 0., 0.],
                vec![0., 1., 0.],
                vec![4. / 12., 3. / 12., 5. / 12.],
            ],
        ),
        (
            "the spillover order decides who grows for the excess",
            vec![
                zone(A, 4, 10, 1.0),
                zone(B, 4, 10, 1.0),
                full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
            ],
            order(&[C, B, A]),
            vec![
                vec![1., 0., 0.],
                vec![0., 1., 0.],
                vec![3. / 12., 4. / 12., 5. / 12.],
            ],
        ),
        (
            "zones missing from the order follow it",
            vec![
                zone(A, 4, 10, 1.0),
                zone(B, 4, 10, 1.0),
                full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
            ],
            order(&[C, B]),
            vec![
                vec![1., 0., 0.],
                vec![0., 1., 0.],
                vec![3. / 12., 4. / 12., 5. / 12.],
            ],
        ),
        (
            "at max: keeps what its Ready replicas serve, starting ones are not capacity",
            vec![
                starting(full(zone(A, 1, 2, 2.0), Full::AtMax), 1),
                zone(B, 2, 4, 0.0),
            ],
            abc.clone(),
            vec![vec![0.5, 0.5], vec![0., 1.]],
        ),
        (
            "a full zone with headroom of its own keeps everything",
            vec![full(zone(A, 3, 3, 2.0), Full::AtMax), zone(B, 1, 4, 1.0)],
            abc.clone(),
            vec![vec![1., 0.], vec![0., 1.]],
        ),
        (
            "no Ready replica: all to zones with one, ahead of a full zone's excess",
            vec![
                starting(zone(A, 0, 10, 2.0), 2),
                zone(B, 2, 10, 0.0),
                full(zone(C, 1, 10, 3.0), UNSCHEDULABLE_3M),
            ],
            abc.clone(),
            // a takes b's Ready headroom (2); c's excess (2) goes to b's growth headroom.
            vec![
                vec![0., 1., 0.],
                vec![0., 1., 0.],
                vec![0., 2. / 3., 1. / 3.],
            ],
        ),
        (
            "a full zone may take traffic with its spare Ready capacity",
            vec![
                zone(A, 0, 10, 1.0),
                full(zone(B, 3, 3, 1.0), Full::AtMax),
                zone(C, 1, 10, 1.0),
            ],
            abc.clone(),
            vec![vec![0., 1., 0.], vec![0., 1., 0.], vec![0., 0., 1.]],
        ),
        (
            "no Ready replica and no demand: the row still points at the next zone with room",
            vec![
                zone(A, 0, 10, 0.0),
                zone(B, 1, 10, 1.0),
                zone(C, 2, 10, 0.0),
            ],
            abc.clone(),
            vec![vec![0., 0., 1.], vec![0., 1., 0.], vec![0., 0., 1.]],
        ),
        (
            "every zone full: the rest is spread by Ready capacity",
            vec![
                full(zone(A, 2, 2, 10.0), Full::AtMax),
                full(zone(B, 6, 6, 2.0), Full::AtMax),
            ],
            abc.clone(),
            // b's 4 spare, then a's last 4 by capacity (1 to a, 3 to b): shares 3/12 and 9/12.
            vec![vec![0.3, 0.7], vec![0., 1.]],
        ),
        (
            "no zone has a Ready replica: every zone keeps its traffic",
            vec![zone(A, 0, 10, 3.0), zone(B, 0, 10, 1.0)],
            abc.clone(),
            vec![vec![1., 0.], vec![0., 1.]],
        ),
    ];
    for (case, zones, order, want) in cases {
        let d = first(&zones, &order);
        assert!(d.changed && d.settled, "{case}: {d:?}");
        let want: Vec<&[f64]> = want.iter().map(|r| r.as_slice()).collect();
        assert_rows(&d.weights, &want, case);
        let sum: f64 = d.weights.shares.iter().sum();
        assert!(close(sum, 1.0), "{case}: shares sum to {sum}");
    }
}

#[test]
fn shares_are_what_each_zone_serves() {
    let zones = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let w = first(&zones, &order(&[A, B, C])).weights;
    // served: a 1 + 4, b 1 + 3, c 5 of 14.
    for (i, want) in [5.0 / 14.0, 4.0 / 14.0, 5.0 / 14.0].iter().enumerate() {
        assert!(close(w.shares[i], *want), "{:?}", w.shares);
    }
    let every_zone_full = vec![
        full(zone(A, 2, 2, 10.0), Full::AtMax),
        full(zone(B, 6, 6, 2.0), Full::AtMax),
    ];
    let w = first(&every_zone_full, &[]).weights;
    assert!(
        close(w.shares[0], 0.25) && close(w.shares[1], 0.75),
        "{w:?}"
    );
    // No demand at all: by Ready capacity, nothing to a zone without a Ready replica.
    let idle = vec![
        zone(A, 0, 10, 0.0),
        zone(B, 1, 10, 0.0),
        zone(C, 3, 10, 0.0),
    ];
    let w = first(&idle, &[]).weights;
    assert_eq!(w.shares, vec![0.0, 0.25, 0.75]);
}

#[test]
fn reasons_name_the_full_zone_its_cause_and_where_traffic_goes() {
    let zones = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let d = first(&zones, &order(&[A, B, C]));
    assert_eq!(
        d.reason,
        "zone-c full: PodsUnschedulable for 3m; moving 58 % to zone-a, zone-b"
    );
    let local = first(&[zone(A, 1, 2, 1.0), zone(B, 1, 2, 1.0)], &[]);
    assert_eq!(local.reason, "every zone serves its own traffic");
    let waking = first(&[starting(zone(A, 0, 2, 1.0), 1), zone(B, 3, 3, 0.0)], &[]);
    assert_eq!(
        waking.reason,
        "zone-a has no Ready replica (1 starting); moving 100 % to zone-b"
    );
    let at_max = first(
        &[full(zone(A, 1, 1, 2.0), Full::AtMax), zone(B, 3, 3, 0.0)],
        &[],
    );
    assert_eq!(
        at_max.reason,
        "zone-a full: AtMaxReplicas; moving 50 % to zone-b"
    );
    assert_eq!(human(45.4), "45s");
    assert_eq!(human(200.0), "3m20s");
    assert_eq!(human(3900.0), "1h5m");
    assert_eq!(human(7200.0), "2h");
    assert_eq!(human(f64::NAN), "0s");
}

fn written(weights: Weights, at: f64) -> Written {
    Written { weights, at }
}

#[test]
fn missing_demand_holds_the_last_weights() {
    let abc = order(&[A, B, C]);
    let zones = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let moved = first(&zones, &abc).weights;
    let mut unknown = zones.clone();
    unknown[0].demand = None;
    // Even with zone-c's demand gone to 0 elsewhere, nothing is recomputed from part of the view.
    unknown[2].demand = Some(0.0);
    let last = written(moved.clone(), 0.0);
    let d = decide(&unknown, &abc, Some(&last), 100.0, &Policy::default());
    assert!(!d.changed, "{d:?}");
    assert_eq!(d.weights, moved);
    assert!(
        d.reason
            .starts_with("no demand data from zone-a: holding weights"),
        "{}",
        d.reason
    );
    // A measurement that is not a demand is no data either.
    unknown[0].demand = Some(f64::NAN);
    assert!(!decide(&unknown, &abc, Some(&last), 100.0, &Policy::default()).changed);

    // Nothing written yet: every zone keeps its own traffic, shares by Ready capacity.
    let d = first(&unknown, &abc);
    assert!(d.changed && d.weights.is_local(), "{d:?}");
    assert!(
        close(d.weights.shares[2], 5.0 / 13.0),
        "{:?}",
        d.weights.shares
    );

    // A receiver losing its last Ready replica is moved off at once, data or not.
    unknown[1].ready = 0;
    let d = decide(&unknown, &abc, Some(&last), 1.0, &Policy::default());
    assert!(d.changed, "{d:?}");
    assert!(d.weights.flows.iter().all(|row| row[1] == 0.0), "{d:?}");
    assert_eq!(d.weights.shares[1], 0.0);
    assert!(close(d.weights.flows[2].iter().sum::<f64>(), 1.0));
    // zone-c's row keeps its preference: what went to zone-b now goes to a and c pro rata.
    assert!(close(d.weights.flows[2][0], 4.0 / 9.0), "{d:?}");
}

#[test]
fn small_changes_and_quick_changes_are_not_written() {
    let policy = Policy::default();
    let base = vec![zone(A, 4, 10, 2.0), zone(B, 4, 10, 2.0)];
    let last = written(first(&base, &[]).weights, 0.0);
    // 2.0/2.2 moves shares by 2.4 points: under 5.
    let nudged = vec![zone(A, 4, 10, 2.0), zone(B, 4, 10, 2.2)];
    let d = decide(&nudged, &[], Some(&last), 100.0, &policy);
    assert!(!d.changed && d.settled, "{d:?}");
    assert_eq!(d.weights, last.weights);
    assert!(d.reason.contains("under the threshold"), "{}", d.reason);

    // A real change, 10 s after the last: held until the interval has passed.
    let shifted = vec![zone(A, 4, 10, 2.0), zone(B, 4, 10, 4.0)];
    let d = decide(&shifted, &[], Some(&last), 10.0, &policy);
    assert!(!d.changed && !d.settled, "{d:?}");
    assert!(d.reason.contains("minimum interval of 30s"), "{}", d.reason);
    let d = decide(&shifted, &[], Some(&last), 30.0, &policy);
    assert!(d.changed, "{d:?}");
    assert!(
        close(d.weights.shares[1], 4.0 / 6.0),
        "{:?}",
        d.weights.shares
    );
}

#[test]
fn steps_are_bounded_and_converge() {
    let policy = Policy::default();
    let abc = order(&[A, B, C]);
    let calm = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        zone(C, 5, 10, 5.0),
    ];
    let stocked_out = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let target = first(&stocked_out, &abc).weights;
    let mut last = written(first(&calm, &abc).weights, 0.0);
    let mut now = 0.0;
    let mut steps = 0;
    loop {
        now += policy.min_interval;
        let d = decide(&stocked_out, &abc, Some(&last), now, &policy);
        assert!(d.changed, "step {steps}: {d:?}");
        let moved = d.weights.distance(&last.weights);
        assert!(moved <= policy.max_step + 1e-9, "step of {moved}");
        for row in &d.weights.flows {
            assert!(close(row.iter().sum(), 1.0), "{row:?}");
        }
        assert!(close(d.weights.shares.iter().sum(), 1.0));
        steps += 1;
        if d.settled {
            assert!(!d.reason.contains("more follows"), "{}", d.reason);
            assert_eq!(d.weights, target);
            break;
        }
        assert!(
            d.reason.ends_with("(step bounded; more follows)"),
            "{}",
            d.reason
        );
        last = written(d.weights, now);
        assert!(steps < 10, "does not converge");
    }
    // zone-c's 58 % move takes three 25-point steps.
    assert_eq!(steps, 3);
}

#[test]
fn a_zone_routed_away_wakes_on_its_own_demand_and_takes_its_traffic_back() {
    let policy = Policy::default();
    let ab = order(&[A, B]);
    // zone-a scaled to zero; requests arrive there and are served by zone-b.
    let asleep = vec![zone(A, 0, 10, 3.0), zone(B, 4, 10, 1.0)];
    let away = first(&asleep, &ab).weights;
    assert_rows(&away, &[&[0., 1.], &[0., 1.]], "asleep");
    let demand = routed_demand(&away, &asleep);
    assert!(close(demand[1].served, 4.0), "{demand:?}");
    // zone-a's demand stays its own (it wakes for it); zone-b does not buy replicas for it.
    assert_eq!(demand[0].spilled_out, 0.0);
    assert_eq!(demand[1].spilled_in, 0.0);

    // Its first replica is Ready: what that serves comes back, in bounded steps; the rest (2 of
    // 3) stays on zone-b's Ready room until zone-a's next replicas are Ready.
    let awake = vec![starting(zone(A, 1, 10, 3.0), 2), zone(B, 4, 10, 1.0)];
    let d = decide(&awake, &ab, Some(&written(away, 0.0)), 30.0, &policy);
    assert!(d.changed && !d.settled, "{d:?}");
    assert!(close(d.weights.flows[0][0], 0.25), "{d:?}");
    assert!(
        d.reason
            .starts_with("zone-a takes its traffic back (1 Ready); moving 75 % to zone-b"),
        "{}",
        d.reason
    );
    // zone-a can grow: zone-b carries what it still serves for it on what it has.
    let demand = routed_demand(&d.weights, &awake);
    assert!(close(demand[1].served, 3.25), "{demand:?}");
    assert_eq!(demand[1].spilled_in, 0.0);
    assert_eq!(demand[0].spilled_out, 0.0);
    let d = decide(&awake, &ab, Some(&written(d.weights, 30.0)), 60.0, &policy);
    assert!(d.changed && d.settled, "{d:?}");
    assert!(close(d.weights.flows[0][0], 1.0 / 3.0), "{d:?}");
    assert!(
        d.reason.starts_with(
            "zone-a above its Ready capacity (1 Ready, 2 starting); moving 67 % to zone-b"
        ),
        "{}",
        d.reason
    );
    // All three Ready: every request comes home, in bounded steps.
    let home = vec![zone(A, 3, 10, 3.0), zone(B, 4, 10, 1.0)];
    let mut last = written(d.weights, 60.0);
    for step in 1..=3 {
        let now = 60.0 + 30.0 * f64::from(step);
        let d = decide(&home, &ab, Some(&last), now, &policy);
        assert!(d.changed && d.settled == (step == 3), "step {step}: {d:?}");
        last = written(d.weights, now);
    }
    assert!(last.weights.is_local(), "{last:?}");
}

#[test]
fn a_short_zone_borrows_ready_room_while_its_replicas_load() {
    let policy = Policy::default();
    let abc = order(&[A, B, C]);
    // The flash-crowd shape: zone-b's demand jumps past its 2 Ready replicas; a and c have a
    // little Ready room (0.5 and 1.5), and their own traffic first.
    let calm = vec![
        zone(A, 2, 10, 1.5),
        zone(B, 2, 10, 1.5),
        zone(C, 2, 10, 0.5),
    ];
    let last = written(first(&calm, &abc).weights, 0.0);
    assert!(last.weights.is_local());
    let crowd = vec![
        zone(A, 2, 10, 1.5),
        starting(zone(B, 2, 10, 8.0), 6),
        zone(C, 2, 10, 0.5),
    ];
    let d = decide(&crowd, &abc, Some(&last), 100.0, &policy);
    assert!(d.changed && d.settled, "{d:?}");
    assert_rows(
        &d.weights,
        &[&[1., 0., 0.], &[0.5 / 8., 6. / 8., 1.5 / 8.], &[0., 0., 1.]],
        "crowd",
    );
    assert_eq!(
        d.reason,
        "zone-b above its Ready capacity (2 Ready, 6 starting); moving 25 % to zone-c, zone-a"
    );
    // Nobody scales for it: zone-b's demand is its own, and its own replicas are on the way.
    let demand = routed_demand(&d.weights, &crowd);
    assert!(demand.iter().all(|z| z.spilled_in == 0.0), "{demand:?}");
    assert!(close(demand[0].served, 2.0) && close(demand[2].served, 2.0));
    // Its replicas are Ready: the traffic comes home.
    let ready = vec![
        zone(A, 2, 10, 1.5),
        zone(B, 8, 10, 8.0),
        zone(C, 2, 10, 0.5),
    ];
    let back = decide(
        &ready,
        &abc,
        Some(&written(d.weights, 100.0)),
        130.0,
        &policy,
    );
    assert!(
        back.changed && back.settled && back.weights.is_local(),
        "{back:?}"
    );
}

#[test]
fn spillover_is_the_demand_routed_from_full_zones() {
    let zones = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let w = first(&zones, &order(&[A, B, C])).weights;
    let demand = routed_demand(&w, &zones);
    let want = [
        ZoneDemand {
            served: 5.0,
            spilled_in: 4.0,
            spilled_out: 0.0,
        },
        ZoneDemand {
            served: 4.0,
            spilled_in: 3.0,
            spilled_out: 0.0,
        },
        ZoneDemand {
            served: 5.0,
            spilled_in: 0.0,
            spilled_out: 7.0,
        },
    ];
    for (got, want) in demand.iter().zip(&want) {
        assert!(
            close(got.served, want.served)
                && close(got.spilled_in, want.spilled_in)
                && close(got.spilled_out, want.spilled_out),
            "{demand:?}"
        );
    }
    // A zone that cannot schedule any replica is full: its demand spills, receivers scale for it.
    let stocked_out = vec![
        full(zone(A, 0, 10, 2.0), UNSCHEDULABLE_3M),
        zone(B, 1, 10, 0.0),
    ];
    let w = first(&stocked_out, &[]).weights;
    let demand = routed_demand(&w, &stocked_out);
    assert!(close(demand[1].spilled_in, 2.0), "{demand:?}");
    // Zones without data add nothing.
    let w = first(&zones, &order(&[A, B, C])).weights;
    let mut unknown = zones.clone();
    unknown[2].demand = None;
    let demand = routed_demand(&w, &unknown);
    assert!(demand.iter().all(|d| d.spilled_in == 0.0), "{demand:?}");
}

#[test]
fn changed_zones_start_afresh() {
    let last = written(Weights::local(&order(&[A, B])), 0.0);
    let zones = vec![zone(A, 1, 2, 1.0), zone(B, 1, 2, 1.0), zone(C, 1, 2, 1.0)];
    let d = decide(&zones, &[], Some(&last), 1.0, &Policy::default());
    assert!(d.changed && d.settled, "{d:?}");
    assert_eq!(d.weights.zones, order(&[A, B, C]));
    assert_eq!(
        Weights::local(&order(&[A])).distance(&Weights::local(&order(&[B]))),
        f64::INFINITY
    );
}

#[test]
fn levers() {
    // (shares, HTTPRoute weights, Envoy Gateway weights, percentages)
    type Case = (Vec<f64>, Vec<u32>, Vec<u32>, Vec<u32>);
    let cases: Vec<Case> = vec![
        (
            vec![0.5, 0.5, 0.0],
            vec![500_000, 500_000, 0],
            vec![500, 500, 1],
            vec![50, 50, 0],
        ),
        (
            vec![1.0 / 3.0; 3],
            vec![333_334, 333_333, 333_333],
            vec![333, 333, 333],
            vec![34, 33, 33],
        ),
        (
            vec![5.0 / 12.0, 4.0 / 12.0, 3.0 / 12.0],
            vec![416_667, 333_333, 250_000],
            vec![417, 333, 250],
            vec![42, 33, 25],
        ),
        (
            vec![1.0, 0.0, 0.0],
            vec![1_000_000, 0, 0],
            vec![1000, 1, 1],
            vec![100, 0, 0],
        ),
        (
            vec![f64::NAN, -1.0, 0.0],
            vec![333_334, 333_333, 333_333],
            vec![1, 1, 1],
            vec![34, 33, 33],
        ),
    ];
    for (shares, http, envoy, pct) in cases {
        assert_eq!(http_route_weights(&shares), http, "{shares:?}");
        assert_eq!(envoy_zone_weights(&shares), envoy, "{shares:?}");
        assert_eq!(percentages(&shares), pct, "{shares:?}");
    }
    assert!(apportion(&[], 100).is_empty());

    let zones = vec![
        zone(A, 4, 10, 1.0),
        zone(B, 4, 10, 1.0),
        full(zone(C, 5, 10, 12.0), UNSCHEDULABLE_3M),
    ];
    let w = first(&zones, &order(&[A, B, C])).weights;
    assert_eq!(
        istio_distribute(&w),
        vec![
            vec![(0, 100)],
            vec![(1, 100)],
            vec![(0, 33), (1, 25), (2, 42)],
        ]
    );
}

fn arb_zone(i: usize) -> impl Strategy<Value = ZoneInput> {
    (0u32..5, 0u32..5, 0u32..6, 0u8..3, 0.0f64..20.0, 1u32..4).prop_map(
        move |(ready, starting, extra, why, demand, cap)| ZoneInput {
            name: format!("zone-{i}"),
            ready,
            starting,
            max_replicas: (ready + extra).max(1),
            full: match why {
                0 => None,
                1 => Some(Full::AtMax),
                _ => Some(Full::Unschedulable { for_secs: 200.0 }),
            },
            capacity_per_replica: f64::from(cap),
            demand: Some(demand),
        },
    )
}

fn arb_zones() -> impl Strategy<Value = Vec<ZoneInput>> {
    (1usize..5).prop_flat_map(|n| (0..n).map(arb_zone).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn invariants(zones in arb_zones(), rotate in 0usize..4) {
        let mut seq: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
        let len = seq.len();
        seq.rotate_left(rotate % len);
        let w = first(&zones, &seq).weights;
        let any_ready = zones.iter().any(|z| z.ready > 0);
        for (i, row) in w.flows.iter().enumerate() {
            prop_assert!(close(row.iter().sum(), 1.0), "row {i}: {row:?}");
            prop_assert!(row.iter().all(|v| *v >= 0.0));
            let z = &zones[i];
            if let (1.., Some(d)) = (z.ready, z.demand) {
                let own = d.min(z.ready_capacity());
                prop_assert!(row[i] * d >= own - 1e-9, "a zone keeps what it serves: {w:?}");
                if z.full.is_none() && d <= z.ready_capacity() {
                    prop_assert!(close(row[i], 1.0), "locality: {i} {w:?}");
                }
            }
            for (j, v) in row.iter().enumerate() {
                if any_ready && zones[j].ready == 0 {
                    prop_assert!(*v == 0.0, "traffic to {j} with no Ready replica: {w:?}");
                }
            }
        }
        prop_assert!(close(w.shares.iter().sum(), 1.0));
        let demand = routed_demand(&w, &zones);
        let served: f64 = demand.iter().map(|d| d.served).sum();
        let total: f64 = zones.iter().filter_map(|z| z.demand).sum();
        prop_assert!((served - total).abs() < 1e-6);
        let spilled_in: f64 = demand.iter().map(|d| d.spilled_in).sum();
        let spilled_out: f64 = demand.iter().map(|d| d.spilled_out).sum();
        prop_assert!((spilled_in - spilled_out).abs() < 1e-6);
        for (z, d) in zones.iter().zip(&demand) {
            if z.full.is_none() {
                prop_assert!(d.spilled_out == 0.0, "only full zones spill: {demand:?}");
            }
        }
        // What short zones send never takes more than the Ready headroom at target.
        for (j, to) in zones.iter().enumerate() {
            let from_short: f64 = zones
                .iter()
                .enumerate()
                .filter(|(i, z)| {
                    *i != j
                        && z.ready > 0
                        && z.full.is_none()
                        && z.demand.is_some_and(|d| d > z.ready_capacity())
                })
                .map(|(i, z)| z.demand.unwrap_or(0.0) * w.flows[i][j])
                .sum();
            let own = to.demand.unwrap_or(0.0).min(to.ready_capacity());
            prop_assert!(
                from_short <= (to.ready_capacity() - own).max(0.0) + 1e-6,
                "short zones onto {j} beyond its Ready room: {w:?}"
            );
        }
        for row in istio_distribute(&w) {
            prop_assert_eq!(row.iter().map(|(_, w)| w).sum::<u32>(), 100);
            prop_assert!(row.iter().all(|(_, w)| (1..=100).contains(w)));
        }
        prop_assert_eq!(http_route_weights(&w.shares).iter().sum::<u32>(), 1_000_000);
        prop_assert!(envoy_zone_weights(&w.shares).iter().all(|w| *w >= 1));
    }

    #[test]
    fn every_step_is_bounded(
        before in arb_zones(),
        after_demand in proptest::collection::vec(0.0f64..20.0, 4),
    ) {
        let policy = Policy::default();
        let last = written(first(&before, &[]).weights, 0.0);
        let now: Vec<ZoneInput> = before
            .iter()
            .zip(&after_demand)
            .map(|(z, d)| ZoneInput { demand: Some(*d), ..z.clone() })
            .collect();
        let d = decide(&now, &[], Some(&last), 60.0, &policy);
        // Readiness does not change here, so nothing is evacuated past the bound.
        prop_assert!(d.weights.distance(&last.weights) <= policy.max_step + 1e-9);
        if !d.changed {
            prop_assert_eq!(d.weights, last.weights);
        }
    }
}

#[test]
fn weights_from_status_shares_keep_served_zones_local() {
    let zones = order(&["a", "b", "c"]);
    let w = Weights::from_shares(&zones, &[0.6, 0.4, 0.0]);
    assert_eq!(w.flows[0], vec![1.0, 0.0, 0.0]);
    assert_eq!(w.flows[1], vec![0.0, 1.0, 0.0]);
    assert_eq!(
        w.flows[2],
        vec![0.6, 0.4, 0.0],
        "a zone serving nothing sends by shares"
    );
    assert_eq!(w.shares, vec![0.6, 0.4, 0.0]);
    assert_eq!(
        Weights::from_shares(&zones, &[0.0; 3]),
        Weights::local(&zones)
    );
    assert_eq!(Weights::from_shares(&zones, &[1.0]), Weights::local(&zones));
}
