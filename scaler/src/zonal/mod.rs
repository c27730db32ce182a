//! Zones of one model pool seen together: where each zone's requests are served.
//!
//! - [`weights`]: the traffic weights between zones (locality first, full zones' excess to the
//!   zones with headroom, hysteresis and bounded steps), the demand they move, and their mapping
//!   to each gateway's lever. Pure: the controller, the demo and the benchmark call the same
//!   functions.

pub mod weights;
