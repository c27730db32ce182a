//! The `redbridge` binary as an operator runs it: configuration errors exit 64 naming the file,
//! pool and field; `serve` comes up on the given ports and drains on SIGTERM; logs are plain text
//! off a terminal and, with `--log-json`, one JSON object per line that any parser reads whole.

use crate::common::free_port;
use crate::k8s::{cluster, fake_api};

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_redbridge");

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn bad_configuration_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "pools.yaml",
        "pools:\n  - name: llama\n    sources:\n      - profile: envoy\n        targets:\n          - { url: \"http://127.0.0.1:1/stats\", zone: \"\" }\n",
    );
    for sub in ["check", "serve"] {
        let out = Command::new(BIN)
            .args([sub, "--config", &bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{sub}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{bad}: pool \"llama\": sources[0].targets[0].zone: must not be empty"
            )),
            "{sub}: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml: cannot read"));
}

#[test]
fn check_prints_the_pools() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "pools.yaml",
        "pools:\n  - name: llama\n    namespace: ml\n    sources:\n      - profile: vllm\n        targets:\n          - { url: \"http://127.0.0.1:1/metrics\", zone: zone-a }\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", &good])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pool llama (namespace ml)")
            && stdout.contains("source vllm (profile vllm): 1 targets"),
        "{stdout}"
    );
}

#[test]
fn serve_drains_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pools.yaml",
        "pools:\n  - name: llama\n    sources:\n      - profile: envoy\n        targets:\n          - { url: \"http://127.0.0.1:1/stats\", zone: zone-a }\n",
    );
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--config", &config])
        .args([
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("200 OK") {
                up = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "/healthz did not answer within 10 s");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok(),
        "gRPC port is listening"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("redbridge did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_printed_demo_script_is_a_valid_scenario() {
    let out = Command::new(BIN)
        .args(["demo", "--print-scenario"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    let scenario =
        redbridge::demo::scenario::Scenario::from_yaml(&yaml).expect("the printed script parses");
    assert_eq!(
        scenario,
        redbridge::demo::scenario::Scenario::default_demo(
            redbridge::demo::scenario::DEFAULT_DEMO_SECONDS
        )
    );
}

/// Runs the binary with `args` until a line of its stderr contains `until`, then stops it with
/// SIGTERM; returns every line it wrote to stderr (a pipe, as under a supervisor or `2>file`).
fn stderr_until(args: &[&str], until: &str) -> Vec<Vec<u8>> {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("REDBRIDGE_LOG_JSON")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stderr = std::io::BufReader::new(stderr);
        loop {
            let mut line = Vec::new();
            match stderr.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.ends_with(b"\n") {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &Vec<u8>| String::from_utf8_lossy(l).contains(until))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let text: Vec<_> = lines.iter().map(|l| String::from_utf8_lossy(l)).collect();
                panic!("no {until:?} within 20 s on stderr:\n{}", text.join("\n"));
            }
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(status.success(), "exit status {status}");
    lines
}

fn serve_args(config: &str) -> Vec<String> {
    [
        "serve",
        "--config",
        config,
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pools.yaml",
        "pools:\n  - name: llama\n    sources:\n      - profile: envoy\n        targets:\n          - { url: \"http://127.0.0.1:1/stats\", zone: zone-a }\n",
    );
    let args = serve_args(&config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = stderr_until(&args, "Starting redbridge");
    let text: Vec<_> = lines.iter().map(|l| String::from_utf8_lossy(l)).collect();
    assert!(
        text.iter().any(|l| l.contains("Shutting down")),
        "{text:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains(&0x1b)),
        "ANSI escape codes in piped logs:\n{text:#?}"
    );
}

/// A JSON value parsed as strictly as the strictest log pipeline: a key twice is an error
/// (serde_json, like most parsers, would silently keep one of the two).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate keys")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.insert(key.clone(), value).is_some() {
                return Err(A::Error::custom(format!("key {key:?} twice")));
            }
        }
        Ok(Strict(Value::Object(object)))
    }
}

fn strict(line: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(line).map(|Strict(v)| v)
}

#[test]
fn the_strict_parser_refuses_a_key_twice() {
    assert_eq!(
        strict(r#"{"a":[1,{"b":null}],"c":"d"}"#).unwrap(),
        json!({"a": [1, {"b": null}], "c": "d"})
    );
    let twice = r#"{"fields":{"message":"Invalid ZonalScaledObject","message":"spec.x: bad"}}"#;
    assert!(strict(twice)
        .unwrap_err()
        .to_string()
        .contains("\"message\" twice"));
}

#[test]
fn json_logs_are_objects_with_one_message_each() {
    // The controller's log lines, against a fake API server holding a spec redbridge refuses.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = runtime.block_on(fake_api::FakeApi::start());
    let mut zso = cluster::zso("llama", 8000);
    zso["spec"]["sources"]["gateway"]["routeMatcher"] = json!("llama-route");
    api.put(fake_api::ZSOS, zso);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\n\
             current-context: fake\n",
            api.url
        ),
    );
    let lines = stderr_until(
        &[
            "--log-json",
            "controller",
            "--kubeconfig",
            &kubeconfig,
            "--scaler-address",
            cluster::SCALER,
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        "Invalid ZonalScaledObject",
    );
    let mut invalid = None;
    for line in &lines {
        let line = String::from_utf8_lossy(line);
        let event = strict(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let message = event["fields"]["message"].as_str();
        assert!(message.is_some(), "no message: {line}");
        if message == Some("Invalid ZonalScaledObject") {
            invalid = Some(event.clone());
        }
    }
    // What was wrong is still in the line, under its own key.
    let invalid = invalid.unwrap();
    assert!(
        invalid["fields"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(k, v)| k != "message"
                && v.as_str()
                    .is_some_and(|v| v.contains("spec.sources.gateway.routeMatcher"))),
        "{invalid}"
    );
    drop(runtime);
}
