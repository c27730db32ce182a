//! The simulated fleet on real sockets, and the discovery that tells redbridge about it.
//!
//! Every pod [`Fleet::pods`] lists gets its own HTTP listener on `127.0.0.1:0`: gateways answer
//! `/stats/prometheus` as Envoy does, model servers `/metrics` as vLLM does, rendered from the
//! simulation's counters at the moment of the scrape. A pod that leaves the list closes its
//! listener, so scraping it is refused as in a cluster; a new generation of a pod gets a new port.
//!
//! Because ports change with pods, [`Discovery`] rebuilds redbridge's pool from the live endpoints:
//! the part Kubernetes discovery (EndpointSlices) plays in production. A zone can also be made
//! unreachable ([`FleetServers::set_zone_reachable`]): its pods stay listed, as a network partition
//! leaves them in the EndpointSlice, but their listeners refuse connections until it heals.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::exposition::{render_gateway, render_vllm};
use super::sim::{Fleet, PodInfo, PodKind};
use crate::config::file::ConfigError;
use crate::model::{Config, Matcher, Pool, Target};

/// The simulation, shared by the tick loop, the pods' HTTP handlers and the KEDA emulator.
pub type SharedFleet = Arc<Mutex<Fleet>>;

/// Locks the fleet; a panic elsewhere while holding it leaves numbers that are still readable.
pub fn lock(fleet: &SharedFleet) -> MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(|e| e.into_inner())
}

/// Envoy Gateway's name for the model route's cluster, which the gateway source selects.
pub const CLUSTER: &str = "httproute/ml/llama/rule/0";
/// The pool redbridge serves in the demo and the namespace of its ScaledObjects.
pub const POOL: &str = "llama";
pub const NAMESPACE: &str = "ml";
/// The pool's window, seconds: how long redbridge keeps each target's readings.
pub const POOL_WINDOW_SECONDS: u32 = 30;
/// Source names in the pool, as triggers name them in `source`.
pub const GATEWAY_SOURCE: &str = "gateway";
pub const SERVER_SOURCE: &str = "servers";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot listen on 127.0.0.1 for {pod}: {error}{hint}")]
    Bind {
        pod: String,
        error: std::io::Error,
        /// Advice when the cause is the open-files limit.
        hint: &'static str,
    },
}

/// One scrapeable pod as discovery reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: PodInfo,
    pub zone: usize,
    pub url: String,
}

/// A pod's listener: serving, or closed while its zone is unreachable.
struct Served {
    addr: SocketAddr,
    /// `None` while the zone is unreachable (nothing listens on `addr`).
    stop: Option<CancellationToken>,
}

/// What a pod's handler needs to render its exposition.
struct PodContext {
    fleet: SharedFleet,
    pod: PodInfo,
    cluster: Arc<str>,
    model: Arc<str>,
}

