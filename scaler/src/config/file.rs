//! The YAML configuration file: raw serde types, then validation into the pool model.
//!
//! ```yaml
//! pools:
//!   - name: llama
//!     namespace: ml
//!     window: 30s
//!     interval: 1s
//!     sources:
//!       - name: gateway
//!         profile: envoy
//!         matchers: ['envoy_cluster_name="httproute/ml/llama/rule/0"']
//!         targets:
//!           - { url: "http://10.0.1.7:19001/stats/prometheus", zone: us-east-1a }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use std::path::PathBuf;

use crate::model::{
    Config, Input, Kind, MatchOp, Matcher, Pool, Profile, PromAuth, PromSource, PromTls, Role,
    Source, Target, Term,
};
use crate::profiles;

/// A configuration error that names the file, the pool and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}{message}")]
pub struct ConfigError {
    pub file: String,
    /// `pool "llama": sources[0].targets[1].url: ` or empty.
    pub place: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pools: Vec<RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPool {
    name: String,
    namespace: Option<String>,
    window: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    min_target_ratio: Option<f64>,
    sources: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    name: Option<String>,
    profile: String,
    #[serde(default)]
    matchers: Vec<String>,
    /// Only with `profile: custom`: role name -> series.
    #[serde(default)]
    custom: BTreeMap<String, RawCustom>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    /// Read through a Prometheus-compatible server instead of scraping `targets`.
    prometheus: Option<RawProm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProm {
    url: String,
    zone_label: String,
    zones: Vec<String>,
    rate_window: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    bearer_token_file: Option<PathBuf>,
    basic_auth: Option<RawBasicAuth>,
    tls: Option<RawTls>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Role name -> PromQL returning one value per zone (and per `le` for histograms).
    #[serde(default)]
    queries: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBasicAuth {
    username: String,
    password_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCustom {
    /// One name, or alternatives newest first.
    metric: OneOrMany,
    kind: String,
    #[serde(default)]
    matchers: Vec<String>,
    /// Unit of a histogram's bounds: seconds (default), milliseconds or microseconds.
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTarget {
    url: String,
    zone: String,
    interval: Option<String>,
}

/// Defaults, documented in docs/configuration.md.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MIN_TARGET_RATIO: f64 = 0.5;
/// Samples are kept for one window; ten minutes bounds memory on large fleets.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// The longest duration any field takes.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            place: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Parses and validates; `file` only names the source in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = serde_yaml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            place: String::new(),
            message: e.to_string(),
        })?;
        let err = |pool: &str, field: &str, message: String| ConfigError {
            file: file.to_string(),
            place: if pool.is_empty() {
                format!("{field}: ")
            } else {
                format!("pool {pool:?}: {field}: ")
            },
            message,
        };
        if raw.pools.is_empty() {
            return Err(err("", "pools", "at least one pool is required".into()));
        }
        let mut seen = HashSet::new();
        let mut pools = Vec::new();
        for (i, rp) in raw.pools.into_iter().enumerate() {
            let pool = validate_pool(rp).map_err(|(pool, field, msg)| {
                let pool = if pool.is_empty() {
                    format!("#{i}")
                } else {
                    pool
                };
                err(&pool, &field, msg)
            })?;
            if !seen.insert((pool.name.clone(), pool.namespace.clone())) {
                return Err(err(&pool.name, "name", "defined twice".into()));
            }
            pools.push(Arc::new(pool));
        }
        Ok(Config { pools })
    }
}

type FieldError = (String, String, String);

fn duration(
    pool: &str,
    field: &str,
    raw: Option<&str>,
    default: Duration,
) -> Result<Duration, FieldError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        (
            pool.to_string(),
            field.to_string(),
            format!("`{raw}` is not a duration like 1s, 500ms or 2m ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err((
            pool.into(),
            field.into(),
            "must be greater than zero".into(),
        ));
    }
    // Far above any sensible setting, and far below where the sums and multiples taken of these
    // durations (two scrapes per window, window plus staleness, the next tick) overflow.
    if d > MAX_DURATION {
        return Err((
            pool.into(),
            field.into(),
            format!("`{raw}` is too long: at most 1 day"),
        ));
    }
    Ok(d)
}

/// A name usable in metric names and labels.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

