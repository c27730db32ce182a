//! The ZonalScaledObject controller (kube-runtime).
//!
//! Two loops share one [`Context`]:
//! - **Reconcile** (per CR, on changes to it or to its ScaledObjects, and every `resync`): checks
//!   the spec, server-side applies one KEDA ScaledObject per zone (owned by the CR, so they go
//!   with it), applies again whatever drifted, deletes those of zones no longer listed, and writes
//!   status (per-zone replicas and demand, `Ready` and `Degraded` conditions, observedGeneration).
//!   With `spec.routing` it also writes the routing object (HTTPRoute, BackendTrafficPolicy or
//!   DestinationRule) with the weights the zones loop decided: created first (an object of that
//!   name redbridge does not own is never taken over), then server-side applied, drift repaired,
//!   and those of other kinds deleted; an Event and a log line when the weights change.
//!   Failures are Kubernetes Events on the CR and `redbridge_reconciles_total{outcome}`.
//!   Status says only what the zones loop has seen: nothing is written for a CR before its first
//!   evaluation, and a write happens only when a condition, a count or a figure (beyond a dead
//!   band) changes, so ticks, resyncs and other replicas do not rewrite it.
//! - **Zones** (every `tick`, and on every discovery change): rebuilds each CR's pool from what
//!   discovery sees and publishes it to [`State`] when its targets changed, evaluates spillover and
//!   warm-up ([`zones::evaluate_routed`]), decides zone traffic weights with `spec.routing`, and
//!   publishes the adjustments and per-zone metrics. It makes no API calls; when a zone's shape
//!   or the weights change it asks for a reconcile so status and the gateway follow. After a
//!   start, the weights are rebuilt from the routing object (or `status.zones[].weight`).
//!
//! Only the holder of the Lease ([`super::leader`]) writes: every write asks
//! [`Context::may_write`] first, a follower's reconcile returns at once, and taking the Lease
//! reconciles every CR. Discovery, the zones loop and so KEDA's answers run on every replica.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::crd::{ZonalScaledObject, ZonalScaledObjectStatus, ZoneStatus};
use super::discovery::{Changes, Discovery};
use super::leader::{self, Elector, Leadership};
use super::plan::{Plan, SignalPlan};
use super::routing::{self, Lever, Owner};
use super::scaledobject::{self, Drift, Step, TriggerSettings, MANAGED_BY, OWNER_LABEL};
use super::zones::{self, ZoneView};
use super::{dns_label, Error};
use crate::config::trigger::TriggerQuery;
use crate::state::State;
use crate::telemetry;
use crate::zonal::spillover::Full;
use crate::zonal::weights::{self, Weights};

/// The field manager of everything redbridge applies.
pub const FIELD_MANAGER: &str = "redbridge";

/// Controller settings (flags of `redbridge controller`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch this namespace only (a Role suffices); all namespaces when `None`.
    pub namespace: Option<String>,
    pub triggers: TriggerSettings,
    /// Every CR is reconciled at least this often (status freshness, drift repair).
    pub resync: Duration,
    /// Zones are evaluated at least this often (spillover, warm-up, targets).
    pub tick: Duration,
    /// Reported in Events (`reportingInstance`), e.g. the Pod's name.
    pub instance: Option<String>,
    /// Wall-clock time: Pods' ages, conditions' transition times.
    pub wall: WallClock,
    /// The Lease whose holder alone writes (every replica discovers, scrapes and serves).
    pub leader: leader::Settings,
}

/// Wall-clock time, for what is compared with the API's timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock {
    /// A wall time and the tokio instant it was read at; `None`: the system's clock.
    anchor: Option<(Timestamp, tokio::time::Instant)>,
}

impl WallClock {
    /// The system's clock.
    pub fn system() -> WallClock {
        WallClock { anchor: None }
    }

    /// The system's time now, then advancing with tokio's clock: when a test pauses and
    /// advances tokio's time, Pods age and conditions' times move with it.
    pub fn following_tokio() -> WallClock {
        WallClock {
            anchor: Some((Timestamp::now(), tokio::time::Instant::now())),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self.anchor {
            None => Timestamp::now(),
            Some((wall, at)) => SignedDuration::try_from(at.elapsed())
                .ok()
                .and_then(|d| wall.checked_add(d).ok())
                .unwrap_or(wall),
        }
    }
}

impl Options {
    pub fn new(triggers: TriggerSettings) -> Options {
        Options {
            namespace: None,
            triggers,
            resync: Duration::from_secs(30),
            tick: Duration::from_secs(2),
            instance: None,
            wall: WallClock::system(),
            leader: leader::Settings::default(),
        }
    }
}

type Key = (String, String);

/// A CR's pool as last published.
struct Published {
    generation: Option<i64>,
    plan: Arc<Plan>,
    targets: Vec<(String, String, String)>,
    /// When the CR's pool was first published (monotonic seconds): its signals have no data
    /// before the first scrapes, which is not news to write into status.
    first: f64,
}

/// A CR's zones as the zones loop last evaluated them.
#[derive(Debug, Clone, PartialEq)]
struct View {
    zones: Vec<ZoneView>,
    /// With `spec.routing`: the zone traffic weights in place.
    weights: Option<Weights>,
    /// The pool was published less than a window ago: a zone without data may just not have
    /// been scraped yet, so status keeps the figures it had.
    settling: bool,
}

/// The status this controller last wrote for a CR, and the resourceVersion of the object it
/// was computed from: until the watch brings the written one, the store's copy is older.
#[derive(Debug, Clone)]
struct Written {
    based_on: Option<String>,
    status: ZonalScaledObjectStatus,
}

/// A CR's zone traffic weights and the routing object that carries them.
#[derive(Debug, Clone, Default)]
struct Route {
    /// The weights in place (decided by the zones loop) and when they last changed.
    last: Option<weights::Written>,
    /// Why they last changed: the note of the Event and the log line when they are written.
    reason: String,
    /// Rebuilt after a start (from the object, else from status), not decided since: the
    /// object's own weights are taken over as they are.
    restored: bool,
    /// The body last applied or seen in place: a change of it is announced, once.
    rendered: Option<Value>,
    /// Seen in place by the watch: missing afterwards is drift.
    in_place: bool,
    /// Created by this process and not yet seen by the watch.
    created: bool,
}

/// The watch of one kind of routing object (only redbridge's, by label).
struct LeverWatch {
    lever: Lever,
    store: Store<DynamicObject>,
    /// The first list is in: the store is complete.
    ready: Arc<AtomicBool>,
    /// Listing fails (the CRD is not installed, or RBAC refuses): that mode cannot be used.
    unavailable: Arc<AtomicBool>,
}

impl LeverWatch {
    fn settled(&self) -> bool {
        self.ready.load(Ordering::Relaxed) || self.unavailable.load(Ordering::Relaxed)
    }

    /// The objects of this kind in `ns` that belong to the CR with `uid`.
    fn owned_by(&self, ns: &str, uid: &str) -> Vec<Arc<DynamicObject>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(ns))
            .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
            .collect()
    }
}

/// What both loops share.
struct Context {
    client: Client,
    state: Arc<State>,
    options: Options,
    discovery: Discovery,
    scaled_objects: Store<DynamicObject>,
    recorder: Recorder,
    /// Pools from the configuration file: a CR may not take their names.
    reserved: Vec<(Option<String>, String)>,
    /// Per CR, the pool last published (zones loop only).
    published: Mutex<HashMap<Key, Published>>,
    /// Per CR, the latest zone views (written by the zones loop, read by reconcile).
    views: Mutex<HashMap<Key, View>>,
    /// Per CR, the status last written (reconcile only).
    written: Mutex<HashMap<Key, Written>>,
    /// Per CR and ScaledObject, the generation the watch last showed it in place for: a
    /// ScaledObject that then vanishes was deleted (or lost its labels), not never created.
    in_place: Mutex<HashMap<Key, HashMap<String, Option<i64>>>>,
    /// One watch per kind of routing object.
    levers: Vec<LeverWatch>,
    /// Per CR with `spec.routing`, its weights and routing object.
    routes: Mutex<HashMap<Key, Route>>,
    /// Whether this replica holds the Lease: asked right before every write.
    leadership: Leadership,
}

impl Context {
    fn lever(&self, lever: Lever) -> Option<&LeverWatch> {
        self.levers.iter().find(|w| w.lever == lever)
    }

