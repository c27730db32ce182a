//! Discovery: what the cluster runs, from three watches (reflectors, no polling).
//!
//! - Pods: the model servers of a selector; per zone, the replicas of each zone's scale target
//!   (ready, loading their model, unschedulable); and the proof behind every address.
//! - EndpointSlices: the endpoints of a Service (address, port, zone, conditions, pod, node).
//! - InferencePools (`inference.networking.k8s.io/v1`): a pool's selector and target port stand
//!   for a source's selector and default port, and its `endpointPickerRef` names the endpoint
//!   picker's Service. On a cluster without the CRD the list fails and such sources find nothing.
//!
//! An address is only ever used if it is the IP Kubernetes gave a Pod (not host-network) of the
//! CR's namespace: an EndpointSlice is trusted only as far as its `targetRef` names such a Pod
//! holding that address, because a namespace user can write an EndpointSlice by hand, but not a
//! Pod's status. So nothing a namespace user writes makes redbridge fetch an arbitrary address.
//!
//! The functions that read the stores are pure ([`endpoints`], [`zone_pods`], [`pool_ref`]) and
//! tested on plain objects; [`Discovery`] only owns the stores and the watches that fill them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::plan::{Endpoint, Find, Plan, PortRef, ENDPOINT_PICKER};
use crate::k8s::crd::ScaleTargetKind;
use crate::zonal::spillover::still_warming;

/// The label EndpointSlices carry with the name of their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The InferencePool kind of the Gateway API Inference Extension.
pub fn inference_pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("inference.networking.k8s.io", "v1", "InferencePool"),
        "inferencepools",
    )
}

/// What a source reads of an InferencePool.
#[derive(Debug, Clone)]
pub struct PoolRef {
    /// `spec.selector.matchLabels`, as a selector.
    pub selector: Selector,
    /// `spec.targetPorts[0].number`.
    pub target_port: Option<u16>,
    /// `spec.endpointPickerRef.name` when it is a Service (the default kind of the core group).
    pub picker_service: Option<String>,
}

/// An InferencePool's selector, first target port and picker Service, when its spec has a
/// selector that selects something (an empty one would match every Pod).
pub fn pool_ref(pool: &DynamicObject) -> Option<PoolRef> {
    let spec = pool.data.get("spec")?;
    let labels = spec.get("selector")?.get("matchLabels")?.as_object()?;
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect::<Option<_>>()?;
    if labels.is_empty() {
        return None;
    }
    let selector = Selector::from_iter(labels);
    let target_port = spec
        .get("targetPorts")
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("number"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0);
    let picker_service = spec.get("endpointPickerRef").and_then(|r| {
        let group = r.get("group").and_then(|g| g.as_str()).unwrap_or("");
        let kind = r.get("kind").and_then(|k| k.as_str()).unwrap_or("Service");
        (group.is_empty() && kind == "Service")
            .then(|| r.get("name")?.as_str().map(str::to_string))
            .flatten()
    });
    Some(PoolRef {
        selector,
        target_port,
        picker_service,
    })
}

/// The stores, filled by watches.
#[derive(Clone)]
pub struct Discovery {
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    pools: Store<DynamicObject>,
    /// The InferencePools' first list is done, or it failed (no CRD, no permission): either
    /// way discovery need not wait for it.
    pools_settled: Arc<AtomicBool>,
}

/// Bumped on every change the watches see; the zones loop follows it.
pub type Changes = watch::Receiver<u64>;

