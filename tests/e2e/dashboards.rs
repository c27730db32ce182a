//! The bundled Grafana dashboards against a running redbridge.
//!
//! redbridge scrapes real exposition captures (an Envoy and a vLLM per zone, served over HTTP by
//! this test), the controller's series are set as the ZonalScaledObject controller would, and KEDA
//! calls once over gRPC. Then every selector of every panel and variable query must match a sample
//! of redbridge's own `/metrics`: the dashboards work with nothing but redbridge scraped.
//! `promtool check metrics` must find nothing to say about that same body.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{self, eventually, object_ref, MetricName, Redbridge};
use redbridge::telemetry::ZoneStatus;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    redbridge_fixtures::read(Path::new("exposition").join(name))
}

/// Serves a fixed exposition body on `/metrics`; returns its URL.
async fn serve_static(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/metrics", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/metrics")
}

// ---------------------------------------------------------------------------------------------
// The dashboards.

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected the model-pool and health dashboards in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            Dashboard {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// A query variable's query: a string, or an object with `query` (Prometheus editor format).
fn variable_query(v: &Value) -> Option<&str> {
    v["query"]
        .as_str()
        .or_else(|| v["query"]["query"].as_str())
        .filter(|q| !q.is_empty())
}

/// The Prometheus datasource as a template variable, used by every panel, target and variable.
const DATASOURCE_UID: &str = "${datasource}";
/// Grafana 12.0's; older Grafana cannot load newer features, newer Grafana migrates on load.
const MIN_SCHEMA_VERSION: u64 = 41;
/// Variables Grafana defines itself.
const BUILTIN_VARIABLES: [&str; 6] = [
    "__rate_interval",
    "__interval",
    "__range",
    "__range_s",
    "__interval_ms",
    "__name",
];

#[test]
fn dashboards_are_well_formed() {
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        let f = &d.file;
        let j = &d.json;
        let version = j["schemaVersion"].as_u64().unwrap_or(0);
        if version < MIN_SCHEMA_VERSION {
            problems.push(format!(
                "{f}: schemaVersion {version} < {MIN_SCHEMA_VERSION}"
            ));
        }
        match j["uid"].as_str() {
            Some(uid) if !uid.is_empty() && uid.len() <= 40 => {
                if !uids.insert(uid.to_string()) {
                    problems.push(format!("{f}: uid {uid} is used by another dashboard"));
                }
            }
            _ => problems.push(format!("{f}: uid must be 1-40 characters")),
        }
        if !j["id"].is_null() {
            problems.push(format!(
                "{f}: id must be null (it is the id in one Grafana)"
            ));
        }
        if j["title"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{f}: no title"));
        }

        // Variables: the datasource, then pool and zone.
        let vars = variables(j);
        let var = |name: &str| vars.iter().find(|v| v["name"] == name).copied();
        match var("datasource") {
            Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
            _ => problems.push(format!(
                "{f}: needs a `datasource` variable of type datasource, query prometheus"
            )),
        }
        for name in ["pool", "zone"] {
            match var(name) {
                Some(v) if v["type"] == "query" && variable_query(v).is_some() => {
                    if v["datasource"]["uid"] != DATASOURCE_UID {
                        problems.push(format!("{f}: variable {name} must query {DATASOURCE_UID}"));
                    }
                }
                _ => problems.push(format!("{f}: needs a `{name}` query variable")),
            }
        }
        if var("zone").is_some_and(|v| v["multi"] != true || v["includeAll"] != true) {
            problems.push(format!("{f}: zone must be multi-value with All"));
        }
        let defined: BTreeSet<String> = vars
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .chain(BUILTIN_VARIABLES.iter().map(|s| s.to_string()))
            .collect();

        // Panels: unique ids, inside the 24-column grid, no overlap, all on the variable datasource.
        let all = panels(j);
        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
        for p in &all {
            let title = p["title"].as_str().unwrap_or("").to_string();
            let at = format!("{f}: panel {title:?}");
            if title.is_empty() {
                problems.push(format!("{f}: a panel has no title"));
            }
            match p["id"].as_u64() {
                Some(id) if ids.insert(id) => {}
                Some(id) => problems.push(format!("{at}: id {id} is not unique")),
                None => problems.push(format!("{at}: no numeric id")),
            }
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or(u64::MAX));
            if [x, y, w, h].contains(&u64::MAX) || w == 0 || h == 0 || x + w > 24 {
                problems.push(format!("{at}: gridPos {g} is not within 24 columns"));
            } else {
                for (other, [ox, oy, ow, oh]) in &boxes {
                    if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                        problems.push(format!("{at}: overlaps panel {other:?}"));
                    }
                }
                boxes.push((title.clone(), [x, y, w, h]));
            }
            for text in [&p["title"], &p["description"]] {
                check_variables(text.as_str().unwrap_or(""), &defined, &at, &mut problems);
            }
            if p["type"] == "row" {
                continue;
            }
            if p["datasource"]["uid"] != DATASOURCE_UID {
                problems.push(format!("{at}: datasource must be {DATASOURCE_UID}"));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{at}: no queries"));
            }
            let mut refs = BTreeSet::new();
            for t in &targets {
                if t["datasource"]["uid"] != DATASOURCE_UID {
                    problems.push(format!(
                        "{at}: a query's datasource must be {DATASOURCE_UID}"
                    ));
                }
                if !refs.insert(t["refId"].as_str().unwrap_or("").to_string()) {
                    problems.push(format!("{at}: refId {} twice", t["refId"]));
                }
                let expr = t["expr"].as_str().unwrap_or("");
                if expr.trim().is_empty() {
                    problems.push(format!("{at}: a query has no expr"));
                }
                check_variables(expr, &defined, &at, &mut problems);
                check_variables(
                    t["legendFormat"].as_str().unwrap_or(""),
                    &defined,
                    &at,
                    &mut problems,
                );
            }
        }
        for v in &vars {
            if let Some(q) = variable_query(v) {
                let at = format!("{f}: variable {}", v["name"]);
                check_variables(q, &defined, &at, &mut problems);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `$name`, `${name}` or `[[name]]` in `text` names a defined variable.
fn check_variables(text: &str, defined: &BTreeSet<String>, at: &str, problems: &mut Vec<String>) {
    for name in variable_refs(text) {
        if !defined.contains(&name) {
            problems.push(format!("{at}: uses undefined variable ${name}"));
        }
    }
}

fn variable_refs(text: &str) -> Vec<String> {
    let re = regex::Regex::new(
        r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]",
    )
    .unwrap();
    re.captures_iter(text)
        .map(|c| {
            c.get(1)
                .or(c.get(2))
                .or(c.get(3))
                .unwrap()
                .as_str()
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PromQL: just enough to find every selector (metric name and label matchers) in a query.

/// `label`, operator (`=`, `!=`, `=~`, `!~`), value.
type LabelMatcher = (String, String, String);

#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<LabelMatcher>,
}

const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
];
/// Keywords followed by a list of label names, not an expression.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The selectors of a PromQL expression whose Grafana variables are already substituted.
/// Strings, label lists, ranges, numbers, durations, functions and keywords are not names.
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let b = expr.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i)?;
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'[' {
            let end = expr[i..]
                .find(']')
                .ok_or_else(|| format!("unclosed [ in {expr}"))?;
            i += end + 1;
        } else if c == b'{' {
            return Err(format!("selector without a metric name in {expr}"));
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), exponents (1e-3), hex.
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if b.get(next) == Some(&b'(') {
                    let end = expr[next..]
                        .find(')')
                        .ok_or_else(|| format!("unclosed ( after {word} in {expr}"))?;
                    i = next + end + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || b.get(next) == Some(&b'(')
                || ["by", "without"].iter().any(|k| {
                    expr[next..].starts_with(k)
                        && !b.get(next + k.len()).copied().is_some_and(ident_char)
                })
            {
                // A keyword, a function or aggregation being called, or `sum by (...) (...)`.
            } else {
                let mut sel = Selector {
                    name: word.to_string(),
                    matchers: Vec::new(),
                };
                if b.get(next) == Some(&b'{') {
                    let (matchers, end) = label_matchers(expr, next)?;
                    sel.matchers = matchers;
                    i = end;
                }
                out.push(sel);
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// Index just past the string literal starting at `i`.
fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err("unclosed string".into())
}

/// Parses `{label op "value", ...}` starting at the `{` at `i`; returns the matchers and the index
/// past the `}`.
fn label_matchers(expr: &str, i: usize) -> Result<(Vec<LabelMatcher>, usize), String> {
    let b = expr.as_bytes();
    let mut j = i + 1;
    let mut out = Vec::new();
    let err = |what: &str| format!("{what} in label matchers of {expr}");
    loop {
        while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b',') {
            j += 1;
        }
        match b.get(j) {
            None => return Err(err("unclosed {")),
            Some(b'}') => return Ok((out, j + 1)),
            _ => {}
        }
        let start = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        let label = expr[start..j].to_string();
        if label.is_empty() {
            return Err(err("expected a label name"));
        }
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| expr[j..].starts_with(op))
            .ok_or_else(|| err("expected =, !=, =~ or !~"))?;
        j += op.len();
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if !matches!(b.get(j), Some(b'"' | b'\'' | b'`')) {
            return Err(err("expected a quoted value"));
        }
        let end = skip_string(b, j)?;
        let raw = &expr[j + 1..end - 1];
        let value = raw
            .replace("\\\\", "\u{0}")
            .replace('\\', "")
            .replace('\u{0}', "\\");
        out.push((label, op.to_string(), value));
        j = end;
    }
}

