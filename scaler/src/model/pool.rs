//! The pool model: the one validated description of what redbridge watches.
//!
//! Every input produces it: the YAML file and trigger metadata ([`crate::config`]) and the
//! ZonalScaledObject ([`crate::k8s::plan`]). Nothing downstream reads raw input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::matcher::Matcher;
use super::profile::Profile;
use super::role::Role;

/// All pools redbridge serves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub pools: Vec<Arc<Pool>>,
}

impl Config {
    /// The pool a ScaledObject in `namespace` may read. A pool with a namespace is visible to
    /// ScaledObjects of that namespace only, so one team cannot read another team's pool.
    pub fn pool(&self, name: &str, namespace: &str) -> Option<&Arc<Pool>> {
        self.pools
            .iter()
            .find(|p| p.name == name && p.namespace.as_deref().is_none_or(|ns| ns == namespace))
    }
}

/// A fleet that scales as one: a model behind a gateway route, or a microservice.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Namespace whose ScaledObjects may read this pool; `None` means any.
    pub namespace: Option<String>,
    /// How far back rates and quantiles look; also how long samples are kept.
    pub window: Duration,
    /// Default scrape interval of the pool's targets.
    pub interval: Duration,
    /// Per-scrape timeout.
    pub timeout: Duration,
    /// A target whose last successful scrape is older than this has not answered.
    pub stale_after: Duration,
    /// Share of a zone's targets that must have answered for its signals to be served.
    pub min_target_ratio: f64,
    pub sources: Vec<Source>,
}

impl Pool {
    /// Zones named by any target, sorted and deduplicated.
    pub fn zones(&self) -> Vec<&str> {
        let mut zones: Vec<&str> = self.sources.iter().flat_map(|s| s.zones()).collect();
        zones.sort_unstable();
        zones.dedup();
        zones
    }
}

/// One kind of endpoint in a pool (the gateway, or the model servers), read through one profile.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub profile: Arc<Profile>,
    /// Pick this pool's series out of a shared endpoint (one route, cluster or model).
    pub matchers: Vec<Matcher>,
    /// Endpoints scraped directly (empty when the source is a Prometheus-compatible server).
    pub targets: Vec<Target>,
    /// Read through a Prometheus-compatible server instead of scraping.
    pub prometheus: Option<Arc<PromSource>>,
}

impl Source {
    /// Zones this source can answer for.
    pub fn zones(&self) -> Vec<&str> {
        match &self.prometheus {
            Some(p) => p.zones.iter().map(String::as_str).collect(),
            None => self.targets.iter().map(|t| t.zone.as_str()).collect(),
        }
    }
}

/// One scrape endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub zone: String,
    /// Overrides the pool's interval.
    pub interval: Option<Duration>,
    /// On a source whose series name the endpoint they are about (the endpoint picker's
    /// per-endpoint queue), which of them this target counts; `None` counts every series.
    pub endpoints: Option<EndpointScope>,
}

/// The share of a pool-wide endpoint's series one target counts: a series naming an endpoint
/// (through the profile's endpoint labels) counts when that endpoint is one of `pods`; a series
/// naming none counts when `pool_wide`. So one endpoint, read once per zone, splits its
/// per-endpoint figures by zone and counts its pool-wide figures in one zone only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointScope {
    /// Pod names of the endpoints this target counts.
    pub pods: BTreeSet<String>,
    pub pool_wide: bool,
}

/// Where and how to query; validated from the `prometheus:` block of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSource {
    /// Base URL; `/api/v1/query` is appended (keep a path prefix such as Mimir's `/prometheus`).
    pub url: String,
    /// Label carrying the zone on the queried series (e.g. `topology_kubernetes_io_zone`).
    pub zone_label: String,
    /// Zones this source serves: triggers may name only these.
    pub zones: Vec<String>,
    /// Range of `rate()` in generated queries.
    pub rate_window: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub auth: PromAuth,
    pub tls: PromTls,
    /// Extra request headers, e.g. `X-Scope-OrgID` for a Mimir tenant.
    pub headers: Vec<(String, String)>,
    /// A user query per role, replacing the generated one. Must group by the zone label (and `le`
    /// for histograms).
    pub queries: BTreeMap<Role, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum PromAuth {
    #[default]
    None,
    /// The token is re-read at every poll, so a rotated projected token keeps working.
    Bearer { token_file: PathBuf },
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}
