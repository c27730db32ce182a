//! TLS everywhere it is offered: the gRPC port with TLS and mutual TLS (as KEDA connects with a
//! TriggerAuthentication), and the Prometheus-compatible source over mutual TLS to a real
//! Prometheus, plus bearer tokens and tenant headers. Certificates come from the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{eventually, object_ref, FakeEnvoy, Redbridge};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use redbridge::answer::grpc::TlsFiles;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::run::Options;
use redbridge::source::scrape::ScrapeSettings;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const CLUSTER: &str = "httproute/ml/llama/rule/0";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (scripts/test-all.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=redbridge-test-ca",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("/CN=redbridge-test-{name}"),
        );
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let (pem, extfile) = (format!("{name}.pem"), format!("{name}.ext"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn yaml(envoy: &FakeEnvoy) -> String {
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 3s
    interval: 200ms
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets: [{{ url: "{}", zone: zone-a }}]
"#,
        envoy.url()
    )
}

async fn connect(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<ExternalScalerClient<Channel>, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await?;
    Ok(ExternalScalerClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_mutual_tls_accepts_only_clients_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let envoy = FakeEnvoy::start(CLUSTER).await;
    let tls = TlsFiles {
        cert: Some(dir.path().join("server.pem")),
        key: Some(dir.path().join("server.key")),
        client_ca: Some(dir.path().join("ca.pem")),
    };
    let rb = Redbridge::start_with(
        &yaml(&envoy),
        Options {
            tls,
            scrape: ScrapeSettings::default(),
        },
    )
    .await;
    let so = object_ref(
        "ml",
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "1"),
        ],
    );
    let ca = Certificate::from_pem(read(dir.path(), "ca.pem"));

    // With the client certificate, as KEDA sends it from a TriggerAuthentication: served.
    let with_cert = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(dir.path(), "client.pem"),
            read(dir.path(), "client.key"),
        ));
    let mut client = eventually(Duration::from_secs(5), "an mTLS connection", || {
        let tls = with_cert.clone();
        async move { connect(rb.grpc, tls).await.ok() }
    })
    .await;
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .expect("served over mTLS")
        .into_inner();
    assert_eq!(
        spec.metric_specs[0].metric_name,
        "redbridge-llama-zone-a-requests_per_second"
    );

    // Without a client certificate: refused during the handshake or on the first call.
    let without = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let refused = match connect(rb.grpc, without).await {
        Err(_) => true,
        Ok(mut c) => c.get_metric_spec(so.clone()).await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");

    // Plain text on the TLS port: refused.
    let plain = ExternalScalerClient::connect(format!("http://{}", rb.grpc)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.get_metric_spec(so).await.is_err(),
    };
    assert!(refused, "a plain-text client was served on the TLS port");
    rb.stop().await;
}

fn prometheus_binary() -> PathBuf {
    std::env::var("REDBRIDGE_PROMETHEUS")
        .map(PathBuf::from)
        .ok()
        .or_else(|| ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].iter().map(PathBuf::from).find(|p| p.exists()))
        .expect("prometheus not found: run scripts/test-all.sh (it installs the Debian package) or set REDBRIDGE_PROMETHEUS")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_source_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let envoy = FakeEnvoy::start(CLUSTER).await;
    envoy.set_traffic(20.0, 0.0, 10.0);
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    static_configs:\n      - targets: [\"{}\"]\n        labels: {{ zone: zone-a }}\n",
            envoy.addr
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {0}/server.pem\n  key_file: {0}/server.key\n  client_ca_file: {0}/ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
            d.display()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _prom = Killed(
        Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--web.config.file={}", d.join("web.yml").display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let source = |name: &str, client_cert: bool| {
        let identity = if client_cert {
            format!(
                ", certFile: \"{0}/client.pem\", keyFile: \"{0}/client.key\"",
                d.display()
            )
        } else {
            String::new()
        };
        format!(
            r#"      - name: {name}
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        prometheus:
          url: "https://127.0.0.1:{port}"
          zoneLabel: zone
          zones: [zone-a]
          rateWindow: 5s
          interval: 1s
          tls: {{ caFile: "{}/ca.pem"{identity} }}
"#,
            d.display()
        )
    };
    let yaml = format!(
        "pools:\n  - name: llama\n    namespace: ml\n    window: 5s\n    sources:\n{}{}",
        source("mtls", true),
        source("nocert", false)
    );
    let rb = Redbridge::start(&yaml).await;
    let ask = |source: &'static str| {
        let rb = &rb;
        async move {
            rb.value(&[
                ("pool", "llama"),
                ("zone", "zone-a"),
                ("signal", "requests_per_second"),
                ("target", "1"),
                ("source", source),
            ])
            .await
        }
    };
    // Prometheus needs a full rate window of scrapes before the rate settles near the truth.
    let v = eventually(
        Duration::from_secs(30),
        "a settled rate over mutual TLS",
        || async { ask("mtls").await.ok().filter(|v| (v - 20.0).abs() < 4.0) },
    )
    .await;
    assert!(v > 0.0);
    let refused = ask("nocert").await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "{}",
        refused.message()
    );
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_and_tenant_header_reach_the_server() {
    // A stand-in for a Mimir query frontend: it only answers with the right token and tenant.
    /// (Authorization, X-Scope-OrgID) of every request.
    type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let app = Router::new().route(
        "/prometheus/api/v1/query",
        post({
            let seen = seen.clone();
            move |headers: HeaderMap| async move {
                let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
                let (auth, tenant) = (get("authorization"), get("x-scope-orgid"));
                seen.lock().unwrap().push((auth.clone(), tenant.clone()));
                if auth.as_deref() != Some("Bearer t0ken") || tenant.as_deref() != Some("ml") {
                    return (axum::http::StatusCode::UNAUTHORIZED, "no".to_string());
                }
                (
                    axum::http::StatusCode::OK,
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"zone":"zone-a"},"value":[1,"7"]}]}}"#.to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let yaml = format!(
        r#"
pools:
  - name: llama
    namespace: ml
    sources:
      - name: mimir
        profile: custom
        custom:
          requests: {{ metric: my_requests_total, kind: counter }}
        prometheus:
          url: "http://{addr}/prometheus"
          zoneLabel: zone
          zones: [zone-a]
          interval: 1s
          bearerTokenFile: "{}"
          headers: {{ X-Scope-OrgID: ml }}
"#,
        token.display()
    );
    let rb = Redbridge::start(&yaml).await;
    let v = eventually(
        Duration::from_secs(10),
        "a value through the authenticated API",
        || async {
            rb.value(&[
                ("pool", "llama"),
                ("zone", "zone-a"),
                ("signal", "requests_per_second"),
                ("target", "1"),
            ])
            .await
            .ok()
        },
    )
    .await;
    assert_eq!(v, 7.0);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(a, t)| a.as_deref() == Some("Bearer t0ken") && t.as_deref() == Some("ml")),
        "{seen:?}"
    );
    rb.stop().await;
}