impl Discovery {
    /// Sets up the watches of `namespace` (all namespaces when `None`). Nothing runs until the
    /// returned future is polled; it runs until dropped, retrying with backoff on API errors.
    pub fn new(
        client: Client,
        namespace: Option<&str>,
    ) -> (Discovery, Changes, BoxFuture<'static, ()>) {
        let pool_ar = inference_pool_resource();
        let pools_api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &pool_ar),
            None => Api::all_with(client.clone(), &pool_ar),
        };
        let (pods_api, slices_api): (Api<Pod>, Api<EndpointSlice>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let (pods, pods_writer) = reflector::store();
        let (slices, slices_writer) = reflector::store();
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let pods_tx = tx.clone();
        let pools_tx = tx.clone();
        let pod_stream = watcher(pods_api, watcher::Config::default())
            .default_backoff()
            .modify(slim_pod)
            .reflect(pods_writer)
            .for_each(move |event| {
                note(&pods_tx, "Pod", &event);
                futures::future::ready(())
            });
        // Only Service-backed slices: the label is what the EndpointSlice controller sets.
        let slice_config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let slice_stream = watcher(slices_api, slice_config)
            .default_backoff()
            .modify(|s: &mut EndpointSlice| {
                s.managed_fields_mut().clear();
                s.annotations_mut().clear();
            })
            .reflect(slices_writer)
            .for_each(move |event| {
                note(&tx, "EndpointSlice", &event);
                futures::future::ready(())
            });
        let pools_writer = reflector::store::Writer::new(pool_ar);
        let pools = pools_writer.as_reader();
        let pools_settled = Arc::new(AtomicBool::new(false));
        let (settled, unavailable) = (pools_settled.clone(), AtomicBool::new(false));
        let pool_stream = watcher(pools_api, watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut DynamicObject| {
                o.managed_fields_mut().clear();
                o.annotations_mut().clear();
                if let Some(data) = o.data.as_object_mut() {
                    data.remove("status");
                }
            })
            .reflect(pools_writer)
            .for_each(move |event| {
                match &event {
                    Ok(watcher::Event::InitDone) => {
                        settled.store(true, Ordering::Relaxed);
                        if unavailable.swap(false, Ordering::Relaxed) {
                            info!("InferencePools can be listed now");
                        }
                    }
                    Err(e) => {
                        settled.store(true, Ordering::Relaxed);
                        // Said once, not at every retry: most clusters have no such CRD.
                        if !unavailable.swap(true, Ordering::Relaxed) {
                            info!(error = %e, "Cannot list InferencePools (CRD not installed?); sources naming an inferencePool find nothing");
                        }
                    }
                    Ok(_) => {}
                }
                if event.is_ok() {
                    note(&pools_tx, "InferencePool", &event);
                }
                futures::future::ready(())
            });
        let run = async move {
            futures::join!(pod_stream, slice_stream, pool_stream);
        }
        .boxed();
        (
            Discovery {
                pods,
                slices,
                pools,
                pools_settled,
            },
            rx,
            run,
        )
    }

    /// Waits until the stores hold a first complete list (the InferencePools' list, or its
    /// failure on a cluster without the CRD).
    pub async fn ready(&self) -> bool {
        if !(self.pods.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok())
        {
            return false;
        }
        while !self.pools_settled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The InferencePools of `namespace` by name, as sources read them.
    fn pools(&self, namespace: &str) -> BTreeMap<String, PoolRef> {
        self.pools
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|p| Some((p.metadata.name.clone()?, pool_ref(p)?)))
            .collect()
    }

    /// The endpoints of every source of `plan` in `namespace`.
    pub fn endpoints(&self, namespace: &str, plan: &Plan) -> Vec<Endpoint> {
        let pods = self
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace));
        let slices = self
            .slices
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(namespace));
        endpoints(plan, namespace, &pods, &slices, &self.pools(namespace))
    }

    /// Per zone of `plan`, its scale target's Pods by state.
    pub fn zone_pods(
        &self,
        namespace: &str,
        plan: &Plan,
        now: Timestamp,
    ) -> BTreeMap<String, ZonePods> {
        let pods = self
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace));
        zone_pods(plan, namespace, &pods, now)
    }
}

fn note<K: kube::Resource, E: std::fmt::Display>(
    tx: &watch::Sender<u64>,
    kind: &str,
    event: &Result<watcher::Event<K>, E>,
) {
    match event {
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
            tx.send_modify(|n| *n += 1);
        }
        Ok(_) => {}
        Err(e) => warn!(kind, error = %e, "Watch failed; retrying with backoff"),
    }
}

