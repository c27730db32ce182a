//! Reading a zone's scraped windows: which targets count, and each role's rate, histogram
//! increase or latest gauge value over them.

use super::math::{histogram_increase, merge_buckets, target_rate};
use super::{Rules, TargetView, Unavailable};
use crate::extract::{HistRef, Reading, ValueRef};
use crate::model::{Aggregation, Kind, Profile, Role};
use crate::window::Scrape;

/// The windows of the targets that count for one evaluation.
pub(super) struct Scraped<'a> {
    profile: &'a Profile,
    windows: Vec<&'a [Scrape]>,
    answered: usize,
    needed: usize,
}

impl<'a> Scraped<'a> {
    /// Rule 1: enough targets answered recently, with the series of `primary`.
    pub(super) fn select(
        profile: &'a Profile,
        primary: Role,
        rules: &Rules,
        now: f64,
        targets: &'a [TargetView<'a>],
    ) -> Result<Scraped<'a>, Unavailable> {
        let total = targets.len();
        if total == 0 {
            return Err(Unavailable::NoTargets);
        }
        let needed = ((rules.min_target_ratio * total as f64).ceil() as usize).clamp(1, total);
        let fresh: Vec<&TargetView<'_>> = targets
            .iter()
            // A target whose readings were refused (counters that go down on every scrape)
            // has no samples: it has not answered anything usable.
            .filter(|t| {
                !t.samples.is_empty()
                    && t.last_success
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
        Ok(Scraped {
            profile,
            windows,
            answered: fresh.len(),
            needed,
        })
    }

    /// A second role must be there too (or implied zero by the profile): a mapping that matches
    /// no error series would otherwise read as a perfect 0 % forever.
    pub(super) fn require(&self, role: Role) -> Result<(), Unavailable> {
        let with_series = self
            .windows
            .iter()
            .filter(|w| {
                w.last()
                    .is_some_and(|s| read(self.profile, &s.reading, role).is_some())
            })
            .count();
        if with_series < self.needed {
            return Err(Unavailable::NoSeries {
                role,
                answered: self.answered,
                with_series,
                needed: self.needed,
            });
        }
        Ok(())
    }

    /// Rule 2: per-target rates summed.
    pub(super) fn rate(&self, role: Role) -> Result<f64, Unavailable> {
        rate(self.profile, role, &self.windows).ok_or(Unavailable::WarmingUp)
    }

    /// Rule 3: bucket increases summed across targets.
    pub(super) fn buckets(&self, role: Role) -> Result<Vec<(f64, f64)>, Unavailable> {
        merged_increase(self.profile, role, &self.windows).ok_or(Unavailable::WarmingUp)
    }

    /// Rule 4: each target's latest value, combined.
    pub(super) fn gauge(&self, role: Role, agg: Aggregation) -> Result<f64, Unavailable> {
        let latest: Vec<f64> = self
            .windows
            .iter()
            .filter_map(|w| w.last())
            .filter_map(|s| scalar(read(self.profile, &s.reading, role)?))
            .collect();
        Ok(agg.apply(&latest))
    }
}

/// The samples at or after `from`, plus the last one before it, so a window starts at its edge.
fn in_window(samples: &[Scrape], from: f64) -> &[Scrape] {
    let start = samples.partition_point(|s| s.at < from);
    &samples[start.saturating_sub(1)..]
}

/// A role's value in a reading, with the profile's "absent means zero" rule applied. The rule
/// chains: Envoy's errors are zero where its request counter is, and its request counter (created
/// at the first request under deferred stat creation) is zero where the cluster's membership
/// gauge is. A cycle of anchors ends as absent.
fn read<'r>(profile: &Profile, reading: &'r Reading, role: Role) -> Option<Cow<'r>> {
    let (index, _) = profile.input(role)?;
    match reading.get(index)? {
        ValueRef::Absent => {
            let mut anchor = role;
            for _ in 0..profile.inputs.len() {
                anchor = profile.input(anchor)?.1.zero_if_present?;
                let (ai, _) = profile.input(anchor)?;
                match reading.get(ai)? {
                    ValueRef::Absent => continue,
                    _ if role.kind() == Kind::Histogram => return Some(Cow::EmptyHist),
                    _ => return Some(Cow::Zero),
                }
            }
            None
        }
        v => Some(Cow::Borrowed(v)),
    }
}

/// A value read from a reading, or the zero that stands for an absent-but-implied series.
#[derive(Debug, Clone, Copy)]
enum Cow<'r> {
    Borrowed(ValueRef<'r>),
    Zero,
    EmptyHist,
}

fn scalar(v: Cow<'_>) -> Option<f64> {
    match v {
        Cow::Borrowed(ValueRef::Scalar(x)) => Some(x),
        Cow::Zero => Some(0.0),
        _ => None,
    }
}

fn hist(v: Cow<'_>) -> Option<HistRef<'_>> {
    match v {
        Cow::Borrowed(ValueRef::Histogram(h)) => Some(h),
        Cow::EmptyHist => Some(HistRef::EMPTY),
        _ => None,
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

/// Bucket increases over each target's window, merged across targets. `None` if no target has
/// two readings.
fn merged_increase(
    profile: &Profile,
    role: Role,
    windows: &[&[Scrape]],
) -> Option<Vec<(f64, f64)>> {
    let mut per_target = Vec::new();
    for w in windows {
        let hists: Vec<HistRef<'_>> = w
            .iter()
            .filter_map(|s| hist(read(profile, &s.reading, role)?))
            .collect();
        if hists.len() >= 2 {
            per_target.push(histogram_increase(&hists));
        }
    }
    (!per_target.is_empty()).then(|| merge_buckets(&per_target))
}
