//! What a demo run reports: per path, ground truth per zone, second and phase, and the figures
//! the summary prints. Shared by the run ([`super::run`]), the view and the tests.

use super::keda::{Evaluation, Timing};
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
    for z in 0..fleet.zones().len() {
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
    let total: u64 = out.iter().map(|p| p.arrivals).sum();
    let mean = total as f64 / seconds.max(1.0);
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

#[derive(Clone, Debug)]
pub struct DemoReport {
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
    pub resources: Option<Resources>,
    pub show_resources: bool,
}
