//! The HTTP port: `/metrics` (redbridge's own series), `/healthz`, `/readyz` (this replica can
//! answer: see [`State::readiness`]), and `/pools`, a JSON explanation of every pool: whether each
//! source has data, every zone and signal with its value or why it has none, and every target's
//! health.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::state::State;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/pools", get(pools))
        .with_state(state)
}

pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// How much lower than the gRPC answers and the scrapes the render thread runs (a nice value):
/// a render holding a core for a second would otherwise delay every answer KEDA waits for.
const RENDER_NICE: i32 = 10;

type RenderJob = Box<dyn FnOnce() + Send>;

/// The one thread that renders `/metrics` and `/pools`, at [`RENDER_NICE`]; `None` if it could
/// not be started. Renders queue for it, so two scrapers at once take one core, not two.
fn render_thread() -> Option<&'static std::sync::mpsc::Sender<RenderJob>> {
    static THREAD: std::sync::OnceLock<Option<std::sync::mpsc::Sender<RenderJob>>> =
        std::sync::OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (jobs, queue) = std::sync::mpsc::channel::<RenderJob>();
            let spawned = std::thread::Builder::new()
                .name("redbridge-render".into())
                .spawn(move || {
                    lower_priority();
                    for job in queue {
                        // A panicking render drops its answer (the caller gets an error) and
                        // leaves the thread serving the next one.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            match spawned {
                Ok(_) => Some(jobs),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the render thread; /metrics and /pools will fail");
                    None
                }
            }
        })
        .as_ref()
}

/// Lowers the calling thread's priority by [`RENDER_NICE`] from the process's (on Linux the nice
/// value is per thread: raising it is always allowed and touches no other thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None)
            .and_then(|now| setpriority_process(None, (now + RENDER_NICE).min(19)));
        if let Err(e) = lowered {
            tracing::warn!(error = %e, "cannot lower the render thread's priority; renders compete with answers");
        }
    }
}

/// Runs `f` on the render thread. Rendering `/metrics` or `/pools` evaluates every signal of
/// every pool and reads every target: most of a second of CPU with a hundred pools across fifty
/// zones, which on an async worker would hold up the gRPC answers and scrapes queued behind it,
/// and at the same priority would still take half of a core they share.
async fn on_render_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    let failed = |why: &str| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {why}\n"),
        )
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    render_thread()
        .ok_or_else(|| failed("the render thread could not be started"))?
        .send(Box::new(move || {
            // A caller gone by now (a scraper that timed out) needs no render.
            if !answer.is_closed() {
                let _ = answer.send(f());
            }
        }))
        .map_err(|_| failed("the render thread has stopped"))?;
    answered
        .await
        .map_err(|_| failed("the render panicked (see the log)"))
}

async fn metrics_handler(AxumState(state): AxumState<Arc<State>>) -> impl IntoResponse {
    let text = on_render_thread(move || metrics::render(&state)).await?;
    Ok::<_, (StatusCode, String)>((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

async fn ready(AxumState(state): AxumState<Arc<State>>) -> impl IntoResponse {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Everything a person needs to see why a pool scales the way it does.
pub fn explain(state: &State) -> Value {
    let now = state.clock.now();
    let pools: Vec<Value> = state
        .pools()
        .iter()
        .map(|p| {
            let zones: Vec<Value> = p
                .pool
                .zones()
                .into_iter()
                .map(|zone| {
                    let mut signals = serde_json::Map::new();
                    for r in state.exported_signals(p, Some(zone)) {
                        let source = &r.pool.pool.sources[r.source_index].name;
                        let v = match state.evaluate_at(&r, now) {
                            Ok(v) => json!({ "value": v, "source": source }),
                            Err(e) => json!({ "unavailable": e.to_string(), "source": source }),
                        };
                        signals.insert(r.query.signal.name(), v);
                    }
                    json!({ "zone": zone, "signals": signals })
                })
                .collect();
            let sources: Vec<Value> = state
                .source_status(p, now)
                .into_iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "has_data": s.has_data(),
                        "full_window": s.full_window,
                        "targets": (!s.prometheus).then_some(s.targets),
                        "answering": (!s.prometheus).then_some(s.answering),
                        "problem": s.problem,
                    })
                })
                .collect();
            let targets: Vec<Value> = p
                .targets
                .iter()
                .map(|t| {
                    let g = t.lock();
                    let h = &g.health;
                    // The clock read after the lock, as /metrics does: a target read late in a
                    // long render is as fresh as it is.
                    let now = state.clock.now();
                    json!({
                        "url": t.key.url,
                        "source": t.key.source,
                        "zone": t.key.zone,
                        "up": h.up,
                        "staleness_seconds": h.last_success.map(|at| now - at),
                        "last_scrape_seconds": h.last_duration,
                        "last_error": h.last_error,
                        "scrapes": h.scrapes,
                        "failures": h.failures,
                        "samples_in_window": g.samples().len(),
                    })
                })
                .collect();
            json!({
                "name": p.pool.name,
                "namespace": p.pool.namespace,
                "window_seconds": p.pool.window.as_secs_f64(),
                "stale_after_seconds": p.pool.stale_after.as_secs_f64(),
                "min_target_ratio": p.pool.min_target_ratio,
                "sources": sources,
                "zones": zones,
                "targets": targets,
            })
        })
        .collect();
    json!({ "ready": state.readiness().err().map_or(json!(true), |why| json!(why)), "pools": pools })
}

