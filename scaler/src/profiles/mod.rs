//! The built-in profiles, as data: one file per data plane or model server, one table from name
//! to profile. A custom profile from the configuration file is the same [`Profile`] type.

mod envoy;
mod epp;
mod hubble;
mod ingress_nginx;
mod istio;
mod kong;
mod linkerd;
mod sglang;
mod tgi;
mod traefik;
mod triton;
mod vllm;

use std::collections::BTreeMap;

use crate::model::{Input, MatchOp, Matcher, Profile, Role, Term};

/// A built-in profile: the name configuration files, trigger metadata and the CRD use, and
/// how to build it.
pub type Builtin = (&'static str, fn() -> Profile);

/// Every built-in profile.
pub static BUILTIN: [Builtin; 18] = [
    ("envoy", envoy::upstream),
    ("envoy-downstream", envoy::downstream),
    ("istio", istio::sidecar),
    ("istio-gateway", istio::gateway),
    ("istio-waypoint", istio::waypoint),
    ("traefik", traefik::profile),
    ("kong", kong::request),
    ("kong-upstream", kong::upstream),
    ("linkerd", linkerd::inbound),
    ("linkerd-outbound", linkerd::outbound),
    ("linkerd-route", linkerd::route),
    ("hubble", hubble::profile),
    ("ingress-nginx", ingress_nginx::profile),
    ("vllm", vllm::profile),
    ("sglang", sglang::profile),
    ("tgi", tgi::profile),
    ("triton", triton::profile),
    ("epp", epp::profile),
];

/// Names of the built-in profiles, for error messages and docs.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// A built-in profile by name.
pub fn builtin(name: &str) -> Option<Profile> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}

pub(crate) fn term(names: &[&str], matchers: Vec<Matcher>) -> Term {
    Term {
        names: names.iter().map(|s| s.to_string()).collect(),
        matchers,
    }
}

/// A 5xx status in `label`.
pub(crate) fn five_xx(label: &str) -> Matcher {
    Matcher::new(label, MatchOp::Re, "5..").expect("static regex is valid")
}

pub(crate) fn input(role: Role, terms: Vec<Term>) -> Input {
    Input {
        role,
        terms,
        scale: 1.0,
        zero_if_present: None,
    }
}

pub(crate) fn make_profile(name: &str, inputs: Vec<Input>) -> Profile {
    Profile {
        name: name.to_string(),
        inputs,
        gauge_aggregation: BTreeMap::new(),
        endpoint_labels: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Aggregation, Signal};

    #[test]
    fn every_builtin_is_consistent() {
        for name in names() {
            let p = builtin(name).unwrap();
            assert_eq!(p.name, name);
            assert!(p.supports(Signal::RequestsPerSecond) || name == "triton");
            for input in &p.inputs {
                assert!(!input.terms.is_empty(), "{name} {:?}", input.role);
                if let Some(anchor) = input.zero_if_present {
                    assert!(p.input(anchor).is_some(), "{name} {:?}", input.role);
                }
            }
        }
        assert!(builtin("nginx").is_none());
    }

    #[test]
    fn signal_support_matches_the_catalog() {
        let vllm = builtin("vllm").unwrap();
        assert!(vllm.supports(Signal::TimeToFirstToken { permille: 950 }));
        assert!(!vllm.supports(Signal::ErrorRatio));
        let envoy = builtin("envoy").unwrap();
        assert!(envoy.supports(Signal::ErrorRatio));
        assert!(envoy.supports(Signal::QueueDepth));
        assert!(!envoy.supports(Signal::KvCacheUtilization));
        assert_eq!(envoy.aggregation(Signal::QueueDepth), Aggregation::Sum);
        assert_eq!(
            vllm.aggregation(Signal::KvCacheUtilization),
            Aggregation::Avg
        );
    }
}
