//! What the demo prints: a live table redrawn in place when stdout is a terminal, periodic plain
//! lines when it is not (logs, CI), and the final summary with both paths side by side. Logs go
//! to stderr, so they never tear the table.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use super::bench::{Figures, PathResult};
use super::report::{DemoReport, Output, PathReport, PhaseSummary, LIMIT_NAME};

/// Zones shown in the live table; a load run's others are counted, not listed.
const MAX_ROWS: usize = 12;

/// Seconds between plain-mode reports.
const PLAIN_EVERY: f64 = 5.0;

/// One zone in a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub zone: String,
    /// Requests/s the script asks for.
    pub demand: f64,
    /// Requests/s redbridge reported at the last evaluation.
    pub seen: Option<f64>,
    /// Ground-truth p95 over the last 10 s.
    pub p95: Option<f64>,
    pub queue: u32,
    pub ready: u32,
    /// Loading the model.
    pub starting: u32,
    /// Waiting for a GPU.
    pub pending: u32,
    pub desired: u32,
    /// redbridge answered UNAVAILABLE for every trigger: the HPA holds.
    pub blind: bool,
    /// The zone's share of all requests under the zone traffic weights.
    pub weight: Option<f64>,
    /// Of the requests arriving in the zone, the share other zones serve.
    pub moved_out: Option<f64>,
    /// What the Prometheus path's rate query read.
    pub prom_seen: Option<f64>,
    pub prom_ready: u32,
    pub prom_desired: u32,
}

/// One refresh of the live view.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub t: f64,
    pub total: f64,
    pub phase: String,
    pub targets: usize,
    pub rows: Vec<Row>,
    /// Latest scaling decisions, newest first.
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Live,
    Plain,
    Off,
}

pub struct View {
    mode: Mode,
    summary: bool,
    /// Lines of the last live frame, to move back over.
    drawn: usize,
    next_plain: f64,
    width: usize,
}

impl View {
    pub fn new(output: Output) -> View {
        let mode = match output {
            Output::Auto if std::io::stdout().is_terminal() => Mode::Live,
            Output::Auto => Mode::Plain,
            Output::Headless | Output::Silent => Mode::Off,
        };
        // A wrapped line would break the redraw's line count; COLUMNS is set by most shells.
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|w| *w >= 40)
            .unwrap_or(120);
        View {
            mode,
            summary: output != Output::Silent,
            drawn: 0,
            next_plain: 0.0,
            width,
        }
    }

    pub fn frame(&mut self, f: &Frame) {
        let text = match self.mode {
            Mode::Off => return,
            Mode::Live => {
                let body = render_frame(f, MAX_ROWS, self.width);
                let mut text = String::new();
                if self.drawn > 0 {
                    // Back to the first line of the previous frame, and clear below.
                    let _ = write!(text, "\x1b[{}F\x1b[J", self.drawn);
                }
                self.drawn = body.lines().count();
                text.push_str(&body);
                text
            }
            Mode::Plain => {
                if f.t + 1e-6 < self.next_plain && f.t < f.total {
                    return;
                }
                self.next_plain = f.t + PLAIN_EVERY;
                render_plain(f)
            }
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout (a pipe into `head`) must not stop the demo.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Prints the summary (unless silent).
    pub fn finish(&mut self, summary: &str) {
        if !self.summary {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{summary}");
        let _ = out.flush();
    }
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}/s"))
}

/// A share as a whole percentage.
fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.1}s"),
        Some(v) => format!("{v:.0}s"),
    }
}

