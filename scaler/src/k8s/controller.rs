//! The ZonalScaledObject controller (kube-runtime).
//!
//! Two loops share one [`Context`]:
//! - **Reconcile** (per CR, on changes to it or to its ScaledObjects, and every `resync`): checks
//!   the spec, server-side applies one KEDA ScaledObject per zone (owned by the CR, so they go
//!   with it), applies again whatever drifted, deletes those of zones no longer listed, and writes
//!   status (per-zone replicas and demand, `Ready` and `Degraded` conditions, observedGeneration).
//!   Failures are Kubernetes Events on the CR and `redbridge_reconciles_total{outcome}`.
//! - **Zones** (every `tick`, and on every discovery change): rebuilds each CR's pool from what
//!   discovery sees and publishes it to [`State`] when its targets changed, evaluates spillover and
//!   warm-up ([`zones::evaluate`]) and publishes the adjustments and per-zone metrics. It makes no
//!   API calls; when a zone's shape changes it asks for a reconcile so status follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::crd::{ZonalScaledObject, ZonalScaledObjectStatus, ZoneStatus};
use super::discovery::{Changes, Discovery};
use super::plan::{Plan, SignalPlan};
use super::scaledobject::{self, TriggerSettings, MANAGED_BY};
use super::zones::{self, ZoneView};
use super::Error;
use crate::config::trigger::TriggerQuery;
use crate::state::State;
use crate::telemetry;
use crate::zonal::spillover::Full;

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
}

impl Options {
    pub fn new(triggers: TriggerSettings) -> Options {
        Options {
            namespace: None,
            triggers,
            resync: Duration::from_secs(30),
            tick: Duration::from_secs(2),
            instance: None,
        }
    }
}

type Key = (String, String);

/// A CR's pool as last published.
struct Published {
    generation: Option<i64>,
    plan: Arc<Plan>,
    targets: Vec<(String, String, String)>,
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
    views: Mutex<HashMap<Key, Vec<ZoneView>>>,
}

impl Context {
    fn conflict(&self, namespace: &str, name: &str) -> bool {
        self.reserved
            .iter()
            .any(|(ns, n)| n == name && ns.as_deref().is_none_or(|ns| ns == namespace))
    }

    async fn event(&self, zso: &ZonalScaledObject, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &zso.object_ref(&())).await {
            warn!(error = %e, reason, "Cannot publish event");
        }
    }
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
    let zones_task = zones_loop(ctx.clone(), zsos, changes, trigger_tx, shutdown.clone());
    info!(namespace = ?ctx.options.namespace, "Starting the ZonalScaledObject controller");
    tokio::select! {
        _ = controller => {}
        _ = discovery_task => {}
        _ = so_task => {}
        _ = zones_task => {}
    }
    // Stop serving what only the controller kept current.
    let keys: Vec<Key> = ctx
        .published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    for (ns, name) in keys {
        forget(&ctx, &ns, &name);
    }
    info!("ZonalScaledObject controller stopped");
    Ok(())
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
        _ = async { let _ = zsos.wait_until_ready().await; ctx.discovery.ready().await } => {}
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
    let wall = Timestamp::now();
    let now = ctx.state.clock.now();
    for zso in zsos {
        let Some((ns, name)) = key(zso) else { continue };
        if ctx.conflict(&ns, &name) {
            continue;
        }
        let generation = zso.metadata.generation;
        let plan = {
            let published = ctx.published.lock().unwrap_or_else(|e| e.into_inner());
            published
                .get(&(ns.clone(), name.clone()))
                .filter(|p| p.generation == generation)
                .map(|p| p.plan.clone())
        };
        let plan = match plan {
            Some(p) => p,
            // An invalid spec keeps the last valid pool served; reconcile reports the error.
            None => match Plan::from_spec(&zso.spec) {
                Ok(p) => Arc::new(p),
                Err(_) => {
                    if ctx
                        .published
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&(ns.clone(), name.clone()))
                    {
                        seen.insert((ns.clone(), name.clone()));
                    }
                    continue;
                }
            },
        };
        seen.insert((ns.clone(), name.clone()));
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
        {
            let mut published = ctx.published.lock().unwrap_or_else(|e| e.into_inner());
            let k = (ns.clone(), name.clone());
            let same = published
                .get(&k)
                .is_some_and(|p| p.generation == generation && p.targets == targets);
            if !same {
                info!(namespace = %ns, pool = %name, targets = targets.len(), "Publishing pool");
                let sources = plan.signals.iter().map(|s| (s.signal, s.source.into()));
                ctx.state.set_signal_sources(&ns, &name, sources.collect());
                ctx.state.upsert_pool(Arc::new(pool));
                published.insert(
                    k,
                    Published {
                        generation,
                        plan: plan.clone(),
                        targets: targets.clone(),
                    },
                );
            }
        }
        let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
        for (_, zone, _) in &targets {
            *per_zone.entry(zone.clone()).or_default() += 1;
        }
        let pods = ctx.discovery.zone_pods(&ns, &plan, wall);
        let raw = |zone: &str, s: &SignalPlan| raw_value(&ctx.state, &ns, &name, zone, s, now);
        let evaluation = zones::evaluate(&plan, &pods, &per_zone, raw);
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
                },
            );
        }
        let mut views = ctx.views.lock().unwrap_or_else(|e| e.into_inner());
        let k = (ns.clone(), name.clone());
        let shape_changed = views.get(&k).is_none_or(|old| {
            old.iter()
                .map(ZoneView::shape)
                .ne(evaluation.zones.iter().map(ZoneView::shape))
        });
        views.insert(k, evaluation.zones);
        if shape_changed {
            changed.push(ObjectRef::new(&name).within(&ns));
        }
    }
    let gone: Vec<Key> = ctx
        .published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
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

