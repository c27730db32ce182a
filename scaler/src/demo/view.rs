//! What the demo prints: a live table redrawn in place when stdout is a terminal, periodic plain
//! lines when it is not (logs, CI), and the final summary with both paths side by side. Logs go
//! to stderr, so they never tear the table.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use super::report::{DemoReport, Output, PathReport};

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
        "{:zw$}  {:-^62}  {:-^28}",
        "", " redbridge ", " Prometheus scaler "
    ));
    lines.push(format!(
        "{:<zw$}  {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>7}  {:>8} {:>5} {:>7}",
        "zone",
        "demand",
        "seen",
        "p95",
        "queue",
        "ready",
        "start",
        "pend",
        "desired",
        "seen",
        "ready",
        "desired"
    ));
    for r in f.rows.iter().take(max_rows) {
        let mut line = format!(
            "{:<zw$}  {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>7}  {:>8} {:>5} {:>7}",
            truncate(&r.zone, zw + 1),
            rate(Some(r.demand)),
            rate(r.seen),
            secs(r.p95),
            r.queue,
            r.ready,
            r.starting,
            r.pending,
            r.desired,
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
    lines.push("latest scaling decisions (redbridge):".into());
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
            "{:>4.0}s {:<13} {} demand {} seen {} p95 {} queue {} ready {} starting {} pending {} desired {}{} | prometheus seen {} ready {} desired {}",
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

/// The final summary: both paths side by side, overall, by phase and by zone.
pub fn summary(r: &DemoReport) -> String {
    let a = &r.redbridge;
    let b = &r.prometheus_path;
    // (label, redbridge, prometheus); an empty pair of cells makes a section heading.
    let mut rows: Vec<(String, String, String)> = vec![
        (String::new(), a.name.clone(), b.name.clone()),
        ("data path".into(), a.data_path.clone(), b.data_path.clone()),
        (
            format!("requests within {} s", r.latency_target),
            percent(a),
            percent(b),
        ),
        (
            "GPU-minutes".into(),
            format!("{:.1}", a.gpu_minutes()),
            format!("{:.1}", b.gpu_minutes()),
        ),
    ];
    if let Some(s) = &r.spike {
        let zone = r.zones.get(s.zone).map_or("?", String::as_str);
        rows.push((
            format!("{zone} spike (t={:.0}s) to first scale-up", s.start),
            seconds_or(a.first_scale_up, "no scale-up"),
            seconds_or(b.first_scale_up, "no scale-up"),
        ));
    }
    if !r.outages.is_empty() {
        rows.push((
            "scale-downs while unreachable".into(),
            a.blind_scale_downs.to_string(),
            b.blind_scale_downs.to_string(),
        ));
    }
    rows.push((
        format!("by phase (within {} s, GPU-minutes)", r.latency_target),
        String::new(),
        String::new(),
    ));
    for (i, p) in a.phases.iter().enumerate() {
        let cell = |p: Option<&super::report::PhaseSummary>| {
            p.map_or_else(String::new, |p| {
                format!("{}, {:.1}", share(p.good_share()), p.gpu_seconds / 60.0)
            })
        };
        rows.push((
            format!("  {} ({:.0}-{:.0} s)", p.name, p.start, p.end),
            cell(Some(p)),
            cell(b.phases.get(i)),
        ));
    }
    rows.push((
        "by zone (within target, GPU-minutes)".into(),
        String::new(),
        String::new(),
    ));
    let zone_cell = |p: &PathReport, z: usize| {
        p.zones.get(z).map_or_else(String::new, |s| {
            let good = (s.arrivals > 0).then(|| s.good as f64 / s.arrivals as f64);
            format!("{}, {:.1}", share(good), s.gpu_seconds / 60.0)
        })
    };
    for (z, name) in r.zones.iter().enumerate().take(MAX_ROWS) {
        rows.push((format!("  {name}"), zone_cell(a, z), zone_cell(b, z)));
    }
    let lw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) + 2;
    let aw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nredbridge demo summary: {:.0} s, {} zones, {} gateway pods per zone, seed {}",
        r.seconds,
        r.zones.len(),
        r.gateway_pods,
        r.seed
    );
    for (label, x, y) in &rows {
        let line = format!("  {label:<lw$}{x:<aw$}{y}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if r.zones.len() > MAX_ROWS {
        let _ = writeln!(out, "    ... and {} more zones", r.zones.len() - MAX_ROWS);
    }
    let t = &r.timing;
    let _ = writeln!(
        out,
        "  controllers (both paths): HPA every {} s, cooldown {} s, scale-down window {} s, max {} per zone;",
        t.hpa_sync, t.cooldown, t.scale_down_window, t.max_replicas
    );
    let _ = writeln!(
        out,
        "  KEDA polls redbridge every {} s and Prometheus every {} s (demo time-scale; in a cluster: \
         HPA 15 s, cooldown 300 s, scale-down window 300 s, polling 30 s)",
        t.polling, r.prometheus.polling
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
            prom_seen: None,
            prom_ready: 1,
            prom_desired: 1,
        }
    }

    fn path(name: &str, good: u64, gpu_minutes: f64, first: Option<f64>) -> PathReport {
        use super::super::report::PhaseSummary;
        use super::super::sim::ZoneSummary;
        PathReport {
            name: name.into(),
            data_path: format!("{name}'s data path"),
            zones: vec![ZoneSummary {
                zone: "zone-a".into(),
                arrivals: 200,
                finished: 190,
                good,
                errors: 0,
                gpu_seconds: gpu_minutes * 60.0,
            }],
            samples: vec![Vec::new()],
            evaluations: vec![Vec::new()],
            first_scale_up: first,
            blind_scale_downs: usize::from(name != "redbridge"),
            phases: vec![
                PhaseSummary {
                    name: "steady".into(),
                    start: 0.0,
                    end: 20.0,
                    arrivals: 200,
                    good,
                    gpu_seconds: gpu_minutes * 60.0,
                    idle: false,
                },
                PhaseSummary {
                    name: "quiet".into(),
                    start: 20.0,
                    end: 40.0,
                    idle: true,
                    ..PhaseSummary::default()
                },
            ],
        }
    }

    #[test]
    fn summary_puts_both_paths_side_by_side() {
        use super::super::keda::Timing;
        use super::super::promscaler::PromSettings;
        use super::super::report::{Outage, Spike};
        let report = DemoReport {
            seconds: 40.0,
            zones: vec!["zone-a".into()],
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
            redbridge: path("redbridge", 180, 2.5, Some(3.0)),
            prometheus_path: path("Prometheus scaler", 100, 1.5, None),
            resources: None,
            show_resources: true,
        };
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
            line("requests within 5 s").ends_with("90.0 % of 200 50.0 % of 200"),
            "{text}"
        );
        assert!(line("GPU-minutes").ends_with("2.5 1.5"), "{text}");
        assert!(
            line("zone-a spike").ends_with("3.0 s no scale-up"),
            "{text}"
        );
        assert!(
            line("scale-downs while unreachable").ends_with("0 1"),
            "{text}"
        );
        assert!(line("quiet (20-40 s)").ends_with("-, 0.0 -, 0.0"), "{text}");
        assert!(text.contains("not measured"), "{text}");
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
        assert_eq!(text.lines().count(), 3 + 2 + 1 + 3, "fixed height: {text}");
        let narrow = render_frame(&f, 1, 40);
        assert!(narrow.lines().all(|l| l.chars().count() < 40), "{narrow}");
        assert!(narrow.contains("... and 1 more zones"));
        let plain = render_plain(&f);
        assert_eq!(plain.lines().count(), 2);
        assert!(plain.contains("(UNAVAILABLE, holding)"));
    }
}
