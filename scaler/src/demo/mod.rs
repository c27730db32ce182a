//! `redbridge demo`: a simulated GPU fleet in several zones, redbridge scraping it over real HTTP,
//! and a KEDA + HPA emulator scaling it through redbridge's gRPC API, all on 127.0.0.1.

pub mod exposition;
pub mod scenario;
pub mod sim;