#[test]
fn the_promql_reader_finds_names_and_only_names() {
    let s = selectors(
        r#"histogram_quantile(0.99, sum by (method, le) (rate(a_bucket{x="}", y=~"a|b"}[5m])))
           / on (method) group_left bar offset 1h + sum(baz) without (zone) > bool 1e-3 and inf"#,
    )
    .unwrap();
    let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "bar", "baz"]);
    assert_eq!(
        s[0].matchers,
        [
            ("x".to_string(), "=".to_string(), "}".to_string()),
            ("y".into(), "=~".into(), "a|b".into())
        ]
    );
    assert_eq!(selectors("vector(2) - 0.5").unwrap(), []);
    assert!(selectors(r#"{__name__="x"}"#).is_err());
}

/// Grafana variables replaced by the values this test's redbridge has (`$zone` as Grafana formats
/// a multi-value for Prometheus).
fn substitute(text: &str, values: &BTreeMap<&str, String>) -> String {
    let re = regex::Regex::new(
        r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]",
    )
    .unwrap();
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let name = c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str();
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no test value for ${name}"))
    })
    .into_owned()
}

// ---------------------------------------------------------------------------------------------
// redbridge's /metrics.

/// One sample: its name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
}

fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let name = l[..name_end].to_string();
            let mut labels = HashMap::new();
            if l[name_end..].starts_with('{') {
                let (m, _) = label_matchers(l, name_end).expect("redbridge's labels parse");
                labels = m.into_iter().map(|(k, _, v)| (k, v)).collect();
            }
            Sample { name, labels }
        })
        .collect()
}

