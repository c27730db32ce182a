//! Signals: pure math from what the sources read to one number, or to the reason there is none.
//!
//! One [`evaluate`] serves both kinds of input: scraped windows ([`Inputs::Scraped`]) and a
//! Prometheus-compatible source's last poll ([`Inputs::Polled`]). The signal's row in
//! [`crate::model::SIGNALS`] says which math applies; each kind of input provides rates,
//! histogram increases and gauges for a role.
//!
//! The rules for scraped windows, in the order they are checked:
//! 1. A zone with no targets, or where fewer than `min_target_ratio` of its targets answered within
//!    `stale_after` with the series the signal needs, is [`Unavailable`]: missing data is never zero.
//! 2. Counter rates are per-target increases (a decrease is a reset: the new value is the increase)
//!    divided by the span the target was observed, summed over targets. A target seen once is a
//!    baseline that adds nothing: a new pod's lifetime total is not a burst.
//! 3. Quantiles come from bucket increases over the window summed across targets, then the same
//!    interpolation as PromQL's `histogram_quantile`.
//! 4. Gauges take each target's latest value and combine them by sum, average or maximum.
//!
//! A polled source is unavailable when its last successful poll is stale, or when a query
//! returned nothing or NaN for a zone asked for.
//!
//! Zero traffic on healthy targets is a real 0 for every signal, latency included.

pub mod math;
mod polled;
mod scraped;

use std::fmt;

use crate::model::{Aggregation, Math, Profile, Role, Signal};
use crate::window::polled::ZoneInputs;
use crate::window::Scrape;
use polled::Polled;
use scraped::Scraped;

pub use math::{
    counter_increase, histogram_increase, histogram_quantile, merge_buckets, target_rate,
};

/// What one target contributes to an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct TargetView<'a> {
    pub last_success: Option<f64>,
    /// Oldest first.
    pub samples: &'a [Scrape],
}

/// When data counts as present.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub window: f64,
    pub stale_after: f64,
    pub min_target_ratio: f64,
}

/// The freshness of a Prometheus-compatible source's last poll.
#[derive(Debug, Clone, Copy)]
pub struct PolledView<'a> {
    pub now: f64,
    pub stale_after: f64,
    pub last_success: Option<f64>,
    pub last_error: Option<&'a str>,
}

/// One zone's (or every zone's) data for one source, as the evaluation reads it.
#[derive(Debug, Clone, Copy)]
pub enum Inputs<'a> {
    /// The windows of the zone's scraped targets at `now`.
    Scraped {
        rules: &'a Rules,
        now: f64,
        targets: &'a [TargetView<'a>],
    },
    /// A Prometheus-compatible source's last poll, for the zones asked for.
    Polled {
        view: PolledView<'a>,
        zones: &'a [&'a ZoneInputs],
    },
}

/// Why a signal has no value. Shown to KEDA as the UNAVAILABLE message.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    NoTargets,
    TooFewAnswered {
        answered: usize,
        total: usize,
        needed: usize,
        stale_after: f64,
    },
    NoSeries {
        role: Role,
        answered: usize,
        with_series: usize,
        needed: usize,
    },
    WarmingUp,
    Unsupported {
        profile: String,
    },
    /// A Prometheus-compatible source has no recent successful poll.
    SourceStale {
        age: Option<f64>,
        error: Option<String>,
    },
    /// A Prometheus-compatible source answered, but not for this role and zone, or with NaN or
    /// an infinite value (`nan`).
    NoResult {
        role: Role,
        nan: bool,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoTargets => write!(f, "no targets in this zone"),
            Unavailable::TooFewAnswered {
                answered,
                total,
                needed,
                stale_after,
            } => write!(
                f,
                "only {answered} of {total} targets answered in the last {stale_after}s ({needed} needed)"
            ),
            Unavailable::NoSeries {
                role,
                answered,
                with_series,
                needed,
            } => write!(
                f,
                "{with_series} of {answered} answering targets expose a series for `{}` matching the \
                 pool's matchers ({needed} needed): check the profile and matchers",
                role.name()
            ),
            Unavailable::WarmingUp => {
                write!(f, "warming up: no target has two scrapes in the window yet")
            }
            Unavailable::Unsupported { profile } => {
                write!(f, "profile `{profile}` does not provide this signal")
            }
            Unavailable::SourceStale { age, error } => {
                match age {
                    Some(age) => write!(f, "last successful Prometheus query was {age:.0}s ago")?,
                    None => write!(f, "no successful Prometheus query yet")?,
                }
                match error {
                    Some(e) => write!(f, "; last error: {e}"),
                    None => Ok(()),
                }
            }
            Unavailable::NoResult { role, nan: false } => write!(
                f,
                "the query for `{}` returned no series for this zone: check the matchers and zone label",
                role.name()
            ),
            Unavailable::NoResult { role, nan: true } => {
                write!(
                    f,
                    "the query for `{}` returned NaN or an infinite value for this zone",
                    role.name()
                )
            }
        }
    }
}

