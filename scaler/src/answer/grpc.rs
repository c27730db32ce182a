//! The KEDA `externalscaler` gRPC service.
//!
//! Every call parses the trigger metadata (cached: GetMetricSpec is on KEDA's hot path), binds it
//! to a pool and answers from the live windows. Missing data is UNAVAILABLE, never a zero: the HPA
//! then holds its replica count and KEDA's `fallback` can take over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info};

use crate::config::trigger::TriggerQuery;
use crate::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::state::{QueryError, Resolved, State, RESOLVE_CACHE_TTL};

/// TLS files for the gRPC port. With `client_ca`, clients must present a certificate (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS needs both a certificate and a key (--tls-cert and --tls-key)")]
    TlsIncomplete,
    #[error("gRPC server")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Scaler {
    state: Arc<State>,
    resolved: moka::sync::Cache<String, Arc<Resolved>>,
    shutdown: CancellationToken,
}

impl Scaler {
    pub fn new(state: Arc<State>, shutdown: CancellationToken) -> Scaler {
        Scaler {
            state,
            resolved: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(RESOLVE_CACHE_TTL)
                .build(),
            shutdown,
        }
    }

    fn resolve(&self, r: &ScaledObjectRef) -> Result<Arc<Resolved>, QueryError> {
        // Keyed on the state's generation: a pool changed by discovery is resolved afresh.
        let key = cache_key(self.state.generation(), &r.namespace, &r.scaler_metadata);
        if let Some(hit) = self.resolved.get(&key) {
            return Ok(hit);
        }
        let query = TriggerQuery::from_metadata(&r.scaler_metadata)?;
        let resolved = Arc::new(self.state.resolve(&r.namespace, query)?);
        self.resolved.insert(key, resolved.clone());
        Ok(resolved)
    }

    /// The value to send: finite and non-negative, or an error.
    fn value(&self, r: &Resolved) -> Result<f64, QueryError> {
        let v = self.state.evaluate(r)?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(QueryError::Unavailable {
                pool: r.pool.pool.name.clone(),
                zone: r.query.zone.clone().unwrap_or_else(|| "all".into()),
                signal: r.query.signal.name(),
                reason: format!("computed value {v} is not a finite non-negative number"),
            })
        }
    }

    fn spec(r: &Resolved) -> GetMetricSpecResponse {
        #[allow(deprecated)] // KEDA reads targetSize when targetSizeFloat is 0: set both.
        let spec = MetricSpec {
            metric_name: r.query.metric_name(),
            target_size: r.query.target.ceil() as i64,
            target_size_float: r.query.target,
        };
        GetMetricSpecResponse {
            metric_specs: vec![spec],
        }
    }

    fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        self.state
            .metrics
            .grpc_call(method, code_name(code), started.elapsed().as_secs_f64());
    }
}

/// Metadata maps are unordered; sort for a stable key.
fn cache_key(generation: u64, namespace: &str, meta: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = meta.iter().collect();
    pairs.sort_unstable();
    let mut key = format!("{generation}\u{0}{namespace}\u{0}");
    for (k, v) in pairs {
        key.push_str(k);
        key.push('\u{1}');
        key.push_str(v);
        key.push('\u{0}');
    }
    key
}

