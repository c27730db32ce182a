//! What a demo run reports: per path, ground truth per zone, second and phase, and the figures
//! the summary prints. Shared by the run ([`super::run`]), the view and the tests.

use serde::Serialize;

use super::bench::{Figures, PathResult};
use super::keda::{Evaluation, Timing, WeightChange};
use super::promscaler::PromSettings;
use super::sim::{Fleet, ZoneSummary};

/// What the demo prints while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A live table when stdout is a terminal, periodic lines otherwise; then the summary.
    Auto,
    /// Only the summary.
    Headless,
    /// Nothing (tests read the report).
    Silent,
}

/// A zone whose pods cannot be reached over `[start, end)` seconds, as in a network partition:
/// they stay discovered but refuse connections. A hook for tests and experiments.
#[derive(Clone, Debug, PartialEq)]
pub struct Outage {
    pub zone: String,
    pub start: f64,
    pub end: f64,
}

/// One zone at one second: the ground truth the view and the tests read.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSample {
    pub t: f64,
    /// Requests/s the script asks for.
    pub demand: f64,
    pub desired: u32,
    pub ready: u32,
    /// Loading the model (hold a GPU, not serving yet).
    pub loading: u32,
    /// Waiting for a GPU.
    pub pending: u32,
    pub draining: u32,
    pub queued: u32,
    /// p95 of successful requests over the last 10 s, seconds.
    pub p95: Option<f64>,
}

/// One path's results.
#[derive(Clone, Debug)]
pub struct PathReport {
    pub name: String,
    /// How the path sees the fleet, for the summary.
    pub data_path: String,
    /// Ground truth per zone.
    pub zones: Vec<ZoneSummary>,
    /// Per zone, one sample a second.
    pub samples: Vec<Vec<ZoneSample>>,
    /// Per zone, every evaluation of its controller.
    pub evaluations: Vec<Vec<Evaluation>>,
    /// Seconds from the spike's start to the spiking zone's first scale-up.
    pub first_scale_up: Option<f64>,
    /// Scale-downs of a zone while its pods were unreachable.
    pub blind_scale_downs: usize,
    /// Ground truth per phase of the script, all zones together.
    pub phases: Vec<PhaseSummary>,
    /// Per zone, its ground truth per phase (requests counted where they arrived).
    pub zone_phases: Vec<Vec<PhaseSummary>>,
    /// Requests that arrived in one zone (first index) and were served by another.
    pub moved: Vec<Vec<u64>>,
    /// Every change of the zone traffic weights (none on a path without routing).
    pub weight_changes: Vec<WeightChange>,
}

/// What one phase of the script cost and served, all zones together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseSummary {
    pub name: String,
    pub start: f64,
    pub end: f64,
    pub arrivals: u64,
    /// Good requests that finished in the phase.
    pub good: u64,
    pub gpu_seconds: f64,
    /// Under 2 % of the run's mean arrival rate: only what one tick carries over a boundary.
    pub idle: bool,
    /// Requests sent to another zone than where they arrived during the phase.
    pub moved: u64,
}

impl PhaseSummary {
    /// Share of the phase's arrivals served within the objective. The simulation counts a good
    /// request when it finishes, at most the objective after it arrived, so only requests within
    /// that distance of a phase boundary can be counted in the next phase.
    /// `None` for an idle phase.
    pub fn good_share(&self) -> Option<f64> {
        (self.arrivals > 0 && !self.idle)
            .then(|| (self.good as f64 / self.arrivals as f64).min(1.0))
    }
}

/// Sums each zone's per-second truth over the phases that ran within `seconds`.
pub(super) fn phase_summaries(fleet: &Fleet, seconds: f64) -> Vec<PhaseSummary> {
    summaries(fleet, seconds, None)
}

/// [`phase_summaries`] of one zone; `idle` still compares with the whole run's mean rate.
pub(super) fn zone_phase_summaries(fleet: &Fleet, seconds: f64, zone: usize) -> Vec<PhaseSummary> {
    summaries(fleet, seconds, Some(zone))
}

