//! `redbridge serve` against targets that attack the scraper rather than fail: a body dripping
//! one byte a second, a body that never ends, a gzip bomb, a million series, a 10 MB line,
//! invalid UTF-8, NaN and infinities, counters that go down on every scrape, two pods behind one
//! URL, duplicate series, a target that flaps, HTML. One healthy zone is scraped beside them.
//!
//! Over real sockets, redbridge as its own process (its memory is read from /proc). For every
//! hostile zone: redbridge stays up, the healthy zone keeps being scraped on time and answered
//! exactly, the offender is down with a `last_error` that says why (in /pools), and its signals
//! answer UNAVAILABLE or the target's true value, never anything else. Bounded: about 30 s.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{object_ref, render_envoy, EnvoyCounters, FakeEnvoy, ENVOY_BUCKETS_MS};
use crate::serve::Serve;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;

/// Requests per second of the healthy zone, and of every hostile zone that has a true rate.
const GOOD_RATE: f64 = 50.0;
const HOSTILE_RATE: f64 = 20.0;
const CLUSTER: &str = "c";
/// Peak resident memory allowed to redbridge: its baseline (~20 MB) plus, for each of the four
/// targets that send megabytes on every scrape (endless, gzip bomb, million series, 10 MB line),
/// one body buffer at the 16 MiB cap (`--max-body-bytes`) with its growth copy, and slack for
/// the allocator.
const PEAK_RSS_LIMIT: u64 = 256 << 20;
/// At the end, with refused bodies' buffers dropped after each scrape.
const SETTLED_RSS_LIMIT: u64 = 160 << 20;

/// The exposition of an Envoy that has served `requests` to CLUSTER, all fast.
fn envoy_body(requests: f64) -> String {
    let n = requests.floor();
    let mut buckets = vec![n; ENVOY_BUCKETS_MS.len() + 1];
    buckets[0] = 0.0;
    render_envoy(
        CLUSTER,
        &EnvoyCounters {
            requests: n,
            errors: 0.0,
            buckets,
            sum_ms: n * 3.0,
            active: 2.0,
            pending: 0.0,
        },
    )
}

/// What every dynamic target shares: when it started, and how many scrapes it answered.
#[derive(Clone)]
struct Shared {
    start: Instant,
    hits: Arc<BTreeMap<&'static str, AtomicU64>>,
    /// The million-series prefix, built once.
    million: Bytes,
    bomb: Bytes,
}

impl Shared {
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Counts a scrape of `route`; returns how many came before it.
    fn hit(&self, route: &'static str) -> u64 {
        self.hits[route].fetch_add(1, Ordering::Relaxed)
    }

    /// The true counter of a hostile zone that has one.
    fn truth(&self) -> String {
        envoy_body(HOSTILE_RATE * self.elapsed())
    }
}

const ROUTES: [&str; 13] = [
    "drip",
    "endless",
    "gzip",
    "million",
    "longline",
    "utf8",
    "nonfinite",
    "nonfinite-gauges",
    "decreasing",
    "lb",
    "duplicate",
    "flap",
    "html",
];

fn text(body: impl Into<axum::body::Body>) -> Response {
    (StatusCode::OK, body.into()).into_response()
}

