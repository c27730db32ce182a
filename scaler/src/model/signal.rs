//! Signals: what a trigger asks for, each defined once in [`SIGNALS`].
//!
//! A row says everything the rest of redbridge needs to know of a signal: its name in trigger
//! metadata, whether it takes a quantile, the roles it reads, the math that turns them into a
//! value, how KEDA hands it to the HPA, how gauges combine by default, its unit and help text.
//! Trigger parsing, `/metrics`, `/pools`, the ZonalScaledObject's metric types and the docs checks
//! all read this table; adding a signal means a variant, a row, the profiles that feed its roles
//! and, for new math, a case in [`crate::signals`].

use std::fmt;

use super::role::Role;

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
    InterTokenLatency { permille: u16 },
    QueueTime { permille: u16 },
    PreemptionsPerSecond,
    MeanLatency,
    MeanQueueTime,
    PoolSaturation,
}

/// How a signal's value is computed from its roles (`roles[0]` first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Math {
    /// Per-second increase of the counter `roles[0]`, summed over targets.
    Rate,
    /// Rate of `roles[1]` over rate of `roles[0]`, clamped to 0..1; 0 without traffic.
    Ratio,
    /// A quantile of the histogram `roles[0]`'s increase over the window, merged across targets.
    Quantile,
    /// Latest value of the gauge `roles[0]`, combined across targets by an [`Aggregation`].
    Gauge,
    /// Rate of the counter `roles[1]` (a total of durations) over the rate of the counter
    /// `roles[0]` (the events), each times its input's scale: the mean duration of an event over
    /// the window; 0 without traffic. For servers that export cumulative time, not histograms.
    Mean,
}

/// How KEDA hands a signal to the HPA (see keda-external-scaler.md). Per-replica demand is
/// `AverageValue`: the HPA divides the zone's total by the target. A quality figure is `Value`:
/// the HPA scales the ready pods by its ratio to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    AverageValue,
    Value,
}

/// One signal's definition.
#[derive(Debug)]
pub struct SignalDesc {
    /// Name in trigger metadata; quantile signals also accept `_p95` style suffixes.
    pub name: &'static str,
    /// Takes a quantile (`quantile` key or name suffix; default 0.95).
    pub quantile: bool,
    pub math: Math,
    /// Roles read; the first is the one whose absence makes the signal unavailable.
    pub roles: &'static [Role],
    pub metric_type: MetricType,
    /// How gauges combine across targets unless the profile or trigger says otherwise.
    pub aggregation: Aggregation,
    /// Unit of the value, as the docs and `/pools` state it.
    pub unit: &'static str,
    /// One line for `/metrics` HELP and the docs.
    pub help: &'static str,
    make: fn(u16) -> Signal,
}

