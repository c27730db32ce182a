//! A ZonalScaledObject into the pool model: [`Plan::from_spec`] validates what the CRD schema
//! cannot (label matchers, durations, which source provides which signal) and [`Plan::pool`] builds
//! the [`Pool`] from what discovery found.
//!
//! No SSRF by construction: a target URL is built here from an address discovery read off a Pod
//! (or the EndpointSlice of a Pod) of the CR's namespace and the port and path of the CR. A URL
//! or host written in the CR is never fetched; the path must be a plain absolute path, so it cannot
//! move the request to another host.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::Selector;

use crate::config::file::{DEFAULT_INTERVAL, DEFAULT_MIN_TARGET_RATIO, DEFAULT_WINDOW, MAX_WINDOW};
use crate::k8s::crd::{
    QuantileSignal, ScaleTargetKind, SignalField, SourceName, ZonalScaledObjectSpec, SIGNAL_FIELDS,
};
use crate::k8s::routing::{Lever, RoutingSpec, ZoneService};
use crate::model::signal::quantile_permille;
use crate::model::Profile;
use crate::model::{EndpointScope, Matcher, Pool, Signal, Source, Target};
use crate::profiles;
use crate::zonal::weights::Policy;

/// Source names in the pool (and in trigger metadata `source`).
pub const GATEWAY: &str = "gateway";
pub const MODEL_SERVER: &str = "model-server";
pub const ENDPOINT_PICKER: &str = "endpoint-picker";

/// Default for `spec.spillover.unschedulableAfter`.
pub const DEFAULT_UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(120);

/// One problem in a spec, with the field's path as `kubectl explain` spells it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

/// Every problem found in a spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

/// One zone of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ZonePlan {
    pub name: String,
    pub kind: ScaleTargetKind,
    pub target: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// One signal of the plan: what the trigger of every zone asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalPlan {
    pub signal: Signal,
    /// The spec field it came from (`queuePerReplica`), for messages.
    pub field: &'static str,
    pub target: f64,
    pub activation_target: f64,
    /// [`GATEWAY`], [`MODEL_SERVER`] or [`ENDPOINT_PICKER`].
    pub source: &'static str,
    /// Rate signals: the short window rises are read over (the trigger's `upWindow`).
    pub up_window: Option<Duration>,
}

/// How a source's endpoints are found (always in the CR's namespace).
#[derive(Debug, Clone)]
pub enum Find {
    /// The EndpointSlices of this Service.
    Service(String),
    /// Pods matching this selector.
    Selector(Selector),
    /// The Pods the InferencePool of this name selects (its `spec.selector`).
    InferencePool(String),
    /// The EndpointSlices of the Service the InferencePool of this name names as its endpoint
    /// picker (`spec.endpointPickerRef`).
    PickerOf(String),
}

/// A metrics port: a number, or a name to look up on the EndpointSlice or the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
    /// The InferencePool's first target port (`spec.targetPorts[0].number`).
    PoolTarget,
}

/// One source of the plan.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// [`GATEWAY`], [`MODEL_SERVER`] or [`ENDPOINT_PICKER`].
    pub name: &'static str,
    pub profile: Arc<Profile>,
    pub matchers: Vec<Matcher>,
    pub find: Find,
    pub port: PortRef,
    pub path: String,
}

/// Spillover settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SpillPlan {
    /// Every zone, in order of preference.
    pub order: Vec<String>,
    pub unschedulable_after: Duration,
}

/// `spec.routing`, checked: the mode, the limits on changes, and each zone's Service.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingPlan {
    pub spec: RoutingSpec,
    pub lever: Lever,
    pub policy: Policy,
    /// Per zone of the plan, in its order: `spec.zones[].service`.
    pub services: Vec<ZoneService>,
}

/// A validated ZonalScaledObject spec: everything the controller, discovery and the signals need.
#[derive(Debug, Clone)]
pub struct Plan {
    pub model: String,
    pub zones: Vec<ZonePlan>,
    pub sources: Vec<SourcePlan>,
    pub signals: Vec<SignalPlan>,
    pub spillover: Option<SpillPlan>,
    pub warmup: Option<Duration>,
    pub idle_period: Option<Duration>,
    pub window: Duration,
    pub interval: Duration,
    /// GPUs per replica: resource name and count.
    pub gpu: Option<(String, u32)>,
    /// Zone traffic weights through the gateway, when `spec.routing` is given.
    pub routing: Option<RoutingPlan>,
}

/// An endpoint discovery found, with what Kubernetes says about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// [`GATEWAY`], [`MODEL_SERVER`] or [`ENDPOINT_PICKER`].
    pub source: &'static str,
    pub address: IpAddr,
    pub port: u16,
    pub zone: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub pod: Option<String>,
    pub node: Option<String>,
}

impl Endpoint {
    /// Only endpoints that serve and are not going away are scraped: a pod that is loading its
    /// model or shutting down would read as a failed target and hold the zone's answers back.
    pub fn scraped(&self) -> bool {
        self.ready && !self.terminating
    }
}

/// The URL redbridge scrapes for an endpoint: built from the address, never parsed from input.
pub fn target_url(address: IpAddr, port: u16, path: &str) -> String {
    match address {
        IpAddr::V4(a) => format!("http://{a}:{port}{path}"),
        IpAddr::V6(a) => format!("http://[{a}]:{port}{path}"),
    }
}

/// A path redbridge may append to an address: absolute, no query, fragment, authority or `..`.
pub fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 256
        && !path.split('/').any(|seg| seg == "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@%/-".contains(&b))
}

/// Parses a Go-style duration (`90s`, `1m30s`, `500ms`, `1.5h`) as Kubernetes users write them.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += n * unit;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