    /// Every API write goes through here first: only the Lease's holder writes.
    fn may_write(&self) -> Result<(), Error> {
        if self.leadership.is_leading() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    fn conflict(&self, namespace: &str, name: &str) -> bool {
        self.reserved
            .iter()
            .any(|(ns, n)| n == name && ns.as_deref().is_none_or(|ns| ns == namespace))
    }

    async fn event(&self, zso: &ZonalScaledObject, type_: EventType, reason: &str, note: String) {
        self.event_about(zso, None, type_, reason, note).await
    }

    /// An event on `zso` about `related` too. The recorder folds repeats of an event into one
    /// series by its objects and reason, not its note: what it is about must be `related`.
    async fn event_about(
        &self,
        zso: &ZonalScaledObject,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if self.may_write().is_err() {
            debug!(reason, "Not the leader; event not recorded");
            return;
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, &zso.object_ref(&())).await {
            warn!(error = %e, reason, "Cannot publish event");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

fn key(zso: &ZonalScaledObject) -> Option<Key> {
    Some((zso.metadata.namespace.clone()?, zso.metadata.name.clone()?))
}

/// Runs discovery, the controller and the zones loop until `shutdown`.
pub async fn run(
    client: Client,
    state: Arc<State>,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (discovery, changes, discovery_task) =
        Discovery::new(client.clone(), options.namespace.as_deref());
    let elector = Elector::new(client.clone(), options.leader.clone());
    let leadership = elector.leadership();
    let ar = scaledobject::api_resource();
    let (zso_api, so_api): (Api<ZonalScaledObject>, Api<DynamicObject>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced_with(client.clone(), ns, &ar),
        ),
        None => (Api::all(client.clone()), Api::all_with(client.clone(), &ar)),
    };
    let so_writer = reflector::store::Writer::new(ar.clone());
    let scaled_objects = so_writer.as_reader();
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<ZonalScaledObject>>();
    // Our ScaledObjects: a change (drift, deletion, KEDA's status) reconciles the owner.
    let so_trigger = trigger_tx.clone();
    let so_task = watcher(
        so_api,
        watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
    )
    .default_backoff()
    .modify(|o: &mut DynamicObject| o.managed_fields_mut().clear())
    .reflect(so_writer)
    .touched_objects()
    .for_each(move |so| {
        match so {
            Ok(so) => {
                let ns = so.namespace();
                for owner in so.owner_references() {
                    if owner.kind == "ZonalScaledObject"
                        && owner.api_version.starts_with("redbridge.io/")
                    {
                        let mut r = ObjectRef::new(&owner.name);
                        if let Some(ns) = &ns {
                            r = r.within(ns);
                        }
                        let _ = so_trigger.send(r);
                    }
                }
            }
            Err(e) => warn!(error = %e, "ScaledObject watch failed (is KEDA installed?); retrying"),
        }
        futures::future::ready(())
    });

    // The routing objects redbridge owns, one watch per kind: a change (drift, deletion)
    // reconciles the owner. A kind whose CRD is not installed only makes its mode unavailable.
    let mut levers = Vec::new();
    let mut lever_tasks = Vec::new();
    for lever in Lever::ALL {
        let ar = lever.api_resource();
        let api: Api<DynamicObject> = match &options.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let writer = reflector::store::Writer::new(ar.clone());
        let watch = LeverWatch {
            lever,
            store: writer.as_reader(),
            ready: Arc::new(AtomicBool::new(false)),
            unavailable: Arc::new(AtomicBool::new(false)),
        };
        let (ready, unavailable) = (watch.ready.clone(), watch.unavailable.clone());
        let trigger = trigger_tx.clone();
        let kind = ar.kind.clone();
        lever_tasks.push(
            watcher(
                api,
                watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
            )
            .default_backoff()
            .modify(|o: &mut DynamicObject| o.managed_fields_mut().clear())
            .reflect(writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        ready.store(true, Ordering::Relaxed);
                        if unavailable.swap(false, Ordering::Relaxed) {
                            info!(kind = %kind, "Routing objects can be listed now");
                        }
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                        owners_of(&o, &trigger)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Said once, not at every retry: most clusters lack two of the three.
                        if !unavailable.swap(true, Ordering::Relaxed) {
                            info!(kind = %kind, error = %e, "Cannot list routing objects (CRD not installed?); spec.routing of this kind is unavailable");
                        }
                    }
                }
                futures::future::ready(())
            }),
        );
        levers.push(watch);
    }
    let lever_task = futures::future::join_all(lever_tasks);

    let reserved = state
        .pools()
        .iter()
        .map(|p| (p.pool.namespace.clone(), p.pool.name.clone()))
        .collect();
    // Reconcile on spec changes only (the generation): redbridge's own status writes must not
    // trigger reconciles, or every change of demand would become a status write.
    let (zsos, zso_writer) = reflector::store();
    let zso_stream = watcher(zso_api, watcher::Config::default())
        .default_backoff()
        .reflect(zso_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(zso_stream, zsos.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "redbridge".into(),
            instance: options.instance.clone(),
        },
    );
    let ctx = Arc::new(Context {
        client,
        state,
        options,
        discovery,
        scaled_objects,
        recorder,
        reserved,
        published: Mutex::new(HashMap::new()),
        views: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        in_place: Mutex::new(HashMap::new()),
        levers,
        routes: Mutex::new(HashMap::new()),
        leadership: leadership.clone(),
    });
    let controller = controller
        .reconcile_on(UnboundedReceiverStream::new(trigger_rx))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok((obj, _)) => debug!(object = %obj, "Reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "Controller: is the ZonalScaledObject CRD installed? (`redbridge crd | kubectl apply -f -`)"),
            }
            futures::future::ready(())
        });
    let lead_task = follow_leadership(ctx.clone(), zsos.clone(), trigger_tx.clone());
    let zones_task = zones_loop(ctx.clone(), zsos, changes, trigger_tx, shutdown.clone());
    info!(namespace = ?ctx.options.namespace, "Starting the ZonalScaledObject controller");
    tokio::select! {
        _ = controller => {}
        _ = discovery_task => {}
        _ = so_task => {}
        _ = zones_task => {}
        _ = lever_task => {}
        _ = elector.run(shutdown.clone()) => {}
        _ = lead_task => {}
    }
    // Writing has stopped with the loops above: give the Lease up for the next replica.
    elector.release().await;
    ctx.state.metrics.set_leader(false);
    // Stop serving what only the controller kept current.
    let keys: Vec<Key> = lock(&ctx.published).keys().cloned().collect();
    for (ns, name) in keys {
        forget(&ctx, &ns, &name);
    }
    info!("ZonalScaledObject controller stopped");
    Ok(())
}

/// Publishes this replica's leadership on `/metrics`, and on taking the Lease reconciles every
/// CR: as a follower it wrote nothing, so whatever changed meanwhile is written now.
async fn follow_leadership(
    ctx: Arc<Context>,
    zsos: Store<ZonalScaledObject>,
    trigger: mpsc::UnboundedSender<ObjectRef<ZonalScaledObject>>,
) {
    let mut changes = ctx.leadership.subscribe();
    // The current value first, in case the Lease was taken before this started.
    changes.mark_changed();
    while changes.changed().await.is_ok() {
        let leading = *changes.borrow_and_update();
        ctx.state.metrics.set_leader(leading);
        if leading {
            for zso in zsos.state() {
                let _ = trigger.send(ObjectRef::from_obj(&*zso));
            }
        }
    }
}

/// Re-evaluates every CR's zones each `tick` and on discovery changes, until `shutdown`.
async fn zones_loop(
    ctx: Arc<Context>,
    zsos: Store<ZonalScaledObject>,
    mut changes: Changes,
    trigger: mpsc::UnboundedSender<ObjectRef<ZonalScaledObject>>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async {
            let _ = zsos.wait_until_ready().await;
            ctx.discovery.ready().await;
            // Weights are rebuilt from the routing objects after a start: wait for their lists.
            while !ctx.levers.iter().all(LeverWatch::settled) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => {}
    }
    let mut tick = tokio::time::interval(ctx.options.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            changed = changes.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                }
                // Coalesce a burst (a rollout touches many Pods at once).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for r in evaluate_all(&ctx, &zsos.state()) {
            let _ = trigger.send(r);
        }
        // The pools of discovery's first complete list are published: this replica can answer.
        ctx.state.discovery_listed();
    }
}

