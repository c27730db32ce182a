//! Answers: the gRPC service KEDA calls and the HTTP port for people and Prometheus.

pub mod grpc;
pub mod http;
