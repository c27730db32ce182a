//! The traffic script `redbridge demo` plays: zones, the model and replica shape, GPU capacity, and
//! timed phases of per-zone request rates.
//!
//! Scripts are YAML ([`EXAMPLE_YAML`] is the default demo written out). Durations are humantime
//! strings (`"20s"`, `"1m30s"`) or plain seconds. Unknown fields are errors, and every error names
//! the phase (`phases[i]` and its `name`) and the field, so a typo never silently means zero.
//!
//! A phase's `rates` default to 0 for zones it leaves out; its `gpu_capacity` overrides last for
//! that phase only. After the last phase ends the last phase continues, so a demo may outrun its
//! script.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Zones used when a script names none.
pub const DEFAULT_ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// Total length of [`Scenario::default_demo`] at its natural pace, seconds.
pub const DEFAULT_DEMO_SECONDS: f64 = 180.0;

/// The default demo as a script file: `Scenario::from_yaml(EXAMPLE_YAML)` equals
/// `Scenario::default_demo(180.0)`.
pub const EXAMPLE_YAML: &str = r#"# redbridge demo scenario: three zones, a spike in zone-b, then zone-b runs out of GPUs,
# then all traffic stops long enough for every path to scale to zero (the Prometheus path's
# rate[1m] over 15 s scrapes, plus the cooldown), then it comes back.
zones: [zone-a, zone-b, zone-c]
model:
  name: meta-llama/Llama-3.1-8B-Instruct
  prompt_tokens: 300        # mean prompt length
  generation_tokens: 150    # mean generated length
replica:
  tokens_per_second: 600            # generated tokens/s one replica sustains across its batch
  sequence_tokens_per_second: 80    # fastest a single sequence decodes
  prefill_tokens_per_second: 8000   # prompt processing
  max_sequences: 8                  # concurrent sequences per replica (more wait in its queue)
  model_load: 8s                    # from scheduled to serving
  initial: 1                        # Ready replicas per zone at the start
gpu_capacity: {zone-a: 8, zone-b: 8, zone-c: 8}   # replicas each zone can schedule
latency_target: 5s      # end-to-end, for the summary's "good" requests
error_rate: 0.005       # share of served requests that fail with a 500
queue_limit: 200        # requests a zone holds while it has no Ready replica; more get 503
phases:
  - name: steady
    duration: 20s
    rates: {zone-a: 6, zone-b: 4, zone-c: 3}     # requests/s
  - name: spike
    duration: 20s
    rates: {zone-a: 6, zone-b: 16, zone-c: 3}
  - name: gpu-shortage
    duration: 20s
    rates: {zone-a: 6, zone-b: 24, zone-c: 3}
    gpu_capacity: {zone-b: current}   # nothing new fits: capacity freezes at what zone-b holds
  - name: quiet
    duration: 100s
    rates: {}
  - name: return
    duration: 20s
    rates: {zone-a: 6, zone-b: 4, zone-c: 3}
"#;

/// Why a script was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// Not YAML of the script's shape outside the phases; the message has serde_yaml's path and
    /// line.
    #[error("scenario: {0}")]
    Yaml(String),
    /// A top-level field the simulation cannot use.
    #[error("scenario field `{field}`: {message}")]
    Field { field: String, message: String },
    /// Something wrong inside `phases[index]`.
    #[error("scenario phases[{index}] (`{name}`) field `{field}`: {message}")]
    Phase {
        index: usize,
        name: String,
        field: String,
        message: String,
    },
}

/// The served model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// `model_name` label of the model servers.
    pub name: String,
    /// Mean prompt tokens per request.
    pub prompt_tokens: f64,
    /// Mean generated tokens per request.
    pub generation_tokens: f64,
}

/// What one model-server replica can do.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSpec {
    /// Generated tokens/s shared by the running sequences.
    pub tokens_per_second: f64,
    /// Upper bound for one sequence, so a lightly loaded replica is not unrealistically fast.
    pub sequence_tokens_per_second: f64,
    /// Prompt tokens/s shared by sequences in prefill.
    pub prefill_tokens_per_second: f64,
    /// Batch size: running sequences at most; the rest wait in the replica's queue.
    pub max_sequences: u32,
    /// Seconds from scheduled (Loading) to Ready.
    pub model_load: f64,
    /// Ready replicas per zone when the simulation starts.
    pub initial: u32,
}

