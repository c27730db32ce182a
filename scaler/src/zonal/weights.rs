//! Zone traffic weights: which zone serves the requests that arrive in each zone.
//!
//! A request arrives in a zone (at the gateway pods there) and is served by some zone's Ready
//! replicas. [`decide`] turns what each zone has (Ready replicas, whether it can grow, what a
//! replica serves at target) and what arrives there into [`Weights`]: per arriving zone, the share
//! of its requests each zone serves (`flows`, for levers that route per source zone, like Istio),
//! and per zone its share of all requests (`shares`, for levers that split every request the same
//! way, like HTTPRoute weights).
//!
//! The rules, in order:
//! 1. **Locality first.** A zone with Ready replicas keeps what they serve at target: all its
//!    traffic when they serve it all (a hop across zones costs latency and money, so none without
//!    need), whatever other zones have spare.
//! 2. **A short zone** (not full, but its demand above what its Ready replicas serve at target,
//!    e.g. while new replicas load their model) sends the excess only into other zones' Ready
//!    headroom at target, served at once, and keeps what finds none. It is scaling for that
//!    excess, so the receivers do not ([`routed_demand`] does not spill it), and it takes the
//!    traffic back as its own replicas become Ready.
//! 3. **A full zone** (at its maximum replicas, or with Pods unschedulable: it cannot grow) keeps
//!    what its Ready replicas serve at target. The excess goes to the zones after it in the
//!    spillover order: first up to what their Ready replicas serve at target (served at once), then
//!    up to their maximum replicas (they scale for it: see [`routed_demand`]).
//! 4. **A zone with no Ready replica** sends all its traffic to zones that have one: a Service
//!    routes only to Ready Pods, so traffic left there fails. Starting replicas are not capacity
//!    for routing for the same reason.
//! 5. **When every zone is full** (no headroom left anywhere) what remains of full zones' and
//!    Ready-less zones' traffic is spread in proportion to Ready capacity: shares follow capacity,
//!    and every zone is loaded alike.
//!
//! Headroom goes first to zones with no Ready replica (their traffic fails), then to full zones
//! (they never serve their excess), then to short zones (their own replicas are on the way), each
//! group in spillover order.
//!
//! Demand is measured where requests arrive, not where they are served, so a zone whose traffic is
//! routed away still shows its own demand, wakes when that demand warrants a replica, and gets its
//! traffic back once it has Ready replicas.
//!
//! Weights change only by at least [`Policy::threshold`], no sooner than [`Policy::min_interval`]
//! after the last change, and by at most [`Policy::max_step`] per change, so gateways are not
//! reprogrammed on every flicker of demand and a zone is not handed a flood at once. One exception:
//! traffic to a zone that has lost its last Ready replica moves at once, since it fails there.

/// Demand or share closer to zero than this is none (floating-point dust).
const EPSILON: f64 = 1e-9;
/// Flows below this (half a percent) are not named in reasons.
const NAMED: f64 = 0.005;
/// Stand-in demand for a zone with no Ready replica and no demand, so that its row still says
/// where its next requests go (it takes no measurable headroom).
const NOMINAL: f64 = 1e-6;

/// HTTPRoute `backendRefs[].weight`: 0 to 1,000,000, relative; 0 sends nothing.
pub const HTTP_ROUTE_WEIGHT_TOTAL: u32 = 1_000_000;
/// Envoy Gateway `weightedZones[].weight` for a zone serving everything. Envoy refuses 0, so a
/// drained zone gets 1 (a thousandth of a full zone; Envoy also scales a locality's weight by its
/// healthy endpoints, so a zone with none gets nothing).
pub const ENVOY_ZONE_WEIGHT_SCALE: u32 = 1000;
/// Istio `distribute[].to`: integer weights of 1 to 100 per source locality, summing to 100.
pub const ISTIO_WEIGHT_TOTAL: u32 = 100;

/// Why a zone cannot grow: the same notion spillover uses.
pub use super::spillover::Full;

/// A full zone's reason for the reason text, with how long Pods have waited.
fn describe_full(full: &Full) -> String {
    match full {
        Full::AtMax => full.reason().into(),
        Full::Unschedulable { for_secs } => format!("{} for {}", full.reason(), human(*for_secs)),
    }
}

