//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) and KEDA's scale-to-zero rules, as
//! pure functions over explicit time, so `redbridge demo` can show what a real cluster would do
//! with redbridge's answers without a cluster.
//!
//! Rules, in the order [`Autoscaler::step`] applies them (each mirrors the named upstream code):
//! 1. KEDA activation (`scale_executor.RequestScale`): when `active` is reported, an active target
//!    at 0 (or below its minimum while idle replicas are configured) goes to `max(1, min)` at
//!    once; an inactive one above its idle count goes to 0 (or the idle count) once `cooldown`
//!    seconds have passed since it was last active, at once if it never was.
//! 2. HPA disabled at zero (`reconcileAutoscaler`): a target at 0 replicas is left alone.
//! 3. Bounds first (`reconcileAutoscaler`): above `max` goes to `max`, below the HPA minimum
//!    (`max(1, min)`: KEDA never gives the HPA a 0 minimum) goes to that minimum.
//! 4. Per metric ([`replicas_for_metric`]): `AverageValue` wants `ceil(value / target)`, `Value`
//!    wants `ceil(ready * value / target)`; a usage ratio within `tolerance` of 1 keeps `current`.
//! 5. Several metrics: the largest proposal wins (`computeReplicasForMetrics`).
//! 6. Errors: all metrics failing keeps `current`; some failing forbids a scale-down but not a
//!    scale-up from the others.
//! 7. Stabilisation (`stabilizeRecommendationWithBehaviors`): the result may not go below the
//!    largest raw recommendation of the scale-down window nor above the smallest of the scale-up
//!    window; the first run seeds the history with `current` (`recordInitialRecommendation`).
//! 8. Rate policies (`convertDesiredReplicasWithBehaviorRate`): each policy allows a change
//!    relative to the count at the start of its period (events inside the period undone); `select`
//!    picks the largest or smallest allowance, `Disabled` forbids that direction.
//! 9. Clamp to `[max(1, min), max]` as part of 8; every applied change is remembered as an event.
//!
//! Time is `now`, seconds on any monotonic axis; nothing here reads a clock.

use std::fmt::Write as _;

use crate::model::{MetricType, Signal};

/// Kubernetes' default `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// KEDA's default `cooldownPeriod`, seconds.
pub const DEFAULT_COOLDOWN: f64 = 300.0;

/// KEDA's default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICAS: u32 = 100;

/// The target of one external metric, as KEDA writes it into the HPA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricTarget {
    /// Per-replica target: the metric value is a sum that `target` replicas-worth should share.
    AverageValue(f64),
    /// Whole-metric target: the value is compared to `target` as is.
    Value(f64),
}

/// How KEDA hands `signal` to the HPA with `target`: the metric type of its row in
/// [`crate::model::SIGNALS`] (see keda-external-scaler.md).
pub fn metric_target(signal: Signal, target: f64) -> MetricTarget {
    match signal.desc().metric_type {
        MetricType::AverageValue => MetricTarget::AverageValue(target),
        MetricType::Value => MetricTarget::Value(target),
    }
}

/// One metric read for one HPA evaluation: the value and its target, or why it could not be read.
pub type Reading = Result<(f64, MetricTarget), String>;

/// Which way a policy limits change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// At most `value` pods per period.
    Pods,
    /// At most `value` percent of the count at the start of the period.
    Percent,
}

/// One HPA scaling policy (`HPAScalingPolicy`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    /// Seconds of scale events the policy looks back over.
    pub period: f64,
}

/// How several policies combine (`selectPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change wins (Kubernetes' default).
    Max,
    /// The policy allowing the smallest change wins.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// Rules for one direction (`HPAScalingRules`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Seconds of raw recommendations to stabilise over.
    pub stabilization_window: f64,
    pub policies: Vec<Policy>,
    pub select: Select,
}

