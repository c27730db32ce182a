//! Zone traffic routing (`spec.routing`) through the controller, against a fake API server at the
//! HTTP level: with a zone full, the routing object of each mode is written with weights moving
//! traffic away (valid against the real CRD schemas in `../shared/fixtures/crds/`), status shows
//! each zone's weight and the spill that agrees with it, one Event per change; drift repaired;
//! objects deleted when `spec.routing` goes or changes mode; an object redbridge does not own is
//! not taken over; nothing rewritten while nothing changes, nor at a restart (paused time); a
//! routing CRD that is not installed is reported, not fatal. RBAC for the routing kinds is
//! checked both ways against the requests made here.

use super::{cluster, fake_api, schema};
use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cluster::{llama_pod, Phase, NS};
use common::eventually;
use fake_api::{
    Collection, FakeApi, Recorded, BACKEND_TRAFFIC_POLICIES, DESTINATION_RULES, HTTP_ROUTES, PODS,
    SCALED_OBJECTS, ZSOS,
};
use redbridge::k8s::controller::{self, Options, WallClock};
use redbridge::model::Config;
use redbridge::run as server;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::State;

const LIMIT: Duration = Duration::from_secs(20);
const ROUTING_GROUPS: [&str; 3] = [
    "gateway.networking.k8s.io",
    "gateway.envoyproxy.io",
    "networking.istio.io",
];

struct Running {
    state: Arc<State>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), redbridge::k8s::Error>>,
}

