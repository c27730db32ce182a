//! One writer: two controller replicas against one fake API, each authenticated as its own
//! user so that every request is attributed. Only the Lease's holder writes (ScaledObjects,
//! status, Events); the follower discovers, scrapes, is ready and answers KEDA all the same.
//! A leader killed without a word is replaced within the lease duration, and one that cannot
//! renew stops writing before the other takes over.

use super::{cluster, fake_api};
use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cluster::{llama_pod, FakeVllm, Phase, NS};
use common::{eventually, MetricName};
use fake_api::{FakeApi, Recorded, LEASES, PODS, SCALED_OBJECTS, ZSOS};
use redbridge::k8s::controller;
use redbridge::model::Config;
use redbridge::proto::external_scaler_client::ExternalScalerClient;
use redbridge::proto::ScaledObjectRef;
use redbridge::run as server;
use redbridge::source::scrape::ScrapeSettings;
use redbridge::state::State;

const LIMIT: Duration = Duration::from_secs(15);
/// The lease of these tests: 3 s (renewed every second, polled every 200 ms).
const LEASE: Duration = Duration::from_secs(3);
const LEASE_NAME: &str = "redbridge-controller";

/// One replica: the controller as `user` (its Lease identity and its API user), and with
/// `serve`, the scrapes and both servers on loopback.
struct Replica {
    state: Arc<State>,
    shutdown: CancellationToken,
    controller: tokio::task::JoinHandle<Result<(), redbridge::k8s::Error>>,
    server: Option<tokio::task::JoinHandle<()>>,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

impl Replica {
    async fn start(api: &FakeApi, user: &str, serve: bool) -> Replica {
        let state = server::state(&Config::default());
        let shutdown = CancellationToken::new();
        let (mut server, mut grpc, mut http) = (None, None, None);
        if serve {
            let g = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let h = TcpListener::bind("127.0.0.1:0").await.unwrap();
            (grpc, http) = (g.local_addr().ok(), h.local_addr().ok());
            let (state, shutdown) = (state.clone(), shutdown.clone());
            server = Some(tokio::spawn(async move {
                let options = server::Options {
                    tls: Default::default(),
                    scrape: ScrapeSettings::default(),
                };
                let _ = server::run(state, g, h, &options, shutdown).await;
            }));
        }
        let mut options = cluster::controller_options();
        options.resync = Duration::from_millis(500);
        options.instance = Some(user.into());
        options.leader.identity = user.into();
        options.leader.duration = LEASE;
        let controller = tokio::spawn(controller::run(
            api.client_as(user),
            state.clone(),
            options,
            shutdown.clone(),
        ));
        Replica {
            state,
            shutdown,
            controller,
            server,
            grpc,
            http,
        }
    }

    /// As a process killed: everything stops at once, nothing is given up.
    fn kill(self) {
        self.controller.abort();
        if let Some(s) = self.server {
            s.abort();
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(LIMIT, self.controller)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(s) = self.server {
            tokio::time::timeout(LIMIT, s).await.unwrap().unwrap();
        }
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.http.unwrap());
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `redbridge_leader` on this replica's `/metrics`.
    async fn leader_gauge(&self) -> Option<String> {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix("redbridge_leader "))
            .map(str::to_string)
    }
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get(LEASES, "default", LEASE_NAME)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

fn is_lease(r: &Recorded) -> bool {
    r.path.starts_with("/apis/coordination.k8s.io/")
}

/// What `user` wrote besides the Lease: applies, deletes, status, Events.
fn writes_by(api: &FakeApi, user: &str) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some(user) && r.method != "GET" && !is_lease(r))
        .collect()
}

/// When `user`'s first write of the Lease arrived: as a follower it only reads it, so that is
/// its takeover (the other is gone or stopped renewing; nobody else writes it meanwhile).
fn took_lease_at(api: &FakeApi, user: &str) -> Option<Instant> {
    api.requests()
        .into_iter()
        .find(|r| r.user.as_deref() == Some(user) && r.method != "GET" && is_lease(r))
        .map(|r| r.at)
}

