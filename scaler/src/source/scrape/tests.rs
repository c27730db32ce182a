//! The scrape loop against a local HTTP server, on paused time: scrapes land exactly on the
//! interval, a hung target fails at exactly its timeout, and failures and recoveries are recorded
//! in the target's health.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::*;
use crate::model::{Config, Source};
use crate::window::TargetKey;

/// How the test server answers `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// An Envoy body counting the requests served so far.
    Envoy,
    Status(u16),
    /// Never answers.
    Hang,
}

#[derive(Debug)]
struct Server {
    answer: Mutex<Answer>,
    requests: AtomicUsize,
}

impl Server {
    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("answer") = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn metrics(State(server): State<Arc<Server>>) -> (StatusCode, String) {
    let n = server.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = *server.answer.lock().expect("answer");
    match answer {
        Answer::Envoy => (
            StatusCode::OK,
            format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"c\"}} {n}\n"),
        ),
        Answer::Status(code) => (
            StatusCode::from_u16(code).expect("a valid status"),
            String::new(),
        ),
        Answer::Hang => std::future::pending().await,
    }
}

/// A server on a loopback port; returns its `/metrics` URL.
async fn serve(answer: Answer) -> (String, Arc<Server>) {
    let server = Arc::new(Server {
        answer: Mutex::new(answer),
        requests: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/metrics"), server)
}

fn envoy_source() -> Source {
    let config = Config::from_yaml(
        r#"
pools:
  - name: llama
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://127.0.0.1:1/metrics", zone: zone-a }
"#,
        "test.yaml",
    )
    .expect("valid test config");
    config.pools[0].sources[0].clone()
}

/// Starts the loop for `url` (interval 1 s, timeout 300 ms); returns the target, the clock and
/// the loop's task.
fn start(
    url: &str,
    shutdown: &CancellationToken,
) -> (Arc<TargetState>, Clock, tokio::task::JoinHandle<()>) {
    let target = Arc::new(TargetState::new(
        TargetKey {
            namespace: String::new(),
            pool: "llama".into(),
            source: "gateway".into(),
            zone: "zone-a".into(),
            url: url.into(),
        },
        0,
    ));
    let job = TargetJob {
        target: target.clone(),
        extractor: Arc::new(Extractor::new(&envoy_source())),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        retention: Duration::from_secs(60),
    };
    let scraper = Arc::new(Scraper::new(&ScrapeSettings::default()).expect("a client"));
    let clock = Clock::default();
    let task = tokio::spawn(scraper.run(job, clock, shutdown.clone()));
    (target, clock, task)
}

#[tokio::test(start_paused = true)]
async fn scrapes_land_exactly_one_interval_apart_within_the_first_interval() {
    let (url, server) = serve(Answer::Envoy).await;
    let shutdown = CancellationToken::new();
    let (target, _, task) = start(&url, &shutdown);
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    shutdown.cancel();
    task.await.expect("the loop stops on shutdown");

    let data = target.lock();
    let at: Vec<f64> = data.samples().iter().map(|s| s.at).collect();
    // The first scrape is spread over the first interval, then one per interval.
    assert!(at[0] < 1.0, "{at:?}");
    assert!(
        at.windows(2).all(|w| (w[1] - w[0] - 1.0).abs() < 1e-6),
        "{at:?}"
    );
    assert!(at.len() == 10 || at.len() == 11, "{at:?}");
    assert_eq!(data.health.scrapes, at.len() as u64);
    assert_eq!(server.requests(), at.len());
    assert!(
        data.health.up && data.health.failures == 0,
        "{:?}",
        data.health
    );
    assert_eq!(data.health.first_success, Some(at[0]));
    assert_eq!(data.health.last_success, at.last().copied());
    assert!(data.health.last_body_bytes > 0, "{:?}", data.health);
}

#[tokio::test(start_paused = true)]
async fn a_hung_target_fails_at_its_timeout_and_the_next_scrape_waits_for_the_interval() {
    let (url, server) = serve(Answer::Hang).await;
    let shutdown = CancellationToken::new();
    let (target, clock, task) = start(&url, &shutdown);
    // The first scrape starts within the first interval and fails 300 ms later.
    while target.lock().health.scrapes == 0 {
        assert!(clock.now() < 1.3, "no scrape recorded by {}", clock.now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed_at = {
        let data = target.lock();
        let h = &data.health;
        assert_eq!((h.scrapes, h.failures), (1, 1), "{h:?}");
        assert!(!h.up, "{h:?}");
        assert_eq!(h.last_error.as_deref(), Some("timed out after 300ms"));
        assert!((h.last_duration - 0.3).abs() < 1e-6, "{h:?}");
        assert!(data.samples().is_empty());
        h.last_attempt.expect("an attempt")
    };
    assert_eq!(server.requests(), 1);
    // The next scrape starts one interval after the first started, not after it failed.
    let until = |at: f64| tokio::time::sleep(Duration::from_secs_f64(at - clock.now()));
    until(failed_at + 0.69).await;
    assert_eq!(server.requests(), 1);
    until(failed_at + 0.71).await;
    assert_eq!(server.requests(), 2);
    assert_eq!(target.lock().health.scrapes, 1);
    until(failed_at + 1.01).await;
    assert_eq!(target.lock().health.failures, 2);
    shutdown.cancel();
    task.await.expect("the loop stops on shutdown");
}

/// `at` is `want`, to rounding (clock seconds are f64).
fn near(at: Option<f64>, want: f64) -> bool {
    at.is_some_and(|at| (at - want).abs() < 1e-6)
}

/// Waits for the first scrape to be recorded; returns when it was (on `clock`).
async fn first_scrape(target: &TargetState, clock: Clock) -> f64 {
    while target.lock().health.scrapes == 0 {
        assert!(clock.now() < 2.0, "no scrape recorded by {}", clock.now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    target.lock().health.last_attempt.expect("an attempt")
}

#[tokio::test(start_paused = true)]
async fn failures_are_recorded_and_a_recovery_clears_up() {
    let (url, server) = serve(Answer::Status(503)).await;
    let shutdown = CancellationToken::new();
    let (target, clock, task) = start(&url, &shutdown);
    let first = first_scrape(&target, clock).await;
    let until = |at: f64| tokio::time::sleep(Duration::from_secs_f64(at - clock.now()));
    until(first + 2.5).await;
    {
        let h = target.lock().health.clone();
        assert!(!h.up, "{h:?}");
        assert_eq!(h.last_error.as_deref(), Some("HTTP status 503"));
        assert_eq!((h.scrapes, h.failures), (3, 3), "{h:?}");
        assert_eq!(h.last_success, None);
        assert!(near(h.last_attempt, first + 2.0), "{h:?}");
    }
    server.set(Answer::Envoy);
    until(first + 4.5).await;
    {
        let data = target.lock();
        let h = &data.health;
        assert!(h.up, "{h:?}");
        assert_eq!((h.scrapes, h.failures), (5, 3), "{h:?}");
        assert_eq!(data.samples().len(), 2);
        assert!(near(h.first_success, first + 3.0), "{h:?}");
        assert!(near(h.last_success, first + 4.0), "{h:?}");
    }
    // Down again: up clears, the error is the new one, the samples stay for the window.
    server.set(Answer::Status(500));
    until(first + 5.5).await;
    {
        let data = target.lock();
        assert!(!data.health.up);
        assert_eq!(data.health.last_error.as_deref(), Some("HTTP status 500"));
        assert_eq!(data.health.failures, 4);
        assert_eq!(data.samples().len(), 2);
    }
    shutdown.cancel();
    task.await.expect("the loop stops on shutdown");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_target_is_a_request_failure() {
    // Bind and drop: nothing listens on the port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let shutdown = CancellationToken::new();
    let (target, _, task) = start(&format!("http://127.0.0.1:{port}/metrics"), &shutdown);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let h = target.lock().health.clone();
    assert!(!h.up && h.failures >= 1, "{h:?}");
    let error = h.last_error.unwrap_or_default();
    assert!(error.starts_with("request failed: "), "{error}");
    shutdown.cancel();
    task.await.expect("the loop stops on shutdown");
}

/// Twenty targets, at most two scrapes at once: the body buffers in use never outnumber the
/// permits, however many targets there are, and every target still gets its body.
#[tokio::test(start_paused = true)]
async fn body_buffers_follow_the_scrapes_in_flight_not_the_targets() {
    let (url, _server) = serve(Answer::Envoy).await;
    let scraper = Arc::new(
        Scraper::new(&ScrapeSettings {
            max_in_flight: 2,
            ..ScrapeSettings::default()
        })
        .expect("a client"),
    );
    let shutdown = CancellationToken::new();
    let extractor = Arc::new(Extractor::new(&envoy_source()));
    let mut targets = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let target = Arc::new(TargetState::new(
            TargetKey {
                namespace: String::new(),
                pool: "llama".into(),
                source: "gateway".into(),
                zone: "zone-a".into(),
                // Distinct URLs (the query is ignored), so the targets' phases differ.
                url: format!("{url}?t={i}"),
            },
            0,
        ));
        let job = TargetJob {
            target: target.clone(),
            extractor: extractor.clone(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            retention: Duration::from_secs(60),
        };
        tasks.push(tokio::spawn(scraper.clone().run(
            job,
            Clock::default(),
            shutdown.clone(),
        )));
        targets.push(target);
    }
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    shutdown.cancel();
    for t in tasks {
        t.await.expect("the loop stops on shutdown");
    }
    let pooled = scraper.buffers.len();
    assert!((1..=2).contains(&pooled), "{pooled} buffers for 20 targets");
    // One authority: its keep-alive connections are shared too, one per scrape in flight.
    let idle = scraper.plain.idle_connections();
    assert!((1..=2).contains(&idle), "{idle} idle connections");
    for t in &targets {
        let data = t.lock();
        assert!(data.health.scrapes >= 5, "{:?}", data.health);
        assert!(data.health.last_body_bytes > 0, "{:?}", data.health);
    }
}
