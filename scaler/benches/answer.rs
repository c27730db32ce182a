//! The answer path alone, in process: what one GetMetrics costs redbridge, without the network,
//! the fleet or the load generator competing for the cores.
//!
//! A pool shaped like one of the KEDA load bench's (`redbridge fleet --pools 100` at 5,000
//! targets: one Envoy gateway and 50 vLLM servers over 50 zones, a 30 s window at 1 s), each
//! target holding a full window of real captures. Measured: the gRPC handler (resolve from the
//! cache, evaluate, build the answer) for a zonal rate and a pool-wide quantile, and the same
//! evaluations alone.
//!
//! Run: `cargo bench --bench answer -- --warm-up-time 1 --measurement-time 3`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use redbridge::answer::grpc::Scaler;
use redbridge::config::trigger::TriggerQuery;
use redbridge::extract::Scratch;
use redbridge::model::{Clock, Config};
use redbridge::proto::external_scaler_server::ExternalScaler;
use redbridge::proto::{GetMetricsRequest, ScaledObjectRef};
use redbridge::state::State;
use tokio_util::sync::CancellationToken;

const ZONES: usize = 50;
const WINDOW: usize = 30;
const VLLM: &str = "exposition/vllm-v0-v1-mixed-sample.prom";
const ENVOY: &str = "exposition/envoy-stats-sample.prom";

fn pool_yaml() -> String {
    let mut y = String::from(
        "pools:\n  - name: llama\n    namespace: ml\n    window: 30s\n    interval: 1s\n    sources:\n      - name: gateway\n        profile: envoy\n        targets:\n          - { url: \"http://10.0.0.1:9901/stats/prometheus\", zone: zone-1 }\n      - name: servers\n        profile: vllm\n        targets:\n",
    );
    for z in 0..ZONES {
        y.push_str(&format!(
            "          - {{ url: \"http://10.1.0.{z}:8000/metrics\", zone: zone-{} }}\n",
            z + 1
        ));
    }
    y
}

/// Bodies read from `path` with every counter-like number bumped by `i`, so rates are not 0.
fn body(text: &str, i: usize) -> String {
    text.lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((head, v)) if !l.starts_with('#') && v.parse::<f64>().is_ok() => {
                let v: f64 = v.parse().unwrap_or(0.0);
                format!("{head} {}\n", v + i as f64)
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

fn state() -> Arc<State> {
    let (vllm, envoy) = (
        redbridge_fixtures::read(VLLM),
        redbridge_fixtures::read(ENVOY),
    );
    let config = Config::from_yaml(&pool_yaml(), "bench.yaml").expect("valid pool");
    let state = Arc::new(State::new(&config, Clock::default()));
    let p = state.pools()[0].clone();
    let now = state.clock.now();
    let mut scratch = Scratch::default();
    for i in 0..=WINDOW {
        let (v, e) = (body(&vllm, i), body(&envoy, i));
        for t in &p.targets {
            let text = if t.source_index == 0 { &e } else { &v };
            let (reading, _) = p.extractors[t.source_index]
                .extract(text.as_bytes(), &mut scratch)
                .expect("the fixture parses");
            let at = now - (WINDOW - i) as f64;
            t.record_success(at, 0.01, text.len(), reading, WINDOW as f64 + 5.0);
        }
    }
    state
}

fn object(signal: &str, zone: Option<&str>) -> ScaledObjectRef {
    let mut meta = HashMap::from([
        ("pool".to_string(), "llama".to_string()),
        ("signal".to_string(), signal.to_string()),
        ("target".to_string(), "10".to_string()),
        ("source".to_string(), "servers".to_string()),
    ]);
    if let Some(z) = zone {
        meta.insert("zone".into(), z.into());
    }
    ScaledObjectRef {
        name: "so".into(),
        namespace: "ml".into(),
        scaler_metadata: meta,
    }
}

fn main() {
    let state = state();
    let scaler = Scaler::new(state.clone(), CancellationToken::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut c = Criterion::default().configure_from_args();
    let cases = [
        ("zonal rate", object("requests_per_second", Some("zone-7"))),
        ("pool-wide p95", object("time_to_first_token", None)),
        ("pool-wide gauge", object("queue_depth", None)),
    ];
    for (name, so) in &cases {
        let request = GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: String::new(),
        };
        let answer = runtime.block_on(scaler.get_metrics(tonic::Request::new(request.clone())));
        if let Err(e) = &answer {
            eprintln!("{name}: no value ({e:?}); measuring the refusal");
        }
        c.bench_function(&format!("GetMetrics {name}"), |b| {
            b.iter(|| {
                let r = runtime
                    .block_on(scaler.get_metrics(tonic::Request::new(black_box(request.clone()))));
                black_box(r.is_ok())
            })
        });
        let query = TriggerQuery::from_metadata(&so.scaler_metadata).expect("valid metadata");
        let resolved = state.resolve("ml", query).expect("resolves");
        c.bench_function(&format!("evaluate {name}"), |b| {
            b.iter(|| black_box(state.evaluate(black_box(&resolved))))
        });
    }
    c.final_summary();
}