/// Sets each phase's `moved` from cumulative counts of moved requests, `(t, moved so far)` in
/// time order.
pub(super) fn count_moved(phases: &mut [PhaseSummary], moved_so_far: &[(f64, u64)]) {
    let at = |t: f64| {
        moved_so_far
            .iter()
            .take_while(|(s, _)| *s <= t + 1e-9)
            .last()
            .map_or(0, |(_, n)| *n)
    };
    for p in phases {
        p.moved = at(p.end).saturating_sub(at(p.start));
    }
}

fn summaries(fleet: &Fleet, seconds: f64, zone: Option<usize>) -> Vec<PhaseSummary> {
    let mut out: Vec<PhaseSummary> = fleet
        .scenario()
        .phases
        .iter()
        .filter(|p| p.start < seconds)
        .map(|p| PhaseSummary {
            name: p.name.clone(),
            start: p.start,
            end: (p.start + p.duration).min(seconds),
            ..PhaseSummary::default()
        })
        .collect();
    // The last phase goes on after the script ends.
    if let Some(last) = out.last_mut() {
        last.end = seconds;
    }
    let total_arrivals: u64 = (0..fleet.zones().len())
        .flat_map(|z| fleet.truth(z))
        .map(|t| u64::from(t.arrivals))
        .sum();
    for z in (0..fleet.zones().len()).filter(|z| zone.is_none_or(|only| only == *z)) {
        for (second, truth) in fleet.truth(z).iter().enumerate() {
            let t = second as f64;
            let Some(p) = out.iter_mut().rev().find(|p| p.start <= t) else {
                continue;
            };
            p.arrivals += u64::from(truth.arrivals);
            p.good += u64::from(truth.good);
            p.gpu_seconds += truth.gpu_seconds;
        }
    }
    let mean = total_arrivals as f64 / seconds.max(1.0);
    for p in &mut out {
        p.idle = (p.arrivals as f64) < 0.02 * mean * (p.end - p.start);
    }
    out
}

impl PathReport {
    /// Share of the requests that arrived which succeeded within the latency objective. Requests
    /// still waiting at the end count as not served in time: dividing by finished requests would
    /// favour whichever path left more of them queued.
    pub fn good_share(&self) -> Option<f64> {
        let good: u64 = self.zones.iter().map(|z| z.good).sum();
        let arrivals = self.arrivals();
        (arrivals > 0).then(|| good as f64 / arrivals as f64)
    }

    pub fn arrivals(&self) -> u64 {
        self.zones.iter().map(|z| z.arrivals).sum()
    }

    pub fn finished(&self) -> u64 {
        self.zones.iter().map(|z| z.finished).sum()
    }

    pub fn gpu_minutes(&self) -> f64 {
        self.zones.iter().map(|z| z.gpu_seconds).sum::<f64>() / 60.0
    }

    /// The first second every zone was at zero (no replica desired nor Ready) during an idle
    /// phase; `None` when it never was or the script has no idle phase.
    pub fn reached_zero(&self) -> Option<f64> {
        let seconds = self.samples.iter().map(Vec::len).min().unwrap_or(0);
        (0..seconds).find_map(|i| {
            let t = self.samples.first()?.get(i)?.t;
            let idle = self
                .phases
                .iter()
                .any(|p| p.idle && p.start <= t && t < p.end);
            let zero = self
                .samples
                .iter()
                .all(|zone| zone.get(i).is_some_and(|s| s.desired == 0 && s.ready == 0));
            (idle && zero).then_some(t)
        })
    }

    /// Whether the script has an idle phase this path ran.
    pub fn has_idle_phase(&self) -> bool {
        self.phases.iter().any(|p| p.idle)
    }

    /// Requests served in another zone than where they arrived.
    pub fn moved_requests(&self) -> u64 {
        moved_total(&self.moved)
    }