fn truncate(line: &str, width: usize) -> &str {
    match line.char_indices().nth(width.saturating_sub(1)) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// The live table.
pub fn render_frame(f: &Frame, max_rows: usize, width: usize) -> String {
    let mut lines = Vec::new();
    lines.push(format!(
        "redbridge demo  {:>3.0}s / {:.0}s   phase: {:<14} targets scraped: {}   (Ctrl-C ends early)",
        f.t, f.total, f.phase, f.targets
    ));
    let zw = f
        .rows
        .iter()
        .map(|r| r.zone.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 16);
    lines.push(format!(
        "{:zw$}  {:-^75}  {:-^28}",
        "", " redbridge (ZonalScaledObject) ", " Prometheus scaler "
    ));
    lines.push(format!(
        "{:<zw$}  {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>7} {:>6} {:>6}  {:>8} {:>5} {:>7}",
        "zone",
        "demand",
        "seen",
        "p95",
        "queue",
        "ready",
        "start",
        "pend",
        "desired",
        "weight",
        "away",
        "seen",
        "ready",
        "desired"
    ));
    for r in f.rows.iter().take(max_rows) {
        let mut line = format!(
            "{:<zw$}  {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>7} {:>6} {:>6}  {:>8} {:>5} {:>7}",
            truncate(&r.zone, zw + 1),
            rate(Some(r.demand)),
            rate(r.seen),
            secs(r.p95),
            r.queue,
            r.ready,
            r.starting,
            r.pending,
            r.desired,
            pct(r.weight),
            pct(r.moved_out),
            rate(r.prom_seen),
            r.prom_ready,
            r.prom_desired,
        );
        if r.blind {
            line.push_str("  <- UNAVAILABLE: holding");
        }
        lines.push(line);
    }
    if f.rows.len() > max_rows {
        lines.push(format!("... and {} more zones", f.rows.len() - max_rows));
    }
    lines.push(
        "weight: the zone's share of all requests; away: of its own arrivals, the share other \
         zones serve"
            .into(),
    );
    lines.push("latest scaling and routing decisions (redbridge):".into());
    for n in &f.notes {
        lines.push(format!("  {n}"));
    }
    for _ in f.notes.len()..3 {
        lines.push(String::new());
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(truncate(&l, width));
        out.push('\n');
    }
    out
}

/// One line per zone, for logs.
pub fn render_plain(f: &Frame) -> String {
    let mut out = String::new();
    for r in &f.rows {
        let _ = writeln!(
            out,
            "{:>4.0}s {:<13} {} demand {} seen {} p95 {} queue {} ready {} starting {} pending {} desired {} weight {} away {}{} | prometheus seen {} ready {} desired {}",
            f.t,
            f.phase,
            r.zone,
            rate(Some(r.demand)),
            rate(r.seen),
            secs(r.p95),
            r.queue,
            r.ready,
            r.starting,
            r.pending,
            r.desired,
            pct(r.weight),
            pct(r.moved_out),
            if r.blind { " (UNAVAILABLE, holding)" } else { "" },
            rate(r.prom_seen),
            r.prom_ready,
            r.prom_desired,
        );
    }
    out
}

fn percent(p: &PathReport) -> String {
    match p.good_share() {
        Some(s) => format!("{:.1} % of {}", s * 100.0, p.arrivals()),
        None => "no request arrived".into(),
    }
}

fn seconds_or(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |s| format!("{s:.1} s"))
}

fn share(good: Option<f64>) -> String {
    good.map_or_else(|| "-".into(), |g| format!("{:.1} %", g * 100.0))
}

fn limit_percent(f: &Figures) -> String {
    match f.within_objective {
        Some(s) => format!("{:.1} % of {}", s * 100.0, f.arrivals),
        None => "no request arrived".into(),
    }
}

