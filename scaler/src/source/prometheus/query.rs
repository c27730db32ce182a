//! The Prometheus HTTP API: the client, one instant query, and decoding its JSON into per-zone
//! inputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::plan::PlannedQuery;
use super::PromError;
use crate::model::{PromAuth, PromSource};
use crate::source::http::error_chain;
use crate::window::polled::{QueryPart, ZoneInputs};

/// A client set up with the source's TLS and timeout.
pub fn client(config: &PromSource) -> Result<reqwest::Client, PromError> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| PromError::File {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(crate::source::http::USER_AGENT)
        .timeout(config.timeout)
        .danger_accept_invalid_certs(config.tls.insecure_skip_verify);
    if let Some(ca) = &config.tls.ca_file {
        let cert = reqwest::Certificate::from_pem(&read("CA file", ca)?)
            .map_err(|e| PromError::Tls(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let id =
                reqwest::Identity::from_pem(&pem).map_err(|e| PromError::Tls(e.to_string()))?;
            builder = builder.identity(id);
        }
        (None, None) => {}
        _ => return Err(PromError::Tls("certFile and keyFile go together".into())),
    }
    builder.build().map_err(|e| PromError::Tls(e.to_string()))
}

pub async fn query(
    client: &reqwest::Client,
    config: &PromSource,
    promql: &str,
) -> Result<Vec<Sample>, String> {
    let url = format!("{}/api/v1/query", config.url.trim_end_matches('/'));
    let mut req = client.post(url).form(&[("query", promql)]);
    for (k, v) in &config.headers {
        req = req.header(k, v);
    }
    match &config.auth {
        PromAuth::None => {}
        PromAuth::Bearer { token_file } => {
            let token = std::fs::read_to_string(token_file)
                .map_err(|e| format!("cannot read bearer token {}: {e}", token_file.display()))?;
            req = req.bearer_auth(token.trim());
        }
        PromAuth::Basic {
            username,
            password_file,
        } => {
            let password = std::fs::read_to_string(password_file)
                .map_err(|e| format!("cannot read password {}: {e}", password_file.display()))?;
            req = req.basic_auth(username, Some(password.trim()));
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    if !status.is_success() && body.is_empty() {
        return Err(format!("HTTP status {status}"));
    }
    parse_response(&body).map_err(|e| format!("HTTP status {status}: {e}"))
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses an `/api/v1/query` response body into an instant vector.
pub fn parse_response(body: &[u8]) -> Result<Vec<Sample>, String> {
    let resp: ApiResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus API response: {e}"))?;
    if resp.status != "success" {
        return Err(format!(
            "{}: {}",
            resp.error_type.unwrap_or_else(|| "error".into()),
            resp.error.unwrap_or_default()
        ));
    }
    let data = resp.data.ok_or("response has no data")?;
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed vector: {e}"))?;
            samples
                .into_iter()
                .map(|s| {
                    let value = parse_value(&s.value.1)?;
                    Ok(Sample {
                        labels: s.metric,
                        value,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed scalar: {e}"))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&v)?,
            }])
        }
        other => Err(format!("expected an instant vector, got a {other}")),
    }
}

/// Prometheus writes values as strings: "1.5", "NaN", "+Inf".
fn parse_value(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("value {s:?} is not a number"))
}

/// Folds one query's samples into per-zone inputs. Samples without the zone label, or zones the
/// source does not list, are ignored: they belong to no zone we answer for.
pub fn fold(
    zones: &mut BTreeMap<String, ZoneInputs>,
    query: &PlannedQuery,
    zone_label: &str,
    scale: f64,
    samples: &[Sample],
) {
    for s in samples {
        let Some(zone) = s.labels.get(zone_label) else {
            continue;
        };
        let Some(inputs) = zones.get_mut(zone) else {
            continue;
        };
        match query.part {
            QueryPart::Buckets => {
                // As for scraped buckets: a NaN or -Inf bound is no bucket (a -Inf one would
                // make -Inf a quantile).
                let Some(le) = s
                    .labels
                    .get("le")
                    .and_then(|le| le.parse::<f64>().ok())
                    .filter(|le| !le.is_nan() && *le != f64::NEG_INFINITY)
                else {
                    continue;
                };
                let le = if le.is_finite() { le * scale } else { le };
                let buckets = inputs.buckets.entry(query.role).or_default();
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, v)) => *v += s.value,
                    None => buckets.push((le, s.value)),
                }
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            part => {
                *inputs.values.entry((query.role, part)).or_insert(0.0) += s.value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::plan::PlannedQuery;
    use super::*;
    use crate::model::Role;
    use crate::window::polled::{QueryPart, ZoneInputs};

    #[test]
    fn parses_vectors_errors_and_nan() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"zone":"a"},"value":[1700000000.1,"2.5"]},
            {"metric":{"zone":"b"},"value":[1700000000.1,"NaN"]}]}}"#;
        let v = parse_response(body).unwrap();
        assert_eq!(v[0].value, 2.5);
        assert!(v[1].value.is_nan());
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_response(err).unwrap_err(),
            "bad_data: parse error at char 5"
        );
        assert!(parse_response(b"<html>")
            .unwrap_err()
            .contains("not a Prometheus API response"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_response(matrix).unwrap_err().contains("got a matrix"));
    }

    #[test]
    fn folds_samples_into_zones_and_scales_buckets() {
        let mut zones: BTreeMap<String, ZoneInputs> = [("a".to_string(), ZoneInputs::default())]
            .into_iter()
            .collect();
        let q = PlannedQuery {
            role: Role::Latency,
            part: QueryPart::Buckets,
            promql: String::new(),
        };
        let s = |zone: &str, le: &str, v: f64| Sample {
            labels: [
                ("zone".to_string(), zone.to_string()),
                ("le".to_string(), le.to_string()),
            ]
            .into_iter()
            .collect(),
            value: v,
        };
        fold(
            &mut zones,
            &q,
            "zone",
            0.001,
            &[
                s("a", "+Inf", 4.0),
                s("a", "50", 3.0),
                s("z", "50", 9.0),
                s("a", "NaN", 1.0),
                s("a", "-Inf", 1.0),
            ],
        );
        assert_eq!(
            zones["a"].buckets[&Role::Latency],
            vec![(0.05, 3.0), (f64::INFINITY, 4.0)]
        );
    }
}