    /// `(from, to, requests)` for every pair of zones with traffic moved, most first.
    pub fn moved_flows(&self) -> Vec<(usize, usize, u64)> {
        let mut out: Vec<(usize, usize, u64)> = self
            .moved
            .iter()
            .enumerate()
            .flat_map(|(from, row)| {
                row.iter()
                    .enumerate()
                    .filter(move |(to, n)| *to != from && **n > 0)
                    .map(move |(to, n)| (from, to, *n))
            })
            .collect();
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        out
    }
}

/// Requests of a `[from][to]` matrix that crossed zones.
pub(super) fn moved_total(moved: &[Vec<u64>]) -> u64 {
    moved
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n)
                .sum::<u64>()
        })
        .sum()
}

/// The zone and time a script's spike starts: the first phase where a zone's rate grows by half
/// or more (the largest such growth).
#[derive(Clone, Debug, PartialEq)]
pub struct Spike {
    pub zone: usize,
    pub phase: String,
    pub start: f64,
}

/// Resource use over the run. CPU from `/proc` (clock ticks of 1/100 s).
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// Targets at the end of the run.
    pub targets: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Scrapes redbridge made of the targets still configured at the end.
    pub scrapes: u64,
    /// CPU seconds of redbridge's threads (scrape, parse, windows, gRPC, HTTP).
    pub redbridge_cpu: f64,
    /// CPU seconds of the whole process (simulation, pods' HTTP servers, emulators, redbridge).
    pub process_cpu: f64,
    /// Resident memory of the whole process at the end, bytes.
    pub rss: u64,
    /// Resident memory grown since just before redbridge started, bytes (includes the simulated
    /// pods' HTTP servers and their ends of the scrape connections).
    pub rss_growth: u64,
    /// Bytes redbridge's windows hold at the end (readings of the last window, per target).
    pub window_bytes: u64,
    /// Bytes of the targets' last bodies, which each scrape task keeps as its reused buffer.
    pub buffer_bytes: u64,
}

/// The reactive limit on the demo's script and timing, from the benchmark's simulation
/// ([`super::bench::run_scenario`]): what no policy beats without predicting traffic.
#[derive(Clone, Debug)]
pub struct LimitReport {
    pub data_path: String,
    pub result: PathResult,
}

#[derive(Clone, Debug)]
pub struct DemoReport {
    /// The script: its file, or `default`.
    pub scenario: String,
    pub seconds: f64,
    pub zones: Vec<String>,
    pub seed: u64,
    pub latency_target: f64,
    pub gateway_pods: u32,
    pub spike: Option<Spike>,
    pub outages: Vec<Outage>,
    pub timing: Timing,
    pub prometheus: PromSettings,
    pub redbridge: PathReport,
    pub prometheus_path: PathReport,
    pub limit: Option<LimitReport>,
    /// Seconds a request served in another zone pays on top.
    pub cross_zone_latency: f64,
    pub resources: Option<Resources>,
    pub show_resources: bool,
}

