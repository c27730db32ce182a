//! Scrape-body parsing: redbridge's name-filtered and full parse against prometheus-parse, on
//! a ~1 MB Envoy body built from a real capture, plus every fixture parsed in full.
//!
//! Run: `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 3`. After the
//! criterion groups a short summary prints ns/sample and ns/line for the Envoy body.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use redbridge::extract::{Extractor, Scratch};
use redbridge::model::{Matcher, Source};
use redbridge::parse::{parse, parse_all};
use redbridge::profiles;

const ENVOY_CAPTURE: &str = "envoy-1.40-real-capture.prom";
const TARGET_BYTES: usize = 1 << 20;

/// The `envoy_cluster_upstream_rq*` families an Envoy-backed scaler reads; everything else in the
/// body is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Total,
    Xx,
    TimeBucket,
    TimeSum,
    TimeCount,
    Active,
    PendingActive,
}

fn select_match(name: &[u8]) -> Option<Family> {
    Some(match name {
        b"envoy_cluster_upstream_rq_total" => Family::Total,
        b"envoy_cluster_upstream_rq_xx" => Family::Xx,
        b"envoy_cluster_upstream_rq_time_bucket" => Family::TimeBucket,
        b"envoy_cluster_upstream_rq_time_sum" => Family::TimeSum,
        b"envoy_cluster_upstream_rq_time_count" => Family::TimeCount,
        b"envoy_cluster_upstream_rq_active" => Family::Active,
        b"envoy_cluster_upstream_rq_pending_active" => Family::PendingActive,
        _ => return None,
    })
}

fn family_map() -> HashMap<&'static [u8], Family> {
    [
        (&b"envoy_cluster_upstream_rq_total"[..], Family::Total),
        (b"envoy_cluster_upstream_rq_xx", Family::Xx),
        (b"envoy_cluster_upstream_rq_time_bucket", Family::TimeBucket),
        (b"envoy_cluster_upstream_rq_time_sum", Family::TimeSum),
        (b"envoy_cluster_upstream_rq_time_count", Family::TimeCount),
        (b"envoy_cluster_upstream_rq_active", Family::Active),
        (
            b"envoy_cluster_upstream_rq_pending_active",
            Family::PendingActive,
        ),
    ]
    .into_iter()
    .collect()
}

fn read_fixture(name: &str) -> String {
    redbridge_fixtures::read(format!("exposition/{name}"))
}

/// Repeats the capture until ~1 MB, giving each copy its own cluster name so the series are
/// distinct, as on an Envoy with many clusters.
fn envoy_body() -> String {
    let capture = read_fixture(ENVOY_CAPTURE);
    assert!(
        capture.contains("envoy_cluster_name=\"backend\""),
        "capture changed shape"
    );
    let mut body = String::with_capacity(TARGET_BYTES + capture.len());
    let mut copy = 0;
    while body.len() < TARGET_BYTES {
        let cluster = format!("envoy_cluster_name=\"backend-{copy:03}.zone-{}\"", copy % 3);
        body.push_str(&capture.replace("envoy_cluster_name=\"backend\"", &cluster));
        copy += 1;
    }
    body
}

/// What a real sink does with a selected sample: a label lookup and the value.
fn consume(acc: &mut f64, family: Family, s: redbridge::parse::Sample<'_>) {
    let cluster = s.labels.get(b"envoy_cluster_name");
    if family == Family::Xx || cluster.is_some_and(|c| c.eq_str("backend-000.zone-0")) {
        *acc += 1.0;
    }
    *acc += s.value;
}

fn redbridge_filtered(body: &[u8]) -> f64 {
    let mut acc = 0.0;
    parse(body, select_match, |f, s| consume(&mut acc, f, s)).expect("envoy body parses");
    acc
}

fn redbridge_filtered_hashmap(body: &[u8], map: &HashMap<&'static [u8], Family>) -> f64 {
    let mut acc = 0.0;
    parse(
        body,
        |n| map.get(n).copied(),
        |f, s| consume(&mut acc, f, s),
    )
    .expect("envoy body parses");
    acc
}

fn redbridge_all(body: &[u8]) -> f64 {
    let mut acc = 0.0;
    parse(
        body,
        |_| Some(()),
        |(), s| {
            acc += s.value + s.labels.iter().count() as f64;
        },
    )
    .expect("body parses");
    acc
}

