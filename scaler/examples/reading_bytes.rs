//! What one scraped body costs once kept in a window, by `size_of` and slice lengths:
//! `cargo run --release --example reading_bytes -- PROFILE FILE` (FILE: a body, e.g. fetched
//! from `redbridge fleet`). See BENCHMARKS.md, "Memory per target".
use std::mem::size_of;

use redbridge::extract::{Extractor, Reading, Scratch, ValueRef};
use std::sync::Arc;
use std::time::Duration;

use redbridge::model::{Clock, Source};
use redbridge::source::scrape::{ScrapeSettings, Scraper, TargetJob};
use redbridge::window::{Scrape, TargetKey, TargetState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(profile), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: reading_bytes PROFILE FILE".into());
    };
    let source = Source {
        name: "s".into(),
        profile: Arc::new(redbridge::profiles::builtin(&profile).ok_or("no such profile")?),
        matchers: vec![],
        targets: vec![],
        prometheus: None,
    };
    let body = std::fs::read(&file)?;
    let ex = Extractor::new(&source);
    let (r, _) = ex.extract(&body, &mut Scratch::default())?;
    let (mut hists, mut buckets) = (0, 0);
    for v in r.iter() {
        if let ValueRef::Histogram(h) = v {
            hists += 1;
            buckets += h.counts().len();
        }
    }
    println!(
        "{profile}: {} bytes body, {} inputs, {hists} histograms, {buckets} buckets",
        body.len(),
        r.len()
    );
    println!(
        "reading: {} bytes of numbers (Arc header included); Scrape {} bytes (Reading {})",
        r.heap_bytes(),
        size_of::<Scrape>(),
        size_of::<Reading>()
    );
    println!(
        "shape: {} bytes, shared by the source's readings",
        r.shape().heap_bytes()
    );
    println!(
        "TargetState {} bytes, TargetKey {} bytes",
        size_of::<TargetState>(),
        size_of::<TargetKey>()
    );
    // The scrape task's future, as spawned (never polled here).
    let scraper = Arc::new(Scraper::new(&ScrapeSettings::default())?);
    let job = TargetJob {
        target: Arc::new(TargetState::new(
            TargetKey {
                namespace: String::new(),
                pool: "p".into(),
                source: "s".into(),
                zone: "z".into(),
                url: "http://127.0.0.1:1/metrics".into(),
            },
            0,
        )),
        extractor: Arc::new(ex),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        retention: Duration::from_secs(30),
    };
    let task = scraper.run(job, Clock::default(), Default::default());
    println!("scrape task future {} bytes", std::mem::size_of_val(&task));
    Ok(())
}
