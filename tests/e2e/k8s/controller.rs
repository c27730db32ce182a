//! The ZonalScaledObject controller against a fake API server at the HTTP level: one ScaledObject
//! per zone by server-side apply (each valid against KEDA's CRD schema), drift repaired (and only
//! drift reported), zones removed, status and events written, and written only when they change
//! (simulated minutes on paused time); and, end to end through redbridge's gRPC answers, the
//! spillover and warm-up KEDA reads.

use super::{cluster, fake_api, schema};
use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cluster::{llama_pod, FakeVllm, Phase, NS, SCALER};
use common::{eventually, MetricName};
use fake_api::{FakeApi, Recorded, EVENTS, PODS, SCALED_OBJECTS, ZSOS};
use redbridge::config::trigger::TriggerQuery;
use redbridge::k8s::controller::{self, Options, WallClock};
use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::ScaledObjectRef;
use redbridge::run as server;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::State;

const LIMIT: Duration = Duration::from_secs(15);
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

struct Running {
    state: Arc<State>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), redbridge::k8s::Error>>,
}

impl Running {
    /// The controller on fresh state, with its own shutdown.
    fn start(api: &FakeApi) -> Running {
        Running::spawn(
            api,
            server::state(&Config::default()),
            CancellationToken::new(),
        )
    }

    /// The controller on `state` until `shutdown`, resyncing every 500 ms.
    fn spawn(api: &FakeApi, state: Arc<State>, shutdown: CancellationToken) -> Running {
        let mut options = cluster::controller_options();
        options.resync = Duration::from_millis(500);
        Running::with(api, options, state, shutdown)
    }

    /// The controller with the deployment's tick and resync on `wall`, a clock that follows
    /// tokio's, for tests on paused time.
    fn as_deployed(api: &FakeApi, wall: WallClock) -> Running {
        let mut options = cluster::controller_options();
        let defaults = Options::new(options.triggers.clone());
        (options.tick, options.resync) = (defaults.tick, defaults.resync);
        options.wall = wall;
        Running::with(
            api,
            options,
            server::state(&Config::default()),
            CancellationToken::new(),
        )
    }

    fn with(
        api: &FakeApi,
        options: Options,
        state: Arc<State>,
        shutdown: CancellationToken,
    ) -> Running {
        let task = tokio::spawn(controller::run(
            api.client(),
            state.clone(),
            options,
            shutdown.clone(),
        ));
        Running {
            state,
            shutdown,
            task,
        }
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

fn seed(api: &FakeApi) {
    cluster::seed_three_zones(
        api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
}

/// [`seed`], with a gateway proxy in zone-b too.
fn seed_two_gateways(api: &FakeApi) {
    cluster::seed_three_zones(
        api,
        &[
            ("gw-a", "10.1.0.1", "zone-a"),
            ("gw-b", "10.1.0.2", "zone-b"),
        ],
        Duration::from_secs(20),
    );
}

fn so_path(name: &str) -> String {
    format!("/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/{name}")
}

fn applies(api: &FakeApi, name: &str) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == so_path(name))
        .collect()
}

/// The status writes for the CR `name`.
fn status_writes(api: &FakeApi, name: &str) -> Vec<Value> {
    let path =
        format!("/apis/redbridge.io/v1alpha1/namespaces/{NS}/zonalscaledobjects/{name}/status");
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .filter_map(|r| Some(r.body?["status"].clone()))
        .collect()
}

/// Every publication of an event with `reason` (created, or repeated in its series), by note.
fn published(api: &FakeApi, reason: &str) -> Vec<String> {
    let path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    api.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&path) && matches!(r.method.as_str(), "POST" | "PATCH"))
        .filter_map(|r| r.body)
        .filter(|e| e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn events(api: &FakeApi, reason: &str) -> Vec<Value> {
    api.list(EVENTS)
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn condition<'a>(zso: &'a Value, kind: &str) -> Option<&'a Value> {
    zso["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The value of the series `name` whose labels include all of `labels`, in an exposition.
fn series(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        let all = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok())?
    })
}