/// One zone as the weights see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneInput {
    pub name: String,
    /// Replicas that are Ready: the only ones traffic may be sent to.
    pub ready: u32,
    /// Replicas scheduled and loading: not capacity for routing (a request sent to a loading pod
    /// fails), only named in reasons.
    pub starting: u32,
    /// The zone's maximum replicas: how far it can grow for traffic moved to it.
    pub max_replicas: u32,
    /// Why the zone cannot grow, when it cannot.
    pub full: Option<Full>,
    /// Demand one replica serves at target: the CR's per-replica target of its demand signal
    /// (requests/s or requests in flight per replica), in the unit of `demand`.
    pub capacity_per_replica: f64,
    /// Demand arriving at the zone's gateway pods, whichever zone serves it; `None` when there is
    /// no fresh measurement (never read as 0: weights are then held, see [`decide`]). A zone where
    /// no requests arrive has `Some(0.0)`.
    pub demand: Option<f64>,
}

impl ZoneInput {
    fn capacity_valid(&self) -> bool {
        self.capacity_per_replica.is_finite() && self.capacity_per_replica > 0.0
    }

    fn demand_valid(&self) -> Option<f64> {
        self.demand.filter(|d| d.is_finite() && *d >= 0.0)
    }

    fn ready_capacity(&self) -> f64 {
        f64::from(self.ready) * self.capacity_per_replica
    }

    fn max_capacity(&self) -> f64 {
        f64::from(self.max_replicas.max(self.ready)) * self.capacity_per_replica
    }

    /// What the zone can serve now, for spreading traffic in proportion: Ready capacity, or Ready
    /// replicas when the capacity is not usable.
    fn serving_weight(&self) -> f64 {
        match (self.ready, self.capacity_valid()) {
            (0, _) => 0.0,
            (r, true) => f64::from(r) * self.capacity_per_replica,
            (r, false) => f64::from(r),
        }
    }
}

/// Limits on how weights change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Smallest change (of any flow or share, as a fraction) that is written.
    pub threshold: f64,
    /// Seconds that must pass after a change before the next.
    pub min_interval: f64,
    /// Largest change of any flow or share per update, as a fraction.
    pub max_step: f64,
}

impl Default for Policy {
    /// 5 points, 30 s, 25 points: a full move takes four steps (two minutes), well inside a GPU
    /// model's load time, and demand noise of a few percent writes nothing.
    fn default() -> Self {
        Policy {
            threshold: 0.05,
            min_interval: 30.0,
            max_step: 0.25,
        }
    }
}

/// Where traffic goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// The zones, in the order of the inputs.
    pub zones: Vec<String>,
    /// `flows[from][to]`: the share of the requests arriving in zone `from` that zone `to` serves.
    /// Each row sums to 1.
    pub flows: Vec<Vec<f64>>,
    /// `shares[to]`: the share of all requests zone `to` serves, given the demand when the weights
    /// were set. Sums to 1. Levers that split every request alike (HTTPRoute, Envoy Gateway
    /// `weightedZones`) can only set these, not `flows`.
    pub shares: Vec<f64>,
}

impl Weights {
    /// Every zone serves its own traffic, with equal shares.
    pub fn local(zones: &[String]) -> Weights {
        let n = zones.len();
        Weights {
            zones: zones.to_vec(),
            flows: (0..n).map(|i| unit(n, i)).collect(),
            shares: vec![1.0 / n.max(1) as f64; n],
        }
    }

    /// Weights from shares alone (what status keeps: `status.zones[].weight`): a zone with a
    /// share keeps its own traffic, one without sends it to the others by their shares.
    pub fn from_shares(zones: &[String], shares: &[f64]) -> Weights {
        let n = zones.len();
        let Some(shares) = normalized(shares.to_vec()).filter(|s| s.len() == n) else {
            return Weights::local(zones);
        };
        let flows = (0..n)
            .map(|i| {
                if shares[i] > EPSILON {
                    unit(n, i)
                } else {
                    shares.clone()
                }
            })
            .collect();
        Weights {
            zones: zones.to_vec(),
            flows,
            shares,
        }
    }