fn validate_pool(rp: RawPool) -> Result<Pool, FieldError> {
    let name = rp.name.clone();
    let fe = |field: &str, msg: String| (name.clone(), field.to_string(), msg);
    if !valid_name(&rp.name) {
        return Err(fe(
            "name",
            format!(
                "`{}` must be 1-63 characters of a-z, 0-9, '-', '_' or '.'",
                rp.name
            ),
        ));
    }
    let window = duration(&name, "window", rp.window.as_deref(), DEFAULT_WINDOW)?;
    if window > MAX_WINDOW {
        return Err(fe("window", format!("at most {}s", MAX_WINDOW.as_secs())));
    }
    let interval = duration(&name, "interval", rp.interval.as_deref(), DEFAULT_INTERVAL)?;
    if interval * 2 > window {
        return Err(fe(
            "interval",
            "must be at most half the window, so every window holds two scrapes".into(),
        ));
    }
    let timeout = duration(&name, "timeout", rp.timeout.as_deref(), interval)?;
    let default_stale = (interval * 3).max(Duration::from_secs(3));
    let stale_after = duration(
        &name,
        "staleAfter",
        rp.stale_after.as_deref(),
        default_stale,
    )?;
    let min_target_ratio = rp.min_target_ratio.unwrap_or(DEFAULT_MIN_TARGET_RATIO);
    if !(min_target_ratio > 0.0 && min_target_ratio <= 1.0) {
        return Err(fe(
            "minTargetRatio",
            format!("{min_target_ratio} must be in (0, 1]"),
        ));
    }
    if rp.sources.is_empty() {
        return Err(fe("sources", "at least one source is required".into()));
    }
    let mut sources = Vec::new();
    let mut names = HashSet::new();
    for (si, rs) in rp.sources.into_iter().enumerate() {
        let at = |f: &str| format!("sources[{si}].{f}");
        let source_name = rs.name.clone().unwrap_or_else(|| rs.profile.clone());
        if !names.insert(source_name.clone()) {
            return Err(fe(
                &at("name"),
                format!("source name `{source_name}` is used twice; name the sources"),
            ));
        }
        let profile = if rs.profile == "custom" {
            custom_profile(&rs.custom).map_err(|(f, m)| fe(&at(&f), m))?
        } else {
            if !rs.custom.is_empty() {
                return Err(fe(
                    &at("custom"),
                    "only allowed with `profile: custom`".into(),
                ));
            }
            profiles::builtin(&rs.profile).ok_or_else(|| {
                fe(
                    &at("profile"),
                    format!(
                        "unknown profile `{}`; valid: {}, custom",
                        rs.profile,
                        profiles::names().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?
        };
        let matchers = rs
            .matchers
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                Matcher::parse(m).map_err(|e| fe(&at(&format!("matchers[{mi}]")), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut targets = Vec::new();
        for (ti, rt) in rs.targets.into_iter().enumerate() {
            let tat = |f: &str| at(&format!("targets[{ti}].{f}"));
            let url = reqwest::Url::parse(&rt.url)
                .map_err(|e| fe(&tat("url"), format!("`{}` is not a URL: {e}", rt.url)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(fe(
                    &tat("url"),
                    format!("`{}`: scheme must be http or https", rt.url),
                ));
            }
            if rt.zone.trim().is_empty() {
                return Err(fe(&tat("zone"), "must not be empty".into()));
            }
            let interval = rt
                .interval
                .as_deref()
                .map(|i| duration(&name, &tat("interval"), Some(i), interval))
                .transpose()?;
            targets.push(Target {
                url: rt.url,
                zone: rt.zone,
                interval,
                endpoints: None,
            });
        }
        let prometheus = match rs.prometheus {
            None if targets.is_empty() => {
                return Err(fe(
                    &at("targets"),
                    "a source needs targets, or a prometheus block".into(),
                ))
            }
            None => None,
            Some(_) if !targets.is_empty() => {
                return Err(fe(
                    &at("prometheus"),
                    "a source has either targets or a prometheus block, not both".into(),
                ))
            }
            Some(rp) => Some(Arc::new(
                validate_prom(&name, &at("prometheus"), rp, &profile, interval)
                    .map_err(|(f, m)| fe(&f, m))?,
            )),
        };
        sources.push(Source {
            name: source_name,
            profile: Arc::new(profile),
            matchers,
            targets,
            prometheus,
        });
    }
    Ok(Pool {
        name: rp.name,
        namespace: rp.namespace.filter(|n| !n.is_empty()),
        window,
        interval,
        timeout,
        stale_after,
        min_target_ratio,
        sources,
    })
}

fn validate_prom(
    pool: &str,
    at: &str,
    rp: RawProm,
    profile: &Profile,
    pool_interval: Duration,
) -> Result<PromSource, (String, String)> {
    let field = |f: &str| format!("{at}.{f}");
    let url = reqwest::Url::parse(&rp.url)
        .map_err(|e| (field("url"), format!("`{}` is not a URL: {e}", rp.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            field("url"),
            format!("`{}`: scheme must be http or https", rp.url),
        ));
    }
    if Matcher::new(&rp.zone_label, MatchOp::Eq, "").is_err() {
        return Err((
            field("zoneLabel"),
            format!("`{}` is not a label name", rp.zone_label),
        ));
    }
    if rp.zones.is_empty() || rp.zones.iter().any(|z| z.trim().is_empty()) {
        return Err((
            field("zones"),
            "list the zones this source serves (non-empty names)".into(),
        ));
    }
    let d = |f: &str, raw: Option<&str>, default: Duration| {
        duration(pool, &field(f), raw, default).map_err(|(_, f, m)| (f, m))
    };
    let rate_window = d(
        "rateWindow",
        rp.rate_window.as_deref(),
        Duration::from_secs(60),
    )?;
    let interval = d(
        "interval",
        rp.interval.as_deref(),
        pool_interval.max(Duration::from_secs(15)),
    )?;
    let timeout = d("timeout", rp.timeout.as_deref(), Duration::from_secs(5))?;
    let auth = match (rp.bearer_token_file, rp.basic_auth) {
        (Some(_), Some(_)) => {
            return Err((
                field("basicAuth"),
                "use bearerTokenFile or basicAuth, not both".into(),
            ))
        }
        (Some(token_file), None) => PromAuth::Bearer { token_file },
        (None, Some(b)) => PromAuth::Basic {
            username: b.username,
            password_file: b.password_file,
        },
        (None, None) => PromAuth::None,
    };
    let tls = rp.tls.map_or_else(PromTls::default, |t| PromTls {
        ca_file: t.ca_file,
        cert_file: t.cert_file,
        key_file: t.key_file,
        insecure_skip_verify: t.insecure_skip_verify,
    });
    let mut queries = BTreeMap::new();
    for (role_name, q) in rp.queries {
        let role = Role::parse(&role_name).ok_or_else(|| {
            (
                field(&format!("queries.{role_name}")),
                format!(
                    "unknown role; valid: {}",
                    Role::ALL.map(|r| r.name()).join(", ")
                ),
            )
        })?;
        if profile.input(role).is_none() {
            return Err((
                field(&format!("queries.{role_name}")),
                format!(
                    "profile `{}` has no `{role_name}` input to replace",
                    profile.name
                ),
            ));
        }
        queries.insert(role, q);
    }
    let source = PromSource {
        url: rp.url,
        zone_label: rp.zone_label,
        zones: rp.zones,
        rate_window,
        interval,
        timeout,
        auth,
        tls,
        headers: rp.headers.into_iter().collect(),
        queries,
    };
    // Fail now on unreadable certificates rather than at the first poll.
    crate::source::prometheus::query::client(&source).map_err(|e| (field("tls"), e.to_string()))?;
    Ok(source)
}

fn custom_profile(raw: &BTreeMap<String, RawCustom>) -> Result<Profile, (String, String)> {
    if raw.is_empty() {
        return Err((
            "custom".into(),
            "`profile: custom` needs at least one role mapping".into(),
        ));
    }
    let mut inputs = Vec::new();
    for (role_name, rc) in raw {
        let field = |f: &str| format!("custom.{role_name}.{f}");
        let role = Role::parse(role_name).ok_or_else(|| {
            (
                format!("custom.{role_name}"),
                format!(
                    "unknown role; valid: {}",
                    Role::ALL.map(|r| r.name()).join(", ")
                ),
            )
        })?;
        let kind = Kind::parse(&rc.kind).ok_or_else(|| {
            (
                field("kind"),
                format!("`{}`: valid: counter, gauge, histogram", rc.kind),
            )
        })?;
        if kind != role.kind() {
            return Err((
                field("kind"),
                format!("`{role_name}` must be read from a {:?}", role.kind()).to_lowercase(),
            ));
        }
        let names = match &rc.metric {
            OneOrMany::One(n) => vec![n.clone()],
            OneOrMany::Many(ns) => ns.clone(),
        };
        if names.is_empty() || names.iter().any(|n| !valid_metric_name(n)) {
            return Err((
                field("metric"),
                format!("{names:?}: metric names must match [a-zA-Z_:][a-zA-Z0-9_:]*"),
            ));
        }
        let matchers = rc
            .matchers
            .iter()
            .map(|m| Matcher::parse(m).map_err(|e| (field("matchers"), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let scale = match rc.unit.as_deref() {
            None | Some("seconds") => 1.0,
            Some("milliseconds") => 1e-3,
            Some("microseconds") => 1e-6,
            Some(other) => {
                return Err((
                    field("unit"),
                    format!("`{other}`: valid: seconds, milliseconds, microseconds"),
                ))
            }
        };
        inputs.push(Input {
            role,
            terms: vec![Term { names, matchers }],
            scale,
            zero_if_present: None,
        });
    }
    Ok(Profile {
        name: "custom".into(),
        inputs,
        gauge_aggregation: BTreeMap::new(),
        endpoint_labels: Vec::new(),
    })
}

pub fn valid_metric_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pools:
  - name: llama
    namespace: ml
    window: 20s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="httproute/ml/llama/rule/0"']
        targets:
          - { url: "http://127.0.0.1:19001/stats/prometheus", zone: zone-a }
          - { url: "http://127.0.0.1:19002/stats/prometheus", zone: zone-b, interval: 2s }
      - name: servers
        profile: custom
        custom:
          queue: { metric: ["my:queue", "my_queue"], kind: gauge }
          latency: { metric: my_latency_ms, kind: histogram, unit: milliseconds }
        targets:
          - { url: "http://127.0.0.1:8000/metrics", zone: zone-c }
      - name: thanos
        profile: vllm
        prometheus:
          url: http://thanos-query.monitoring:9090
          zoneLabel: topology_kubernetes_io_zone
          zones: [zone-a, zone-d]
          rateWindow: 2m
          headers: { X-Scope-OrgID: ml }
          queries:
            queue: sum by (topology_kubernetes_io_zone) (my_queue)
"#;

    #[test]
    fn loads_a_valid_file_with_defaults() {
        let c = Config::from_yaml(GOOD, "pools.yaml").unwrap();
        let p = &c.pools[0];
        assert_eq!(p.window, Duration::from_secs(20));
        assert_eq!(p.interval, DEFAULT_INTERVAL);
        assert_eq!(p.stale_after, Duration::from_secs(3));
        assert_eq!(p.zones(), vec!["zone-a", "zone-b", "zone-c", "zone-d"]);
        let prom = p.sources[2].prometheus.as_ref().unwrap();
        assert_eq!(prom.rate_window, Duration::from_secs(120));
        assert_eq!(
            prom.interval,
            Duration::from_secs(15),
            "polls no faster than Prometheus scrapes"
        );
        assert_eq!(
            prom.headers,
            vec![("X-Scope-OrgID".to_string(), "ml".to_string())]
        );
        assert!(prom.queries.contains_key(&Role::Queue));
        assert_eq!(
            p.sources[0].targets[1].interval,
            Some(Duration::from_secs(2))
        );
        let custom = &p.sources[1].profile;
        assert_eq!(custom.input(Role::Latency).unwrap().1.scale, 1e-3);
        assert!(c.pool("llama", "ml").is_some());
        assert!(
            c.pool("llama", "other").is_none(),
            "namespaced pools stay in their namespace"
        );
    }

    #[test]
    fn durations_beyond_a_day_are_refused_not_overflowed() {
        // u64::MAX seconds parses as a Duration; doubling it (interval), adding it to the window
        // (staleAfter, readiness) or to the clock (a target's interval, the poll interval) would
        // panic instead of naming the field.
        let huge = "18446744073709551615s";
        for (from, to, field) in [
            (
                "window: 20s",
                &*format!("window: 20s\n    interval: {huge}"),
                "interval",
            ),
            (
                "window: 20s",
                &*format!("window: 20s\n    staleAfter: {huge}"),
                "staleAfter",
            ),
            (
                "window: 20s",
                &*format!("window: 20s\n    timeout: {huge}"),
                "timeout",
            ),
            (
                "zone: zone-b, interval: 2s",
                &*format!("zone: zone-b, interval: {huge}"),
                "targets[1].interval",
            ),
            (
                "zones: [zone-a, zone-d]",
                &*format!("zones: [zone-a, zone-d]\n          interval: {huge}"),
                "prometheus.interval",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let err = error_of(&GOOD.replacen(from, to, 1));
            assert!(
                err.contains(field) && err.contains("at most 1 day"),
                "{field}: {err}"
            );
        }
        assert!(Config::from_yaml(
            &GOOD.replace("window: 20s", "window: 20s\n    staleAfter: 24h"),
            "p.yaml"
        )
        .is_ok());
    }

    fn error_of(yaml: &str) -> String {
        Config::from_yaml(yaml, "pools.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_pool_and_field() {
        let bad_url = GOOD.replace("http://127.0.0.1:19002/stats/prometheus", "not a url");
        assert!(
            error_of(&bad_url)
                .starts_with(r#"pools.yaml: pool "llama": sources[0].targets[1].url: `not a url`"#),
            "{}",
            error_of(&bad_url)
        );
        let bad_profile = GOOD.replace("profile: envoy", "profile: nginx");
        let e = error_of(&bad_profile);
        assert!(
            e.contains("sources[0].profile: unknown profile `nginx`; valid: envoy"),
            "{e}"
        );
        let bad_window = GOOD.replace("window: 20s", "window: soon");
        assert!(error_of(&bad_window).contains(r#"pool "llama": window: `soon` is not a duration"#));
        let bad_kind = GOOD.replace("kind: gauge", "kind: counter");
        assert!(
            error_of(&bad_kind).contains("custom.queue.kind: `queue` must be read from a gauge")
        );
        let bad_matcher = GOOD.replace(r#"envoy_cluster_name="httproute/ml/llama/rule/0""#, "nope");
        assert!(error_of(&bad_matcher)
            .contains("sources[0].matchers[0]: `nope` is not a label matcher"));
        let unknown_key = GOOD.replace("window: 20s", "windw: 20s");
        assert!(
            error_of(&unknown_key).contains("unknown field `windw`"),
            "{}",
            error_of(&unknown_key)
        );
        let zero_ratio = GOOD.replace("window: 20s", "minTargetRatio: 0");
        assert!(error_of(&zero_ratio).contains("minTargetRatio: 0 must be in (0, 1]"));
        let both = GOOD.replace(
            "        prometheus:\n",
            "        targets: [{ url: \"http://x:1/m\", zone: a }]\n        prometheus:\n",
        );
        assert!(
            error_of(&both).contains(
                "sources[2].prometheus: a source has either targets or a prometheus block"
            ),
            "{}",
            error_of(&both)
        );
        let bad_role = GOOD.replace("            queue: sum", "            kv: sum");
        assert!(
            error_of(&bad_role).contains("sources[2].prometheus.queries.kv: unknown role"),
            "{}",
            error_of(&bad_role)
        );
        let no_zones = GOOD.replace("zones: [zone-a, zone-d]", "zones: []");
        assert!(error_of(&no_zones).contains("sources[2].prometheus.zones: list the zones"));
        let missing_ca = GOOD.replace(
            "rateWindow: 2m",
            "rateWindow: 2m\n          tls: { caFile: /nonexistent/ca.pem }",
        );
        assert!(
            error_of(&missing_ca)
                .contains("sources[2].prometheus.tls: cannot read CA file /nonexistent/ca.pem"),
            "{}",
            error_of(&missing_ca)
        );
        let dup = format!("{GOOD}{}", &GOOD[GOOD.find("  - name: llama").unwrap()..]);
        assert!(
            error_of(&dup).contains(r#"pool "llama": name: defined twice"#),
            "{}",
            error_of(&dup)
        );
    }
}
