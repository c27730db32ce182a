//! Objects as the Kubernetes API serves them (Pods, EndpointSlices, ZonalScaledObjects), for the
//! fake API server.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use redbridge::k8s::controller::Options;
use redbridge::k8s::scaledobject::TriggerSettings;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::fake_api::{FakeApi, ENDPOINT_SLICES, PODS};

pub const NS: &str = "ml";
/// The address the ScaledObjects' triggers send KEDA to.
pub const SCALER: &str = "redbridge.redbridge.svc:9090";

/// RFC 3339, `ago` before now.
pub fn ago(ago: Duration) -> String {
    (Timestamp::now() - SignedDuration::try_from(ago).unwrap()).to_string()
}

/// How far a Pod has got.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    Ready,
    /// Scheduled this long ago, not Ready yet (loading its model).
    Loading(Duration),
    /// The scheduler has found no node for this long.
    Unschedulable(Duration),
}

/// A Pod of a Deployment (through its ReplicaSet `<deployment>-7c9d`), as the API serves it.
pub fn pod(name: &str, deployment: &str, labels: Value, ip: Option<&str>, phase: Phase) -> Value {
    let conditions = match phase {
        Phase::Ready => json!([
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(Duration::from_secs(900))},
            {"type": "Initialized", "status": "True", "lastTransitionTime": ago(Duration::from_secs(900))},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": ago(Duration::from_secs(600))},
            {"type": "Ready", "status": "True", "lastTransitionTime": ago(Duration::from_secs(600))}
        ]),
        Phase::Loading(since) => json!([
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(since)},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": ago(since)},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": ago(since)}
        ]),
        Phase::Unschedulable(since) => json!([
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/12 nodes are available: 12 Insufficient nvidia.com/gpu. preemption: 0/12 nodes are available.",
             "lastTransitionTime": ago(since)}
        ]),
    };
    let mut labels = labels;
    labels["pod-template-hash"] = json!("7c9d");
    let mut status = json!({
        "phase": if matches!(phase, Phase::Unschedulable(_)) { "Pending" } else { "Running" },
        "conditions": conditions,
        "qosClass": "Burstable",
    });
    if let Some(ip) = ip {
        status["hostIP"] = json!("192.168.10.4");
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
        status["startTime"] = json!(ago(Duration::from_secs(900)));
    }
    let mut spec = json!({
        "containers": [{
            "name": "server",
            "image": "vllm/vllm-openai:v0.11.0",
            "args": ["--model", "meta-llama/Llama-3.1-70B-Instruct"],
            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
            "resources": {"limits": {"nvidia.com/gpu": "4"}, "requests": {"nvidia.com/gpu": "4"}}
        }],
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default"
    });
    if ip.is_some() {
        spec["nodeName"] = json!("gpu-node-1");
    }
    json!({
        "metadata": {
            "name": name,
            "namespace": NS,
            "generateName": format!("{deployment}-7c9d-"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deployment}-7c9d"),
                "uid": "6f1c1a52-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": spec,
        "status": status
    })
}

/// One endpoint of an EndpointSlice, backed by a Pod.
pub fn endpoint(pod: &str, ip: &str, zone: &str, ready: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready || terminating, "terminating": terminating},
        "nodeName": "gpu-node-1",
        "zone": zone,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": NS, "uid": "0"}
    })
}

/// An EndpointSlice of `service`, as the EndpointSlice controller writes it.
pub fn slice(name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": NS,
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": "1", "controller": true, "blockOwnerDeletion": true}]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "metrics", "port": 19001, "protocol": "TCP"}]
    })
}

/// A three-zone ZonalScaledObject: a gateway Service and model servers by selector.
pub fn zso(name: &str, model_port: u16) -> Value {
    json!({
        "apiVersion": "redbridge.io/v1alpha1",
        "kind": "ZonalScaledObject",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": "meta-llama/Llama-3.1-70B-Instruct",
            "zones": [
                {"name": "zone-a", "scaleTargetRef": {"name": "llama-a"}, "minReplicas": 1, "maxReplicas": 2},
                {"name": "zone-b", "scaleTargetRef": {"name": "llama-b"}, "minReplicas": 1, "maxReplicas": 4},
                {"name": "zone-c", "scaleTargetRef": {"name": "llama-c"}, "minReplicas": 1, "maxReplicas": 4}
            ],
            "gpu": {"count": 4},
            "sources": {
                "gateway": {"service": "llm-gateway", "port": "metrics", "routeMatcher": "envoy_cluster_name=\"httproute/ml/llama/rule/0\""},
                "modelServer": {"selector": {"matchLabels": {"app": "llama"}}, "port": model_port}
            },
            "signals": {
                "latency": {"target": 4},
                "queuePerReplica": {"target": 10, "activationTarget": 1}
            },
            "spillover": {"order": ["zone-a", "zone-b", "zone-c"], "unschedulableAfter": "2m"},
            "warmup": {"modelLoadTime": "5m"},
            "scrape": {"interval": "1s", "window": "10s"}
        }
    })
}