/// The final summary: both paths side by side with the reactive limit, overall, by phase and
/// by zone, then the traffic moved between zones.
pub fn summary(r: &DemoReport) -> String {
    let a = &r.redbridge;
    let b = &r.prometheus_path;
    let l = r.limit.as_ref().map(|l| &l.result);
    let limit = |f: &dyn Fn(&PathResult) -> String| l.map_or_else(String::new, f);
    // (label, cells); empty cells make a section heading.
    let mut rows: Vec<(String, [String; 3])> = vec![
        (
            String::new(),
            [
                a.name.clone(),
                b.name.clone(),
                limit(&|_| LIMIT_NAME.to_string()),
            ],
        ),
        (
            format!("requests within {} s", r.latency_target),
            [percent(a), percent(b), limit(&|l| limit_percent(&l.total))],
        ),
        (
            "GPU-minutes".into(),
            [
                format!("{:.1}", a.gpu_minutes()),
                format!("{:.1}", b.gpu_minutes()),
                limit(&|l| format!("{:.1}", l.total.gpu_minutes)),
            ],
        ),
        (
            "requests moved between zones".into(),
            [
                a.moved_requests().to_string(),
                b.moved_requests().to_string(),
                limit(&|l| l.moved_requests.to_string()),
            ],
        ),
    ];
    if let Some(s) = &r.spike {
        let zone = r.zones.get(s.zone).map_or("?", String::as_str);
        rows.push((
            format!("{zone} spike (t={:.0}s) to first scale-up", s.start),
            [
                seconds_or(a.first_scale_up, "no scale-up"),
                seconds_or(b.first_scale_up, "no scale-up"),
                String::new(),
            ],
        ));
    }
    if a.has_idle_phase() {
        let zero = |p: &PathReport| {
            p.reached_zero()
                .map_or_else(|| "never".to_string(), |t| format!("at {t:.0} s"))
        };
        rows.push((
            "pool at zero while quiet".into(),
            [zero(a), zero(b), String::new()],
        ));
    }
    if !r.outages.is_empty() {
        rows.push((
            "scale-downs while unreachable".into(),
            [
                a.blind_scale_downs.to_string(),
                b.blind_scale_downs.to_string(),
                String::new(),
            ],
        ));
    }
    let cell = |p: Option<&PhaseSummary>| {
        p.map_or_else(String::new, |p| {
            format!("{}, {:.1}", share(p.good_share()), p.gpu_seconds / 60.0)
        })
    };
    // The benchmark counts a good request in the second it finishes: near a phase boundary some
    // of the previous phase's land in this one, so a share can pass 100 % by a little.
    let figures_cell = |f: Option<&Figures>| {
        f.map_or_else(String::new, |f| {
            let within = f.within_objective.map(|s| s.min(1.0));
            format!("{}, {:.1}", share(within), f.gpu_minutes)
        })
    };
    rows.push((
        format!("by phase (within {} s, GPU-minutes)", r.latency_target),
        Default::default(),
    ));
    for (i, p) in a.phases.iter().enumerate() {
        rows.push((
            format!("  {} ({:.0}-{:.0} s)", p.name, p.start, p.end),
            [
                cell(Some(p)),
                cell(b.phases.get(i)),
                if p.idle {
                    limit(&|l| {
                        l.phases
                            .get(i)
                            .map_or_else(String::new, |(_, f)| format!("-, {:.1}", f.gpu_minutes))
                    })
                } else {
                    figures_cell(l.and_then(|l| l.phases.get(i)).map(|(_, f)| f))
                },
            ],
        ));
    }
    rows.push((
        "by zone (within target, GPU-minutes)".into(),
        Default::default(),
    ));
    let zone_cell = |p: &PathReport, z: usize| {
        p.zones.get(z).map_or_else(String::new, |s| {
            let good = (s.arrivals > 0).then(|| s.good as f64 / s.arrivals as f64);
            format!("{}, {:.1}", share(good), s.gpu_seconds / 60.0)
        })
    };
    for (z, name) in r.zones.iter().enumerate().take(MAX_ROWS) {
        rows.push((
            format!("  {name}"),
            [
                zone_cell(a, z),
                zone_cell(b, z),
                figures_cell(l.and_then(|l| l.zones.get(z)).map(|(_, f)| f)),
            ],
        ));
    }
    // Each zone redbridge routed traffic away from, phase by phase: what routing did for it.
    let flows = a.moved_flows();
    let mut senders: Vec<usize> = flows.iter().map(|f| f.0).collect();
    senders.sort_unstable();
    senders.dedup();
    for &z in senders.iter().take(MAX_ROWS) {
        let name = r.zones.get(z).map_or("?", String::as_str);
        rows.push((
            format!("{name} by phase (its own arrivals)"),
            Default::default(),
        ));
        for (i, p) in a.zone_phases.get(z).into_iter().flatten().enumerate() {
            rows.push((
                format!("  {} ({:.0}-{:.0} s)", p.name, p.start, p.end),
                [
                    cell(Some(p)),
                    cell(b.zone_phases.get(z).and_then(|ps| ps.get(i))),
                    String::new(),
                ],
            ));
        }
    }
    let lw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) + 2;
    let aw = rows.iter().map(|r| r.1[0].len()).max().unwrap_or(0) + 3;
    let bw = rows.iter().map(|r| r.1[1].len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nredbridge demo summary: {:.0} s, {} zones, {} gateway pods per zone, seed {}, scenario {}",
        r.seconds,
        r.zones.len(),
        r.gateway_pods,
        r.seed,
        r.scenario
    );
    for (label, [x, y, z]) in &rows {
        let line = format!("  {label:<lw$}{x:<aw$}{y:<bw$}{z}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if r.zones.len() > MAX_ROWS {
        let _ = writeln!(out, "    ... and {} more zones", r.zones.len() - MAX_ROWS);
    }
    let name = |z: usize| r.zones.get(z).map_or("?", String::as_str);
    if flows.is_empty() {
        let _ = writeln!(out, "  traffic moved between zones (redbridge): none");
    } else {
        let pairs: Vec<String> = flows
            .iter()
            .take(6)
            .map(|(from, to, n)| format!("{} -> {} {n}", name(*from), name(*to)))
            .collect();
        let phases: Vec<String> = a
            .phases
            .iter()
            .map(|p| format!("{} {}", p.name, p.moved))
            .collect();
        let _ = writeln!(
            out,
            "  traffic moved between zones (redbridge): {} of {} requests: {}; by phase: {}",
            a.moved_requests(),
            a.arrivals(),
            pairs.join(", "),
            phases.join(", ")
        );
    }
    let short: Vec<&str> = [a, b]
        .into_iter()
        .filter(|p| p.has_idle_phase() && p.reached_zero().is_none())
        .map(|p| p.name.as_str())
        .collect();
    if !short.is_empty() {
        let _ = writeln!(
            out,
            "  NOT like for like after the quiet phase: {} never reached zero in it (the \
             Prometheus path reads zero {:.0} s after the last request, then the {} s cooldown); \
             run the full length",
            short.join(" and "),
            r.prometheus.seconds_to_see_silence(),
            r.timing.cooldown
        );
    }
    let _ = writeln!(out, "  data paths:");
    let _ = writeln!(out, "    {}: {}", a.name, a.data_path);
    let _ = writeln!(out, "    {}: {}", b.name, b.data_path);
    if let Some(l) = &r.limit {
        let _ = writeln!(out, "    {LIMIT_NAME}: {}", l.data_path);
    }
    let t = &r.timing;
    let z = t.zonal();
    let _ = writeln!(
        out,
        "  one time-scale for every path: HPA every {} s, cooldown {} s, scale-down window {} s, \
         max {} per zone; KEDA polls every {} s; Prometheus scrapes every {} s, rate over {} s",
        t.hpa_sync,
        t.cooldown,
        t.scale_down_window,
        t.max_replicas,
        t.polling,
        r.prometheus.scrape_interval,
        r.prometheus.rate_window
    );
    let _ = writeln!(
        out,
        "    (in a cluster: HPA 15 s, cooldown 300 s, scale-down window 300 s, polling 30 s, \
         Prometheus 15 s scrapes, rate[1m])"
    );
    let _ = writeln!(
        out,
        "  zone weights: evaluated every {} s; a zone is full once Pods wait {} s for a GPU; \
         changes of {:.0} points or more, at most every {} s, {:.0} points a step; a request \
         served in another zone pays {} s",
        z.period,
        z.unschedulable_after,
        z.policy.threshold * 100.0,
        z.policy.min_interval,
        z.policy.max_step * 100.0,
        r.cross_zone_latency
    );
    if r.show_resources {
        match &r.resources {
            Some(res) => out.push_str(&resources(res)),
            None => out.push_str("  CPU and memory: not measured (needs Linux /proc)\n"),
        }
    }
    out
}

