//! The `redbridge` binary as an operator runs it: configuration errors exit 64 naming the file,
//! pool and field; `serve` comes up on the given ports and drains on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        redbridge::demo::scenario::Scenario::default_demo(120.0)
    );
}
