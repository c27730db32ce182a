//! Reading a Prometheus-compatible source's last poll: rates were computed by the server; the
//! zones asked for are combined here (summed, or the maximum for `max`).

use super::math::merge_buckets;
use super::{PolledView, Unavailable};
use crate::model::{Aggregation, Role};
use crate::window::polled::{QueryPart, ZoneInputs};

/// The polled inputs of the zones asked for, once the poll is known to be fresh.
pub(super) struct Polled<'a> {
    zones: &'a [&'a ZoneInputs],
}

impl<'a> Polled<'a> {
    /// The poll must be fresh, and some zone asked for.
    pub(super) fn select(
        view: &PolledView<'_>,
        zones: &'a [&'a ZoneInputs],
    ) -> Result<Polled<'a>, Unavailable> {
        let fresh = view
            .last_success
            .filter(|at| view.now - at <= view.stale_after);
        if fresh.is_none() {
            return Err(Unavailable::SourceStale {
                age: view.last_success.map(|at| view.now - at),
                error: view.last_error.map(str::to_string),
            });
        }
        if zones.is_empty() {
            return Err(Unavailable::NoTargets);
        }
        Ok(Polled { zones })
    }

    /// One query part summed (or maxed) over the zones; a zone without it, or with NaN or an
    /// infinity (a server's division by zero; +Inf and -Inf would also sum to NaN), makes the
    /// whole value unavailable, as a non-finite counter does when scraped.
    fn value(&self, role: Role, part: QueryPart) -> Result<f64, Unavailable> {
        let mut total = 0.0;
        for z in self.zones {
            let v = z
                .values
                .get(&(role, part))
                .copied()
                .ok_or(Unavailable::NoResult { role, nan: false })?;
            if !v.is_finite() {
                return Err(Unavailable::NoResult { role, nan: true });
            }
            total = match part {
                QueryPart::Max => f64::max(total, v),
                _ => total + v,
            };
        }
        Ok(total)
    }

    /// The server's rate; a negative one (a reset inside its range) is no demand.
    pub(super) fn rate(&self, role: Role) -> Result<f64, Unavailable> {
        Ok(self.value(role, QueryPart::Value)?.max(0.0))
    }

    pub(super) fn buckets(&self, role: Role) -> Result<Vec<(f64, f64)>, Unavailable> {
        let mut per_zone = Vec::new();
        for z in self.zones {
            let b = z
                .buckets
                .get(&role)
                .ok_or(Unavailable::NoResult { role, nan: false })?;
            if b.iter().any(|(_, v)| !v.is_finite()) {
                return Err(Unavailable::NoResult { role, nan: true });
            }
            per_zone.push(b.clone());
        }
        Ok(merge_buckets(&per_zone))
    }

    pub(super) fn gauge(&self, role: Role, agg: Aggregation) -> Result<f64, Unavailable> {
        match agg {
            Aggregation::Sum => self.value(role, QueryPart::Value),
            Aggregation::Max => self.value(role, QueryPart::Max),
            Aggregation::Avg => {
                let count = self.value(role, QueryPart::Count)?;
                if count > 0.0 {
                    Ok(self.value(role, QueryPart::Value)? / count)
                } else {
                    Ok(0.0)
                }
            }
        }
    }
}
