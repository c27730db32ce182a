//! The Prometheus-compatible source against a real VictoriaMetrics single-node (Debian package
//! `victoria-metrics`, its own scraper and its Prometheus query API) scraping the same data
//! planes redbridge scrapes directly: the same agreement tolerance and missing-data rules as
//! against Prometheus (the `prometheus` module).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, installed, FakeEnvoy, Redbridge};
use tonic::Code;

const CLUSTER: &str = "httproute/ml/llama/rule/0";

/// A VictoriaMetrics server on a free loopback port, killed when dropped.
struct VictoriaMetrics {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl VictoriaMetrics {
    fn start(zone_a: &FakeEnvoy, zone_b: &FakeEnvoy) -> VictoriaMetrics {
        let dir = tempfile::tempdir().unwrap();
        let scrape = format!(
            r#"
global:
  scrape_interval: 1s
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
        std::fs::write(dir.path().join("scrape.yml"), scrape).unwrap();
        let port = free_port();
        let child = Command::new(installed("victoria-metrics", "REDBRIDGE_VICTORIA_METRICS"))
            .arg(format!(
                "-promscrape.config={}",
                dir.path().join("scrape.yml").display()
            ))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            // By default the newest 30 s are hidden from queries (for late samples); a scaler
            // wants them, as it does from Prometheus.
            .arg("-search.latencyOffset=1s")
            .arg("-httpAuth.username=redbridge")
            .arg("-httpAuth.password=s3cret")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics starts");
        VictoriaMetrics {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

fn config(a: &FakeEnvoy, b: &FakeEnvoy, vm_url: &str, password_file: &str) -> String {
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
      - name: vm
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        prometheus:
          url: "{vm_url}"
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

fn ask(
    zone: &'static str,
    signal: &'static str,
    source: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("pool", "llama"),
        ("zone", zone),
        ("signal", signal),
        ("target", "1"),
        ("source", source),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_source_agrees_with_direct_scraping_and_fails_safe() {
    let (a, b) = (
        FakeEnvoy::start(CLUSTER).await,
        FakeEnvoy::start(CLUSTER).await,
    );
    a.set_traffic(40.0, 0.05, 40.0);
    b.set_traffic(10.0, 0.0, 300.0);
    a.set_gauges(6.0, 2.0);
    b.set_gauges(1.0, 0.0);
    let vm = VictoriaMetrics::start(&a, &b);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let rb = Redbridge::start(&config(&a, &b, &vm.url, &password.display().to_string())).await;

    // Wait for a full rate window of 1 s scrapes in VictoriaMetrics.
    eventually(
        Duration::from_secs(60),
        "VictoriaMetrics rates over a full window",
        || async {
            let v = rb
                .value(&ask("zone-a", "requests_per_second", "vm"))
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
            .value(&ask(zone, "requests_per_second", "vm"))
            .await
            .unwrap();
        assert!(
            (direct - rps).abs() / rps < 0.15,
            "{zone} direct {direct} vs truth {rps}"
        );
        assert!(
            (via - direct).abs() / direct < 0.15,
            "{zone}: victoria-metrics {via} vs direct {direct}"
        );
    }
    let err_direct = rb
        .value(&ask("zone-a", "error_ratio", "direct"))
        .await
        .unwrap();
    let err_vm = rb.value(&ask("zone-a", "error_ratio", "vm")).await.unwrap();
    assert!(
        (err_direct - err_vm).abs() < 0.02,
        "error ratio direct {err_direct} victoria-metrics {err_vm}"
    );
    assert_eq!(
        rb.value(&ask("zone-b", "error_ratio", "vm")).await.unwrap(),
        0.0,
        "no 5xx series is 0, not missing"
    );
    for (zone, lo, hi) in [("zone-a", 0.025, 0.05), ("zone-b", 0.25, 0.5)] {
        for source in ["direct", "vm"] {
            let p95 = rb.value(&ask(zone, "latency_p95", source)).await.unwrap();
            assert!(
                (lo..=hi).contains(&p95),
                "{zone} {source} p95 {p95} outside ({lo}, {hi}]"
            );
        }
    }
    assert_eq!(
        rb.value(&ask("zone-a", "concurrency", "vm")).await.unwrap(),
        6.0
    );
    assert_eq!(
        rb.value(&ask("zone-a", "queue_depth", "vm")).await.unwrap(),
        2.0
    );

    // A zone the server has no series for: UNAVAILABLE naming the reason, never 0.
    let empty = rb
        .value(&ask("zone-c", "requests_per_second", "vm"))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::Unavailable);
    assert!(
        empty.message().contains("returned no series"),
        "{}",
        empty.message()
    );

    // The server goes away: after three poll intervals, UNAVAILABLE with the last error.
    drop(vm);
    let gone = eventually(
        Duration::from_secs(15),
        "UNAVAILABLE after VictoriaMetrics stops",
        || async {
            rb.value(&ask("zone-a", "requests_per_second", "vm"))
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
    assert!(rb
        .value(&ask("zone-a", "requests_per_second", "direct"))
        .await
        .is_ok());
    rb.stop().await;
}