/// Keeps what discovery reads of a Pod, so a cluster's worth of Pods stays small in memory.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().clear();
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.init_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        for c in &mut spec.containers {
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.volume_mounts = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.resources = None;
        }
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
    }
}

/// A Pod's replica state, by its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodState {
    Ready,
    /// Scheduled, not yet Ready; with the time it was scheduled.
    Loading(Option<Timestamp>),
    /// The scheduler found no node; since when.
    Unschedulable(Option<Timestamp>),
    /// Pending for another reason (not yet looked at by the scheduler).
    Pending,
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

fn time(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

fn pod_state(pod: &Pod) -> PodState {
    if condition(pod, "Ready").is_some_and(|c| c.status == "True") {
        return PodState::Ready;
    }
    match condition(pod, "PodScheduled") {
        Some(c) if c.status == "True" => PodState::Loading(
            time(c.last_transition_time.as_ref())
                .or(time(pod.metadata.creation_timestamp.as_ref())),
        ),
        Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
            PodState::Unschedulable(
                time(c.last_transition_time.as_ref())
                    .or(time(pod.metadata.creation_timestamp.as_ref())),
            )
        }
        _ => PodState::Pending,
    }
}

/// A Pod that is going away or has finished does not count as a replica.
fn counts(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The zone of `plan` whose scale target controls `pod`, if any. A Deployment controls its Pods
/// through a ReplicaSet named `<deployment>-<pod-template-hash>`.
pub fn owner_zone<'p>(plan: &'p Plan, pod: &Pod) -> Option<&'p str> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let hash = pod.labels().get("pod-template-hash");
    plan.zones
        .iter()
        .find(|z| match z.kind {
            ScaleTargetKind::StatefulSet => owner.kind == "StatefulSet" && owner.name == z.target,
            ScaleTargetKind::Deployment => {
                owner.kind == "ReplicaSet"
                    && match hash {
                        Some(h) => owner.name == format!("{}-{h}", z.target),
                        None => owner
                            .name
                            .strip_prefix(&format!("{}-", z.target))
                            .is_some_and(|rest| !rest.is_empty() && !rest.contains('-')),
                    }
            }
        })
        .map(|z| z.name.as_str())
}

/// The addresses Kubernetes gave a Pod, if it may be scraped (not host-network: that address is
/// the node's).
fn pod_addresses(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = status
        .pod_ip
        .iter()
        .chain(status.pod_ips.iter().flatten().map(|p| &p.ip))
        .filter_map(|ip| ip.parse().ok())
        .collect();
    out.dedup();
    out
}

fn primary_address(pod: &Pod) -> Option<IpAddr> {
    pod_addresses(pod).into_iter().next()
}

fn pod_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn container_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|p| *p > 0)
}