fn describe(writes: &[Recorded]) -> Vec<String> {
    writes
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// GetMetricSpec then GetMetrics for zone `zone`'s queue trigger, as KEDA calls them.
async fn keda_reads(addr: SocketAddr, api: &FakeApi, zone: &str) -> Option<f64> {
    let so = api.get(SCALED_OBJECTS, NS, &format!("llama-{zone}"))?;
    let trigger = so["spec"]["triggers"]
        .as_array()?
        .iter()
        .find(|t| t["metadata"]["signal"] == "queue_depth")?
        .clone();
    let metadata: HashMap<String, String> =
        serde_json::from_value(trigger["metadata"].clone()).ok()?;
    let mut client = ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    let object = ScaledObjectRef {
        name: format!("llama-{zone}"),
        namespace: NS.into(),
        scaler_metadata: metadata,
    };
    let value = common::get_metrics(&mut client, object, MetricName::FromSpec)
        .await
        .ok()?;
    Some(value.metric_value_float)
}

#[tokio::test]
async fn one_writer_and_a_killed_leader_replaced_within_the_lease_duration() {
    // Model servers on loopback addresses, one port: the addresses discovery gives the Pods.
    let probe = TcpListener::bind("127.0.0.31:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    for (ip, queue) in [
        ("127.0.0.31", 30.0),
        ("127.0.0.32", 5.0),
        ("127.0.0.33", 0.0),
    ] {
        FakeVllm::start(at(ip), queue).await;
    }
    let api = FakeApi::start().await;
    for (pod, deployment, ip) in [
        ("llama-a-1", "llama-a", "127.0.0.31"),
        ("llama-b-1", "llama-b", "127.0.0.32"),
        ("llama-c-1", "llama-c", "127.0.0.33"),
    ] {
        api.put(PODS, llama_pod(pod, deployment, Some(ip), Phase::Ready));
    }
    let mut zso = cluster::queue_zso("llama", port);
    zso["spec"]["scrape"] = json!({"interval": "1s", "window": "2s"});
    api.put(ZSOS, zso);

    let a = Replica::start(&api, "a", true).await;
    eventually(LIMIT, "a holds the Lease and has written", || async {
        let written = api.list(SCALED_OBJECTS).len() == 3
            && api.get(ZSOS, NS, "llama")?["status"]["zones"][0]["localDemand"].is_number();
        (holder(&api).as_deref() == Some("a") && written).then_some(())
    })
    .await;
    let b = Replica::start(&api, "b", true).await;

    // The follower serves: ready, and answering KEDA with the same figures.
    eventually(LIMIT, "b ready", || async {
        (b.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let read = eventually(LIMIT, "b answers KEDA", || async {
        keda_reads(b.grpc.unwrap(), &api, "zone-a").await
    })
    .await;
    assert_eq!(read, 30.0);
    assert_eq!(a.leader_gauge().await.as_deref(), Some("1"));
    assert_eq!(b.leader_gauge().await.as_deref(), Some("0"));
    // Several lease durations side by side: b only reads, and reads the Lease only.
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(holder(&api).as_deref(), Some("a"));
    assert!(
        writes_by(&api, "b").is_empty(),
        "the follower wrote: {:?}",
        describe(&writes_by(&api, "b"))
    );
    assert!(took_lease_at(&api, "b").is_none());
    assert!(
        !writes_by(&api, "a").is_empty(),
        "the leader wrote everything"
    );

    // The leader dies; meanwhile a ScaledObject is deleted, which someone has to repair.
    a.kill();
    let killed = Instant::now();
    api.delete(SCALED_OBJECTS, NS, "llama-zone-b");
    eventually(LIMIT, "b holds the Lease", || async {
        (holder(&api).as_deref() == Some("b")).then_some(())
    })
    .await;
    let took = took_lease_at(&api, "b").unwrap();
    assert!(
        took - killed <= LEASE,
        "failover took {:?}, more than the lease duration",
        took - killed
    );
    eventually(LIMIT, "b repairs the ScaledObject", || async {
        api.get(SCALED_OBJECTS, NS, "llama-zone-b")
    })
    .await;
    let early: Vec<Recorded> = writes_by(&api, "b")
        .into_iter()
        .filter(|r| r.at < took)
        .collect();
    assert!(
        early.is_empty(),
        "b wrote before it held the Lease: {:?}",
        describe(&early)
    );
    let late: Vec<Recorded> = api
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("a") && r.at > killed)
        .collect();
    assert!(
        late.is_empty(),
        "a killed process sent {:?}",
        describe(&late)
    );
    assert_eq!(b.leader_gauge().await.as_deref(), Some("1"));
    // Still serving through it all.
    assert_eq!(
        keda_reads(b.grpc.unwrap(), &api, "zone-a").await,
        Some(30.0)
    );

    // Stopped, it gives the Lease up for the next replica.
    b.stop().await;
    assert_eq!(holder(&api), None);
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_writing_before_another_takes_over() {
    // The controllers only: no scrapes (the seeded Pods' addresses are never dialled).
    let api = FakeApi::start().await;
    cluster::seed_three_zones(
        &api,
        &[("gw-a", "10.1.0.1", "zone-a")],
        Duration::from_secs(20),
    );
    api.put(ZSOS, cluster::zso("llama", 8000));
    let a = Replica::start(&api, "a", false).await;
    eventually(LIMIT, "a holds the Lease and has written", || async {
        let written = api.list(SCALED_OBJECTS).len() == 3;
        (holder(&api).as_deref() == Some("a") && written).then_some(())
    })
    .await;
    let b = Replica::start(&api, "b", false).await;
    tokio::time::sleep(LEASE).await;
    assert!(writes_by(&api, "b").is_empty());
    assert!(
        !b.state.pools().is_empty(),
        "the follower discovers and publishes the pool"
    );

    // a's renewals fail from now on; its other writes still go through. ScaledObjects keep
    // being deleted, so whoever leads has something to write every 100 ms.
    api.fail_writes("a", LEASES);
    let cut = Instant::now();
    let churn = async {
        loop {
            for zone in ["zone-a", "zone-b", "zone-c"] {
                api.delete(SCALED_OBJECTS, NS, &format!("llama-{zone}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let taken = async {
        eventually(LIMIT, "b holds the Lease", || async {
            (holder(&api).as_deref() == Some("b")).then_some(())
        })
        .await;
        // And goes on repairing for a while.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        _ = churn => unreachable!(),
        _ = taken => {}
    }
    let took = took_lease_at(&api, "b").unwrap();
    assert!(took - cut <= LEASE, "failover took {:?}", took - cut);
    let a_writes = writes_by(&api, "a");
    let a_last = a_writes
        .iter()
        .filter(|r| r.at > cut)
        .map(|r| r.at)
        .max()
        .expect("a went on writing while its lease held");
    // a stopped on its own (2/3 of the lease after its last renewal), before b could take over.
    assert!(
        a_last < took,
        "a wrote {:?} after b took the Lease",
        a_last - took
    );
    assert!(a_last - cut <= LEASE * 2 / 3 + Duration::from_millis(200));
    let b_writes = writes_by(&api, "b");
    assert!(
        b_writes.iter().all(|r| r.at > took),
        "b wrote before it held the Lease"
    );
    assert!(
        b_writes
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/scaledobjects/")),
        "b repairs: {:?}",
        describe(&b_writes)
    );
    // a follows now, and writes nothing.
    let after = writes_by(&api, "a").len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(writes_by(&api, "a").len(), after);
    api.heal("a", LEASES);
    a.stop().await;
    b.stop().await;
}
