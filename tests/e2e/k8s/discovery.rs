//! Discovery against a fake API server at the HTTP level: targets follow EndpointSlices and Pods
//! as the watch streams report them, into redbridge's state, without restarts and without polling;
//! unschedulable Pods are counted per zone.

use super::{cluster, fake_api};
use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use cluster::{endpoint, gateway_pod, llama_pod, Phase, NS};
use common::eventually;
use fake_api::{FakeApi, ENDPOINT_SLICES, PODS, ZSOS};
use redbridge::k8s::controller;
use redbridge::k8s::crd::ZonalScaledObject;
use redbridge::k8s::discovery::Discovery;
use redbridge::k8s::plan::{Plan, GATEWAY, MODEL_SERVER};
use redbridge::model::Config;

const LIMIT: Duration = Duration::from_secs(10);

/// The gateway proxies: (Pod, address, zone).
const GATEWAYS: [(&str, &str, &str); 2] = [
    ("gw-a", "10.1.0.1", "zone-a"),
    ("gw-b", "10.1.0.2", "zone-b"),
];

fn seed(api: &FakeApi) {
    cluster::put_three_zone_pods(api, &GATEWAYS, Duration::from_secs(30));
    // Another namespace's Pod and a Pod of no zone's Deployment: never targets.
    let mut other = llama_pod("x", "llama-a", Some("10.9.9.9"), Phase::Ready);
    other["metadata"]["namespace"] = json!("other");
    api.put(PODS, other);
    api.put(
        PODS,
        llama_pod("stray", "something-else", Some("10.0.9.9"), Phase::Ready),
    );
    cluster::put_gateway_slice(api, &GATEWAYS);
}

fn plan() -> Plan {
    let zso: ZonalScaledObject = serde_json::from_value(cluster::zso("llama", 8000)).unwrap();
    Plan::from_spec(&zso.spec).unwrap()
}

/// (source, address, zone, scraped) of every endpoint discovery sees now.
fn seen(d: &Discovery) -> BTreeSet<(&'static str, String, String, bool)> {
    d.endpoints(NS, &plan())
        .into_iter()
        .map(|e| (e.source, e.address.to_string(), e.zone.clone(), e.scraped()))
        .collect()
}

