//! The control-quality benchmark as CI runs it: a short script through every path, checking only
//! that it completes, that it is deterministic, and that no path beats the reactive limit (a
//! sanity check of the benchmark itself, not of timing).

use redbridge::demo::bench::{beating_the_limit, run_scenario, BenchOptions, PathKind};
use redbridge::demo::scenario::Scenario;

const SHORT: &str = r#"
zones: [zone-a, zone-b, zone-c]
replica: { model_load: 90s, initial: 1 }
gpu_capacity: { zone-a: 6, zone-b: 6, zone-c: 1 }
error_rate: 0
phases:
  - { name: steady, duration: 3m, rates: { zone-a: 3, zone-b: 2, zone-c: 2 } }
  - { name: spike, duration: 6m, rates: { zone-a: 3, zone-b: 10, zone-c: 8 } }
  - { name: after, duration: 3m, rates: { zone-a: 3, zone-b: 2, zone-c: 2 } }
"#;

#[test]
fn short_scenario_completes_and_the_reactive_limit_is_not_beaten() {
    let scenario = Scenario::from_yaml(SHORT).expect("script");
    let opts = BenchOptions {
        dt: 0.5,
        ..BenchOptions::default()
    };
    let result = run_scenario("short", &scenario, &opts).expect("benchmark runs");
    assert_eq!(result.paths.len(), PathKind::ALL.len());
    let limit = result.path(PathKind::Reactive).expect("the limit ran");
    let limit_share = limit.total.within_objective.expect("requests arrived");
    for p in &result.paths {
        assert!(p.total.arrivals > 4000, "{}: {:?}", p.name, p.total);
    }
    let beating: Vec<String> = beating_the_limit(&result)
        .iter()
        .map(|p| format!("{} ({:?})", p.name, p.total.within_objective))
        .collect();
    assert!(
        beating.is_empty(),
        "beat the reactive limit's {limit_share:.3}: {beating:?}"
    );
    let again = run_scenario("short", &scenario, &opts).expect("benchmark runs");
    for (a, b) in result.paths.iter().zip(&again.paths) {
        assert_eq!(a.total, b.total, "{} is deterministic", a.name);
    }
}