/// Every endpoint of `plan`'s sources in `namespace`: the proven ones, one per Pod and source.
/// `pools` are the namespace's InferencePools by name. The endpoint picker's endpoints are all
/// in the zone demand goes to first ([`Plan::first_zone`]): what it holds is the whole pool's.
pub fn endpoints(
    plan: &Plan,
    namespace: &str,
    pods: &[Arc<Pod>],
    slices: &[Arc<EndpointSlice>],
    pools: &BTreeMap<String, PoolRef>,
) -> Vec<Endpoint> {
    let by_name: HashMap<&str, &Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
        .collect();
    let mut out: Vec<Endpoint> = Vec::new();
    for source in &plan.sources {
        // An InferencePool stands for a selector (and default port) or a picker Service; one
        // that is missing, or names no picker Service, finds nothing.
        let (find, pool_port) = match &source.find {
            Find::InferencePool(name) => match pools.get(name) {
                Some(p) => (Find::Selector(p.selector.clone()), p.target_port),
                None => {
                    debug!(namespace, pool = %name, "No such InferencePool");
                    continue;
                }
            },
            Find::PickerOf(name) => match pools.get(name).and_then(|p| p.picker_service.clone()) {
                Some(service) => (Find::Service(service), None),
                None => {
                    debug!(namespace, pool = %name, "No InferencePool with a picker Service");
                    continue;
                }
            },
            other => (other.clone(), None),
        };
        let picker = source.name == ENDPOINT_PICKER;
        match &find {
            Find::InferencePool(_) | Find::PickerOf(_) => {}
            Find::Service(service) => {
                for slice in slices {
                    if slice.metadata.namespace.as_deref() != Some(namespace)
                        || slice.labels().get(SERVICE_NAME_LABEL) != Some(service)
                        || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
                    {
                        continue;
                    }
                    let port = match &source.port {
                        PortRef::Number(n) => Some(*n),
                        PortRef::PoolTarget => None,
                        PortRef::Name(name) => slice
                            .ports
                            .iter()
                            .flatten()
                            .find(|p| p.name.as_deref() == Some(name.as_str()))
                            .and_then(|p| p.port)
                            .and_then(|p| u16::try_from(p).ok())
                            .filter(|p| *p > 0),
                    };
                    let Some(port) = port else {
                        debug!(slice = %slice.name_any(), port = ?source.port, "EndpointSlice has no such port");
                        continue;
                    };
                    for e in &slice.endpoints {
                        let Some(target) = e.target_ref.as_ref() else {
                            continue;
                        };
                        let same_ns = target.namespace.as_deref().is_none_or(|n| n == namespace);
                        let pod = target
                            .name
                            .as_deref()
                            .filter(|_| target.kind.as_deref() == Some("Pod") && same_ns)
                            .and_then(|n| by_name.get(n));
                        let Some(pod) = pod else {
                            debug!(slice = %slice.name_any(), "Endpoint without a Pod of the namespace; ignored");
                            continue;
                        };
                        let owned = pod_addresses(pod);
                        let zone = if picker {
                            plan.first_zone().map(str::to_string)
                        } else {
                            e.zone
                                .clone()
                                .or_else(|| owner_zone(plan, pod).map(str::to_string))
                        };
                        let Some(zone) = zone else {
                            continue;
                        };
                        let conditions = e.conditions.clone().unwrap_or_default();
                        for address in &e.addresses {
                            let Ok(address) = address.parse::<IpAddr>() else {
                                continue;
                            };
                            if !owned.contains(&address) {
                                warn!(
                                    namespace,
                                    slice = %slice.name_any(),
                                    %address,
                                    "EndpointSlice address is not its Pod's; ignored"
                                );
                                continue;
                            }
                            out.push(Endpoint {
                                source: source.name,
                                address,
                                port,
                                zone: zone.clone(),
                                ready: conditions.ready.unwrap_or(true),
                                serving: conditions.serving.unwrap_or(true),
                                terminating: conditions.terminating.unwrap_or(false),
                                pod: pod.metadata.name.clone(),
                                node: e.node_name.clone().or_else(|| {
                                    pod.spec.as_ref().and_then(|s| s.node_name.clone())
                                }),
                            });
                        }
                    }
                }
            }
            Find::Selector(selector) => {
                for pod in by_name.values() {
                    if !selector.matches(pod.labels()) {
                        continue;
                    }
                    let (Some(zone), Some(address)) = (owner_zone(plan, pod), primary_address(pod))
                    else {
                        continue;
                    };
                    let port = match &source.port {
                        PortRef::Number(n) => Some(*n),
                        PortRef::PoolTarget => pool_port,
                        PortRef::Name(name) => container_port(pod, name),
                    };
                    let Some(port) = port else {
                        continue;
                    };
                    let ready = pod_ready(pod);
                    out.push(Endpoint {
                        source: source.name,
                        address,
                        port,
                        zone: zone.to_string(),
                        ready,
                        serving: ready,
                        terminating: pod.metadata.deletion_timestamp.is_some(),
                        pod: pod.metadata.name.clone(),
                        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    });
                }
            }
        }
    }
    // A dual-stack Service has one slice per family: keep one endpoint per Pod and source (its
    // primary address), or its series would count twice.
    out.sort_by(|a, b| {
        let primary = |e: &Endpoint| {
            e.pod
                .as_deref()
                .and_then(|p| by_name.get(p))
                .and_then(|p| primary_address(p))
                != Some(e.address)
        };
        (a.source, &a.pod, primary(a), a.address).cmp(&(b.source, &b.pod, primary(b), b.address))
    });
    out.dedup_by(|b, a| a.source == b.source && a.pod.is_some() && a.pod == b.pod);
    out
}

