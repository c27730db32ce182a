//! The Gateway API Inference Extension against the fake API server: an InferencePool (the real
//! CRD's shape, checked against its schema) selects the model servers and names the endpoint
//! picker; a change to the pool re-targets without a restart; the picker's flow-control queue
//! reaches KEDA for a pool with no ready server; its per-endpoint queues reach each zone through
//! the endpoints' Pods; a cluster without the CRD loses nothing else.

use super::{cluster, fake_api, schema};
use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cluster::{endpoint, pod, slice, Phase, NS};
use common::{eventually, MetricName};
use fake_api::{FakeApi, ENDPOINT_SLICES, INFERENCE_POOLS, PODS, SCALED_OBJECTS, ZSOS};
use redbridge::k8s::controller;
use redbridge::k8s::crd::crd_yaml;
use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::ScaledObjectRef;
use redbridge::run as server;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::State;

const LIMIT: Duration = Duration::from_secs(10);
const POOL_CRD: &str = "inference.networking.k8s.io_inferencepools.yaml";

/// An InferencePool as its users write it, checked against the published CRD.
fn inference_pool(name: &str, app: &str, target_port: u16) -> Value {
    let pool = json!({
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "targetPorts": [{"number": target_port}],
            "endpointPickerRef": {"name": format!("{name}-epp"), "port": {"number": 9002}, "failureMode": "FailClose"}
        }
    });
    let problems = schema::validate_all(&schema::crd_fixture(POOL_CRD, "v1"), &pool);
    assert!(
        problems.is_empty(),
        "not a valid InferencePool: {problems:#?}"
    );
    pool
}

/// A two-zone ZonalScaledObject reading the model servers and the picker through `pool`,
/// checked against redbridge's own CRD (schema and CEL).
fn zso(pool: &str, picker_port: u16) -> Value {
    let zso = json!({
        "apiVersion": "redbridge.io/v1alpha1",
        "kind": "ZonalScaledObject",
        "metadata": {"name": "llama", "namespace": NS},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "zones": [
                {"name": "zone-a", "scaleTargetRef": {"name": "llama-a"}, "maxReplicas": 4},
                {"name": "zone-b", "scaleTargetRef": {"name": "llama-b"}, "maxReplicas": 4}
            ],
            "sources": {
                "modelServer": {"inferencePool": pool},
                "endpointPicker": {"inferencePool": pool, "port": picker_port}
            },
            "signals": {
                "queuePerReplica": {"target": 4, "activationTarget": 0.5, "source": "endpointPicker"},
                "interTokenLatency": {"target": 0.05, "quantile": 0.9}
            },
            "spillover": {"order": ["zone-b", "zone-a"]},
            "scaleToZero": {"idlePeriod": "10m"},
            "scrape": {"interval": "1s", "window": "10s"}
        }
    });
    let ours = schema::crd_schema(&crd_yaml().unwrap());
    let problems = schema::validate_all(&ours, &zso);
    assert!(problems.is_empty(), "{problems:#?}");
    zso
}

/// The picker's Pod (not of any zone's workload) and its Service's EndpointSlice.
fn put_picker(api: &FakeApi, pool: &str, ip: &str) {
    let name = format!("{pool}-epp-1");
    api.put(
        PODS,
        pod(
            &name,
            &format!("{pool}-epp"),
            json!({"app": format!("{pool}-epp")}),
            Some(ip),
            Phase::Ready,
        ),
    );
    api.put(
        ENDPOINT_SLICES,
        slice(
            &format!("{pool}-epp-x1"),
            &format!("{pool}-epp"),
            vec![endpoint(&name, ip, "zone-a", true, false)],
        ),
    );
}