/// What a kind of input provides to the math.
enum Reader<'a> {
    Scraped(Scraped<'a>),
    Polled(Polled<'a>),
}

impl<'a> Reader<'a> {
    /// The inputs that carry `primary`: the answering, fresh targets or the polled zones.
    fn select(
        profile: &'a Profile,
        primary: Role,
        inputs: &Inputs<'a>,
    ) -> Result<Reader<'a>, Unavailable> {
        Ok(match *inputs {
            Inputs::Scraped {
                rules,
                now,
                targets,
            } => Reader::Scraped(Scraped::select(profile, primary, rules, now, targets)?),
            Inputs::Polled { view, zones } => Reader::Polled(Polled::select(&view, zones)?),
        })
    }

    fn rate(&self, role: Role) -> Result<f64, Unavailable> {
        match self {
            Reader::Scraped(s) => s.rate(role),
            Reader::Polled(p) => p.rate(role),
        }
    }

    fn require(&self, role: Role) -> Result<(), Unavailable> {
        match self {
            Reader::Scraped(s) => s.require(role),
            // A polled role is missing exactly when its query returned nothing: `rate` says so.
            Reader::Polled(_) => Ok(()),
        }
    }

    fn buckets(&self, role: Role) -> Result<Vec<(f64, f64)>, Unavailable> {
        match self {
            Reader::Scraped(s) => s.buckets(role),
            Reader::Polled(p) => p.buckets(role),
        }
    }

    fn gauge(&self, role: Role, agg: Aggregation) -> Result<f64, Unavailable> {
        match self {
            Reader::Scraped(s) => s.gauge(role, agg),
            Reader::Polled(p) => p.gauge(role, agg),
        }
    }
}

/// Evaluates `signal` for one source's `inputs`: the value, or why there is none. `aggregation`
/// is the trigger's choice for gauges (else the profile's, else the signal's default).
pub fn evaluate(
    profile: &Profile,
    signal: Signal,
    aggregation: Option<Aggregation>,
    inputs: &Inputs<'_>,
) -> Result<f64, Unavailable> {
    if !profile.supports(signal) {
        return Err(Unavailable::Unsupported {
            profile: profile.name.clone(),
        });
    }
    let desc = signal.desc();
    let primary = desc.roles[0];
    let reader = Reader::select(profile, primary, inputs)?;
    match desc.math {
        Math::Rate => reader.rate(primary),
        Math::Ratio => {
            let part = desc.roles[1];
            let whole = reader.rate(primary)?;
            reader.require(part)?;
            let part = reader.rate(part)?;
            Ok(if whole > 0.0 {
                (part / whole).clamp(0.0, 1.0)
            } else {
                0.0
            })
        }
        Math::Mean => {
            let total = desc.roles[1];
            let scale = |role: Role| profile.input(role).map_or(1.0, |(_, i)| i.scale);
            let events = reader.rate(primary)? * scale(primary);
            reader.require(total)?;
            let time = reader.rate(total)? * scale(total);
            Ok(mean(time, events))
        }
        Math::Quantile => Ok(quantile_of(signal, &reader.buckets(primary)?)),
        Math::Gauge => {
            let agg = aggregation.unwrap_or_else(|| profile.aggregation(signal));
            Ok(reader.gauge(primary, agg)?.max(0.0))
        }
    }
}

/// Each of `signals`, quantiles of one histogram signal (the same base, `Math::Quantile`), from
/// one merge of the inputs' buckets: what [`evaluate`] gives for each, without merging the zone's
/// histograms once per quantile.
pub fn evaluate_quantiles(
    profile: &Profile,
    signals: &[Signal],
    inputs: &Inputs<'_>,
) -> Vec<Result<f64, Unavailable>> {
    let Some(&first) = signals.first() else {
        return Vec::new();
    };
    debug_assert!(signals
        .iter()
        .all(|s| s.desc().math == Math::Quantile && s.base_name() == first.base_name()));
    let buckets = if profile.supports(first) {
        let primary = first.desc().roles[0];
        Reader::select(profile, primary, inputs).and_then(|r| r.buckets(primary))
    } else {
        Err(Unavailable::Unsupported {
            profile: profile.name.clone(),
        })
    };
    signals
        .iter()
        .map(|&s| match &buckets {
            Ok(b) => Ok(quantile_of(s, b)),
            Err(e) => Err(e.clone()),
        })
        .collect()
}

/// `signal`'s quantile (default 0.95) of merged bucket increases; no observations read 0.
fn quantile_of(signal: Signal, buckets: &[(f64, f64)]) -> f64 {
    histogram_quantile(signal.quantile().unwrap_or(0.95), buckets).unwrap_or(0.0)
}

/// Fast up, careful down: `signal` over the trigger's window, or, for a rate signal read from
/// scraped windows, the larger of that and its rate over the last `up_window` seconds before
/// `now`. A step up shows once the short window holds it (about `up_window`); a fall shows only
/// when the long window has let go of the old rate. Without a short-window value (warming up) the
/// long window's stands; a polled source has one rate window and answers it unchanged.
pub fn evaluate_fast_up(
    profile: &Profile,
    signal: Signal,
    aggregation: Option<Aggregation>,
    inputs: &Inputs<'_>,
    up_window: f64,
) -> Result<f64, Unavailable> {
    let long = evaluate(profile, signal, aggregation, inputs)?;
    let Inputs::Scraped {
        rules,
        now,
        targets,
    } = *inputs
    else {
        return Ok(long);
    };
    if !signal.is_rate() || up_window <= 0.0 || up_window >= rules.window || up_window.is_nan() {
        return Ok(long);
    }
    let short_rules = Rules {
        window: up_window,
        ..*rules
    };
    let short = evaluate(
        profile,
        signal,
        aggregation,
        &Inputs::Scraped {
            rules: &short_rules,
            now,
            targets,
        },
    );
    Ok(rise_fast(long, short.ok()))
}

/// The value fast up, careful down answers: the short window's when it is higher.
pub fn rise_fast(long: f64, short: Option<f64>) -> f64 {
    match short {
        Some(s) if s.is_finite() && s > long => s,
        _ => long,
    }
}

/// Mean duration per event: 0 without events, since no request means none waited.
fn mean(time: f64, events: f64) -> f64 {
    if events > 0.0 {
        (time / events).max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
