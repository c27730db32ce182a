//! Trigger metadata as KEDA sends it (`key=value` lines to a map), to a query, then bound to a
//! served pool and evaluated: with nothing scraped yet, whatever resolves is unavailable.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redbridge::config::trigger::TriggerQuery;
use redbridge::model::{Clock, Config};
use redbridge::state::State;

/// A scraped pool and one read through a Prometheus-compatible server, in namespace `ml`.
const CONFIG: &str = r#"
pools:
  - name: llama
    namespace: ml
    window: 30s
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://127.0.0.1:1/stats/prometheus", zone: zone-a }
          - { url: "http://127.0.0.1:2/stats/prometheus", zone: zone-b, interval: 2s }
      - name: vllm
        profile: vllm
        targets: [{ url: "http://127.0.0.1:3/metrics", zone: zone-a }]
  - name: mistral
    sources:
      - name: thanos
        profile: vllm
        prometheus: { url: "http://127.0.0.1:4", zoneLabel: zone, zones: [zone-a, zone-c] }
"#;

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let config =
            Config::from_yaml(CONFIG, "fuzz.yaml").expect("the fuzz configuration is valid");
        State::new(&config, Clock::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let meta: HashMap<String, String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let Ok(query) = TriggerQuery::from_metadata(&meta) else {
        return;
    };
    assert!(
        !query.pool.trim().is_empty(),
        "an accepted trigger names a pool"
    );
    assert!(query.target.is_finite() && query.target > 0.0);
    let _ = query.metric_name();
    for namespace in ["ml", "other"] {
        let Ok(resolved) = state().resolve(namespace, query.clone()) else {
            continue;
        };
        if let Ok(v) = state().evaluate(&resolved) {
            panic!("{query:?} answered {v} before any scrape");
        }
    }
});
