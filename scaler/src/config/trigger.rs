//! Trigger metadata (`scalerMetadata` as KEDA forwards it) into a validated query.
//!
//! Parsing is strict: a missing or malformed key is refused with the key's name and its valid
//! values, and so is an unknown key, because a typo (`activationtarget`) would otherwise be
//! silently ignored and scale a pool on defaults.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{Aggregation, Signal};

/// Keys redbridge reads. Documented in docs/metadata.md.
pub const KEYS: [&str; 10] = [
    "pool",
    "zone",
    "signal",
    "quantile",
    "target",
    "activationTarget",
    "source",
    "aggregation",
    "window",
    UP_WINDOW_KEY,
];

/// Fast up, careful down: a rate signal answers the larger of its rate over this short window and
/// over the trigger's window, so a rise shows within it and a fall only after the whole window.
pub const UP_WINDOW_KEY: &str = "upWindow";

/// Keys KEDA itself reads and forwards with the rest; accepted and ignored.
pub const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerQuery {
    pub pool: String,
    /// `None`: every zone of the pool together.
    pub zone: Option<String>,
    pub signal: Signal,
    /// Which of the pool's sources to read; by default the first that provides the signal.
    pub source: Option<String>,
    pub aggregation: Option<Aggregation>,
    pub target: f64,
    pub activation_target: f64,
    /// Shorter window than the pool's, for faster reaction on one trigger.
    pub window: Option<Duration>,
    /// With a rate signal: the short window rises are read over ([`UP_WINDOW_KEY`]).
    pub up_window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerError {
    #[error("metadata key `{key}` is required; valid values: {valid}")]
    Missing { key: &'static str, valid: String },
    #[error("metadata key `{key}`: `{value}` is not valid; valid values: {valid}")]
    Invalid {
        key: &'static str,
        value: String,
        valid: String,
    },
    #[error("unknown metadata key `{key}`; valid keys: {}", KEYS.join(", "))]
    Unknown { key: String },
}

impl TriggerQuery {
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<TriggerQuery, TriggerError> {
        if let Some(key) = meta
            .keys()
            .filter(|k| !KEYS.contains(&k.as_str()) && !KEDA_KEYS.contains(&k.as_str()))
            .min()
        {
            return Err(TriggerError::Unknown { key: key.clone() });
        }
        let get = |key: &str| meta.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let pool = get("pool")
            .ok_or(TriggerError::Missing {
                key: "pool",
                valid: "the name of a pool redbridge serves".into(),
            })?
            .to_string();
        let zone = get("zone").map(str::to_string);
        let quantile = match get("quantile") {
            None => None,
            Some(q) => Some(
                q.parse::<f64>()
                    .ok()
                    .filter(|q| crate::model::signal::quantile_permille(*q).is_some())
                    .ok_or_else(|| TriggerError::Invalid {
                        key: "quantile",
                        value: q.into(),
                        valid: "a number in (0, 1) with at most three decimals, e.g. 0.95".into(),
                    })?,
            ),
        };
        let signal_names = || {
            format!(
                "{} (latency and time_to_first_token also as latency_p95, time_to_first_token_p99, ...)",
                Signal::names().collect::<Vec<_>>().join(", ")
            )
        };
        let raw_signal = get("signal").ok_or_else(|| TriggerError::Missing {
            key: "signal",
            valid: signal_names(),
        })?;
        let signal = Signal::parse(raw_signal, quantile).ok_or_else(|| TriggerError::Invalid {
            key: "signal",
            value: raw_signal.into(),
            valid: signal_names(),
        })?;
        if quantile.is_some() && signal.quantile().is_none() {
            return Err(TriggerError::Invalid {
                key: "quantile",
                value: get("quantile").unwrap_or_default().into(),
                valid: "only with signal latency or time_to_first_token".into(),
            });
        }
        let number = |key: &'static str, required: bool| -> Result<Option<f64>, TriggerError> {
            let valid = || {
                if key == "target" {
                    "a number greater than 0".to_string()
                } else {
                    "a number of 0 or more".to_string()
                }
            };
            match get(key) {
                None if required => Err(TriggerError::Missing {
                    key,
                    valid: valid(),
                }),
                None => Ok(None),
                Some(v) => {
                    let n = v.parse::<f64>().ok().filter(|n| {
                        n.is_finite() && if key == "target" { *n > 0.0 } else { *n >= 0.0 }
                    });
                    n.map(Some).ok_or_else(|| TriggerError::Invalid {
                        key,
                        value: v.into(),
                        valid: valid(),
                    })
                }
            }
        };
        let target = number("target", true)?.unwrap_or(1.0);
        let activation_target = number("activationTarget", false)?.unwrap_or(0.0);
        let aggregation = match get("aggregation") {
            None => None,
            Some(a) => Some(Aggregation::parse(a).ok_or_else(|| TriggerError::Invalid {
                key: "aggregation",
                value: a.into(),
                valid: "sum, avg, max".into(),
            })?),
        };
        let window = match get("window") {
            None => None,
            Some(w) => Some(
                humantime::parse_duration(w)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| TriggerError::Invalid {
                        key: "window",
                        value: w.into(),
                        valid: "a duration like 10s or 1m, at most the pool's window".into(),
                    })?,
            ),
        };
        let up_window = match get(UP_WINDOW_KEY) {
            None => None,
            Some(w) => {
                let rates = || Signal::rate_names().collect::<Vec<_>>().join(", ");
                if !signal.is_rate() {
                    return Err(TriggerError::Invalid {
                        key: UP_WINDOW_KEY,
                        value: w.into(),
                        valid: format!("only with a rate signal: {}", rates()),
                    });
                }
                let d = humantime::parse_duration(w)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| TriggerError::Invalid {
                        key: UP_WINDOW_KEY,
                        value: w.into(),
                        valid: "a duration like 2s, shorter than the trigger's window".into(),
                    })?;
                if window.is_some_and(|long| d >= long) {
                    return Err(TriggerError::Invalid {
                        key: UP_WINDOW_KEY,
                        value: w.into(),
                        valid: "a duration shorter than the trigger's `window`".into(),
                    });
                }
                Some(d)
            }
        };
        Ok(TriggerQuery {
            pool,
            zone,
            signal,
            source: get("source").map(str::to_string),
            aggregation,
            target,
            activation_target,
            window,
            up_window,
        })
    }

    /// Lowercase, stable, one per (pool, zone, signal): `redbridge-llama-us-east-1a-latency_p95`.
    pub fn metric_name(&self) -> String {
        let zone = self.zone.as_deref().unwrap_or("all");
        format!(
            "redbridge-{}-{}-{}",
            sanitize(&self.pool),
            sanitize(zone),
            self.signal.name()
        )
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("scalerAddress", "redbridge.redbridge:9090"),
            ("pool", "llama"),
            ("zone", "us-east-1a"),
            ("signal", "latency"),
            ("quantile", "0.99"),
            ("target", "0.5"),
            ("activationTarget", "0.1"),
        ]
    }

    #[test]
    fn parses_a_full_trigger() {
        let q = TriggerQuery::from_metadata(&meta(&base())).unwrap();
        assert_eq!(q.signal, Signal::Latency { permille: 990 });
        assert_eq!(q.target, 0.5);
        assert_eq!(q.activation_target, 0.1);
        assert_eq!(q.metric_name(), "redbridge-llama-us-east-1a-latency_p99");
    }

    #[test]
    fn names_are_lowercase_and_stable() {
        let mut m = base();
        m[2] = ("zone", "US_East/1A");
        m[4] = ("quantile", "0.95");
        let q = TriggerQuery::from_metadata(&meta(&m)).unwrap();
        assert_eq!(q.metric_name(), "redbridge-llama-us-east-1a-latency_p95");
        m.retain(|(k, _)| *k != "zone");
        let q = TriggerQuery::from_metadata(&meta(&m)).unwrap();
        assert_eq!(q.metric_name(), "redbridge-llama-all-latency_p95");
    }

    fn error(f: impl FnOnce(&mut Vec<(&'static str, &'static str)>)) -> String {
        let mut m = base();
        f(&mut m);
        TriggerQuery::from_metadata(&meta(&m))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn strict_errors_name_the_key_and_valid_values() {
        let e = error(|m| m.retain(|(k, _)| *k != "pool"));
        assert!(e.starts_with("metadata key `pool` is required"), "{e}");
        let e = error(|m| m.retain(|(k, _)| *k != "target"));
        assert!(
            e.contains("`target` is required; valid values: a number greater than 0"),
            "{e}"
        );
        let e = error(|m| m[5] = ("target", "0"));
        assert!(e.contains("`target`: `0` is not valid"), "{e}");
        let e = error(|m| m[5] = ("target", "NaN"));
        assert!(e.contains("`target`: `NaN` is not valid"), "{e}");
        let e = error(|m| m[6] = ("activationTarget", "-1"));
        assert!(e.contains("`activationTarget`: `-1`"), "{e}");
        let e = error(|m| m[3] = ("signal", "qps"));
        assert!(
            e.contains(
                "`signal`: `qps` is not valid; valid values: requests_per_second, error_ratio"
            ),
            "{e}"
        );
        let e = error(|m| m[4] = ("quantile", "1.2"));
        assert!(e.contains("`quantile`: `1.2`"), "{e}");
        let e = error(|m| m.push(("activationtarget", "1")));
        assert!(
            e.starts_with("unknown metadata key `activationtarget`; valid keys: pool, zone"),
            "{e}"
        );
        let e = error(|m| {
            m[3] = ("signal", "queue_depth");
        });
        assert!(
            e.contains("`quantile`") && e.contains("only with signal latency"),
            "{e}"
        );
        let e = error(|m| m.push(("aggregation", "median")));
        assert!(e.contains("valid values: sum, avg, max"), "{e}");
    }

    #[test]
    fn up_window_only_on_rates_and_shorter_than_the_window() {
        let rate = |extra: &[(&'static str, &'static str)]| {
            let mut m = base();
            m.retain(|(k, _)| *k != "quantile");
            m[3] = ("signal", "requests_per_second");
            m.extend_from_slice(extra);
            TriggerQuery::from_metadata(&meta(&m))
        };
        let q = rate(&[("upWindow", "2s"), ("window", "30s")]).unwrap();
        assert_eq!(q.up_window, Some(Duration::from_secs(2)));
        assert_eq!(rate(&[]).unwrap().up_window, None);
        let e = rate(&[("upWindow", "30s"), ("window", "30s")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shorter than the trigger's `window`"), "{e}");
        let e = rate(&[("upWindow", "0s")]).unwrap_err().to_string();
        assert!(e.contains("`upWindow`: `0s` is not valid"), "{e}");
        // A latency trigger has no rate to split.
        let e = error(|m| m.push(("upWindow", "2s")));
        assert!(
            e.contains("only with a rate signal: requests_per_second, prompt_tokens_per_second"),
            "{e}"
        );
    }
}
