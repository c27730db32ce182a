//! Envoy's deferred stat creation (Envoy Gateway 1.8 turns it on) against a real Envoy: before a
//! cluster's first request its traffic stats do not exist, only its membership gauges. redbridge
//! must then read the route as idle (0), keep a matcher that names no cluster unavailable, and
//! follow the first requests once the stats appear.

use crate::common::{self, free_port};
use crate::envoy::harness;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Redbridge};
use harness::{envoy_binary, Backend, Shape, CLUSTER};

/// A real Envoy with deferred stat creation, one listener routing to [`CLUSTER`]. Killed on drop.
struct DeferredEnvoy {
    child: Child,
    admin: std::net::SocketAddr,
    listener: u16,
    _dir: tempfile::TempDir,
}

impl Drop for DeferredEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DeferredEnvoy {
    async fn start(backend: std::net::SocketAddr) -> DeferredEnvoy {
        let dir = tempfile::tempdir().unwrap();
        let listener = free_port();
        let config = format!(
            r#"
node: {{ id: "envoy-deferred", cluster: redbridge-test, locality: {{ zone: "zone-a" }} }}
deferred_stat_options: {{ enable_deferred_creation_stats: true }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
stats_flush_interval: 1s
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: "{CLUSTER}", timeout: 10s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: "{CLUSTER}"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "{CLUSTER}"
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
            port = backend.port()
        );
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let binary = envoy_binary();
        let child = Command::new(&binary)
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--use-dynamic-base-id")
            .args(["--concurrency", "1", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut envoy = DeferredEnvoy {
            child,
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            listener,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("Envoy exited with {status}:\n{}", log());
            }
            assert!(Instant::now() < deadline, "Envoy not ready:\n{}", log());
            if let Some(admin) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                envoy.admin = admin;
                let ready = http.get(format!("http://{admin}/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return envoy;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stats_url(&self) -> String {
        format!("http://{}/stats/prometheus", self.admin)
    }
}

fn config(stats: &str) -> String {
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 4s
    interval: 250ms
    staleAfter: 2s
    sources:
      - profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets: [{{ url: "{stats}", zone: zone-a }}]
  - name: nothing
    namespace: ml
    window: 4s
    interval: 250ms
    staleAfter: 2s
    sources:
      - profile: envoy
        matchers: ['envoy_cluster_name="httproute/ml/nope/rule/0"']
        targets: [{{ url: "{stats}", zone: zone-a }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_before_its_first_request_reads_zero_and_a_missing_one_stays_unavailable() {
    let backend = Backend::start(Shape::constant(1.0)).await;
    let envoy = DeferredEnvoy::start(backend.addr).await;
    let http = reqwest::Client::new();
    let stats = http
        .get(envoy.stats_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let of_cluster = |name: &str| format!("{name}{{envoy_cluster_name=\"{CLUSTER}\"}}");
    // The premise, from Envoy itself: membership exists, traffic stats do not yet.
    assert!(
        stats.contains(&of_cluster("envoy_cluster_membership_total")),
        "no membership gauge:\n{stats}"
    );
    assert!(
        !stats.contains(&of_cluster("envoy_cluster_upstream_rq_total")),
        "Envoy created the traffic stats before any request: deferred creation is off"
    );

    let rb = Redbridge::start(&config(&envoy.stats_url())).await;
    let ask = |pool: &'static str, signal: &'static str| {
        let rb = &rb;
        async move {
            rb.value(&[
                ("pool", pool),
                ("zone", "zone-a"),
                ("signal", signal),
                ("target", "1"),
            ])
            .await
        }
    };
    for signal in [
        "requests_per_second",
        "concurrency",
        "queue_depth",
        "error_ratio",
    ] {
        let v = eventually(
            Duration::from_secs(20),
            "an idle route's value",
            || async move { ask("llama", signal).await.ok() },
        )
        .await;
        assert_eq!(v, 0.0, "{signal} of a route with no traffic yet");
        let err = ask("nothing", signal).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{signal}: {err:?}");
    }

    // The first requests create the stats; the rate follows them.
    for _ in 0..20 {
        let r = http
            .get(format!("http://127.0.0.1:{}/", envoy.listener))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let rate = eventually(Duration::from_secs(20), "a rate after traffic", || async {
        ask("llama", "requests_per_second")
            .await
            .ok()
            .filter(|v| *v > 0.0)
    })
    .await;
    assert!(rate > 0.0);
    assert_eq!(
        ask("nothing", "requests_per_second")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unavailable
    );
    rb.stop().await;
}
