//! Profiles: which series of a data plane or model server feed which role.
//!
//! A profile lists [`Input`]s by [`Role`]. Each input sums one or more [`Term`]s; a term names
//! alternative metric names (newest first) because the field runs several generations of the same
//! server, and the first name a target exposes wins for that target. Signals are then plain math on
//! roles (see [`crate::signals`]), so a custom mapping works exactly like a built-in one. The
//! built-in profiles are data, in [`crate::profiles`].

use std::collections::BTreeMap;

use super::matcher::Matcher;
use super::role::Role;
use super::signal::{Aggregation, Signal};

/// One family (by alternative names) with its own label matchers.
#[derive(Debug, Clone)]
pub struct Term {
    /// Alternative names, newest first; per target the first one present is used.
    pub names: Vec<String>,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub role: Role,
    /// Summed; every term must be of the role's kind.
    pub terms: Vec<Term>,
    /// Multiplies histogram bounds and sums into seconds (0.001 for milliseconds).
    pub scale: f64,
    /// When this input is absent but the given role is present on a target, read it as zero.
    /// Envoy creates `_xx{class="5"}` only at the first 5xx, and its latency histogram only at the
    /// first request; a zero there is real, whereas an absent request counter means we are blind.
    pub zero_if_present: Option<Role>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub inputs: Vec<Input>,
    /// How gauges of this profile combine across targets, unless the trigger says otherwise.
    pub gauge_aggregation: BTreeMap<Role, Aggregation>,
    /// Labels that name the endpoint (Pod) a series is about, on a profile that reads figures
    /// of other endpoints (the picker's per-endpoint queue); the first present is used.
    pub endpoint_labels: Vec<String>,
}

impl Profile {
    pub fn input(&self, role: Role) -> Option<(usize, &Input)> {
        self.inputs.iter().enumerate().find(|(_, i)| i.role == role)
    }

    /// Whether every role the signal reads has an input here.
    pub fn supports(&self, signal: Signal) -> bool {
        signal.desc().roles.iter().all(|r| self.input(*r).is_some())
    }

    /// How the gauge behind `signal` combines across targets: the profile's choice for its role,
    /// else the signal's default.
    pub fn aggregation(&self, signal: Signal) -> Aggregation {
        let desc = signal.desc();
        self.gauge_aggregation
            .get(&desc.roles[0])
            .copied()
            .unwrap_or(desc.aggregation)
    }
}