struct Errors(Vec<SpecError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, field: &str, raw: Option<&str>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(r) => match parse_duration(r).filter(|d| !d.is_zero()) {
                Some(d) => d,
                None => {
                    self.push(
                        field,
                        format!("`{r}` is not a duration like 90s, 5m or 1h30m (greater than 0)"),
                    );
                    default
                }
            },
        }
    }
}

fn port_ref(errors: &mut Errors, field: &str, port: &IntOrString) -> PortRef {
    match port {
        IntOrString::Int(n) => match u16::try_from(*n).ok().filter(|n| *n > 0) {
            Some(n) => PortRef::Number(n),
            None => {
                errors.push(field, format!("{n} is not a port number (1-65535)"));
                PortRef::Number(0)
            }
        },
        IntOrString::String(name) => {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                errors.push(
                    field,
                    format!("`{name}` is not a port name (lowercase letters, digits and '-')"),
                );
            }
            PortRef::Name(name.clone())
        }
    }
}

fn matchers(errors: &mut Errors, field: &str, raw: &[&str]) -> Vec<Matcher> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| match Matcher::parse(m) {
            Ok(m) => Some(m),
            Err(e) => {
                let at = if raw.len() == 1 && !field.ends_with("matchers") {
                    field.to_string()
                } else {
                    format!("{field}[{i}]")
                };
                errors.push(at, e.to_string());
                None
            }
        })
        .collect()
}