impl Running {
    fn with(api: &FakeApi, options: Options, state: Arc<State>) -> Running {
        let shutdown = CancellationToken::new();
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

    /// The controller alone (nothing scraped), with the deployment's tick and resync on `wall`.
    fn as_deployed(api: &FakeApi, wall: WallClock) -> Running {
        let mut options = cluster::controller_options();
        let defaults = Options::new(options.triggers.clone());
        (options.tick, options.resync) = (defaults.tick, defaults.resync);
        options.wall = wall;
        Running::with(api, options, server::state(&Config::default()))
    }

    /// redbridge serving (scraping the model servers) and its controller, resyncing every 500 ms.
    async fn serving(api: &FakeApi) -> Running {
        let state = server::state(&Config::default());
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = {
            let mut options = cluster::controller_options();
            options.resync = Duration::from_millis(500);
            Running::with(api, options, state.clone())
        };
        tokio::spawn({
            let shutdown = running.shutdown.clone();
            let options = server::Options {
                tls: Default::default(),
                scrape: ScrapeSettings::default(),
            };
            async move { server::run(state, grpc, http, &options, shutdown).await }
        });
        running
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

/// A vLLM server on `addr` with the queue the test sets.
async fn fake_vllm(addr: SocketAddr, queue: f64) -> Arc<Mutex<f64>> {
    let shared = Arc::new(Mutex::new(queue));
    let q = shared.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let queue = *q.lock().unwrap();
            async move {
                format!(
                    "# TYPE vllm:num_requests_waiting gauge\n\
                 vllm:num_requests_waiting{{model_name=\"llama\"}} {queue}\n\
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
    shared
}

/// A three-zone CR scaled on the model servers' queue (target 10 per replica, at most 4 per
/// zone), each zone with its own Service, routing as `routing` says.
fn zso(name: &str, port: u16, routing: Value) -> Value {
    let mut zso = cluster::zso(name, port);
    let spec = &mut zso["spec"];
    spec["sources"].as_object_mut().unwrap().remove("gateway");
    spec["signals"] = json!({"queuePerReplica": {"target": 10}});
    for (i, zone) in ["a", "b", "c"].iter().enumerate() {
        spec["zones"][i]["maxReplicas"] = json!(4);
        spec["zones"][i]["service"] = json!(format!("llama-{zone}"));
    }
    spec["routing"] = routing;
    zso
}

fn http_route_mode() -> Value {
    json!({"httpRoute": {
        "parentRefs": [{"name": "inference-gateway", "namespace": "gateways"}],
        "hostnames": ["llm.example.com"],
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "port": 8000,
        "timeouts": {"request": "10m"},
    }, "maxStep": 100, "minChangeInterval": "1s"})
}

fn envoy_mode() -> Value {
    json!({"envoyGateway": {"httpRoute": "llama-route"}, "maxStep": 100})
}

fn istio_mode() -> Value {
    json!({"istio": {"service": "llama", "region": "us-east-1"}, "maxStep": 100})
}

fn condition<'a>(zso: &'a Value, kind: &str) -> Option<&'a Value> {
    zso["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn path_of(c: Collection, name: &str) -> String {
    format!("/{}/namespaces/{NS}/{}/{name}", c.0, c.1)
}

/// Writes (create, apply, delete) of the object `name` of `c`.
fn writes(api: &FakeApi, c: Collection, name: &str) -> Vec<Recorded> {
    let one = path_of(c, name);
    let collection = format!("/{}/namespaces/{NS}/{}", c.0, c.1);
    api.requests()
        .into_iter()
        .filter(|r| match r.method.as_str() {
            "POST" => {
                r.path == collection
                    && r.body
                        .as_ref()
                        .is_some_and(|b| b["metadata"]["name"] == name)
            }
            "PATCH" | "DELETE" => r.path == one,
            _ => false,
        })
        .collect()
}

/// Every publication of an event with `reason` about the CR `zso` (created, or repeated), by note.
fn published(api: &FakeApi, reason: &str, zso: &str) -> Vec<String> {
    let path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    api.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&path) && matches!(r.method.as_str(), "POST" | "PATCH"))
        .filter_map(|r| r.body)
        .filter(|e| e["reason"] == reason && e["regarding"]["name"] == zso)
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The schema an object written to `c` must satisfy: its CRD at the version redbridge writes.
fn schema_of(c: Collection) -> Value {
    match c {
        HTTP_ROUTES => schema::crd_fixture("gateway.networking.k8s.io_httproutes.yaml", "v1"),
        BACKEND_TRAFFIC_POLICIES => schema::crd_fixture(
            "gateway.envoyproxy.io_backendtrafficpolicies.yaml",
            "v1alpha1",
        ),
        DESTINATION_RULES => schema::crd_fixture("networking.istio.io_destinationrules.yaml", "v1"),
        _ => unreachable!("a routing collection"),
    }
}

/// Every body redbridge sent for `name` of `c` is valid against the kind's CRD schema.
fn assert_valid(api: &FakeApi, c: Collection, name: &str) {
    let schema = schema_of(c);
    let sent = writes(api, c, name);
    assert!(!sent.is_empty(), "{} {name} written", c.1);
    for r in sent.iter().filter(|r| r.method != "DELETE") {
        let body = r.body.as_ref().unwrap();
        let problems = schema::validate_all(&schema, body);
        assert!(
            problems.is_empty(),
            "{} {name}: the CRD refuses what redbridge writes: {problems:#?}\n{body:#}",
            c.1
        );
    }
}

/// (group, resource, verb) of a request, as RBAC sees it.
fn rbac_of(r: &Recorded) -> (String, String, String) {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs[0] {
        "api" => ("", &segs[2..]),
        _ => (segs[1], &segs[3..]),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] => tail,
        tail => tail,
    };
    let verb = match (r.method.as_str(), rest.len()) {
        ("GET", 1) if r.query.get("watch").is_some_and(|w| w == "true") => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    let resource = rest.first().copied().unwrap_or_default();
    (group.to_string(), resource.to_string(), verb.to_string())
}

/// The ClusterRole's rules for the routing kinds are exactly what `requests` needed.
fn check_routing_rbac(requests: &[Recorded]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rbac/clusterrole.yaml"
    );
    let role: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut allowed = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    let g = g.as_str().unwrap().to_string();
                    if ROUTING_GROUPS.contains(&g.as_str()) {
                        let res = res.as_str().unwrap().to_string();
                        allowed.insert((g, res, v.as_str().unwrap().to_string()));
                    }
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = requests
        .iter()
        .map(rbac_of)
        .filter(|(g, _, _)| ROUTING_GROUPS.contains(&g.as_str()))
        .collect();
    let denied: Vec<_> = used.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "not allowed by the ClusterRole: {denied:?}"
    );
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(unused.is_empty(), "never needed: {unused:?}");
}

/// Model servers on loopback: zone-a and zone-b one Ready replica each with a queue of 5, zone-c
/// one Ready replica with a queue of 60 and a Pod that has found no GPU node for ten minutes.
/// Returns the port and zone-c's queue.
async fn full_zone_c(api: &FakeApi) -> (u16, Arc<Mutex<f64>>) {
    let probe = TcpListener::bind("127.0.0.21:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    let mut queues = Vec::new();
    for (ip, queue) in [
        ("127.0.0.21", 5.0),
        ("127.0.0.22", 5.0),
        ("127.0.0.23", 60.0),
    ] {
        queues.push(fake_vllm(at(ip), queue).await);
    }
    for (pod, deployment, ip) in [
        ("llama-a-1", "llama-a", "127.0.0.21"),
        ("llama-b-1", "llama-b", "127.0.0.22"),
        ("llama-c-1", "llama-c", "127.0.0.23"),
    ] {
        api.put(PODS, llama_pod(pod, deployment, Some(ip), Phase::Ready));
    }
    api.put(
        PODS,
        llama_pod(
            "llama-c-2",
            "llama-c",
            None,
            Phase::Unschedulable(Duration::from_secs(600)),
        ),
    );
    (port, queues.remove(2))
}

#[tokio::test]
async fn each_mode_moves_traffic_away_from_a_full_zone() {
    let api = FakeApi::start().await;
    let (port, zone_c_queue) = full_zone_c(&api).await;
    let modes = [
        ("llama-http", HTTP_ROUTES, http_route_mode()),
        ("llama-envoy", BACKEND_TRAFFIC_POLICIES, envoy_mode()),
        ("llama-istio", DESTINATION_RULES, istio_mode()),
    ];
    let mut uids = Vec::new();
    for (name, _, routing) in &modes {
        let created = api.put(ZSOS, zso(name, port, routing.clone()));
        uids.push(created["metadata"]["uid"].as_str().unwrap().to_string());
    }
    let running = Running::serving(&api).await;

    // zone-c keeps what its Ready replica serves (10 of 60); 35 go to zone-a, 15 to zone-b (in
    // spillover order, up to their headroom). Served: 40, 20, 10 of 70: 57 %, 29 %, 14 %.
    for ((name, c, _), uid) in modes.iter().zip(&uids) {
        let object = eventually(LIMIT, "the routing object", || async {
            api.get(*c, NS, name)
        })
        .await;
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "redbridge"
        );
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str()),
            (Some("ZonalScaledObject"), Some(uid.as_str()))
        );
        let status = eventually(LIMIT, "weights in status", || async {
            let o = api.get(ZSOS, NS, name)?;
            let zones = o["status"]["zones"].as_array()?.clone();
            (zones.len() == 3 && zones[2]["weight"] == 14).then_some(o)
        })
        .await;
        let weights: Vec<i64> = status["status"]["zones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z["weight"].as_i64().unwrap())
            .collect();
        assert_eq!(weights, [57, 29, 14], "{name}");
        let zones = &status["status"]["zones"];
        assert_eq!(zones[2]["full"], "PodsUnschedulable");
        // Spillover agrees with the weights: what is routed to a zone is what it scales for.
        assert_eq!(
            (
                zones[0]["spilledIn"].as_f64(),
                zones[1]["spilledIn"].as_f64()
            ),
            (Some(35.0), Some(15.0)),
            "{name}"
        );
        assert_eq!(zones[2]["spilledOut"], 50.0);
        assert_eq!(
            status["status"]["zoneSummary"], "zone-a 1/4 57%, zone-b 1/2 29%, zone-c 1/4 full 14%",
            "{name}"
        );
    }
    let route = api.get(HTTP_ROUTES, NS, "llama-http").unwrap();
    let refs = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
    let split: Vec<(&str, u64)> = refs
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["weight"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        split,
        [
            ("llama-a", 571_429),
            ("llama-b", 285_714),
            ("llama-c", 142_857)
        ]
    );
    assert_eq!(route["spec"]["hostnames"], json!(["llm.example.com"]));
    assert_eq!(
        route["spec"]["parentRefs"][0]["name"], "inference-gateway",
        "{route:#}"
    );
    let btp = api
        .get(BACKEND_TRAFFIC_POLICIES, NS, "llama-envoy")
        .unwrap();
    assert_eq!(btp["spec"]["targetRefs"][0]["name"], "llama-route");
    assert_eq!(
        btp["spec"]["loadBalancer"]["zoneAware"]["weightedZones"],
        json!([
            {"zone": "zone-a", "weight": 571},
            {"zone": "zone-b", "weight": 286},
            {"zone": "zone-c", "weight": 143},
        ])
    );
    let dr = api.get(DESTINATION_RULES, NS, "llama-istio").unwrap();
    assert_eq!(dr["spec"]["host"], "llama.ml.svc.cluster.local");
    assert_eq!(
        dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"],
        json!([
            {"from": "us-east-1/zone-a/*", "to": {"us-east-1/zone-a/*": 100}},
            {"from": "us-east-1/zone-b/*", "to": {"us-east-1/zone-b/*": 100}},
            {"from": "us-east-1/zone-c/*", "to": {
                "us-east-1/zone-a/*": 58, "us-east-1/zone-b/*": 25, "us-east-1/zone-c/*": 17,
            }},
        ])
    );
    assert!(dr["spec"]["trafficPolicy"]["outlierDetection"].is_object());