impl Rules {
    /// Kubernetes' scale-up default: no window, +100 % or +4 pods per 15 s, whichever is more.
    pub fn default_scale_up() -> Self {
        Rules {
            stabilization_window: 0.0,
            policies: vec![
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: 15.0,
                },
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period: 15.0,
                },
            ],
            select: Select::Max,
        }
    }

    /// Kubernetes' scale-down default: 300 s window, down to 0 % of the count per 15 s.
    pub fn default_scale_down() -> Self {
        Rules {
            stabilization_window: 300.0,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: 15.0,
            }],
            select: Select::Max,
        }
    }

    fn longest_period(&self) -> f64 {
        self.policies.iter().map(|p| p.period).fold(0.0, f64::max)
    }
}

/// The HPA `behavior` field.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            scale_up: Rules::default_scale_up(),
            scale_down: Rules::default_scale_down(),
        }
    }
}

/// KEDA's part of a `ScaledObject`: when the target may sit at zero (or idle).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activation {
    /// Seconds inactive, since last active, before scaling to zero (`cooldownPeriod`).
    pub cooldown: f64,
    /// `minReplicaCount`; 0 allows scale to zero, and the HPA then gets a minimum of 1.
    pub min_replicas: u32,
    /// `idleReplicaCount`: the count while inactive, when set (KEDA only supports 0 here).
    pub idle_replicas: Option<u32>,
}

impl Default for Activation {
    fn default() -> Self {
        Activation {
            cooldown: DEFAULT_COOLDOWN,
            min_replicas: 0,
            idle_replicas: None,
        }
    }
}

/// Everything that configures one scale target.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    pub max_replicas: u32,
    /// Usage ratios within this distance of 1 do not rescale.
    pub tolerance: f64,
    pub behavior: Behavior,
    pub activation: Activation,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            max_replicas: DEFAULT_MAX_REPLICAS,
            tolerance: DEFAULT_TOLERANCE,
            behavior: Behavior::default(),
            activation: Activation::default(),
        }
    }
}

/// What one step decided: the replica count to apply and a one-line why, starting with `keda:`
/// or `hpa:` for whichever controller decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub desired: u32,
    pub reason: String,
}

/// Kubernetes compares quantities in milli-units; doing the same keeps `1.1 / 0.1` at 11, not
/// 11.000000000000002 (which would ceil to 12).
fn milli(v: f64) -> f64 {
    (v * 1000.0).round()
}

fn ceil_to_u32(v: f64) -> u32 {
    let c = v.ceil();
    if c <= 0.0 {
        0
    } else if c >= u32::MAX as f64 {
        u32::MAX
    } else {
        c as u32
    }
}

/// The replica count one metric asks for (`GetExternalPerPodMetricReplicas` for `AverageValue`,
/// `GetExternalMetricReplicas` for `Value`), or why the reading is unusable (non-finite or
/// negative value, target not above 0).
///
/// `AverageValue` compares `value / (target * ready)` to 1 and wants `ceil(value / target)`; with
/// no ready replica it always wants `ceil(value / target)`. `Value` compares `value / target` to
/// 1 and wants `ceil(ready * value / target)`, or `ceil(value / target)` when `current` is 0.
/// Within `tolerance` both keep `current`.
pub fn replicas_for_metric(
    value: f64,
    target: MetricTarget,
    ready: u32,
    current: u32,
    tolerance: f64,
) -> Result<u32, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "metric value {value} is not a finite non-negative number"
        ));
    }
    let (target_value, per_replica) = match target {
        MetricTarget::AverageValue(t) => (t, true),
        MetricTarget::Value(t) => (t, false),
    };
    if !target_value.is_finite() || milli(target_value) <= 0.0 {
        return Err(format!("metric target {target_value} is not above 0"));
    }
    let usage = milli(value);
    let target_m = milli(target_value);
    if per_replica {
        if ready == 0 {
            return Ok(ceil_to_u32(usage / target_m));
        }
        let ratio = usage / (target_m * f64::from(ready));
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(current);
        }
        Ok(ceil_to_u32(usage / target_m))
    } else {
        let ratio = usage / target_m;
        if current == 0 {
            return Ok(ceil_to_u32(ratio));
        }
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(current);
        }
        Ok(ceil_to_u32(ratio * f64::from(ready)))
    }
}

