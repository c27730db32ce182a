//! The HTTP port: `/metrics` (redbridge's own series), `/healthz`, `/readyz`, and `/pools`, a
//! JSON explanation of every pool, zone and signal: its value or why it has none, and every
//! target's health.

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

async fn metrics_handler(AxumState(state): AxumState<Arc<State>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state),
    )
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
                        let v = match state.evaluate_at(&r, now) {
                            Ok(v) => {
                                json!({ "value": v, "source": r.pool.pool.sources[r.source_index].name })
                            }
                            Err(e) => json!({ "unavailable": e.to_string() }),
                        };
                        signals.insert(r.query.signal.name(), v);
                    }
                    json!({ "zone": zone, "signals": signals })
                })
                .collect();
            let targets: Vec<Value> = p
                .targets
                .iter()
                .map(|t| {
                    let g = t.lock();
                    let h = &g.health;
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
                "zones": zones,
                "targets": targets,
            })
        })
        .collect();
    json!({ "ready": state.readiness().err().map_or(json!(true), |why| json!(why)), "pools": pools })
}

async fn pools(AxumState(state): AxumState<Arc<State>>) -> Json<Value> {
    Json(explain(&state))
}