/// A phase's change to one zone's GPU capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityOverride {
    /// At most this many replicas hold GPUs in the zone; replicas already holding one keep it
    /// (Kubernetes does not evict for capacity), new ones stay Pending.
    Limit(u32),
    /// Capacity becomes what the zone holds when the phase starts (YAML: `current`): running
    /// replicas stay, new ones stay Pending.
    Freeze,
}

/// One timed phase, resolved against the zone list.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: String,
    /// Seconds from the start of the script.
    pub start: f64,
    pub duration: f64,
    /// Requests/s per zone, in [`Scenario::zones`] order.
    pub rates: Vec<f64>,
    /// Capacity overrides per zone, in [`Scenario::zones`] order.
    pub gpu_capacity: Vec<Option<CapacityOverride>>,
    /// Per zone, in [`Scenario::zones`] order: its pods cannot be scraped during the phase (a
    /// network partition; they keep serving). Empty means every zone is reachable.
    pub unreachable: Vec<bool>,
}

/// What [`Scenario::rates_at`] returns: the phase in force and its per-zone values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseAt<'a> {
    pub index: usize,
    pub name: &'a str,
    /// Requests/s per zone.
    pub rates: &'a [f64],
    /// Capacity overrides per zone.
    pub gpu_capacity: &'a [Option<CapacityOverride>],
    /// Zones whose pods cannot be scraped (see [`Phase::unreachable`]).
    pub unreachable: &'a [bool],
}

impl PhaseAt<'_> {
    /// Whether zone `z`'s pods can be scraped during this phase.
    pub fn reachable(&self, z: usize) -> bool {
        !self.unreachable.get(z).copied().unwrap_or(false)
    }
}

/// A validated traffic script; per-zone vectors follow `zones` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub zones: Vec<String>,
    pub model: ModelSpec,
    pub replica: ReplicaSpec,
    /// Replicas each zone can schedule; `None` is unlimited.
    pub gpu_capacity: Vec<Option<u32>>,
    /// End-to-end latency, seconds, a request must meet to count as good.
    pub latency_target: f64,
    /// Share of served requests that fail (0..=1).
    pub error_rate: f64,
    /// Requests a zone holds while no replica is Ready; beyond it they get 503.
    pub queue_limit: u32,
    pub phases: Vec<Phase>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            name: "meta-llama/Llama-3.1-8B-Instruct".into(),
            prompt_tokens: 300.0,
            generation_tokens: 150.0,
        }
    }
}

impl Default for ReplicaSpec {
    fn default() -> Self {
        ReplicaSpec {
            tokens_per_second: 600.0,
            sequence_tokens_per_second: 80.0,
            prefill_tokens_per_second: 8000.0,
            max_sequences: 8,
            model_load: 8.0,
            initial: 1,
        }
    }
}

const DEFAULT_LATENCY_TARGET: f64 = 5.0;
const DEFAULT_ERROR_RATE: f64 = 0.005;
const DEFAULT_QUEUE_LIMIT: u32 = 200;
const DEFAULT_GPU_CAPACITY: u32 = 8;
/// Length of each phase of the default demo with traffic, seconds.
const ACTIVE_PHASE_SECONDS: f64 = 20.0;