fn forget(ctx: &Context, ns: &str, name: &str) {
    let k = (ns.to_string(), name.to_string());
    ctx.published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&k);
    ctx.views
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&k);
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

/// A problem that stops the CR from working: a Warning event, and the status says why.
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
    write_status(ctx, zso, plan, &[problem]).await
}

async fn reconcile(zso: Arc<ZonalScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (ns, name) = key(&zso).ok_or(Error::MissingField("metadata.namespace"))?;
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

    let desired = scaledobject::desired(&zso, &plan, &ctx.options.triggers)?;
    let ar = scaledobject::api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let mut problems = Vec::new();
    for (so_name, body) in &desired {
        let observed = ctx
            .scaled_objects
            .get(&ObjectRef::new_with(so_name, ar.clone()).within(&ns));
        match &observed {
            Some(o) if !scaledobject::drifted(o, body) => {
                if let Some(message) = keda_not_ready(o) {
                    problems.push(Problem {
                        reason: "ScaledObjectNotReady",
                        message: format!("ScaledObject {so_name}: {message}"),
                        blocking: true,
                    });
                }
                continue;
            }
            Some(_) => {
                info!(namespace = %ns, scaledobject = %so_name, "ScaledObject drifted; applying again")
            }
            None => info!(namespace = %ns, scaledobject = %so_name, "Applying ScaledObject"),
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = api.patch(so_name, &params, &Patch::Apply(body)).await {
            let message = format!("cannot apply ScaledObject {so_name}: {e}");
            // Best effort: the error itself is what gets retried.
            let _ = report_blocking(&ctx, &zso, Some(&plan), "ApplyFailed", message).await;
            return Err(Error::Apply {
                name: so_name.clone(),
                error: e,
            });
        }
        if observed.is_some() {
            ctx.event(
                &zso,
                EventType::Normal,
                "DriftRepaired",
                format!("ScaledObject {so_name} was changed; applied again"),
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
        }
    }

    let views = ctx
        .views
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(ns.clone(), name.clone()))
        .cloned();
    for z in views.iter().flatten() {
        if z.pods.ready > 0 && z.targets == 0 {
            problems.push(Problem {
                reason: "NoTargets",
                message: format!(
                    "zone {} has {} ready replicas but no scrape targets; check spec.sources (service, selector, port)",
                    z.name, z.pods.ready
                ),
                blocking: true,
            });
        }
    }
    for z in views.iter().flatten() {
        if let Some(full) = z.full {
            let spill = if z.spill.spilled_out > 0.0 {
                format!(
                    "; {:.3} of demand moved to other zones",
                    z.spill.spilled_out
                )
            } else {
                String::new()
            };
            let why = match full {
                Full::AtMax => "runs its maximum replicas".to_string(),
                Full::Unschedulable { for_secs } => format!(
                    "has {} Pods unschedulable for {:.0}s",
                    z.pods.unschedulable, for_secs
                ),
            };
            problems.push(Problem {
                reason: full.reason(),
                message: format!("zone {} {why}{spill}", z.name),
                blocking: false,
            });
        }
    }
    let previous_full: HashSet<String> = zso
        .status
        .iter()
        .flat_map(|s| s.zones.iter())
        .filter(|z| z.full.is_some())
        .map(|z| z.name.clone())
        .collect();
    for z in views.iter().flatten() {
        if z.full.is_some() && !previous_full.contains(&z.name) {
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
    }
    write_status(&ctx, &zso, Some(&plan), &problems).await?;
    ctx.state.metrics.reconciled("ok");
    Ok(Action::requeue(ctx.options.resync))
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

/// The status for `zso` from the latest zone views and the problems found; conditions keep their
/// transition time while their status stays.
fn status(
    zso: &ZonalScaledObject,
    plan: Option<&Plan>,
    views: Option<&[ZoneView]>,
    problems: &[Problem],
    now: Timestamp,
) -> ZonalScaledObjectStatus {
    let generation = zso.metadata.generation;
    let name = zso.name_any();
    let zones: Vec<ZoneStatus> = plan
        .map(|plan| {
            plan.zones
                .iter()
                .map(|z| {
                    let view = views.and_then(|v| v.iter().find(|v| v.name == z.name));
                    let mut s = ZoneStatus {
                        name: z.name.clone(),
                        scaled_object: scaledobject::name(&name, &z.name),
                        ..Default::default()
                    };
                    if let Some(v) = view {
                        s.ready_replicas = i32_of(v.pods.ready);
                        s.starting_replicas = i32_of(v.pods.loading);
                        s.unschedulable_replicas = i32_of(v.pods.unschedulable);
                        s.desired_replicas = v.desired.map(i32_of);
                        s.targets = i32_of(v.targets);
                        s.local_demand = v.local_demand.map(round);
                        s.spilled_in = round(v.spill.spilled_in);
                        s.spilled_out = round(v.spill.spilled_out);
                        s.full = v.full.map(|f| f.reason().to_string());
                        s.gpus = plan.gpu.as_ref().map(|(_, per)| {
                            i32_of((v.pods.ready + v.pods.loading).saturating_mul(*per))
                        });
                    }
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    let previous = zso
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" }.to_string();
        let since = previous
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

async fn write_status(
    ctx: &Context,
    zso: &ZonalScaledObject,
    plan: Option<&Plan>,
    problems: &[Problem],
) -> Result<(), Error> {
    let (ns, name) = key(zso).ok_or(Error::MissingField("metadata.namespace"))?;
    let views = ctx
        .views
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(ns.clone(), name.clone()))
        .cloned();
    let status = status(zso, plan, views.as_deref(), problems, Timestamp::now());
    if zso.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<ZonalScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
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
    Ok(())
}

fn error_policy(zso: Arc<ZonalScaledObject>, error: &Error, ctx: Arc<Context>) -> Action {
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
metadata: { name: llama, namespace: ml, uid: u-1, generation: 3 }
spec:
  model: llama
  zones:
    - { name: a, scaleTargetRef: { name: llama-a }, maxReplicas: 4 }
    - { name: b, scaleTargetRef: { name: llama-b }, maxReplicas: 4 }
  gpu: { count: 2 }
  sources:
    modelServer: { selector: { matchLabels: { app: llama } }, port: 8000 }
  signals:
    queuePerReplica: { target: 4 }
"#,
        )
        .unwrap()
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
            targets: ready,
            local_demand: Some(12.34567),
            spill: Spill {
                spilled_in: 0.0,
                spilled_out: 1.5,
            },
            full,
            desired: Some(3),
        }
    }

    #[test]
    fn status_reports_zones_and_conditions() {
        let zso = zso();
        let plan = Plan::from_spec(&zso.spec).unwrap();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let views = [view("a", 2, Some(Full::AtMax)), view("b", 1, None)];
        let problems = [Problem {
            reason: "AtMaxReplicas",
            message: "zone a runs its maximum replicas".into(),
            blocking: false,
        }];
        let s = status(&zso, Some(&plan), Some(&views), &problems, now);
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
        let mut with_status = zso.clone();
        with_status.status = Some(s.clone());
        let later: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(
            status(&with_status, Some(&plan), Some(&views), &problems, later),
            s
        );
        // A blocking problem flips Ready.
        let bad = [Problem {
            reason: "InvalidSpec",
            message: "spec.x: bad".into(),
            blocking: true,
        }];
        let s2 = status(&with_status, None, None, &bad, later);
        assert_eq!(s2.conditions[0].status, "False");
        assert_eq!(s2.conditions[0].reason, "InvalidSpec");
        assert_eq!(s2.conditions[0].last_transition_time, Time(later));
        assert!(s2.zones.is_empty());
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
