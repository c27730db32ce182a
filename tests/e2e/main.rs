//! redbridge end to end, one test binary: every module runs redbridge (or its CLI) against real
//! sockets, fake or real data planes, a fake Kubernetes API server, or real Envoy and Prometheus.
//!
//! - `common`: fake Envoys over HTTP, a running redbridge, the one GetMetrics helper; `serve`:
//!   `redbridge serve` as its own process.
//! - `hostile`: targets that attack the scraper; `replicas`: two `redbridge serve` processes on
//!   the same real Envoy answer alike.
//! - `grpc`, `scrape`, `tls`, `prometheus`, `victoriametrics`, `envoy`: the KEDA contract and the
//!   data paths.
//! - `k8s`: the CRD, discovery, the controller and zone routing, with the fake API server.
//! - `profiles`: every built-in profile on its real capture; `envoy_deferred_stats`: real Envoy
//!   with deferred stat creation.
//! - `bench`: the scenario benchmark completes, deterministically, without beating the reactive
//!   limit.
//! - `cli`, `demo`, `dashboards`, `dashboards_render`: the binary as operators run it, the demo,
//!   the dashboards (and every panel's query through a real Prometheus).

mod common;
mod serve;

mod bench;
mod cli;
mod dashboards;
mod dashboards_render;
mod demo;
mod envoy;
mod envoy_deferred_stats;
mod grpc;
mod hostile;
mod k8s;
mod profiles;
mod prometheus;
mod replicas;
mod scrape;
mod tls;
mod victoriametrics;