/// The most replicas the scale-up rules allow now (`calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(
    current: i64,
    now: f64,
    ups: &[(f64, u32)],
    downs: &[(f64, u32)],
    rules: &Rules,
) -> i64 {
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start =
            current - change_in_period(now, p.period, ups) + change_in_period(now, p.period, downs);
        let proposed = match p.kind {
            PolicyKind::Pods => start + i64::from(p.value),
            PolicyKind::Percent => {
                (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
            }
        };
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.min(proposed),
            (Some(r), _) => r.max(proposed),
        });
    }
    result.unwrap_or(current)
}

/// The fewest replicas the scale-down rules allow now (`calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(
    current: i64,
    now: f64,
    ups: &[(f64, u32)],
    downs: &[(f64, u32)],
    rules: &Rules,
) -> i64 {
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start =
            current - change_in_period(now, p.period, ups) + change_in_period(now, p.period, downs);
        let proposed = match p.kind {
            PolicyKind::Pods => start - i64::from(p.value),
            // Go's int32(float64) truncates toward zero.
            PolicyKind::Percent => {
                (start as f64 * (1.0 - f64::from(p.value) / 100.0)).trunc() as i64
            }
        };
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.max(proposed),
            (Some(r), _) => r.min(proposed),
        });
    }
    result.unwrap_or(current)
}

/// Replicas changed by events strictly inside `(now - period, now]` (`getReplicasChangePerPeriod`).
fn change_in_period(now: f64, period: f64, events: &[(f64, u32)]) -> i64 {
    let cutoff = now - period;
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, n)| i64::from(*n))
        .sum()
}

fn to_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

/// The HPA and KEDA state for one scale target; feed it every evaluation with [`Autoscaler::step`].
#[derive(Clone, Debug)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    /// Raw (pre-stabilisation) recommendations, `(time, replicas)`.
    recommendations: Vec<(f64, u32)>,
    seeded: bool,
    /// Applied HPA changes, `(time, replicas added or removed)`.
    scale_up_events: Vec<(f64, u32)>,
    scale_down_events: Vec<(f64, u32)>,
    last_active: Option<f64>,
}

impl Autoscaler {
    pub fn new(config: AutoscalerConfig) -> Self {
        Autoscaler {
            config,
            recommendations: Vec::new(),
            seeded: false,
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
            last_active: None,
        }
    }

    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// When KEDA last saw the target active, if ever.
    pub fn last_active(&self) -> Option<f64> {
        self.last_active
    }

    /// The minimum the HPA enforces: KEDA writes `max(1, minReplicaCount)` into the HPA.
    pub fn hpa_min_replicas(&self) -> u32 {
        self.config.activation.min_replicas.max(1)
    }

    /// One evaluation at `now`: `ready` replicas serve, `current` is the replica count last
    /// applied, `readings` are this evaluation's metrics, and `active` is KEDA's IsActive answer
    /// when it polled (or a pushed activation), `None` when only the HPA runs. The caller is
    /// expected to apply `desired`; a change is remembered as a scale event for the policies.
    pub fn step(
        &mut self,
        now: f64,
        ready: u32,
        current: u32,
        readings: &[Reading],
        active: Option<bool>,
    ) -> Decision {
        if let Some(active) = active {
            if let Some(decision) = self.keda(now, current, active) {
                return decision;
            }
        }
        self.hpa(now, ready, current, readings)
    }

    /// KEDA's `RequestScale`: only the 0 <-> N transitions; returns `None` to let the HPA run.
    fn keda(&mut self, now: f64, current: u32, active: bool) -> Option<Decision> {
        let act = self.config.activation;
        if active {
            self.last_active = Some(now);
            let below_idle_min = act.idle_replicas.is_some() && current < act.min_replicas;
            if current == 0 || below_idle_min {
                let to = act.min_replicas.max(1).min(self.config.max_replicas.max(1));
                return Some(Decision {
                    desired: to,
                    reason: format!("keda: active, scaling from {current} to {to}"),
                });
            }
            return None;
        }
        let idle = act.idle_replicas.unwrap_or(0);
        let may_idle = match act.idle_replicas {
            Some(idle) => current > idle,
            None => current > 0 && act.min_replicas == 0,
        };
        if !may_idle {
            return None;
        }
        match self.last_active {
            // KEDA compares `lastActive + cooldown` strictly before now.
            Some(last) if last + act.cooldown >= now => None,
            Some(last) => Some(Decision {
                desired: idle,
                reason: format!(
                    "keda: inactive for {:.0}s (cooldown {:.0}s), scaling from {current} to {idle}",
                    now - last,
                    act.cooldown
                ),
            }),
            None => Some(Decision {
                desired: idle,
                reason: format!(
                    "keda: inactive and never active, scaling from {current} to {idle}"
                ),
            }),
        }
    }