impl Plan {
    /// Validates a spec; errors name each field (`spec.signals.latency.quantile: ...`).
    pub fn from_spec(spec: &ZonalScaledObjectSpec) -> Result<Plan, SpecErrors> {
        let mut errors = Errors(Vec::new());
        if spec.model.trim().is_empty() {
            errors.push("spec.model", "must not be empty");
        }
        if spec.zones.is_empty() {
            errors.push("spec.zones", "at least one zone is required");
        }
        let mut names = BTreeSet::new();
        let mut zones = Vec::new();
        for (i, z) in spec.zones.iter().enumerate() {
            let at = |f: &str| format!("spec.zones[{i}].{f}");
            if z.name.trim().is_empty() {
                errors.push(at("name"), "must not be empty");
            } else if !names.insert(z.name.clone()) {
                errors.push(at("name"), format!("zone `{}` is listed twice", z.name));
            }
            if z.scale_target_ref.name.trim().is_empty() {
                errors.push(at("scaleTargetRef.name"), "must not be empty");
            }
            let min = u32::try_from(z.min_replicas).unwrap_or(0);
            let max = u32::try_from(z.max_replicas).unwrap_or(0);
            if min < 1 {
                errors.push(
                    at("minReplicas"),
                    "must be at least 1 (use scaleToZero for zero)",
                );
            }
            if max < 1 {
                errors.push(at("maxReplicas"), "must be at least 1");
            }
            if min > max {
                errors.push(
                    at("minReplicas"),
                    format!("{min} is more than maxReplicas ({max})"),
                );
            }
            zones.push(ZonePlan {
                name: z.name.clone(),
                kind: z.scale_target_ref.kind,
                target: z.scale_target_ref.name.clone(),
                min_replicas: min.max(1),
                max_replicas: max.max(min).max(1),
            });
        }

        let mut sources = Vec::new();
        let s = &spec.sources;
        if s.gateway.is_none() && s.model_server.is_none() && s.endpoint_picker.is_none() {
            errors.push(
                "spec.sources",
                "at least one of gateway, modelServer and endpointPicker is required",
            );
        }
        if let Some(g) = &s.gateway {
            let at = |f: &str| format!("spec.sources.gateway.{f}");
            let port = port_ref(&mut errors, &at("port"), &g.port);
            if !valid_path(&g.path) {
                errors.push(
                    at("path"),
                    format!(
                        "`{}` is not an absolute path (no query, `..` or `//`)",
                        g.path
                    ),
                );
            }
            let matchers = matchers(
                &mut errors,
                &at("routeMatcher"),
                &[g.route_matcher.as_str()],
            );
            let profile = profiles::builtin(g.profile.name());
            match profile {
                Some(p) => sources.push(SourcePlan {
                    name: GATEWAY,
                    profile: Arc::new(p),
                    matchers,
                    find: Find::Service(g.service.clone()),
                    port,
                    path: g.path.clone(),
                }),
                None => errors.push(
                    at("profile"),
                    format!("unknown profile `{}`", g.profile.name()),
                ),
            }
        }
        if let Some(m) = &s.model_server {
            let at = |f: &str| format!("spec.sources.modelServer.{f}");
            let port = match (&m.port, &m.inference_pool) {
                (Some(p), _) => port_ref(&mut errors, &at("port"), p),
                (None, Some(_)) => PortRef::PoolTarget,
                (None, None) => {
                    errors.push(at("port"), "required unless inferencePool gives it");
                    PortRef::Number(0)
                }
            };
            if !valid_path(&m.path) {
                errors.push(
                    at("path"),
                    format!(
                        "`{}` is not an absolute path (no query, `..` or `//`)",
                        m.path
                    ),
                );
            }
            let raw: Vec<&str> = m.matchers.iter().map(String::as_str).collect();
            let matchers = matchers(&mut errors, &at("matchers"), &raw);
            let find = match (&m.service, &m.selector, &m.inference_pool) {
                (Some(svc), None, None) => Some(Find::Service(svc.clone())),
                (None, None, Some(pool)) => Some(Find::InferencePool(pool.clone())),
                (None, Some(sel), None) => match Selector::try_from(sel.clone()) {
                    Ok(s) if !s.selects_all() => Some(Find::Selector(s)),
                    Ok(_) => {
                        errors.push(
                            at("selector"),
                            "must select something (an empty selector matches every Pod)",
                        );
                        None
                    }
                    Err(e) => {
                        errors.push(at("selector"), e.to_string());
                        None
                    }
                },
                _ => {
                    errors.push(
                        at("service"),
                        "exactly one of service, selector and inferencePool is required",
                    );
                    None
                }
            };
            match (find, profiles::builtin(m.profile.name())) {
                (Some(find), Some(p)) => sources.push(SourcePlan {
                    name: MODEL_SERVER,
                    profile: Arc::new(p),
                    matchers,
                    find,
                    port,
                    path: m.path.clone(),
                }),
                (_, None) => errors.push(
                    at("profile"),
                    format!("unknown profile `{}`", m.profile.name()),
                ),
                (None, _) => {}
            }
        }
        if let Some(e) = &s.endpoint_picker {
            let at = |f: &str| format!("spec.sources.endpointPicker.{f}");
            let port = port_ref(&mut errors, &at("port"), &e.port);
            if !valid_path(&e.path) {
                errors.push(
                    at("path"),
                    format!(
                        "`{}` is not an absolute path (no query, `..` or `//`)",
                        e.path
                    ),
                );
            }
            let raw: Vec<&str> = e.matchers.iter().map(String::as_str).collect();
            let matchers = matchers(&mut errors, &at("matchers"), &raw);
            let find = match (&e.service, &e.inference_pool) {
                (Some(svc), None) => Some(Find::Service(svc.clone())),
                (None, Some(pool)) => Some(Find::PickerOf(pool.clone())),
                _ => {
                    errors.push(
                        at("service"),
                        "exactly one of service and inferencePool is required",
                    );
                    None
                }
            };
            match (find, profiles::builtin("epp")) {
                (Some(find), Some(p)) => sources.push(SourcePlan {
                    name: ENDPOINT_PICKER,
                    profile: Arc::new(p),
                    matchers,
                    find,
                    port,
                    path: e.path.clone(),
                }),
                (_, None) => errors.push(at("service"), "the epp profile is not built in"),
                (None, _) => {}
            }
        }

        let mut signals = Vec::new();
        let sig = &spec.signals;
        let has = |name: &str| sources.iter().any(|s| s.name == name);
        let quantile = |errors: &mut Errors, field: &str, q: &QuantileSignal| -> u16 {
            match q.quantile {
                None => 950,
                Some(v) => quantile_permille(v).unwrap_or_else(|| {
                    errors.push(
                        format!("spec.signals.{field}.quantile"),
                        format!("{v} must be in (0, 1) with at most three decimals, e.g. 0.95"),
                    );
                    950
                }),
            }
        };
        let mut add = |errors: &mut Errors,
                       field: &'static str,
                       signal: Signal,
                       target: f64,
                       activation: Option<f64>,
                       chosen: Option<SourceName>| {
            let at = |f: &str| format!("spec.signals.{field}.{f}");
            if !(target.is_finite() && target > 0.0) {
                errors.push(
                    at("target"),
                    format!("{target} must be a number greater than 0"),
                );
            }
            let activation = activation.unwrap_or(0.0);
            if !(activation.is_finite() && activation >= 0.0) {
                errors.push(
                    at("activationTarget"),
                    format!("{activation} must be 0 or more"),
                );
            }
            // Unless chosen: the first configured source that provides the signal (the gateway
            // first for request latency, which it sees end to end), else the first configured
            // one, whose refusal is then reported.
            let preference: [&'static str; 3] = if matches!(signal, Signal::Latency { .. }) {
                [GATEWAY, MODEL_SERVER, ENDPOINT_PICKER]
            } else {
                [MODEL_SERVER, GATEWAY, ENDPOINT_PICKER]
            };
            let configured = |name: &str| sources.iter().find(|s| s.name == name);
            let source = match chosen {
                Some(SourceName::Gateway) => GATEWAY,
                Some(SourceName::ModelServer) => MODEL_SERVER,
                Some(SourceName::EndpointPicker) => ENDPOINT_PICKER,
                None => preference
                    .iter()
                    .copied()
                    .find(|n| configured(n).is_some_and(|s| s.profile.supports(signal)))
                    .or_else(|| preference.iter().copied().find(|n| has(n)))
                    .unwrap_or(preference[0]),
            };
            match configured(source) {
                None if chosen.is_some() => errors.push(
                    at("source"),
                    format!("{source} is not configured in spec.sources"),
                ),
                None => {} // no source at all: reported on spec.sources
                Some(s) if !s.profile.supports(signal) => errors.push(
                    format!("spec.signals.{field}"),
                    format!(
                        "the {source} source (profile {}) does not provide {}; choose another source or signal",
                        s.profile.name,
                        signal.base_name()
                    ),
                ),
                Some(_) => {}
            }
            signals.push(SignalPlan {
                signal,
                field,
                target,
                activation_target: activation,
                source,
                up_window: None,
            });
        };
        // Applied once `add` (which holds `signals`) is done.
        let mut up_windows: Vec<(&'static str, Duration)> = Vec::new();
        for (field, f) in sig.fields() {
            let Some(name) = SIGNAL_FIELDS
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, n)| *n)
            else {
                continue;
            };
            let (permille, target, activation, chosen) = match f {
                SignalField::Quantile(q) => (
                    Some(quantile(&mut errors, field, q)),
                    q.target,
                    q.activation_target,
                    q.source,
                ),
                SignalField::Plain(d) => (None, d.target, d.activation_target, d.source),
            };
            let up_window = match f {
                SignalField::Plain(d) => d.up_window.as_deref(),
                SignalField::Quantile(_) => None,
            };
            let quantile = permille.map(|p| f64::from(p) / 1000.0);
            let Some(signal) = Signal::parse(name, quantile) else {
                errors.push(
                    format!("spec.signals.{field}"),
                    format!("`{name}` is not a signal redbridge knows"),
                );
                continue;
            };
            let fraction = signal.desc().unit.starts_with("ratio");
            if fraction && target > 1.0 {
                errors.push(
                    format!("spec.signals.{field}.target"),
                    format!("{target} is more than 1 (the whole)"),
                );
            }
            add(&mut errors, field, signal, target, activation, chosen);
            if let Some(raw) = up_window {
                let at = format!("spec.signals.{field}.upWindow");
                if signal.is_rate() {
                    let up = errors.duration(&at, Some(raw), Duration::ZERO);
                    if !up.is_zero() {
                        up_windows.push((field, up));
                    }
                } else {
                    errors.push(
                        at,
                        format!("only on a rate signal; {} is not one", signal.base_name()),
                    );
                }
            }
        }
        for (field, up) in up_windows {
            if let Some(s) = signals.iter_mut().find(|s| s.field == field) {
                s.up_window = Some(up);
            }
        }
        if signals.is_empty() {
            errors.push("spec.signals", "at least one signal is required");
        }