/// One pass of the zones loop; returns the CRs whose zones changed shape (to reconcile).
fn evaluate_all(
    ctx: &Context,
    zsos: &[Arc<ZonalScaledObject>],
) -> Vec<ObjectRef<ZonalScaledObject>> {
    let mut seen = HashSet::new();
    let mut changed = Vec::new();
    let wall = ctx.options.wall.now();
    let now = ctx.state.clock.now();
    for zso in zsos {
        let Some((ns, name)) = key(zso) else { continue };
        if ctx.conflict(&ns, &name) {
            continue;
        }
        let k = (ns.clone(), name.clone());
        let generation = zso.metadata.generation;
        let plan = lock(&ctx.published)
            .get(&k)
            .filter(|p| p.generation == generation)
            .map(|p| p.plan.clone());
        let plan = match plan {
            Some(p) => p,
            // An invalid spec keeps the last valid pool served; reconcile reports the error.
            None => match Plan::from_spec(&zso.spec) {
                Ok(p) => Arc::new(p),
                Err(_) => {
                    if lock(&ctx.published).contains_key(&k) {
                        seen.insert(k);
                    }
                    continue;
                }
            },
        };
        seen.insert(k.clone());
        let endpoints = ctx.discovery.endpoints(&ns, &plan);
        let pool = plan.pool(&name, &ns, &endpoints);
        let targets: Vec<(String, String, String)> = pool
            .sources
            .iter()
            .flat_map(|s| {
                s.targets
                    .iter()
                    .map(move |t| (s.name.clone(), t.zone.clone(), t.url.clone()))
            })
            .collect();
        let first = {
            let mut published = lock(&ctx.published);
            let previous = published.get(&k);
            let first = previous.map_or(now, |p| p.first);
            let same = previous.is_some_and(|p| p.generation == generation && p.targets == targets);
            if !same {
                info!(namespace = %ns, pool = %name, targets = targets.len(), "Publishing pool");
                let sources = plan.signals.iter().map(|s| (s.signal, s.source.into()));
                ctx.state.set_signal_sources(&ns, &name, sources.collect());
                ctx.state.upsert_pool(Arc::new(pool));
                published.insert(
                    k.clone(),
                    Published {
                        generation,
                        plan: plan.clone(),
                        targets: targets.clone(),
                        first,
                    },
                );
            }
            first
        };
        let mut per_zone: BTreeMap<(String, String), u32> = BTreeMap::new();
        for (source, zone, _) in &targets {
            *per_zone.entry((zone.clone(), source.clone())).or_default() += 1;
        }
        let pods = ctx.discovery.zone_pods(&ns, &plan, wall);
        let raw = |zone: &str, s: &SignalPlan| raw_value(&ctx.state, &ns, &name, zone, s, now);
        let last = route_before(ctx, zso, &plan, &k, now);
        let evaluation = zones::evaluate_routed(&plan, &pods, &per_zone, raw, last.as_ref(), now);
        let settling = now - first < plan.window.as_secs_f64();
        let weights = match (&plan.routing, &evaluation.routing) {
            (Some(_), Some(decision)) => {
                let mut routes = lock(&ctx.routes);
                let route = routes.entry(k.clone()).or_default();
                let informed = evaluation.zones.iter().all(|z| z.local_demand.is_some());
                // A new pool's first scrapes are on their way: the first weights wait for them
                // (for a window at most), rather than writing a guess and then the answer.
                let early = settling && !informed && route.last.is_none();
                if decision.changed && !early {
                    // Weights written without every zone's demand are not a decision to hold
                    // to: the first with data follows at once.
                    let min_interval = plan.routing.as_ref().map_or(0.0, |r| r.policy.min_interval);
                    route.last = Some(weights::Written {
                        weights: decision.weights.clone(),
                        at: if informed { now } else { now - min_interval },
                    });
                    route.reason = decision.reason.clone();
                    route.restored = false;
                    changed.push(ObjectRef::new(&name).within(&ns));
                }
                route.last.as_ref().map(|l| l.weights.clone())
            }
            _ => {
                lock(&ctx.routes).remove(&k);
                None
            }
        };
        ctx.state
            .set_zone_adjustments(&ns, &name, evaluation.adjustments.clone());
        let pool_label = format!("{ns}/{name}");
        for z in &evaluation.zones {
            ctx.state.metrics.set_zone_status(
                &pool_label,
                &z.name,
                telemetry::ZoneStatus {
                    ready: z.pods.ready,
                    starting: z.pods.loading,
                    desired: z.desired.unwrap_or(0),
                    local_demand: z.local_demand.unwrap_or(0.0),
                    spilled_in: z.spill.spilled_in,
                    spilled_out: z.spill.spilled_out,
                    weight: weights.as_ref().and_then(|w| w.share(&z.name)),
                },
            );
        }
        let view = View {
            zones: evaluation.zones,
            weights,
            settling,
        };
        let mut views = lock(&ctx.views);
        let shape_changed = views.get(&k).is_none_or(|old| {
            old.zones
                .iter()
                .map(ZoneView::shape)
                .ne(view.zones.iter().map(ZoneView::shape))
        });
        views.insert(k, view);
        if shape_changed {
            changed.push(ObjectRef::new(&name).within(&ns));
        }
    }
    let gone: Vec<Key> = lock(&ctx.published)
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    for (ns, name) in gone {
        info!(namespace = %ns, pool = %name, "ZonalScaledObject gone; no longer serving its pool");
        forget(ctx, &ns, &name);
    }
    changed
}

/// Asks for a reconcile of the ZonalScaledObjects that own `o`.
fn owners_of(o: &DynamicObject, trigger: &mpsc::UnboundedSender<ObjectRef<ZonalScaledObject>>) {
    let ns = o.namespace();
    for owner in o.owner_references() {
        if owner.kind == routing::OWNER_KIND && owner.api_version == routing::OWNER_API_VERSION {
            let mut r = ObjectRef::new(&owner.name);
            if let Some(ns) = &ns {
                r = r.within(ns);
            }
            let _ = trigger.send(r);
        }
    }
}

/// The weights last written for a CR with `spec.routing`: in memory, or after a start rebuilt
/// from its routing object (exactly what the gateway has) or else from `status.zones[].weight`,
/// so the first decision continues from what the gateway does instead of jumping.
fn route_before(
    ctx: &Context,
    zso: &ZonalScaledObject,
    plan: &Plan,
    k: &Key,
    now: f64,
) -> Option<weights::Written> {
    let r = plan.routing.as_ref()?;
    if let Some(route) = lock(&ctx.routes).get(k) {
        return route.last.clone();
    }
    let names: Vec<String> = plan.zones.iter().map(|z| z.name.clone()).collect();
    let shares: Option<Vec<f64>> = names
        .iter()
        .map(|n| {
            let zone = zso.status.as_ref()?.zones.iter().find(|z| &z.name == n)?;
            zone.weight.map(|w| f64::from(w) / 100.0)
        })
        .collect();
    let from_status = shares.map(|s| Weights::from_shares(&names, &s));
    let uid = zso.metadata.uid.as_deref()?;
    let object = ctx.lever(r.lever).and_then(|w| {
        w.owned_by(&k.0, uid)
            .into_iter()
            .find(|o| o.name_any() == routing::name(&k.1))
    });
    let from_object = object.and_then(|o| {
        let body = serde_json::to_value(&*o).ok()?;
        let base = from_status
            .clone()
            .unwrap_or_else(|| Weights::local(&names));
        routing::read_back(&r.spec, &body, &base, &r.services)
    });
    let weights = from_object.or(from_status)?;
    debug!(namespace = %k.0, name = %k.1, "Zone weights rebuilt after a start");
    let last = weights::Written { weights, at: now };
    lock(&ctx.routes).insert(
        k.clone(),
        Route {
            last: Some(last.clone()),
            restored: true,
            ..Default::default()
        },
    );
    Some(last)
}

