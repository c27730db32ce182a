//! redbridge: a KEDA external scaler that answers from signals it scrapes itself.
//!
//! Data flows one way:
//!
//! ```text
//! config ──► scrape ──► parse ──► extract ──► window ──► signals ──► answer (gRPC, HTTP)
//! (pools,    (HTTP,     (zero-    (profile    (per-target (rates,      KEDA / Prometheus
//!  targets)   1 s)       copy)     inputs)     readings)   quantiles)   / people
//! ```
//!
//! - [`config`]: the one validated pool model, from the YAML file or trigger metadata.
//! - [`scrape`]: one task per target fetching its exposition.
//! - [`parse`]: the Prometheus text format, zero-copy, skipping unselected names unread.
//! - [`profiles`] and [`extract`]: which series feed which role, summed per target.
//! - [`promsource`]: the same inputs read from a Prometheus-compatible server, for large fleets.
//! - [`window`]: per-target readings over the pool's window, and target health.
//! - [`signals`]: pure math from windows to a value, or the reason there is none.
//! - [`state`]: binds a trigger to a pool and zone and evaluates it.
//! - [`answer`]: the KEDA gRPC service and the HTTP port; [`metrics`]: redbridge's own series.
//! - [`k8s`]: the ZonalScaledObject CRD, discovery from Pods and EndpointSlices, and the controller
//!   writing KEDA ScaledObjects per zone with spillover and warm-up in the signals.
//! - [`hpa`] and [`demo`]: the HPA rules and the simulated fleet behind `redbridge demo`.

pub mod answer;
pub mod config;
pub mod demo;
pub mod extract;
pub mod hpa;
pub mod k8s;
pub mod metrics;
pub mod parse;
pub mod profiles;
pub mod promsource;
pub mod scrape;
pub mod server;
pub mod signals;
pub mod state;
pub mod telemetry;
pub mod window;
pub mod zonal;

/// Code generated from `proto/externalscaler.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}