    // Nothing changes for a while (scrapes every second, resyncs every 500 ms): one write and
    // one Event per CR, the reason in it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, c, _) in &modes {
        assert_valid(&api, *c, name);
        assert_eq!(writes(&api, *c, name).len(), 1, "{name} rewritten");
        let notes = published(&api, "ZoneWeightsChanged", name);
        assert_eq!(notes.len(), 1, "{name}: {notes:#?}");
        assert!(
            notes[0].contains("zone-c full: PodsUnschedulable for 10m")
                && notes[0].contains("moving 83 % to zone-a, zone-b"),
            "{}",
            notes[0]
        );
    }
    assert!(published(&api, "ZoneWeightsChanged", "llama-http")[0]
        .starts_with("HTTPRoute llama-http: "));

    // Drift: someone changes the weights; redbridge applies them again, and says so.
    api.edit(HTTP_ROUTES, NS, "llama-http", |o| {
        o["spec"]["rules"][0]["backendRefs"][2]["weight"] = json!(1_000_000);
    });
    eventually(LIMIT, "the HTTPRoute repaired", || async {
        let o = api.get(HTTP_ROUTES, NS, "llama-http")?;
        (o["spec"]["rules"][0]["backendRefs"][2]["weight"] == 142_857).then_some(())
    })
    .await;
    let repaired = eventually(LIMIT, "DriftRepaired", || async {
        published(&api, "DriftRepaired", "llama-http")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(repaired, "HTTPRoute llama-http was changed; applied again");
    let patch = writes(&api, HTTP_ROUTES, "llama-http").pop().unwrap();
    assert_eq!(
        (
            patch.method.as_str(),
            patch.content_type.as_deref(),
            patch.query.get("fieldManager").map(String::as_str)
        ),
        (
            "PATCH",
            Some("application/apply-patch+yaml"),
            Some("redbridge")
        )
    );
    // The same for the other kinds: edited, or deleted by hand.
    api.edit(BACKEND_TRAFFIC_POLICIES, NS, "llama-envoy", |o| {
        o["spec"]["loadBalancer"]["type"] = json!("Random");
    });
    api.edit(DESTINATION_RULES, NS, "llama-istio", |o| {
        o["spec"]["trafficPolicy"]
            .as_object_mut()
            .unwrap()
            .remove("outlierDetection");
    });
    eventually(LIMIT, "the policy and the rule repaired", || async {
        let btp = api.get(BACKEND_TRAFFIC_POLICIES, NS, "llama-envoy")?;
        let dr = api.get(DESTINATION_RULES, NS, "llama-istio")?;
        (btp["spec"]["loadBalancer"]["type"] == "LeastRequest"
            && dr["spec"]["trafficPolicy"]["outlierDetection"].is_object())
        .then_some(())
    })
    .await;
    api.delete(DESTINATION_RULES, NS, "llama-istio");
    eventually(LIMIT, "the DestinationRule back", || async {
        api.get(DESTINATION_RULES, NS, "llama-istio").map(|_| ())
    })
    .await;
    assert_eq!(
        published(&api, "ZoneWeightsChanged", "llama-istio").len(),
        1
    );

    // zone-c's queue falls to what its replica serves: it keeps its traffic again, in one
    // more change (and one more Event).
    *zone_c_queue.lock().unwrap() = 8.0;
    eventually(LIMIT, "zone-c's traffic back", || async {
        let o = api.get(HTTP_ROUTES, NS, "llama-http")?;
        (o["spec"]["rules"][0]["backendRefs"][2]["weight"] == 444_444).then_some(())
    })
    .await;
    // The Event follows the write that changed the weights.
    let notes = eventually(LIMIT, "the second ZoneWeightsChanged Event", || async {
        let notes = published(&api, "ZoneWeightsChanged", "llama-http");
        (notes.len() >= 2).then_some(notes)
    })
    .await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(
        notes[1],
        "HTTPRoute llama-http: every zone serves its own traffic"
    );

    // spec.routing removed: its object goes; the weights leave status.
    api.edit(ZSOS, NS, "llama-envoy", |o| {
        o["spec"].as_object_mut().unwrap().remove("routing");
    });
    eventually(LIMIT, "the BackendTrafficPolicy deleted", || async {
        api.get(BACKEND_TRAFFIC_POLICIES, NS, "llama-envoy")
            .is_none()
            .then_some(())
    })
    .await;
    eventually(LIMIT, "no weights in status", || async {
        let o = api.get(ZSOS, NS, "llama-envoy")?;
        (o["status"]["observedGeneration"] == 2 && o["status"]["zones"][0].get("weight").is_none())
            .then_some(())
    })
    .await;
    // The mode changes: the object of the old mode goes, one of the new mode comes.
    api.edit(ZSOS, NS, "llama-istio", |o| {
        o["spec"]["routing"] = envoy_mode();
    });
    eventually(LIMIT, "istio's object swapped for envoy's", || async {
        (api.get(DESTINATION_RULES, NS, "llama-istio").is_none()
            && api
                .get(BACKEND_TRAFFIC_POLICIES, NS, "llama-istio")
                .is_some())
        .then_some(())
    })
    .await;
    assert_valid(&api, BACKEND_TRAFFIC_POLICIES, "llama-istio");
    for (name, c, _) in &modes {
        assert_valid(&api, *c, name);
    }
    api.edit(ZSOS, NS, "llama-http", |o| {
        o["spec"].as_object_mut().unwrap().remove("routing");
    });
    eventually(LIMIT, "the HTTPRoute deleted", || async {
        api.get(HTTP_ROUTES, NS, "llama-http")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!running.state.pools().is_empty());
    running.stop().await;
    check_routing_rbac(&api.requests());
}

#[tokio::test]
async fn an_object_redbridge_does_not_own_is_not_taken_over() {
    let api = FakeApi::start().await;
    cluster::seed_three_zones(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
    let theirs = json!({
        "metadata": {"name": "llama", "namespace": NS, "labels": {"team": "platform"}},
        "spec": {
            "parentRefs": [{"name": "their-gateway"}],
            "rules": [{"backendRefs": [{"name": "llama", "port": 8000}]}],
        },
    });
    let before = api.put(HTTP_ROUTES, theirs);
    api.put(ZSOS, zso("llama", 8000, http_route_mode()));
    let running = Running::serving(&api).await;
    let zso = eventually(LIMIT, "RoutingObjectNotOwned", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        (condition(&o, "Degraded")?["reason"] == "RoutingObjectNotOwned").then_some(o)
    })
    .await;
    let message = condition(&zso, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("HTTPRoute ml/llama exists and is not redbridge's"),
        "{message}"
    );
    assert_eq!(condition(&zso, "Ready").unwrap()["status"], "True");
    // The ScaledObjects are written all the same.
    assert_eq!(api.list(SCALED_OBJECTS).len(), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get(HTTP_ROUTES, NS, "llama").unwrap(), before);
    assert!(
        writes(&api, HTTP_ROUTES, "llama")
            .iter()
            .all(|r| r.method == "POST"),
        "only creates, refused: never applied over theirs"
    );
    assert!(published(&api, "ZoneWeightsChanged", "llama").is_empty());

    // Once theirs is gone, redbridge writes its own.
    api.delete(HTTP_ROUTES, NS, "llama");
    eventually(LIMIT, "redbridge's HTTPRoute", || async {
        let o = api.get(HTTP_ROUTES, NS, "llama")?;
        (o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "redbridge").then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_routing_crd_that_is_not_installed_is_reported() {
    let api = FakeApi::start().await;
    api.uninstall(DESTINATION_RULES);
    cluster::seed_three_zones(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
    api.put(ZSOS, zso("llama", 8000, istio_mode()));
    let running = Running::serving(&api).await;
    let zso = eventually(LIMIT, "RoutingUnavailable", || async {
        let o = api.get(ZSOS, NS, "llama")?;
        let degraded = condition(&o, "Degraded")?;
        degraded["message"]
            .as_str()?
            .contains("spec.routing.istio: cannot list destinationrules (networking.istio.io)")
            .then_some(o)
    })
    .await;
    assert_eq!(condition(&zso, "Ready").unwrap()["status"], "True");
    assert_eq!(api.list(SCALED_OBJECTS).len(), 3, "the rest works");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn weights_are_written_once_while_nothing_changes_and_not_again_at_restart() {
    let clock = WallClock::following_tokio();
    let api = FakeApi::start().await;
    // zone-a Ready, zone-b loading, zone-c without a GPU node: only zone-a can serve. Nothing
    // is scraped (no demand data): the weights hold, but no traffic goes where it would fail.
    cluster::seed_three_zones(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
    api.put(ZSOS, zso("llama", 8000, http_route_mode()));
    let running = Running::as_deployed(&api, clock);
    let route = eventually(LIMIT, "the HTTPRoute", || async {
        api.get(HTTP_ROUTES, NS, "llama")
    })
    .await;
    let weights: Vec<u64> = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [1_000_000, 0, 0]);
    // A simulated minute: 30 ticks of the zones loop, two resyncs.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(writes(&api, HTTP_ROUTES, "llama").len(), 1);
    assert_eq!(published(&api, "ZoneWeightsChanged", "llama").len(), 1);
    let status = api.get(ZSOS, NS, "llama").unwrap()["status"].clone();
    let percent: Vec<i64> = status["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["weight"].as_i64().unwrap())
        .collect();
    assert_eq!(percent, [100, 0, 0]);
    running.stop().await;

    // A restart: the weights are rebuilt from the HTTPRoute; nothing is written again.
    let restarted = Running::as_deployed(&api, clock);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!restarted.state.pools().is_empty());
    assert_eq!(
        writes(&api, HTTP_ROUTES, "llama").len(),
        1,
        "a restart rewrote the HTTPRoute"
    );
    assert_eq!(published(&api, "ZoneWeightsChanged", "llama").len(), 1);
    assert_eq!(api.get(ZSOS, NS, "llama").unwrap()["status"], status);
    restarted.stop().await;

    // Meanwhile zone-b's replica became Ready. Still without demand data, the weights the
    // gateway has are held: a restarted controller does not jump to a split of its own.
    api.put(
        PODS,
        llama_pod("llama-b-1", "llama-b", Some("10.0.1.1"), Phase::Ready),
    );
    let restarted = Running::as_deployed(&api, clock);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(writes(&api, HTTP_ROUTES, "llama").len(), 1, "jumped");
    restarted.stop().await;

    // The HTTPRoute deleted while redbridge was down: rebuilt from status.zones[].weight.
    api.delete(HTTP_ROUTES, NS, "llama");
    let restarted = Running::as_deployed(&api, clock);
    let route = eventually(LIMIT, "the HTTPRoute back", || async {
        api.get(HTTP_ROUTES, NS, "llama")
    })
    .await;
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["weight"], 1_000_000,
        "the weights status had, not a fresh split"
    );
    let zones = api.get(ZSOS, NS, "llama").unwrap()["status"]["zones"].clone();
    assert_eq!(zones[1]["readyReplicas"], 1);
    assert_eq!(zones[0]["weight"], 100);
    restarted.stop().await;
}