async fn hostile(shared: Shared, route: &'static str) -> Response {
    let n = shared.hit(route);
    match route {
        // Headers at once, then one byte a second of a valid body: only the timeout ends it.
        "drip" => {
            let body = envoy_body(1.0).into_bytes();
            let stream = futures::stream::unfold(0usize, move |i| {
                let body = body.clone();
                async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let b = *body.get(i)?;
                    Some((Ok::<_, std::io::Error>(Bytes::from(vec![b])), i + 1))
                }
            });
            text(axum::body::Body::from_stream(stream))
        }
        // Valid lines forever, as fast as redbridge reads them.
        "endless" => {
            let chunk = Bytes::from("envoy_server_uptime 1\n".repeat(4096));
            let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            text(axum::body::Body::from_stream(stream))
        }
        // 256 KiB on the wire, 256 MiB inflated.
        "gzip" => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_ENCODING, "gzip".parse().expect("header"));
            (StatusCode::OK, h, shared.bomb.clone()).into_response()
        }
        // A million unselected series, then the target's real ones: a valid body under the cap.
        "million" => {
            let tail = Bytes::from(shared.truth());
            let chunks = [shared.million.clone(), tail].map(Ok::<_, std::io::Error>);
            text(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        }
        // The real series, then a 10 MB line (a name with no value).
        "longline" => text(format!("{}{}\n", shared.truth(), "a".repeat(10 << 20))),
        // Invalid UTF-8: in an unselected series and in a label value (tolerated: they match
        // nothing), then as a label name of a selected series (refused).
        "utf8" => {
            let mut body = shared.truth().into_bytes();
            body.extend_from_slice(b"other_metric{l=\"\xff\xfe\"} 1\n");
            body.extend_from_slice(b"envoy_\xc3\x28cluster 1\n");
            body.extend_from_slice(
                b"envoy_cluster_upstream_rq_total{envoy_cluster_name=\"c\xff\"} 5\n",
            );
            body.extend_from_slice(
                b"envoy_cluster_upstream_rq_total{envoy_cluster_name=\"c\",\xfe=\"x\"} 1\n",
            );
            text(body)
        }
        // Every position of a value, NaN and infinities rotating; the counter among them.
        "nonfinite" => {
            let bad = ["NaN", "+Inf", "-Inf"][(n % 3) as usize];
            let c = format!("envoy_cluster_name=\"{CLUSTER}\"");
            let body = format!(
                "envoy_cluster_upstream_rq_total{{{c}}} {bad}\n\
                 envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"5\",{c}}} {bad}\n\
                 envoy_cluster_upstream_rq_active{{{c}}} {bad}\n\
                 envoy_cluster_upstream_rq_time_bucket{{{c},le=\"{bad}\"}} {bad}\n\
                 envoy_cluster_upstream_rq_time_bucket{{{c},le=\"+Inf\"}} {bad}\n\
                 envoy_cluster_upstream_rq_time_sum{{{c}}} {bad}\n\
                 envoy_cluster_upstream_rq_time_count{{{c}}} {bad}\n"
            );
            text(body)
        }
        // The real counters; the gauges, a sum and a bound NaN or infinite.
        "nonfinite-gauges" => {
            let bad = ["NaN", "+Inf", "-Inf"][(n % 3) as usize];
            let c = format!("envoy_cluster_name=\"{CLUSTER}\"");
            let body = shared
                .truth()
                .lines()
                .filter(|l| !l.starts_with("envoy_cluster_upstream_rq_active{envoy_cluster_name=\"c\""))
                .filter(|l| !l.starts_with("envoy_cluster_upstream_rq_pending_active{envoy_cluster_name=\"c\""))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + &format!(
                    "envoy_cluster_upstream_rq_active{{{c}}} {bad}\n\
                     envoy_cluster_upstream_rq_pending_active{{{c}}} {bad}\n\
                     envoy_cluster_upstream_rq_time_bucket{{{c},le=\"NaN\"}} 1\n"
                );
            text(body)
        }
        // Down by a thousand on every scrape.
        "decreasing" => text(envoy_body(1e9 - 1000.0 * n as f64)),
        // Two pods behind one address, answering in turn: lifetime totals 1e9 apart.
        "lb" => {
            let base = if n.is_multiple_of(2) { 1e9 } else { 0.0 };
            text(envoy_body(base + HOSTILE_RATE * shared.elapsed()))
        }
        // Every line twice.
        "duplicate" => {
            let once = shared.truth();
            text(format!("{once}{once}"))
        }
        // Every other scrape fails; the counter itself is true throughout.
        "flap" => {
            if n % 2 == 1 {
                (StatusCode::SERVICE_UNAVAILABLE, "flapping\n").into_response()
            } else {
                text(shared.truth())
            }
        }
        // A login page instead of metrics, once with its Content-Type and once without.
        "html" if n.is_multiple_of(2) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html>\n<html><body>Sign in</body></html>\n",
        )
            .into_response(),
        "html" => text(
            "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n",
        ),
        _ => (StatusCode::NOT_FOUND, "").into_response(),
    }
}

fn gzip_bomb() -> Bytes {
    let mut child = Command::new("gzip")
        .args(["-c", "-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let zeros = vec![b'\n'; 1 << 20];
        for _ in 0..256 {
            stdin.write_all(&zeros).expect("gzip reads");
        }
    });
    let out = child.wait_with_output().expect("gzip runs");
    writer.join().expect("writer");
    assert!(out.status.success());
    assert!(out.stdout.len() < 2 << 20, "the bomb is small on the wire");
    Bytes::from(out.stdout)
}