    pub fn index(&self, zone: &str) -> Option<usize> {
        self.zones.iter().position(|z| z == zone)
    }

    /// The share of all requests `zone` serves.
    pub fn share(&self, zone: &str) -> Option<f64> {
        self.index(zone).and_then(|i| self.shares.get(i).copied())
    }

    /// The share of the requests arriving in `zone` that other zones serve.
    pub fn moved_out(&self, zone: &str) -> Option<f64> {
        let i = self.index(zone)?;
        self.flows
            .get(i)
            .and_then(|row| row.get(i))
            .map(|s| 1.0 - s)
    }

    /// No request crosses zones.
    pub fn is_local(&self) -> bool {
        self.flows
            .iter()
            .enumerate()
            .all(|(i, row)| row.get(i).is_some_and(|s| *s >= 1.0 - EPSILON))
    }

    /// The largest difference of any flow or share; infinite when the zones differ.
    pub fn distance(&self, other: &Weights) -> f64 {
        if self.zones != other.zones || !self.well_formed() || !other.well_formed() {
            return f64::INFINITY;
        }
        let flows = self
            .flows
            .iter()
            .flatten()
            .zip(other.flows.iter().flatten())
            .map(|(a, b)| (a - b).abs());
        let shares = self
            .shares
            .iter()
            .zip(&other.shares)
            .map(|(a, b)| (a - b).abs());
        flows.chain(shares).fold(0.0, f64::max)
    }

    fn well_formed(&self) -> bool {
        let n = self.zones.len();
        self.shares.len() == n && self.flows.len() == n && self.flows.iter().all(|r| r.len() == n)
    }
}

/// The weights last written, and when (seconds on the caller's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub weights: Weights,
    pub at: f64,
}

/// What to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The weights to have in place: the last written ones when nothing changes.
    pub weights: Weights,
    /// Whether they differ from the last written (write them, with an Event and a log line).
    pub changed: bool,
    /// Whether they are the target (no bounded step or held change pending).
    pub settled: bool,
    /// Why, for people: the change (e.g. `zone-c full: PodsUnschedulable for 3m; moving 58 % to
    /// zone-a, zone-b`), or why nothing changes.
    pub reason: String,
}

/// The weights for `zones` now, from the last written ones (`None` at first, or when the zones
/// changed). `order` is the spillover order; zones missing from it follow in the order of `zones`.
///
/// When some zone has no fresh demand (or no usable capacity), the last weights are held: weights
/// computed from part of the picture could move traffic onto a zone whose load is unknown. With
/// nothing written yet, every zone keeps its own traffic. Either way a zone without Ready replicas
/// gets nothing, as that needs no demand to know.
pub fn decide(
    zones: &[ZoneInput],
    order: &[String],
    last: Option<&Written>,
    now: f64,
    policy: &Policy,
) -> Decision {
    let names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
    let last = last.filter(|l| l.weights.zones == names && l.weights.well_formed());
    let seq = sequence(order, zones);
    let missing: Vec<&str> = zones
        .iter()
        .filter(|z| z.demand_valid().is_none() || !z.capacity_valid())
        .map(|z| z.name.as_str())
        .collect();
    if !missing.is_empty() {
        let base = last
            .map(|l| l.weights.clone())
            .unwrap_or_else(|| neutral(zones));
        let weights = evacuate(&base, zones);
        let changed = last.is_none_or(|l| weights.distance(&l.weights) > EPSILON);
        let reason = format!(
            "no demand data from {}: holding weights; {}",
            missing.join(", "),
            describe(zones, &weights, None, &seq)
        );
        return Decision {
            weights,
            changed,
            settled: false,
            reason,
        };
    }
    let demand: Vec<f64> = zones
        .iter()
        .map(|z| z.demand_valid().unwrap_or(0.0))
        .collect();
    let target = allocate(zones, &demand, &seq);
    let Some(last) = last else {
        let reason = describe(zones, &target, Some(&target), &seq);
        return Decision {
            weights: target,
            changed: true,
            settled: true,
            reason,
        };
    };
    let threshold = policy.threshold.max(EPSILON);
    let delta = target.distance(&last.weights);
    let since = now - last.at;
    let (candidate, held) = if delta < threshold {
        (
            last.weights.clone(),
            format!(
                "the change of {:.1} points is under the threshold of {:.1}",
                delta * 100.0,
                threshold * 100.0
            ),
        )
    } else if since < policy.min_interval {
        (
            last.weights.clone(),
            format!(
                "the last change was {} ago, under the minimum interval of {}",
                human(since),
                human(policy.min_interval)
            ),
        )
    } else {
        (step(&last.weights, &target, policy.max_step), String::new())
    };
    let weights = evacuate(&candidate, zones);
    let changed = weights.distance(&last.weights) > EPSILON;
    let settled = weights.distance(&target) < threshold;
    let reason = if changed {
        let mut r = describe(zones, &weights, Some(&target), &seq);
        if !settled {
            r.push_str(" (step bounded; more follows)");
        }
        r
    } else if held.is_empty() {
        "weights unchanged".into()
    } else {
        format!("weights unchanged: {held}")
    };
    Decision {
        weights,
        changed,
        settled,
        reason,
    }
}