impl Scenario {
    /// The default demo fitted to `duration_secs` (a non-positive or non-finite duration means
    /// 180 s): steady load in three zones, a x4 spike in zone-b, zone-b out of GPUs while its load
    /// grows to x6, silence, then the steady load again. The phases with traffic last 20 s each
    /// (a sixth of a run shorter than two minutes); the silence has the rest, 100 s by default. The silence is what every path needs to reach zero at the default
    /// length: the Prometheus path's `rate[1m]` over 15 s scrapes reads zero about 77 s after
    /// the last request, then KEDA's 15 s cooldown; so the return phase compares scaling from
    /// zero, not a pool that never got there.
    pub fn default_demo(duration_secs: f64) -> Scenario {
        let total = if duration_secs.is_finite() && duration_secs > 0.0 {
            duration_secs
        } else {
            DEFAULT_DEMO_SECONDS
        };
        // Each phase with traffic lasts 20 s, or a sixth of a shorter run; the quiet phase has
        // the rest.
        let active = (total / 6.0).min(ACTIVE_PHASE_SECONDS);
        let quiet = total - 4.0 * active;
        let steady = vec![6.0, 4.0, 3.0];
        let plan: [(&str, f64, Vec<f64>, Option<CapacityOverride>); 5] = [
            ("steady", active, steady.clone(), None),
            ("spike", active, vec![6.0, 16.0, 3.0], None),
            (
                "gpu-shortage",
                active,
                vec![6.0, 24.0, 3.0],
                Some(CapacityOverride::Freeze),
            ),
            ("quiet", quiet, vec![0.0; 3], None),
            ("return", active, steady, None),
        ];
        let mut start = 0.0;
        let phases = plan
            .into_iter()
            .map(|(name, duration, rates, zone_b)| {
                let phase = Phase {
                    name: name.into(),
                    start,
                    duration,
                    rates,
                    gpu_capacity: vec![None, zone_b, None],
                    unreachable: Vec::new(),
                };
                start += duration;
                phase
            })
            .collect();
        Scenario {
            zones: DEFAULT_ZONES.iter().map(|z| z.to_string()).collect(),
            model: ModelSpec::default(),
            replica: ReplicaSpec::default(),
            gpu_capacity: vec![Some(DEFAULT_GPU_CAPACITY); 3],
            latency_target: DEFAULT_LATENCY_TARGET,
            error_rate: DEFAULT_ERROR_RATE,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            phases,
        }
    }

    /// Parses and validates a script.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(|e| yaml_error(text, &e))?;
        raw.resolve()
    }

    /// Seconds until the last phase ends.
    pub fn total_duration(&self) -> f64 {
        self.phases.last().map_or(0.0, |p| p.start + p.duration)
    }

    /// Position of a zone in every per-zone vector.
    pub fn zone_index(&self, name: &str) -> Option<usize> {
        self.zones.iter().position(|z| z == name)
    }

    /// Index of the phase in force at `t`: the first before 0, the last after the end.
    pub fn phase_index_at(&self, t: f64) -> usize {
        let i = self.phases.partition_point(|p| p.start + p.duration <= t);
        i.min(self.phases.len().saturating_sub(1))
    }

    /// The phase in force at `t` seconds, with its per-zone rates and capacity overrides.
    pub fn rates_at(&self, t: f64) -> PhaseAt<'_> {
        let index = self.phase_index_at(t);
        match self.phases.get(index) {
            Some(p) => PhaseAt {
                index,
                name: &p.name,
                rates: &p.rates,
                gpu_capacity: &p.gpu_capacity,
                unreachable: &p.unreachable,
            },
            // Only reachable for a hand-built Scenario without phases: silence.
            None => PhaseAt {
                index: 0,
                name: "",
                rates: &[],
                gpu_capacity: &[],
                unreachable: &[],
            },
        }
    }
}

/// Turns a serde_yaml error into one naming the phase when the path points into `phases`.
fn yaml_error(text: &str, e: &serde_yaml::Error) -> ScenarioError {
    let msg = e.to_string();
    let Some(rest) = msg.strip_prefix("phases[") else {
        return ScenarioError::Yaml(msg);
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return ScenarioError::Yaml(msg);
    };
    let Ok(index) = index.parse::<usize>() else {
        return ScenarioError::Yaml(msg);
    };
    let (path, message) = match rest.split_once(": ") {
        Some((path, message)) => (path.trim_start_matches('.'), message),
        None => ("", rest),
    };
    // "unknown field `x`" / "missing field `x`" sit on the phase itself: name the field.
    let field = if path.is_empty() {
        message.split('`').nth(1).unwrap_or("").to_string()
    } else {
        path.to_string()
    };
    ScenarioError::Phase {
        index,
        name: phase_name(text, index),
        field,
        message: message.to_string(),
    }
}