/// Writes the routing object of `zso` (`spec.routing`) with the weights the zones loop decided,
/// repairs drift, and deletes its routing objects of other kinds (all of them without
/// `spec.routing`). Returns what status should say about routing, and whether to look again
/// soon. An object of the same name that redbridge does not own is never taken over.
async fn reconcile_routing(
    ctx: &Context,
    zso: &ZonalScaledObject,
    plan: &Plan,
    k: &Key,
) -> Result<(Vec<Problem>, bool), Error> {
    let (ns, name) = (k.0.as_str(), k.1.as_str());
    let mut problems = Vec::new();
    let mut again = false;
    let uid = zso
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingField("metadata.uid"))?;
    let wanted = plan.routing.as_ref().map(|r| r.lever);
    for watch in ctx.levers.iter().filter(|w| Some(w.lever) != wanted) {
        for o in watch.owned_by(ns, uid) {
            let ar = watch.lever.api_resource();
            let object = o.name_any();
            info!(namespace = %ns, kind = %ar.kind, name = %object, "Deleting a routing object spec.routing no longer asks for");
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
            ctx.may_write()?;
            match api.delete(&object, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => {
                    return Err(Error::Route {
                        kind: ar.kind,
                        name: object,
                        error,
                    })
                }
            }
        }
    }
    let Some(r) = &plan.routing else {
        return Ok((problems, again));
    };
    let Some(watch) = ctx.lever(r.lever) else {
        return Ok((problems, again));
    };
    let ar = r.lever.api_resource();
    if watch.unavailable.load(Ordering::Relaxed) {
        problems.push(Problem {
            reason: "RoutingUnavailable",
            message: format!(
                "spec.routing.{}: cannot list {} ({}): is its CRD installed, and may redbridge list it? Traffic weights are not written",
                r.lever.field(),
                ar.plural,
                ar.group
            ),
            blocking: false,
        });
        return Ok((problems, again));
    }
    if !watch.ready.load(Ordering::Relaxed) {
        return Ok((problems, true));
    }
    let Some(weights) = lock(&ctx.routes)
        .get(k)
        .and_then(|r| r.last.as_ref())
        .map(|l| l.weights.clone())
    else {
        // The zones loop has not decided yet; its first decision asks for a reconcile.
        return Ok((problems, again));
    };
    let owner = Owner::of(&zso.metadata)?;
    let object = routing::name(name);
    let observed = watch
        .store
        .get(&ObjectRef::new_with(&object, ar.clone()).within(ns));
    // Another CR's (the owner label names it): not ours to change.
    if let Some(o) = observed.as_deref() {
        if o.labels().get(OWNER_LABEL) != Some(&dns_label(name)) {
            problems.push(not_owned(&ar.kind, ns, &object));
            return Ok((problems, again));
        }
    }
    let mut owned = routing::render(&owner, &r.spec, &r.services, &weights)?;
    let restored = lock(&ctx.routes).get(k).is_some_and(|r| r.restored);
    if let (true, Some(o)) = (restored, observed.as_deref()) {
        // After a start: the object's weights, read back exactly, are the ones in place.
        let body = serde_json::to_value(o).unwrap_or_default();
        if let Some(back) = routing::read_back(&r.spec, &body, &weights, &r.services) {
            if back.distance(&weights) <= 0.011 {
                owned = routing::render(&owner, &r.spec, &r.services, &back)?;
                if let Some(last) = lock(&ctx.routes).get_mut(k).and_then(|r| r.last.as_mut()) {
                    last.weights = back;
                }
            }
        }
    }
    let (rendered, in_place, created) = {
        let routes = lock(&ctx.routes);
        let route = routes.get(k);
        (
            route.and_then(|r| r.rendered.clone()),
            route.is_some_and(|r| r.in_place),
            route.is_some_and(|r| r.created),
        )
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    // The object's resourceVersion once written: the Event is about that version, so the
    // recorder does not fold one change of the weights into the series of the previous one
    // (whose note would be repeated instead of this change's reason).
    let (drift, version) = match observed.as_deref() {
        Some(o) if !scaledobject::drifted(o, &owned.body) => {
            if let Some(route) = lock(&ctx.routes).get_mut(k) {
                route.rendered = Some(owned.body.clone());
                route.in_place = true;
                route.created = false;
            }
            return Ok((problems, again));
        }
        Some(o) => {
            // The same body as before, yet the object differs: someone changed it.
            let drift = (rendered.as_ref() == Some(&owned.body)).then_some(Drift::Changed);
            let mut body = owned.body.clone();
            if let Some(rv) = o.resource_version() {
                body["metadata"]["resourceVersion"] = json!(rv);
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            ctx.may_write()?;
            let version = match api.patch(&object, &params, &Patch::Apply(&body)).await {
                Ok(o) => o.resource_version(),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    return Ok((problems, true));
                }
                Err(error) => {
                    return Err(Error::Route {
                        kind: ar.kind,
                        name: object,
                        error,
                    })
                }
            };
            (drift, version)
        }
        None if created => {
            // Created by this process; the watch has not shown it yet.
            return Ok((problems, true));
        }
        None => {
            // Not in redbridge's watch: created, never applied over, so that an object of the
            // same name without redbridge's labels is refused rather than taken over.
            let params = kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let body: DynamicObject = serde_json::from_value(owned.body.clone())
                .map_err(|_| Error::MissingField("routing object metadata"))?;
            ctx.may_write()?;
            let version = match api.create(&params, &body).await {
                Ok(o) => o.resource_version(),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    warn!(namespace = %ns, kind = %ar.kind, name = %object, "A routing object of this name exists and is not redbridge's; not taking it over");
                    problems.push(not_owned(&ar.kind, ns, &object));
                    return Ok((problems, again));
                }
                Err(error) => {
                    return Err(Error::Route {
                        kind: ar.kind,
                        name: object,
                        error,
                    })
                }
            };
            again = true;
            (in_place.then_some(Drift::Missing), version)
        }
    };
    let reason = {
        let mut routes = lock(&ctx.routes);
        let route = routes.entry(k.clone()).or_default();
        route.rendered = Some(owned.body.clone());
        route.in_place = false;
        route.created = observed.is_none();
        route.reason.clone()
    };
    let related = ObjectReference {
        api_version: Some(ar.api_version.clone()),
        kind: Some(ar.kind.clone()),
        name: Some(object.clone()),
        namespace: Some(ns.to_string()),
        resource_version: version,
        ..Default::default()
    };
    if let Some(drift) = drift {
        let what = match drift {
            Drift::Changed => "was changed",
            Drift::Missing => "was deleted or lost its labels",
        };
        ctx.event_about(
            zso,
            Some(related),
            EventType::Normal,
            "DriftRepaired",
            format!("{} {object} {what}; applied again", ar.kind),
        )
        .await;
    } else if rendered.as_ref() != Some(&owned.body) {
        info!(namespace = %ns, name = %name, kind = %ar.kind, reason = %reason, "Zone traffic weights written");
        ctx.event_about(
            zso,
            Some(related),
            EventType::Normal,
            "ZoneWeightsChanged",
            format!("{} {object}: {reason}", ar.kind),
        )
        .await;
    }
    Ok((problems, again))
}

/// The Degraded problem of a routing object of the CR's name that redbridge does not own.
fn not_owned(kind: &str, ns: &str, name: &str) -> Problem {
    Problem {
        reason: "RoutingObjectNotOwned",
        message: format!(
            "{kind} {ns}/{name} exists and is not redbridge's (no {}={} and {OWNER_LABEL}={name} labels); rename or delete it to let spec.routing write it",
            MANAGED_BY.0, MANAGED_BY.1
        ),
        blocking: false,
    }
}

fn forget(ctx: &Context, ns: &str, name: &str) {
    let k = (ns.to_string(), name.to_string());
    lock(&ctx.published).remove(&k);
    lock(&ctx.views).remove(&k);
    lock(&ctx.written).remove(&k);
    lock(&ctx.in_place).remove(&k);
    lock(&ctx.routes).remove(&k);
    ctx.state.remove_pool(Some(ns), name);
    ctx.state.set_zone_adjustments(ns, name, HashMap::new());
    ctx.state.metrics.forget_pool(&format!("{ns}/{name}"));
}

/// A signal's value for one zone before spillover and warm-up, or `None` without fresh data.
fn raw_value(
    state: &State,
    ns: &str,
    pool: &str,
    zone: &str,
    s: &SignalPlan,
    now: f64,
) -> Option<f64> {
    let query = TriggerQuery {
        pool: pool.to_string(),
        zone: Some(zone.to_string()),
        signal: s.signal,
        source: Some(s.source.to_string()),
        aggregation: None,
        target: s.target,
        activation_target: s.activation_target,
        window: None,
        up_window: s.up_window,
    };
    let resolved = state.resolve(ns, query).ok()?;
    state
        .evaluate_unadjusted_at(&resolved, now)
        .ok()
        .filter(|v| v.is_finite())
}

/// Why a CR is degraded, most important first.
#[derive(Debug, Clone, PartialEq)]
struct Problem {
    reason: &'static str,
    message: String,
    /// Problems that stop the CR from working make it not Ready; the others only degrade it.
    blocking: bool,
}

/// A problem that stops the CR from working: a Warning event, and the status says why. It does
/// not depend on the zones loop, so it is written even before the CR's first evaluation (keeping
/// the zones' figures status had).
async fn report_blocking(
    ctx: &Context,
    zso: &ZonalScaledObject,
    plan: Option<&Plan>,
    reason: &'static str,
    message: String,
) -> Result<(), Error> {
    ctx.event(zso, EventType::Warning, reason, message.clone())
        .await;
    let problem = Problem {
        reason,
        message,
        blocking: true,
    };
    let (ns, name) = key(zso).ok_or(Error::MissingField("metadata.namespace"))?;
    let view = lock(&ctx.views).get(&(ns, name)).cloned();
    write_status(ctx, zso, plan, view.as_ref(), &[problem]).await
}