/// Demand per zone under some weights, in the demand signal's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ZoneDemand {
    /// Demand routed to the zone's replicas: its own kept plus what other zones send.
    pub served: f64,
    /// Demand moved in from other zones that the zone must scale for: the spillover to add to
    /// its own demand signal.
    pub spilled_in: f64,
    /// Of the zone's own demand, what moves to other zones (and counts there).
    pub spilled_out: f64,
}

/// How spillover of demand agrees with the weights: demand moved to a zone is demand routed to
/// it. Per zone of `weights` (in its order), from the demand of `zones`: what it serves, and what
/// it must scale for beyond its own demand.
///
/// Every zone keeps its own demand in its signal, including what it sends away: a full zone then
/// stays full instead of shrinking to what it keeps and taking its traffic back (flapping), and a
/// zone without Ready replicas, or short of them, scales for its own demand. Only a full zone's
/// traffic is spilled: what a zone that can grow sends away (while it has no Ready replica, while
/// its new replicas load, or while it takes its traffic back) the receivers carry on what they
/// have, rather than buying replicas that would be ready about when the traffic returns. Zones
/// without data contribute nothing.
pub fn routed_demand(weights: &Weights, zones: &[ZoneInput]) -> Vec<ZoneDemand> {
    let n = weights.zones.len();
    let mut out = vec![ZoneDemand::default(); n];
    if !weights.well_formed() {
        return out;
    }
    for (i, name) in weights.zones.iter().enumerate() {
        let Some(zone) = zones.iter().find(|z| &z.name == name) else {
            continue;
        };
        let demand = zone.demand_valid().unwrap_or(0.0);
        let spills = zone.full.is_some();
        for (j, share) in weights.flows[i].iter().enumerate() {
            let amount = demand * share;
            out[j].served += amount;
            if j != i && spills {
                out[j].spilled_in += amount;
                out[i].spilled_out += amount;
            }
        }
    }
    out
}