/// (group, resource[/subresource], verb) of a request, as RBAC sees it.
fn rbac_of(r: &Recorded) -> (String, String, &'static str) {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs[0] {
        "api" => ("", &segs[2..]),
        _ => (segs[1], &segs[3..]),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] => tail,
        tail => tail,
    };
    let resource = match rest {
        [resource, _, sub] => format!("{resource}/{sub}"),
        [resource, ..] => resource.to_string(),
        [] => String::new(),
    };
    let verb = match (r.method.as_str(), rest.len()) {
        ("GET", 1) if r.query.get("watch").is_some_and(|w| w == "true") => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    (group.to_string(), resource, verb)
}

/// Every request the controller made is allowed by deploy/rbac/clusterrole.yaml, and every rule
/// there was needed (events' patch only for repeated events).
fn check_rbac(requests: &[Recorded]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rbac/clusterrole.yaml"
    );
    let role: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    allowed.insert((
                        g.as_str().unwrap().to_string(),
                        res.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    let mut used = std::collections::BTreeSet::new();
    let mut applied = std::collections::BTreeSet::new();
    for r in requests {
        let (g, res, verb) = rbac_of(r);
        // Server-side apply of an object that does not exist yet also needs create.
        if verb == "patch" && res == "scaledobjects" && applied.insert(r.path.clone()) {
            used.insert((g.clone(), res.clone(), "create".to_string()));
        }
        used.insert((g, res, verb.to_string()));
    }
    let denied: Vec<_> = used.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:?}"
    );
    // The routing kinds' rules are checked both ways by tests/k8s_routing.rs, which writes them.
    let routing = [
        "gateway.networking.k8s.io",
        "gateway.envoyproxy.io",
        "networking.istio.io",
    ];
    let unused: Vec<_> = allowed
        .difference(&used)
        .filter(|(_, res, verb)| !(res == "events" && verb == "patch"))
        .filter(|(group, _, _)| !routing.contains(&group.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "rules the controller never needed: {unused:?}"
    );
}

