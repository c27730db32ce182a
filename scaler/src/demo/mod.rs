//! `redbridge demo`: a simulated GPU fleet in several zones, redbridge scraping it over real HTTP,
//! and a KEDA + HPA emulator scaling it through redbridge's gRPC API, all on 127.0.0.1.
//!
//! - [`scenario`]: the traffic script; [`sim`]: the queueing simulation behind the pods;
//!   [`exposition`]: the pods' Envoy and vLLM text.
//! - [`fleet`]: one HTTP listener per live pod, and the discovery that turns pods into targets.
//! - [`keda`]: the KEDA + HPA emulator calling redbridge over gRPC.
//! - [`standalone`]: the fleet alone (`redbridge fleet`), for measuring scrapers.
//! - [`promscaler`]: the same script scaled through an emulated Prometheus scaler, for comparison.
//! - [`report`]: what a run reports; [`view`]: the live table and the summary; [`run`]: the
//!   orchestration.

pub mod bench;
pub mod exposition;
pub mod fleet;
pub mod keda;
pub mod promscaler;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod standalone;
pub mod view;