    fn hpa(&mut self, now: f64, ready: u32, current: u32, readings: &[Reading]) -> Decision {
        if current == 0 {
            return Decision {
                desired: 0,
                reason: "hpa: target at 0 replicas, scaling disabled until KEDA activates it"
                    .into(),
            };
        }
        if !self.seeded {
            self.seeded = true;
            self.recommendations.push((now, current));
        }
        let min = self.hpa_min_replicas();
        let max = self.config.max_replicas.max(min);
        if current > max {
            return self.apply(
                now,
                current,
                max,
                format!("hpa: {current} above maximum, scaling to {max}"),
            );
        }
        if current < min {
            return self.apply(
                now,
                current,
                min,
                format!("hpa: {current} below minimum, scaling to {min}"),
            );
        }

        let mut why = String::from("hpa:");
        let mut proposal: Option<u32> = None;
        let mut failed = 0usize;
        for (i, reading) in readings.iter().enumerate() {
            let wanted = match reading {
                Ok((value, target)) => {
                    replicas_for_metric(*value, *target, ready, current, self.config.tolerance)
                }
                Err(e) => Err(e.clone()),
            };
            match wanted {
                Ok(n) => {
                    let _ = write!(why, " m{i}={n}");
                    proposal = Some(proposal.map_or(n, |p| p.max(n)));
                }
                Err(e) => {
                    failed += 1;
                    let _ = write!(why, " m{i}=error({e})");
                }
            }
        }
        let raw = match proposal {
            None => {
                let _ = write!(why, "; no metric readable, holding {current}");
                return Decision {
                    desired: current,
                    reason: why,
                };
            }
            Some(raw) if failed > 0 && raw < current => {
                let _ = write!(
                    why,
                    "; a metric failed, not scaling down, holding {current}"
                );
                return Decision {
                    desired: current,
                    reason: why,
                };
            }
            Some(raw) => raw,
        };

        let stabilized = self.stabilize(now, current, raw);
        if stabilized != raw {
            let _ = write!(why, "; stabilised {raw}->{stabilized}");
        }
        let (desired, limit) = self.rate_limit(now, current, stabilized, min, max);
        if let Some(limit) = limit {
            let _ = write!(why, "; {limit} {desired}");
        }
        if desired == current {
            let _ = write!(why, "; keeping {current}");
        } else {
            let _ = write!(why, "; scaling {current}->{desired}");
        }
        self.apply(now, current, desired, why)
    }

    /// Records the raw recommendation and bounds it by the windows' extremes.
    fn stabilize(&mut self, now: f64, current: u32, raw: u32) -> u32 {
        let up_cutoff = now - self.config.behavior.scale_up.stabilization_window;
        let down_cutoff = now - self.config.behavior.scale_down.stabilization_window;
        let mut up = raw;
        let mut down = raw;
        for &(t, rec) in &self.recommendations {
            if t > up_cutoff {
                up = up.min(rec);
            }
            if t > down_cutoff {
                down = down.max(rec);
            }
        }
        // Samples older than both windows can never matter again.
        let oldest = up_cutoff.min(down_cutoff);
        self.recommendations.retain(|(t, _)| *t > oldest);
        self.recommendations.push((now, raw));
        current.max(up).min(down)
    }