async fn pools(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<Value>, (StatusCode, String)> {
    Ok(Json(on_render_thread(move || explain(&state)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Scratch;
    use crate::model::{Clock, Config, Signal};

    /// A ZonalScaledObject's pool: the gateway was found in zone-b only, the model servers in
    /// zone-a; both profiles provide `queue_depth`.
    const POOL: &str = r#"
pools:
  - name: llama
    namespace: ml
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://127.0.0.1:1/stats/prometheus", zone: zone-b }
      - name: model-server
        profile: vllm
        targets:
          - { url: "http://127.0.0.1:2/metrics", zone: zone-a }
"#;

    fn zone_signal<'v>(explained: &'v Value, zone: &str, signal: &str) -> &'v Value {
        let zones = explained["pools"][0]["zones"].as_array().expect("zones");
        let z = zones
            .iter()
            .find(|z| z["zone"] == zone)
            .expect("zone listed");
        &z["signals"][signal]
    }

    #[tokio::test]
    async fn renders_run_below_the_answers_and_survive_a_panic() {
        #[cfg(target_os = "linux")]
        {
            let mine = rustix::process::getpriority_process(None).expect("own priority");
            let render = on_render_thread(|| rustix::process::getpriority_process(None))
                .await
                .expect("answered")
                .expect("render priority");
            assert_eq!(
                render,
                (mine + RENDER_NICE).min(19),
                "the render thread is niced"
            );
            assert_eq!(
                rustix::process::getpriority_process(None).expect("own priority"),
                mine,
                "only the render thread is"
            );
        }
        let (code, why) = on_render_thread(|| -> u32 { panic!("a render bug") })
            .await
            .expect_err("a panicking render answers an error");
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(why.contains("panicked"), "{why}");
        assert_eq!(
            on_render_thread(|| 7).await,
            Ok(7),
            "the thread serves the next render"
        );
    }

    #[test]
    fn pools_explains_each_signal_through_the_source_its_trigger_names() {
        let config = Config::from_yaml(POOL, "test.yaml").expect("valid test config");
        let state = State::new(&config, Clock::default());
        let p = state.pools()[0].clone();
        let (si, server) = p
            .targets
            .iter()
            .find(|t| t.key.source == "model-server")
            .map(|t| (t.source_index, t))
            .expect("model-server target");
        let body = b"vllm:num_requests_waiting{model_name=\"llama\"} 24\n";
        let (reading, _) = p.extractors[si]
            .extract(body, &mut Scratch::default())
            .expect("parses");
        server.record_success(state.clock.now(), 0.01, body.len(), reading, 30.0);

        // The trigger reads queue_depth from the model servers.
        state.set_signal_sources(
            "ml",
            "llama",
            vec![(Signal::QueueDepth, "model-server".into())],
        );
        let explained = explain(&state);
        let queue = zone_signal(&explained, "zone-a", "queue_depth");
        assert_eq!(queue["value"], json!(24.0), "{explained:#}");
        assert_eq!(queue["source"], "model-server", "{explained:#}");

        // Without a registration, the pool's first source that provides it; the answer says
        // which source it was, also when it has no value.
        state.set_signal_sources("ml", "llama", Vec::new());
        let explained = explain(&state);
        let queue = zone_signal(&explained, "zone-a", "queue_depth");
        assert_eq!(queue["source"], "gateway", "{explained:#}");
        assert!(queue["unavailable"].is_string(), "{explained:#}");
    }

    #[test]
    fn pools_reports_per_source_whether_it_has_data() {
        let config = Config::from_yaml(POOL, "test.yaml").expect("valid test config");
        let state = State::new(&config, Clock::default());
        let p = state.pools()[0].clone();
        for t in p.targets.iter().filter(|t| t.key.source == "gateway") {
            t.record_failure(state.clock.now(), 0.01, "connection refused".into(), 30.0);
        }
        let explained = explain(&state);
        let sources = &explained["pools"][0]["sources"];
        assert_eq!(sources[0]["name"], "gateway");
        assert_eq!(sources[0]["has_data"], false);
        assert_eq!(
            sources[0]["problem"],
            "none of its 1 targets has answered yet; last error: connection refused"
        );
        assert_eq!(sources[1]["name"], "model-server");
        assert_eq!(sources[1]["targets"], 1);
    }
}