/// One zone's Pods by state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ZonePods {
    /// Pods that count as replicas (not terminating, not finished).
    pub replicas: u32,
    pub ready: u32,
    /// Scheduled and not yet Ready.
    pub loading: u32,
    /// Loading for less than the warm-up time: capacity on its way.
    pub warming: u32,
    /// The scheduler found no node for them (unmet capacity).
    pub unschedulable: u32,
    /// Seconds the oldest unschedulable Pod has been so.
    pub unschedulable_for: Option<f64>,
    /// When the oldest unschedulable Pod became so: unlike its age, it does not change by itself.
    pub unschedulable_since: Option<Timestamp>,
}

fn age(now: Timestamp, since: Option<Timestamp>) -> Option<f64> {
    since.map(|s| now.duration_since(s).as_secs_f64())
}

/// Per zone of `plan` (every zone, even without Pods), the Pods of its scale target by state.
pub fn zone_pods(
    plan: &Plan,
    namespace: &str,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> BTreeMap<String, ZonePods> {
    let mut out: BTreeMap<String, ZonePods> = plan
        .zones
        .iter()
        .map(|z| (z.name.clone(), ZonePods::default()))
        .collect();
    let warmup = plan.warmup.map(|d| d.as_secs_f64());
    for pod in pods {
        if pod.metadata.namespace.as_deref() != Some(namespace) || !counts(pod) {
            continue;
        }
        let Some(zone) = owner_zone(plan, pod) else {
            continue;
        };
        let Some(z) = out.get_mut(zone) else {
            continue;
        };
        z.replicas += 1;
        match pod_state(pod) {
            PodState::Ready => z.ready += 1,
            PodState::Loading(since) => {
                z.loading += 1;
                if let (Some(w), Some(a)) = (warmup, age(now, since)) {
                    if still_warming(a, w) {
                        z.warming += 1;
                    }
                }
            }
            PodState::Unschedulable(since) => {
                z.unschedulable += 1;
                let a = age(now, since).unwrap_or(0.0).max(0.0);
                z.unschedulable_for = Some(z.unschedulable_for.map_or(a, |b: f64| b.max(a)));
                z.unschedulable_since = since.into_iter().chain(z.unschedulable_since).min();
            }
            PodState::Pending => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::plan::MODEL_SERVER;
    use serde_json::json;

    const SPEC: &str = r#"
model: m
zones:
  - { name: zone-a, scaleTargetRef: { name: llm-a }, maxReplicas: 4 }
  - { name: zone-b, scaleTargetRef: { kind: StatefulSet, name: llm-b }, maxReplicas: 4 }
sources:
  gateway: { service: gw, port: metrics, routeMatcher: 'envoy_cluster_name="r"' }
  modelServer: { selector: { matchLabels: { app: llm } }, port: http }
signals:
  queuePerReplica: { target: 4 }
warmup: { modelLoadTime: 5m }
"#;

    fn plan() -> Plan {
        Plan::from_spec(&serde_yaml::from_str(SPEC).unwrap()).unwrap()
    }

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn ts(secs_before_now: i64) -> String {
        let now: Timestamp = NOW.parse().unwrap();
        (now - k8s_openapi::jiff::SignedDuration::from_secs(secs_before_now)).to_string()
    }

    /// A Pod as the API serves it. `state`: ready, loading:<secs>, unschedulable:<secs>.
    fn pod(name: &str, owner: (&str, &str), ip: Option<&str>, state: &str) -> Arc<Pod> {
        let (kind, owner_name) = owner;
        let (cond, secs) = state.split_once(':').unwrap_or((state, "0"));
        let secs: i64 = secs.parse().unwrap();
        let conditions = match cond {
            "ready" => json!([
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(600)},
                {"type": "Ready", "status": "True", "lastTransitionTime": ts(60)}
            ]),
            "loading" => json!([
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(secs)},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": ts(secs)}
            ]),
            "unschedulable" => json!([
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", "lastTransitionTime": ts(secs)}
            ]),
            other => panic!("{other}"),
        };
        let mut status = json!({"phase": if cond == "unschedulable" { "Pending" } else { "Running" }, "conditions": conditions});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": name, "namespace": "ml", "creationTimestamp": ts(3600),
                    "labels": {"app": "llm", "pod-template-hash": "5d9f"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": "u", "controller": true}]
                },
                "spec": {"nodeName": "node-1", "containers": [{"name": "server", "image": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]},
                "status": status
            }))
            .unwrap(),
        )
    }

    fn slice(name: &str, service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ml", "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "ports": [{"name": "metrics", "port": 19001, "protocol": "TCP"}],
                "endpoints": endpoints
            }))
            .unwrap(),
        )
    }

    #[test]
    fn zone_pods_counts_states_per_zone() {
        let rs = ("ReplicaSet", "llm-a-5d9f");
        let sts = ("StatefulSet", "llm-b");
        let pods = vec![
            pod("a1", rs, Some("10.0.0.1"), "ready"),
            pod("a2", rs, Some("10.0.0.2"), "loading:60"),
            pod("a3", rs, Some("10.0.0.3"), "loading:900"), // past the warm-up time
            pod("a4", rs, None, "unschedulable:30"),
            pod("a5", rs, None, "unschedulable:200"),
            pod("b1", sts, Some("10.0.1.1"), "ready"),
            pod(
                "x1",
                ("ReplicaSet", "other-5d9f"),
                Some("10.0.9.9"),
                "ready",
            ),
        ];
        let got = zone_pods(&plan(), "ml", &pods, NOW.parse().unwrap());
        assert_eq!(
            got["zone-a"],
            ZonePods {
                replicas: 5,
                ready: 1,
                loading: 2,
                warming: 1,
                unschedulable: 2,
                unschedulable_for: Some(200.0),
                unschedulable_since: Some(ts(200).parse().unwrap()),
            }
        );
        assert_eq!(got["zone-b"].ready, 1);
        assert_eq!(got["zone-b"].replicas, 1);
        assert_eq!(
            zone_pods(&plan(), "other", &pods, NOW.parse().unwrap())["zone-a"],
            ZonePods::default()
        );
    }

    #[test]
    fn terminating_and_finished_pods_are_not_replicas() {
        let mut p = (*pod(
            "a1",
            ("ReplicaSet", "llm-a-5d9f"),
            Some("10.0.0.1"),
            "ready",
        ))
        .clone();
        p.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
        let got = zone_pods(&plan(), "ml", &[Arc::new(p)], NOW.parse().unwrap());
        assert_eq!(got["zone-a"].replicas, 0);
    }

    #[test]
    fn owner_zone_follows_the_deployment_through_its_replicaset() {
        let plan = plan();
        let p = pod("a", ("ReplicaSet", "llm-a-5d9f"), None, "ready");
        assert_eq!(owner_zone(&plan, &p), Some("zone-a"));
        let p = pod("a", ("ReplicaSet", "llm-a-extra-5d9f"), None, "ready");
        assert_eq!(owner_zone(&plan, &p), None, "another Deployment's prefix");
        let p = pod("b", ("StatefulSet", "llm-b"), None, "ready");
        assert_eq!(owner_zone(&plan, &p), Some("zone-b"));
        let p = pod("b", ("ReplicaSet", "llm-b-5d9f"), None, "ready");
        assert_eq!(owner_zone(&plan, &p), None, "zone-b is a StatefulSet");
    }

    #[test]
    fn endpoints_from_slices_and_selected_pods() {
        let rs = ("ReplicaSet", "llm-a-5d9f");
        let gw = |name: &str, ip: &str| {
            let mut p = (*pod(name, ("ReplicaSet", "gw-1"), Some(ip), "ready")).clone();
            p.metadata.labels = Some([("app".to_string(), "gw".to_string())].into());
            Arc::new(p)
        };
        let pods = vec![
            gw("gw-a", "10.1.0.1"),
            gw("gw-b", "10.1.0.2"),
            pod("m1", rs, Some("10.0.0.1"), "ready"),
            pod("m2", rs, Some("10.0.0.2"), "loading:10"),
            pod("m3", rs, None, "unschedulable:10"),
        ];
        let slices = vec![
            slice(
                "gw-abc",
                "gw",
                json!([
                    {"addresses": ["10.1.0.1"], "zone": "zone-a", "nodeName": "n1",
                     "conditions": {"ready": true, "serving": true, "terminating": false},
                     "targetRef": {"kind": "Pod", "name": "gw-a", "namespace": "ml"}},
                    {"addresses": ["10.1.0.2"], "zone": "zone-b",
                     "conditions": {"ready": false, "serving": true, "terminating": true},
                     "targetRef": {"kind": "Pod", "name": "gw-b", "namespace": "ml"}},
                    // Hand-written: points at the cloud metadata address.
                    {"addresses": ["169.254.169.254"], "zone": "zone-a",
                     "targetRef": {"kind": "Pod", "name": "gw-a", "namespace": "ml"}},
                    // No Pod behind it.
                    {"addresses": ["10.9.9.9"], "zone": "zone-a"},
                    // Another namespace's Pod.
                    {"addresses": ["10.1.0.1"], "zone": "zone-a",
                     "targetRef": {"kind": "Pod", "name": "gw-a", "namespace": "other"}}
                ]),
            ),
            slice(
                "other-svc",
                "other",
                json!([{"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "gw-a"}}]),
            ),
        ];
        let got = endpoints(&plan(), "ml", &pods, &slices, &BTreeMap::new());
        let short: Vec<(&str, String, u16, &str, bool, bool)> = got
            .iter()
            .map(|e| {
                (
                    e.source,
                    e.address.to_string(),
                    e.port,
                    e.zone.as_str(),
                    e.ready,
                    e.terminating,
                )
            })
            .collect();
        assert_eq!(
            short,
            vec![
                ("gateway", "10.1.0.1".into(), 19001, "zone-a", true, false),
                ("gateway", "10.1.0.2".into(), 19001, "zone-b", false, true),
                (
                    "model-server",
                    "10.0.0.1".into(),
                    8000,
                    "zone-a",
                    true,
                    false
                ),
                (
                    "model-server",
                    "10.0.0.2".into(),
                    8000,
                    "zone-a",
                    false,
                    false
                ),
            ]
        );
        assert_eq!(got[0].pod.as_deref(), Some("gw-a"));
        assert_eq!(got[0].node.as_deref(), Some("n1"));
        assert_eq!(got[2].node.as_deref(), Some("node-1"));
    }

    fn inference_pool(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "llama", "namespace": "ml"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn an_inference_pool_gives_selector_port_and_picker() {
        let pool = inference_pool(json!({
            "selector": {"matchLabels": {"app": "llm"}},
            "targetPorts": [{"number": 8000}, {"number": 8001}],
            "endpointPickerRef": {"name": "llama-epp", "port": {"number": 9002}}
        }));
        let r = pool_ref(&pool).unwrap();
        assert_eq!(r.target_port, Some(8000));
        assert_eq!(r.picker_service.as_deref(), Some("llama-epp"));
        assert!(r
            .selector
            .matches(&[("app".to_string(), "llm".to_string())].into()));
        assert!(!r
            .selector
            .matches(&[("app".to_string(), "x".to_string())].into()));

        // A picker of another kind is no Service; an empty selector selects nothing.
        let other = inference_pool(json!({
            "selector": {"matchLabels": {"app": "llm"}}, "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"group": "example.com", "kind": "Picker", "name": "p"}
        }));
        assert_eq!(pool_ref(&other).unwrap().picker_service, None);
        let empty = inference_pool(
            json!({"selector": {"matchLabels": {}}, "targetPorts": [{"number": 8000}]}),
        );
        assert!(pool_ref(&empty).is_none());
    }

    #[test]
    fn inference_pool_sources_follow_the_pool() {
        let plan = Plan::from_spec(
            &serde_yaml::from_str(
                r#"
model: m
zones:
  - { name: zone-a, scaleTargetRef: { name: llm-a }, maxReplicas: 4 }
  - { name: zone-b, scaleTargetRef: { kind: StatefulSet, name: llm-b }, maxReplicas: 4 }
sources:
  modelServer: { inferencePool: llama }
  endpointPicker: { inferencePool: llama }
signals:
  queuePerReplica: { target: 4 }
spillover: { order: [zone-b] }
"#,
            )
            .unwrap(),
        )
        .unwrap();
        let mut epp = (*pod(
            "epp-1",
            ("ReplicaSet", "epp-5d9f"),
            Some("10.2.0.1"),
            "ready",
        ))
        .clone();
        epp.metadata.labels = Some([("app".to_string(), "epp".to_string())].into());
        let pods = vec![
            pod(
                "m1",
                ("ReplicaSet", "llm-a-5d9f"),
                Some("10.0.0.1"),
                "ready",
            ),
            Arc::new(epp),
        ];
        let slices = vec![slice(
            "epp-abc",
            "llama-epp",
            json!([{"addresses": ["10.2.0.1"], "zone": "zone-a",
                    "targetRef": {"kind": "Pod", "name": "epp-1", "namespace": "ml"}}]),
        )];
        let pools = BTreeMap::from([(
            "llama".to_string(),
            pool_ref(&inference_pool(json!({
                "selector": {"matchLabels": {"app": "llm"}},
                "targetPorts": [{"number": 8000}],
                "endpointPickerRef": {"name": "llama-epp", "port": {"number": 9002}}
            })))
            .unwrap(),
        )]);
        let got: Vec<(&str, String, u16, String)> = endpoints(&plan, "ml", &pods, &slices, &pools)
            .into_iter()
            .map(|e| (e.source, e.address.to_string(), e.port, e.zone))
            .collect();
        assert_eq!(
            got,
            vec![
                // The picker's port is its metrics port (9090), its zone the first to fill.
                (
                    ENDPOINT_PICKER,
                    "10.2.0.1".to_string(),
                    9090,
                    "zone-b".to_string()
                ),
                (
                    MODEL_SERVER,
                    "10.0.0.1".to_string(),
                    8000,
                    "zone-a".to_string()
                ),
            ]
        );
        assert!(endpoints(&plan, "ml", &pods, &slices, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn host_network_pods_are_never_targets() {
        let mut p = (*pod(
            "m1",
            ("ReplicaSet", "llm-a-5d9f"),
            Some("192.168.0.10"),
            "ready",
        ))
        .clone();
        if let Some(s) = p.spec.as_mut() {
            s.host_network = Some(true);
        }
        assert!(endpoints(&plan(), "ml", &[Arc::new(p)], &[], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn dual_stack_keeps_one_endpoint_per_pod() {
        let mut p = (*pod("gw-a", ("ReplicaSet", "gw-1"), Some("10.1.0.1"), "ready")).clone();
        if let Some(s) = p.status.as_mut() {
            s.pod_ips = Some(vec![
                k8s_openapi::api::core::v1::PodIP {
                    ip: "10.1.0.1".into(),
                },
                k8s_openapi::api::core::v1::PodIP {
                    ip: "fd00::1".into(),
                },
            ]);
        }
        let target = json!({"kind": "Pod", "name": "gw-a"});
        let v4 = slice(
            "gw-v4",
            "gw",
            json!([{"addresses": ["10.1.0.1"], "zone": "zone-a", "targetRef": target}]),
        );
        let mut v6 = (*slice(
            "gw-v6",
            "gw",
            json!([{"addresses": ["fd00::1"], "zone": "zone-a", "targetRef": target}]),
        ))
        .clone();
        v6.address_type = "IPv6".into();
        let got = endpoints(
            &plan(),
            "ml",
            &[Arc::new(p)],
            &[Arc::new(v6), v4],
            &BTreeMap::new(),
        );
        let gateway: Vec<String> = got
            .iter()
            .filter(|e| e.source == "gateway")
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(gateway, vec!["10.1.0.1"]);
    }
}