        let spillover = spec.spillover.as_ref().map(|sp| {
            let mut order: Vec<String> = Vec::new();
            for (i, z) in sp.order.iter().flatten().enumerate() {
                if !names.contains(z) {
                    errors.push(
                        format!("spec.spillover.order[{i}]"),
                        format!("`{z}` is not a zone of spec.zones"),
                    );
                } else if order.contains(z) {
                    errors.push(
                        format!("spec.spillover.order[{i}]"),
                        format!("`{z}` is listed twice"),
                    );
                } else {
                    order.push(z.clone());
                }
            }
            for z in &zones {
                if !order.contains(&z.name) {
                    order.push(z.name.clone());
                }
            }
            let unschedulable_after = errors.duration(
                "spec.spillover.unschedulableAfter",
                sp.unschedulable_after.as_deref(),
                DEFAULT_UNSCHEDULABLE_AFTER,
            );
            SpillPlan {
                order,
                unschedulable_after,
            }
        });
        let warmup = spec.warmup.as_ref().map(|w| {
            errors.duration(
                "spec.warmup.modelLoadTime",
                Some(&w.model_load_time),
                Duration::ZERO,
            )
        });
        let idle_period = spec.scale_to_zero.as_ref().map(|z| {
            let d = errors.duration(
                "spec.scaleToZero.idlePeriod",
                Some(&z.idle_period),
                Duration::ZERO,
            );
            if d.as_secs() > i32::MAX as u64 {
                errors.push("spec.scaleToZero.idlePeriod", "too long");
            }
            d
        });
        let scrape = spec.scrape.clone().unwrap_or_default();
        let window = errors.duration(
            "spec.scrape.window",
            scrape.window.as_deref(),
            DEFAULT_WINDOW,
        );
        let interval = errors.duration(
            "spec.scrape.interval",
            scrape.interval.as_deref(),
            DEFAULT_INTERVAL,
        );
        if window > MAX_WINDOW {
            errors.push(
                "spec.scrape.window",
                format!("at most {}s", MAX_WINDOW.as_secs()),
            );
        }
        if interval * 2 > window {
            errors.push(
                "spec.scrape.interval",
                "must be at most half the window, so every window holds two scrapes",
            );
        }
        for s in &signals {
            if let Some(up) = s.up_window {
                if up >= window || up < interval * 2 {
                    errors.push(
                        format!("spec.signals.{}.upWindow", s.field),
                        "must be shorter than spec.scrape.window and hold two scrapes at spec.scrape.interval",
                    );
                }
            }
        }
        let gpu = spec
            .gpu
            .as_ref()
            .and_then(|g| match u32::try_from(g.count) {
                Ok(n) if n > 0 => Some((g.resource.clone(), n)),
                _ => {
                    errors.push("spec.gpu.count", format!("{} must be at least 1", g.count));
                    None
                }
            });
        let routing = spec.routing.as_ref().and_then(|r| {
            let Ok(lever) = r.lever() else {
                errors.push(
                    "spec.routing",
                    "exactly one of httpRoute, envoyGateway and istio is required",
                );
                return None;
            };
            let policy = match r.policy(parse_duration) {
                Ok(p) => p,
                Err(e) => {
                    errors.push("spec.routing.minChangeInterval", e.to_string());
                    return None;
                }
            };
            // Weights need what a replica serves: the target of a per-replica demand signal.
            let per_replica = [
                Signal::QueueDepth,
                Signal::GenerationTokensPerSecond,
                Signal::Concurrency,
            ];
            if !signals.iter().any(|s| per_replica.contains(&s.signal)) {
                errors.push(
                    "spec.routing",
                    "needs a per-replica demand signal (queuePerReplica, tokensPerSecondPerReplica or concurrencyPerReplica): its target is what a replica serves",
                );
            }
            if lever == Lever::HttpRoute {
                for (i, z) in spec.zones.iter().enumerate() {
                    if z.service.is_none() {
                        errors.push(
                            format!("spec.zones[{i}].service"),
                            "spec.routing.httpRoute needs a Service per zone",
                        );
                    }
                }
            }
            Some(RoutingPlan {
                spec: r.clone(),
                lever,
                policy,
                services: spec
                    .zones
                    .iter()
                    .map(|z| ZoneService {
                        zone: z.name.clone(),
                        service: z.service.clone(),
                    })
                    .collect(),
            })
        });
        if !errors.0.is_empty() {
            return Err(SpecErrors(errors.0));
        }
        Ok(Plan {
            model: spec.model.clone(),
            zones,
            sources,
            signals,
            spillover,
            warmup,
            idle_period,
            window,
            interval,
            gpu,
            routing,
        })
    }

    /// The signal whose figures status and metrics report as demand: the first per-replica demand
    /// signal (queue, then tokens, then concurrency), if any.
    pub fn demand_signal(&self) -> Option<&SignalPlan> {
        [
            Signal::QueueDepth,
            Signal::GenerationTokensPerSecond,
            Signal::Concurrency,
        ]
        .iter()
        .find_map(|s| self.signals.iter().find(|p| p.signal == *s))
    }

    /// Whether `signal` is read in every zone. The picker's figures are the pool's, read in the
    /// first zone only, except its queue when model servers are a source: its per-endpoint part
    /// is split by zone through the endpoints' Pods (see [`Plan::pool`]).
    pub fn read_per_zone(&self, signal: &SignalPlan) -> bool {
        signal.source != ENDPOINT_PICKER
            || (signal.signal.desc().roles == [crate::model::Role::Queue]
                && self.sources.iter().any(|s| s.name == MODEL_SERVER))
    }

    /// The zone demand goes to first: the first of `spec.spillover.order`, else of `spec.zones`.
    pub fn first_zone(&self) -> Option<&str> {
        self.spillover
            .as_ref()
            .and_then(|s| s.order.first())
            .or_else(|| self.zones.first().map(|z| &z.name))
            .map(String::as_str)
    }

    pub fn zone(&self, name: &str) -> Option<&ZonePlan> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The pool for this plan: one source per configured source, with one target per scraped
    /// endpoint of a zone of the plan. Visible only to ScaledObjects of `namespace`.
    ///
    /// The endpoint picker (found in the first zone) is read once per zone when model servers are
    /// a source too: each zone's target counts the per-endpoint series of that zone's
    /// model-server Pods, and only the first zone's counts the pool-wide ones.
    pub fn pool(&self, name: &str, namespace: &str, endpoints: &[Endpoint]) -> Pool {
        let split_picker = self.sources.iter().any(|s| s.name == MODEL_SERVER);
        let pods_in = |zone: &str| -> BTreeSet<String> {
            endpoints
                .iter()
                .filter(|e| e.source == MODEL_SERVER && e.zone == zone)
                .filter_map(|e| e.pod.clone())
                .collect()
        };
        let sources = self
            .sources
            .iter()
            .map(|s| {
                let mut urls: BTreeSet<(String, String)> = BTreeSet::new();
                for e in endpoints {
                    if e.source == s.name && e.scraped() && self.zone(&e.zone).is_some() {
                        urls.insert((e.zone.clone(), target_url(e.address, e.port, &s.path)));
                    }
                }
                let targets = if s.name == ENDPOINT_PICKER && split_picker {
                    let urls: BTreeSet<String> = urls.into_iter().map(|(_, url)| url).collect();
                    self.zones
                        .iter()
                        .flat_map(|z| {
                            let scope = EndpointScope {
                                pods: pods_in(&z.name),
                                pool_wide: self.first_zone() == Some(z.name.as_str()),
                            };
                            urls.iter().map(move |url| Target {
                                url: url.clone(),
                                zone: z.name.clone(),
                                interval: None,
                                endpoints: Some(scope.clone()),
                            })
                        })
                        .collect()
                } else {
                    urls.into_iter()
                        .map(|(zone, url)| Target {
                            url,
                            zone,
                            interval: None,
                            endpoints: None,
                        })
                        .collect()
                };
                Source {
                    name: s.name.to_string(),
                    profile: s.profile.clone(),
                    matchers: s.matchers.clone(),
                    targets,
                    prometheus: None,
                }
            })
            .collect();
        Pool {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            window: self.window,
            interval: self.interval,
            timeout: self.interval,
            stale_after: (self.interval * 3).max(Duration::from_secs(3)),
            min_target_ratio: DEFAULT_MIN_TARGET_RATIO,
            sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::ZonalScaledObjectSpec;

    pub(crate) fn spec(yaml: &str) -> ZonalScaledObjectSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const GOOD: &str = r#"
model: llama-70b
zones:
  - { name: zone-a, scaleTargetRef: { name: llama-a }, maxReplicas: 8 }
  - { name: zone-b, scaleTargetRef: { kind: StatefulSet, name: llama-b }, minReplicas: 2, maxReplicas: 4 }
sources:
  gateway:
    service: gateway
    port: 19001
    routeMatcher: 'envoy_cluster_name="httproute/ml/llama/rule/0"'
  modelServer:
    selector: { matchLabels: { app: llama } }
    port: metrics
    matchers: ['model_name="llama"']
signals:
  latency: { target: 2.5 }
  timeToFirstToken: { target: 0.5, quantile: 0.99 }
  queuePerReplica: { target: 4, activationTarget: 1 }
spillover: { order: [zone-b], unschedulableAfter: 90s }
warmup: { modelLoadTime: 5m }
scaleToZero: { idlePeriod: 15m }
"#;

    #[test]
    fn plans_a_full_spec() {
        let plan = Plan::from_spec(&spec(GOOD)).unwrap();
        assert_eq!(plan.zones.len(), 2);
        assert_eq!(plan.zones[0].min_replicas, 1, "default");
        assert_eq!(plan.zones[1].kind, ScaleTargetKind::StatefulSet);
        let sig: Vec<(Signal, &str)> = plan.signals.iter().map(|s| (s.signal, s.source)).collect();
        assert_eq!(
            sig,
            vec![
                (Signal::Latency { permille: 950 }, GATEWAY),
                (Signal::TimeToFirstToken { permille: 990 }, MODEL_SERVER),
                (Signal::QueueDepth, MODEL_SERVER),
            ]
        );
        assert_eq!(plan.signals[2].activation_target, 1.0);
        let sp = plan.spillover.as_ref().unwrap();
        assert_eq!(
            sp.order,
            vec!["zone-b", "zone-a"],
            "listed first, the rest after"
        );
        assert_eq!(sp.unschedulable_after, Duration::from_secs(90));
        assert_eq!(plan.warmup, Some(Duration::from_secs(300)));
        assert_eq!(plan.idle_period, Some(Duration::from_secs(900)));
        assert_eq!(plan.window, DEFAULT_WINDOW);
        assert_eq!(
            plan.demand_signal().map(|s| s.signal),
            Some(Signal::QueueDepth)
        );
        assert_eq!(plan.sources[1].port, PortRef::Name("metrics".into()));
        assert_eq!(plan.sources[0].path, "/stats/prometheus");
        assert_eq!(plan.sources[1].path, "/metrics");
    }

    fn errors_of(yaml: &str) -> String {
        Plan::from_spec(&spec(yaml)).unwrap_err().to_string()
    }

    #[test]
    fn routing_is_checked_and_planned() {
        let plan = Plan::from_spec(&spec(&format!(
            "{GOOD}routing: {{ istio: {{ service: llama, region: r1 }}, maxStep: 50, minChangeInterval: 1m }}\n"
        )))
        .unwrap();
        let r = plan.routing.unwrap();
        assert_eq!(r.lever, Lever::Istio);
        assert_eq!((r.policy.max_step, r.policy.min_interval), (0.5, 60.0));
        assert_eq!(r.policy.threshold, Policy::default().threshold);
        assert_eq!(r.services[1].zone, "zone-b");
        assert!(Plan::from_spec(&spec(GOOD)).unwrap().routing.is_none());

        // httpRoute needs a Service per zone; weights need a per-replica demand signal.
        let http = "routing: { httpRoute: { parentRefs: [{ name: gw }], port: 8000 } }\n";
        let e = errors_of(&format!("{GOOD}{http}"));
        assert!(
            e.contains("spec.zones[0].service: spec.routing.httpRoute needs a Service per zone"),
            "{e}"
        );
        assert!(e.contains("spec.zones[1].service"), "{e}");
        let latency_only = GOOD
            .replace("  timeToFirstToken: { target: 0.5, quantile: 0.99 }\n", "")
            .replace(
                "  queuePerReplica: { target: 4, activationTarget: 1 }\n",
                "",
            );
        let e = errors_of(&format!(
            "{latency_only}routing: {{ envoyGateway: {{ httpRoute: llama }} }}\n"
        ));
        assert!(
            e.contains("spec.routing: needs a per-replica demand signal"),
            "{e}"
        );
        let e = errors_of(&format!(
            "{GOOD}routing: {{ envoyGateway: {{ httpRoute: llama }}, minChangeInterval: soon }}\n"
        ));
        assert!(e.contains("spec.routing.minChangeInterval"), "{e}");
        let e = errors_of(&format!("{GOOD}routing: {{}}\n"));
        assert!(
            e.contains("spec.routing: exactly one of httpRoute, envoyGateway and istio"),
            "{e}"
        );
    }

    #[test]
    fn up_window_on_rate_signals_only() {
        let rate = GOOD.replace(
            "  queuePerReplica: { target: 4, activationTarget: 1 }\n",
            "  tokensPerSecondPerReplica: { target: 2000, upWindow: 2s }\n",
        );
        let plan = Plan::from_spec(&spec(&rate)).unwrap();
        let s = plan.signals.last().unwrap();
        assert_eq!(s.signal, Signal::GenerationTokensPerSecond);
        assert_eq!(s.up_window, Some(Duration::from_secs(2)));
        assert!(plan.signals[..2].iter().all(|s| s.up_window.is_none()));
        let e = errors_of(&GOOD.replace(
            "queuePerReplica: { target: 4, activationTarget: 1 }",
            "queuePerReplica: { target: 4, upWindow: 2s }",
        ));
        assert!(
            e.contains("spec.signals.queuePerReplica.upWindow: only on a rate signal"),
            "{e}"
        );
        let e = errors_of(&rate.replace("upWindow: 2s", "upWindow: 1m"));
        assert!(
            e.contains("spec.signals.tokensPerSecondPerReplica.upWindow: must be shorter"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace(r#"'envoy_cluster_name="httproute/ml/llama/rule/0"'"#, "'nope'"),
                "spec.sources.gateway.routeMatcher: `nope` is not a label matcher",
            ),
            (
                GOOD.replace(r#"['model_name="llama"']"#, r#"['ok="1"', 'a=~"("']"#),
                "spec.sources.modelServer.matchers[1]: ",
            ),
            (
                GOOD.replace("quantile: 0.99", "quantile: 0.9999"),
                "spec.signals.timeToFirstToken.quantile: 0.9999 must be in (0, 1)",
            ),
            (
                GOOD.replace("order: [zone-b]", "order: [zone-c]"),
                "spec.spillover.order[0]: `zone-c` is not a zone of spec.zones",
            ),
            (
                GOOD.replace("modelLoadTime: 5m", "modelLoadTime: soon"),
                "spec.warmup.modelLoadTime: `soon` is not a duration",
            ),
            (
                GOOD.replace("minReplicas: 2", "minReplicas: 5"),
                "spec.zones[1].minReplicas: 5 is more than maxReplicas (4)",
            ),
            (
                GOOD.replace("port: 19001", "port: 70000"),
                "spec.sources.gateway.port: 70000 is not a port number",
            ),
            (
                GOOD.replace("    port: metrics\n", "    port: metrics\n    path: '@evil.example/x'\n"),
                "spec.sources.modelServer.path: `@evil.example/x` is not an absolute path",
            ),
            (
                GOOD.replace("    port: metrics\n", "    port: metrics\n    path: '//evil.example/x'\n"),
                "spec.sources.modelServer.path: `//evil.example/x`",
            ),
            (
                GOOD.replace("selector: { matchLabels: { app: llama } }", "service: llama"),
                "", // valid: a Service instead of a selector
            ),
            (
                GOOD.replace("selector: { matchLabels: { app: llama } }", "selector: null"),
                "spec.sources.modelServer.service: exactly one of service, selector and inferencePool",
            ),
            (
                GOOD.replace("latency: { target: 2.5 }", "latency: { target: 2.5, source: modelServer }\n  kvCacheUtilization: { target: 0.8, source: gateway }"),
                "spec.signals.kvCacheUtilization: the gateway source (profile envoy) does not provide kv_cache_utilization",
            ),
            (
                GOOD.replace("latency: { target: 2.5 }", "latency: { target: 0 }"),
                "spec.signals.latency.target: 0 must be a number greater than 0",
            ),
            (
                format!("{GOOD}scrape: {{ interval: 20s, window: 30s }}\n"),
                "spec.scrape.interval: must be at most half the window",
            ),
        ];
        for (yaml, want) in cases {
            let got = Plan::from_spec(&spec(&yaml));
            if want.is_empty() {
                assert!(got.is_ok(), "{:?}", got.err());
            } else {
                let e = got.unwrap_err().to_string();
                assert!(e.contains(want), "want {want:?} in {e:?}");
            }
        }
        let no_gateway = GOOD.replace("  gateway:\n    service: gateway\n    port: 19001\n    routeMatcher: 'envoy_cluster_name=\"httproute/ml/llama/rule/0\"'\n", "");
        let plan = Plan::from_spec(&spec(&no_gateway)).unwrap();
        assert_eq!(
            plan.signals[0].source, MODEL_SERVER,
            "latency falls back to the model servers"
        );
        let only_gateway = GOOD.replace(
            "  timeToFirstToken: { target: 0.5, quantile: 0.99 }\n",
            "  tokensPerSecondPerReplica: { target: 900 }\n",
        );
        let e = errors_of(&only_gateway.replace("  modelServer:\n    selector: { matchLabels: { app: llama } }\n    port: metrics\n    matchers: ['model_name=\"llama\"']\n", ""));
        assert!(
            e.contains("spec.signals.tokensPerSecondPerReplica: the gateway source (profile envoy) does not provide generation_tokens_per_second"),
            "{e}"
        );
        assert!(!e.contains("queuePerReplica"), "Envoy has a queue: {e}");
    }

    #[test]
    fn inference_pools_and_the_endpoint_picker_are_sources() {
        let yaml = r#"
model: llama
zones:
  - { name: zone-a, scaleTargetRef: { name: llama-a }, maxReplicas: 8 }
  - { name: zone-b, scaleTargetRef: { name: llama-b }, maxReplicas: 8 }
sources:
  modelServer: { inferencePool: llama }
  endpointPicker: { inferencePool: llama }
signals:
  queuePerReplica: { target: 4, source: endpointPicker }
  poolSaturation: { target: 0.8 }
  interTokenLatency: { target: 0.05, quantile: 0.9 }
  promptTokensPerSecondPerReplica: { target: 8000 }
spillover: { order: [zone-b] }
"#;
        let plan = Plan::from_spec(&spec(yaml)).unwrap();
        let ms = &plan.sources[0];
        assert!(matches!(&ms.find, Find::InferencePool(p) if p == "llama"));
        assert_eq!(ms.port, PortRef::PoolTarget, "the pool's target port");
        let epp = &plan.sources[1];
        assert_eq!(
            (epp.name, epp.profile.name.as_str()),
            (ENDPOINT_PICKER, "epp")
        );
        assert!(matches!(&epp.find, Find::PickerOf(p) if p == "llama"));
        assert_eq!(
            (epp.port.clone(), epp.path.as_str()),
            (PortRef::Number(9090), "/metrics")
        );
        let sig: Vec<(Signal, &str)> = plan.signals.iter().map(|s| (s.signal, s.source)).collect();
        assert_eq!(
            sig,
            vec![
                (Signal::QueueDepth, ENDPOINT_PICKER),
                (Signal::PromptTokensPerSecond, MODEL_SERVER),
                (Signal::InterTokenLatency { permille: 900 }, MODEL_SERVER),
                // Only the picker provides it: chosen without being named.
                (Signal::PoolSaturation, ENDPOINT_PICKER),
            ]
        );
        assert_eq!(plan.first_zone(), Some("zone-b"));

        let with_port = yaml.replace(
            "{ inferencePool: llama }
  endpointPicker",
            "{ inferencePool: llama, port: metrics, path: /m }
  endpointPicker",
        );
        let plan = Plan::from_spec(&spec(&with_port)).unwrap();
        assert_eq!(plan.sources[0].port, PortRef::Name("metrics".into()));
        assert_eq!(plan.sources[0].path, "/m");

        let e = errors_of(&yaml.replace(
            "modelServer: { inferencePool: llama }",
            "modelServer: { inferencePool: llama, service: llama }",
        ));
        assert!(e.contains("spec.sources.modelServer.service: exactly one of service, selector and inferencePool"), "{e}");
        let e = errors_of(&yaml.replace(
            "modelServer: { inferencePool: llama }",
            "modelServer: { service: llama }",
        ));
        assert!(
            e.contains("spec.sources.modelServer.port: required unless inferencePool gives it"),
            "{e}"
        );
        let e = errors_of(&yaml.replace(
            "endpointPicker: { inferencePool: llama }",
            "endpointPicker: { service: epp, inferencePool: llama }",
        ));
        assert!(
            e.contains(
                "spec.sources.endpointPicker.service: exactly one of service and inferencePool"
            ),
            "{e}"
        );
        let e = errors_of(&yaml.replace(
            "poolSaturation: { target: 0.8 }",
            "poolSaturation: { target: 1.5 }",
        ));
        assert!(
            e.contains("spec.signals.poolSaturation.target: 1.5 is more than 1"),
            "{e}"
        );
        let e = errors_of(&yaml.replace(
            "  endpointPicker: { inferencePool: llama }
",
            "",
        ));
        assert!(
            e.contains("spec.signals.queuePerReplica.source: endpoint-picker is not configured"),
            "{e}"
        );
        assert!(e.contains("spec.signals.poolSaturation: the model-server source (profile vllm) does not provide pool_saturation"), "{e}");
    }

    fn ep(source: &'static str, ip: &str, zone: &str, ready: bool) -> Endpoint {
        Endpoint {
            source,
            address: ip.parse().unwrap(),
            port: if source == GATEWAY { 19001 } else { 8000 },
            zone: zone.into(),
            ready,
            serving: ready,
            terminating: false,
            pod: None,
            node: None,
        }
    }

    #[test]
    fn pool_targets_come_from_endpoints_only() {
        let plan = Plan::from_spec(&spec(GOOD)).unwrap();
        let mut terminating = ep(MODEL_SERVER, "10.0.0.9", "zone-b", true);
        terminating.terminating = true;
        let endpoints = vec![
            ep(GATEWAY, "10.0.0.1", "zone-a", true),
            ep(GATEWAY, "10.0.0.1", "zone-a", true), // listed twice (two slices)
            ep(GATEWAY, "fd00::2", "zone-b", true),
            ep(MODEL_SERVER, "10.0.1.1", "zone-a", true),
            ep(MODEL_SERVER, "10.0.1.2", "zone-a", false), // loading
            ep(MODEL_SERVER, "10.0.1.3", "zone-z", true),  // not a zone of the plan
            terminating,
        ];
        let pool = plan.pool("llama", "ml", &endpoints);
        assert_eq!(pool.namespace.as_deref(), Some("ml"));
        let urls: Vec<Vec<(&str, &str)>> = pool
            .sources
            .iter()
            .map(|s| {
                s.targets
                    .iter()
                    .map(|t| (t.zone.as_str(), t.url.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            urls,
            vec![
                vec![
                    ("zone-a", "http://10.0.0.1:19001/stats/prometheus"),
                    ("zone-b", "http://[fd00::2]:19001/stats/prometheus"),
                ],
                vec![("zone-a", "http://10.0.1.1:8000/metrics")],
            ]
        );
        assert_eq!(pool.sources[0].name, GATEWAY);
        assert_eq!(
            pool.sources[1].matchers[0].to_string(),
            r#"model_name="llama""#
        );
        assert_eq!(pool.zones(), vec!["zone-a", "zone-b"]);
    }

    #[test]
    fn the_picker_is_read_once_per_zone_for_its_pods() {
        let yaml = GOOD.replace(
            "  modelServer:",
            "  endpointPicker: { service: epp }\n  modelServer:",
        );
        let plan = Plan::from_spec(&spec(&yaml)).unwrap();
        let pod = |mut e: Endpoint, name: &str| {
            e.pod = Some(name.into());
            e
        };
        // Discovery finds the picker in the first zone (zone-b, first of spillover.order).
        let endpoints = vec![
            ep(ENDPOINT_PICKER, "10.0.2.1", "zone-b", true),
            pod(ep(MODEL_SERVER, "10.0.1.1", "zone-a", true), "llama-a-0"),
            // Loading: not scraped, but the picker may already queue for it.
            pod(ep(MODEL_SERVER, "10.0.1.2", "zone-a", false), "llama-a-1"),
            pod(ep(MODEL_SERVER, "10.0.1.3", "zone-b", true), "llama-b-0"),
        ];
        let targets = |endpoints: &[Endpoint]| {
            let pool = plan.pool("llama", "ml", endpoints);
            let picker = pool.sources.iter().find(|s| s.name == ENDPOINT_PICKER);
            picker
                .map(|s| s.targets.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let scope = t.endpoints.unwrap_or_default();
                    let pods: Vec<String> = scope.pods.into_iter().collect();
                    (t.zone, t.url, pods, scope.pool_wide)
                })
                .collect::<Vec<_>>()
        };
        let url = "http://10.0.2.1:8000/metrics".to_string();
        assert_eq!(
            targets(&endpoints),
            vec![
                (
                    "zone-a".to_string(),
                    url.clone(),
                    vec!["llama-a-0".to_string(), "llama-a-1".to_string()],
                    false
                ),
                (
                    "zone-b".to_string(),
                    url.clone(),
                    vec!["llama-b-0".to_string()],
                    true
                ),
            ]
        );
        // A Pod that goes leaves its zone's scope; the zone keeps its (empty) target.
        assert_eq!(
            targets(&endpoints[..2]),
            vec![
                (
                    "zone-a".to_string(),
                    url.clone(),
                    vec!["llama-a-0".to_string()],
                    false
                ),
                ("zone-b".to_string(), url.clone(), vec![], true),
            ]
        );
    }

    #[test]
    fn paths_and_durations() {
        for ok in ["/metrics", "/stats/prometheus", "/a-b_c.d~e/%41"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "", "metrics", "//host/x", "/a/../b", "/a?b", "/a#b", "/a b", "@h/x",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        // The URL's host is always the discovered address, whatever the path.
        let url = target_url("10.1.2.3".parse().unwrap(), 80, "/x:@y");
        assert_eq!(
            reqwest::Url::parse(&url).unwrap().host_str(),
            Some("10.1.2.3")
        );
        let cases = [
            ("90s", Some(90.0)),
            ("1m30s", Some(90.0)),
            ("500ms", Some(0.5)),
            ("1.5h", Some(5400.0)),
            ("2m", Some(120.0)),
            ("5", None),
            ("m", None),
            ("5d", None),
            ("", None),
            ("1..5s", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_duration(raw).map(|d| d.as_secs_f64()), want, "{raw}");
        }
    }
}
