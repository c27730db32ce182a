//! The bundled dashboards render: a real Prometheus (Debian package `prometheus`) scrapes a
//! running redbridge, and every panel's and variable's PromQL, with the template variables
//! filled in as Grafana would, is evaluated through Prometheus's query API. Each must parse and
//! return data; a selector that merely names an exported metric is not enough.

use crate::common::{self, free_port, installed};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::k8s::cluster;
use crate::k8s::fake_api::{FakeApi, PODS, ZSOS};
use common::{eventually, object_ref, Redbridge};
use redbridge::k8s::controller;
use redbridge::proto::GetMetricsRequest;
use redbridge::telemetry::ZoneStatus;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    redbridge_fixtures::read(format!("exposition/{name}"))
}

/// Serves a fixed exposition body on `/metrics`; returns its URL.
async fn serve_static(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/metrics", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/metrics")
}

/// A Prometheus scraping one redbridge every second, killed when dropped.
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
    fn scraping(redbridge: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: redbridge
    static_configs:
      - targets: ["{redbridge}"]
"#
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(installed("prometheus", "REDBRIDGE_PROMETHEUS"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
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

    /// An instant query: `Ok(result)` when Prometheus parsed and evaluated it, else its error.
    async fn query(&self, http: &reqwest::Client, promql: &str) -> Result<Value, String> {
        let resp = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }
}

/// A non-empty vector, or a scalar that is a number.
fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
        Some("scalar") => data["result"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok_and(f64::is_finite)),
        _ => false,
    }
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let re = regex::Regex::new(
        r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]",
    )
    .unwrap();
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let name = c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str();
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no value for ${name}"))
    })
    .into_owned()
}