async fn reconcile(zso: Arc<ZonalScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    // A follower writes nothing; taking the Lease reconciles every CR (`follow_leadership`).
    if ctx.may_write().is_err() {
        return Ok(Action::await_change());
    }
    let (ns, name) = key(&zso).ok_or(Error::MissingField("metadata.namespace"))?;
    let k = (ns.clone(), name.clone());
    let plan = match Plan::from_spec(&zso.spec) {
        Ok(plan) => plan,
        Err(errors) => {
            let message = errors.to_string();
            warn!(namespace = %ns, name = %name, detail = %message, "Invalid ZonalScaledObject");
            report_blocking(&ctx, &zso, None, "InvalidSpec", message).await?;
            ctx.state.metrics.reconciled("invalid_spec");
            return Ok(Action::await_change());
        }
    };
    if ctx.conflict(&ns, &name) {
        let message = format!("a pool named {name:?} is already defined in redbridge's configuration file for this namespace; rename the ZonalScaledObject");
        report_blocking(&ctx, &zso, Some(&plan), "PoolConflict", message).await?;
        ctx.state.metrics.reconciled("pool_conflict");
        return Ok(Action::await_change());
    }

    let generation = zso.metadata.generation;
    let desired = scaledobject::desired(&zso, &plan, &ctx.options.triggers)?;
    let ar = scaledobject::api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let mut problems = Vec::new();
    // Something changed under this reconcile (a ScaledObject since it was looked at, or this copy
    // of the CR is behind): look again soon rather than at the next resync.
    let mut again = false;
    for (so_name, body) in &desired {
        let observed = ctx
            .scaled_objects
            .get(&ObjectRef::new_with(so_name, ar.clone()).within(&ns));
        let was_in_place = lock(&ctx.in_place)
            .get(&k)
            .and_then(|m| m.get(so_name))
            .is_some_and(|g| *g == generation);
        let step = scaledobject::step(observed.as_deref(), body, generation, was_in_place);
        match step {
            Step::InPlace => {
                lock(&ctx.in_place)
                    .entry(k.clone())
                    .or_default()
                    .insert(so_name.clone(), generation);
                if let Some(message) = observed.as_deref().and_then(keda_not_ready) {
                    problems.push(Problem {
                        reason: "ScaledObjectNotReady",
                        message: format!("ScaledObject {so_name}: {message}"),
                        blocking: true,
                    });
                }
                continue;
            }
            Step::Wait => {
                debug!(namespace = %ns, scaledobject = %so_name, "ScaledObject written for a newer generation; waiting for it");
                again = true;
                continue;
            }
            Step::Apply => info!(namespace = %ns, scaledobject = %so_name, "Applying ScaledObject"),
            Step::Repair(_) => {
                info!(namespace = %ns, scaledobject = %so_name, "ScaledObject drifted; applying again")
            }
        }
        // In place again once the watch shows what this writes, not before.
        if let Some(m) = lock(&ctx.in_place).get_mut(&k) {
            m.remove(so_name);
        }
        let mut body = body.clone();
        if let Some(rv) = observed.as_deref().and_then(|o| o.resource_version()) {
            // Only over the version looked at: a change since (another replica's repair, an
            // edit) is looked at first, so it is not overwritten blind nor reported twice.
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        ctx.may_write()?;
        match api.patch(so_name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                debug!(namespace = %ns, scaledobject = %so_name, "ScaledObject changed meanwhile; looking again");
                again = true;
                continue;
            }
            Err(e) => {
                let message = format!("cannot apply ScaledObject {so_name}: {e}");
                // Best effort: the error itself is what gets retried.
                let _ = report_blocking(&ctx, &zso, Some(&plan), "ApplyFailed", message).await;
                return Err(Error::Apply {
                    name: so_name.clone(),
                    error: e,
                });
            }
        }
        if let Step::Repair(drift) = step {
            let what = match drift {
                Drift::Changed => "was changed",
                Drift::Missing => "was deleted or lost its labels",
            };
            let related = ObjectReference {
                api_version: Some(ar.api_version.clone()),
                kind: Some(ar.kind.clone()),
                name: Some(so_name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            };
            ctx.event_about(
                &zso,
                Some(related),
                EventType::Normal,
                "DriftRepaired",
                format!("ScaledObject {so_name} {what}; applied again"),
            )
            .await;
        }
    }
    // ScaledObjects of zones no longer listed.
    let uid = zso.metadata.uid.clone();
    let wanted: HashSet<&str> = desired.iter().map(|(n, _)| n.as_str()).collect();
    for so in ctx.scaled_objects.state() {
        let ours = so.namespace().as_deref() == Some(ns.as_str())
            && so
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref());
        let so_name = so.name_any();
        if ours && !wanted.contains(so_name.as_str()) {
            info!(namespace = %ns, scaledobject = %so_name, "Deleting the ScaledObject of a zone no longer listed");
            ctx.may_write()?;
            match api.delete(&so_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    ctx.event(
                        &zso,
                        EventType::Warning,
                        "DeleteFailed",
                        format!("cannot delete ScaledObject {so_name}: {e}"),
                    )
                    .await;
                    return Err(Error::Delete {
                        name: so_name,
                        error: e,
                    });
                }
            }
            if let Some(m) = lock(&ctx.in_place).get_mut(&k) {
                m.remove(&so_name);
            }
        }
    }
    // Routing is on top of scaling: a failed write degrades the CR, and status still says so.
    let (routing_problems, routing_again) = match reconcile_routing(&ctx, &zso, &plan, &k).await {
        Ok(r) => r,
        Err(e @ Error::Route { .. }) => {
            let message = e.to_string();
            warn!(namespace = %ns, name = %name, error = %message, "Cannot write the routing object; retrying");
            ctx.event(&zso, EventType::Warning, "RoutingFailed", message.clone())
                .await;
            let problem = Problem {
                reason: "RoutingFailed",
                message,
                blocking: false,
            };
            (vec![problem], true)
        }
        Err(e) => return Err(e),
    };
    problems.extend(routing_problems);
    again |= routing_again;
    let requeue = if again {
        Action::requeue(ctx.options.resync.min(Duration::from_secs(1)))
    } else {
        Action::requeue(ctx.options.resync)
    };

    // Before the zones loop has looked at the CR (discovery still listing, or the loop not yet
    // run), status would say every zone has 0 ready replicas and 0 targets: write nothing. The
    // loop's first evaluation asks for a reconcile.
    let Some(view) = lock(&ctx.views).get(&k).cloned() else {
        debug!(namespace = %ns, name = %name, "Zones not evaluated yet; status left as it is");
        ctx.state.metrics.reconciled("ok");
        return Ok(requeue);
    };
    problems.extend(view_problems(&plan, &view.zones));
    // Blocking first: the first problem is Degraded's reason.
    problems.sort_by_key(|p| !p.blocking);
    let previous = previous_status(&zso, lock(&ctx.written).get(&k)).cloned();
    for z in newly_full(&view.zones, previous.as_ref()) {
        ctx.event(
            &zso,
            EventType::Warning,
            "ZoneFull",
            format!(
                "zone {} is full ({})",
                z.name,
                z.full.map(|f| f.reason()).unwrap_or_default()
            ),
        )
        .await;
    }
    write_status(&ctx, &zso, Some(&plan), Some(&view), &problems).await?;
    ctx.state.metrics.reconciled("ok");
    Ok(requeue)
}

/// The zones that are full now and were not in `previous` status (each gets one `ZoneFull`).
fn newly_full<'a>(
    zones: &'a [ZoneView],
    previous: Option<&ZonalScaledObjectStatus>,
) -> Vec<&'a ZoneView> {
    let was_full: HashSet<&str> = previous
        .iter()
        .flat_map(|s| s.zones.iter())
        .filter(|z| z.full.is_some())
        .map(|z| z.name.as_str())
        .collect();
    zones
        .iter()
        .filter(|z| z.full.is_some() && !was_full.contains(z.name.as_str()))
        .collect()
}

