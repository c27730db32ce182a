//! A Prometheus-compatible server's `/api/v1/query` answer: decoded, folded into zones as a poll
//! does for every query a built-in profile plans, then every signal evaluated on the result.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redbridge::model::{Config, Profile, PromSource, Signal};
use redbridge::signals::{evaluate, Inputs, PolledView};
use redbridge::source::prometheus::plan::{plan, PlannedQuery};
use redbridge::source::prometheus::query::{fold, parse_response};
use redbridge::window::polled::ZoneInputs;

/// Every built-in profile read through a Prometheus-compatible source with zones `a` and `b`.
const CONFIG: &str = r#"
pools:
  - name: p
    sources:
      - { name: envoy, profile: envoy, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
      - { name: vllm, profile: vllm, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
      - { name: sglang, profile: sglang, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
      - { name: tgi, profile: tgi, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
      - { name: triton, profile: triton, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
      - { name: epp, profile: epp, prometheus: { url: "http://127.0.0.1:1", zoneLabel: zone, zones: [a, b] } }
"#;

struct Polled {
    profile: Profile,
    prom: PromSource,
    queries: Vec<PlannedQuery>,
}

fn setup() -> &'static [Polled] {
    static SETUP: OnceLock<Vec<Polled>> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config =
            Config::from_yaml(CONFIG, "fuzz.yaml").expect("the fuzz configuration is valid");
        config.pools[0]
            .sources
            .iter()
            .map(|s| {
                let prom = s
                    .prometheus
                    .as_deref()
                    .expect("a prometheus source")
                    .clone();
                Polled {
                    profile: (*s.profile).clone(),
                    queries: plan(s, &prom),
                    prom,
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(samples) = parse_response(data) else {
        return;
    };
    for source in setup() {
        let mut zones: BTreeMap<String, ZoneInputs> = source
            .prom
            .zones
            .iter()
            .map(|z| (z.clone(), ZoneInputs::default()))
            .collect();
        // The same answer for every query: each reads it for its own role and part.
        for q in &source.queries {
            let scale = source
                .profile
                .input(q.role)
                .map_or(1.0, |(_, input)| input.scale);
            fold(&mut zones, q, &source.prom.zone_label, scale, &samples);
        }
        let view = PolledView {
            now: 100.0,
            stale_after: 30.0,
            last_success: Some(99.0),
            last_error: None,
        };
        let all: Vec<&ZoneInputs> = zones.values().collect();
        let each: Vec<Vec<&ZoneInputs>> = all.iter().map(|z| vec![*z]).collect();
        for zones in std::iter::once(&all).chain(&each) {
            let inputs = Inputs::Polled { view, zones };
            for signal in Signal::exported() {
                if let Ok(v) = evaluate(&source.profile, signal, None, &inputs) {
                    // What KEDA acts on is a finite number: anything else is no value.
                    assert!(v.is_finite(), "{signal:?} answered {v} from {samples:?}");
                }
            }
        }
    }
});