fn status(e: QueryError) -> Status {
    match e {
        QueryError::Trigger(_) | QueryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        QueryError::NotFound(_) => Status::not_found(e.to_string()),
        QueryError::Unavailable { .. } => Status::unavailable(e.to_string()),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::Unavailable => "UNAVAILABLE",
        Code::Cancelled => "CANCELLED",
        Code::Internal => "INTERNAL",
        _ => "OTHER",
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let started = Instant::now();
        let result = self
            .resolve(request.get_ref())
            .and_then(|r| Ok(self.value(&r)? > r.query.activation_target))
            .map(|result| Response::new(IsActiveResponse { result }))
            .map_err(status);
        self.observe("IsActive", started, &result);
        result
    }

    type StreamIsActiveStream = BoxStream<IsActiveResponse>;

    /// Pushes `true` when the pool turns active (and once on connect if it already is), never on
    /// every tick: each `true` refreshes KEDA's "last active" and would block scale to zero.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let started = Instant::now();
        let resolved = self.resolve(request.get_ref()).map_err(status);
        self.observe("StreamIsActive", started, &resolved);
        let resolved = resolved?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let state = self.state.clone();
        let shutdown = self.shutdown.clone();
        let period = resolved.pool.pool.interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_active = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = ticks.tick() => {}
                }
                match state.evaluate(&resolved) {
                    Ok(v) if v.is_finite() && v > resolved.query.activation_target => {
                        if !was_active {
                            debug!(metric = %resolved.query.metric_name(), value = v, "Pool turned active; pushing");
                            if tx
                                .send(Ok(IsActiveResponse { result: true }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        was_active = true;
                    }
                    Ok(_) => was_active = false,
                    // Unavailable: no news. Pushing false is ignored by KEDA anyway.
                    Err(_) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let started = Instant::now();
        let result = self
            .resolve(request.get_ref())
            .map(|r| {
                let q = &r.query;
                self.state.metrics.trigger_seen(
                    &request.get_ref().namespace,
                    &q.pool,
                    q.zone.as_deref().unwrap_or("all"),
                    &q.signal.name(),
                    q.target,
                    q.activation_target,
                );
                Response::new(Self::spec(&r))
            })
            .map_err(status);
        self.observe("GetMetricSpec", started, &result);
        result
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let started = Instant::now();
        let req = request.get_ref();
        let result = (|| {
            let so = req
                .scaled_object_ref
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
            let r = self.resolve(so).map_err(status)?;
            let name = r.query.metric_name();
            if !req.metric_name.is_empty() && !req.metric_name.eq_ignore_ascii_case(&name) {
                return Err(Status::not_found(format!(
                    "metric {:?} is not served by this trigger; its metric is {name:?}",
                    req.metric_name
                )));
            }
            let v = self.value(&r).map_err(status)?;
            #[allow(deprecated)] // KEDA reads metricValue when metricValueFloat is 0: set both.
            let value = MetricValue {
                metric_name: name,
                metric_value: v.round() as i64,
                metric_value_float: v,
            };
            Ok(Response::new(GetMetricsResponse {
                metric_values: vec![value],
            }))
        })();
        self.observe("GetMetrics", started, &result);
        result
    }

    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;

    /// Sends the spec once; specs of a configured pool do not change while it runs.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let resolved = self.resolve(request.get_ref()).map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if tx.send(Ok(Self::spec(&resolved))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        what,
        path: path.clone(),
        source,
    })
}

/// Serves the scaler on `listener` until `shutdown`, then drains in-flight calls.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: &TlsFiles,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut builder = Server::builder();
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
                read("certificate", cert)?,
                read("key", key)?,
            ));
            if let Some(ca) = &tls.client_ca {
                config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
            }
            builder = builder.tls_config(config)?;
        }
        (None, None) if tls.client_ca.is_none() => {}
        _ => return Err(ServeError::TlsIncomplete),
    }
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, tls = tls.cert.is_some(), mtls = tls.client_ca.is_some(), "Serving KEDA external scaler");
    let service = ExternalScalerServer::new(Scaler::new(state, shutdown.clone()));
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::extract::Scratch;
    use crate::model::{Clock, Config};

    /// Pool `llama` in `ml`: one Envoy gateway per zone, a 2 s window scraped every second.
    const POOL: &str = r#"
pools:
  - name: llama
    namespace: ml
    window: 2s
    interval: 1s
    sources:
      - name: gateway
        profile: envoy
        targets:
          - { url: "http://10.0.0.1:9901/stats/prometheus", zone: zone-a }
          - { url: "http://10.0.0.2:9901/stats/prometheus", zone: zone-b }