fn config(envoy: [&str; 2], vllm: [&str; 2], triton: [&str; 2], epp: &str, dead: &str) -> String {
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 5s
    interval: 250ms
    staleAfter: 2s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="backend"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: servers
        profile: vllm
        matchers: ['model_name="facebook/opt-125m"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: triton
        profile: triton
        matchers: ['model="densenet_onnx"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
          - {{ url: "{dead}", zone: zone-c }}
      - name: picker
        profile: epp
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
"#,
        envoy[0], envoy[1], vllm[0], vllm[1], triton[0], triton[1], epp, epp
    )
}

/// The controller running against a fake API server on `rb`'s state, with a ZonalScaledObject
/// `llama` in namespace `routed` that routes between zone-a and zone-b (Istio mode) on its two
/// vLLM servers' queues; returns once it has decided the zones' weights.
async fn routed_pool(rb: &Redbridge) -> (FakeApi, tokio::task::JoinHandle<()>) {
    const NS: &str = "routed";
    let port = free_port();
    let mut servers = Vec::new();
    for (ip, queue) in [("127.0.0.41", 12.0), ("127.0.0.42", 4.0)] {
        let body = format!(
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"llama\"}} {queue}\n"
        );
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let app = Router::new().route("/metrics", get(move || std::future::ready(body.clone())));
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
    let api = FakeApi::start().await;
    for (pod, deployment, ip) in [
        ("llama-a-1", "llama-a", "127.0.0.41"),
        ("llama-b-1", "llama-b", "127.0.0.42"),
    ] {
        let mut p = cluster::llama_pod(pod, deployment, Some(ip), cluster::Phase::Ready);
        p["metadata"]["namespace"] = json!(NS);
        api.put(PODS, p);
    }
    api.put(
        ZSOS,
        json!({
            "apiVersion": "redbridge.io/v1alpha1",
            "kind": "ZonalScaledObject",
            "metadata": {"name": "llama", "namespace": NS},
            "spec": {
                "model": "llama",
                "zones": [
                    {"name": "zone-a", "scaleTargetRef": {"name": "llama-a"}, "maxReplicas": 1},
                    {"name": "zone-b", "scaleTargetRef": {"name": "llama-b"}, "maxReplicas": 4}
                ],
                "sources": {"modelServer": {"selector": {"matchLabels": {"app": "llama"}}, "port": port}},
                "signals": {"queuePerReplica": {"target": 10}},
                "routing": {"istio": {"service": "llama", "region": "r1"}, "maxStep": 100},
                "scrape": {"interval": "250ms", "window": "5s"}
            }
        }),
    );
    let (state, shutdown) = (rb.state.clone(), rb.shutdown.clone());
    let client = api.client();
    let controller = tokio::spawn(async move {
        let _ = controller::run(client, state, cluster::controller_options(), shutdown).await;
        drop(servers);
    });
    eventually(Duration::from_secs(20), "the controller's zone weights", || async {
        let text = redbridge::answer::metrics::render(&rb.state);
        text.lines()
            .any(|l| l.starts_with("redbridge_zone_weight{namespace=\"routed\",pool=\"llama\",zone=\"zone-b\"}"))
            .then_some(())
    })
    .await;
    (api, controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_returns_data_from_a_real_prometheus() {
    let (envoy, vllm, triton) = (
        fixture("envoy-1.40-real-capture.prom"),
        fixture("vllm-v0-v1-mixed-sample.prom"),
        fixture("triton-sample.prom"),
    );
    let urls = [
        serve_static(envoy.clone()).await,
        serve_static(envoy).await,
        serve_static(vllm.clone()).await,
        serve_static(vllm).await,
        serve_static(triton.clone()).await,
        serve_static(triton).await,
        // The picker's pool gauge (not in the capture) in the shape llm-d exports it.
        serve_static(format!(
            "{}# TYPE llm_d_epp_flow_control_pool_saturation gauge\nllm_d_epp_flow_control_pool_saturation{{inference_pool=\"llama\"}} 0.4\n",
            fixture("epp-request-duration-sample.prom")
        ))
        .await,
    ];
    // A target nobody answers on: the "targets down" and "unavailable" panels need one.
    let dead = format!("http://127.0.0.1:{}/metrics", free_port());
    let rb = Redbridge::start(&config(
        [&urls[0], &urls[1]],
        [&urls[2], &urls[3]],
        [&urls[4], &urls[5]],
        &urls[6],
        &dead,
    ))
    .await;

    // The controller's view, as the ZonalScaledObject controller reports it.
    for (zone, ready, spilled_out, spilled_in) in [("zone-a", 3, 4.0, 0.0), ("zone-b", 2, 0.0, 4.0)]
    {
        rb.state.metrics.set_zone_status(
            "ml/llama",
            zone,
            ZoneStatus {
                ready,
                starting: 1,
                desired: ready + 1,
                local_demand: 20.0,
                spilled_in,
                spilled_out,
                weight: None,
            },
        );
    }
    rb.state.metrics.reconciled("ok");
    rb.state.metrics.reconciled("apply");
    // Zone weights come from the controller itself: a ZonalScaledObject with spec.routing,
    // against the fake API, on this redbridge's state.
    let _routed = routed_pool(&rb).await;

    // KEDA's calls: answered ones, and one refused, so both kinds of code exist; the latency
    // trigger is the target line of the model-pool dashboard, at each quantile it offers.
    let mut client = rb.client().await;
    let so = object_ref(
        "ml",
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "10"),
        ],
    );
    let spec = eventually(Duration::from_secs(20), "a metric spec", || {
        let (mut client, so) = (client.clone(), so.clone());
        async move { client.get_metric_spec(so).await.ok() }
    })
    .await
    .into_inner();
    let metric_name = spec.metric_specs[0].metric_name.clone();
    eventually(Duration::from_secs(20), "a first answer", || {
        let (mut client, so, metric_name) = (client.clone(), so.clone(), metric_name.clone());
        async move {
            client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(so),
                    metric_name,
                })
                .await
                .ok()
        }
    })
    .await;
    for q in ["p50", "p90", "p95", "p99"] {
        let latency = object_ref(
            "ml",
            &[
                ("pool", "llama"),
                ("zone", "zone-a"),
                ("signal", &format!("latency_{q}")),
                ("target", "2"),
            ],
        );
        client.get_metric_spec(latency).await.unwrap();
    }
    let missing = object_ref(
        "ml",
        &[("pool", "nope"), ("signal", "queue_depth"), ("target", "1")],
    );
    assert!(client.is_active(missing).await.is_err());

    // Prometheus scrapes redbridge until it holds a few samples of every family.
    let prom = Prometheus::scraping(&rb.http.to_string());
    let http = reqwest::Client::new();
    let ready =
        r#"count_over_time(redbridge_signal_value{signal="mean_latency", zone="zone-b"}[1m]) >= 5"#;
    eventually(Duration::from_secs(60), "five scrapes of redbridge", || {
        let (http, prom) = (http.clone(), &prom);
        async move {
            let data = prom.query(&http, ready).await.ok()?;
            has_data(&data).then_some(())
        }
    })
    .await;

    let mut problems = Vec::new();
    let mut checked = 0;
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "dashboards in {}", dir.display());
    for path in files {
        let f = path.file_name().unwrap().to_string_lossy().into_owned();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Grafana's built-ins as a 1 s scrape gives them; query variables as their queries
        // offer them; custom variables at every value they offer.
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        base.insert("__rate_interval".into(), "15s".into());
        base.insert("__interval".into(), "1s".into());
        base.insert("__range".into(), "1m".into());
        let mut choices: Vec<(String, Vec<String>)> = Vec::new();
        for v in variables(&d) {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            match v["type"].as_str() {
                Some("custom") => {
                    let options = v["query"]
                        .as_str()
                        .unwrap_or_default()
                        .split(',')
                        .map(|o| o.trim().to_string())
                        .collect();
                    choices.push((name, options));
                }
                Some("textbox" | "constant") => {
                    let value = v["current"]["value"]
                        .as_str()
                        .or(v["query"].as_str())
                        .unwrap_or_default();
                    base.insert(name, value.to_string());
                }
                _ => {}
            }
        }
        // The variables' own queries, in order (zone's uses pool): label_values(selector, label)
        // must offer values, and the variable then takes them as Grafana would: every value for
        // a multi-value variable (All), else the first.
        for v in variables(&d) {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            let at = format!("{f}: variable {name}");
            let Some((selector, label)) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
            else {
                problems.push(format!("{at}: not label_values(selector, label): {q}"));
                continue;
            };
            let label = label.trim();
            let promql = format!("count by ({label}) ({})", substitute(selector, &base));
            checked += 1;
            let offered: Vec<String> = match prom.query(&http, &promql).await {
                Ok(data) => data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["metric"][label].as_str().map(String::from))
                    .collect(),
                Err(e) => {
                    problems.push(format!("{at}: {promql}: {e}"));
                    continue;
                }
            };
            match offered.as_slice() {
                [] => problems.push(format!("{at}: {promql} offers no value")),
                [first, ..] if v["multi"] != true => {
                    base.insert(name, first.clone());
                }
                all => {
                    base.insert(name, format!("({})", all.join("|")));
                }
            }
        }
        let mut settings = vec![base.clone()];
        for (name, options) in &choices {
            settings = settings
                .into_iter()
                .flat_map(|s| {
                    options.iter().map(move |o| {
                        let mut s = s.clone();
                        s.insert(name.clone(), o.clone());
                        s
                    })
                })
                .collect();
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                for values in &settings {
                    let promql = substitute(expr, values);
                    let at = format!("{f}: panel {:?}", substitute(title, values));
                    checked += 1;
                    match prom.query(&http, &promql).await {
                        Ok(data) if has_data(&data) => {}
                        Ok(data) => problems.push(format!("{at}: no data from {promql} ({data})")),
                        Err(e) => problems.push(format!("{at}: {promql}: {e}")),
                    }
                }
            }
        }
    }
    drop(prom);
    rb.stop().await;
    assert!(checked > 40, "only {checked} queries found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