fn matches(sample: &Sample, sel: &Selector) -> bool {
    sample.name == sel.name
        && sel.matchers.iter().all(|(label, op, value)| {
            let have = sample.labels.get(label).map(String::as_str).unwrap_or("");
            let re = || regex::Regex::new(&format!("^(?:{value})$")).expect("valid regex");
            match op.as_str() {
                "=" => have == value,
                "!=" => have != value,
                "=~" => re().is_match(have),
                "!~" => !re().is_match(have),
                _ => unreachable!(),
            }
        })
}

fn pool_config(envoy: [&str; 2], vllm: [&str; 2], triton: &str, epp: &str) -> String {
    format!(
        r#"
pools:
  - name: llama
    namespace: ml
    window: 2s
    interval: 200ms
    staleAfter: 1s
    sources:
      - name: gateway
        profile: envoy
        matchers: ['envoy_cluster_name="backend"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: servers
        profile: vllm
        matchers: ['model_name="facebook/opt-125m"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: triton
        profile: triton
        matchers: ['model="densenet_onnx"']
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
      - name: picker
        profile: epp
        targets:
          - {{ url: "{}", zone: zone-a }}
          - {{ url: "{}", zone: zone-b }}
"#,
        envoy[0], envoy[1], vllm[0], vllm[1], triton, triton, epp, epp
    )
}

/// Starts redbridge on fixtures and returns its `/metrics` once every kind of series is there.
async fn metrics_of_a_busy_redbridge() -> String {
    let envoy = fixture("envoy-1.40-real-capture.prom");
    let vllm = fixture("vllm-v0-v1-mixed-sample.prom");
    let urls = [
        serve_static(envoy.clone()).await,
        serve_static(envoy).await,
        serve_static(vllm.clone()).await,
        serve_static(vllm).await,
        serve_static(fixture("triton-sample.prom")).await,
        // The picker's pool gauge (not in the capture) in the shape llm-d exports it.
        serve_static(format!(
            "{}# TYPE llm_d_epp_flow_control_pool_saturation gauge\nllm_d_epp_flow_control_pool_saturation{{inference_pool=\"llama\"}} 0.4\n",
            fixture("epp-request-duration-sample.prom")
        ))
        .await,
    ];
    let rb = Redbridge::start(&pool_config(
        [&urls[0], &urls[1]],
        [&urls[2], &urls[3]],
        &urls[4],
        &urls[5],
    ))
    .await;

    // The controller's view, as the ZonalScaledObject controller reports it.
    for (zone, ready, spilled_out, spilled_in) in [("zone-a", 3, 4.0, 0.0), ("zone-b", 2, 0.0, 4.0)]
    {
        rb.state.metrics.set_zone_status(
            "ml/llama",
            zone,
            ZoneStatus {
                ready,
                starting: 1,
                desired: ready + 1,
                local_demand: 20.0,
                spilled_in,
                spilled_out,
                weight: Some(0.5),
            },
        );
    }
    rb.state.metrics.reconciled("ok");
    rb.state.metrics.reconciled("apply");

    let http = reqwest::Client::new();
    let url = format!("http://{}/metrics", rb.http);
    let wanted = [
        r#"redbridge_signal_value{namespace="ml",pool="llama",zone="zone-a",signal="requests_per_second"}"#,
        r#"redbridge_signal_value{namespace="ml",pool="llama",zone="zone-b",signal="kv_cache_utilization"}"#,
        r#"redbridge_signal_value{namespace="ml",pool="llama",zone="all",signal="time_to_first_token_p95"}"#,
        "\nredbridge_ready 1\n",
    ];
    eventually(Duration::from_secs(20), "a full window of data", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = http.get(url).send().await.ok()?.text().await.ok()?;
            wanted.iter().all(|w| body.contains(w)).then_some(())
        }
    })
    .await;

    // KEDA's calls: one answered, one refused, so both kinds of code exist.
    let mut client = rb.client().await;
    let so = object_ref(
        "ml",
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "requests_per_second"),
            ("target", "10"),
        ],
    );
    common::get_metrics(&mut client, so, MetricName::FromSpec)
        .await
        .unwrap();
    // The latency trigger the model-pool dashboard draws as its target line.
    let latency = object_ref(
        "ml",
        &[
            ("pool", "llama"),
            ("zone", "zone-a"),
            ("signal", "latency_p95"),
            ("target", "2"),
        ],
    );
    client.get_metric_spec(latency).await.unwrap();
    let missing = object_ref(
        "ml",
        &[("pool", "nope"), ("signal", "queue_depth"), ("target", "1")],
    );
    assert!(client.is_active(missing).await.is_err());

    let body = http.get(&url).send().await.unwrap().text().await.unwrap();
    rb.stop().await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_queries_series_redbridge_exports() {
    let body = metrics_of_a_busy_redbridge().await;
    let samples = samples(&body);
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for d in dashboards() {
        let f = &d.file;
        // Variables as this redbridge has them; custom and textbox variables at their defaults.
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        values.insert("pool", "llama".into());
        values.insert("zone", "(zone-a|zone-b)".into());
        values.insert("__rate_interval", "1m".into());
        values.insert("__interval", "15s".into());
        values.insert("__range", "3h".into());
        for v in variables(&d.json) {
            if matches!(v["type"].as_str(), Some("custom" | "textbox" | "constant")) {
                let name = v["name"].as_str().unwrap();
                let value = v["current"]["value"]
                    .as_str()
                    .or(v["query"].as_str())
                    .unwrap_or_default();
                values.insert(name, value.to_string());
            }
        }

        let mut queries: Vec<(String, String)> = Vec::new();
        for p in panels(&d.json) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                queries.push((
                    format!("{f}: panel {:?}", p["title"].as_str().unwrap_or_default()),
                    expr.to_string(),
                ));
            }
        }
        for v in variables(&d.json) {
            if v["type"] != "query" {
                continue;
            }
            let q = variable_query(v).unwrap_or_default();
            let at = format!("{f}: variable {}", v["name"]);
            // label_values(selector, label): the selector is PromQL, the label must exist on it.
            let Some(args) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
            else {
                problems.push(format!(
                    "{at}: only label_values(selector, label) is checked: {q}"
                ));
                continue;
            };
            let (selector, label) = args.rsplit_once(',').unwrap_or(("", args));
            let (selector, label) = (substitute(selector, &values), label.trim().to_string());
            match selectors(&selector) {
                Ok(sels) if sels.len() == 1 => {
                    let hit = samples
                        .iter()
                        .any(|s| matches(s, &sels[0]) && s.labels.contains_key(&label));
                    if !hit {
                        problems.push(format!("{at}: no sample of {selector} has label {label}"));
                    }
                }
                other => problems.push(format!("{at}: expected one selector in {q}: {other:?}")),
            }
            used.insert(selector.split('{').next().unwrap().trim().to_string());
        }

        for (at, expr) in queries {
            let expr = substitute(&expr, &values);
            let sels = match selectors(&expr) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            for sel in sels {
                used.insert(sel.name.clone());
                if !names.contains(sel.name.as_str()) {
                    problems.push(format!("{at}: {} is not in redbridge's /metrics", sel.name));
                } else if !samples.iter().any(|s| matches(s, &sel)) {
                    problems.push(format!(
                        "{at}: no sample of {} matches {:?}",
                        sel.name, sel.matchers
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n/metrics was:\n{body}",
        problems.join("\n")
    );

    // The dashboards cover what an operator needs from redbridge's own series.
    for family in [
        "redbridge_signal_value",
        "redbridge_signal_available",
        "redbridge_target_up",
        "redbridge_target_scrape_duration_seconds",
        "redbridge_target_staleness_seconds",
        "redbridge_target_scrapes_total",
        "redbridge_target_scrape_errors_total",
        "redbridge_grpc_requests_total",
        "redbridge_grpc_request_duration_seconds_bucket",
        "redbridge_ready",
        "redbridge_zone_replicas",
        "redbridge_zone_demand",
        "redbridge_reconciles_total",
    ] {
        assert!(used.contains(family), "no dashboard panel shows {family}");
    }
}

// ---------------------------------------------------------------------------------------------
// Naming conventions, as promtool checks them.

/// promtool: $REDBRIDGE_PROMTOOL, else `promtool` on PATH. Missing is a failure, never a skip.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("REDBRIDGE_PROMTOOL").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "REDBRIDGE_PROMTOOL={} does not exist; run scripts/test-all.sh, which installs it",
            p.display()
        );
        return p;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found (set REDBRIDGE_PROMTOOL or put it on PATH): run scripts/test-all.sh, \
             which installs it (Debian package `prometheus`)"
        )
    })
}

fn promtool_findings(body: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

#[test]
fn promtool_flags_a_broken_convention() {
    // So a silent promtool cannot pass the real check below.
    let (clean, findings) = promtool_findings(
        "# HELP bad_count Not a counter name.\n# TYPE bad_count counter\nbad_count 1\n",
    );
    assert!(!clean && findings.contains("_total"), "{findings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redbridge_series_follow_prometheus_naming_conventions() {
    let body = metrics_of_a_busy_redbridge().await;
    let (clean, findings) = promtool_findings(&body);
    assert!(
        clean,
        "promtool check metrics found problems in redbridge's /metrics:\n{findings}\n/metrics was:\n{body}"
    );
}