pub fn llama_labels() -> Value {
    json!({"app": "llama"})
}

pub fn gateway_labels() -> Value {
    json!({"app": "llm-gateway"})
}

/// A model-server Pod (`app: llama`) of `deployment`.
pub fn llama_pod(name: &str, deployment: &str, ip: Option<&str>, phase: Phase) -> Value {
    pod(name, deployment, llama_labels(), ip, phase)
}

/// A Ready gateway proxy Pod of the `llm-gateway` Deployment.
pub fn gateway_pod(name: &str, ip: &str) -> Value {
    pod(
        name,
        "llm-gateway",
        gateway_labels(),
        Some(ip),
        Phase::Ready,
    )
}

/// The Pods of the standard three-zone cluster: a Ready gateway proxy per `(name, address, zone)`
/// of `gateways`; zone-a's model server Ready at 10.0.0.1, zone-b's at 10.0.1.1 loading for
/// `loading_for`, zone-c's unschedulable for ten minutes.
pub fn put_three_zone_pods(api: &FakeApi, gateways: &[(&str, &str, &str)], loading_for: Duration) {
    for (name, ip, _) in gateways {
        api.put(PODS, gateway_pod(name, ip));
    }
    api.put(
        PODS,
        llama_pod("llama-a-1", "llama-a", Some("10.0.0.1"), Phase::Ready),
    );
    api.put(
        PODS,
        llama_pod(
            "llama-b-1",
            "llama-b",
            Some("10.0.1.1"),
            Phase::Loading(loading_for),
        ),
    );
    api.put(
        PODS,
        llama_pod(
            "llama-c-1",
            "llama-c",
            None,
            Phase::Unschedulable(Duration::from_secs(600)),
        ),
    );
}

/// The gateway Service's EndpointSlice `llm-gateway-abcde`, one ready endpoint per
/// `(pod, address, zone)` of `gateways`.
pub fn put_gateway_slice(api: &FakeApi, gateways: &[(&str, &str, &str)]) {
    let endpoints = gateways
        .iter()
        .map(|(pod, ip, zone)| endpoint(pod, ip, zone, true, false))
        .collect();
    api.put(
        ENDPOINT_SLICES,
        slice("llm-gateway-abcde", "llm-gateway", endpoints),
    );
}

/// Seeds the standard three-zone cluster ([`put_three_zone_pods`]) with its gateway
/// EndpointSlice ([`put_gateway_slice`]).
pub fn seed_three_zones(api: &FakeApi, gateways: &[(&str, &str, &str)], loading_for: Duration) {
    put_three_zone_pods(api, gateways, loading_for);
    put_gateway_slice(api, gateways);
}

/// Controller options for tests: triggers pointing at [`SCALER`], a 100 ms tick.
pub fn controller_options() -> Options {
    let mut options = Options::new(TriggerSettings {
        scaler_address: SCALER.into(),
        cluster_trigger_authentication: None,
    });
    options.tick = Duration::from_millis(100);
    // A short lease: the controller holds it within milliseconds and renews it every second.
    options.leader.duration = Duration::from_secs(3);
    options
}

/// [`zso`] read from its model servers' queues only (no gateway source).
pub fn queue_zso(name: &str, model_port: u16) -> Value {
    let mut zso = zso(name, model_port);
    if let Some(sources) = zso["spec"]["sources"].as_object_mut() {
        sources.remove("gateway");
    }
    zso["spec"]["signals"] = json!({"queuePerReplica": {"target": 10}});
    zso
}

/// A vLLM server answering `/metrics` on one address with a queue the test sets, plus, scrape
/// after scrape, the next of `noise`'s offsets (sampling noise).
#[derive(Clone)]
pub struct FakeVllm {
    pub queue: Arc<Mutex<f64>>,
}

impl FakeVllm {
    pub async fn start(addr: SocketAddr, queue: f64) -> FakeVllm {
        FakeVllm::noisy(addr, queue, vec![0.0]).await
    }

    pub async fn noisy(addr: SocketAddr, queue: f64, noise: Vec<f64>) -> FakeVllm {
        let me = FakeVllm {
            queue: Arc::new(Mutex::new(queue)),
        };
        let q = me.queue.clone();
        let scrapes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let n = scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let v = *q.lock().unwrap() + noise[n % noise.len()];
                async move {
                    format!(
                        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
                         # TYPE vllm:num_requests_waiting gauge\n\
                         vllm:num_requests_waiting{{model_name=\"llama\"}} {v}\n\
                         # HELP vllm:num_requests_running Number of requests in model execution batches.\n\
                         # TYPE vllm:num_requests_running gauge\n\
                         vllm:num_requests_running{{model_name=\"llama\"}} 4\n"
                    )
                }
            }),
        );
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        me
    }
}