/// The production path: parse plus the envoy profile's extraction for one route cluster.
fn redbridge_extract(body: &[u8], extractor: &Extractor, scratch: &mut Scratch) -> usize {
    let (reading, _) = extractor.extract(body, scratch).expect("extracts");
    reading.len()
}

fn envoy_extractor() -> Extractor {
    // One route cluster out of the many a shared gateway serves.
    let matcher =
        Matcher::parse(r#"envoy_cluster_name="backend-000.zone-0""#).expect("valid matcher");
    Extractor::new(&Source {
        name: "gateway".into(),
        profile: Arc::new(profiles::builtin("envoy").expect("builtin")),
        matchers: vec![matcher],
        targets: vec![],
        prometheus: None,
    })
}

fn prometheus_parse(body: &str) -> usize {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse");
    scrape.samples.len()
}

fn bench_envoy(c: &mut Criterion) {
    let body = envoy_body();
    let bytes = body.as_bytes();
    let map = family_map();
    let mut g = c.benchmark_group("envoy_1mb");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("redbridge_filtered_match", |b| {
        b.iter(|| redbridge_filtered(black_box(bytes)))
    });
    g.bench_function("redbridge_filtered_hashmap", |b| {
        b.iter(|| redbridge_filtered_hashmap(black_box(bytes), &map))
    });
    let extractor = envoy_extractor();
    let mut scratch = Scratch::default();
    g.bench_function("redbridge_extract_envoy_profile", |b| {
        b.iter(|| redbridge_extract(black_box(bytes), &extractor, &mut scratch))
    });
    g.bench_function("redbridge_all", |b| {
        b.iter(|| redbridge_all(black_box(bytes)))
    });
    g.bench_function("prometheus_parse", |b| {
        b.iter(|| prometheus_parse(black_box(&body)))
    });
    g.finish();
}

fn bench_fixtures(c: &mut Criterion) {
    let dir = redbridge_fixtures::path("exposition");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prom"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    let mut g = c.benchmark_group("fixture_all");
    for name in names {
        let body = read_fixture(&name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(&name),
            body.as_bytes(),
            |b, body| b.iter(|| redbridge_all(black_box(body))),
        );
    }
    g.finish();
}

/// Mean wall time of `f` over repeated runs for about `budget`.
fn time_per_run(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < budget {
        f();
        runs += 1;
    }
    start.elapsed() / runs.max(1)
}

/// ns/sample and ns/line for the Envoy body, which criterion's per-byte throughput hides.
fn summary() {
    let body = envoy_body();
    let bytes = body.as_bytes();
    let samples = parse_all(bytes).expect("parses").len();
    let lines = body.lines().count();
    let mut selected = 0;
    parse(bytes, select_match, |_, _| selected += 1).expect("parses");
    let budget = Duration::from_millis(1500);
    let report = |what: &str, t: Duration, per: usize, unit: &str| {
        let ns = t.as_nanos() as f64;
        eprintln!(
            "  {what:<28} {:>8.1} µs/body  {:>7.1} MB/s  {:>6.2} ns/{unit}",
            ns / 1e3,
            bytes.len() as f64 / ns * 1e3,
            ns / per as f64
        );
    };
    eprintln!(
        "\nsummary: Envoy body {} bytes, {lines} lines, {samples} samples, {selected} selected by the filter",
        bytes.len()
    );
    let t = time_per_run(budget, || {
        black_box(redbridge_filtered(black_box(bytes)));
    });
    report("redbridge filtered (match)", t, lines, "line");
    let extractor = envoy_extractor();
    let mut scratch = Scratch::default();
    let t = time_per_run(budget, || {
        black_box(redbridge_extract(
            black_box(bytes),
            &extractor,
            &mut scratch,
        ));
    });
    report("redbridge envoy profile", t, lines, "line");
    let t = time_per_run(budget, || {
        black_box(redbridge_all(black_box(bytes)));
    });
    report("redbridge all samples", t, samples, "sample");
    let t = time_per_run(budget, || {
        black_box(prometheus_parse(black_box(&body)));
    });
    report("prometheus-parse", t, samples, "sample");
}

criterion::criterion_group!(benches, bench_envoy, bench_fixtures);

fn main() {
    benches();
    // `cargo test --benches` runs this binary without `--bench`; keep that run short.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
