//! The exposition parser: the skipping path (only selected names parsed) against the full one,
//! on every family a built-in profile reads; then every profile's extractor on the same body.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use redbridge::extract::{Extractor, Scratch};
use redbridge::model::{Profile, Source};
use redbridge::parse::{parse, parse_all, OwnedSample};

struct Setup {
    /// Every series name a built-in profile reads (histograms with their three suffixes), and a
    /// one-letter name so short lines are selected too.
    selected: HashSet<Vec<u8>>,
    extractors: Vec<Extractor>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let profiles: Vec<Profile> = redbridge::profiles::names()
            .filter_map(redbridge::profiles::builtin)
            .collect();
        let mut selected: HashSet<Vec<u8>> = HashSet::from([b"x".to_vec()]);
        for input in profiles.iter().flat_map(|p| &p.inputs) {
            for name in input.terms.iter().flat_map(|t| &t.names) {
                for suffix in ["", "_bucket", "_sum", "_count"] {
                    selected.insert(format!("{name}{suffix}").into_bytes());
                }
            }
        }
        let extractors = profiles
            .into_iter()
            .map(|profile| {
                Extractor::new(&Source {
                    name: "s".into(),
                    profile: Arc::new(profile),
                    matchers: vec![],
                    targets: vec![],
                    prometheus: None,
                })
            })
            .collect();
        Setup {
            selected,
            extractors,
        }
    })
}

/// A sample's identity, with the value's bits: the two paths must read the very same number.
type Key = (String, Vec<(String, String)>, u64, Option<i64>);

fn key(s: &OwnedSample) -> Key {
    (
        s.name.clone(),
        s.labels.clone(),
        s.value.to_bits(),
        s.timestamp_ms,
    )
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let full = parse_all(data);
    let mut skipped = Vec::new();
    let selective = parse(
        data,
        |name| setup.selected.contains(name).then_some(()),
        |(), s| skipped.push(key(&OwnedSample::from(s))),
    );
    match (&full, &selective) {
        // Both accept: the selected families read the same, sample for sample.
        (Ok(all), Ok(stats)) => {
            let want: Vec<Key> = all
                .iter()
                .filter(|s| setup.selected.contains(s.name.as_bytes()))
                .map(key)
                .collect();
            assert_eq!(
                want, skipped,
                "the skipping path read the selected families differently"
            );
            assert_eq!(stats.selected, want.len());
        }
        // Skipping validates less, never more: a body the full parse accepts, it accepts.
        (Ok(_), Err(e)) => panic!("the full parse accepted what the skipping path refused: {e}"),
        // A selected line the skipping path refuses, the full parse refuses there or earlier.
        (Err(f), Err(s)) => assert!(
            f.line() <= s.line(),
            "full parse failed at line {} but the skipping path at line {}",
            f.line(),
            s.line()
        ),
        (Err(_), Ok(_)) => {}
    }
    for extractor in &setup.extractors {
        let _ = extractor.extract(data, &mut Scratch::default());
    }
});