/// `--report-json`: the summary's figures, per path, for scripts comparing runs. Shares are
/// fractions (0..=1, `null` without arrivals), as the summary prints them in percent.
#[derive(Clone, Debug, Serialize)]
pub struct JsonReport {
    pub scenario: String,
    pub seconds: f64,
    pub seed: u64,
    pub zones: Vec<String>,
    pub latency_objective: f64,
    pub cross_zone_latency: f64,
    pub paths: Vec<JsonPath>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JsonPath {
    pub name: String,
    pub data_path: String,
    pub arrivals: u64,
    pub good: u64,
    pub within_objective: Option<f64>,
    pub gpu_minutes: f64,
    pub moved_requests: u64,
    /// Pairs of zones with traffic moved; empty where the path does not report them.
    pub moved: Vec<JsonMoved>,
    pub zones: Vec<JsonSlice>,
    pub phases: Vec<JsonSlice>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JsonMoved {
    pub from: String,
    pub to: String,
    pub requests: u64,
}

/// A zone or a phase of one path; a zone lists its phases where the path reports them.
#[derive(Clone, Debug, Serialize)]
pub struct JsonSlice {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    pub arrivals: u64,
    pub good: u64,
    pub within_objective: Option<f64>,
    pub gpu_minutes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_requests: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<JsonSlice>,
}

fn share_of(good: u64, arrivals: u64) -> Option<f64> {
    (arrivals > 0).then(|| good as f64 / arrivals as f64)
}

fn phase_slice(p: &PhaseSummary) -> JsonSlice {
    JsonSlice {
        name: p.name.clone(),
        start: Some(p.start),
        end: Some(p.end),
        arrivals: p.arrivals,
        good: p.good,
        within_objective: p.good_share(),
        gpu_minutes: p.gpu_seconds / 60.0,
        moved_requests: Some(p.moved),
        phases: Vec::new(),
    }
}

fn figures_slice(name: &str, f: &Figures) -> JsonSlice {
    JsonSlice {
        name: name.to_string(),
        start: None,
        end: None,
        arrivals: f.arrivals,
        good: f.good,
        within_objective: f.within_objective,
        gpu_minutes: f.gpu_minutes,
        moved_requests: None,
        phases: Vec::new(),
    }
}

impl JsonPath {
    fn of(p: &PathReport, zones: &[String]) -> JsonPath {
        let name = |z: usize| zones.get(z).cloned().unwrap_or_default();
        JsonPath {
            name: p.name.clone(),
            data_path: p.data_path.clone(),
            arrivals: p.arrivals(),
            good: p.zones.iter().map(|z| z.good).sum(),
            within_objective: p.good_share(),
            gpu_minutes: p.gpu_minutes(),
            moved_requests: p.moved_requests(),
            moved: p
                .moved_flows()
                .into_iter()
                .map(|(from, to, requests)| JsonMoved {
                    from: name(from),
                    to: name(to),
                    requests,
                })
                .collect(),
            zones: p
                .zones
                .iter()
                .enumerate()
                .map(|(z, s)| JsonSlice {
                    name: s.zone.clone(),
                    start: None,
                    end: None,
                    arrivals: s.arrivals,
                    good: s.good,
                    within_objective: share_of(s.good, s.arrivals),
                    gpu_minutes: s.gpu_seconds / 60.0,
                    moved_requests: p.moved.get(z).map(|row| {
                        row.iter()
                            .enumerate()
                            .filter(|(to, _)| *to != z)
                            .map(|(_, n)| n)
                            .sum()
                    }),
                    phases: p
                        .zone_phases
                        .get(z)
                        .map(|ps| ps.iter().map(phase_slice).collect())
                        .unwrap_or_default(),
                })
                .collect(),
            phases: p.phases.iter().map(phase_slice).collect(),
        }
    }

    fn of_limit(l: &LimitReport) -> JsonPath {
        let r = &l.result;
        JsonPath {
            name: LIMIT_NAME.to_string(),
            data_path: l.data_path.clone(),
            arrivals: r.total.arrivals,
            good: r.total.good,
            within_objective: r.total.within_objective,
            gpu_minutes: r.total.gpu_minutes,
            moved_requests: r.moved_requests,
            moved: Vec::new(),
            zones: r.zones.iter().map(|(n, f)| figures_slice(n, f)).collect(),
            phases: r.phases.iter().map(|(n, f)| figures_slice(n, f)).collect(),
        }
    }
}

/// The reactive limit's name in the summary and the JSON report.
pub const LIMIT_NAME: &str = "reactive limit";

impl DemoReport {
    pub fn json(&self) -> JsonReport {
        let mut paths = vec![
            JsonPath::of(&self.redbridge, &self.zones),
            JsonPath::of(&self.prometheus_path, &self.zones),
        ];
        paths.extend(self.limit.as_ref().map(JsonPath::of_limit));
        JsonReport {
            scenario: self.scenario.clone(),
            seconds: self.seconds,
            seed: self.seed,
            zones: self.zones.clone(),
            latency_objective: self.latency_target,
            cross_zone_latency: self.cross_zone_latency,
            paths,
        }
    }
}