fn million_series() -> Bytes {
    let mut s = String::with_capacity(16 << 20);
    for i in 0..1_000_000u32 {
        s.push('x');
        s.push_str(&i.to_string());
        s.push_str(" 1\n");
    }
    Bytes::from(s)
}

/// What a hostile zone must show once redbridge has seen it for a while.
struct Expect {
    zone: &'static str,
    /// Substrings of which the target's `last_error` must contain one (empty: it must be up).
    error: &'static [&'static str],
    /// The zone's true requests per second, when it has one redbridge can read.
    rate: Option<f64>,
}

const EXPECT: [Expect; 13] = [
    Expect {
        zone: "drip",
        error: &["timed out"],
        rate: None,
    },
    Expect {
        zone: "endless",
        error: &["larger than", "timed out"],
        rate: None,
    },
    Expect {
        zone: "gzip",
        error: &["larger than"],
        rate: None,
    },
    Expect {
        zone: "million",
        error: &[],
        rate: Some(HOSTILE_RATE),
    },
    // An unselected name is skipped unread, however long: the target's own series count.
    Expect {
        zone: "longline",
        error: &[],
        rate: Some(HOSTILE_RATE),
    },
    Expect {
        zone: "utf8",
        error: &["cannot parse"],
        rate: None,
    },
    Expect {
        zone: "nonfinite",
        error: &["must be a finite number"],
        rate: None,
    },
    Expect {
        zone: "nonfinite-gauges",
        error: &[],
        rate: Some(HOSTILE_RATE),
    },
    Expect {
        zone: "decreasing",
        error: &["load-balanced across several pods"],
        rate: None,
    },
    Expect {
        zone: "lb",
        error: &["load-balanced across several pods"],
        rate: None,
    },
    Expect {
        zone: "duplicate",
        error: &["appears twice"],
        rate: None,
    },
    // Down on every other scrape: either state may be seen; the rate stays true.
    Expect {
        zone: "flap",
        error: &["HTTP status 503"],
        rate: Some(HOSTILE_RATE),
    },
    Expect {
        zone: "html",
        error: &["not the Prometheus text format"],
        rate: None,
    },
];

fn trigger(zone: &str, signal: &str) -> redbridge::proto::ScaledObjectRef {
    object_ref(
        "ml",
        &[
            ("pool", "hostile"),
            ("zone", zone),
            ("signal", signal),
            ("target", "10"),
        ],
    )
}