/// What the zones loop's view says is wrong: zones or sources without scrape targets, and full
/// zones. Messages hold no ages or figures that move by themselves, so status is rewritten only
/// when one of these changes.
fn view_problems(plan: &Plan, zones: &[ZoneView]) -> Vec<Problem> {
    let mut out = Vec::new();
    // A signal's source: one without targets leaves that signal without data.
    let used: Vec<&super::plan::SourcePlan> = plan
        .sources
        .iter()
        .filter(|s| plan.signals.iter().any(|sig| sig.source == s.name))
        .collect();
    let serving = zones.iter().any(|z| z.pods.ready > 0);
    let targets = |z: &ZoneView, source: &str| z.source_targets.get(source).copied().unwrap_or(0);
    let mut nowhere = HashSet::new();
    for source in &used {
        // Without a ready replica anywhere (scaled to zero, all starting) nothing is expected.
        if serving && zones.iter().all(|z| targets(z, source.name) == 0) {
            nowhere.insert(source.name);
            let hint = match &source.find {
                super::plan::Find::Service(svc) => {
                    format!("Service {svc} has no ready endpoint backed by a Pod of the namespace")
                }
                super::plan::Find::Selector(_) => {
                    "no ready Pod of a zone's scale target matches its selector".to_string()
                }
                super::plan::Find::InferencePool(pool) => format!(
                    "InferencePool {pool} is missing or selects no ready Pod of a zone's scale target"
                ),
                super::plan::Find::PickerOf(pool) => format!(
                    "InferencePool {pool} is missing, names no endpoint picker Service, or its Service has no ready endpoint"
                ),
            };
            let signals: Vec<&str> = plan
                .signals
                .iter()
                .filter(|s| s.source == source.name)
                .map(|s| s.field)
                .collect();
            out.push(Problem {
                reason: "NoTargets",
                message: format!(
                    "source {} has no targets in any zone ({hint}); no data for {}",
                    source.name,
                    signals.join(", ")
                ),
                blocking: true,
            });
        }
    }
    for z in zones.iter().filter(|z| z.pods.ready > 0) {
        if z.targets == 0 {
            out.push(Problem {
                reason: "NoTargets",
                message: format!(
                    "zone {} has {} ready replicas but no scrape targets; check spec.sources (service, selector, port)",
                    z.name, z.pods.ready
                ),
                blocking: true,
            });
            continue;
        }
        for source in used.iter().filter(|s| !nowhere.contains(s.name)) {
            // The picker's figures are the whole pool's, read in the first zone only (but for
            // the ones it splits by zone).
            if source.name == super::plan::ENDPOINT_PICKER
                && plan.first_zone() != Some(z.name.as_str())
            {
                let signals: Vec<&str> = plan
                    .signals
                    .iter()
                    .filter(|s| s.source == source.name && !plan.read_per_zone(s))
                    .map(|s| s.field)
                    .collect();
                if signals.is_empty() {
                    continue;
                }
                out.push(Problem {
                    reason: "NoTargets",
                    message: format!(
                        "zone {} has no data for {}: the endpoint picker's figures are the pool's, read in zone {} only; scale this zone on model-server signals",
                        z.name,
                        signals.join(", "),
                        plan.first_zone().unwrap_or_default()
                    ),
                    blocking: false,
                });
                continue;
            }
            if targets(z, source.name) == 0 {
                out.push(Problem {
                    reason: "NoTargets",
                    message: format!(
                        "source {} has no targets in zone {}, which has {} ready replicas; its signals have no data there",
                        source.name, z.name, z.pods.ready
                    ),
                    blocking: false,
                });
            }
        }
    }
    for z in zones {
        let Some(full) = z.full else { continue };
        let why = match full {
            Full::AtMax => "runs its maximum replicas".to_string(),
            Full::Unschedulable { .. } => {
                let since = match z.pods.unschedulable_since {
                    Some(t) => format!("since {t}"),
                    None => plan
                        .spillover
                        .as_ref()
                        .map(|s| format!("for over {:?}", s.unschedulable_after))
                        .unwrap_or_default(),
                };
                format!("has {} Pods unschedulable {since}", z.pods.unschedulable)
            }
        };
        out.push(Problem {
            reason: full.reason(),
            message: format!("zone {} {}", z.name, why.trim_end()),
            blocking: false,
        });
    }
    out
}

/// KEDA's own verdict on a ScaledObject: its `Ready` condition's message when it is `False`.
fn keda_not_ready(so: &DynamicObject) -> Option<String> {
    let conditions = so.data.get("status")?.get("conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
    if ready.get("status").and_then(|s| s.as_str()) != Some("False") {
        return None;
    }
    let reason = ready
        .get("reason")
        .and_then(|s| s.as_str())
        .unwrap_or("NotReady");
    let message = ready.get("message").and_then(|s| s.as_str()).unwrap_or("");
    Some(format!("{reason}: {message}"))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// How far a figure in status (demand, spill) may move before it is written again: this share of
/// its last written value, or of the demand signal's target near zero. Two samples of the same
/// demand (another replica's, the next tick's) differ by less, so they do not rewrite status.
const DEAD_BAND: f64 = 0.1;

/// The figure to write: the one written before while `now` is within the dead band of it
/// (`floor` at least), else `now` rounded.
fn settle(previous: Option<f64>, now: Option<f64>, floor: f64) -> Option<f64> {
    match (previous, now) {
        (Some(p), Some(n)) if (n - p).abs() <= (DEAD_BAND * p.abs()).max(floor) => Some(p),
        (_, n) => n.map(round),
    }
}

/// The status to compare with and build on: the store's, unless this controller wrote a newer one
/// the watch has not brought yet.
fn previous_status<'a>(
    zso: &'a ZonalScaledObject,
    written: Option<&'a Written>,
) -> Option<&'a ZonalScaledObjectStatus> {
    match written {
        Some(w) if w.based_on.is_some() && w.based_on == zso.metadata.resource_version => {
            Some(&w.status)
        }
        _ => zso.status.as_ref(),
    }
}

