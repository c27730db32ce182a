//! `redbridge demo` from start to summary: the simulated fleet on real sockets, redbridge scraping
//! it, the KEDA + HPA emulator calling redbridge over gRPC, and the Prometheus path run alongside
//! on the same script, all on 127.0.0.1 and in one process.
//!
//! The redbridge path's zones are one ZonalScaledObject ([`ZonalController`]): spillover, warm-up
//! and zone traffic weights, which the simulated gateways follow. The summary sets both paths
//! beside the reactive limit, computed on the same script and timing in simulated time by the
//! benchmark ([`bench::run_scenario`]).
//!
//! Time is wall-clock seconds since the demo started; the simulation ticks every 100 ms. The
//! default script is fitted to `--duration`, and the controllers are shortened for runs under
//! two minutes ([`Timing::for_duration`]) so every transition still shows. Both paths share those
//! controllers (HPA, KEDA polling and cooldown, [`PromSettings::for_timing`]); each data path keeps
//! its cluster settings, and the default script's quiet phase is long enough for both to reach
//! zero, which the summary checks. redbridge runs on a runtime of its own (threads named
//! `redbridge`), so its CPU time can be told apart from the simulation's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::warn;

use super::bench::{self, BenchError, BenchOptions, PathKind};
use super::fleet::{lock, Discovery, Endpoint, FleetError, FleetServers, SharedFleet, POOL};
use super::keda::{
    triggers, Evaluation, Statuses, Targets, Timing, WeightChange, ZonalController, ZoneController,
    ZoneStatus,
};
use super::promscaler::{PromPath, PromSettings};
use super::report::{
    count_moved, moved_total, phase_summaries, zone_phase_summaries, DemoReport, LimitReport,
    Outage, Output, PathReport, Resources, Spike, ZoneSample,
};
use super::scenario::{Scenario, ScenarioError, DEFAULT_DEMO_SECONDS};
use super::sim::Fleet;
use super::view::{self, Frame, Row, View};
use crate::answer::grpc::TlsFiles;
use crate::config::file::ConfigError;
use crate::config::trigger::TriggerError;
use crate::hpa::Autoscaler;
use crate::model::Clock;
use crate::model::Config;
use crate::proto::external_scaler_client::ExternalScalerClient;
use crate::run::{self, RunError};
use crate::source::scrape::ScrapeSettings;
use crate::state::State;

/// Name of redbridge's runtime threads, by which its CPU time is found in `/proc/self/task`.
const REDBRIDGE_THREAD: &str = "redbridge";

/// How often the simulation advances.
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Seconds to run. Default: the script's length (three minutes for the default script, which
    /// is shortened to fit a shorter duration).
    pub duration: Option<f64>,
    /// A custom script; `None` plays [`Scenario::default_demo`].
    pub scenario: Option<Scenario>,
    /// Gateway pods per zone.
    pub gateway_pods: u32,
    /// Replace the script's zones by this many, zone `i` following the script's zone `i mod k`.
    pub zones: Option<usize>,
    pub seed: u64,
    pub output: Output,
    /// Controller settings; `None` derives them from the duration.
    pub timing: Option<Timing>,
    /// The Prometheus path's scrapes, `rate()` range and polling; `None` puts them on the
    /// controllers' time-scale ([`PromSettings::for_timing`]), like for like.
    pub prometheus: Option<PromSettings>,
    /// Seconds a request the gateway sends to another zone pays on top (the hop there and back).
    pub cross_zone_latency: f64,
    /// What the summary calls the script (its file); `None` is the default script.
    pub scenario_name: Option<String>,
    /// Writes the summary's figures there as JSON.
    pub report_json: Option<PathBuf>,
    pub outages: Vec<Outage>,
    /// Print redbridge's CPU and memory per target in the summary (load runs).
    pub show_resources: bool,
    /// Ends the demo early (Ctrl-C); the summary covers what ran.
    pub cancel: CancellationToken,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: None,
            scenario: None,
            gateway_pods: 2,
            zones: None,
            seed: 1,
            output: Output::Auto,
            timing: None,
            prometheus: None,
            cross_zone_latency: BenchOptions::default().cross_zone_latency,
            scenario_name: None,
            report_json: None,
            outages: Vec::new(),
            show_resources: false,
            cancel: CancellationToken::new(),
        }
    }
}

