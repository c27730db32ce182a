//! `redbridge serve` as its own process: started from a configuration file, asked over gRPC and
//! HTTP, its memory read from /proc, killed when dropped.
#![allow(dead_code)] // each test binary uses a different part

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::{GetMetricsRequest, ScaledObjectRef};

pub const BIN: &str = env!("CARGO_BIN_EXE_redbridge");

pub struct Serve {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    http_client: reqwest::Client,
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address")
}

impl Serve {
    /// Starts `redbridge serve --config <config> <args>` and waits until /healthz answers.
    pub async fn start(config: &Path, log: &Path, args: &[&str]) -> Serve {
        let (grpc, http) = (free_addr(), free_addr());
        let log_path = log.to_path_buf();
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redbridge serve");
        let mut serve = Serve {
            child,
            grpc,
            http,
            http_client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
        };
        let started = Instant::now();
        loop {
            if serve.get("/healthz").await.is_ok() {
                break;
            }
            assert!(
                serve.alive() && started.elapsed() < Duration::from_secs(15),
                "redbridge serve did not answer /healthz within 15 s; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serve
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, path: &str) -> Result<String, reqwest::Error> {
        self.http_client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await?
            .text()
            .await
    }

    /// The `/pools` document.
    pub async fn pools(&self) -> serde_json::Value {
        let body = self.get("/pools").await.expect("/pools answers");
        serde_json::from_str(&body).expect("/pools is JSON")
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("/metrics answers")
    }

    /// (current, peak) resident memory of the process in bytes, from /proc.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status is readable");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("{name} missing from /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub async fn client(&self) -> ExternalScalerClient<tonic::transport::Channel> {
        let endpoint = format!("http://{}", self.grpc);
        for _ in 0..50 {
            if let Ok(c) = ExternalScalerClient::connect(endpoint.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redbridge gRPC did not come up on {endpoint}");
    }

    /// GetMetrics for a trigger of `object`: the value, or the status KEDA would see.
    pub async fn value(&self, object: ScaledObjectRef) -> Result<f64, tonic::Status> {
        value(&mut self.client().await, object).await
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// GetMetrics over an open connection: the value, or the status KEDA would see.
pub async fn value(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    object: ScaledObjectRef,
) -> Result<f64, tonic::Status> {
    {
        let resp = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(object),
                metric_name: String::new(),
            })
            .await?;
        Ok(resp.into_inner().metric_values[0].metric_value_float)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
