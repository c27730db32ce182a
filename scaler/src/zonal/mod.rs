//! Zones of a ZonalScaledObject pool as pure math, shared by the controller ([`crate::k8s`]),
//! the answer path ([`crate::state`]) and the demo: [`spillover`] moves a full zone's demand to
//! zones with room and caps values while replicas load their model.

pub mod spillover;
