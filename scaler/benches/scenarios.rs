//! `cargo bench --bench scenarios`: every path of the control-quality benchmark on the scenario
//! library, in simulated time (deterministic: the same figures on every machine). Prints a table
//! per scenario and the goals, and writes them all to `target/scenarios.json`.
//!
//! `SCENARIOS=flash-crowd,zone-stockout` runs only those library scenarios. `cargo bench --bench
//! scenarios -- noise` prints instead the noise of `requests_per_second` over 2 s, 10 s and 30 s
//! windows and fast up (`upWindow: 2s`) at 0.5, 1, 5 and 20 requests/s (Poisson, one hour of
//! simulated time per rate). Without `--bench` (as
//! under `cargo test --all-targets`) it prints one line and exits: the test suite's `bench` module
//! runs the short sanity check instead.

use std::path::PathBuf;

use redbridge::demo::bench::{self, BenchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scenarios: skipped; run `cargo bench --bench scenarios`");
        return Ok(());
    }
    if std::env::args().any(|a| a == "noise") {
        let noise = bench::rate_noise(&[0.5, 1.0, 5.0, 20.0], 3600.0, 1);
        print!("{}", bench::noise_table(&noise));
        return Ok(());
    }
    let mut scenarios = bench::library()?;
    if let Ok(only) = std::env::var("SCENARIOS") {
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        scenarios.retain(|(name, _)| names.contains(&name.as_str()));
    }
    let json = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/scenarios.json");
    bench::run_and_report(
        &scenarios,
        &BenchOptions::default(),
        Some(&json),
        &mut std::io::stdout(),
    )?;
    println!("figures written to {}", json.display());
    Ok(())
}