/// Every signal redbridge serves, in the order `/metrics` and the docs list them.
pub static SIGNALS: [SignalDesc; 16] = [
    SignalDesc {
        name: "requests_per_second",
        quantile: false,
        math: Math::Rate,
        roles: &[Role::Requests],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "requests/s",
        help: "Finished requests per second.",
        make: |_| Signal::RequestsPerSecond,
    },
    SignalDesc {
        name: "error_ratio",
        quantile: false,
        math: Math::Ratio,
        roles: &[Role::Requests, Role::Errors],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "ratio (0..1)",
        help: "Failed requests over all requests.",
        make: |_| Signal::ErrorRatio,
    },
    SignalDesc {
        name: "latency",
        quantile: true,
        math: Math::Quantile,
        roles: &[Role::Latency],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Request latency at a quantile, from the merged histogram over the window.",
        make: |permille| Signal::Latency { permille },
    },
    SignalDesc {
        name: "concurrency",
        quantile: false,
        math: Math::Gauge,
        roles: &[Role::InFlight],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "requests",
        help: "Requests in flight (running plus waiting).",
        make: |_| Signal::Concurrency,
    },
    SignalDesc {
        name: "queue_depth",
        quantile: false,
        math: Math::Gauge,
        roles: &[Role::Queue],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "requests",
        help: "Requests waiting for capacity.",
        make: |_| Signal::QueueDepth,
    },
    SignalDesc {
        name: "running",
        quantile: false,
        math: Math::Gauge,
        roles: &[Role::Running],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "requests",
        help: "Requests being executed.",
        make: |_| Signal::Running,
    },
    SignalDesc {
        name: "kv_cache_utilization",
        quantile: false,
        math: Math::Gauge,
        roles: &[Role::KvCache],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Avg,
        unit: "ratio (0..1)",
        help: "KV-cache use.",
        make: |_| Signal::KvCacheUtilization,
    },
    SignalDesc {
        name: "prompt_tokens_per_second",
        quantile: false,
        math: Math::Rate,
        roles: &[Role::PromptTokens],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "tokens/s",
        help: "Prompt (input) tokens processed per second.",
        make: |_| Signal::PromptTokensPerSecond,
    },
    SignalDesc {
        name: "generation_tokens_per_second",
        quantile: false,
        math: Math::Rate,
        roles: &[Role::GenerationTokens],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "tokens/s",
        help: "Generated (output) tokens per second.",
        make: |_| Signal::GenerationTokensPerSecond,
    },
    SignalDesc {
        name: "time_to_first_token",
        quantile: true,
        math: Math::Quantile,
        roles: &[Role::TimeToFirstToken],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Time to first token at a quantile, from the merged histogram over the window.",
        make: |permille| Signal::TimeToFirstToken { permille },
    },
    SignalDesc {
        name: "inter_token_latency",
        quantile: true,
        math: Math::Quantile,
        roles: &[Role::InterTokenLatency],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Time between generated tokens (decode) at a quantile, from the merged histogram over the window.",
        make: |permille| Signal::InterTokenLatency { permille },
    },
    SignalDesc {
        name: "queue_time",
        quantile: true,
        math: Math::Quantile,
        roles: &[Role::QueueTime],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Time requests waited before being scheduled, at a quantile, from the merged histogram over the window.",
        make: |permille| Signal::QueueTime { permille },
    },
    SignalDesc {
        name: "preemptions_per_second",
        quantile: false,
        math: Math::Rate,
        roles: &[Role::Preemptions],
        metric_type: MetricType::AverageValue,
        aggregation: Aggregation::Sum,
        unit: "preemptions/s",
        help: "Requests preempted from the running batch per second (KV cache exhausted).",
        make: |_| Signal::PreemptionsPerSecond,
    },
    SignalDesc {
        name: "mean_latency",
        quantile: false,
        math: Math::Mean,
        roles: &[Role::Requests, Role::LatencyTotal],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Mean request duration over the window, from cumulative duration and request counters.",
        make: |_| Signal::MeanLatency,
    },
    SignalDesc {
        name: "mean_queue_time",
        quantile: false,
        math: Math::Mean,
        roles: &[Role::Requests, Role::QueueTimeTotal],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Sum,
        unit: "seconds",
        help: "Mean time a request waited in the queue over the window, from cumulative counters.",
        make: |_| Signal::MeanQueueTime,
    },
    SignalDesc {
        name: "pool_saturation",
        quantile: false,
        math: Math::Gauge,
        roles: &[Role::Saturation],
        metric_type: MetricType::Value,
        aggregation: Aggregation::Max,
        unit: "ratio (0..1)",
        help: "How saturated the pool is, as the endpoint picker's flow control sees it.",
        make: |_| Signal::PoolSaturation,
    },
];

/// Quantiles (in thousandths) at which `/metrics` and `/pools` export quantile signals.
pub const EXPORTED_PERMILLE: [u16; 4] = [500, 900, 950, 990];

/// The quantile a quantile signal takes when neither the name nor the trigger gives one.
pub const DEFAULT_PERMILLE: u16 = 950;

