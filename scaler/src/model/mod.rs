//! The pool model and the vocabulary every stage shares; no I/O.
//!
//! - [`signal`]: every signal, defined once in one table (name, math, roles, HPA metric type,
//!   unit, help), and how gauges combine.
//! - [`role`]: what an input means (requests, errors, latency, ...), and the kind of series it is.
//! - [`profile`]: which series of a data plane feed which role.
//! - [`matcher`]: PromQL-style label matchers.
//! - [`pool`]: pools, their sources and targets: what redbridge watches.
//! - [`clock`]: monotonic seconds, on tokio's clock so tests can pause time.

pub mod clock;
pub mod matcher;
pub mod pool;
pub mod profile;
pub mod role;
pub mod signal;

pub use clock::Clock;
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use pool::{Config, EndpointScope, Pool, PromAuth, PromSource, PromTls, Source, Target};
pub use profile::{Input, Profile, Term};
pub use role::{Kind, Role};
pub use signal::{Aggregation, Math, MetricType, Signal, SignalDesc, SIGNALS};
