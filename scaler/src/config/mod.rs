//! The pool model: the one validated description of what redbridge watches.
//!
//! Every input produces it: the YAML file ([`file`]), and, for the signal being asked for, the
//! trigger metadata KEDA forwards ([`trigger`]). Nothing downstream reads raw input.

pub mod crd;
pub mod file;
pub mod trigger;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::parse::Labels;
use crate::profiles::Profile;
use crate::promsource::PromSource;

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
}

/// A PromQL-style label matcher: `label="v"`, `label!="v"`, `label=~"re"`, `label!~"re"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored like PromQL's; compiled once.
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    #[error("`{0}` is not a label matcher: expected label=\"value\" (or !=, =~, !~)")]
    Syntax(String),
    #[error("`{0}`: label name must match [a-zA-Z_][a-zA-Z0-9_]*")]
    LabelName(String),
    #[error("`{input}`: invalid regular expression: {reason}")]
    Regex { input: String, reason: String },
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let valid_name = label
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if label.is_empty() || !valid_name {
            return Err(MatcherError::LabelName(label.to_string()));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(Regex::new(&format!("^(?:{value})$")).map_err(
                |e| MatcherError::Regex {
                    input: format!("{label}{op}\"{value}\""),
                    reason: e.to_string(),
                },
            )?),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    pub fn eq(label: &str, value: &str) -> Self {
        Matcher {
            label: label.to_string(),
            op: MatchOp::Eq,
            value: value.to_string(),
            regex: None,
        }
    }

    /// Parses `label="value"` as written in PromQL (double or single quotes, `\"` escapes).
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let syntax = || MatcherError::Syntax(input.to_string());
        let s = input.trim();
        let op_at = s.find(['=', '!']).ok_or_else(syntax)?;
        let label = s[..op_at].trim();
        let rest = &s[op_at..];
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Eq, r)
        } else {
            return Err(syntax());
        };
        let rest = rest.trim();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
        let quote = quote.ok_or_else(syntax)?;
        let inner = rest[1..].strip_suffix(quote).ok_or_else(syntax)?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => return Err(syntax()),
                },
                c if c == quote => return Err(syntax()),
                c => value.push(c),
            }
        }
        Matcher::new(label, op, &value)
    }

    /// Whether a series' labels satisfy this matcher. A missing label reads as "" (as in PromQL).
    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        let found = labels.get(self.label.as_bytes());
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => found.map_or(self.value.is_empty(), |v| v.eq_str(&self.value)),
            (MatchOp::Ne, _) => !found.map_or(self.value.is_empty(), |v| v.eq_str(&self.value)),
            (MatchOp::Re, Some(re)) => {
                re.is_match(&found.map(|v| v.unescaped()).unwrap_or_default())
            }
            (MatchOp::NotRe, Some(re)) => {
                !re.is_match(&found.map(|v| v.unescaped()).unwrap_or_default())
            }
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        })
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.label, self.op, self.value)
    }
}

/// What a trigger asks for. Quantiles are kept in thousandths so signals can be compared and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    RequestsPerSecond,
    ErrorRatio,
    Latency { permille: u16 },
    Concurrency,
    QueueDepth,
    Running,
    KvCacheUtilization,
    PromptTokensPerSecond,
    GenerationTokensPerSecond,
    TimeToFirstToken { permille: u16 },
}

impl Signal {
    /// Signal names as written in trigger metadata (`latency` and `time_to_first_token` take a quantile).
    pub const NAMES: [&'static str; 10] = [
        "requests_per_second",
        "error_ratio",
        "latency",
        "concurrency",
        "queue_depth",
        "running",
        "kv_cache_utilization",
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
        "time_to_first_token",
    ];

    /// Every signal at the quantiles redbridge exports on `/metrics`.
    pub fn exported() -> Vec<Signal> {
        let mut out = vec![
            Signal::RequestsPerSecond,
            Signal::ErrorRatio,
            Signal::Concurrency,
            Signal::QueueDepth,
            Signal::Running,
            Signal::KvCacheUtilization,
            Signal::PromptTokensPerSecond,
            Signal::GenerationTokensPerSecond,
        ];
        for permille in [500, 900, 950, 990] {
            out.push(Signal::Latency { permille });
            out.push(Signal::TimeToFirstToken { permille });
        }
        out
    }

