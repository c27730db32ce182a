//! Signals: pure math from the windows of a zone's targets to one number, or to the reason there
//! is none.
//!
//! The rules, in the order they are checked:
//! 1. A zone with no targets, or where fewer than `min_target_ratio` of its targets answered within
//!    `stale_after` with the series the signal needs, is [`Unavailable`]: missing data is never zero.
//! 2. Counter rates are per-target increases (a decrease is a reset: the new value is the increase)
//!    divided by the span the target was observed, summed over targets. A target seen once is a
//!    baseline that adds nothing: a new pod's lifetime total is not a burst.
//! 3. Quantiles come from bucket increases over the window summed across targets, then the same
//!    interpolation as PromQL's `histogram_quantile`.
//! 4. Gauges take each target's latest value and combine them by sum, average or maximum.
//!
//! Zero traffic on healthy targets is a real 0 for every signal, latency included.

use std::fmt;

use crate::config::{Aggregation, Signal};
use crate::extract::{Hist, Value};
use crate::profiles::{Kind, Profile, Role};
use crate::promsource::{QueryPart, ZoneInputs};
use crate::window::Scrape;

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
    /// A Prometheus-compatible source answered, but not for this role and zone, or with NaN.
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
                write!(f, "the query for `{}` returned NaN for this zone", role.name())
            }
        }
    }
}

/// Evaluates `signal` over one zone's targets at `now`.
pub fn evaluate(
    profile: &Profile,
    signal: Signal,
    aggregation: Option<Aggregation>,
    rules: &Rules,
    now: f64,
    targets: &[TargetView<'_>],
) -> Result<f64, Unavailable> {
    let roles = Profile::roles_for(signal);
    if !profile.supports(signal) {
        return Err(Unavailable::Unsupported {
            profile: profile.name.clone(),
        });
    }
    let primary = roles[0];
    let total = targets.len();
    if total == 0 {
        return Err(Unavailable::NoTargets);
    }
    let needed = ((rules.min_target_ratio * total as f64).ceil() as usize).clamp(1, total);
    let fresh: Vec<&TargetView<'_>> = targets
        .iter()
        .filter(|t| {
            t.last_success
                .is_some_and(|at| now - at <= rules.stale_after)
        })
        .collect();
    if fresh.len() < needed {
        return Err(Unavailable::TooFewAnswered {
            answered: fresh.len(),
            total,
            needed,
            stale_after: rules.stale_after,
        });
    }
    let from = now - rules.window;
    let windows: Vec<&[Scrape]> = fresh
        .iter()
        .map(|t| in_window(t.samples, from))
        .filter(|w| {
            w.last()
                .is_some_and(|s| read(profile, &s.reading, primary).is_some())
        })
        .collect();
    if windows.len() < needed {
        return Err(Unavailable::NoSeries {
            role: primary,
            answered: fresh.len(),
            with_series: windows.len(),
            needed,
        });
    }
    match signal {
        Signal::RequestsPerSecond
        | Signal::PromptTokensPerSecond
        | Signal::GenerationTokensPerSecond => {
            rate(profile, primary, &windows).ok_or(Unavailable::WarmingUp)
        }
        Signal::ErrorRatio => {
            let requests = rate(profile, Role::Requests, &windows).ok_or(Unavailable::WarmingUp)?;
            // The error counter must be there too (or implied zero by the profile): a mapping
            // that matches no error series would otherwise read as a perfect 0 % forever.
            let with_errors = windows
                .iter()
                .filter(|w| {
                    w.last()
                        .is_some_and(|s| read(profile, &s.reading, Role::Errors).is_some())
                })
                .count();
            if with_errors < needed {
                return Err(Unavailable::NoSeries {
                    role: Role::Errors,
                    answered: fresh.len(),
                    with_series: with_errors,
                    needed,
                });
            }
            let errors = rate(profile, Role::Errors, &windows).ok_or(Unavailable::WarmingUp)?;
            Ok(if requests > 0.0 {
                (errors / requests).clamp(0.0, 1.0)
            } else {
                0.0
            })
        }
        Signal::Latency { .. } | Signal::TimeToFirstToken { .. } => {
            let q = signal.quantile().unwrap_or(0.95);
            let merged =
                merged_increase(profile, primary, &windows).ok_or(Unavailable::WarmingUp)?;
            Ok(histogram_quantile(q, &merged).unwrap_or(0.0))
        }
        Signal::Concurrency | Signal::QueueDepth | Signal::Running | Signal::KvCacheUtilization => {
            let latest: Vec<f64> = windows
                .iter()
                .filter_map(|w| w.last())
                .filter_map(|s| scalar(read(profile, &s.reading, primary)?))
                .collect();
            let agg = aggregation.unwrap_or_else(|| profile.aggregation(primary));
            Ok(agg.apply(&latest).max(0.0))
        }
    }
}

/// Evaluates `signal` from a Prometheus-compatible source's last poll: `zones` are the inputs of
/// the zones asked for (one zone, or all of them to combine). Rates were computed by the server;
/// the quantile, ratio and aggregation rules are the same as for direct scraping.
pub fn evaluate_polled(
    profile: &Profile,
    signal: Signal,
    aggregation: Option<Aggregation>,
    polled: &PolledView<'_>,
    zones: &[&ZoneInputs],
) -> Result<f64, Unavailable> {
    if !profile.supports(signal) {
        return Err(Unavailable::Unsupported {
            profile: profile.name.clone(),
        });
    }
    let fresh = polled
        .last_success
        .filter(|at| polled.now - at <= polled.stale_after);
    if fresh.is_none() {
        return Err(Unavailable::SourceStale {
            age: polled.last_success.map(|at| polled.now - at),
            error: polled.last_error.map(str::to_string),
        });
    }
    if zones.is_empty() {
        return Err(Unavailable::NoTargets);
    }
    let value = |role: Role, part: QueryPart| -> Result<f64, Unavailable> {
        let mut total = 0.0;
        for z in zones {
            let v = z
                .values
                .get(&(role, part))
                .copied()
                .ok_or(Unavailable::NoResult { role, nan: false })?;
            if v.is_nan() {
                return Err(Unavailable::NoResult { role, nan: true });
            }
            total = match part {
                QueryPart::Max => f64::max(total, v),
                _ => total + v,
            };
        }
        Ok(total)
    };
    let primary = Profile::roles_for(signal)[0];
    match signal {
        Signal::RequestsPerSecond
        | Signal::PromptTokensPerSecond
        | Signal::GenerationTokensPerSecond => Ok(value(primary, QueryPart::Value)?.max(0.0)),
        Signal::ErrorRatio => {
            let requests = value(Role::Requests, QueryPart::Value)?;
            let errors = value(Role::Errors, QueryPart::Value)?;
            Ok(if requests > 0.0 {
                (errors / requests).clamp(0.0, 1.0)
            } else {
                0.0
            })
        }
        Signal::Latency { .. } | Signal::TimeToFirstToken { .. } => {
            let mut per_zone = Vec::new();
            for z in zones {
                let b = z.buckets.get(&primary).ok_or(Unavailable::NoResult {
                    role: primary,
                    nan: false,
                })?;
                if b.iter().any(|(_, v)| v.is_nan()) {
                    return Err(Unavailable::NoResult {
                        role: primary,
                        nan: true,
                    });
                }
                per_zone.push(b.clone());
            }
            let q = signal.quantile().unwrap_or(0.95);
            Ok(histogram_quantile(q, &merge_buckets(&per_zone)).unwrap_or(0.0))
        }
        Signal::Concurrency | Signal::QueueDepth | Signal::Running | Signal::KvCacheUtilization => {
            let agg = aggregation.unwrap_or_else(|| profile.aggregation(primary));
            let v = match agg {
                Aggregation::Sum => value(primary, QueryPart::Value)?,
                Aggregation::Max => value(primary, QueryPart::Max)?,
                Aggregation::Avg => {
                    let count = value(primary, QueryPart::Count)?;
                    if count > 0.0 {
                        value(primary, QueryPart::Value)? / count
                    } else {
                        0.0
                    }
                }
            };
            Ok(v.max(0.0))
        }
    }
}

/// The freshness of a Prometheus-compatible source's last poll.
#[derive(Debug, Clone, Copy)]
pub struct PolledView<'a> {
    pub now: f64,
    pub stale_after: f64,
    pub last_success: Option<f64>,
    pub last_error: Option<&'a str>,
}