/// One HTTP server per live pod.
pub struct FleetServers {
    fleet: SharedFleet,
    cluster: Arc<str>,
    model: Arc<str>,
    served: HashMap<PodInfo, Served>,
    unreachable: HashSet<usize>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl FleetServers {
    pub fn new(fleet: SharedFleet, model: &str) -> FleetServers {
        FleetServers {
            fleet,
            cluster: Arc::from(CLUSTER),
            model: Arc::from(model),
            served: HashMap::new(),
            unreachable: HashSet::new(),
            tasks: JoinSet::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Opens listeners for pods new in `live` and closes those of pods no longer in it. Returns
    /// whether the set of endpoints changed.
    pub async fn sync(&mut self, live: &[PodInfo]) -> Result<bool, FleetError> {
        let wanted: HashSet<PodInfo> = live.iter().copied().collect();
        let before = self.served.len();
        self.served.retain(|pod, s| {
            let keep = wanted.contains(pod);
            if !keep {
                if let Some(stop) = &s.stop {
                    stop.cancel();
                }
            }
            keep
        });
        let mut changed = self.served.len() != before;
        for pod in live {
            if self.served.contains_key(pod) {
                continue;
            }
            let served = if self.unreachable.contains(&pod.id.zone) {
                // Listed but unreachable: an address nothing listens on, until the zone heals.
                let listener = self.bind(*pod, None).await?;
                let addr = local_addr(&listener, *pod)?;
                drop(listener);
                Served { addr, stop: None }
            } else {
                self.start(*pod, None).await?
            };
            self.served.insert(*pod, served);
            changed = true;
        }
        // Reap servers that finished shutting down, so churn does not grow the set.
        while self.tasks.try_join_next().is_some() {}
        Ok(changed)
    }

    /// Partitions a zone off (its listeners close, its pods stay listed) or heals it. Returns
    /// whether any endpoint's address changed (a port taken meanwhile by someone else).
    pub async fn set_zone_reachable(
        &mut self,
        zone: usize,
        reachable: bool,
    ) -> Result<bool, FleetError> {
        if reachable != self.unreachable.contains(&zone) {
            return Ok(false);
        }
        let pods: Vec<PodInfo> = self
            .served
            .keys()
            .filter(|p| p.id.zone == zone)
            .copied()
            .collect();
        let mut moved = false;
        if reachable {
            self.unreachable.remove(&zone);
            for pod in pods {
                let Some(old) = self.served.get(&pod).map(|s| s.addr) else {
                    continue;
                };
                let served = self.start(pod, Some(old)).await?;
                moved |= served.addr != old;
                self.served.insert(pod, served);
            }
        } else {
            self.unreachable.insert(zone);
            for pod in pods {
                if let Some(stop) = self.served.get_mut(&pod).and_then(|s| s.stop.take()) {
                    stop.cancel();
                }
            }
        }
        Ok(moved)
    }

    /// Every listed pod's endpoint (reachable or not), ordered by zone, kind and slot.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .served
            .iter()
            .map(|(pod, s)| Endpoint {
                pod: *pod,
                zone: pod.id.zone,
                url: url(*pod, s.addr),
            })
            .collect();
        out.sort_by_key(|e| (e.pod.id, e.pod.generation));
        out
    }

    /// Closes every listener and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Binds `at` (when healing a partition, to keep the pod's address) or a fresh port.
    async fn bind(&self, pod: PodInfo, at: Option<SocketAddr>) -> Result<TcpListener, FleetError> {
        if let Some(addr) = at {
            if let Ok(listener) = TcpListener::bind(addr).await {
                return Ok(listener);
            }
        }
        TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| bind_error(pod, source))
    }

    async fn start(&mut self, pod: PodInfo, at: Option<SocketAddr>) -> Result<Served, FleetError> {
        let listener = self.bind(pod, at).await?;
        let addr = local_addr(&listener, pod)?;
        let stop = self.shutdown.child_token();
        let context = Arc::new(PodContext {
            fleet: self.fleet.clone(),
            pod,
            cluster: self.cluster.clone(),
            model: self.model.clone(),
        });
        let path = match pod.id.kind {
            PodKind::Gateway => "/stats/prometheus",
            PodKind::ModelServer => "/metrics",
        };
        let app = Router::new()
            .route(path, get(exposition))
            .with_state(context);
        let signal = stop.clone().cancelled_owned();
        self.tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                warn!(pod = %pod_name(pod), error = %e, "Simulated pod's HTTP server failed");
            }
        });
        Ok(Served {
            addr,
            stop: Some(stop),
        })
    }
}

fn local_addr(listener: &TcpListener, pod: PodInfo) -> Result<SocketAddr, FleetError> {
    listener
        .local_addr()
        .map_err(|source| bind_error(pod, source))
}

fn bind_error(pod: PodInfo, source: std::io::Error) -> FleetError {
    // EMFILE: every pod holds a listener and a scrape connection (two descriptors).
    let hint = if source.raw_os_error() == Some(24) {
        "; too many open files: raise the limit (ulimit -n) or use fewer --pods/--zones"
    } else {
        ""
    };
    FleetError::Bind {
        pod: pod_name(pod),
        error: source,
        hint,
    }
}

/// `gateway-2-0` / `vllm-1-3`: kind, zone position, slot.
pub fn pod_name(pod: PodInfo) -> String {
    let kind = match pod.id.kind {
        PodKind::Gateway => "gateway",
        PodKind::ModelServer => "vllm",
    };
    format!("{kind}-{}-{}", pod.id.zone, pod.id.index)
}

fn url(pod: PodInfo, addr: SocketAddr) -> String {
    match pod.id.kind {
        PodKind::Gateway => format!("http://{addr}/stats/prometheus"),
        PodKind::ModelServer => format!("http://{addr}/metrics"),
    }
}

