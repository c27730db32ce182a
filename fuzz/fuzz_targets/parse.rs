//! The exposition parser: the skipping path (only selected names parsed) against the full one,
//! on the families the built-in profiles select; then every profile's extractor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redbridge::extract::{Extractor, Scratch};
use redbridge::model::Source;
use redbridge::parse::{parse, parse_all, OwnedSample};

/// Families several profiles read; the skipping path must agree with the full one on them.
const SELECTED: [&[u8]; 6] = [
    b"envoy_cluster_upstream_rq_total",
    b"envoy_cluster_upstream_rq_time_bucket",
    b"envoy_cluster_upstream_rq_active",
    b"vllm:num_requests_waiting",
    b"vllm:time_to_first_token_seconds_bucket",
    b"x",
];

type Key = (String, Vec<(String, String)>, u64, Option<i64>);

fn key(s: &OwnedSample) -> Key {
    (s.name.clone(), s.labels.clone(), s.value.to_bits(), s.timestamp_ms)
}

fuzz_target!(|data: &[u8]| {
    let full = parse_all(data);
    let mut skipped = Vec::new();
    let selective = parse(
        data,
        |name| SELECTED.contains(&name).then_some(()),
        |(), s| skipped.push(key(&OwnedSample::from(s))),
    );
    match (&full, &selective) {
        // Skipping validates less, never more: a body the full parse accepts, it accepts.
        (Ok(all), Ok(_)) => {
            let want: Vec<_> = all
                .iter()
                .filter(|s| SELECTED.contains(&s.name.as_bytes()))
                .map(key)
                .collect();
            assert_eq!(want, skipped, "the skipping path read the selected families differently");
        }
        (Ok(_), Err(e)) => panic!("the full parse accepted what the skipping path refused: {e}"),
        (Err(_), _) => {}
    }
    for name in redbridge::profiles::names() {
        let Some(profile) = redbridge::profiles::builtin(name) else {
            continue;
        };
        let source = Source {
            name: "s".into(),
            profile: std::sync::Arc::new(profile),
            matchers: vec![],
            targets: vec![],
            prometheus: None,
        };
        let _ = Extractor::new(&source).extract(data, &mut Scratch::default());
    }
});
