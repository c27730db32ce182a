//! The math of signals, on plain numbers: counter increases and rates, histogram increases,
//! merging and quantiles (PromQL's `histogram_quantile`). No windows, no profiles.

use crate::extract::HistRef;

/// Increase of a counter between two readings; a decrease is a reset, so the new value is the increase.
pub fn counter_increase(prev: f64, cur: f64) -> f64 {
    if cur < prev {
        cur
    } else {
        cur - prev
    }
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

/// Per-bucket increase across consecutive cumulative histograms of one target. A drop in count,
/// or a change of bucket layout, is a reset: the new histogram is the increase.
pub fn histogram_increase(hists: &[HistRef<'_>]) -> Vec<(f64, f64)> {
    let mut acc: Vec<(f64, f64)> = Vec::new();
    for pair in hists.windows(2) {
        let (prev, cur) = (&pair[0], &pair[1]);
        let (pb, cb) = (prev.bounds(), cur.bounds());
        let (pc, cc) = (prev.counts(), cur.counts());
        // Bounds shared by one allocation are equal without comparing them.
        let same_layout = prev.shares_bounds_with(cur)
            || (pb.len() == cb.len() && pb.iter().zip(cb).all(|(a, b)| a == b));
        let reset = !same_layout || cur.count < prev.count || pc.iter().zip(cc).any(|(a, b)| b < a);
        // Not a reset: the same layout, so `pc` has bucket `i`.
        let inc = |i: usize, c: f64| {
            if reset {
                c
            } else {
                c - pc.get(i).unwrap_or(0.0)
            }
        };
        // The usual case: the totals so far are on these very bounds, in this order, so each
        // bucket adds by position (the search below would make every pair cost buckets²).
        if acc.len() == cb.len() && acc.iter().zip(cb).all(|((b, _), le)| b == le) {
            for (i, ((_, total), c)) in acc.iter_mut().zip(cc).enumerate() {
                *total += inc(i, c);
            }
            continue;
        }
        for (i, (&le, c)) in cb.iter().zip(cc).enumerate() {
            match acc.iter_mut().find(|(b, _)| *b == le) {
                Some((_, total)) => *total += inc(i, c),
                None => acc.push((le, inc(i, c))),
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