    /// Applies the rate policies and `[min, max]`; returns the limit's name when it bit.
    fn rate_limit(
        &self,
        now: f64,
        current: u32,
        desired: u32,
        min: u32,
        max: u32,
    ) -> (u32, Option<&'static str>) {
        let b = &self.config.behavior;
        let cur = i64::from(current);
        if desired > current {
            let limit = if b.scale_up.select == Select::Disabled {
                cur
            } else {
                scale_up_limit(
                    cur,
                    now,
                    &self.scale_up_events,
                    &self.scale_down_events,
                    &b.scale_up,
                )
                .max(cur)
            };
            let (allowed, name) = if i64::from(max) > limit {
                (limit, "scale-up policy allows")
            } else {
                (i64::from(max), "maximum")
            };
            if i64::from(desired) > allowed {
                return (to_u32(allowed), Some(name));
            }
        } else if desired < current {
            let limit = if b.scale_down.select == Select::Disabled {
                cur
            } else {
                scale_down_limit(
                    cur,
                    now,
                    &self.scale_up_events,
                    &self.scale_down_events,
                    &b.scale_down,
                )
                .min(cur)
            };
            let (allowed, name) = if i64::from(min) < limit {
                (limit, "scale-down policy allows")
            } else {
                (i64::from(min), "minimum")
            };
            if i64::from(desired) < allowed {
                return (to_u32(allowed), Some(name));
            }
        }
        (desired, None)
    }

