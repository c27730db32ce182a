//! Answers: the gRPC service KEDA calls ([`grpc`]), and the HTTP port for people and Prometheus
//! ([`http`], rendering [`metrics`]).

pub mod grpc;
pub mod http;
pub mod metrics;