/// The samples at or after `from`, plus the last one before it, so a window starts at its edge.
fn in_window(samples: &[Scrape], from: f64) -> &[Scrape] {
    let start = samples.partition_point(|s| s.at < from);
    &samples[start.saturating_sub(1)..]
}

/// A role's value in a reading, with the profile's "absent means zero" rule applied.
fn read<'r>(profile: &Profile, reading: &'r [Value], role: Role) -> Option<Cow<'r>> {
    let (index, input) = profile.input(role)?;
    match reading.get(index)? {
        Value::Absent => {
            let anchor = input.zero_if_present?;
            let (ai, _) = profile.input(anchor)?;
            match reading.get(ai)? {
                Value::Absent => None,
                _ if role.kind() == Kind::Histogram => Some(Cow::EmptyHist),
                _ => Some(Cow::Zero),
            }
        }
        v => Some(Cow::Borrowed(v)),
    }
}

/// A value read from a reading, or the zero that stands for an absent-but-implied series.
#[derive(Debug, Clone, Copy)]
enum Cow<'r> {
    Borrowed(&'r Value),
    Zero,
    EmptyHist,
}

fn scalar(v: Cow<'_>) -> Option<f64> {
    match v {
        Cow::Borrowed(Value::Scalar(x)) => Some(*x),
        Cow::Zero => Some(0.0),
        _ => None,
    }
}

