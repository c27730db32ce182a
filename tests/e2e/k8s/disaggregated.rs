//! A disaggregated model (llm-d's prefill/decode split) as two ZonalScaledObjects against the
//! fake API server: the prefill pods, selected by `llm-d.ai/role: prefill`, scale on prompt
//! tokens per second and time to first token; the decode pods (`llm-d.ai/role: decode`) on
//! inter-token latency and KV-cache use. Each pool scrapes only its own role's pods, each zone
//! of each gets its own ScaledObject with those triggers, and a decode zone's KV-cache use
//! reaches KEDA through redbridge's gRPC answers.

use super::{cluster, fake_api, schema};
use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cluster::{pod, Phase, NS};
use common::{eventually, MetricName};
use fake_api::{FakeApi, PODS, SCALED_OBJECTS, ZSOS};
use redbridge::k8s::controller;
use redbridge::k8s::crd::crd_yaml;
use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::ScaledObjectRef;
use redbridge::run as server;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::State;

const LIMIT: Duration = Duration::from_secs(10);

/// The two ZonalScaledObjects of deploy/examples/disaggregated.yaml, with the servers' port.
fn example(port: u16) -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/disaggregated.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let ours = schema::crd_schema(&crd_yaml().unwrap());
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let mut o: Value = serde::Deserialize::deserialize(doc).unwrap();
            let problems = schema::validate_all(&ours, &o);
            assert!(problems.is_empty(), "{problems:#?}");
            o["metadata"]["namespace"] = json!(NS);
            o["spec"]["sources"]["modelServer"]["port"] = json!(port);
            o
        })
        .collect()
}

/// A model-server Pod of `deployment` with llm-d's role label.
fn role_pod(name: &str, deployment: &str, role: &str, ip: &str) -> Value {
    pod(
        name,
        deployment,
        json!({"app.kubernetes.io/name": "llama", "llm-d.ai/role": role}),
        Some(ip),
        Phase::Ready,
    )
}

