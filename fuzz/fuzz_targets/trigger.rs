//! Trigger metadata as KEDA sends it: `key=value` lines to a map, then to a query.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use redbridge::config::trigger::TriggerQuery;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let meta: HashMap<String, String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    if let Ok(q) = TriggerQuery::from_metadata(&meta) {
        // Whatever is accepted names a pool.
        assert!(!q.pool.trim().is_empty());
    }
});