/// Renders the pod's counters as of now. The state is copied out so the lock is held for
/// microseconds, not for the rendering.
async fn exposition(State(cx): State<Arc<PodContext>>) -> Response {
    let mut body = String::new();
    match cx.pod.id.kind {
        PodKind::Gateway => {
            let state = lock(&cx.fleet).gateway_state(cx.pod).cloned();
            let Some(state) = state else {
                return gone();
            };
            body.reserve(8 << 10);
            render_gateway(&state, &cx.cluster, &mut body);
            ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
        }
        PodKind::ModelServer => {
            let state = lock(&cx.fleet).model_state(cx.pod).cloned();
            let Some(state) = state else {
                return gone();
            };
            body.reserve(16 << 10);
            render_vllm(&state, &cx.model, &mut body);
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
    }
}

/// Between the simulation dropping a pod and its listener closing (one tick at most).
fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "pod is shutting down\n").into_response()
}

/// The demo's pool and how live endpoints become its targets.
///
/// The pool is written once as YAML (what an operator would put in the config file) and
/// validated by [`Config::from_yaml`]; each endpoint then becomes a copy of a template target
/// with its own URL and zone. Sources and profiles are shared with the previous pool, so
/// redbridge keeps the windows and scrape tasks of every target that stays.
pub struct Discovery {
    config: Config,
    gateway_template: Target,
    server_template: Target,
}

/// The demo's pool: the gateway route and the model servers, scraped every second.
fn pool_yaml() -> String {
    format!(
        r#"
pools:
  - name: {POOL}
    namespace: {NAMESPACE}
    window: {POOL_WINDOW_SECONDS}s
    interval: 1s
    sources:
      - name: {GATEWAY_SOURCE}
        profile: envoy
        matchers: ['envoy_cluster_name="{CLUSTER}"']
        targets: [{{ url: "http://127.0.0.1:1/stats/prometheus", zone: template }}]
      - name: {SERVER_SOURCE}
        profile: vllm
        targets: [{{ url: "http://127.0.0.1:1/metrics", zone: template }}]
"#
    )
}

impl Discovery {
    /// `model` selects the model servers' series (`model_name`).
    pub fn new(model: &str) -> Result<Discovery, ConfigError> {
        let mut config = Config::from_yaml(&pool_yaml(), "demo pool")?;
        let template_error = |what: &str| ConfigError {
            file: "demo pool".into(),
            place: String::new(),
            message: format!("{what} is missing"),
        };
        let pool = config
            .pools
            .first_mut()
            .ok_or_else(|| template_error("the pool"))?;
        let pool = Arc::make_mut(pool);
        let server_source = pool
            .sources
            .get_mut(1)
            .ok_or_else(|| template_error("the servers source"))?;
        server_source.matchers = vec![Matcher::eq("model_name", model)];
        let template = |pool: &Pool, source: usize| {
            pool.sources
                .get(source)
                .and_then(|s| s.targets.first())
                .cloned()
                .ok_or_else(|| template_error("a template target"))
        };
        let gateway_template = template(pool, 0)?;
        let server_template = template(pool, 1)?;
        for s in &mut pool.sources {
            s.targets.clear();
        }
        Ok(Discovery {
            config,
            gateway_template,
            server_template,
        })
    }

    /// The configuration redbridge starts with: the pool with `endpoints` as its targets.
    pub fn config(&self, endpoints: &[Endpoint], zones: &[String]) -> Config {
        let mut config = self.config.clone();
        if let Some(pool) = config.pools.first_mut() {
            *pool = Arc::new(self.pool_from(pool, endpoints, zones));
        }
        config
    }

    /// The pool as discovery sees it now, built on the pool redbridge serves (`current`).
    pub fn pool(&self, current: &Pool, endpoints: &[Endpoint], zones: &[String]) -> Pool {
        self.pool_from(current, endpoints, zones)
    }

