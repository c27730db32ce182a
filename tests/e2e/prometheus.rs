//! The Prometheus-compatible source against a real Prometheus (Debian package `prometheus`)
//! scraping the same data planes redbridge scrapes directly: both paths must agree, and every way
//! the server can fail must read as UNAVAILABLE, never 0.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, installed, FakeEnvoy, Redbridge};
use tonic::Code;

const CLUSTER: &str = "httproute/ml/llama/rule/0";
/// bcrypt (cost 4, so each request is cheap) of "s3cret", for Prometheus' web config.
const PASSWORD_HASH: &str = "$2b$04$ANIpFgNAkla2V3sosRorjucjgrjBsdPYnGwC9ljNI5DKaBS6Kqor2";

/// A Prometheus server on a free loopback port, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(zone_a: &FakeEnvoy, zone_b: &FakeEnvoy) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: ["{}"]
        labels: {{ zone: zone-a }}
      - targets: ["{}"]
        labels: {{ zone: zone-b }}
"#,
            zone_a.addr, zone_b.addr
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::write(
            dir.path().join("web.yml"),
            format!("basic_auth_users:\n  redbridge: {PASSWORD_HASH}\n"),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(installed("prometheus", "REDBRIDGE_PROMETHEUS"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--web.config.file={}",
                dir.path().join("web.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

fn config(a: &FakeEnvoy, b: &FakeEnvoy, prom_url: &str, password_file: &str) -> String {
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 10s
    interval: 1s
    sources:
      - name: direct
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: prom
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        prometheus:
          url: "{prom_url}"
          zoneLabel: zone
          zones: [zone-a, zone-b, zone-c]
          rateWindow: 10s
          interval: 1s
          basicAuth: {{ username: redbridge, passwordFile: "{password_file}" }}
"#,
        a.url(),
        b.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_source_agrees_with_direct_scraping_and_fails_safe() {
    let (a, b) = (
        FakeEnvoy::start(CLUSTER).await,
        FakeEnvoy::start(CLUSTER).await,
    );
    a.set_traffic(40.0, 0.05, 40.0);
    b.set_traffic(10.0, 0.0, 300.0);
    a.set_gauges(6.0, 2.0);
    b.set_gauges(1.0, 0.0);
    let prom = Prometheus::start(&a, &b);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("password");
    std::fs::write(&good, "s3cret\n").unwrap();
    let rb = Redbridge::start(&config(&a, &b, &prom.url, &good.display().to_string())).await;

    let ask = |zone: &'static str, signal: &'static str, source: &'static str| {
        vec![
            ("pool", "llama"),
            ("zone", zone),
            ("signal", signal),
            ("target", "1"),
            ("source", source),
        ]
    };
    // Wait until Prometheus has a full rate window: 10 s of 1 s scrapes.
    eventually(
        Duration::from_secs(40),
        "Prometheus rates over a full window",
        || async {
            let v = rb
                .value(&ask("zone-a", "requests_per_second", "prom"))
                .await
                .ok()?;
            (v > 30.0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    for (zone, rps) in [("zone-a", 40.0), ("zone-b", 10.0)] {
        let direct = rb
            .value(&ask(zone, "requests_per_second", "direct"))
            .await
            .unwrap();
        let via = rb
            .value(&ask(zone, "requests_per_second", "prom"))
            .await
            .unwrap();
        assert!(
            (direct - rps).abs() / rps < 0.15,
            "{zone} direct {direct} vs truth {rps}"
        );
        assert!(
            (via - direct).abs() / direct < 0.15,
            "{zone}: prometheus {via} vs direct {direct}"
        );
    }
    let err_direct = rb
        .value(&ask("zone-a", "error_ratio", "direct"))
        .await
        .unwrap();
    let err_prom = rb
        .value(&ask("zone-a", "error_ratio", "prom"))
        .await
        .unwrap();
    assert!(
        (err_direct - err_prom).abs() < 0.02,
        "error ratio direct {err_direct} prom {err_prom}"
    );
    assert_eq!(
        rb.value(&ask("zone-b", "error_ratio", "prom"))
            .await
            .unwrap(),
        0.0,
        "no 5xx series is 0, not missing"
    );
    for (zone, lo, hi) in [("zone-a", 0.025, 0.05), ("zone-b", 0.25, 0.5)] {
        for source in ["direct", "prom"] {
            let p95 = rb.value(&ask(zone, "latency_p95", source)).await.unwrap();
            assert!(
                (lo..=hi).contains(&p95),
                "{zone} {source} p95 {p95} outside ({lo}, {hi}]"
            );
        }
    }
    assert_eq!(
        rb.value(&ask("zone-a", "concurrency", "prom"))
            .await
            .unwrap(),
        6.0
    );
    assert_eq!(
        rb.value(&ask("zone-a", "queue_depth", "prom"))
            .await
            .unwrap(),
        2.0
    );
    let all = rb
        .value(&[
            ("pool", "llama"),
            ("signal", "concurrency"),
            ("target", "1"),
            ("source", "prom"),
        ])
        .await;
    assert!(
        all.is_err(),
        "zone-c has no data, so the all-zones sum is unavailable, not partial: {all:?}"
    );

    // A zone Prometheus has no series for: UNAVAILABLE naming the reason, never 0.
    let empty = rb
        .value(&ask("zone-c", "requests_per_second", "prom"))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::Unavailable);
    assert!(
        empty.message().contains("returned no series"),
        "{}",
        empty.message()
    );

    // Prometheus goes away: after three poll intervals, UNAVAILABLE with the last error.
    drop(prom);
    let gone = eventually(
        Duration::from_secs(15),
        "UNAVAILABLE after Prometheus stops",
        || async {
            rb.value(&ask("zone-a", "requests_per_second", "prom"))
                .await
                .err()
                .filter(|s| s.code() == Code::Unavailable)
        },
    )
    .await;
    assert!(
        gone.message().contains("last successful Prometheus query"),
        "{}",
        gone.message()
    );
    // The direct path is unaffected.
    assert!(rb
        .value(&ask("zone-a", "requests_per_second", "direct"))
        .await
        .is_ok());
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unavailable_with_the_servers_answer() {
    let (a, b) = (
        FakeEnvoy::start(CLUSTER).await,
        FakeEnvoy::start(CLUSTER).await,
    );
    let prom = Prometheus::start(&a, &b);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "guess").unwrap();
    let rb = Redbridge::start(&config(&a, &b, &prom.url, &wrong.display().to_string())).await;
    let status = eventually(Duration::from_secs(20), "an answer", || async {
        rb.value(&[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "1"),
            ("source", "prom"),
        ])
        .await
        .err()
        .filter(|s| s.message().contains("401"))
    })
    .await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("Unauthorized"),
        "{}",
        status.message()
    );
    rb.stop().await;
}