    /// Parses a signal name; `latency` and `time_to_first_token` also accept a `_p95` style suffix,
    /// and take `quantile` when there is none.
    pub fn parse(name: &str, quantile: Option<f64>) -> Option<Signal> {
        let (base, suffix_q) = match name.rsplit_once("_p") {
            Some((base, digits))
                if (base == "latency" || base == "time_to_first_token")
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let q: f64 = format!("0.{digits}").parse().ok()?;
                (base, Some(q))
            }
            _ => (name, None),
        };
        let permille = || -> Option<u16> {
            let q = suffix_q.or(quantile).unwrap_or(0.95);
            quantile_permille(q)
        };
        Some(match base {
            "requests_per_second" => Signal::RequestsPerSecond,
            "error_ratio" => Signal::ErrorRatio,
            "latency" => Signal::Latency {
                permille: permille()?,
            },
            "concurrency" => Signal::Concurrency,
            "queue_depth" => Signal::QueueDepth,
            "running" => Signal::Running,
            "kv_cache_utilization" => Signal::KvCacheUtilization,
            "prompt_tokens_per_second" => Signal::PromptTokensPerSecond,
            "generation_tokens_per_second" => Signal::GenerationTokensPerSecond,
            "time_to_first_token" => Signal::TimeToFirstToken {
                permille: permille()?,
            },
            _ => return None,
        })
    }

    /// Stable name used in metric names and labels, e.g. `latency_p95`.
    pub fn name(&self) -> String {
        match self {
            Signal::Latency { permille } => format!("latency_p{}", permille_digits(*permille)),
            Signal::TimeToFirstToken { permille } => {
                format!("time_to_first_token_p{}", permille_digits(*permille))
            }
            other => other.base_name().to_string(),
        }
    }

    pub fn base_name(&self) -> &'static str {
        match self {
            Signal::RequestsPerSecond => "requests_per_second",
            Signal::ErrorRatio => "error_ratio",
            Signal::Latency { .. } => "latency",
            Signal::Concurrency => "concurrency",
            Signal::QueueDepth => "queue_depth",
            Signal::Running => "running",
            Signal::KvCacheUtilization => "kv_cache_utilization",
            Signal::PromptTokensPerSecond => "prompt_tokens_per_second",
            Signal::GenerationTokensPerSecond => "generation_tokens_per_second",
            Signal::TimeToFirstToken { .. } => "time_to_first_token",
        }
    }

    /// The quantile asked for, for histogram signals.
    pub fn quantile(&self) -> Option<f64> {
        match self {
            Signal::Latency { permille } | Signal::TimeToFirstToken { permille } => {
                Some(f64::from(*permille) / 1000.0)
            }
            _ => None,
        }
    }
}

/// 0.95 -> 950. Quantiles outside (0, 1) or finer than a thousandth are refused.
pub fn quantile_permille(q: f64) -> Option<u16> {
    let permille = (q * 1000.0).round();
    let exact = ((permille / 1000.0) - q).abs() < 1e-9;
    (q > 0.0 && q < 1.0 && exact).then_some(permille as u16)
}

/// 950 -> "95", 999 -> "999", 500 -> "50".
fn permille_digits(permille: u16) -> String {
    let s = format!("{permille:03}");
    let trimmed = s.trim_end_matches('0');
    if trimmed.len() < 2 {
        format!("{trimmed:0<2}")
    } else {
        trimmed.to_string()
    }
}

/// How gauges from several targets combine into one zone value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    Sum,
    Avg,
    Max,
}

impl Aggregation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sum" => Some(Aggregation::Sum),
            "avg" => Some(Aggregation::Avg),
            "max" => Some(Aggregation::Max),
            _ => None,
        }
    }

    pub fn apply(self, values: &[f64]) -> f64 {
        match self {
            Aggregation::Sum => values.iter().sum(),
            Aggregation::Avg if values.is_empty() => 0.0,
            Aggregation::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Aggregation::Max => values.iter().copied().fold(0.0, f64::max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_matchers_like_promql() {
        let m = Matcher::parse(r#"envoy_cluster_name="httproute/ml/llama/rule/0""#).unwrap();
        assert_eq!(m.op, MatchOp::Eq);
        assert_eq!(m.value, "httproute/ml/llama/rule/0");
        let m = Matcher::parse(r#" response_code =~ '5..' "#).unwrap();
        assert_eq!((m.label.as_str(), m.op), ("response_code", MatchOp::Re));
        let m = Matcher::parse(r#"a!="x\"y""#).unwrap();
        assert_eq!((m.op, m.value.as_str()), (MatchOp::Ne, "x\"y"));
        assert!(matches!(Matcher::parse("a"), Err(MatcherError::Syntax(_))));
        assert!(matches!(
            Matcher::parse("a=b"),
            Err(MatcherError::Syntax(_))
        ));
        assert!(matches!(
            Matcher::parse("1a=\"b\""),
            Err(MatcherError::LabelName(_))
        ));
        assert!(matches!(
            Matcher::parse("a=~\"(\""),
            Err(MatcherError::Regex { .. })
        ));
    }

    #[test]
    fn signal_names_round_trip() {
        assert_eq!(
            Signal::parse("latency", None),
            Some(Signal::Latency { permille: 950 })
        );
        assert_eq!(
            Signal::parse("latency_p99", None),
            Some(Signal::Latency { permille: 990 })
        );
        assert_eq!(
            Signal::parse("latency_p999", None),
            Some(Signal::Latency { permille: 999 })
        );
        assert_eq!(
            Signal::parse("time_to_first_token", Some(0.5)),
            Some(Signal::TimeToFirstToken { permille: 500 })
        );
        assert_eq!(Signal::parse("latency", Some(1.5)), None);
        assert_eq!(Signal::parse("latency", Some(0.9555)), None);
        assert_eq!(Signal::parse("nope", None), None);
        for s in Signal::exported() {
            assert_eq!(Signal::parse(&s.name(), None), Some(s), "{}", s.name());
        }
        assert_eq!(Signal::Latency { permille: 500 }.name(), "latency_p50");
        assert_eq!(Signal::Latency { permille: 999 }.name(), "latency_p999");
    }

    #[test]
    fn aggregations() {
        assert_eq!(Aggregation::Sum.apply(&[1.0, 2.0]), 3.0);
        assert_eq!(Aggregation::Avg.apply(&[1.0, 2.0]), 1.5);
        assert_eq!(Aggregation::Max.apply(&[1.0, 2.0]), 2.0);
        assert_eq!(Aggregation::Avg.apply(&[]), 0.0);
    }
}
