//! The scraper against real HTTP servers started by the test: compression, body cap, timeout,
//! status codes, connection reuse, the bound on scrapes in flight, and parse errors surfacing in
//! target health.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::eventually;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use redbridge::model::Config;
use redbridge::source::scrape::{ScrapeError, ScrapeSettings, Scraper};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BODY: &str = "# TYPE envoy_cluster_upstream_rq_total counter\nenvoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 42\n";

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_and_the_text_format_is_asked_for() {
    let compressed = gzip(BODY.as_bytes());
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let compressed = compressed.clone();
            async move {
                let accepts_gzip = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"));
                let asks_text = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/plain;version=0.0.4"));
                if !accepts_gzip || !asks_text {
                    return (StatusCode::BAD_REQUEST, HeaderMap::new(), Vec::new());
                }
                let mut h = HeaderMap::new();
                h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
                (StatusCode::OK, h, compressed)
            }
        }),
    );
    let base = serve(app).await;
    let scraper = Scraper::new(&ScrapeSettings::default()).unwrap();
    let mut buf = Vec::new();
    scraper
        .fetch(&format!("{base}/metrics"), Duration::from_secs(2), &mut buf)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), BODY);
}

#[tokio::test]
async fn bodies_over_the_cap_fail_with_or_without_content_length() {
    let big = "x".repeat(5000);
    let app = Router::new()
        .route(
            "/sized",
            get({
                let big = big.clone();
                move || async move { big }
            }),
        )
        .route(
            "/streamed",
            get(move || async move {
                let chunks =
                    (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 500])));
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }),
        );
    let base = serve(app).await;
    let scraper = Scraper::new(&ScrapeSettings {
        max_body_bytes: 1000,
        max_in_flight: 4,
    })
    .unwrap();
    for path in ["sized", "streamed"] {
        let mut buf = Vec::new();
        let err = scraper
            .fetch(&format!("{base}/{path}"), Duration::from_secs(2), &mut buf)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ScrapeError::TooLarge { limit: 1000 }),
            "{path}: {err}"
        );
        assert!(
            buf.len() <= 1000,
            "{path}: buffered {} bytes past the cap",
            buf.len()
        );
    }
}

#[tokio::test]
async fn slow_targets_time_out_and_errors_carry_the_status() {
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                BODY
            }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    let base = serve(app).await;
    let scraper = Scraper::new(&ScrapeSettings::default()).unwrap();
    let mut buf = Vec::new();
    let err = scraper
        .fetch(
            &format!("{base}/slow"),
            Duration::from_millis(200),
            &mut buf,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ScrapeError::Timeout(_)), "{err}");
    let err = scraper
        .fetch(&format!("{base}/broken"), Duration::from_secs(2), &mut buf)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "HTTP status 500");
    let err = scraper
        .fetch(
            "http://127.0.0.1:1/metrics",
            Duration::from_secs(2),
            &mut buf,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("onnect"),
        "connection errors name the cause: {err}"
    );
}

#[tokio::test]
async fn connections_are_reused_across_scrapes() {
    // A minimal keep-alive HTTP/1.1 server that counts TCP connections.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{BODY}", BODY.len());
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let scraper = Scraper::new(&ScrapeSettings::default()).unwrap();
    let mut buf = Vec::new();
    for _ in 0..5 {
        scraper
            .fetch(
                &format!("http://{addr}/metrics"),
                Duration::from_secs(2),
                &mut buf,
            )
            .await
            .unwrap();
        assert_eq!(buf, BODY.as_bytes());
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "five scrapes, one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_in_flight_are_bounded_and_parse_errors_reach_target_health() {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = Router::new()
        .route(
            "/slow/{n}",
            get({
                let (now, peak) = (now.clone(), peak.clone());
                move || {
                    let (now, peak) = (now.clone(), peak.clone());
                    async move {
                        let cur = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(cur, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        BODY
                    }
                }
            }),
        )
        .route(
            "/garbage",
            get(|| async { "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\" 42\n" }),
        );
    let base = serve(app).await;
    let targets: String = (0..6)
        .map(|i| format!("          - {{ url: \"{base}/slow/{i}\", zone: z }}\n"))
        .chain(std::iter::once(format!(
            "          - {{ url: \"{base}/garbage\", zone: bad }}\n"
        )))
        .collect();
    let yaml = format!(
        "pools:\n  - name: p\n    window: 4s\n    interval: 500ms\n    timeout: 2s\n    sources:\n      - profile: envoy\n        targets:\n{targets}"
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
    let state = redbridge::run::state(&config);
    let scraper = Arc::new(
        Scraper::new(&ScrapeSettings {
            max_body_bytes: 1 << 20,
            max_in_flight: 2,
        })
        .unwrap(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(redbridge::run::run_sources(
        state.clone(),
        scraper,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "never more than max_in_flight scrapes at once"
    );

    let pool = state.pools()[0].clone();
    let garbage = pool
        .targets
        .iter()
        .find(|t| t.key.zone == "bad")
        .unwrap()
        .clone();
    let error = eventually(Duration::from_secs(5), "a parse error in health", || {
        let g = garbage.clone();
        async move { g.lock().health.last_error.clone() }
    })
    .await;
    assert!(
        error.contains("cannot parse exposition") && error.contains("line 1"),
        "{error}"
    );
    assert!(!garbage.lock().health.up);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("scrapers stop on shutdown")
        .unwrap();
}
