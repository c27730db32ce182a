//! redbridge: a KEDA external scaler that answers from signals it scrapes itself.
//!
//! Data flows one way; each folder is one stage and imports only the stages before it:
//!
//! ```text
//! config ──► source ──► parse ──► extract ──► window ──► signals ──► state ──► answer
//! (file,     (HTTP      (zero-    (profile    (readings  (rates,     (pools,    (gRPC, HTTP,
//!  trigger)   1 s, or    copy)     inputs)     per        quantiles,  resolve,   /metrics)
//!             PromQL)                          target)    gauges)     adjust)
//! ```
//!
//! - [`model`]: what every stage shares, no I/O: the one signal table, roles, profiles, matchers,
//!   the pool model and the clock.
//! - [`profiles`]: the built-in profiles as data, one file each.
//! - [`config`]: raw input (the YAML file, trigger metadata) to the pool model.
//! - [`source`]: scraping targets over HTTP, and polling a Prometheus-compatible server.
//! - [`parse`]: the Prometheus text format, zero-copy, skipping unselected names unread.
//! - [`extract`]: from one body to one reading: the profile's inputs, summed per target.
//! - [`window`]: per-target readings over the pool's window and target health; polled inputs.
//! - [`signals`]: pure math from windows or polled inputs to a value, or the reason there is none.
//! - [`zonal`]: spillover and warm-up of a ZonalScaledObject's zones, as pure functions.
//! - [`state`]: the registry of pools; binds a trigger to a pool and zone and evaluates it.
//! - [`answer`]: the KEDA gRPC service, the HTTP port and `/metrics`.
//! - [`telemetry`]: logging and redbridge's own counters.
//! - [`hpa`]: the HPA and KEDA rules as pure functions, shared by [`k8s`] and [`demo`].
//! - [`k8s`]: the ZonalScaledObject CRD and its plan, discovery from Pods and EndpointSlices, and
//!   the controller writing KEDA ScaledObjects per zone.
//! - [`run`]: wires sources, state and answers together; drains on shutdown.
//! - [`demo`]: the simulated fleet behind `redbridge demo`.

pub mod answer;
pub mod config;
pub mod demo;
pub mod extract;
pub mod hpa;
pub mod k8s;
pub mod model;
pub mod parse;
pub mod profiles;
pub mod run;
pub mod signals;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod window;
pub mod zonal;

/// Code generated from `proto/externalscaler.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}
