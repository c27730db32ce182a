//! Sources: where readings come from. [`scrape`] fetches each target's exposition over HTTP into
//! its window; [`prometheus`] polls a Prometheus-compatible server into the source's polled
//! inputs. Neither knows the pools: [`crate::run`] starts and stops their tasks as pools change.

pub mod http;
pub mod prometheus;
pub mod scrape;