"#;

    /// A service on a state whose zone-a counted 10 requests/s over three scrapes one second
    /// apart (clock at 2 s); zone-b never answered.
    async fn scaler() -> (Scaler, Arc<State>) {
        let config = Config::from_yaml(POOL, "test.yaml").expect("valid test config");
        let state = Arc::new(State::new(&config, Clock::default()));
        let p = state.pools()[0].clone();
        let a = p
            .targets
            .iter()
            .find(|t| t.key.zone == "zone-a")
            .expect("a zone-a target");
        for (i, at) in [0.0, 1.0, 2.0].into_iter().enumerate() {
            let body = format!(
                "envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"c\"}} {}\n",
                100 + 10 * i
            );
            let (reading, _) = p.extractors[a.source_index]
                .extract(body.as_bytes(), &mut Scratch::default())
                .expect("parses");
            a.record_success(at, 0.01, body.len(), reading, 30.0);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        (Scaler::new(state.clone(), CancellationToken::new()), state)
    }

    fn object(namespace: &str, pairs: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "llama-zone-a".into(),
            namespace: namespace.into(),
            scaler_metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const RPS_A: [(&str, &str); 4] = [
        ("pool", "llama"),
        ("zone", "zone-a"),
        ("signal", "requests_per_second"),
        ("target", "4"),
    ];

    async fn get_metrics(
        s: &Scaler,
        so: ScaledObjectRef,
        metric_name: &str,
    ) -> Result<GetMetricsResponse, Status> {
        let request = GetMetricsRequest {
            scaled_object_ref: Some(so),
            metric_name: metric_name.into(),
        };
        s.get_metrics(Request::new(request))
            .await
            .map(Response::into_inner)
    }

    /// Each of the unary calls for `so`: their statuses, or panics if one succeeded.
    async fn refusals(s: &Scaler, so: ScaledObjectRef) -> Vec<Status> {
        vec![
            s.get_metric_spec(Request::new(so.clone()))
                .await
                .expect_err("GetMetricSpec refuses"),
            s.is_active(Request::new(so.clone()))
                .await
                .expect_err("IsActive refuses"),
            get_metrics(s, so, "")
                .await
                .expect_err("GetMetrics refuses"),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_with_its_spec_and_activity() {
        let (s, state) = scaler().await;
        let so = object("ml", &RPS_A);
        let spec = s
            .get_metric_spec(Request::new(so.clone()))
            .await
            .expect("a spec")
            .into_inner();
        let metric = &spec.metric_specs[0];
        assert_eq!(metric.target_size_float, 4.0);
        let values = get_metrics(&s, so.clone(), &metric.metric_name)
            .await
            .expect("a value")
            .metric_values;
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].metric_name, metric.metric_name);
        assert_eq!(values[0].metric_value_float, 10.0);
        #[allow(deprecated)]
        let int = values[0].metric_value;
        assert_eq!(int, 10);
        let active = s.is_active(Request::new(so)).await.expect("active");
        assert!(active.into_inner().result, "10 req/s is above activation 0");
        let calls = state.metrics.grpc.lock().expect("counters").clone();
        assert_eq!(
            calls.get(&("GetMetrics", "OK")).copied(),
            Some(1),
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bad_metadata_is_invalid_argument_naming_the_key() {
        let (s, _) = scaler().await;
        let mut unknown = RPS_A.to_vec();
        unknown.push(("windwo", "10s"));
        for (pairs, key) in [
            (&RPS_A[..3], "`target`"),
            (&unknown[..], "`windwo`"),
            (
                &[("pool", "llama"), ("signal", "rps"), ("target", "1")][..],
                "`signal`",
            ),
        ] {
            for status in refusals(&s, object("ml", pairs)).await {
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{pairs:?}: {status:?}"
                );
                assert!(status.message().contains(key), "{pairs:?}: {status:?}");
            }
        }
        let missing = s
            .get_metrics(Request::new(GetMetricsRequest {
                scaled_object_ref: None,
                metric_name: String::new(),
            }))
            .await
            .expect_err("no ScaledObjectRef");
        assert_eq!(missing.code(), Code::InvalidArgument);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_pools_zones_and_metrics_are_not_found() {
        let (s, _) = scaler().await;
        let mut zone = RPS_A;
        zone[1] = ("zone", "zone-z");
        for (namespace, pairs, text) in [
            ("other", &RPS_A, "no pool \"llama\" for namespace \"other\""),
            ("ml", &zone, "no zone \"zone-z\""),
        ] {
            for status in refusals(&s, object(namespace, pairs)).await {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                assert!(status.message().contains(text), "{status:?}");
            }
        }
        let status = get_metrics(&s, object("ml", &RPS_A), "s0-other-metric")
            .await
            .expect_err("another trigger's metric");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("s0-other-metric"), "{status:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_data_is_unavailable_never_zero() {
        let (s, state) = scaler().await;
        let mut b = RPS_A;
        b[1] = ("zone", "zone-b");
        // The spec needs no data (KEDA asks it first); the value and activity do.
        let so = object("ml", &b);
        assert!(s.get_metric_spec(Request::new(so.clone())).await.is_ok());
        for status in [
            s.is_active(Request::new(so.clone()))
                .await
                .expect_err("IsActive without data"),
            get_metrics(&s, so, "")
                .await
                .expect_err("GetMetrics without data"),
        ] {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("zone \"zone-b\""), "{status:?}");
        }
        // zone-a goes stale once nothing is scraped for longer than staleAfter.
        assert!(get_metrics(&s, object("ml", &RPS_A), "").await.is_ok());
        tokio::time::advance(Duration::from_secs(120)).await;
        let status = get_metrics(&s, object("ml", &RPS_A), "")
            .await
            .expect_err("stale");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let calls = state.metrics.grpc.lock().expect("counters").clone();
        assert!(
            calls.get(&("GetMetrics", "UNAVAILABLE")).copied() >= Some(2),
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_pool_is_not_found_at_once_despite_the_cache() {
        let (s, state) = scaler().await;
        assert!(get_metrics(&s, object("ml", &RPS_A), "").await.is_ok());
        assert!(state.remove_pool(Some("ml"), "llama"));
        let status = get_metrics(&s, object("ml", &RPS_A), "")
            .await
            .expect_err("the pool is gone");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}
