//! Zones of a ZonalScaledObject pool seen together, as pure math shared by the controller
//! ([`crate::k8s`]), the answer path ([`crate::state`]), the demo and the benchmark:
//!
//! - [`spillover`]: a full zone's demand moves to zones with room, and values are capped while
//!   replicas load their model (warm-up).
//! - [`weights`]: the traffic weights between zones (locality first, full zones' excess to the
//!   zones with headroom, hysteresis and bounded steps), the demand they move, and their mapping
//!   to each gateway's lever.

pub mod spillover;
pub mod weights;
