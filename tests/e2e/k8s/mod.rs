//! Kubernetes: the ZonalScaledObject CRD, discovery, the controller and zone routing, against a
//! fake API server (`fake_api`, `cluster`) and the CRD schemas (`schema`).

pub mod cluster;
pub mod fake_api;
pub mod schema;

mod controller;
mod controller_routing;
mod crd;
mod disaggregated;
mod discovery;
mod inference_pool;
mod leader;
mod routing;
