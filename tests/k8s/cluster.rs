//! Objects as the Kubernetes API serves them (Pods, EndpointSlices, ZonalScaledObjects), for the
//! fake API server.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

pub const NS: &str = "ml";

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