impl Signal {
    /// This signal's row in [`SIGNALS`].
    pub fn desc(self) -> &'static SignalDesc {
        let row = match self {
            Signal::RequestsPerSecond => 0,
            Signal::ErrorRatio => 1,
            Signal::Latency { .. } => 2,
            Signal::Concurrency => 3,
            Signal::QueueDepth => 4,
            Signal::Running => 5,
            Signal::KvCacheUtilization => 6,
            Signal::PromptTokensPerSecond => 7,
            Signal::GenerationTokensPerSecond => 8,
            Signal::TimeToFirstToken { .. } => 9,
            Signal::InterTokenLatency { .. } => 10,
            Signal::QueueTime { .. } => 11,
            Signal::PreemptionsPerSecond => 12,
            Signal::MeanLatency => 13,
            Signal::MeanQueueTime => 14,
            Signal::PoolSaturation => 15,
        };
        &SIGNALS[row]
    }

    /// A rate of a counter: its window can be split into a short one for rises and the full one
    /// for falls (the trigger's `upWindow`, [`crate::signals::evaluate_fast_up`]).
    pub fn is_rate(self) -> bool {
        self.desc().math == Math::Rate
    }

    /// Names of the rate signals, as written in trigger metadata.
    pub fn rate_names() -> impl Iterator<Item = &'static str> {
        SIGNALS
            .iter()
            .filter(|d| d.math == Math::Rate)
            .map(|d| d.name)
    }

    /// Signal names as written in trigger metadata.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SIGNALS.iter().map(|d| d.name)
    }

    /// Every signal at the quantiles redbridge exports on `/metrics`: plain signals first, then
    /// the quantile signals per quantile.
    pub fn exported() -> Vec<Signal> {
        let plain = SIGNALS.iter().filter(|d| !d.quantile).map(|d| (d.make)(0));
        let quantiles = EXPORTED_PERMILLE.iter().flat_map(|&p| {
            SIGNALS
                .iter()
                .filter(|d| d.quantile)
                .map(move |d| (d.make)(p))
        });
        plain.chain(quantiles).collect()
    }

    /// Parses a signal name; quantile signals also accept a `_p95` style suffix, and take
    /// `quantile` when there is none.
    pub fn parse(name: &str, quantile: Option<f64>) -> Option<Signal> {
        let by_name = |n: &str| SIGNALS.iter().find(|d| d.name == n);
        let (desc, suffix_q) = match name.rsplit_once("_p") {
            Some((base, digits))
                if by_name(base).is_some_and(|d| d.quantile)
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let q: f64 = format!("0.{digits}").parse().ok()?;
                (by_name(base)?, Some(q))
            }
            _ => (by_name(name)?, None),
        };
        if !desc.quantile {
            return Some((desc.make)(0));
        }
        let permille = match suffix_q.or(quantile) {
            Some(q) => quantile_permille(q)?,
            None => DEFAULT_PERMILLE,
        };
        Some((desc.make)(permille))
    }

    /// Stable name used in metric names and labels, e.g. `latency_p95`.
    pub fn name(&self) -> String {
        match self.permille() {
            Some(p) => format!("{}_p{}", self.base_name(), permille_digits(p)),
            None => self.base_name().to_string(),
        }
    }

    pub fn base_name(&self) -> &'static str {
        self.desc().name
    }

    fn permille(&self) -> Option<u16> {
        match self {
            Signal::Latency { permille }
            | Signal::TimeToFirstToken { permille }
            | Signal::InterTokenLatency { permille }
            | Signal::QueueTime { permille } => Some(*permille),
            _ => None,
        }
    }

    /// The quantile asked for, for histogram signals.
    pub fn quantile(&self) -> Option<f64> {
        self.permille().map(|p| f64::from(p) / 1000.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
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
    fn every_row_is_its_own_signal() {
        for (i, d) in SIGNALS.iter().enumerate() {
            let s = (d.make)(DEFAULT_PERMILLE);
            assert!(std::ptr::eq(s.desc(), &SIGNALS[i]), "row {i} ({})", d.name);
            assert_eq!(s.quantile().is_some(), d.quantile, "{}", d.name);
            assert!(!d.roles.is_empty(), "{}", d.name);
            let needs = match d.math {
                Math::Ratio | Math::Mean => 2,
                _ => 1,
            };
            assert_eq!(d.roles.len(), needs, "{}", d.name);
        }
        let mut names: Vec<&str> = Signal::names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SIGNALS.len(), "signal names are unique");
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
        assert_eq!(
            Signal::parse("inter_token_latency_p99", None),
            Some(Signal::InterTokenLatency { permille: 990 })
        );
        assert_eq!(
            Signal::parse("queue_time", Some(0.5)),
            Some(Signal::QueueTime { permille: 500 })
        );
        assert_eq!(Signal::parse("mean_latency_p95", None), None);
        assert_eq!(Signal::parse("latency", Some(1.5)), None);
        assert_eq!(Signal::parse("latency", Some(0.9555)), None);
        assert_eq!(Signal::parse("nope", None), None);
        assert_eq!(Signal::parse("requests_per_second_p95", None), None);
        for s in Signal::exported() {
            assert_eq!(Signal::parse(&s.name(), None), Some(s), "{}", s.name());
        }
        assert_eq!(Signal::Latency { permille: 500 }.name(), "latency_p50");
        assert_eq!(Signal::Latency { permille: 999 }.name(), "latency_p999");
    }

    #[test]
    fn exported_lists_plain_signals_then_quantiles() {
        let names: Vec<String> = Signal::exported().iter().map(Signal::name).collect();
        assert_eq!(names[0], "requests_per_second");
        assert_eq!(names[8], "preemptions_per_second");
        assert_eq!(names[10], "mean_queue_time");
        assert_eq!(names[11], "pool_saturation");
        assert_eq!(names[12], "latency_p50");
        assert_eq!(names[13], "time_to_first_token_p50");
        assert_eq!(names[14], "inter_token_latency_p50");
        assert_eq!(names[15], "queue_time_p50");
        assert_eq!(names.len(), 12 + 4 * EXPORTED_PERMILLE.len());
    }

    #[test]
    fn aggregations() {
        assert_eq!(Aggregation::Sum.apply(&[1.0, 2.0]), 3.0);
        assert_eq!(Aggregation::Avg.apply(&[1.0, 2.0]), 1.5);
        assert_eq!(Aggregation::Max.apply(&[1.0, 2.0]), 2.0);
        assert_eq!(Aggregation::Avg.apply(&[]), 0.0);
    }
}