fn resources(res: &super::report::Resources) -> String {
    let mut out = String::new();
    let n = res.targets.max(1) as f64;
    let cores = res.redbridge_cpu / res.seconds.max(1e-9);
    let per_scrape = if res.scrapes > 0 {
        format!(
            ", {:.0} µs per scrape",
            res.redbridge_cpu / res.scrapes as f64 * 1e6
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  redbridge with {} targets (1 s interval, {:.0} s): CPU {:.3} cores = {:.3} millicores per target{per_scrape}",
        res.targets,
        res.seconds,
        cores,
        cores * 1000.0 / n,
    );
    let kib = |b: u64| b as f64 / 1024.0 / n;
    let _ = writeln!(
        out,
        "  redbridge memory per target: {:.1} KiB of windows ({} s of readings) + {:.1} KiB scrape buffer",
        kib(res.window_bytes),
        super::fleet::POOL_WINDOW_SECONDS,
        kib(res.buffer_bytes),
    );
    let _ = writeln!(
        out,
        "  whole process: {:.0} MiB resident, {:.0} MiB grown since redbridge started ({:.1} KiB per target, \
         including the simulated pods' HTTP servers)",
        res.rss as f64 / (1 << 20) as f64,
        res.rss_growth as f64 / (1 << 20) as f64,
        kib(res.rss_growth),
    );
    let _ = writeln!(
        out,
        "  whole process CPU (fleet simulation, pods' HTTP servers, emulators and redbridge): {:.2} cores",
        res.process_cpu / res.seconds.max(1e-9)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(zone: &str, blind: bool) -> Row {
        Row {
            zone: zone.into(),
            demand: 16.0,
            seen: Some(12.34),
            p95: Some(3.21),
            queue: 12,
            ready: 1,
            starting: 2,
            pending: 0,
            desired: 3,
            blind,
            weight: Some(0.25),
            moved_out: Some(0.5),
            prom_seen: None,
            prom_ready: 1,
            prom_desired: 1,
        }
    }

    fn phases(arrivals: u64, good: u64, gpu_minutes: f64) -> Vec<PhaseSummary> {
        vec![
            PhaseSummary {
                name: "steady".into(),
                start: 0.0,
                end: 20.0,
                arrivals,
                good,
                gpu_seconds: gpu_minutes * 60.0,
                idle: false,
                moved: 0,
            },
            PhaseSummary {
                name: "quiet".into(),
                start: 20.0,
                end: 40.0,
                idle: true,
                ..PhaseSummary::default()
            },
        ]
    }

    /// Two zones, zone-a's 200 requests and zone-b's 100; `moved` of zone-a's sent to zone-b;
    /// at zero from `zero_at` on.
    fn path(
        name: &str,
        good: u64,
        gpu_minutes: f64,
        first: Option<f64>,
        moved: u64,
        zero_at: Option<f64>,
    ) -> PathReport {
        use super::super::report::ZoneSample;
        use super::super::sim::ZoneSummary;
        let zone = |zone: &str, arrivals: u64, good: u64, gpu_minutes: f64| ZoneSummary {
            zone: zone.into(),
            arrivals,
            finished: arrivals,
            good,
            errors: 0,
            gpu_seconds: gpu_minutes * 60.0,
        };
        let samples: Vec<ZoneSample> = (0..40)
            .map(|t| {
                let zero = zero_at.is_some_and(|z| f64::from(t) >= z);
                let n = u32::from(!zero);
                ZoneSample {
                    t: f64::from(t),
                    demand: 0.0,
                    desired: n,
                    ready: n,
                    loading: 0,
                    pending: 0,
                    draining: 0,
                    queued: 0,
                    p95: None,
                }
            })
            .collect();
        let mut all = phases(300, good + 100, gpu_minutes + 1.0);
        all[0].moved = moved;
        PathReport {
            name: name.into(),
            data_path: format!("{name}'s data path"),
            zones: vec![
                zone("zone-a", 200, good, gpu_minutes),
                zone("zone-b", 100, 100, 1.0),
            ],
            samples: vec![samples.clone(), samples],
            evaluations: vec![Vec::new(), Vec::new()],
            first_scale_up: first,
            blind_scale_downs: usize::from(name != "redbridge"),
            phases: all,
            zone_phases: vec![phases(200, good, gpu_minutes), phases(100, 100, 1.0)],
            moved: vec![vec![0, moved], vec![0, 0]],
            weight_changes: Vec::new(),
        }
    }

    fn report() -> DemoReport {
        use super::super::bench::PathKind;
        use super::super::keda::Timing;
        use super::super::promscaler::PromSettings;
        use super::super::report::{LimitReport, Outage, Spike};
        let figures = |arrivals: u64, good: u64, gpu_minutes: f64| Figures {
            arrivals,
            good,
            failed: 0,
            gpu_minutes,
            within_objective: Some(good as f64 / arrivals as f64),
        };
        DemoReport {
            scenario: "default".into(),
            seconds: 40.0,
            zones: vec!["zone-a".into(), "zone-b".into()],
            seed: 1,
            latency_target: 5.0,
            gateway_pods: 2,
            spike: Some(Spike {
                zone: 0,
                phase: "spike".into(),
                start: 20.0,
            }),
            outages: vec![Outage {
                zone: "zone-a".into(),
                start: 1.0,
                end: 2.0,
            }],
            timing: Timing::default(),
            prometheus: PromSettings::default(),
            redbridge: path("redbridge", 180, 2.5, Some(3.0), 30, Some(25.0)),
            prometheus_path: path("Prometheus scaler", 100, 1.5, None, 0, None),
            limit: Some(LimitReport {
                data_path: "the limit's".into(),
                result: PathResult {
                    path: PathKind::Reactive,
                    name: "reactive-limit",
                    total: figures(300, 290, 3.0),
                    p95_latency: None,
                    replica_changes: 4,
                    moved_requests: 12,
                    zones: vec![
                        ("zone-a".into(), figures(200, 195, 2.0)),
                        ("zone-b".into(), figures(100, 95, 1.0)),
                    ],
                    phases: vec![
                        ("steady".into(), figures(300, 290, 2.5)),
                        ("quiet".into(), figures(1, 7, 0.5)),
                    ],
                },
            }),
            cross_zone_latency: 0.05,
            resources: None,
            show_resources: true,
        }
    }

    #[test]
    fn summary_puts_both_paths_side_by_side_with_the_limit() {
        let report = report();
        let text = summary(&report);
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            line("requests within 5 s").ends_with("93.3 % of 300 66.7 % of 300 96.7 % of 300"),
            "{text}"
        );
        assert!(line("GPU-minutes").ends_with("3.5 2.5 3.0"), "{text}");
        assert!(
            line("requests moved between zones").ends_with("30 0 12"),
            "{text}"
        );
        assert!(
            line("zone-a spike").ends_with("3.0 s no scale-up"),
            "{text}"
        );
        assert!(
            line("scale-downs while unreachable").ends_with("0 1"),
            "{text}"
        );
        assert!(
            line("pool at zero while quiet").ends_with("at 25 s never"),
            "{text}"
        );
        // An idle phase's share is not a share (the limit's 7 of 1 is requests finishing late).
        assert!(
            line("quiet (20-40 s)").ends_with("-, 0.0 -, 0.0 -, 0.5"),
            "{text}"
        );
        assert!(
            line("zone-b").ends_with("100.0 %, 1.0 100.0 %, 1.0 95.0 %, 1.0"),
            "{text}"
        );
        // zone-a sent traffic away: its own phases follow.
        assert!(text.contains("zone-a by phase"), "{text}");
        assert!(!text.contains("zone-b by phase"), "{text}");
        assert!(
            line("traffic moved between zones (redbridge)")
                .contains("30 of 300 requests: zone-a -> zone-b 30; by phase: steady 30, quiet 0"),
            "{text}"
        );
        assert!(
            text.contains("NOT like for like after the quiet phase: Prometheus scaler never"),
            "{text}"
        );
        assert!(text.contains("reactive limit: the limit's"), "{text}");
        assert!(text.contains("not measured"), "{text}");
    }

    #[test]
    fn json_report_holds_the_summarys_figures() {
        let report = report();
        let json = serde_json::to_value(report.json()).expect("serialises");
        let paths = json["paths"].as_array().expect("paths");
        let names: Vec<&str> = paths.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["redbridge", "Prometheus scaler", "reactive limit"]);
        let rb = &paths[0];
        assert_eq!(rb["arrivals"], 300);
        assert!((rb["within_objective"].as_f64().unwrap() - 280.0 / 300.0).abs() < 1e-12);
        assert!((rb["gpu_minutes"].as_f64().unwrap() - 3.5).abs() < 1e-12);
        assert_eq!(rb["moved_requests"], 30);
        assert_eq!(rb["moved"][0]["from"], "zone-a");
        assert_eq!(rb["moved"][0]["to"], "zone-b");
        assert_eq!(rb["zones"][0]["moved_requests"], 30);
        assert_eq!(rb["zones"][0]["phases"][0]["good"], 180);
        assert_eq!(rb["phases"][0]["moved_requests"], 30);
        assert!(rb["phases"][1]["within_objective"].is_null(), "idle");
        let limit = &paths[2];
        assert_eq!(limit["moved_requests"], 12);
        assert_eq!(limit["zones"][1]["name"], "zone-b");
        assert_eq!(json["cross_zone_latency"], 0.05);
    }

    #[test]
    fn frame_shows_each_zone_and_flags_blind_ones() {
        let f = Frame {
            t: 25.0,
            total: 120.0,
            phase: "spike".into(),
            targets: 9,
            rows: vec![row("zone-a", false), row("zone-b", true)],
            notes: vec!["  24s zone-b: hpa: scaling 1->3".into()],
        };
        let text = render_frame(&f, 12, 200);
        assert!(text.contains("zone-b    16.0/s   12.3/s   3.2s"), "{text}");
        assert_eq!(text.matches("UNAVAILABLE").count(), 1, "{text}");
        assert!(text.contains("3    25%    50%"), "weight and away: {text}");
        assert_eq!(text.lines().count(), 3 + 2 + 2 + 3, "fixed height: {text}");
        let narrow = render_frame(&f, 1, 40);
        assert!(narrow.lines().all(|l| l.chars().count() < 40), "{narrow}");
        assert!(narrow.contains("... and 1 more zones"));
        let plain = render_plain(&f);
        assert_eq!(plain.lines().count(), 2);
        assert!(plain.contains("(UNAVAILABLE, holding)"));
        assert!(plain.contains("weight 25% away 50%"), "{plain}");
    }
}