fn target<'v>(pools: &'v serde_json::Value, zone: &str) -> &'v serde_json::Value {
    pools["pools"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["zone"] == zone)
        .unwrap_or_else(|| panic!("no target in zone {zone}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_are_refused_while_the_healthy_zone_is_served() {
    let shared = Shared {
        start: Instant::now(),
        hits: Arc::new(ROUTES.iter().map(|r| (*r, AtomicU64::new(0))).collect()),
        million: million_series(),
        bomb: gzip_bomb(),
    };
    let mut app = Router::new();
    for route in ROUTES {
        let shared = shared.clone();
        app = app.route(
            &format!("/{route}"),
            get(move || hostile(shared.clone(), route)),
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let good = FakeEnvoy::start(CLUSTER).await;
    good.set_traffic(GOOD_RATE, 0.0, 30.0);

    let mut targets = format!("          - {{ url: \"{}\", zone: good }}\n", good.url());
    for route in ROUTES {
        // The targets that send megabytes on every scrape are asked every 2 s, so that the
        // test's own servers do not starve a shared machine.
        let interval = match route {
            "endless" | "gzip" | "million" | "longline" => ", interval: 2s",
            _ => "",
        };
        targets.push_str(&format!(
            "          - {{ url: \"{base}/{route}\", zone: {route}{interval} }}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - name: hostile\n    namespace: ml\n    window: 6s\n    interval: 1s\n    \
             staleAfter: 3s\n    sources:\n      - name: gateway\n        profile: envoy\n        \
             matchers: ['envoy_cluster_name=\"{CLUSTER}\"']\n        targets:\n{targets}"
        ),
    )
    .expect("write config");
    let log = dir.path().join("redbridge.log");
    // 16 MiB: every oversized body is cut there, and the million-series body (11 MB) fits.
    let mut rb = Serve::start(&config, &log, &["--max-body-bytes", "16777216"]).await;

    // From the start: no zone ever answers a value other than its truth. The two-pods target is
    // the exception for the one scrape pattern no rate can tell from a burst (a jump up before
    // any decrease); its server answers the higher pod first, so there is none.
    let mut client = rb.client().await;
    let started = Instant::now();
    let mut good_values = Vec::new();
    let mut seen_up: BTreeMap<&str, bool> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(20) {
        let settled = started.elapsed() > Duration::from_secs(9);
        for e in &EXPECT {
            match crate::serve::value(&mut client, trigger(e.zone, "requests_per_second")).await {
                Ok(v) => {
                    let truth = e
                        .rate
                        .unwrap_or_else(|| panic!("zone {}: fabricated {v} req/s", e.zone));
                    // Until the window is full a rate spans a second or two: whole-number
                    // counters and a loaded machine's timing move it by a few tenths.
                    let tolerance = if settled { 0.1 } else { 0.5 };
                    assert!(
                        v.is_finite() && (v - truth).abs() <= tolerance * truth,
                        "zone {}: {v} req/s, truth {truth}",
                        e.zone
                    );
                }
                Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "zone {}: {s}", e.zone),
            }
        }
        // A NaN or infinite gauge is no value: never NaN, never infinity.
        match crate::serve::value(&mut client, trigger("nonfinite-gauges", "concurrency")).await {
            Ok(v) => panic!("concurrency from NaN/Inf gauges answered {v}"),
            Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s}"),
        }
        // The healthy zone, on time and exact.
        let asked = Instant::now();
        let v = crate::serve::value(&mut client, trigger("good", "requests_per_second")).await;
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "GetMetrics took {:?}",
            asked.elapsed()
        );
        let pools = rb.pools().await;
        let g = target(&pools, "good");
        if settled {
            let v = v.unwrap_or_else(|s| panic!("healthy zone unavailable: {s}"));
            assert!(
                (v - GOOD_RATE).abs() <= 0.05 * GOOD_RATE,
                "healthy zone: {v} req/s"
            );
            good_values.push(v);
            let staleness = g["staleness_seconds"].as_f64().expect("scraped");
            assert!(
                staleness < 2.0,
                "healthy target last scraped {staleness}s ago"
            );
            assert!(g["samples_in_window"].as_u64().unwrap_or(0) >= 5, "{g}");
        }
        for e in &EXPECT {
            let t = target(&pools, e.zone);
            if t["up"] == true {
                seen_up.insert(e.zone, true);
            }
            if !settled {
                continue;
            }
            let error = t["last_error"].as_str();
            match (e.error, t["up"].as_bool()) {
                ([], _) => assert_eq!(t["up"], true, "zone {}: {t}", e.zone),
                (want, Some(false)) => {
                    let error =
                        error.unwrap_or_else(|| panic!("zone {}: down without an error", e.zone));
                    assert!(
                        want.iter().any(|w| error.contains(w)),
                        "zone {}: last_error {error:?}, want one of {want:?}",
                        e.zone
                    );
                    assert!(
                        error.len() < 1000,
                        "zone {}: a {}-byte last_error",
                        e.zone,
                        error.len()
                    );
                }
                (_, _) => assert!(e.zone == "flap", "zone {} is up: {t}", e.zone),
            }
        }
        assert!(
            rb.alive(),
            "redbridge exited; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        good_values.len() >= 8,
        "healthy zone answered {} times",
        good_values.len()
    );
    assert_eq!(
        seen_up.get("flap"),
        Some(&true),
        "the flapping target was never up"
    );
    for zone in ["lb", "decreasing"] {
        // Ever up only before the first decrease.
        let t = target(&rb.pools().await, zone).clone();
        assert_eq!(t["samples_in_window"], 0, "{zone}: {t}");
    }

    let (rss, peak) = rb.rss();
    eprintln!("redbridge RSS {} MiB, peak {} MiB", rss >> 20, peak >> 20);
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} MiB", peak >> 20);
    assert!(rss < SETTLED_RSS_LIMIT, "RSS {} MiB", rss >> 20);
    let metrics = rb.metrics().await;
    assert!(metrics.contains("redbridge_"), "/metrics still answers");
}
