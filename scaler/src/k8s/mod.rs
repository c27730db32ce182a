//! Kubernetes: the `ZonalScaledObject` CRD, discovery of scrape targets, and the controller that
//! writes one KEDA ScaledObject per zone and keeps spillover and warm-up in the signals.
//!
//! ```text
//! ZonalScaledObject ──► Plan (plan) ──► ScaledObject per zone ──► KEDA ──► redbridge gRPC
//! Pods, EndpointSlices ─► discovery ─► Pool (State::upsert_pool) ─► scrapes ─► windows
//!                                  └─► zones (spillover, warm-up) ─► State adjustments, status
//!                                        └─► zone weights ─► HTTPRoute / BackendTrafficPolicy /
//!                                                            DestinationRule (spec.routing)
//! ```
//!
//! - [`crd`]: the resource types and their schema; `redbridge crd` prints the CRD.
//! - [`discovery`]: reflectors on Pods and EndpointSlices; addresses only from Pods' own IPs.
//! - [`scaledobject`]: the KEDA objects, their triggers, metric types and HPA behaviour.
//! - [`plan`]: a ZonalScaledObject's spec validated into the pool model and per-zone plans.
//! - [`zones`]: the zones loop's view, from discovery and [`crate::zonal`]'s pure math (spillover,
//!   warm-up, and with `spec.routing` the zone traffic weights that spillover then follows).
//! - [`routing`]: `spec.routing` and the gateway objects that carry the weights.
//! - [`controller`]: reconcile (API writes, status, events) and the zones loop (no API calls).
//! - [`leader`]: leader election on a Lease; only its holder writes, every replica serves.

pub mod controller;
pub mod crd;
pub mod discovery;
pub mod leader;
pub mod plan;
pub mod routing;
pub mod scaledobject;
pub mod zones;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Labels on every object redbridge writes (and the selector of its watches).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "redbridge");
pub const OWNER_LABEL: &str = "redbridge.io/zonal-scaled-object";
/// A name (or label value) of at most 63 characters of `[a-z0-9-]`, starting and ending with an
/// alphanumeric, stable for the same input: long ones keep a prefix and a hash of the whole.
pub fn dns_label(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    if s.len() > 63 {
        // FNV-1a: stable across Rust releases, unlike std's hasher.
        let hash = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        s.truncate(54);
        s = format!("{}-{:08x}", s.trim_end_matches('-'), hash as u32);
    }
    let trimmed = s.trim_matches('-');
    if trimmed.is_empty() {
        "x".into()
    } else {
        trimmed.to_string()
    }
}

/// Everything that can go wrong talking to Kubernetes. Each message carries its cause, so the
/// causes are not chained again (`{:#}` would print them twice).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig {path}: {error}")]
    Kubeconfig {
        path: String,
        error: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    Build(#[from] scaledobject::BuildError),
    #[error("cannot apply ScaledObject {name}: {error}")]
    Apply { name: String, error: kube::Error },
    #[error("cannot delete ScaledObject {name}: {error}")]
    Delete { name: String, error: kube::Error },
    #[error("cannot write status: {0}")]
    Status(kube::Error),
    #[error(transparent)]
    Render(#[from] routing::RenderError),
    #[error("cannot write {kind} {name}: {error}")]
    Route {
        kind: String,
        name: String,
        error: kube::Error,
    },
    /// Another replica holds the Lease (or this one could not renew it): no write.
    #[error("not the leader: another replica writes")]
    NotLeader,
}

impl Error {
    /// The `outcome` label of `redbridge_reconciles_total` for this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kubeconfig { .. } | Error::Infer(_) | Error::Client(_) => "client",
            Error::MissingField(_) | Error::Build(_) | Error::Render(_) => "build",
            Error::Apply { .. } | Error::Route { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Status(_) => "status",
            Error::NotLeader => "not_leader",
        }
    }
}

/// A client from `kubeconfig` when given, else in-cluster configuration or the default
/// kubeconfig (`KUBECONFIG`, `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|error| Error::Kubeconfig {
                path: path.display().to_string(),
                error,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|error| Error::Kubeconfig {
                    path: path.display().to_string(),
                    error,
                })?
        }
        None => Config::infer().await.map_err(Error::Infer)?,
    };
    Client::try_from(config).map_err(Error::Client)
}