    /// Remembers an applied change as a scale event (`storeScaleEvent`) and returns the decision.
    fn apply(&mut self, now: f64, current: u32, desired: u32, reason: String) -> Decision {
        if desired > current {
            let keep = now - self.config.behavior.scale_up.longest_period();
            self.scale_up_events.retain(|(t, _)| *t > keep);
            self.scale_up_events.push((now, desired - current));
        } else if desired < current {
            let keep = now - self.config.behavior.scale_down.longest_period();
            self.scale_down_events.retain(|(t, _)| *t > keep);
            self.scale_down_events.push((now, current - desired));
        }
        Decision { desired, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avg(value: f64, target: f64) -> Reading {
        Ok((value, MetricTarget::AverageValue(target)))
    }

    fn config(min: u32, max: u32) -> AutoscalerConfig {
        AutoscalerConfig {
            max_replicas: max,
            activation: Activation {
                min_replicas: min,
                ..Activation::default()
            },
            ..AutoscalerConfig::default()
        }
    }

    #[test]
    fn per_metric_table() {
        use MetricTarget::{AverageValue as A, Value as V};
        // (value, target, ready, current, expected)
        let cases: &[(f64, MetricTarget, u32, u32, u32)] = &[
            (43.0, A(10.0), 4, 4, 4), // ratio 1.075: within 10 %, keep
            (45.0, A(10.0), 4, 4, 5), // ratio 1.125: ceil(4.5)
            (35.0, A(10.0), 4, 4, 4), // ratio 0.875: outside, ceil(3.5) = 4
            (30.0, A(10.0), 4, 4, 3), // ratio 0.75: ceil(3.0)
            (36.0, A(10.0), 4, 5, 5), // ratio 0.9 exactly: tolerance is inclusive, keep current
            (15.0, A(10.0), 4, 4, 2), // AverageValue ignores ready for the count
            (15.0, V(10.0), 4, 4, 6), // Value: ceil(4 * 1.5)
            (10.5, V(10.0), 4, 4, 4), // ratio 1.05: keep
            (5.0, V(10.0), 3, 6, 2),  // Value scales ready, not current: ceil(3 * 0.5)
            (7.0, A(2.0), 0, 3, 4),   // no ready replica: ceil(7 / 2)
            (0.0, A(2.0), 0, 3, 0),   // no ready replica and no load
            (25.0, V(10.0), 0, 0, 3), // Value at current 0: ceil(ratio)
            (1.1, A(0.1), 5, 5, 11),  // milli arithmetic: exactly 11, not 12
            (0.0, A(1.0), 3, 3, 0),   // no load: 0 (the minimum applies later)
        ];
        for &(value, target, ready, current, want) in cases {
            let got = replicas_for_metric(value, target, ready, current, DEFAULT_TOLERANCE);
            assert_eq!(
                got,
                Ok(want),
                "{value} {target:?} ready={ready} current={current}"
            );
        }
        assert!(replicas_for_metric(f64::NAN, A(1.0), 1, 1, 0.1).is_err());
        assert!(replicas_for_metric(-1.0, A(1.0), 1, 1, 0.1).is_err());
        assert!(replicas_for_metric(1.0, V(0.0), 1, 1, 0.1).is_err());
        assert!(replicas_for_metric(1.0, A(0.0001), 1, 1, 0.1).is_err());
    }

    #[test]
    fn tolerance_is_configurable_and_inclusive() {
        let avg = MetricTarget::AverageValue(10.0);
        assert_eq!(replicas_for_metric(43.0, avg, 4, 4, 0.0), Ok(5));
        // Ratio 0.75 is exactly 0.25 from 1: kept, as Kubernetes' `<= tolerance` does.
        assert_eq!(replicas_for_metric(30.0, avg, 4, 4, 0.25), Ok(4));
        assert_eq!(replicas_for_metric(30.0, avg, 4, 4, 0.24), Ok(3));
    }

    #[test]
    fn several_metrics_take_the_max() {
        let mut a = Autoscaler::new(config(1, 100));
        let d = a.step(
            0.0,
            2,
            2,
            &[avg(4.0, 2.0), avg(10.0, 2.0), avg(1.0, 2.0)],
            None,
        );
        // proposals 2 (within tolerance), 5, 1: max 5; scale-up limit max(4, 6) = 6
        assert_eq!(d.desired, 5, "{}", d.reason);
        assert!(d.reason.starts_with("hpa:"), "{}", d.reason);
    }

    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let mut a = Autoscaler::new(config(1, 100));
        // Load worth 2 replicas while 5 run, evaluated every 15 s: the first run seeds the window
        // with 5, so nothing goes down until that sample leaves the 300 s window.
        for i in 0..20 {
            let t = f64::from(i) * 15.0;
            let d = a.step(t, 5, 5, &[avg(4.0, 2.0)], None);
            assert_eq!(d.desired, 5, "t={t}: {}", d.reason);
        }
        let d = a.step(300.0, 5, 5, &[avg(4.0, 2.0)], None);
        assert_eq!(d.desired, 2, "{}", d.reason);
    }

    #[test]
    fn no_flapping_down_within_the_window() {
        let mut a = Autoscaler::new(config(1, 100));
        assert_eq!(a.step(0.0, 2, 2, &[avg(8.0, 2.0)], None).desired, 4);
        // Load drops right after the scale-up: the 4 recommended at t=0 holds for 300 s.
        for t in [15.0, 60.0, 150.0, 299.0] {
            let d = a.step(t, 4, 4, &[avg(2.0, 2.0)], None);
            assert_eq!(d.desired, 4, "t={t}: {}", d.reason);
        }
        // A brief spike inside the window is followed at once (no scale-up window) ...
        assert_eq!(a.step(299.5, 4, 4, &[avg(12.0, 2.0)], None).desired, 6);
        // ... and then holds the count for its own 300 s.
        assert_eq!(a.step(400.0, 6, 6, &[avg(2.0, 2.0)], None).desired, 6);
        assert_eq!(a.step(600.0, 6, 6, &[avg(2.0, 2.0)], None).desired, 1);
    }

    #[test]
    fn scale_up_policies_limit_the_rate() {
        // Only "4 pods per 15 s".
        let mut cfg = config(1, 100);
        cfg.behavior.scale_up.policies = vec![Policy {
            kind: PolicyKind::Pods,
            value: 4,
            period: 15.0,
        }];
        let mut a = Autoscaler::new(cfg);
        let load = [avg(40.0, 2.0)]; // wants 20
        let d = a.step(0.0, 1, 1, &load, None);
        assert_eq!(d.desired, 5, "{}", d.reason);
        assert!(d.reason.contains("scale-up policy"), "{}", d.reason);
        // Same period: the 4 already added count against it.
        assert_eq!(a.step(5.0, 1, 5, &load, None).desired, 5);
        assert_eq!(a.step(14.9, 1, 5, &load, None).desired, 5);
        // The event at t=0 leaves the period at t=15 (strictly after the cutoff counts).
        assert_eq!(a.step(15.0, 5, 5, &load, None).desired, 9);
        assert_eq!(a.step(30.0, 9, 9, &load, None).desired, 13);
    }

    #[test]
    fn default_scale_up_takes_the_larger_policy() {
        let mut a = Autoscaler::new(config(1, 100));
        let load = [avg(100.0, 1.0)];
        assert_eq!(a.step(0.0, 2, 2, &load, None).desired, 6); // max(2*2, 2+4)
        assert_eq!(a.step(15.0, 6, 6, &load, None).desired, 12); // max(6*2, 6+4)
        assert_eq!(a.step(30.0, 12, 12, &load, None).desired, 24); // max(24, 16)
    }

    #[test]
    fn select_min_and_disabled() {
        let mut cfg = config(1, 100);
        cfg.behavior.scale_up.select = Select::Min;
        let mut a = Autoscaler::new(cfg);
        assert_eq!(a.step(0.0, 2, 2, &[avg(100.0, 1.0)], None).desired, 4); // min(4, 6)

        let mut cfg = config(1, 100);
        cfg.behavior.scale_down.select = Select::Disabled;
        cfg.behavior.scale_down.stabilization_window = 0.0;
        let mut a = Autoscaler::new(cfg);
        assert_eq!(a.step(0.0, 8, 8, &[avg(1.0, 1.0)], None).desired, 8);
    }

    #[test]
    fn scale_down_policy_with_pods() {
        let mut cfg = config(1, 100);
        cfg.behavior.scale_down = Rules {
            stabilization_window: 0.0,
            policies: vec![Policy {
                kind: PolicyKind::Pods,
                value: 2,
                period: 60.0,
            }],
            select: Select::Max,
        };
        let mut a = Autoscaler::new(cfg);
        let load = [avg(1.0, 1.0)];
        assert_eq!(a.step(0.0, 10, 10, &load, None).desired, 8);
        assert_eq!(a.step(30.0, 8, 8, &load, None).desired, 8);
        assert_eq!(a.step(61.0, 8, 8, &load, None).desired, 6);
    }

    #[test]
    fn bounds_are_enforced() {
        let mut a = Autoscaler::new(config(2, 5));
        assert_eq!(a.step(0.0, 7, 7, &[avg(1.0, 1.0)], None).desired, 5);
        assert_eq!(a.step(1.0, 1, 1, &[avg(1.0, 1.0)], None).desired, 2);
        assert_eq!(a.step(2.0, 3, 3, &[avg(100.0, 1.0)], None).desired, 5);
        // min 0 in KEDA still gives the HPA a floor of 1.
        let mut cfg = config(0, 5);
        cfg.behavior.scale_down.stabilization_window = 0.0;
        let mut a = Autoscaler::new(cfg);
        assert_eq!(a.hpa_min_replicas(), 1);
        assert_eq!(a.step(0.0, 3, 3, &[avg(0.0, 1.0)], None).desired, 1);
    }

    #[test]
    fn cooldown_scales_to_zero() {
        let mut cfg = config(0, 10);
        cfg.activation.cooldown = 300.0;
        let mut a = Autoscaler::new(cfg);
        let idle = [avg(0.0, 1.0)];
        assert_eq!(a.step(0.0, 3, 3, &[avg(3.0, 1.0)], Some(true)).desired, 3);
        assert_eq!(a.last_active(), Some(0.0));
        // Inactive from t=10: the HPA keeps running (its window holds 3) until the cooldown ends.
        for t in [10.0, 150.0, 290.0] {
            let d = a.step(t, 3, 3, &idle, Some(false));
            assert_eq!(d.desired, 3, "t={t}: {}", d.reason);
            assert!(d.reason.starts_with("hpa:"), "{}", d.reason);
        }
        // At exactly last active + cooldown KEDA still waits; the HPA's own window has passed.
        let d = a.step(300.0, 3, 3, &idle, Some(false));
        assert_eq!(d.desired, 1, "{}", d.reason);
        assert!(d.reason.starts_with("hpa:"), "{}", d.reason);
        let d = a.step(300.5, 1, 1, &idle, Some(false));
        assert_eq!(d.desired, 0, "{}", d.reason);
        assert!(d.reason.starts_with("keda:"), "{}", d.reason);
        // At zero the HPA does nothing, whatever the metrics say.
        let d = a.step(301.0, 0, 0, &[avg(50.0, 1.0)], None);
        assert_eq!(d.desired, 0, "{}", d.reason);
    }

    #[test]
    fn never_active_scales_to_zero_at_once() {
        let mut a = Autoscaler::new(config(0, 10));
        assert_eq!(a.step(0.0, 2, 2, &[], Some(false)).desired, 0);
    }

    #[test]
    fn activity_restarts_the_cooldown() {
        let mut cfg = config(0, 10);
        cfg.activation.cooldown = 15.0;
        let mut a = Autoscaler::new(cfg);
        let load = [avg(1.0, 1.0)];
        a.step(0.0, 1, 1, &load, Some(true));
        a.step(10.0, 1, 1, &load, Some(true));
        assert_eq!(a.step(20.0, 1, 1, &load, Some(false)).desired, 1);
        assert_eq!(a.step(25.5, 1, 1, &load, Some(false)).desired, 0);
    }

    #[test]
    fn activation_scales_from_zero() {
        let mut a = Autoscaler::new(config(0, 10));
        let d = a.step(0.0, 0, 0, &[avg(50.0, 1.0)], Some(true));
        assert_eq!(d.desired, 1, "{}", d.reason);
        assert!(d.reason.starts_with("keda:"), "{}", d.reason);
        // Inactive at zero stays at zero.
        let mut a = Autoscaler::new(config(0, 10));
        assert_eq!(a.step(0.0, 0, 0, &[], Some(false)).desired, 0);
        // A minimum above 1 is where activation lands.
        let mut a = Autoscaler::new(config(3, 10));
        assert_eq!(a.step(0.0, 0, 0, &[], Some(true)).desired, 3);
        // Then the HPA takes over from the metrics.
        let mut a = Autoscaler::new(config(0, 10));
        a.step(0.0, 0, 0, &[], Some(true));
        assert_eq!(a.step(15.0, 1, 1, &[avg(3.0, 1.0)], Some(true)).desired, 3);
    }

    #[test]
    fn idle_replicas() {
        let mut cfg = config(2, 10);
        cfg.activation.idle_replicas = Some(0);
        cfg.activation.cooldown = 30.0;
        let mut a = Autoscaler::new(cfg);
        assert_eq!(a.step(0.0, 2, 2, &[avg(1.0, 1.0)], Some(true)).desired, 2);
        assert_eq!(a.step(31.0, 2, 2, &[avg(0.0, 1.0)], Some(false)).desired, 0);
        assert_eq!(a.step(40.0, 0, 0, &[avg(5.0, 1.0)], Some(true)).desired, 2);
        // Without idle replicas a minimum of 2 never goes to zero.
        let mut a = Autoscaler::new(config(2, 10));
        assert_eq!(
            a.step(1000.0, 2, 2, &[avg(0.0, 1.0)], Some(false)).desired,
            2
        );
    }

    #[test]
    fn errors_hold_the_count() {
        let mut cfg = config(1, 100);
        cfg.behavior.scale_down.stabilization_window = 0.0;
        let mut a = Autoscaler::new(cfg);
        // Every metric failed: keep.
        let d = a.step(0.0, 4, 4, &[Err("scrape failed".into())], None);
        assert_eq!(d.desired, 4, "{}", d.reason);
        assert!(d.reason.contains("scrape failed"), "{}", d.reason);
        // No metrics at all: keep.
        assert_eq!(a.step(1.0, 4, 4, &[], None).desired, 4);
        // One failed, the other wants down: keep.
        assert_eq!(
            a.step(2.0, 4, 4, &[Err("x".into()), avg(1.0, 1.0)], None)
                .desired,
            4
        );
        // One failed, the other wants up: up.
        assert_eq!(
            a.step(3.0, 4, 4, &[Err("x".into()), avg(6.0, 1.0)], None)
                .desired,
            6
        );
        // An unusable value is an error too.
        assert_eq!(
            a.step(100.0, 6, 6, &[avg(f64::NAN, 1.0), avg(1.0, 1.0)], None)
                .desired,
            6
        );
        // Nothing failing: down at once (window 0, 100 % per 15 s).
        assert_eq!(a.step(200.0, 6, 6, &[avg(1.0, 1.0)], None).desired, 1);
    }
}