    fn pool_from(&self, base: &Pool, endpoints: &[Endpoint], zones: &[String]) -> Pool {
        let mut pool = base.clone();
        let mut gateways = Vec::new();
        let mut servers = Vec::new();
        for e in endpoints {
            let (template, list) = match e.pod.id.kind {
                PodKind::Gateway => (&self.gateway_template, &mut gateways),
                PodKind::ModelServer => (&self.server_template, &mut servers),
            };
            let mut t = template.clone();
            t.url.clone_from(&e.url);
            t.zone = zones.get(e.zone).cloned().unwrap_or_default();
            list.push(t);
        }
        if let Some(s) = pool.sources.get_mut(0) {
            s.targets = gateways;
        }
        if let Some(s) = pool.sources.get_mut(1) {
            s.targets = servers;
        }
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::Scenario;

    fn fleet() -> SharedFleet {
        let mut s = Scenario::default_demo(120.0);
        s.replica.model_load = 0.0;
        Arc::new(Mutex::new(Fleet::new(s, 1, 7)))
    }

    async fn get(url: &str) -> Result<(u16, String), reqwest::Error> {
        let r = reqwest::get(url).await?;
        let code = r.status().as_u16();
        Ok((code, r.text().await?))
    }

    #[tokio::test]
    async fn pods_serve_their_format_and_leavers_refuse() {
        let fleet = fleet();
        let model = lock(&fleet).scenario().model.name.clone();
        let mut servers = FleetServers::new(fleet.clone(), &model);
        let pods = lock(&fleet).pods();
        assert!(servers.sync(&pods).await.unwrap());
        assert!(!servers.sync(&pods).await.unwrap(), "no change, no churn");
        let eps = servers.endpoints();
        assert_eq!(eps.len(), 6, "one gateway and one model server per zone");
        let gw = eps
            .iter()
            .find(|e| e.pod.id.kind == PodKind::Gateway)
            .unwrap();
        let (code, body) = get(&gw.url).await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(&format!("envoy_cluster_name=\"{CLUSTER}\"")));
        let vllm = eps
            .iter()
            .find(|e| e.pod.id.kind == PodKind::ModelServer)
            .unwrap()
            .clone();
        let (code, body) = get(&vllm.url).await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("vllm:num_requests_running{engine=\"0\",model_name="));

        // Scale the zone to zero: the replica leaves the list and its port refuses.
        let zone = lock(&fleet).zones()[vllm.zone].clone();
        lock(&fleet).set_desired(&zone, 0, 0.0).unwrap();
        let pods = lock(&fleet).pods();
        assert!(servers.sync(&pods).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(get(&vllm.url).await.is_err(), "a departed pod refuses");
        assert_eq!(servers.endpoints().len(), 5);

        // A partition: listed, refused; healed: same address, serving again.
        let before = servers.endpoints();
        assert!(!servers.set_zone_reachable(gw.zone, false).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(get(&gw.url).await.is_err());
        assert_eq!(
            servers.endpoints(),
            before,
            "still listed while partitioned"
        );
        let moved = servers.set_zone_reachable(gw.zone, true).await.unwrap();
        if !moved {
            assert_eq!(get(&gw.url).await.unwrap().0, 200);
        }
        servers.shutdown().await;
    }

    #[test]
    fn discovery_builds_targets_per_source_and_zone() {
        let d = Discovery::new("m\"odel").unwrap();
        let zones: Vec<String> = vec!["zone-a".into(), "zone-b".into()];
        let fleet = fleet();
        let pods = lock(&fleet).pods();
        let endpoints: Vec<Endpoint> = pods
            .iter()
            .filter(|p| p.id.zone < 2)
            .enumerate()
            .map(|(i, p)| Endpoint {
                pod: *p,
                zone: p.id.zone,
                url: format!("http://127.0.0.1:{}/x", 1000 + i),
            })
            .collect();
        let config = d.config(&endpoints, &zones);
        let pool = &config.pools[0];
        assert_eq!(pool.sources[0].targets.len(), 2);
        assert_eq!(pool.sources[1].targets.len(), 2);
        assert_eq!(pool.zones(), vec!["zone-a", "zone-b"]);
        assert_eq!(pool.sources[1].matchers[0].value, "m\"odel");
        // Updates keep the sources' profiles, so redbridge reuses extractors and windows.
        let next = d.pool(pool, &endpoints[..2], &zones);
        assert!(Arc::ptr_eq(
            &next.sources[0].profile,
            &pool.sources[0].profile
        ));
        assert_eq!(
            next.sources[0].targets.len() + next.sources[1].targets.len(),
            2
        );
    }
}