/// `shares` as integers summing to exactly `total`, by largest remainder (ties to the first zone).
/// Shares that are not positive get 0; when none is, `total` is split evenly.
pub fn apportion(shares: &[f64], total: u32) -> Vec<u32> {
    let n = shares.len();
    if n == 0 {
        return Vec::new();
    }
    let clean: Vec<f64> = shares
        .iter()
        .map(|s| if s.is_finite() && *s > 0.0 { *s } else { 0.0 })
        .collect();
    let sum: f64 = clean.iter().sum();
    let clean = if sum > 0.0 {
        clean.iter().map(|s| s / sum).collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let exact: Vec<f64> = clean.iter().map(|s| s * f64::from(total)).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let given: u64 = out.iter().map(|&v| u64::from(v)).sum();
    let mut rest = u64::from(total).saturating_sub(given);
    let mut by_remainder: Vec<usize> = (0..n).filter(|&i| clean[i] > 0.0).collect();
    by_remainder.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    while rest > 0 && !by_remainder.is_empty() {
        for &i in &by_remainder {
            if rest == 0 {
                break;
            }
            out[i] += 1;
            rest -= 1;
        }
    }
    out
}

/// HTTPRoute `backendRefs[].weight` per zone from `shares`: summing to 1,000,000, 0 for a zone
/// that serves nothing.
pub fn http_route_weights(shares: &[f64]) -> Vec<u32> {
    apportion(shares, HTTP_ROUTE_WEIGHT_TOTAL)
}

/// Envoy Gateway `weightedZones[].weight` per zone from `shares`: about 1000 in all, at least 1
/// (Envoy refuses 0; a zone left out would get 1 anyway).
pub fn envoy_zone_weights(shares: &[f64]) -> Vec<u32> {
    shares
        .iter()
        .map(|s| {
            let s = if s.is_finite() {
                s.clamp(0.0, 1.0)
            } else {
                0.0
            };
            ((s * f64::from(ENVOY_ZONE_WEIGHT_SCALE)).round() as u32).max(1)
        })
        .collect()
}

/// Istio `localityLbSetting.distribute` from `flows`: per source zone (in the order of `weights`),
/// the destination zones (as indices) with integer weights of 1 to 100 summing to exactly 100.
/// Zones with 0 are left out: Istio refuses 0, and an unlisted locality gets nothing.
pub fn istio_distribute(weights: &Weights) -> Vec<Vec<(usize, u32)>> {
    weights
        .flows
        .iter()
        .map(|row| {
            apportion(row, ISTIO_WEIGHT_TOTAL)
                .into_iter()
                .enumerate()
                .filter(|(_, w)| *w > 0)
                .collect()
        })
        .collect()
}

/// Whole percentages of `shares` summing to 100, for status and `kubectl get`.
pub fn percentages(shares: &[f64]) -> Vec<u32> {
    apportion(shares, 100)
}

/// The target weights, before hysteresis: the rules of the module documentation. `demand` is
/// valid for every zone; `seq` is the spillover sequence (indices into `zones`).
fn allocate(zones: &[ZoneInput], demand: &[f64], seq: &[usize]) -> Weights {
    let n = zones.len();
    let names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
    let total: f64 = demand.iter().sum();
    if !zones.iter().any(|z| z.ready > 0) {
        // Nowhere to send anything: each zone keeps its own, so whichever wakes first serves its
        // own demand, and the split follows demand.
        let mut w = Weights::local(&names);
        if total > EPSILON {
            w.shares = demand.iter().map(|d| d / total).collect();
        }
        return w;
    }
    let ready_cap: Vec<f64> = zones.iter().map(ZoneInput::ready_capacity).collect();
    let mut kept = vec![0.0; n];
    let mut left = vec![0.0; n];
    for (i, z) in zones.iter().enumerate() {
        let d = demand[i];
        if z.ready == 0 {
            left[i] = if d > EPSILON { d } else { NOMINAL };
        } else {
            // Full or short (growing): either way it keeps what its Ready replicas serve.
            kept[i] = d.min(ready_cap[i]);
            left[i] = d - kept[i];
        }
    }
    // A short zone (not full, demand above its Ready capacity) will serve its excess itself once
    // its replicas load: it only borrows Ready room, and keeps what finds none.
    let short: Vec<bool> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| z.ready > 0 && z.full.is_none() && left[i] > EPSILON)
        .collect();
    // Headroom served at once (Ready replicas at target, full zones included), then headroom a
    // zone reaches by growing to its maximum (not full zones: they cannot grow).
    let mut now_room: Vec<f64> = (0..n).map(|i| (ready_cap[i] - kept[i]).max(0.0)).collect();
    let mut growth_room: Vec<f64> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| match (z.ready, z.full) {
            (1.., None) => (z.max_capacity() - demand[i].max(ready_cap[i])).max(0.0),
            _ => 0.0,
        })
        .collect();
    // Zones without a Ready replica first (their traffic fails, a full zone's only queues), then
    // full zones (they never serve their excess), then short ones; each group in spillover order.
    let mut senders: Vec<usize> = seq.iter().copied().filter(|&i| left[i] > EPSILON).collect();
    senders.sort_by_key(|&i| (zones[i].ready > 0, short[i]));
    let mut moved = vec![vec![0.0; n]; n];
    for (pass, room) in [&mut now_room, &mut growth_room].into_iter().enumerate() {
        for &s in &senders {
            if pass > 0 && short[s] {
                // Never onto growth: the receivers would scale for traffic that returns about
                // when their replicas are Ready.
                kept[s] += left[s];
                left[s] = 0.0;
                continue;
            }
            for to in after(seq, s) {
                if left[s] <= 0.0 {
                    break;
                }
                let take = left[s].min(room[to]);
                if take > 0.0 {
                    room[to] -= take;
                    moved[s][to] += take;
                    left[s] -= take;
                }
            }
        }
    }
    // No headroom left anywhere: spread the rest by Ready capacity (the sender included, when it
    // has Ready replicas), so shares follow capacity.
    let ready_total: f64 = ready_cap.iter().sum();
    for &s in &senders {
        if left[s] > 0.0 && ready_total > 0.0 {
            for to in 0..n {
                moved[s][to] += left[s] * ready_cap[to] / ready_total;
            }
        }
    }
    let flows: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row = moved[i].clone();
            row[i] += kept[i];
            normalized(row).unwrap_or_else(|| unit(n, i))
        })
        .collect();
    let shares = if total > EPSILON {
        let served: Vec<f64> = (0..n)
            .map(|to| (0..n).map(|from| demand[from] * flows[from][to]).sum())
            .collect();
        normalized(served).unwrap_or_else(|| vec![1.0 / n as f64; n])
    } else {
        normalized(ready_cap).unwrap_or_else(|| vec![1.0 / n as f64; n])
    };
    Weights {
        zones: names,
        flows,
        shares,
    }
}