fn set(
    items: &[(&'static str, &str, &str, bool)],
) -> BTreeSet<(&'static str, String, String, bool)> {
    items
        .iter()
        .map(|(s, a, z, r)| (*s, a.to_string(), z.to_string(), *r))
        .collect()
}

#[tokio::test]
async fn endpoints_and_pods_follow_the_watches() {
    let api = FakeApi::start().await;
    seed(&api);
    let (discovery, _changes, run) = Discovery::new(api.client(), None);
    let task = tokio::spawn(run);
    assert!(tokio::time::timeout(LIMIT, discovery.ready())
        .await
        .unwrap());

    assert_eq!(
        seen(&discovery),
        set(&[
            (GATEWAY, "10.1.0.1", "zone-a", true),
            (GATEWAY, "10.1.0.2", "zone-b", true),
            (MODEL_SERVER, "10.0.0.1", "zone-a", true),
            (MODEL_SERVER, "10.0.1.1", "zone-b", false), // loading: known, not scraped
        ])
    );
    let e = discovery.endpoints(NS, &plan());
    let gw_a = e
        .iter()
        .find(|e| e.address.to_string() == "10.1.0.1")
        .unwrap();
    assert_eq!(
        (gw_a.pod.as_deref(), gw_a.node.as_deref(), gw_a.port),
        (Some("gw-a"), Some("gpu-node-1"), 19001)
    );

    // Per zone: ready, loading (within the 5-minute warm-up) and unschedulable (unmet capacity).
    let zones = discovery.zone_pods(NS, &plan(), Timestamp::now());
    assert_eq!((zones["zone-a"].ready, zones["zone-a"].replicas), (1, 1));
    assert_eq!((zones["zone-b"].loading, zones["zone-b"].warming), (1, 1));
    assert_eq!(zones["zone-c"].unschedulable, 1);
    let stuck = zones["zone-c"].unschedulable_for.unwrap();
    assert!((590.0..700.0).contains(&stuck), "{stuck}");

    // Added: a third proxy joins the slice.
    api.put(PODS, gateway_pod("gw-c", "10.1.0.3"));
    api.edit(ENDPOINT_SLICES, NS, "llm-gateway-abcde", |s| {
        s["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(endpoint("gw-c", "10.1.0.3", "zone-c", true, false));
    });
    eventually(LIMIT, "the new endpoint", || async {
        seen(&discovery)
            .contains(&(GATEWAY, "10.1.0.3".into(), "zone-c".into(), true))
            .then_some(())
    })
    .await;

    // Updated: one goes terminating; a hand-written endpoint to a foreign address is ignored.
    api.edit(ENDPOINT_SLICES, NS, "llm-gateway-abcde", |s| {
        s["endpoints"][0] = endpoint("gw-a", "10.1.0.1", "zone-a", false, true);
        s["endpoints"].as_array_mut().unwrap().push(endpoint(
            "gw-a",
            "169.254.169.254",
            "zone-a",
            true,
            false,
        ));
    });
    eventually(LIMIT, "the terminating endpoint", || async {
        seen(&discovery)
            .contains(&(GATEWAY, "10.1.0.1".into(), "zone-a".into(), false))
            .then_some(())
    })
    .await;
    assert!(!seen(&discovery)
        .iter()
        .any(|(_, a, _, _)| a == "169.254.169.254"));

    // The unschedulable Pod gets a node and loads; the loading one becomes Ready.
    api.put(
        PODS,
        llama_pod(
            "llama-c-1",
            "llama-c",
            Some("10.0.2.1"),
            Phase::Loading(Duration::from_secs(5)),
        ),
    );
    api.put(
        PODS,
        llama_pod("llama-b-1", "llama-b", Some("10.0.1.1"), Phase::Ready),
    );
    eventually(LIMIT, "pod states to follow", || async {
        let z = discovery.zone_pods(NS, &plan(), Timestamp::now());
        (z["zone-c"].unschedulable == 0 && z["zone-c"].warming == 1 && z["zone-b"].ready == 1)
            .then_some(())
    })
    .await;

    // Removed: the slice goes away.
    api.delete(ENDPOINT_SLICES, NS, "llm-gateway-abcde");
    eventually(LIMIT, "gateway endpoints to go", || async {
        (!seen(&discovery).iter().any(|(s, ..)| *s == GATEWAY)).then_some(())
    })
    .await;

    // Watches, not polling: one list per resource, then watch requests with bookmarks.
    let requests = api.requests();
    for path in ["/api/v1/pods", "/apis/discovery.k8s.io/v1/endpointslices"] {
        let lists = requests
            .iter()
            .filter(|r| r.path == path && !r.query.contains_key("watch"))
            .count();
        let watches: Vec<_> = requests
            .iter()
            .filter(|r| r.path == path && r.query.get("watch").is_some_and(|w| w == "true"))
            .collect();
        assert_eq!(lists, 1, "{path}: listed once");
        assert!(!watches.is_empty(), "{path}: watched");
        assert!(watches.iter().all(|w| w
            .query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true")));
    }
    let slices_watch = requests
        .iter()
        .find(|r| r.path == "/apis/discovery.k8s.io/v1/endpointslices")
        .unwrap();
    assert_eq!(
        slices_watch.query.get("labelSelector").map(String::as_str),
        Some("kubernetes.io/service-name")
    );
    task.abort();
}

/// Target URLs per (source, zone) that redbridge's state serves for the pool now.
fn targets(state: &redbridge::state::State) -> BTreeSet<(String, String, String)> {
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

/// Waits until redbridge's state serves exactly `want` for the pool.
async fn targets_become(
    state: &redbridge::state::State,
    want: &BTreeSet<(String, String, String)>,
    what: &str,
) {
    eventually(LIMIT, what, || async {
        (targets(state) == *want).then_some(())
    })
    .await;
}

fn t(source: &str, zone: &str, url: &str) -> (String, String, String) {
    (source.into(), zone.into(), url.into())
}

#[tokio::test]
async fn state_targets_change_without_restart() {
    let api = FakeApi::start().await;
    seed(&api);
    api.put(ZSOS, cluster::zso("llama", 8000));
    let state = redbridge::run::state(&Config::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(controller::run(
        api.client(),
        state.clone(),
        cluster::controller_options(),
        shutdown.clone(),
    ));

    let first = BTreeSet::from([
        t(GATEWAY, "zone-a", "http://10.1.0.1:19001/stats/prometheus"),
        t(GATEWAY, "zone-b", "http://10.1.0.2:19001/stats/prometheus"),
        t(MODEL_SERVER, "zone-a", "http://10.0.0.1:8000/metrics"),
    ]);
    targets_become(&state, &first, "the pool's first targets").await;
    let generation = state.generation();

    // A target that stays keeps its window: the same Arc, not a new one.
    let window_of = |url: &str| {
        state
            .pools()
            .iter()
            .flat_map(|p| p.targets.clone())
            .find(|t| t.key.url == url)
            .unwrap()
    };
    let kept = window_of("http://10.1.0.1:19001/stats/prometheus");

    api.put(
        PODS,
        llama_pod("llama-b-1", "llama-b", Some("10.0.1.1"), Phase::Ready),
    );
    api.edit(ENDPOINT_SLICES, NS, "llm-gateway-abcde", |s| {
        s["endpoints"][1] = endpoint("gw-b", "10.1.0.2", "zone-b", false, true);
    });
    let second = BTreeSet::from([
        t(GATEWAY, "zone-a", "http://10.1.0.1:19001/stats/prometheus"),
        t(MODEL_SERVER, "zone-a", "http://10.0.0.1:8000/metrics"),
        t(MODEL_SERVER, "zone-b", "http://10.0.1.1:8000/metrics"),
    ]);
    targets_become(&state, &second, "targets to follow the changes").await;
    assert!(
        state.generation() > generation,
        "the scrape manager is told"
    );
    assert!(Arc::ptr_eq(
        &kept,
        &window_of("http://10.1.0.1:19001/stats/prometheus")
    ));

    api.delete(ENDPOINT_SLICES, NS, "llm-gateway-abcde");
    api.delete(PODS, NS, "llama-a-1");
    let third = BTreeSet::from([t(MODEL_SERVER, "zone-b", "http://10.0.1.1:8000/metrics")]);
    targets_become(&state, &third, "removed targets to go").await;

    // Deleting the CR stops serving its pool.
    api.delete(ZSOS, NS, "llama");
    eventually(LIMIT, "the pool to go", || async {
        state
            .pools()
            .iter()
            .all(|p| p.pool.name != "llama")
            .then_some(())
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(LIMIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