/// (source, zone, url) of every target redbridge's state serves for the pool now.
fn targets(state: &State) -> BTreeSet<(String, String, String)> {
    state
        .pools()
        .iter()
        .filter(|p| p.pool.name == "llama" && p.pool.namespace.as_deref() == Some(NS))
        .flat_map(|p| {
            p.pool
                .sources
                .iter()
                .flat_map(|s| {
                    s.targets
                        .iter()
                        .map(|t| (s.name.clone(), t.zone.clone(), t.url.clone()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn t(source: &str, zone: &str, url: &str) -> (String, String, String) {
    (source.into(), zone.into(), url.into())
}

struct Controller {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), redbridge::k8s::Error>>,
}

impl Controller {
    fn spawn(api: &FakeApi, state: Arc<State>) -> Controller {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(controller::run(
            api.client(),
            state,
            cluster::controller_options(),
            shutdown.clone(),
        ));
        Controller { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn the_pool_selects_the_servers_and_a_change_retargets() {
    let api = FakeApi::start().await;
    cluster::put_three_zone_pods(&api, &[], Duration::from_secs(30));
    put_picker(&api, "llama", "10.3.0.1");
    api.put(INFERENCE_POOLS, inference_pool("llama", "llama", 8000));
    api.put(ZSOS, zso("llama", 9090));
    let state = server::state(&Config::default());
    let running = Controller::spawn(&api, state.clone());

    // The pool's selector and first target port; the picker read once per zone.
    let first = BTreeSet::from([
        t("model-server", "zone-a", "http://10.0.0.1:8000/metrics"),
        t("endpoint-picker", "zone-a", "http://10.3.0.1:9090/metrics"),
        t("endpoint-picker", "zone-b", "http://10.3.0.1:9090/metrics"),
    ]);
    eventually(LIMIT, "the pool's targets", || async {
        (targets(&state) == first).then_some(())
    })
    .await;

    // The pool moves to a new set of servers on another port: followed from the watch.
    api.put(
        PODS,
        pod(
            "llama-next-a-1",
            "llama-a",
            json!({"app": "llama-next"}),
            Some("10.0.0.7"),
            Phase::Ready,
        ),
    );
    api.put(INFERENCE_POOLS, inference_pool("llama", "llama-next", 8001));
    let second = BTreeSet::from([
        t("model-server", "zone-a", "http://10.0.0.7:8001/metrics"),
        t("endpoint-picker", "zone-a", "http://10.3.0.1:9090/metrics"),
        t("endpoint-picker", "zone-b", "http://10.3.0.1:9090/metrics"),
    ]);
    eventually(LIMIT, "targets to follow the pool", || async {
        (targets(&state) == second).then_some(())
    })
    .await;

    // The metrics port and path stay settable over the pool's.
    api.edit(ZSOS, NS, "llama", |o| {
        o["spec"]["sources"]["modelServer"]["port"] = json!(9400);
        o["spec"]["sources"]["modelServer"]["path"] = json!("/stats");
    });
    eventually(LIMIT, "the spec's port and path", || async {
        targets(&state)
            .contains(&t("model-server", "zone-a", "http://10.0.0.7:9400/stats"))
            .then_some(())
    })
    .await;

    // Without the pool, neither source finds anything, and status says why.
    api.delete(INFERENCE_POOLS, NS, "llama");
    eventually(LIMIT, "the targets to go with the pool", || async {
        targets(&state).is_empty().then_some(())
    })
    .await;
    let degraded = eventually(LIMIT, "the Degraded condition", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        let c = o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Degraded" && c["status"] == "True")?
            .clone();
        c["message"]
            .as_str()?
            .contains("InferencePool llama")
            .then_some(c)
    })
    .await;
    assert_eq!(degraded["reason"], "NoTargets", "{degraded}");

    // Watched, not polled: one list, then watches.
    let requests = api.requests();
    let path = "/apis/inference.networking.k8s.io/v1/inferencepools";
    let lists = requests
        .iter()
        .filter(|r| r.path == path && !r.query.contains_key("watch"))
        .count();
    let watches = requests
        .iter()
        .filter(|r| r.path == path && r.query.get("watch").is_some_and(|w| w == "true"))
        .count();
    assert_eq!(lists, 1);
    assert!(watches >= 1);
    running.stop().await;
}

/// An endpoint picker's `/metrics` with `queued` requests held in its flow-control queue, and
/// `per_endpoint` lines (`llm_d_epp_per_endpoint_queue_size` series) after them.
async fn fake_picker(
    at: SocketAddr,
    queued: f64,
    per_endpoint: &str,
) -> tokio::task::JoinHandle<()> {
    let body = format!(
        "# HELP llm_d_epp_flow_control_queue_size Current number of requests in the flow control queue.\n\
         # TYPE llm_d_epp_flow_control_queue_size gauge\n\
         llm_d_epp_flow_control_queue_size{{fairness_id=\"default\",priority=\"0\"}} {queued}\n\
         # HELP llm_d_epp_flow_control_pool_saturation Pool saturation.\n\
         # TYPE llm_d_epp_flow_control_pool_saturation gauge\n\
         llm_d_epp_flow_control_pool_saturation 1\n{per_endpoint}"
    );
    let app = Router::new().route("/metrics", get(move || std::future::ready(body.clone())));
    let listener = TcpListener::bind(at).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// redbridge serving `state` on a free gRPC port until `shutdown`.
async fn serve(
    state: Arc<State>,
    shutdown: CancellationToken,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<(), server::RunError>>,
) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let options = server::Options {
            tls: Default::default(),
            scrape: ScrapeSettings::default(),
        };
        server::run(state, grpc, http, &options, shutdown).await
    });
    (grpc_addr, serving)
}

fn object(so: &Value, signal: &str) -> ScaledObjectRef {
    let trigger = so["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metadata"]["signal"] == signal)
        .unwrap_or_else(|| panic!("no {signal} trigger in {so}"));
    ScaledObjectRef {
        name: so["metadata"]["name"].as_str().unwrap().into(),
        namespace: NS.into(),
        scaler_metadata: serde_json::from_value(trigger["metadata"].clone()).unwrap(),
    }
}

#[tokio::test]
async fn the_pickers_queue_wakes_a_pool_with_no_ready_server() {
    let port = common::free_port();
    let picker = fake_picker(SocketAddr::new("127.0.0.9".parse().unwrap(), port), 7.0, "").await;
    let api = FakeApi::start().await;
    // Scaled to zero: no model server Pod at all; the picker holds 7 requests.
    put_picker(&api, "llama", "127.0.0.9");
    api.put(INFERENCE_POOLS, inference_pool("llama", "llama", 8000));
    api.put(ZSOS, zso("llama", port));

    let state = server::state(&Config::default());
    let shutdown = CancellationToken::new();
    let (grpc_addr, serving) = serve(state.clone(), shutdown.clone()).await;
    let running = Controller::spawn(&api, state.clone());
    let so = eventually(LIMIT, "zone-b's ScaledObject", || async {
        api.get(SCALED_OBJECTS, NS, "llama-zone-b")
    })
    .await;
    assert_eq!(so["spec"]["idleReplicaCount"], 0, "{so}");
    let client = eventually(LIMIT, "redbridge's gRPC port", || async {
        ExternalScalerClient::connect(format!("http://{grpc_addr}"))
            .await
            .ok()
    })
    .await;

    // zone-b, where demand goes first, reads the picker's queue and is active: KEDA scales it
    // from zero to 7 / 4 -> 2 replicas.
    let queue = object(&so, "queue_depth");
    let value = eventually(LIMIT, "the picker's queue through KEDA's calls", || {
        let (mut client, queue) = (client.clone(), queue.clone());
        async move {
            let v = common::get_metrics(&mut client, queue, MetricName::FromSpec)
                .await
                .ok()?;
            (v.metric_value_float > 0.0).then_some(v.metric_value_float)
        }
    })
    .await;
    assert_eq!(value, 7.0);
    let active = client
        .clone()
        .is_active(queue)
        .await
        .unwrap()
        .into_inner()
        .result;
    assert!(active, "a queue above the activation target wakes the zone");

    running.stop().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(LIMIT, serving).await;
    picker.abort();
}

/// Two zones with model servers in both: the picker's per-endpoint queues reach each zone
/// through the endpoints' Pods (a data-parallel rank counts for its Pod), and its flow-control
/// queue, a pool-wide figure, counts in the zone demand goes to first only.
#[tokio::test]
async fn the_pickers_per_endpoint_queues_reach_each_zone() {
    let port = common::free_port();
    let per_endpoint = "# TYPE llm_d_epp_per_endpoint_queue_size gauge\n\
        llm_d_epp_per_endpoint_queue_size{name=\"llama\",model_server_endpoint=\"llama-a-1\"} 3\n\
        llm_d_epp_per_endpoint_queue_size{name=\"llama\",model_server_endpoint=\"llama-b-1-rank-0\"} 2\n\
        llm_d_epp_per_endpoint_queue_size{name=\"llama\",model_server_endpoint=\"llama-b-1-rank-1\"} 3\n\
        llm_d_epp_per_endpoint_queue_size{name=\"llama\",model_server_endpoint=\"llama-gone-1\"} 50\n";
    let picker = fake_picker(
        SocketAddr::new("127.0.0.9".parse().unwrap(), port),
        7.0,
        per_endpoint,
    )
    .await;
    let api = FakeApi::start().await;
    // llama-a-1 serves in zone-a; llama-b-1 is loading in zone-b (the picker already queues
    // for it); zone-b is first in spillover.order.
    cluster::put_three_zone_pods(&api, &[], Duration::from_secs(30));
    put_picker(&api, "llama", "127.0.0.9");
    api.put(INFERENCE_POOLS, inference_pool("llama", "llama", 8000));
    api.put(ZSOS, zso("llama", port));

    let state = server::state(&Config::default());
    let shutdown = CancellationToken::new();
    let (grpc_addr, serving) = serve(state.clone(), shutdown.clone()).await;
    let running = Controller::spawn(&api, state.clone());
    let client = eventually(LIMIT, "redbridge's gRPC port", || async {
        ExternalScalerClient::connect(format!("http://{grpc_addr}"))
            .await
            .ok()
    })
    .await;
    for (zone, want) in [("zone-a", 3.0), ("zone-b", 7.0 + 2.0 + 3.0)] {
        let so = eventually(LIMIT, "the zone's ScaledObject", || async {
            api.get(SCALED_OBJECTS, NS, &format!("llama-{zone}"))
        })
        .await;
        let queue = object(&so, "queue_depth");
        let value = eventually(LIMIT, "the zone's queue through KEDA's calls", || {
            let (mut client, queue) = (client.clone(), queue.clone());
            async move {
                let v = common::get_metrics(&mut client, queue, MetricName::FromSpec)
                    .await
                    .ok()?;
                (v.metric_value_float > 0.0).then_some(v.metric_value_float)
            }
        })
        .await;
        assert_eq!(value, want, "{zone}");
    }
    // The queue is read in both zones: status does not send zone-a to other signals for it.
    let o = api.get(ZSOS, NS, "llama").expect("the ZonalScaledObject");
    assert!(
        !o["status"].to_string().contains("read in zone zone-b only"),
        "{}",
        o["status"]
    );

    running.stop().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(LIMIT, serving).await;
    picker.abort();
}

#[tokio::test]
async fn without_the_inference_pool_crd_other_sources_still_work() {
    let api = FakeApi::start().await;
    api.uninstall(INFERENCE_POOLS);
    cluster::seed_three_zones(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(30),
    );
    api.put(ZSOS, cluster::zso("llama", 8000));
    let state = server::state(&Config::default());
    let running = Controller::spawn(&api, state.clone());
    let want = BTreeSet::from([
        t(
            "gateway",
            "zone-a",
            "http://10.1.0.1:19001/stats/prometheus",
        ),
        t("model-server", "zone-a", "http://10.0.0.1:8000/metrics"),
    ]);
    eventually(
        LIMIT,
        "the pool's targets without InferencePools",
        || async { (targets(&state) == want).then_some(()) },
    )
    .await;
    running.stop().await;
}