/// Weights without demand data: every zone keeps its own traffic; shares by what zones serve now.
fn neutral(zones: &[ZoneInput]) -> Weights {
    let names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
    let mut w = Weights::local(&names);
    if let Some(shares) = normalized(zones.iter().map(ZoneInput::serving_weight).collect()) {
        w.shares = shares;
    }
    w
}

/// `w` with whatever goes to zones without a Ready replica moved to zones with one: per row in
/// proportion to what the row already sends to them, else by what each serves now. Unchanged
/// when no zone has a Ready replica.
fn evacuate(w: &Weights, zones: &[ZoneInput]) -> Weights {
    let ready: Vec<bool> = w
        .zones
        .iter()
        .map(|name| zones.iter().any(|z| &z.name == name && z.ready > 0))
        .collect();
    let weight: Vec<f64> = w
        .zones
        .iter()
        .map(|name| {
            zones
                .iter()
                .find(|z| &z.name == name)
                .map_or(0.0, ZoneInput::serving_weight)
        })
        .collect();
    let Some(fallback) = normalized(weight) else {
        return w.clone();
    };
    let fix = |row: &Vec<f64>| -> Vec<f64> {
        let lost: f64 = row
            .iter()
            .zip(&ready)
            .filter(|(_, r)| !**r)
            .map(|(v, _)| *v)
            .sum();
        if lost <= EPSILON {
            return row.clone();
        }
        let row: Vec<f64> = row
            .iter()
            .zip(&ready)
            .map(|(v, r)| if *r { *v } else { 0.0 })
            .collect();
        normalized(row).unwrap_or_else(|| fallback.clone())
    };
    Weights {
        zones: w.zones.clone(),
        flows: w.flows.iter().map(fix).collect(),
        shares: fix(&w.shares),
    }
}

