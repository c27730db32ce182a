//! `State::resolve`: every refusal names what the user must fix, with the code KEDA will see.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Pool `llama` in namespace `ml`: an Envoy gateway scraped in zone-a and zone-b (3 s window,
/// 500 ms interval), and an Envoy source read through a Prometheus-compatible server.
const POOLS: &str = r#"
pools:
  - name: llama
    namespace: ml
    window: 3s
    interval: 500ms
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://127.0.0.1:1/stats/prometheus", zone: zone-a }
          - { url: "http://127.0.0.1:2/stats/prometheus", zone: zone-b }
      - name: prom
        profile: envoy
        prometheus:
          url: "http://127.0.0.1:3"
          zoneLabel: zone
          zones: [zone-a, zone-b]
          rateWindow: 10s
          interval: 1s
"#;

fn state() -> State {
    let config = Config::from_yaml(POOLS, "test.yaml").expect("valid test config");
    State::new(&config, Clock::default())
}

fn query(pairs: &[(&str, &str)]) -> TriggerQuery {
    let meta: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TriggerQuery::from_metadata(&meta).expect("well-formed trigger metadata")
}

/// `resolve` for a requests_per_second trigger on `llama` plus `extra` keys, in `namespace`.
fn resolve(namespace: &str, extra: &[(&str, &str)]) -> Result<Resolved, QueryError> {
    let mut pairs = vec![
        ("pool", "llama"),
        ("signal", "requests_per_second"),
        ("target", "10"),
    ];
    pairs.extend_from_slice(extra);
    state().resolve(namespace, query(&pairs))
}

fn refusal(namespace: &str, extra: &[(&str, &str)]) -> QueryError {
    match resolve(namespace, extra) {
        Ok(r) => panic!("{extra:?} resolved to source {}", r.source_index),
        Err(e) => e,
    }
}

#[test]
fn a_well_formed_trigger_binds_the_first_source_that_provides_it_with_the_pools_window() {
    let r = resolve("ml", &[("zone", "zone-b")]).expect("resolves");
    assert_eq!(r.source_index, 0);
    assert_eq!(r.pool.pool.name, "llama");
    assert_eq!(r.rules.window, 3.0);
    let r = resolve("ml", &[("window", "1s")]).expect("a shorter window resolves");
    assert_eq!(r.rules.window, 1.0);
    let r = resolve("ml", &[("source", "prom")]).expect("a named source resolves");
    assert_eq!(r.source_index, 1);
}

#[test]
fn an_unknown_pool_is_not_found_and_lists_the_pools() {
    let mut pairs = vec![("pool", "mistral"), ("signal", "requests_per_second")];
    pairs.push(("target", "10"));
    let err = state().resolve("ml", query(&pairs)).unwrap_err();
    let QueryError::NotFound(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("no pool \"mistral\""), "{msg}");
    assert!(msg.contains("llama"), "{msg}");
}

#[test]
fn a_pool_of_another_namespace_is_not_found() {
    let err = refusal("other", &[]);
    let QueryError::NotFound(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("no pool \"llama\" for namespace \"other\""),
        "{msg}"
    );
}

#[test]
fn an_unknown_zone_is_not_found_and_lists_the_zones() {
    let err = refusal("ml", &[("zone", "zone-z")]);
    assert_eq!(
        err,
        QueryError::NotFound("pool \"llama\" has no zone \"zone-z\"; zones: zone-a, zone-b".into())
    );
}

#[test]
fn an_unknown_source_is_invalid_and_lists_the_sources() {
    let err = refusal("ml", &[("source", "model-server")]);
    let QueryError::Invalid(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with("metadata key `source`"), "{msg}");
    assert!(msg.contains("no source \"model-server\""), "{msg}");
    assert!(msg.contains("sources: gateway, prom"), "{msg}");
}

#[test]
fn a_signal_the_named_source_does_not_provide_is_invalid() {
    let pairs = [
        ("pool", "llama"),
        ("signal", "kv_cache_utilization"),
        ("target", "0.8"),
        ("source", "gateway"),
    ];
    let err = state().resolve("ml", query(&pairs)).unwrap_err();
    let QueryError::Invalid(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with("metadata key `signal`"), "{msg}");
    assert!(
        msg.contains("source \"gateway\" (profile envoy) does not provide kv_cache_utilization"),
        "{msg}"
    );
    // Without a source, no source of the pool provides it: the answer lists what it has.
    let err = state().resolve("ml", query(&pairs[..3])).unwrap_err();
    let QueryError::Invalid(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("no source of pool \"llama\" provides kv_cache_utilization"),
        "{msg}"
    );
    assert!(msg.contains("requests_per_second"), "{msg}");
}

#[test]
fn a_window_longer_than_the_pools_is_invalid() {
    let err = refusal("ml", &[("window", "4s")]);
    assert_eq!(
        err,
        QueryError::Invalid(
            "metadata key `window`: 4s is longer than pool \"llama\"'s window of 3s".into()
        )
    );
    // The pool's own window is the longest allowed.
    assert!(resolve("ml", &[("window", "3s")]).is_ok());
}

#[test]
fn a_window_shorter_than_two_intervals_is_invalid() {
    let err = refusal("ml", &[("window", "900ms")]);
    assert_eq!(
        err,
        QueryError::Invalid(
            "metadata key `window`: 0.9s holds fewer than two scrapes at pool \"llama\"'s interval"
                .into()
        )
    );
    // Exactly two intervals is enough.
    let r = resolve("ml", &[("window", "1s")]).expect("two intervals resolve");
    assert_eq!(
        Duration::from_secs_f64(r.rules.window),
        Duration::from_secs(1)
    );
}

#[test]
fn a_window_on_a_prometheus_source_is_invalid() {
    let err = refusal("ml", &[("source", "prom"), ("window", "2s")]);
    let QueryError::Invalid(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with("metadata key `window`"), "{msg}");
    assert!(msg.contains("prometheus.rateWindow"), "{msg}");
}

#[test]
fn an_up_window_must_be_shorter_than_the_window_hold_two_scrapes_and_be_scraped() {
    let r = resolve("ml", &[("upWindow", "1s")]).expect("resolves");
    assert_eq!(r.query.up_window, Some(Duration::from_secs(1)));
    for (extra, want) in [
        (
            &[("upWindow", "3s")][..],
            "must be shorter than the trigger's window of 3s",
        ),
        (&[("upWindow", "800ms")][..], "hold two scrapes"),
        (
            &[("upWindow", "1s"), ("source", "prom")][..],
            "it has one rate window",
        ),
    ] {
        let e = refusal("ml", extra);
        assert!(
            matches!(&e, QueryError::Invalid(m) if m.contains(want)),
            "{extra:?}: {e}"
        );
    }
}