/// Why the demo could not run. Causes are chained through `source()`, not repeated in messages.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot read scenario {path}")]
    ReadScenario {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}")]
    Scenario {
        path: PathBuf,
        source: ScenarioError,
    },
    #[error("invalid demo options: {0}")]
    Options(String),
    #[error(
        "{targets} targets need about {needed} open files but the limit is {limit}; \
         raise it (ulimit -n {needed}) or use fewer --pods or --zones"
    )]
    OpenFiles {
        targets: usize,
        needed: u64,
        limit: u64,
    },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start redbridge: {0}")]
    Start(std::io::Error),
    #[error(transparent)]
    Redbridge(#[from] RunError),
    #[error("cannot reach redbridge's gRPC port {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("a trigger of the demo's ScaledObjects")]
    Trigger(#[from] TriggerError),
    #[error("the reactive limit")]
    Limit(#[from] BenchError),
    #[error("cannot write {path}")]
    WriteReport {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Reads a `--scenario` file.
pub fn scenario_from_file(path: &Path) -> Result<Scenario, DemoError> {
    let text = std::fs::read_to_string(path).map_err(|source| DemoError::ReadScenario {
        path: path.to_path_buf(),
        source,
    })?;
    Scenario::from_yaml(&text).map_err(|source| DemoError::Scenario {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the demo to its end (or `opts.cancel`) and returns what happened.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    let (scenario, total) = prepare(&opts)?;
    let timing = opts
        .timing
        .clone()
        .unwrap_or_else(|| Timing::for_duration(total));
    let zones = scenario.zones.clone();
    let outages: Vec<(usize, f64, f64)> = opts
        .outages
        .iter()
        .map(|o| {
            scenario
                .zone_index(&o.zone)
                .map(|z| (z, o.start, o.end))
                .ok_or_else(|| DemoError::Options(format!("outage of unknown zone `{}`", o.zone)))
        })
        .collect::<Result<_, _>>()?;
    let reachable = |z: usize, now: f64| {
        scenario.rates_at(now).reachable(z)
            && !outages
                .iter()
                .any(|(oz, start, end)| *oz == z && now >= *start && now < *end)
    };
    let expected_targets =
        zones.len() * (opts.gateway_pods as usize + timing.max_replicas as usize);
    check_open_files(expected_targets)?;

    let targets = Targets::for_scenario(&scenario);
    let prom_settings = opts
        .prometheus
        .clone()
        .unwrap_or_else(|| PromSettings::for_timing(&timing));
    let twin = || {
        let mut f = steady_fleet(&scenario, &targets, &timing, opts.gateway_pods, opts.seed);
        f.set_cross_zone_latency(opts.cross_zone_latency);
        f
    };
    let fleet: SharedFleet = Arc::new(Mutex::new(twin()));
    let mut servers = FleetServers::new(fleet.clone(), &scenario.model.name);
    let mut live = lock(&fleet).pods();
    servers.sync(&live).await?;
    let discovery = Discovery::new(&scenario.model.name)?;
    let config = discovery.config(&servers.endpoints(), &zones);

    let before = resources::sample();
    let redbridge = Redbridge::start(&config).await?;
    let client = redbridge.client().await?;
    let clock = Clock::default();
    let statuses: Statuses = Arc::new(Mutex::new(vec![ZoneStatus::default(); zones.len()]));
    let keda_stop = CancellationToken::new();
    let scaler = redbridge.grpc.to_string();
    let zone_triggers: Vec<_> = zones
        .iter()
        .map(|name| triggers(name, &targets, &timing, &scaler))
        .collect();
    let zonal = ZonalController::new(
        zones.clone(),
        &zone_triggers,
        &targets,
        &timing,
        redbridge.state.clone(),
        fleet.clone(),
        clock,
        statuses.clone(),
    )?;
    let zonal: JoinHandle<Vec<WeightChange>> = tokio::spawn(zonal.run(keda_stop.clone()));
    let controllers: Vec<JoinHandle<Vec<Evaluation>>> = zones
        .iter()
        .zip(zone_triggers)
        .enumerate()
        .map(|(z, (name, triggers))| {
            let controller = ZoneController {
                zone: name.clone(),
                zone_index: z,
                triggers,
                autoscaler: Autoscaler::new(timing.autoscaler()),
                timing: timing.clone(),
                client: client.clone(),
                fleet: fleet.clone(),
                clock,
                statuses: statuses.clone(),
            };
            tokio::spawn(controller.run(keda_stop.clone()))
        })
        .collect();
    drop(client);
    let mut prom = PromPath::opening_in_first_phase(twin(), timing.clone(), prom_settings.clone());

    let mut view = View::new(opts.output);
    let mut samples = vec![Vec::new(); zones.len()];
    let mut prom_samples = vec![Vec::new(); zones.len()];
    // Requests moved across zones so far, once a second.
    let mut moved_so_far: Vec<(f64, u64)> = vec![(0.0, 0)];
    let mut zone_moved_so_far: Vec<Vec<(f64, u64)>> = vec![vec![(0.0, 0)]; zones.len()];
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0.0;
    let mut next_second = 0.0;
    let result: Result<(), DemoError> = async {
        loop {
            tokio::select! {
                _ = opts.cancel.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            let now = clock.now().min(total);
            let dt = now - last;
            if dt <= 0.0 {
                if now >= total {
                    return Ok(());
                }
                continue;
            }
            last = now;
            let mut changed = false;
            for z in 0..zones.len() {
                changed |= servers.set_zone_reachable(z, reachable(z, now)).await?;
            }
            let pods = {
                let mut f = lock(&fleet);
                f.tick(now, dt);
                f.pods()
            };
            if pods != live {
                changed |= servers.sync(&pods).await?;
                live = pods;
            }
            if changed {
                redbridge.discover(&discovery, &servers.endpoints(), &zones);
            }
            prom.advance(now, dt, &|z| reachable(z, now));
            if now >= next_second || now >= total {
                // After a stall, one sample, not one per missed second.
                next_second = now.floor() + 1.0;
                record(&lock(&fleet), now, &mut samples);
                {
                    let f = lock(&fleet);
                    moved_so_far.push((now, moved_total(f.moved())));
                    for (z, out) in zone_moved_so_far.iter_mut().enumerate() {
                        let row = f.moved().get(z);
                        let n = row.map_or(0, |r| {
                            r.iter()
                                .enumerate()
                                .filter(|(to, _)| *to != z)
                                .map(|(_, n)| n)
                                .sum()
                        });
                        out.push((now, n));
                    }
                }
                record(prom.fleet(), now, &mut prom_samples);
                let frame = frame(
                    &lock(&fleet),
                    &prom,
                    &statuses,
                    now,
                    total,
                    redbridge.targets(),
                );
                view.frame(&frame);
            }
            if now >= total {
                return Ok(());
            }
        }
    }
    .await;

    keda_stop.cancel();
    let mut evaluations = Vec::with_capacity(controllers.len());
    for c in controllers {
        evaluations.push(c.await?);
    }
    let weight_changes = zonal.await?;
    let after = resources::sample();
    let measured = clock.now();
    let resources = match (before, after) {
        (Some(b), Some(a)) => Some(Resources {
            targets: redbridge.targets(),
            seconds: measured,
            scrapes: redbridge.scrapes(),
            redbridge_cpu: a.redbridge_cpu - b.redbridge_cpu,
            process_cpu: a.process_cpu - b.process_cpu,
            rss: a.rss,
            rss_growth: a.rss.saturating_sub(b.rss),
            window_bytes: redbridge.window_bytes(),
            buffer_bytes: redbridge.buffer_bytes(),
        }),
        _ => None,
    };
    let stopped = redbridge.stop().await;
    servers.shutdown().await;
    result?;
    stopped?;

    let spike = find_spike(&scenario);
    let window_note = format!(
        "ZonalScaledObject: 1 s scrape, {} s window, pushed activation, spillover, warm-up, zone weights",
        timing.signal_window
    );
    let p = &prom_settings;
    let prom_note = format!(
        "per-zone ScaledObjects: {} s scrape, rate over {} s, {} s polling",
        p.scrape_interval, p.rate_window, p.polling
    );
    let yardstick = Yardstick {
        seconds: last,
        spike: spike.as_ref(),
        outages: &outages,
    };
    let mut redbridge_report = path_report(
        "redbridge",
        window_note,
        &lock(&fleet),
        samples,
        evaluations,
        &yardstick,
    );
    count_moved(&mut redbridge_report.phases, &moved_so_far);
    for (phases, so_far) in redbridge_report
        .zone_phases
        .iter_mut()
        .zip(&zone_moved_so_far)
    {
        count_moved(phases, so_far);
    }
    redbridge_report.weight_changes = weight_changes;
    let prom_report = path_report(
        "Prometheus scaler",
        prom_note,
        prom.fleet(),
        prom_samples,
        prom.evaluations(),
        &yardstick,
    );
    let limit = reactive_limit(&scenario, last, &timing, &opts)?;
    let report = DemoReport {
        scenario: opts
            .scenario_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        seconds: last,
        zones,
        seed: opts.seed,
        latency_target: scenario.latency_target,
        gateway_pods: opts.gateway_pods,
        spike,
        outages: opts.outages.clone(),
        timing,
        prometheus: prom_settings,
        redbridge: redbridge_report,
        prometheus_path: prom_report,
        limit,
        cross_zone_latency: opts.cross_zone_latency,
        resources,
        show_resources: opts.show_resources,
    };
    view.finish(&view::summary(&report));
    if let Some(path) = &opts.report_json {
        write_json(&report, path)?;
    }
    Ok(report)
}

fn write_json(report: &DemoReport, path: &Path) -> Result<(), DemoError> {
    let write = |source| DemoError::WriteReport {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(&report.json()).map_err(|e| write(e.into()))?;
    std::fs::write(path, text + "\n").map_err(write)
}

/// The reactive limit on the script as it ran (`seconds` of it) at the demo's timing, in
/// simulated time; opening, like the demo's fleet, with each zone holding the replicas its first
/// phase needs. `None` for a run too short to say anything.
fn reactive_limit(
    scenario: &Scenario,
    seconds: f64,
    timing: &Timing,
    opts: &DemoOptions,
) -> Result<Option<LimitReport>, DemoError> {
    if seconds < 1.0 {
        return Ok(None);
    }
    let mut s = fit(scenario, seconds);
    let targets = Targets::for_scenario(&s);
    let first = s.rates_at(0.0).rates.to_vec();
    let opening = first
        .iter()
        .map(|r| targets.replicas_for(*r))
        .max()
        .unwrap_or(0);
    s.replica.initial = s
        .replica
        .initial
        .max(opening)
        .min(timing.max_replicas.max(s.replica.initial));
    let bench_opts = BenchOptions {
        seed: opts.seed,
        dt: TICK.as_secs_f64(),
        gateway_pods: opts.gateway_pods,
        timing: timing.clone(),
        cross_zone_latency: opts.cross_zone_latency,
        paths: vec![PathKind::Reactive],
        // The limit reads the true rates; the redbridge paths' trigger windows do not apply.
        ..BenchOptions::default()
    };
    let r = bench::run_scenario("demo", &s, &bench_opts)?;
    Ok(r.paths.into_iter().next().map(|result| LimitReport {
        data_path: "true demand at once, routed as capacity allows; model load, GPUs and max \
                    replicas bound it (simulated)"
            .into(),
        result,
    }))
}

/// The script cut (or its last phase stretched) to `seconds`.
fn fit(scenario: &Scenario, seconds: f64) -> Scenario {
    let mut s = scenario.clone();
    s.phases.retain(|p| p.start < seconds);
    if let Some(last) = s.phases.last_mut() {
        last.duration = seconds - last.start;
    }
    s
}

/// The script to play and for how long.
fn prepare(opts: &DemoOptions) -> Result<(Scenario, f64), DemoError> {
    if let Some(d) = opts.duration {
        if !(d.is_finite() && d >= 1.0) {
            return Err(DemoError::Options(format!(
                "duration {d}s: at least one second"
            )));
        }
    }
    if opts.gateway_pods == 0 {
        return Err(DemoError::Options("--pods must be at least 1".into()));
    }
    let (scenario, total) = match &opts.scenario {
        Some(s) => {
            let total = opts.duration.unwrap_or_else(|| s.total_duration());
            (s.clone(), total)
        }
        None => {
            let total = opts.duration.unwrap_or(DEFAULT_DEMO_SECONDS);
            (Scenario::default_demo(total), total)
        }
    };
    let scenario = match opts.zones {
        None => scenario,
        Some(0) => return Err(DemoError::Options("--zones must be at least 1".into())),
        Some(n) => with_zones(scenario, n),
    };
    Ok((scenario, total))
}

/// A fleet that opens in steady state: each zone Ready with the replicas its first phase needs at
/// the demand target (at least `replica.initial`), so the script's first phase is steady load
/// rather than a catch-up from the simulation's default.
fn steady_fleet(
    scenario: &Scenario,
    targets: &Targets,
    timing: &Timing,
    gateway_pods: u32,
    seed: u64,
) -> Fleet {
    let initial = scenario.replica.initial;
    let first = scenario.rates_at(0.0).rates;
    let start: Vec<u32> = (0..scenario.zones.len())
        .map(|z| {
            let need = targets.replicas_for(first.get(z).copied().unwrap_or(0.0));
            need.max(initial).min(timing.max_replicas.max(initial))
        })
        .collect();
    let mut s = scenario.clone();
    s.replica.initial = start.iter().copied().max().unwrap_or(initial);
    let mut fleet = Fleet::new(s, gateway_pods, seed);
    for (zone, n) in scenario.zones.iter().zip(start) {
        // Idle Ready replicas leave at once: the zone is left with exactly `n`.
        let _ = fleet.set_desired(zone, n, 0.0);
    }
    fleet
}

/// `n` zones, zone `i` playing the script's zone `i mod k` (rates and GPU capacity).
pub fn with_zones(s: Scenario, n: usize) -> Scenario {
    let k = s.zones.len();
    if n == k || k == 0 {
        return s;
    }
    fn spread<T: Copy>(v: &[T], n: usize) -> Vec<T> {
        (0..n)
            .filter_map(|i| v.get(i % v.len().max(1)).copied())
            .collect()
    }
    let zones = (0..n)
        .map(|i| {
            if n <= 26 {
                format!("zone-{}", char::from(b'a' + i as u8))
            } else {
                format!("zone-{:03}", i + 1)
            }
        })
        .collect();
    let gpu_capacity = spread(&s.gpu_capacity, n);
    let phases = s
        .phases
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.rates = spread(&p.rates, n);
            p.gpu_capacity = spread(&p.gpu_capacity, n);
            if !p.unreachable.is_empty() {
                p.unreachable = spread(&p.unreachable, n);
            }
            p
        })
        .collect();
    Scenario {
        zones,
        gpu_capacity,
        phases,
        ..s
    }
}

/// See [`Spike`].
pub fn find_spike(s: &Scenario) -> Option<Spike> {
    for w in s.phases.windows(2) {
        let (before, after) = (&w[0], &w[1]);
        let best = (0..s.zones.len())
            .filter_map(|z| {
                let (a, b) = (*before.rates.get(z)?, *after.rates.get(z)?);
                (a > 0.0 && b >= 1.5 * a).then_some((z, b / a))
            })
            // The first zone wins a tie.
            .reduce(|best, z| if z.1 > best.1 { z } else { best });
        if let Some((zone, _)) = best {
            return Some(Spike {
                zone,
                phase: after.name.clone(),
                start: after.start,
            });
        }
    }
    None
}

/// What both paths' reports are measured against.
struct Yardstick<'a> {
    seconds: f64,
    spike: Option<&'a Spike>,
    /// `(zone, start, end)`.
    outages: &'a [(usize, f64, f64)],
}

fn path_report(
    name: &str,
    data_path: String,
    fleet: &Fleet,
    samples: Vec<Vec<ZoneSample>>,
    evaluations: Vec<Vec<Evaluation>>,
    y: &Yardstick<'_>,
) -> PathReport {
    let first_scale_up = y.spike.and_then(|s| {
        evaluations
            .get(s.zone)?
            .iter()
            .find(|e| e.t >= s.start && e.desired > e.current)
            .map(|e| e.t - s.start)
    });
    let blind_scale_downs = y
        .outages
        .iter()
        .map(|(z, start, end)| {
            evaluations.get(*z).map_or(0, |es| {
                es.iter()
                    .filter(|e| e.t >= *start && e.t < *end && e.desired < e.current)
                    .count()
            })
        })
        .sum();
    PathReport {
        name: name.to_string(),
        data_path,
        zones: fleet.summary(),
        phases: phase_summaries(fleet, y.seconds),
        zone_phases: (0..fleet.zones().len())
            .map(|z| zone_phase_summaries(fleet, y.seconds, z))
            .collect(),
        moved: fleet.moved().to_vec(),
        weight_changes: Vec::new(),
        samples,
        evaluations,
        first_scale_up,
        blind_scale_downs,
    }
}

fn record(fleet: &Fleet, now: f64, samples: &mut [Vec<ZoneSample>]) {
    for (z, out) in samples.iter_mut().enumerate() {
        if let Some(v) = fleet.zone_view(z, 10.0) {
            out.push(ZoneSample {
                t: now,
                demand: v.demand_rate,
                desired: v.desired,
                ready: v.ready,
                loading: v.loading,
                pending: v.pending,
                draining: v.draining,
                queued: v.queued,
                p95: v.p95_latency,
            });
        }
    }
}

fn frame(
    fleet: &Fleet,
    prom: &PromPath,
    statuses: &Statuses,
    now: f64,
    total: f64,
    targets: usize,
) -> Frame {
    let statuses = statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut phase = String::new();
    let mut rows = Vec::new();
    for z in 0..fleet.zones().len() {
        let Some(v) = fleet.zone_view(z, 10.0) else {
            continue;
        };
        phase = v.phase.to_string();
        let p = prom.fleet().zone_view(z, 10.0);
        let status = statuses.get(z);
        rows.push(Row {
            zone: v.name.to_string(),
            demand: v.demand_rate,
            seen: status.and_then(|s| s.values.first().copied().flatten()),
            p95: v.p95_latency,
            queue: v.queued,
            ready: v.ready,
            starting: v.loading,
            pending: v.pending,
            desired: v.desired,
            blind: status.is_some_and(|s| s.blind),
            weight: status.and_then(|s| s.weight),
            moved_out: status.and_then(|s| s.moved_out),
            prom_seen: prom.last_value(z, 0),
            prom_ready: p.map_or(0, |p| p.ready),
            prom_desired: p.map_or(0, |p| p.desired),
        });
    }
    let mut changes: Vec<(f64, String)> = statuses
        .iter()
        .zip(fleet.zones())
        .filter_map(|(s, zone)| {
            s.last_change
                .as_ref()
                .map(|(t, why)| (*t, format!("{t:>4.0}s {zone}: {why}")))
        })
        .collect();
    if let Some((t, why)) = statuses.first().and_then(|s| s.weight_change.as_ref()) {
        changes.push((*t, format!("{t:>4.0}s weights: {why}")));
    }
    changes.sort_by(|a, b| b.0.total_cmp(&a.0));
    Frame {
        t: now,
        total,
        phase,
        targets,
        rows,
        notes: changes.into_iter().take(3).map(|(_, s)| s).collect(),
    }
}

/// Refuses a fleet the open-files limit cannot hold: each target needs its listener and both
/// ends of its scrape connection.
fn check_open_files(targets: usize) -> Result<(), DemoError> {
    let needed = targets as u64 * 3 + 256;
    match resources::open_files_limit() {
        Some(limit) if limit < needed => Err(DemoError::OpenFiles {
            targets,
            needed,
            limit,
        }),
        _ => Ok(()),
    }
}

/// redbridge, running in-process on its own runtime exactly as `redbridge serve` runs it.
struct Redbridge {
    runtime: tokio::runtime::Runtime,
    state: Arc<State>,
    grpc: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl Redbridge {
    async fn start(config: &Config) -> Result<Redbridge, DemoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(REDBRIDGE_THREAD)
            .enable_all()
            .build()
            .map_err(DemoError::Start)?;
        // Bound inside redbridge's runtime, so its own threads drive its sockets.
        let (grpc, http) = runtime
            .spawn(async {
                let grpc = TcpListener::bind("127.0.0.1:0").await?;
                let http = TcpListener::bind("127.0.0.1:0").await?;
                Ok::<_, std::io::Error>((grpc, http))
            })
            .await?
            .map_err(DemoError::Start)?;
        let addr = grpc.local_addr().map_err(DemoError::Start)?;
        let state = run::state(config);
        let shutdown = CancellationToken::new();
        let task = runtime.spawn({
            let (state, shutdown) = (state.clone(), shutdown.clone());
            async move {
                let options = run::Options {
                    tls: TlsFiles::default(),
                    scrape: ScrapeSettings::default(),
                };
                run::run(state, grpc, http, &options, shutdown).await
            }
        });
        Ok(Redbridge {
            runtime,
            state,
            grpc: addr,
            shutdown,
            task,
        })
    }

    async fn client(&self) -> Result<ExternalScalerClient<Channel>, DemoError> {
        let endpoint = format!("http://{}", self.grpc);
        let mut last = String::new();
        for _ in 0..100 {
            if self.task.is_finished() {
                break;
            }
            match ExternalScalerClient::connect(endpoint.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DemoError::Connect {
            addr: self.grpc,
            message: last,
        })
    }

    /// Discovery's update: the pool with the live endpoints as targets.
    fn discover(&self, discovery: &Discovery, endpoints: &[Endpoint], zones: &[String]) {
        let pools = self.state.pools();
        if let Some(current) = pools.iter().find(|p| p.pool.name == POOL) {
            let next = discovery.pool(&current.pool, endpoints, zones);
            self.state.upsert_pool(Arc::new(next));
        }
    }

    fn targets(&self) -> usize {
        self.state.pools().iter().map(|p| p.targets.len()).sum()
    }

    fn scrapes(&self) -> u64 {
        self.state
            .pools()
            .iter()
            .flat_map(|p| p.targets.iter())
            .map(|t| t.lock().health.scrapes)
            .sum()
    }

    /// Heap bytes of every retained reading: the scrape record and the reading's numbers, plus
    /// each shape once per target where its readings share it (readings of a source share one
    /// shape across its targets, so this overstates a little).
    fn window_bytes(&self) -> u64 {
        use crate::window::Scrape;
        let mut bytes = 0usize;
        for p in self.state.pools() {
            for t in &p.targets {
                let data = t.lock();
                let mut prev: Option<&Scrape> = None;
                for s in data.samples() {
                    bytes += std::mem::size_of::<Scrape>() + s.reading.heap_bytes();
                    if !prev.is_some_and(|p| p.reading.shares_shape_with(&s.reading)) {
                        bytes += s.reading.shape().heap_bytes();
                    }
                    prev = Some(s);
                }
            }
        }
        bytes as u64
    }

    fn buffer_bytes(&self) -> u64 {
        self.state
            .pools()
            .iter()
            .flat_map(|p| p.targets.iter())
            .map(|t| t.lock().health.last_body_bytes as u64)
            .sum()
    }

    async fn stop(self) -> Result<(), DemoError> {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        // Dropping a runtime blocks, which async code must not; let its threads wind down.
        self.runtime.shutdown_background();
        match result {
            Ok(joined) => Ok(joined??),
            Err(_) => {
                warn!("redbridge did not drain within 10 s");
                Ok(())
            }
        }
    }
}

/// `/proc` readings for the load report (Linux; `None` elsewhere).
mod resources {
    use super::REDBRIDGE_THREAD;

    /// `/proc` reports CPU time in USER_HZ ticks, 100 per second on Linux.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub struct Usage {
        pub process_cpu: f64,
        pub redbridge_cpu: f64,
        pub rss: u64,
    }

    pub fn sample() -> Option<Usage> {
        let process_cpu = cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut redbridge_cpu = 0.0;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if name.trim_end() != REDBRIDGE_THREAD {
                continue;
            }
            if let Some(cpu) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| cpu_seconds(&s))
            {
                redbridge_cpu += cpu;
            }
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Usage {
            process_cpu,
            redbridge_cpu,
            rss: field_kib(&status, "VmRSS:")? * 1024,
        })
    }

    /// The soft limit on open files.
    pub fn open_files_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// utime + stime of a `stat` line; the command name may hold spaces and parentheses.
    pub fn cpu_seconds(stat: &str) -> Option<f64> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    }

    pub fn field_kib(status: &str, name: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_proc_files() {
            let stat =
                "4242 (tokio (w) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0";
            assert_eq!(cpu_seconds(stat), Some(3.0));
            assert_eq!(cpu_seconds("garbage"), None);
            let status = "Name:\tredbridge\nVmRSS:\t  123456 kB\nThreads:\t9\n";
            assert_eq!(field_kib(status, "VmRSS:"), Some(123_456));
            assert!(sample().is_some(), "Linux has /proc");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spike_is_zone_b() {
        let s = Scenario::default_demo(DEFAULT_DEMO_SECONDS);
        assert_eq!(
            find_spike(&s),
            Some(Spike {
                zone: 1,
                phase: "spike".into(),
                start: 20.0
            })
        );
        let mut flat = s.clone();
        for p in &mut flat.phases {
            p.rates = vec![1.0; 3];
        }
        assert_eq!(find_spike(&flat), None);
    }

    #[test]
    fn phases_add_up_to_the_zones_and_idle_ones_are_marked() {
        let mut fleet = Fleet::new(Scenario::default_demo(30.0), 1, 5);
        let mut t = 0.0;
        while t < 30.0 - 1e-9 {
            t += 0.1;
            fleet.tick(t, 0.1);
        }
        let phases = phase_summaries(&fleet, 30.0);
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["steady", "spike", "gpu-shortage", "quiet", "return"]
        );
        let arrivals: u64 = phases.iter().map(|p| p.arrivals).sum();
        let truth: u64 = fleet.summary().iter().map(|z| z.arrivals).sum();
        assert_eq!(arrivals, truth);
        let gpu: f64 = phases.iter().map(|p| p.gpu_seconds).sum();
        let truth: f64 = fleet.summary().iter().map(|z| z.gpu_seconds).sum();
        assert!((gpu - truth).abs() < 1e-6);
        assert!(phases[3].idle, "no traffic in the quiet phase");
        assert_eq!(phases[3].good_share(), None);
        assert!(phases[0].good_share().is_some_and(|g| g > 0.5));
        assert_eq!(phases[4].end, 30.0);
        // A run cut short ends with the phase it was in.
        let cut = phase_summaries(&fleet, 8.0);
        assert_eq!((cut.len(), cut[1].end), (2, 8.0));
    }

    #[test]
    fn more_zones_repeat_the_script() {
        let s = with_zones(Scenario::default_demo(120.0), 7);
        assert_eq!(s.zones.len(), 7);
        assert_eq!(s.zones[6], "zone-g");
        assert_eq!(
            s.phases[1].rates[4], s.phases[1].rates[1],
            "zone-e plays zone-b"
        );
        assert_eq!(s.gpu_capacity.len(), 7);
        let many = with_zones(Scenario::default_demo(120.0), 40);
        assert_eq!(many.zones[39], "zone-040");
        assert_eq!(find_spike(&many).map(|s| s.zone), Some(1));
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: DemoOptions| prepare(&o).is_err();
        assert!(bad(DemoOptions {
            gateway_pods: 0,
            ..DemoOptions::default()
        }));
        assert!(bad(DemoOptions {
            zones: Some(0),
            ..DemoOptions::default()
        }));
        assert!(bad(DemoOptions {
            duration: Some(f64::NAN),
            ..DemoOptions::default()
        }));
        let (s, total) = prepare(&DemoOptions {
            duration: Some(60.0),
            ..DemoOptions::default()
        })
        .unwrap();
        assert_eq!((s.total_duration(), total), (60.0, 60.0));
    }
}