/// From `last` toward `target` by at most `max_step` on any flow or share. A convex combination,
/// so rows and shares still sum to 1.
fn step(last: &Weights, target: &Weights, max_step: f64) -> Weights {
    let limit = if max_step.is_finite() && max_step > 0.0 {
        max_step
    } else {
        1.0
    };
    let delta = target.distance(last);
    if delta.is_nan() || delta <= limit {
        return target.clone();
    }
    let a = limit / delta;
    let lerp = |x: &[f64], y: &[f64]| -> Vec<f64> {
        x.iter().zip(y).map(|(x, y)| x + a * (y - x)).collect()
    };
    Weights {
        zones: target.zones.clone(),
        flows: last
            .flows
            .iter()
            .zip(&target.flows)
            .map(|(x, y)| lerp(x, y))
            .collect(),
        shares: lerp(&last.shares, &target.shares),
    }
}

/// The written weights in words: each zone that sends traffic away, why, how much, and where.
fn describe(zones: &[ZoneInput], w: &Weights, target: Option<&Weights>, seq: &[usize]) -> String {
    let mut clauses = Vec::new();
    for (i, z) in zones.iter().enumerate() {
        let Some(row) = w.flows.get(i) else { continue };
        let out = 1.0 - row.get(i).copied().unwrap_or(1.0);
        if out < NAMED {
            continue;
        }
        let returning = target
            .and_then(|t| t.flows.get(i))
            .and_then(|r| r.get(i))
            .is_some_and(|t| *t > row[i] + EPSILON);
        let why = if let Some(full) = z.full {
            format!("{} full: {}", z.name, describe_full(&full))
        } else if z.ready == 0 && z.starting > 0 {
            format!("{} has no Ready replica ({} starting)", z.name, z.starting)
        } else if z.ready == 0 {
            format!("{} has no Ready replica", z.name)
        } else if returning {
            format!("{} takes its traffic back ({} Ready)", z.name, z.ready)
        } else if z
            .demand_valid()
            .is_some_and(|d| d > z.ready_capacity() + EPSILON)
        {
            format!(
                "{} above its Ready capacity ({} Ready, {} starting)",
                z.name, z.ready, z.starting
            )
        } else {
            format!("{} over capacity with every zone full", z.name)
        };
        let mut to: Vec<&str> = after(seq, i)
            .filter(|&j| row[j] >= NAMED)
            .map(|j| zones[j].name.as_str())
            .collect();
        if to.is_empty() {
            to = after(seq, i)
                .filter(|&j| row[j] > EPSILON)
                .map(|j| zones[j].name.as_str())
                .collect();
        }
        clauses.push(format!(
            "{why}; moving {:.0} % to {}",
            out * 100.0,
            to.join(", ")
        ));
    }
    if clauses.is_empty() {
        "every zone serves its own traffic".into()
    } else {
        clauses.join("; ")
    }
}

/// The spillover sequence: zones named in `order` first, in that order, then the others in the
/// order given.
fn sequence(order: &[String], zones: &[ZoneInput]) -> Vec<usize> {
    let mut seq: Vec<usize> = Vec::with_capacity(zones.len());
    for name in order {
        if let Some(i) = zones.iter().position(|z| &z.name == name) {
            if !seq.contains(&i) {
                seq.push(i);
            }
        }
    }
    for i in 0..zones.len() {
        if !seq.contains(&i) {
            seq.push(i);
        }
    }
    seq
}

/// The zones after `from` in the sequence, wrapping around, without `from`.
fn after(seq: &[usize], from: usize) -> impl Iterator<Item = usize> + '_ {
    let pos = seq.iter().position(|&i| i == from).unwrap_or(0);
    seq[pos + 1..]
        .iter()
        .chain(&seq[..pos])
        .copied()
        .filter(move |&i| i != from)
}

fn unit(n: usize, i: usize) -> Vec<f64> {
    (0..n).map(|j| if j == i { 1.0 } else { 0.0 }).collect()
}

/// `v` scaled to sum to 1, negatives and dust dropped; `None` when nothing is left.
fn normalized(v: Vec<f64>) -> Option<Vec<f64>> {
    let v: Vec<f64> = v
        .into_iter()
        .map(|x| if x.is_finite() && x > 0.0 { x } else { 0.0 })
        .collect();
    let sum: f64 = v.iter().sum();
    (sum > 0.0).then(|| v.iter().map(|x| x / sum).collect())
}

/// Seconds as people read them: `45s`, `3m`, `3m20s`, `1h5m`.
fn human(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests;