fn hist<'r>(v: Cow<'r>) -> Option<&'r Hist> {
    static EMPTY: Hist = Hist {
        buckets: Vec::new(),
        count: 0.0,
        sum: 0.0,
    };
    match v {
        Cow::Borrowed(Value::Histogram(h)) => Some(h),
        Cow::EmptyHist => Some(&EMPTY),
        _ => None,
    }
}

/// Increase of a counter between two readings; a decrease is a reset, so the new value is the increase.
pub fn counter_increase(prev: f64, cur: f64) -> f64 {
    if cur < prev {
        cur
    } else {
        cur - prev
    }
}

/// Sum over targets of (increase / observed span). `None` if no target was observed twice.
fn rate(profile: &Profile, role: Role, windows: &[&[Scrape]]) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for w in windows {
        let points: Vec<(f64, f64)> = w
            .iter()
            .filter_map(|s| Some((s.at, scalar(read(profile, &s.reading, role)?)?)))
            .collect();
        if let Some(r) = target_rate(&points) {
            total += r;
            any = true;
        }
    }
    any.then_some(total)
}

/// A counter's average rate over its observed points (time, value). `None` with fewer than two.
pub fn target_rate(points: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let span = last.0 - first.0;
    if points.len() < 2 || span <= 0.0 {
        return None;
    }
    let increase: f64 = points
        .windows(2)
        .map(|p| counter_increase(p[0].1, p[1].1))
        .sum();
    Some(increase / span)
}

/// Bucket increases over each target's window, merged across targets. `None` if no target has
/// two readings.
fn merged_increase(
    profile: &Profile,
    role: Role,
    windows: &[&[Scrape]],
) -> Option<Vec<(f64, f64)>> {
    let mut per_target = Vec::new();
    for w in windows {
        let hists: Vec<&Hist> = w
            .iter()
            .filter_map(|s| hist(read(profile, &s.reading, role)?))
            .collect();
        if hists.len() >= 2 {
            per_target.push(histogram_increase(&hists));
        }
    }
    (!per_target.is_empty()).then(|| merge_buckets(&per_target))
}

/// Per-bucket increase across consecutive cumulative histograms of one target. A drop in count,
/// or a change of bucket layout, is a reset: the new histogram is the increase.
pub fn histogram_increase(hists: &[&Hist]) -> Vec<(f64, f64)> {
    let mut acc: Vec<(f64, f64)> = Vec::new();
    for pair in hists.windows(2) {
        let (prev, cur) = (pair[0], pair[1]);
        let same_layout = prev.buckets.len() == cur.buckets.len()
            && prev
                .buckets
                .iter()
                .zip(&cur.buckets)
                .all(|(a, b)| a.0 == b.0);
        let reset = !same_layout
            || cur.count < prev.count
            || prev
                .buckets
                .iter()
                .zip(&cur.buckets)
                .any(|(a, b)| b.1 < a.1);
        for (i, &(le, c)) in cur.buckets.iter().enumerate() {
            let inc = if reset { c } else { c - prev.buckets[i].1 };
            match acc.iter_mut().find(|(b, _)| *b == le) {
                Some((_, total)) => *total += inc,
                None => acc.push((le, inc)),
            }
        }
    }
    acc.sort_by(|a, b| a.0.total_cmp(&b.0));
    acc
}

/// Sums cumulative histograms whose bucket bounds may differ. At each bound of the union, a
/// target contributes its count at its largest bound not above it: a lower bound on the truth, so
/// the sum stays cumulative. With identical layouts (the usual case) this is a plain per-bucket sum.
pub fn merge_buckets(hists: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut bounds: Vec<f64> = hists.iter().flatten().map(|(le, _)| *le).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
        .into_iter()
        .map(|le| {
            let count = hists
                .iter()
                .map(|h| {
                    h.iter()
                        .take_while(|(b, _)| *b <= le)
                        .last()
                        .map_or(0.0, |(_, c)| *c)
                })
                .sum();
            (le, count)
        })
        .collect()
}

/// PromQL's `histogram_quantile` over cumulative `(upper bound, count)` buckets sorted by bound.
/// `None` when the histogram is empty or has no `+Inf` bucket (PromQL's NaN).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if buckets.len() < 2 || buckets.last()?.0 != f64::INFINITY || !(0.0..=1.0).contains(&q) {
        return None;
    }
    // Counts must not decrease with the bound; PromQL repairs this the same way.
    let mut fixed: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    let mut max = 0.0f64;
    for &(le, c) in buckets {
        max = max.max(c);
        fixed.push((le, max));
    }
    let observations = fixed.last()?.1;
    if observations <= 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let b = fixed.iter().position(|(_, c)| *c >= rank)?;
    if b == fixed.len() - 1 {
        return Some(fixed[fixed.len() - 2].0);
    }
    if b == 0 && fixed[0].0 <= 0.0 {
        return Some(fixed[0].0);
    }
    let (mut start, end, mut count) = (0.0, fixed[b].0, fixed[b].1);
    if b > 0 {
        start = fixed[b - 1].0;
        count -= fixed[b - 1].1;
        rank -= fixed[b - 1].1;
    }
    if count <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests;