#[tokio::test]
async fn scaled_objects_per_zone_drift_status_and_events() {
    let api = FakeApi::start().await;
    seed(&api);
    let created = api.put(ZSOS, cluster::zso("llama", 8000));
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let running = Running::start(&api);

    // One ScaledObject per zone, created by server-side apply.
    eventually(LIMIT, "three ScaledObjects", || async {
        (api.list(SCALED_OBJECTS).len() == 3).then_some(())
    })
    .await;
    let keda = schema::keda_scaledobject_schema();
    for zone in ZONES {
        let name = format!("llama-{zone}");
        let requests = applies(&api, &name);
        assert!(!requests.is_empty(), "{name} applied");
        for r in &requests {
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/apply-patch+yaml"),
                "{name}"
            );
            assert_eq!(
                r.query.get("fieldManager").map(String::as_str),
                Some("redbridge")
            );
            assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
            let body = r.body.as_ref().unwrap();
            let problems = schema::validate_all(&keda, body);
            assert!(
                problems.is_empty(),
                "{name}: KEDA's schema refuses what redbridge writes: {problems:#?}"
            );
        }
        let so = api.get(SCALED_OBJECTS, NS, &name).unwrap();
        let owner = &so["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["name"].as_str(),
                owner["uid"].as_str()
            ),
            (Some("ZonalScaledObject"), Some("llama"), Some(uid.as_str()))
        );
        assert_eq!(
            owner["controller"], true,
            "deleted with the CR by the garbage collector"
        );
        assert_eq!(
            so["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "redbridge"
        );
        assert_eq!(
            so["spec"]["scaleTargetRef"]["name"],
            format!("llama-{}", &zone[5..])
        );
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 2, "one trigger per signal");
        for t in triggers {
            let meta: HashMap<String, String> =
                serde_json::from_value(t["metadata"].clone()).unwrap();
            assert_eq!(meta["scalerAddress"], SCALER);
            let q = TriggerQuery::from_metadata(&meta).unwrap();
            assert_eq!((q.pool.as_str(), q.zone.as_deref()), ("llama", Some(zone)));
            let want = if q.signal.base_name() == "latency" {
                "Value"
            } else {
                "AverageValue"
            };
            assert_eq!(t["metricType"], want, "{}", q.signal.name());
        }
    }
    assert_eq!(
        api.get(SCALED_OBJECTS, NS, "llama-zone-a").unwrap()["spec"]["maxReplicaCount"],
        2
    );

    // Status: observedGeneration, conditions, per-zone replicas; zone-c is full (no GPU node).
    let zso = eventually(LIMIT, "status with the unschedulable zone", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        let zones = o["status"]["zones"].as_array()?;
        (zones.len() == 3 && zones[2]["unschedulableReplicas"] == 1).then_some(o)
    })
    .await;
    assert_eq!(zso["status"]["observedGeneration"], 1);
    assert_eq!(condition(&zso, "Ready").unwrap()["status"], "True");
    let degraded = condition(&zso, "Degraded").unwrap();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("PodsUnschedulable"))
    );
    assert!(degraded["message"]
        .as_str()
        .unwrap()
        .contains("zone zone-c has 1 Pods unschedulable"));
    let zones = zso["status"]["zones"].as_array().unwrap();
    assert_eq!(
        (
            zones[0]["readyReplicas"].as_i64(),
            zones[0]["gpus"].as_i64()
        ),
        (Some(1), Some(4))
    );
    assert_eq!(zones[1]["startingReplicas"], 1);
    assert_eq!(zones[2]["full"], "PodsUnschedulable");
    let status_writes: Vec<Recorded> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                == format!(
                    "/apis/redbridge.io/v1alpha1/namespaces/{NS}/zonalscaledobjects/llama/status"
                )
        })
        .collect();
    assert!(status_writes.iter().all(|r| r.method == "PATCH"
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")));
    assert!(
        !events(&api, "ZoneFull").is_empty(),
        "a Warning event says the zone is full"
    );
    let zone_full = &events(&api, "ZoneFull")[0];
    assert_eq!(zone_full["type"], "Warning");
    assert_eq!(zone_full["regarding"]["name"], "llama");

    // Drift: someone edits a ScaledObject; redbridge applies it again.
    let before = applies(&api, "llama-zone-b").len();
    api.edit(SCALED_OBJECTS, NS, "llama-zone-b", |o| {
        o["spec"]["maxReplicaCount"] = json!(99);
        o["spec"]["triggers"].as_array_mut().unwrap().pop();
    });
    eventually(LIMIT, "the drift to be repaired", || async {
        let so = api.get(SCALED_OBJECTS, NS, "llama-zone-b")?;
        (so["spec"]["maxReplicaCount"] == 4 && so["spec"]["triggers"].as_array()?.len() == 2)
            .then_some(())
    })
    .await;
    assert!(applies(&api, "llama-zone-b").len() > before);
    assert!(!events(&api, "DriftRepaired").is_empty());
    // Deleted by hand: written again.
    api.delete(SCALED_OBJECTS, NS, "llama-zone-c");
    eventually(LIMIT, "the deleted ScaledObject back", || async {
        api.get(SCALED_OBJECTS, NS, "llama-zone-c").map(|_| ())
    })
    .await;

    // A zone removed from the spec: its ScaledObject is deleted, status follows the generation.
    api.edit(ZSOS, NS, "llama", |o| {
        o["spec"]["zones"].as_array_mut().unwrap().pop();
        o["spec"]["spillover"]["order"] = json!(["zone-a", "zone-b"]);
    });
    eventually(LIMIT, "zone-c's ScaledObject deleted", || async {
        api.get(SCALED_OBJECTS, NS, "llama-zone-c")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(api
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == so_path("llama-zone-c")));
    eventually(LIMIT, "status for generation 2", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        (o["status"]["observedGeneration"] == 2 && o["status"]["zones"].as_array()?.len() == 2)
            .then_some(())
    })
    .await;

    // An invalid spec: Ready=False naming the field, a Warning event, ScaledObjects left alone.
    api.edit(ZSOS, NS, "llama", |o| {
        o["spec"]["sources"]["gateway"]["routeMatcher"] = json!("llama-route")
    });
    let zso = eventually(LIMIT, "InvalidSpec in status", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        (condition(&o, "Ready")?["reason"] == "InvalidSpec").then_some(o)
    })
    .await;
    let ready = condition(&zso, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("spec.sources.gateway.routeMatcher: `llama-route` is not a label matcher"));
    assert_eq!(ready["observedGeneration"], 3);
    let invalid = events(&api, "InvalidSpec");
    assert_eq!(
        invalid.first().map(|e| e["type"].clone()),
        Some(json!("Warning"))
    );
    assert_eq!(
        api.list(SCALED_OBJECTS).len(),
        2,
        "an invalid spec deletes nothing"
    );

    let exposition = redbridge::answer::metrics::render(&running.state);
    for outcome in ["ok", "invalid_spec"] {
        assert!(
            exposition.contains(&format!(
                "redbridge_reconciles_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome}"
        );
    }
    let pool = [
        ("namespace", NS),
        ("pool", "llama"),
        ("zone", "zone-a"),
        ("state", "ready"),
    ];
    assert_eq!(
        series(&exposition, "redbridge_zone_replicas", &pool),
        Some(1.0)
    );

    // The CR goes: redbridge stops serving its pool (the API's garbage collector removes the
    // ScaledObjects through their owner references).
    api.delete(ZSOS, NS, "llama");
    eventually(LIMIT, "the pool to go", || async {
        running.state.pools().is_empty().then_some(())
    })
    .await;
    let exposition = redbridge::answer::metrics::render(&running.state);
    assert_eq!(
        series(&exposition, "redbridge_zone_replicas", &pool),
        None,
        "forgotten"
    );
    running.stop().await;
    check_rbac(&api.requests());
}

/// redbridge serving (scraping) and its controller on their own state, as one replica.
async fn replica(api: &FakeApi, shutdown: &CancellationToken) -> Running {
    let state = server::state(&Config::default());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn({
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let options = server::Options {
            tls: Default::default(),
            scrape: ScrapeSettings::default(),
        };
        async move { server::run(state, grpc, http, &options, shutdown).await }
    });
    Running::spawn(api, state, shutdown.clone())
}

/// GetMetricSpec then GetMetrics, as KEDA calls them; `None` while redbridge has no answer yet.
async fn metric(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    so: &Value,
    signal: &str,
) -> Option<f64> {
    let trigger = so["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metadata"]["signal"] == signal)
        .unwrap();
    let metadata: HashMap<String, String> =
        serde_json::from_value(trigger["metadata"].clone()).unwrap();
    let object = ScaledObjectRef {
        name: so["metadata"]["name"].as_str().unwrap().into(),
        namespace: NS.into(),
        scaler_metadata: metadata,
    };
    let value = common::get_metrics(client, object, MetricName::FromSpec)
        .await
        .ok()?;
    Some(value.metric_value_float)
}

/// What KEDA reads for one zone's queue trigger, once it settles on `want`.
async fn settles(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    api: &FakeApi,
    zone: &str,
    want: f64,
) {
    let so = api
        .get(SCALED_OBJECTS, NS, &format!("llama-{zone}"))
        .unwrap();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        last = metric(client, &so, "queue_depth").await;
        if last.is_some_and(|v| (v - want).abs() < 1e-6) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{zone}: KEDA reads {last:?}, want {want}");
}

#[tokio::test]
async fn spillover_and_warm_up_reach_what_keda_reads() {
    // Model servers on loopback addresses, one port: the addresses discovery gives the Pods.
    let probe = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    // zone-a: 2 replicas = its max, 60 waiting. zone-b: 1 ready (5 waiting), 1 loading.
    // zone-c: 1 ready, idle.
    let _a1 = FakeVllm::start(at("127.0.0.2"), 30.0).await;
    let _a2 = FakeVllm::start(at("127.0.0.3"), 30.0).await;
    let _b1 = FakeVllm::start(at("127.0.0.4"), 5.0).await;
    let _c1 = FakeVllm::start(at("127.0.0.5"), 0.0).await;
    let api = FakeApi::start().await;
    api.put(
        PODS,
        llama_pod("llama-a-1", "llama-a", Some("127.0.0.2"), Phase::Ready),
    );
    api.put(
        PODS,
        llama_pod("llama-a-2", "llama-a", Some("127.0.0.3"), Phase::Ready),
    );
    api.put(
        PODS,
        llama_pod("llama-b-1", "llama-b", Some("127.0.0.4"), Phase::Ready),
    );
    api.put(
        PODS,
        llama_pod(
            "llama-b-2",
            "llama-b",
            Some("127.0.0.6"),
            Phase::Loading(Duration::from_secs(30)),
        ),
    );
    api.put(
        PODS,
        llama_pod("llama-c-1", "llama-c", Some("127.0.0.5"), Phase::Ready),
    );
    let zso = cluster::queue_zso("llama", port);
    api.put(ZSOS, zso);

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
    let kube = Running::spawn(&api, state.clone(), shutdown.clone());
    eventually(LIMIT, "three ScaledObjects", || async {
        (api.list(SCALED_OBJECTS).len() == 3).then_some(())
    })
    .await;
    let mut client = eventually(LIMIT, "redbridge's gRPC port", || async {
        ExternalScalerClient::connect(format!("http://{grpc_addr}"))
            .await
            .ok()
    })
    .await;

    // zone-a is at its maximum: 60 waiting, 2 x 10 served, 40 spill: 35 fill zone-b up to its
    // maximum (4 x 10 - 5), 5 go on to zone-c. zone-b's 5 + 35 = 40 is capped while its second
    // replica loads at what 1 ready + 1 starting replicas take: 20.
    settles(&mut client, &api, "zone-a", 60.0).await;
    settles(&mut client, &api, "zone-b", 20.0).await;
    settles(&mut client, &api, "zone-c", 5.0).await;
    // /metrics shows what KEDA reads.
    let exposition = redbridge::answer::metrics::render(&state);
    let zone_b = [
        ("pool", "llama"),
        ("zone", "zone-b"),
        ("signal", "queue_depth"),
    ];
    assert_eq!(
        series(&exposition, "redbridge_signal_value", &zone_b),
        Some(20.0),
        "{exposition}"
    );
    let status = eventually(LIMIT, "spill in status", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        let zones = o["status"]["zones"].as_array()?.clone();
        (zones.len() == 3 && zones[1]["spilledIn"] == 35.0).then_some(zones)
    })
    .await;
    assert_eq!(status[0]["full"], "AtMaxReplicas");
    assert_eq!(status[0]["spilledOut"], 40.0);
    assert_eq!(
        (
            status[1]["desiredReplicas"].as_i64(),
            status[2]["spilledIn"].as_f64()
        ),
        (Some(2), Some(5.0))
    );

    // The second replica of zone-b is Ready (and serving): the cap goes, the spill stays.
    let _b2 = FakeVllm::start(at("127.0.0.6"), 0.0).await;
    api.put(
        PODS,
        llama_pod("llama-b-2", "llama-b", Some("127.0.0.6"), Phase::Ready),
    );
    settles(&mut client, &api, "zone-b", 40.0).await;

    // zone-a's queue drains: nothing spills any more.
    *_a1.queue.lock().unwrap() = 5.0;
    *_a2.queue.lock().unwrap() = 5.0;
    settles(&mut client, &api, "zone-b", 5.0).await;
    settles(&mut client, &api, "zone-c", 0.0).await;

    kube.stop().await;
    tokio::time::timeout(LIMIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A status that says what the cluster runs: zone-a's replica Ready with its targets, zone-c
/// full, Degraded for it. (Not the "0 ready, 0 targets, every zone has room" of a controller that
/// has not looked yet.)
fn assert_true_status(status: &Value) {
    let zones = status["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 3, "{status:#}");
    assert_eq!(zones[0]["readyReplicas"], 1, "{status:#}");
    assert_eq!(
        zones[0]["targets"], 2,
        "gateway and model server: {status:#}"
    );
    assert_eq!(zones[2]["full"], "PodsUnschedulable", "{status:#}");
    let degraded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("PodsUnschedulable")),
        "{status:#}"
    );
}

#[tokio::test(start_paused = true)]
async fn status_is_written_once_while_a_zone_is_full_and_not_again_at_restart() {
    let clock = WallClock::following_tokio();
    let api = FakeApi::start().await;
    // zone-c's Pod has found no GPU node for ten minutes: the zone is full, for good.
    seed(&api);
    api.put(ZSOS, cluster::zso("llama", 8000));
    // Discovery's first list takes a while, as in a large cluster; reconcile does not wait.
    api.delay_lists(PODS, Duration::from_secs(5));
    let running = Running::as_deployed(&api, clock);
    let first = eventually(LIMIT, "the first status", || async {
        status_writes(&api, "llama").into_iter().next()
    })
    .await;
    assert_true_status(&first);

    // A simulated minute: 30 ticks of the zones loop, two resyncs, the Pod a minute older.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = status_writes(&api, "llama");
    assert_eq!(
        writes.len(),
        1,
        "status rewritten while nothing changed: {writes:#?}"
    );
    assert_eq!(published(&api, "ZoneFull").len(), 1);
    let before = api.get(ZSOS, NS, "llama").unwrap()["status"].clone();
    running.stop().await;

    // A restart: a new process, with nothing in memory, finds the status it would write.
    let restarted = Running::as_deployed(&api, clock);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !restarted.state.pools().is_empty(),
        "the restarted controller serves the pool"
    );
    let writes = status_writes(&api, "llama");
    assert_eq!(
        writes.len(),
        1,
        "a restart rewrote status: {:#?}",
        &writes[1..]
    );
    assert_eq!(api.get(ZSOS, NS, "llama").unwrap()["status"], before);
    assert_eq!(published(&api, "ZoneFull").len(), 1, "no second ZoneFull");
    restarted.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_writes_no_status_before_it_has_looked() {
    let clock = WallClock::following_tokio();
    let api = FakeApi::start().await;
    seed_two_gateways(&api);
    api.put(ZSOS, cluster::zso("llama", 8000));
    // A new CR: the first status is the true one, however long discovery takes.
    api.delay_lists(PODS, Duration::from_secs(5));
    let running = Running::as_deployed(&api, clock);
    let first = eventually(LIMIT, "the first status", || async {
        status_writes(&api, "llama").into_iter().next()
    })
    .await;
    assert_true_status(&first);
    running.stop().await;
    // Meanwhile zone-b's replica became Ready: after the restart, status says so, in one write.
    api.put(
        PODS,
        llama_pod("llama-b-1", "llama-b", Some("10.0.1.1"), Phase::Ready),
    );
    let restarted = Running::as_deployed(&api, clock);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = status_writes(&api, "llama");
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_true_status(&writes[1]);
    assert_eq!(writes[1]["zones"][1]["readyReplicas"], 1);
    // Conditions that did not change keep their transition time.
    assert_eq!(writes[1]["conditions"], writes[0]["conditions"]);
    restarted.stop().await;
}

#[tokio::test]
async fn a_source_without_targets_is_not_ready() {
    let api = FakeApi::start().await;
    // The gateway proxies run, but the Service selects none of them: no EndpointSlice has an
    // endpoint. The model servers are found by selector.
    cluster::put_three_zone_pods(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
    cluster::put_gateway_slice(&api, &[]);
    api.put(ZSOS, cluster::zso("llama", 8000));
    let running = Running::start(&api);
    let zso = eventually(LIMIT, "Ready=False", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        (condition(&o, "Ready")?["status"] == "False").then_some(o)
    })
    .await;
    let ready = condition(&zso, "Ready").unwrap();
    assert_eq!(ready["reason"], "NoTargets");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("source gateway has no targets in any zone (Service llm-gateway"),
        "{message}"
    );
    assert!(message.ends_with("no data for latency"), "{message}");
    let degraded = condition(&zso, "Degraded").unwrap();
    assert_eq!(degraded["reason"], "NoTargets");
    assert_ne!(degraded["message"], "every zone has room and data");
    assert_eq!(zso["status"]["zones"][0]["targets"], 1, "the model server");

    // The proxy joins the Service: Ready.
    cluster::put_gateway_slice(&api, &[("gw-a", "10.1.0.1", "zone-a")]);
    eventually(LIMIT, "Ready=True", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        (condition(&o, "Ready")?["status"] == "True").then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn drift_repaired_is_recorded_for_drift_only() {
    let api = FakeApi::start().await;
    seed(&api);
    api.put(ZSOS, cluster::zso("llama", 8000));
    let running = Running::start(&api);
    eventually(LIMIT, "three ScaledObjects", || async {
        (api.list(SCALED_OBJECTS).len() == 3).then_some(())
    })
    .await;
    let generation_of = |name: &str| {
        api.get(SCALED_OBJECTS, NS, name)
            .map(|so| so["metadata"]["annotations"]["redbridge.io/generation"].clone())
    };

    // The user's own edit of the CR: every ScaledObject follows, nothing is reported.
    api.edit(ZSOS, NS, "llama", |o| {
        o["spec"]["zones"][1]["maxReplicas"] = json!(3);
    });
    eventually(LIMIT, "the ScaledObjects of generation 2", || async {
        let b = api.get(SCALED_OBJECTS, NS, "llama-zone-b")?;
        (b["spec"]["maxReplicaCount"] == 3
            && ZONES
                .iter()
                .all(|z| generation_of(&format!("llama-{z}")) == Some(json!("2"))))
        .then_some(())
    })
    .await;
    // Resyncs see them in place.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(published(&api, "DriftRepaired"), Vec::<String>::new());

    // Someone edits one: repaired, and reported once.
    api.edit(SCALED_OBJECTS, NS, "llama-zone-b", |o| {
        o["spec"]["maxReplicaCount"] = json!(99);
    });
    eventually(LIMIT, "zone-b repaired", || async {
        let so = api.get(SCALED_OBJECTS, NS, "llama-zone-b")?;
        (so["spec"]["maxReplicaCount"] == 3).then_some(())
    })
    .await;
    // Deleted: created again, and reported.
    api.delete(SCALED_OBJECTS, NS, "llama-zone-c");
    eventually(LIMIT, "zone-c back", || async {
        api.get(SCALED_OBJECTS, NS, "llama-zone-c").map(|_| ())
    })
    .await;
    // Its label removed (gone from redbridge's watch): restored, and reported.
    api.edit(SCALED_OBJECTS, NS, "llama-zone-a", |o| {
        o["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("app.kubernetes.io/managed-by");
    });
    eventually(LIMIT, "zone-a's label back", || async {
        let so = api.get(SCALED_OBJECTS, NS, "llama-zone-a")?;
        (so["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "redbridge").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut notes = published(&api, "DriftRepaired");
    notes.sort();
    assert_eq!(
        notes,
        [
            "ScaledObject llama-zone-a was deleted or lost its labels; applied again",
            "ScaledObject llama-zone-b was changed; applied again",
            "ScaledObject llama-zone-c was deleted or lost its labels; applied again",
        ]
    );
    running.stop().await;
}

#[tokio::test]
async fn two_replicas_do_not_rewrite_each_others_figures() {
    // Model servers on loopback addresses, one port: the addresses discovery gives the Pods.
    let probe = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    // zone-a's queue is about 50: each scrape, and so each replica, sees a slightly other value.
    let _a = FakeVllm::noisy(at("127.0.0.7"), 50.0, vec![-1.0, 1.5, 0.5, -1.5]).await;
    let _b = FakeVllm::start(at("127.0.0.8"), 5.0).await;
    let _c = FakeVllm::start(at("127.0.0.9"), 0.0).await;
    let api = FakeApi::start().await;
    for (pod, deployment, ip) in [
        ("llama-a-1", "llama-a", "127.0.0.7"),
        ("llama-b-1", "llama-b", "127.0.0.8"),
        ("llama-c-1", "llama-c", "127.0.0.9"),
    ] {
        api.put(PODS, llama_pod(pod, deployment, Some(ip), Phase::Ready));
    }
    let zso = cluster::queue_zso("llama", port);
    api.put(ZSOS, zso);

    let shutdown = CancellationToken::new();
    let one = replica(&api, &shutdown).await;
    let two = replica(&api, &shutdown).await;
    eventually(LIMIT, "zone-a's demand in status", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        o["status"]["zones"][0]["localDemand"].as_f64()
    })
    .await;
    // Both replicas scrape and resync (every 500 ms) for three seconds, then for three more:
    // in those, nothing but noise changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = status_writes(&api, "llama").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = status_writes(&api, "llama");
    assert_eq!(
        writes.len(),
        settled,
        "replicas rewrote the figures: {:#?}",
        writes[settled..]
            .iter()
            .map(|s| s["zones"][0]["localDemand"].clone())
            .collect::<Vec<_>>()
    );
    let demand = api.get(ZSOS, NS, "llama").unwrap()["status"]["zones"][0]["localDemand"]
        .as_f64()
        .unwrap();
    assert!((48.0..=52.0).contains(&demand), "{demand}");
    shutdown.cancel();
    one.stop().await;
    two.stop().await;
}