/// The `name` of `phases[index]` if the text is at least YAML that far.
fn phase_name(text: &str, index: usize) -> String {
    serde_yaml::from_str::<serde_yaml::Value>(text)
        .ok()
        .and_then(|v| {
            v.get("phases")?
                .get(index)?
                .get("name")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Seconds, from `"20s"`-style text or a number.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Secs(f64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"20s\" or \"1m30s\", or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                if v < 0 {
                    return Err(E::custom(format!("negative duration {v}")));
                }
                Ok(Secs(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom(format!(
                        "duration {v} is not a non-negative number"
                    )));
                }
                Ok(Secs(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Secs, E> {
                humantime::parse_duration(s.trim())
                    .map(|d| Secs(d.as_secs_f64()))
                    .map_err(|e| E::custom(format!("invalid duration {s:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for CapacityOverride {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CapacityOverride;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a replica count or \"current\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CapacityOverride, E> {
                u32::try_from(v)
                    .map(CapacityOverride::Limit)
                    .map_err(|_| E::custom(format!("capacity {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CapacityOverride, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("negative capacity {v}"))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CapacityOverride, E> {
                match s.trim() {
                    "current" => Ok(CapacityOverride::Freeze),
                    other => Err(E::custom(format!(
                        "expected a replica count or \"current\", got {other:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    zones: Option<Vec<String>>,
    #[serde(default)]
    model: RawModel,
    #[serde(default)]
    replica: RawReplica,
    #[serde(default)]
    gpu_capacity: BTreeMap<String, u32>,
    latency_target: Option<Secs>,
    error_rate: Option<f64>,
    queue_limit: Option<u32>,
    phases: Vec<RawPhase>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<String>,
    prompt_tokens: Option<f64>,
    generation_tokens: Option<f64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    tokens_per_second: Option<f64>,
    sequence_tokens_per_second: Option<f64>,
    prefill_tokens_per_second: Option<f64>,
    max_sequences: Option<u32>,
    model_load: Option<Secs>,
    initial: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: String,
    duration: Secs,
    #[serde(default)]
    rates: BTreeMap<String, f64>,
    #[serde(default)]
    gpu_capacity: BTreeMap<String, CapacityOverride>,
    #[serde(default)]
    unreachable: Vec<String>,
}

fn field_err(field: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// `v` (or `default` when unset) if finite and above 0 (or equal to 0, when `allow_zero`).
fn positive(
    field: &str,
    v: Option<f64>,
    default: f64,
    allow_zero: bool,
) -> Result<f64, ScenarioError> {
    let v = v.unwrap_or(default);
    let ok = v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0));
    if ok {
        Ok(v)
    } else {
        let want = if allow_zero {
            "a finite number >= 0"
        } else {
            "a finite number > 0"
        };
        Err(field_err(field, format!("{v} is not {want}")))
    }
}

impl RawScenario {
    fn resolve(self) -> Result<Scenario, ScenarioError> {
        let zones = match self.zones {
            Some(z) => z,
            None => DEFAULT_ZONES.iter().map(|z| z.to_string()).collect(),
        };
        if zones.is_empty() {
            return Err(field_err("zones", "at least one zone is needed"));
        }
        for (i, z) in zones.iter().enumerate() {
            if z.trim().is_empty() {
                return Err(field_err("zones", format!("zone {i} has an empty name")));
            }
            if zones[..i].contains(z) {
                return Err(field_err("zones", format!("zone `{z}` is listed twice")));
            }
        }
        let zone_list = zones.join(", ");
        let zone_of = |name: &str| zones.iter().position(|z| z == name);

        let defaults = ModelSpec::default();
        let model = ModelSpec {
            name: self.model.name.unwrap_or(defaults.name),
            prompt_tokens: positive(
                "model.prompt_tokens",
                self.model.prompt_tokens,
                defaults.prompt_tokens,
                false,
            )?,
            generation_tokens: positive(
                "model.generation_tokens",
                self.model.generation_tokens,
                defaults.generation_tokens,
                false,
            )?,
        };
        if model.name.is_empty() {
            return Err(field_err("model.name", "must not be empty"));
        }

        let d = ReplicaSpec::default();
        let r = self.replica;
        let replica = ReplicaSpec {
            tokens_per_second: positive(
                "replica.tokens_per_second",
                r.tokens_per_second,
                d.tokens_per_second,
                false,
            )?,
            sequence_tokens_per_second: positive(
                "replica.sequence_tokens_per_second",
                r.sequence_tokens_per_second,
                d.sequence_tokens_per_second,
                false,
            )?,
            prefill_tokens_per_second: positive(
                "replica.prefill_tokens_per_second",
                r.prefill_tokens_per_second,
                d.prefill_tokens_per_second,
                false,
            )?,
            max_sequences: r.max_sequences.unwrap_or(d.max_sequences),
            model_load: r.model_load.map_or(d.model_load, |s| s.0),
            initial: r.initial.unwrap_or(d.initial),
        };
        if replica.max_sequences == 0 {
            return Err(field_err("replica.max_sequences", "must be at least 1"));
        }

        let mut gpu_capacity = vec![None; zones.len()];
        for (zone, cap) in &self.gpu_capacity {
            let Some(i) = zone_of(zone) else {
                return Err(field_err(
                    &format!("gpu_capacity.{zone}"),
                    format!("unknown zone; zones are {zone_list}"),
                ));
            };
            gpu_capacity[i] = Some(*cap);
        }

        let latency_target = self.latency_target.map_or(DEFAULT_LATENCY_TARGET, |s| s.0);
        if latency_target <= 0.0 {
            return Err(field_err("latency_target", "must be above 0"));
        }
        let error_rate = self.error_rate.unwrap_or(DEFAULT_ERROR_RATE);
        if !(0.0..=1.0).contains(&error_rate) {
            return Err(field_err(
                "error_rate",
                format!("{error_rate} is not within 0..=1"),
            ));
        }
        if self.phases.is_empty() {
            return Err(field_err("phases", "at least one phase is needed"));
        }

        let mut phases = Vec::with_capacity(self.phases.len());
        let mut start = 0.0;
        for (index, p) in self.phases.into_iter().enumerate() {
            let err = |field: String, message: String| ScenarioError::Phase {
                index,
                name: p.name.clone(),
                field,
                message,
            };
            if p.name.trim().is_empty() {
                return Err(err("name".into(), "must not be empty".into()));
            }
            if p.duration.0 <= 0.0 {
                return Err(err("duration".into(), "must be above 0".into()));
            }
            let mut rates = vec![0.0; zones.len()];
            for (zone, rate) in &p.rates {
                let Some(i) = zone_of(zone) else {
                    return Err(err(
                        format!("rates.{zone}"),
                        format!("unknown zone; zones are {zone_list}"),
                    ));
                };
                if !rate.is_finite() || *rate < 0.0 {
                    return Err(err(
                        format!("rates.{zone}"),
                        format!("{rate} is not a rate >= 0"),
                    ));
                }
                rates[i] = *rate;
            }
            let mut caps = vec![None; zones.len()];
            for (zone, cap) in &p.gpu_capacity {
                let Some(i) = zone_of(zone) else {
                    return Err(err(
                        format!("gpu_capacity.{zone}"),
                        format!("unknown zone; zones are {zone_list}"),
                    ));
                };
                caps[i] = Some(*cap);
            }
            let mut unreachable = Vec::new();
            for zone in &p.unreachable {
                let Some(i) = zone_of(zone) else {
                    return Err(err(
                        "unreachable".into(),
                        format!("unknown zone `{zone}`; zones are {zone_list}"),
                    ));
                };
                unreachable.resize(zones.len(), false);
                unreachable[i] = true;
            }
            phases.push(Phase {
                name: p.name,
                start,
                duration: p.duration.0,
                rates,
                gpu_capacity: caps,
                unreachable,
            });
            start += p.duration.0;
        }

        Ok(Scenario {
            zones,
            model,
            replica,
            gpu_capacity,
            latency_target,
            error_rate,
            queue_limit: self.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT),
            phases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_default_demo() {
        let parsed = Scenario::from_yaml(EXAMPLE_YAML).expect("example parses");
        assert_eq!(parsed, Scenario::default_demo(DEFAULT_DEMO_SECONDS));
        assert_eq!(parsed.total_duration(), 180.0);
    }

    #[test]
    fn default_demo_scales_every_phase() {
        let s = Scenario::default_demo(60.0);
        assert_eq!(s.total_duration(), 60.0);
        let durations: Vec<f64> = s.phases.iter().map(|p| p.duration).collect();
        assert_eq!(durations, vec![10.0, 10.0, 10.0, 20.0, 10.0]);
        let long = Scenario::default_demo(300.0);
        let durations: Vec<f64> = long.phases.iter().map(|p| p.duration).collect();
        assert_eq!(
            durations,
            vec![20.0, 20.0, 20.0, 220.0, 20.0],
            "the quiet grows"
        );
        assert_eq!(Scenario::default_demo(f64::NAN).total_duration(), 180.0);
        assert_eq!(Scenario::default_demo(-5.0).total_duration(), 180.0);
    }

    #[test]
    fn default_demo_story() {
        let s = Scenario::default_demo(180.0);
        let steady = s.rates_at(5.0);
        assert_eq!(steady.name, "steady");
        assert!(steady.rates.iter().all(|r| *r > 0.0));
        let spike = s.rates_at(25.0);
        assert_eq!(spike.name, "spike");
        assert_eq!(spike.rates[1], steady.rates[1] * 4.0);
        let shortage = s.rates_at(45.0);
        assert_eq!(shortage.gpu_capacity[1], Some(CapacityOverride::Freeze));
        let quiet = s.rates_at(70.0);
        assert!(quiet.rates.iter().all(|r| *r == 0.0));
        assert!(
            s.phases[3].duration >= 77.0 + 15.0,
            "quiet must outlast the Prometheus path's detection plus the 15 s cooldown"
        );
        assert_eq!(s.rates_at(170.0).rates, steady.rates);
    }

    #[test]
    fn rates_at_boundaries() {
        let s = Scenario::default_demo(180.0);
        assert_eq!(s.rates_at(-1.0).index, 0);
        assert_eq!(s.rates_at(0.0).index, 0);
        assert_eq!(s.rates_at(19.999).index, 0);
        assert_eq!(s.rates_at(20.0).index, 1);
        assert_eq!(s.rates_at(179.9).index, 4);
        // Past the end the last phase continues.
        assert_eq!(s.rates_at(1e6).name, "return");
    }

    #[test]
    fn minimal_script_gets_defaults() {
        let s = Scenario::from_yaml(
            "phases:\n  - name: only\n    duration: 90\n    rates: {zone-b: 2.5}\n",
        )
        .expect("parses");
        assert_eq!(s.zones, vec!["zone-a", "zone-b", "zone-c"]);
        assert_eq!(s.phases[0].rates, vec![0.0, 2.5, 0.0]);
        assert_eq!(s.phases[0].duration, 90.0);
        assert_eq!(s.gpu_capacity, vec![None, None, None]);
        assert_eq!(s.replica, ReplicaSpec::default());
        assert_eq!(s.model, ModelSpec::default());
        assert_eq!(s.error_rate, 0.005);
    }

    #[test]
    fn custom_zones_and_capacity() {
        let s = Scenario::from_yaml(
            "zones: [eu-1, eu-2]\ngpu_capacity: {eu-2: 3}\nreplica: {model_load: 1m30s}\n\
             phases:\n  - {name: a, duration: 1m, rates: {eu-1: 1}, gpu_capacity: {eu-1: 2, eu-2: current}}\n",
        )
        .expect("parses");
        assert_eq!(s.zone_index("eu-2"), Some(1));
        assert_eq!(s.gpu_capacity, vec![None, Some(3)]);
        assert_eq!(s.replica.model_load, 90.0);
        assert_eq!(
            s.phases[0].gpu_capacity,
            vec![
                Some(CapacityOverride::Limit(2)),
                Some(CapacityOverride::Freeze)
            ]
        );
    }

    fn phase_error(yaml: &str) -> (usize, String, String, String) {
        match Scenario::from_yaml(yaml) {
            Err(ScenarioError::Phase {
                index,
                name,
                field,
                message,
            }) => (index, name, field, message),
            other => panic!("expected a phase error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_phase_and_field() {
        let head = "phases:\n  - {name: ok, duration: 10s}\n";
        let (i, name, field, msg) = phase_error(&format!(
            "{head}  - {{name: spike, duration: 10s, rate: {{zone-a: 1}}}}\n"
        ));
        assert_eq!(
            (i, name.as_str(), field.as_str()),
            (1, "spike", "rate"),
            "{msg}"
        );
        assert!(msg.contains("unknown field"), "{msg}");

        let (i, name, field, msg) = phase_error(&format!(
            "{head}  - {{name: spike, duration: ten seconds}}\n"
        ));
        assert_eq!(
            (i, name.as_str(), field.as_str()),
            (1, "spike", "duration"),
            "{msg}"
        );
        assert!(msg.contains("invalid duration"), "{msg}");

        let (_, name, field, msg) = phase_error(&format!(
            "{head}  - {{name: spike, duration: 5s, rates: {{zone-a: fast}}}}\n"
        ));
        assert_eq!(
            (name.as_str(), field.as_str()),
            ("spike", "rates.zone-a"),
            "{msg}"
        );

        let (_, name, field, msg) = phase_error(&format!(
            "{head}  - {{name: spike, duration: 5s, rates: {{zone-q: 1}}}}\n"
        ));
        assert_eq!(
            (name.as_str(), field.as_str()),
            ("spike", "rates.zone-q"),
            "{msg}"
        );
        assert!(msg.contains("unknown zone"), "{msg}");

        let (_, _, field, _) = phase_error(&format!(
            "{head}  - {{name: spike, duration: 5s, rates: {{zone-a: -1}}}}\n"
        ));
        assert_eq!(field, "rates.zone-a");

        let (_, _, field, msg) = phase_error(&format!(
            "{head}  - {{name: x, duration: 5s, gpu_capacity: {{zone-a: lots}}}}\n"
        ));
        assert_eq!(field, "gpu_capacity.zone-a", "{msg}");

        let (_, name, field, _) = phase_error(&format!("{head}  - {{duration: 5s}}\n"));
        assert_eq!((name.as_str(), field.as_str()), ("?", "name"));

        let (_, _, field, _) = phase_error("phases:\n  - {name: z, duration: 0s}\n");
        assert_eq!(field, "duration");
    }

    #[test]
    fn top_level_errors() {
        let phases = "phases:\n  - {name: a, duration: 1s}\n";
        let e = Scenario::from_yaml(&format!("zone: [a]\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Yaml(m) if m.contains("unknown field `zone`")),
            "{e}"
        );
        let e = Scenario::from_yaml(&format!("model: {{prompt_tokens: 0}}\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "model.prompt_tokens"),
            "{e}"
        );
        let e =
            Scenario::from_yaml(&format!("replica: {{max_sequences: 0}}\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "replica.max_sequences"),
            "{e}"
        );
        let e = Scenario::from_yaml(&format!("gpu_capacity: {{zone-x: 1}}\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "gpu_capacity.zone-x"),
            "{e}"
        );
        let e = Scenario::from_yaml(&format!("error_rate: 2\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "error_rate"),
            "{e}"
        );
        let e = Scenario::from_yaml(&format!("zones: [a, a]\n{phases}")).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "zones"),
            "{e}"
        );
        let e = Scenario::from_yaml("phases: []\n").unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Field { field, .. } if field == "phases"),
            "{e}"
        );
        assert!(matches!(
            Scenario::from_yaml("{}"),
            Err(ScenarioError::Yaml(_))
        ));
        assert!(matches!(
            Scenario::from_yaml(": : :"),
            Err(ScenarioError::Yaml(_))
        ));
        // Messages are readable on their own.
        let e = Scenario::from_yaml("phases:\n  - {name: spike, duration: soon}\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("phases[0]") && text.contains("spike") && text.contains("duration"),
            "{text}"
        );
    }
}
