//! The configuration file: any text is a configuration or an error, never a panic. An accepted
//! file is then served as `serve` would: the state built, readiness asked, every target's scrape
//! schedule set up, and every exported signal of every pool resolved and evaluated, which with
//! nothing scraped yet must be unavailable, never a value.
#![no_main]

use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use redbridge::model::{Clock, Config};
use redbridge::source::scrape::until_phase;
use redbridge::state::State;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_yaml(text, "fuzz.yaml") else {
        return;
    };
    for pool in &config.pools {
        assert!(
            pool.interval.saturating_mul(2) <= pool.window,
            "an accepted pool holds two scrapes per window"
        );
        assert!(!pool.sources.is_empty(), "an accepted pool has a source");
        let _ = pool.zones();
    }
    let state = State::new(&config, Clock::default());
    state.mark_serving();
    let _ = state.readiness();
    let now = Instant::now();
    for pool in state.pools() {
        for target in &pool.targets {
            let interval = pool.interval_of(target);
            // The scrape loop schedules the next scrape one interval (and a phase) ahead.
            let wait = until_phase(&target.key.url, interval, SystemTime::now());
            assert!(
                now.checked_add(interval)
                    .and_then(|t| t.checked_add(wait))
                    .is_some(),
                "an accepted interval of {interval:?} cannot be scheduled"
            );
        }
        for zone in std::iter::once(None).chain(pool.pool.zones().into_iter().map(Some)) {
            for resolved in state.exported_signals(&pool, zone) {
                if let Ok(v) = state.evaluate(&resolved) {
                    panic!("{:?} answered {v} before any scrape", resolved.query);
                }
            }
        }
    }
});