/// The status for `zso` from the zones loop's latest view (`None` before its first: the zones
/// keep what `previous` said) and the problems found. Conditions keep their transition time while
/// their status stays; demand and spill keep their previous figures within the dead band.
fn status(
    zso: &ZonalScaledObject,
    plan: Option<&Plan>,
    view: Option<&View>,
    problems: &[Problem],
    previous: Option<&ZonalScaledObjectStatus>,
    now: Timestamp,
) -> ZonalScaledObjectStatus {
    let generation = zso.metadata.generation;
    let name = zso.name_any();
    let floor = plan
        .and_then(|p| p.demand_signal())
        .map_or(0.0, |s| DEAD_BAND * s.target);
    // Whole percentages of the weights in place, by zone.
    let percent: HashMap<&str, i32> = view
        .and_then(|v| v.weights.as_ref())
        .map(|w| {
            w.zones
                .iter()
                .map(String::as_str)
                .zip(weights::percentages(&w.shares).into_iter().map(i32_of))
                .collect()
        })
        .unwrap_or_default();
    let zones: Vec<ZoneStatus> = plan
        .map(|plan| {
            plan.zones
                .iter()
                .map(|z| {
                    let before = previous.and_then(|p| p.zones.iter().find(|s| s.name == z.name));
                    let fresh = ZoneStatus {
                        name: z.name.clone(),
                        scaled_object: scaledobject::name(&name, &z.name),
                        ..Default::default()
                    };
                    let Some(v) = view.and_then(|v| v.zones.iter().find(|v| v.name == z.name))
                    else {
                        return before.cloned().unwrap_or(fresh);
                    };
                    let mut s = ZoneStatus {
                        ready_replicas: i32_of(v.pods.ready),
                        starting_replicas: i32_of(v.pods.loading),
                        unschedulable_replicas: i32_of(v.pods.unschedulable),
                        targets: i32_of(v.targets),
                        full: v.full.map(|f| f.reason().to_string()),
                        gpus: plan.gpu.as_ref().map(|(_, per)| {
                            i32_of((v.pods.ready + v.pods.loading).saturating_mul(*per))
                        }),
                        weight: percent.get(z.name.as_str()).copied(),
                        ..fresh
                    };
                    let no_data = v.desired.is_none() && v.local_demand.is_none();
                    match before {
                        // Not scraped yet after a start: the figures status had still stand.
                        Some(b) if no_data && view.is_some_and(|v| v.settling) => {
                            s.desired_replicas = b.desired_replicas;
                            s.local_demand = b.local_demand;
                            s.spilled_in = b.spilled_in;
                            s.spilled_out = b.spilled_out;
                        }
                        _ => {
                            s.desired_replicas = v.desired.map(i32_of);
                            s.local_demand =
                                settle(before.and_then(|b| b.local_demand), v.local_demand, floor);
                            let flow = |b: Option<f64>, n: f64| {
                                settle(b, Some(n), floor).unwrap_or_default()
                            };
                            s.spilled_in = flow(before.map(|b| b.spilled_in), v.spill.spilled_in);
                            s.spilled_out =
                                flow(before.map(|b| b.spilled_out), v.spill.spilled_out);
                        }
                    }
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    let conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" }.to_string();
        let since = conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let blocking = problems.iter().find(|p| p.blocking);
    let ready = match blocking {
        Some(p) => condition("Ready", false, p.reason, p.message.clone()),
        None => condition(
            "Ready",
            true,
            "ScaledObjectsReady",
            format!(
                "{} ScaledObjects applied; signals served by redbridge",
                zones.len()
            ),
        ),
    };
    let degraded = match problems.first() {
        Some(p) => {
            let all: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            condition("Degraded", true, p.reason, truncate(all.join("; "), 4000))
        }
        None => condition(
            "Degraded",
            false,
            "AsExpected",
            "every zone has room and data".into(),
        ),
    };
    ZonalScaledObjectStatus {
        observed_generation: generation,
        conditions: vec![ready, degraded],
        demand_signal: plan
            .and_then(|p| p.demand_signal())
            .map(|s| s.signal.name()),
        zones,
    }
}

/// Writes the status for `zso` when it differs from the previous one.
async fn write_status(
    ctx: &Context,
    zso: &ZonalScaledObject,
    plan: Option<&Plan>,
    view: Option<&View>,
    problems: &[Problem],
) -> Result<(), Error> {
    let (ns, name) = key(zso).ok_or(Error::MissingField("metadata.namespace"))?;
    let k = (ns.clone(), name.clone());
    let previous = previous_status(zso, lock(&ctx.written).get(&k)).cloned();
    let status = status(
        zso,
        plan,
        view,
        problems,
        previous.as_ref(),
        ctx.options.wall.now(),
    );
    if previous.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<ZonalScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.may_write()?;
    let body = json!({
        "apiVersion": "redbridge.io/v1alpha1",
        "kind": "ZonalScaledObject",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    lock(&ctx.written).insert(
        k,
        Written {
            based_on: zso.metadata.resource_version.clone(),
            status,
        },
    );
    Ok(())
}

fn error_policy(zso: Arc<ZonalScaledObject>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::NotLeader = error {
        // Leadership lost mid-reconcile: the next holder reconciles everything on taking it.
        debug!(namespace = ?zso.namespace(), name = %zso.name_any(), "Not the leader; reconcile stopped");
        return Action::await_change();
    }
    ctx.state.metrics.reconciled(error.metric_label());
    warn!(namespace = ?zso.namespace(), name = %zso.name_any(), %error, "Reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::discovery::ZonePods;
    use crate::zonal::spillover::Spill;

    fn zso() -> ZonalScaledObject {
        serde_yaml::from_str(
            r#"
apiVersion: redbridge.io/v1alpha1
kind: ZonalScaledObject
metadata: { name: llama, namespace: ml, uid: u-1, generation: 3, resourceVersion: "10" }
spec:
  model: llama
  zones:
    - { name: a, scaleTargetRef: { name: llama-a }, maxReplicas: 4 }
    - { name: b, scaleTargetRef: { name: llama-b }, maxReplicas: 4 }
  gpu: { count: 2 }
  sources:
    gateway: { service: gw, port: metrics, routeMatcher: 'envoy_cluster_name="r"' }
    modelServer: { selector: { matchLabels: { app: llama } }, port: 8000 }
  signals:
    latency: { target: 2 }
    queuePerReplica: { target: 4 }
  spillover: { order: [a, b], unschedulableAfter: 2m }
"#,
        )
        .unwrap()
    }

    fn plan() -> Plan {
        Plan::from_spec(&zso().spec).unwrap()
    }

    fn view(name: &str, ready: u32, full: Option<Full>) -> ZoneView {
        ZoneView {
            name: name.into(),
            pods: ZonePods {
                replicas: ready + 1,
                ready,
                loading: 1,
                ..Default::default()
            },
            targets: 2 * ready,
            source_targets: [("gateway", ready), ("model-server", ready)].into(),
            local_demand: Some(12.34567),
            spill: Spill {
                spilled_in: 0.0,
                spilled_out: 1.5,
            },
            full,
            desired: Some(3),
        }
    }

    fn seen(zones: Vec<ZoneView>) -> View {
        View {
            zones,
            weights: None,
            settling: false,
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    /// `zso` with `status` as the API serves it back.
    fn with(status: &ZonalScaledObjectStatus) -> ZonalScaledObject {
        let mut zso = zso();
        zso.status = Some(status.clone());
        zso
    }

    #[test]
    fn status_reports_zones_and_conditions() {
        let zso = zso();
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let views = seen(vec![view("a", 2, Some(Full::AtMax)), view("b", 1, None)]);
        let problems = view_problems(&plan, &views.zones);
        assert_eq!(
            problems,
            [Problem {
                reason: "AtMaxReplicas",
                message: "zone a runs its maximum replicas".into(),
                blocking: false,
            }]
        );
        let s = status(&zso, Some(&plan), Some(&views), &problems, None, now);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.demand_signal.as_deref(), Some("queue_depth"));
        assert_eq!(s.zones[0].scaled_object, "llama-a");
        assert_eq!(s.zones[0].local_demand, Some(12.346));
        assert_eq!(s.zones[0].gpus, Some(6));
        assert_eq!(s.zones[0].full.as_deref(), Some("AtMaxReplicas"));
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        let degraded = &s.conditions[1];
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "AtMaxReplicas")
        );
        assert_eq!(degraded.observed_generation, Some(3));

        // Same verdict later: transition times stay, so the status is unchanged.
        let with_status = with(&s);
        let later = at("2026-01-01T00:10:00Z");
        assert_eq!(
            status(
                &with_status,
                Some(&plan),
                Some(&views),
                &problems,
                with_status.status.as_ref(),
                later
            ),
            s
        );
        // A blocking problem flips Ready.
        let bad = [Problem {
            reason: "InvalidSpec",
            message: "spec.x: bad".into(),
            blocking: true,
        }];
        let s2 = status(&with_status, None, None, &bad, Some(&s), later);
        assert_eq!(s2.conditions[0].status, "False");
        assert_eq!(s2.conditions[0].reason, "InvalidSpec");
        assert_eq!(s2.conditions[0].last_transition_time, Time(later));
        assert!(s2.zones.is_empty());
    }

    #[test]
    fn status_shows_each_zones_weight_with_routing() {
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let mut views = seen(vec![view("a", 2, None), view("b", 1, Some(Full::AtMax))]);
        let off = status(&zso(), Some(&plan), Some(&views), &[], None, now);
        assert!(off.zones.iter().all(|z| z.weight.is_none()));
        views.weights = Some(Weights {
            zones: vec!["a".into(), "b".into()],
            flows: vec![vec![1.0, 0.0], vec![0.583, 0.417]],
            shares: vec![0.7083, 0.2917],
        });
        let on = status(&zso(), Some(&plan), Some(&views), &[], None, now);
        let weights: Vec<Option<i32>> = on.zones.iter().map(|z| z.weight).collect();
        assert_eq!(weights, [Some(71), Some(29)]);
        assert_eq!(
            on.zone_summary().as_deref(),
            Some("a 2+1/3 71%, b 1+1/3 full 29%")
        );
    }

    #[test]
    fn an_unschedulable_zone_reads_the_same_every_tick() {
        let zso = zso();
        let plan = plan();
        let since = at("2026-01-01T00:00:00Z");
        // The same stuck Pod, seen by ticks ten minutes apart.
        let tick = |for_secs: f64| {
            let mut c = view("b", 1, Some(Full::Unschedulable { for_secs }));
            c.pods.unschedulable = 1;
            c.pods.unschedulable_for = Some(for_secs);
            c.pods.unschedulable_since = Some(since);
            seen(vec![view("a", 1, None), c])
        };
        let first = tick(610.0);
        let problems = view_problems(&plan, &first.zones);
        assert_eq!(problems[0].reason, "PodsUnschedulable");
        assert_eq!(
            problems[0].message,
            "zone b has 1 Pods unschedulable since 2026-01-01T00:00:00Z"
        );
        let written = status(&zso, Some(&plan), Some(&first), &problems, None, since);
        let later = tick(1210.0);
        let problems_later = view_problems(&plan, &later.zones);
        assert_eq!(problems_later, problems, "no age in the message");
        let again = status(
            &with(&written),
            Some(&plan),
            Some(&later),
            &problems_later,
            Some(&written),
            at("2026-01-01T00:20:00Z"),
        );
        assert_eq!(again, written, "nothing to write");
    }

    #[test]
    fn a_source_without_targets_is_reported_by_name() {
        let plan = plan();
        // The gateway Service has no endpoints at all; model servers are scraped.
        let no_gateway = |mut v: ZoneView| {
            v.source_targets.insert("gateway", 0);
            v.targets = v.source_targets.values().sum();
            v
        };
        let zones = vec![
            no_gateway(view("a", 2, None)),
            no_gateway(view("b", 1, None)),
        ];
        let problems = view_problems(&plan, &zones);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            (problems[0].reason, problems[0].blocking),
            ("NoTargets", true)
        );
        assert_eq!(
            problems[0].message,
            "source gateway has no targets in any zone (Service gw has no ready endpoint backed by a Pod of the namespace); no data for latency"
        );
        let s = status(
            &zso(),
            Some(&plan),
            Some(&seen(zones)),
            &problems,
            None,
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str()
            ),
            ("False", "NoTargets")
        );
        assert_eq!(s.conditions[1].reason, "NoTargets");

        // In one zone only: that zone is named, Degraded but still Ready.
        let zones = vec![view("a", 2, None), no_gateway(view("b", 1, None))];
        let problems = view_problems(&plan, &zones);
        assert_eq!(
            problems,
            [Problem {
                reason: "NoTargets",
                message: "source gateway has no targets in zone b, which has 1 ready replicas; its signals have no data there".into(),
                blocking: false,
            }]
        );
        // No target of any source in a serving zone: that zone is not Ready.
        let mut bare = view("b", 1, None);
        bare.source_targets = [("gateway", 0), ("model-server", 0)].into();
        bare.targets = 0;
        let problems = view_problems(&plan, &[view("a", 2, None), bare]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].blocking);
        assert!(problems[0]
            .message
            .starts_with("zone b has 1 ready replicas but no scrape targets"));
        // Scaled to zero: no target is expected from any source.
        let mut idle = view("a", 0, None);
        idle.source_targets = [("gateway", 0), ("model-server", 0)].into();
        idle.targets = 0;
        assert_eq!(view_problems(&plan, &[idle.clone(), idle]), []);
    }

    #[test]
    fn the_pickers_signals_are_read_in_the_first_zone_only() {
        let mut spec = zso().spec;
        spec.sources.endpoint_picker =
            Some(serde_yaml::from_str("{ inferencePool: llama }").unwrap());
        spec.signals.pool_saturation = Some(serde_yaml::from_str("{ target: 0.8 }").unwrap());
        // The picker's queue is split by zone through the model servers' Pods: not reported.
        spec.signals.queue_per_replica =
            Some(serde_yaml::from_str("{ target: 4, source: endpointPicker }").unwrap());
        let plan = Plan::from_spec(&spec).unwrap();
        let with_picker = |mut v: ZoneView, n: u32| {
            v.source_targets.insert("endpoint-picker", n);
            v
        };
        let zones = vec![
            with_picker(view("a", 2, None), 1),
            with_picker(view("b", 1, None), 0),
        ];
        let problems = view_problems(&plan, &zones);
        assert_eq!(
            problems,
            [Problem {
                reason: "NoTargets",
                message: "zone b has no data for poolSaturation: the endpoint picker's figures are the pool's, read in zone a only; scale this zone on model-server signals".into(),
                blocking: false,
            }]
        );
    }

    #[test]
    fn replicas_with_slightly_different_samples_do_not_rewrite_each_other() {
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let sampled = |demand: f64, spilled_out: f64| {
            let mut a = view("a", 2, Some(Full::AtMax));
            a.local_demand = Some(demand);
            a.spill.spilled_out = spilled_out;
            let mut b = view("b", 1, None);
            b.local_demand = Some(0.0);
            b.spill = Spill {
                spilled_in: spilled_out,
                spilled_out: 0.0,
            };
            seen(vec![a, b])
        };
        // Replica one writes; replica two's samples differ by noise, and so do replica one's
        // next ones.
        let one = sampled(50.0, 10.0);
        let problems = view_problems(&plan, &one.zones);
        let written = status(&zso(), Some(&plan), Some(&one), &problems, None, now);
        for (demand, spill) in [(52.7, 10.4), (47.9, 9.6), (50.3, 10.2)] {
            let other = sampled(demand, spill);
            let s = status(
                &with(&written),
                Some(&plan),
                Some(&other),
                &view_problems(&plan, &other.zones),
                Some(&written),
                now,
            );
            assert_eq!(s, written, "{demand} {spill}");
        }
        // A real change is written.
        let more = sampled(60.0, 20.0);
        let s = status(
            &with(&written),
            Some(&plan),
            Some(&more),
            &view_problems(&plan, &more.zones),
            Some(&written),
            now,
        );
        assert_eq!(
            (
                s.zones[0].local_demand,
                s.zones[0].spilled_out,
                s.zones[1].spilled_in
            ),
            (Some(60.0), 20.0, 20.0)
        );
    }

    #[test]
    fn the_dead_band_is_relative_with_a_floor() {
        // Queue target 4: the floor is 0.4.
        assert_eq!(settle(Some(10.0), Some(10.9), 0.4), Some(10.0));
        assert_eq!(settle(Some(10.0), Some(11.2), 0.4), Some(11.2));
        assert_eq!(settle(Some(0.0), Some(0.3), 0.4), Some(0.0));
        assert_eq!(settle(Some(0.0), Some(0.5), 0.4), Some(0.5));
        assert_eq!(settle(Some(10.0), None, 0.4), None, "data gone is news");
        assert_eq!(settle(None, Some(1.23456), 0.4), Some(1.235));
    }

    #[test]
    fn figures_hold_while_a_restarted_controller_has_no_scrapes_yet() {
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let before = seen(vec![view("a", 2, None), view("b", 1, None)]);
        let written = status(&zso(), Some(&plan), Some(&before), &[], None, now);
        let unscraped = |settling: bool| {
            let mut v = seen(vec![view("a", 2, None), view("b", 1, None)]);
            for z in &mut v.zones {
                z.local_demand = None;
                z.desired = None;
                z.spill = Spill::default();
            }
            v.settling = settling;
            v
        };
        let restart = unscraped(true);
        let s = status(
            &with(&written),
            Some(&plan),
            Some(&restart),
            &[],
            Some(&written),
            now,
        );
        assert_eq!(s, written);
        // Past the window, no data is what status says.
        let s = status(
            &with(&written),
            Some(&plan),
            Some(&unscraped(false)),
            &[],
            Some(&written),
            now,
        );
        assert_eq!(
            (s.zones[0].local_demand, s.zones[0].desired_replicas),
            (None, None)
        );
    }

    #[test]
    fn without_a_view_zones_keep_what_status_said() {
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let views = seen(vec![view("a", 2, None), view("b", 1, None)]);
        let written = status(&zso(), Some(&plan), Some(&views), &[], None, now);
        let failed = [Problem {
            reason: "ApplyFailed",
            message: "cannot apply ScaledObject llama-a: forbidden".into(),
            blocking: true,
        }];
        let s = status(
            &with(&written),
            Some(&plan),
            None,
            &failed,
            Some(&written),
            now,
        );
        assert_eq!(s.zones, written.zones, "not reset to 0 ready, 0 targets");
        assert_eq!(s.conditions[0].reason, "ApplyFailed");
    }

    #[test]
    fn the_status_just_written_is_the_previous_one_until_the_watch_has_it() {
        let plan = plan();
        let old = status(
            &zso(),
            Some(&plan),
            None,
            &[],
            None,
            at("2026-01-01T00:00:00Z"),
        );
        let new = status(
            &zso(),
            Some(&plan),
            Some(&seen(vec![view("a", 2, None)])),
            &[],
            Some(&old),
            at("2026-01-01T00:00:01Z"),
        );
        let store = with(&old); // resourceVersion 10
        let written = Written {
            based_on: Some("10".into()),
            status: new.clone(),
        };
        assert_eq!(previous_status(&store, Some(&written)), Some(&new));
        let mut caught_up = with(&new);
        caught_up.metadata.resource_version = Some("11".into());
        assert_eq!(previous_status(&caught_up, Some(&written)), Some(&new));
        // Someone else wrote since: theirs counts.
        let mut theirs = with(&old);
        theirs.metadata.resource_version = Some("12".into());
        assert_eq!(previous_status(&theirs, Some(&written)), Some(&old));
        assert_eq!(previous_status(&store, None), Some(&old));
    }

    #[test]
    fn zone_full_once_per_becoming_full() {
        let plan = plan();
        let now = at("2026-01-01T00:00:00Z");
        let zones = vec![view("a", 2, Some(Full::AtMax)), view("b", 1, None)];
        let names = |v: Vec<&ZoneView>| v.iter().map(|z| z.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(newly_full(&zones, None)), ["a"]);
        let written = status(
            &zso(),
            Some(&plan),
            Some(&seen(zones.clone())),
            &[],
            None,
            now,
        );
        assert!(newly_full(&zones, Some(&written)).is_empty());
    }

    #[test]
    fn keda_verdict_is_read_from_its_ready_condition() {
        let so: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "x"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed", "message": "no scale target"}]}
        }))
        .unwrap();
        assert_eq!(
            keda_not_ready(&so).as_deref(),
            Some("ScaledObjectCheckFailed: no scale target")
        );
        let ok: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(keda_not_ready(&ok), None);
    }
}