/// A vLLM `/metrics` with the KV cache `kv` full.
async fn fake_vllm(at: SocketAddr, kv: f64) -> tokio::task::JoinHandle<()> {
    let body = format!(
        "# TYPE vllm:kv_cache_usage_perc gauge\n\
         vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"llama\"}} {kv}\n\
         # TYPE vllm:prompt_tokens_total counter\n\
         vllm:prompt_tokens_total{{engine=\"0\",model_name=\"llama\"}} 1000\n"
    );
    let app = Router::new().route("/metrics", get(move || std::future::ready(body.clone())));
    let listener = TcpListener::bind(at).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// (pool, source, zone, url) of every target redbridge's state serves.
fn targets(state: &State) -> BTreeSet<(String, String, String)> {
    state
        .pools()
        .iter()
        .flat_map(|p| {
            let name = p.pool.name.clone();
            p.pool
                .sources
                .iter()
                .flat_map(|s| {
                    s.targets
                        .iter()
                        .map(|t| (name.clone(), t.zone.clone(), t.url.clone()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The signals of a ScaledObject's triggers with their metric types.
fn triggers(so: &Value) -> Vec<(String, String)> {
    so["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["metadata"]["signal"].as_str().unwrap().to_string(),
                t["metricType"]
                    .as_str()
                    .unwrap_or("AverageValue")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn prefill_and_decode_pools_scale_on_their_own_signals() {
    let port = common::free_port();
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    let servers = [
        fake_vllm(at("127.0.1.1"), 0.1).await, // prefill, us-east-1a
        fake_vllm(at("127.0.1.2"), 0.1).await, // prefill, us-east-1b
        fake_vllm(at("127.0.2.1"), 0.6).await, // decode, us-east-1a
        fake_vllm(at("127.0.2.2"), 0.9).await, // decode, us-east-1b
    ];
    let api = FakeApi::start().await;
    for (name, deployment, role, ip) in [
        ("p-a-1", "llama-prefill-us-east-1a", "prefill", "127.0.1.1"),
        ("p-b-1", "llama-prefill-us-east-1b", "prefill", "127.0.1.2"),
        ("d-a-1", "llama-decode-us-east-1a", "decode", "127.0.2.1"),
        ("d-b-1", "llama-decode-us-east-1b", "decode", "127.0.2.2"),
    ] {
        api.put(PODS, role_pod(name, deployment, role, ip));
    }
    for zso in example(port) {
        api.put(ZSOS, zso);
    }

    let state = server::state(&Config::default());
    let shutdown = CancellationToken::new();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let serving = tokio::spawn({
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let options = server::Options {
            tls: Default::default(),
            scrape: ScrapeSettings::default(),
        };
        async move { server::run(state, grpc, http, &options, shutdown).await }
    });
    let running = tokio::spawn(controller::run(
        api.client(),
        state.clone(),
        cluster::controller_options(),
        shutdown.clone(),
    ));

    // Each pool scrapes its own role's pods only, in their zones.
    let url = |ip: &str| format!("http://{ip}:{port}/metrics");
    let want = BTreeSet::from([
        (
            "llama-prefill".to_string(),
            "us-east-1a".to_string(),
            url("127.0.1.1"),
        ),
        (
            "llama-prefill".to_string(),
            "us-east-1b".to_string(),
            url("127.0.1.2"),
        ),
        (
            "llama-decode".to_string(),
            "us-east-1a".to_string(),
            url("127.0.2.1"),
        ),
        (
            "llama-decode".to_string(),
            "us-east-1b".to_string(),
            url("127.0.2.2"),
        ),
    ]);
    eventually(LIMIT, "both pools' targets", || async {
        (targets(&state) == want).then_some(())
    })
    .await;

    // One ScaledObject per zone and role, each on its role's signals.
    eventually(LIMIT, "four ScaledObjects", || async {
        (api.list(SCALED_OBJECTS).len() == 4).then_some(())
    })
    .await;
    let so = |name: &str| api.get(SCALED_OBJECTS, NS, name).unwrap();
    for zone in ["us-east-1a", "us-east-1b"] {
        let prefill = so(&format!("llama-prefill-{zone}"));
        assert_eq!(
            triggers(&prefill),
            vec![
                ("time_to_first_token_p95".into(), "Value".into()),
                ("prompt_tokens_per_second".into(), "AverageValue".into()),
            ],
            "{prefill}"
        );
        assert_eq!(
            prefill["spec"]["scaleTargetRef"]["name"],
            format!("llama-prefill-{zone}")
        );
        let decode = so(&format!("llama-decode-{zone}"));
        assert_eq!(
            triggers(&decode),
            vec![
                ("kv_cache_utilization".into(), "Value".into()),
                ("inter_token_latency_p90".into(), "Value".into()),
            ],
            "{decode}"
        );
    }

    // A decode zone's KV-cache use is what KEDA reads for it.
    let client = eventually(LIMIT, "redbridge's gRPC port", || async {
        ExternalScalerClient::connect(format!("http://{grpc_addr}"))
            .await
            .ok()
    })
    .await;
    let decode_b = so("llama-decode-us-east-1b");
    let trigger = decode_b["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metadata"]["signal"] == "kv_cache_utilization")
        .unwrap()
        .clone();
    let object = ScaledObjectRef {
        name: "llama-decode-us-east-1b".into(),
        namespace: NS.into(),
        scaler_metadata: serde_json::from_value(trigger["metadata"].clone()).unwrap(),
    };
    let kv = eventually(LIMIT, "decode us-east-1b's KV-cache use", || {
        let (mut client, object) = (client.clone(), object.clone());
        async move {
            let v = common::get_metrics(&mut client, object, MetricName::FromSpec)
                .await
                .ok()?;
            (v.metric_value_float > 0.0).then_some(v.metric_value_float)
        }
    })
    .await;
    assert!((kv - 0.9).abs() < 1e-9, "{kv}");

    shutdown.cancel();
    let _ = tokio::time::timeout(LIMIT, running).await;
    let _ = tokio::time::timeout(LIMIT, serving).await;
    for s in servers {
        s.abort();
    }
}
