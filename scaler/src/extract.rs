//! From one scraped body to one [`Reading`]: the profile's inputs, summed over the series that
//! match, for one target at one instant.
//!
//! The [`Extractor`] is built once per source; it tells the parser which names to select (every
//! other line is skipped unread) and routes each selected sample to its input.

use crate::model::{EndpointScope, Kind, Matcher, Role, Source};
use crate::parse::{self, Labels, ParseError, ParseStats, Sample};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

mod reading;

pub use reading::{Counts, CountsIter, Hist, HistRef, Reading, Shape, Value, ValueRef};
use reading::{ReadingBuilder, ShapeCache};

#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Part {
    Value,
    Bucket,
    Sum,
    Count,
}

/// Where a selected metric name goes: which input, term and alternative name, and which part.
#[derive(Debug, Clone, Copy)]
struct Route {
    slot: usize,
    part: Part,
}

/// Why a body yields no reading.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A counter or histogram count that is NaN or infinite: its increase, and so every rate or
    /// quantile over it, would be a made-up number.
    #[error("series `{series}` is {value}: a counter must be a finite number")]
    NotFinite { series: String, value: f64 },
    /// The same series twice in one body: summing both would double it, and picking one is a
    /// guess (Prometheus refuses such a scrape too).
    #[error("series `{series}` appears twice in one body")]
    Duplicate { series: String },
}

/// A selected metric name and where its samples go.
type NamedRoutes = (Box<[u8]>, Vec<Route>);

/// Accumulates the series of one (input, term, alternative name) during a parse.
#[derive(Debug, Default, Clone)]
struct Acc {
    seen: bool,
    value: f64,
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: Option<f64>,
}

/// At most this many bytes of a series are quoted in an error.
const SERIES_EXCERPT: usize = 200;

#[derive(Debug, Clone)]
struct InputPlan {
    role: Role,
    kind: Kind,
    scale: f64,
    /// Per term, the accumulator slots of its alternative names, newest first.
    terms: Vec<Vec<usize>>,
}

/// Reusable scratch space, so a scrape allocates nothing once warmed up.
#[derive(Debug, Default)]
pub struct Scratch {
    accs: Vec<Acc>,
    /// The first counter value that was not a finite number, or duplicate series, in this body.
    not_finite: Option<ExtractError>,
    /// Hashes of (slot, part, labels) of the samples recorded from this body.
    seen: HashSet<u64>,
    /// One histogram's buckets while its terms are summed.
    buckets: Vec<(f64, f64)>,
    reading: ReadingBuilder,
}

#[derive(Debug)]
pub struct Extractor {
    /// Selected names bucketed by length: most lines of a big body have a length no selected name
    /// has and are rejected with one index, the rest with a short compare (faster than hashing).
    by_len: Vec<Vec<NamedRoutes>>,
    /// Per slot: source matchers followed by the term's matchers.
    slot_matchers: Vec<Vec<Matcher>>,
    /// Per slot: the kind of its input.
    slot_kinds: Vec<Kind>,
    inputs: Vec<InputPlan>,
    /// Which series a target scoped to some endpoints counts (see [`EndpointScope`]).
    scope: Option<Scope>,
    /// The shape of the last reading, so the source's targets' readings share one.
    shape: ShapeCache,
    /// Per input, whether it is a counter.
    counters: Box<[bool]>,
}

#[derive(Debug)]
struct Scope {
    /// The profile's endpoint labels, first present wins.
    labels: Vec<Box<[u8]>>,
    endpoints: EndpointScope,
}

impl Scope {
    fn counts(&self, labels: &Labels<'_>) -> bool {
        match self.labels.iter().find_map(|l| labels.get(l)) {
            Some(v) => names_pod(&v.unescaped(), &self.endpoints.pods),
            None => self.endpoints.pool_wide,
        }
    }
}

/// Whether an endpoint label's value names one of `pods`: the bare Pod name, or
/// `<pod>-rank-<N>` for one rank of a data-parallel Pod.
fn names_pod(value: &str, pods: &BTreeSet<String>) -> bool {
    pods.contains(value)
        || value.rsplit_once("-rank-").is_some_and(|(pod, rank)| {
            !rank.is_empty() && rank.bytes().all(|b| b.is_ascii_digit()) && pods.contains(pod)
        })
}

impl Extractor {
    /// An extractor for a target that counts only `endpoints`' share of the source's series.
    pub fn scoped(source: &Source, endpoints: &EndpointScope) -> Extractor {
        let mut ex = Extractor::new(source);
        ex.scope = Some(Scope {
            labels: source
                .profile
                .endpoint_labels
                .iter()
                .map(|l| l.as_bytes().into())
                .collect(),
            endpoints: endpoints.clone(),
        });
        ex
    }

    pub fn new(source: &Source) -> Extractor {
        let mut names: HashMap<Box<[u8]>, Vec<Route>> = HashMap::new();
        let mut slot_matchers = Vec::new();
        let mut slot_kinds = Vec::new();
        let mut inputs = Vec::new();
        for input in &source.profile.inputs {
            let kind = input.role.kind();
            let mut terms = Vec::new();
            for term in &input.terms {
                let mut alts = Vec::new();
                for name in &term.names {
                    let slot = slot_matchers.len();
                    let mut matchers = source.matchers.clone();
                    matchers.extend(term.matchers.iter().cloned());
                    slot_matchers.push(matchers);
                    slot_kinds.push(kind);
                    alts.push(slot);
                    let parts: &[(&str, Part)] = match kind {
                        Kind::Histogram => &[
                            ("_bucket", Part::Bucket),
                            ("_sum", Part::Sum),
                            ("_count", Part::Count),
                        ],
                        Kind::Counter | Kind::Gauge => &[("", Part::Value)],
                    };
                    for (suffix, part) in parts {
                        let full = format!("{name}{suffix}").into_bytes().into_boxed_slice();
                        names
                            .entry(full)
                            .or_default()
                            .push(Route { slot, part: *part });
                    }
                }
                terms.push(alts);
            }
            inputs.push(InputPlan {
                role: input.role,
                kind,
                scale: input.scale,
                terms,
            });
        }
        let max_len = names.keys().map(|n| n.len()).max().unwrap_or(0);
        let mut by_len: Vec<Vec<NamedRoutes>> = vec![Vec::new(); max_len + 1];
        for (name, routes) in names {
            by_len[name.len()].push((name, routes));
        }
        Extractor {
            by_len,
            slot_matchers,
            slot_kinds,
            counters: inputs.iter().map(|p| p.kind == Kind::Counter).collect(),
            inputs,
            scope: None,
            shape: ShapeCache::default(),
        }
    }

    /// Parses `body` and sums each input over the series its matchers select. NaN and infinite
    /// gauges are skipped (NaN is how exporters say "no value"); a NaN or infinite counter or
    /// bucket fails the body, since no rate over it means anything.
    pub fn extract(
        &self,
        body: &[u8],
        scratch: &mut Scratch,
    ) -> Result<(Reading, ParseStats), ExtractError> {
        scratch.not_finite = None;
        scratch.seen.clear();
        scratch
            .accs
            .resize_with(self.slot_matchers.len(), Acc::default);
        for acc in &mut scratch.accs {
            acc.seen = false;
            acc.value = 0.0;
            acc.buckets.clear();
            acc.sum = 0.0;
            acc.count = None;
        }
        let accs = &mut scratch.accs;
        let not_finite = &mut scratch.not_finite;
        let seen = &mut scratch.seen;
        let stats = parse::parse(
            body,
            |name| self.select(name),
            |routes: &[Route], sample: Sample<'_>| {
                for route in routes {
                    if let Err(e) = self.record(accs, seen, *route, &sample) {
                        not_finite.get_or_insert(e);
                    }
                }
            },
        )?;
        if let Some(e) = scratch.not_finite.take() {
            return Err(e);
        }
        scratch.reading.clear();
        for plan in &self.inputs {
            finish(plan, accs, &mut scratch.buckets, &mut scratch.reading);
        }
        Ok((scratch.reading.finish(Some(&self.shape)), stats))
    }

    fn select(&self, name: &[u8]) -> Option<&[Route]> {
        self.by_len
            .get(name.len())?
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, routes)| routes.as_slice())
    }

    fn record(
        &self,
        accs: &mut [Acc],
        seen: &mut HashSet<u64>,
        route: Route,
        sample: &Sample<'_>,
    ) -> Result<(), ExtractError> {
        if !self.slot_matchers[route.slot]
            .iter()
            .all(|m| m.matches(&sample.labels))
            || self
                .scope
                .as_ref()
                .is_some_and(|s| !s.counts(&sample.labels))
        {
            return Ok(());
        }
        // Only matched samples are hashed: a few per input on a typical body.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            route.slot,
            route.part as u8,
            sample.name,
            sample.labels.raw(),
        )
            .hash(&mut h);
        if !seen.insert(h.finish()) {
            return Err(ExtractError::Duplicate {
                series: series_excerpt(sample),
            });
        }
        let acc = &mut accs[route.slot];
        let v = sample.value;
        if !v.is_finite() {
            let counts = match route.part {
                Part::Value => self.slot_kinds[route.slot] == Kind::Counter,
                Part::Bucket | Part::Count => true,
                Part::Sum => false,
            };
            if counts {
                return Err(ExtractError::NotFinite {
                    series: series_excerpt(sample),
                    value: v,
                });
            }
            return Ok(());
        }
        match route.part {
            Part::Value => {
                acc.seen = true;
                acc.value += v;
            }
            Part::Sum => {
                acc.seen = true;
                acc.sum += v;
            }
            Part::Count => {
                acc.seen = true;
                *acc.count.get_or_insert(0.0) += v;
            }
            Part::Bucket => {
                let Some(le) = le_of(&sample.labels) else {
                    return Ok(());
                };
                acc.seen = true;
                match acc.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += v,
                    None => acc.buckets.push((le, v)),
                }
            }
        }
        Ok(())
    }

    /// Roles in input order, for callers that index readings.
    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.inputs.iter().map(|p| p.role)
    }

    /// Per input, whether it is a counter: what the window's counter check compares.
    pub fn counters(&self) -> &[bool] {
        &self.counters
    }

    /// Number of distinct metric names this extractor selects.
    pub fn selected_names(&self) -> usize {
        self.by_len.iter().map(Vec::len).sum()
    }
}

/// A bucket's bound; NaN and -Inf bound nothing, so such a bucket is skipped.
fn le_of(labels: &Labels<'_>) -> Option<f64> {
    let raw = labels.get(b"le")?.unescaped();
    let le: f64 = raw.trim().parse().ok()?;
    (!le.is_nan() && le != f64::NEG_INFINITY).then_some(le)
}

/// `name{labels}` of a sample, cut to [`SERIES_EXCERPT`] bytes.
fn series_excerpt(sample: &Sample<'_>) -> String {
    let mut s = format!(
        "{}{:?}",
        String::from_utf8_lossy(sample.name),
        sample.labels
    );
    if s.len() > SERIES_EXCERPT {
        let mut cut = SERIES_EXCERPT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Sums an input's terms, each term taking its first alternative name that was seen, into
/// `reading`.
fn finish(
    plan: &InputPlan,
    accs: &[Acc],
    buckets: &mut Vec<(f64, f64)>,
    reading: &mut ReadingBuilder,
) {
    let chosen = || {
        plan.terms
            .iter()
            .filter_map(|alts| alts.iter().map(|s| &accs[*s]).find(|a| a.seen))
    };
    if chosen().next().is_none() {
        return reading.absent();
    }
    match plan.kind {
        Kind::Counter | Kind::Gauge => reading.scalar(chosen().map(|a| a.value).sum()),
        Kind::Histogram => {
            buckets.clear();
            let (mut count, mut sum) = (0.0, 0.0);
            for acc in chosen() {
                for &(le, c) in &acc.buckets {
                    let le = if le.is_finite() { le * plan.scale } else { le };
                    match buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, total)) => *total += c,
                        None => buckets.push((le, c)),
                    }
                }
                sum += acc.sum * plan.scale;
                let inf = acc
                    .buckets
                    .iter()
                    .find(|(le, _)| *le == f64::INFINITY)
                    .map(|(_, c)| *c);
                count += acc.count.or(inf).unwrap_or(0.0);
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            reading.histogram(buckets.iter().copied(), count, sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn source(profile: &str, matchers: &[&str]) -> Source {
        Source {
            name: "s".into(),
            profile: Arc::new(crate::profiles::builtin(profile).unwrap()),
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap())
                .collect(),
            targets: vec![],
            prometheus: None,
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = redbridge_fixtures::path(format!("exposition/{name}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn get(ex: &Extractor, reading: &Reading, role: Role) -> Value {
        let i = ex.roles().position(|r| r == role).unwrap();
        reading.get(i).unwrap().to_value()
    }

    #[test]
    fn envoy_cluster_matcher_picks_one_route() {
        let body = br#"# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="a"} 10
envoy_cluster_upstream_rq_total{envoy_cluster_name="b"} 32
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="a"} 9
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="a"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="5"} 4
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="50"} 9
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="+Inf"} 10
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="a"} 123456789012345678901234567890.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a"} 10
envoy_cluster_upstream_rq_active{envoy_cluster_name="a"} 3
"#;
        let ex = Extractor::new(&source("envoy", &[r#"envoy_cluster_name="a""#]));
        let (r, _) = ex.extract(body, &mut Scratch::default()).unwrap();
        assert_eq!(get(&ex, &r, Role::Requests), Value::Scalar(10.0));
        assert_eq!(get(&ex, &r, Role::Errors), Value::Scalar(1.0));
        assert_eq!(get(&ex, &r, Role::InFlight), Value::Scalar(3.0));
        assert_eq!(get(&ex, &r, Role::Queue), Value::Absent);
        let Value::Histogram(h) = get(&ex, &r, Role::Latency) else {
            panic!("latency histogram missing")
        };
        // Milliseconds become seconds.
        assert_eq!(
            h.to_buckets(),
            vec![(0.005, 4.0), (0.05, 9.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(h.count, 10.0);
        assert!((h.sum - 1.234_567_890_123_456_8e26).abs() / h.sum < 1e-12);
    }

    #[test]
    fn vllm_prefers_new_names_and_sums_models_unless_matched() {
        let body = fixture("vllm-v0-v1-mixed-sample.prom");
        let ex = Extractor::new(&source("vllm", &[]));
        let (r, stats) = ex.extract(&body, &mut Scratch::default()).unwrap();
        assert!(stats.selected > 0);
        assert!(matches!(get(&ex, &r, Role::KvCache), Value::Scalar(_)));
        assert!(matches!(
            get(&ex, &r, Role::TimeToFirstToken),
            Value::Histogram(_)
        ));
        assert!(matches!(get(&ex, &r, Role::PromptTokens), Value::Scalar(v) if v > 0.0));
    }

    #[test]
    fn non_finite_counters_fail_the_body_and_non_finite_gauges_are_skipped() {
        let ex = Extractor::new(&source("envoy", &[r#"envoy_cluster_name="a""#]));
        let ok = "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 10\n";
        for bad in ["NaN", "+Inf", "-Inf"] {
            for line in [
                format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"a\"}} {bad}"),
                format!("envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"a\",le=\"+Inf\"}} {bad}"),
                format!("envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"a\"}} {bad}"),
            ] {
                let err = ex
                    .extract(line.as_bytes(), &mut Scratch::default())
                    .expect_err(&line);
                assert!(
                    matches!(&err, ExtractError::NotFinite { series, .. } if series.starts_with("envoy_cluster_upstream_rq_")),
                    "{line}: {err}"
                );
            }
            // Another cluster's non-finite value is not selected by the matcher: no error.
            let other =
                format!("{ok}envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"b\"}} {bad}\n");
            ex.extract(other.as_bytes(), &mut Scratch::default())
                .unwrap_or_else(|e| panic!("{other}: {e}"));
            // A gauge: skipped, so the input reads as absent rather than as NaN or infinity.
            let gauge =
                format!("{ok}envoy_cluster_upstream_rq_active{{envoy_cluster_name=\"a\"}} {bad}\n");
            let (r, _) = ex
                .extract(gauge.as_bytes(), &mut Scratch::default())
                .unwrap();
            assert_eq!(get(&ex, &r, Role::InFlight), Value::Absent, "{gauge}");
            // A NaN or -Inf bound is no bound.
            let le = format!("envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"a\",le=\"{bad}\"}} 3\n");
            let (r, _) = ex.extract(le.as_bytes(), &mut Scratch::default()).unwrap();
            let want = if bad == "+Inf" {
                Value::Histogram(Hist::new(vec![(f64::INFINITY, 3.0)], 3.0, 0.0))
            } else {
                Value::Absent
            };
            assert_eq!(get(&ex, &r, Role::Latency), want, "{le}");
        }
        // The same series twice (a broken exporter, or two concatenated bodies): refused.
        let twice = format!("{ok}{ok}");
        assert!(matches!(
            ex.extract(twice.as_bytes(), &mut Scratch::default()),
            Err(ExtractError::Duplicate { .. })
        ));
        // The scratch space does not carry an error into the next body.
        let mut scratch = Scratch::default();
        let nan = "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} NaN\n";
        assert!(ex.extract(nan.as_bytes(), &mut scratch).is_err());
        let (r, _) = ex.extract(ok.as_bytes(), &mut scratch).unwrap();
        assert_eq!(get(&ex, &r, Role::Requests), Value::Scalar(10.0));
    }

    /// Readings are kept for a whole window per target: only their numbers, exactly sized, and
    /// one shape for every reading of the source while it does not change.
    #[test]
    fn readings_hold_their_numbers_and_share_a_shape() {
        let body = fixture("vllm-v0-v1-mixed-sample.prom");
        let ex = Extractor::new(&source("vllm", &[]));
        let mut scratch = Scratch::default();
        let (first, _) = ex.extract(&body, &mut scratch).unwrap();
        // Another target of the source, with a scratch space of its own.
        let (second, _) = ex.extract(&body, &mut Scratch::default()).unwrap();
        assert!(first.shares_shape_with(&second));
        let mut words = 0;
        for v in first.iter() {
            words += match v {
                ValueRef::Absent => 0,
                ValueRef::Scalar(_) => 2,
                // Count and sum, and the fixture's counts are whole: one word per bucket.
                ValueRef::Histogram(h) => 4 + h.counts().len(),
            };
        }
        assert!(words > 10);
        assert_eq!(first.heap_bytes(), 16 + 4 * words);
        assert_eq!(
            bits(&first.to_values()),
            bits(&second.to_values()),
            "same body, same numbers"
        );
        // A body without the histograms: a shape of its own, cached for the next one.
        let gauges: Vec<u8> = String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.contains("_bucket"))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        let (third, _) = ex.extract(&gauges, &mut scratch).unwrap();
        let (fourth, _) = ex.extract(&gauges, &mut scratch).unwrap();
        assert!(!third.shares_shape_with(&first));
        assert!(third.shares_shape_with(&fourth));
    }

    fn bits(values: &[Value]) -> Vec<Vec<u64>> {
        values
            .iter()
            .map(|v| match v {
                Value::Absent => vec![],
                Value::Scalar(x) => vec![0, x.to_bits()],
                Value::Histogram(h) => {
                    let mut b = vec![1, h.count.to_bits(), h.sum.to_bits()];
                    b.extend(h.buckets().flat_map(|(le, c)| [le.to_bits(), c.to_bits()]));
                    b
                }
            })
            .collect()
    }

    /// The flat reading holds the very `f64`s the sums produce: a histogram with counts that are
    /// no whole numbers, one with counts past `u32::MAX`, and a sum of many terms.
    #[test]
    fn extracted_numbers_are_the_sums_bit_for_bit() {
        let body = br#"envoy_cluster_upstream_rq_total{envoy_cluster_name="a"} 0.1
envoy_cluster_upstream_rq_total{envoy_cluster_name="b"} 0.2
envoy_cluster_upstream_rq_total{envoy_cluster_name="c"} 0.3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="5"} 0.5
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="+Inf"} 4294967296
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="a"} 0.7
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a"} 4294967296
envoy_cluster_upstream_rq_active{envoy_cluster_name="a"} 2.5
"#;
        let ex = Extractor::new(&source("envoy", &[]));
        let (r, _) = ex.extract(body, &mut Scratch::default()).unwrap();
        assert_eq!(
            bits(&[get(&ex, &r, Role::Requests)]),
            bits(&[Value::Scalar(0.1 + 0.2 + 0.3)])
        );
        assert_eq!(
            bits(&[get(&ex, &r, Role::Latency)]),
            bits(&[Value::Histogram(Hist::new(
                vec![(5.0 * 0.001, 0.5), (f64::INFINITY, 4294967296.0)],
                4294967296.0,
                0.7 * 0.001
            ))])
        );
        assert_eq!(
            bits(&[get(&ex, &r, Role::InFlight)]),
            bits(&[Value::Scalar(2.5)])
        );
        assert_eq!(get(&ex, &r, Role::Queue), Value::Absent);
    }

    #[test]
    fn endpoint_labels_name_bare_pods_and_their_ranks() {
        let pods: BTreeSet<String> = ["llama-a-0".to_string()].into();
        assert!(names_pod("llama-a-0", &pods));
        assert!(names_pod("llama-a-0-rank-3", &pods));
        for other in [
            "llama-a-1",
            "llama-a",
            "llama-a-0-rank-",
            "llama-a-0-rank-x",
            "llama-a-0-rank-1-rank",
            "",
        ] {
            assert!(!names_pod(other, &pods), "{other}");
        }
    }

    /// The picker read once per zone: each zone's target counts its Pods' queues, the first
    /// zone's the flow-control queue too, and the pool-wide figures only there.
    #[test]
    fn a_scoped_picker_target_counts_its_pods_and_pool_wide_series_where_asked() {
        // Written to llm-d's names (llm-d-router pkg/epp/metrics), then to the Gateway API
        // Inference Extension's legacy names; the same figures either way.
        let llm_d = br#"# TYPE llm_d_epp_flow_control_queue_size gauge
llm_d_epp_flow_control_queue_size{fairness_id="a",priority="0"} 5
# TYPE llm_d_epp_per_endpoint_queue_size gauge
llm_d_epp_per_endpoint_queue_size{name="llama",model_server_endpoint="a-0"} 2
llm_d_epp_per_endpoint_queue_size{name="llama",model_server_endpoint="b-0-rank-0"} 3
llm_d_epp_per_endpoint_queue_size{name="llama",model_server_endpoint="b-0-rank-1"} 4
llm_d_epp_per_endpoint_queue_size{name="llama",model_server_endpoint="gone-0"} 100
# TYPE llm_d_epp_flow_control_pool_saturation gauge
llm_d_epp_flow_control_pool_saturation{name="llama"} 0.5
"#;
        let legacy = br#"# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{fairness_id="a",priority="0"} 5
# TYPE inference_pool_per_pod_queue_size gauge
inference_pool_per_pod_queue_size{name="llama",model_server_pod="a-0"} 2
inference_pool_per_pod_queue_size{name="llama",model_server_pod="b-0-rank-0"} 3
inference_pool_per_pod_queue_size{name="llama",model_server_pod="b-0-rank-1"} 4
inference_pool_per_pod_queue_size{name="llama",model_server_pod="gone-0"} 100
# TYPE inference_extension_flow_control_pool_saturation gauge
inference_extension_flow_control_pool_saturation{name="llama"} 0.5
"#;
        let src = source("epp", &[]);
        let scope = |pods: &[&str], pool_wide: bool| EndpointScope {
            pods: pods.iter().map(|p| p.to_string()).collect(),
            pool_wide,
        };
        let first = Extractor::scoped(&src, &scope(&["a-0"], true));
        let second = Extractor::scoped(&src, &scope(&["b-0"], false));
        let empty = Extractor::scoped(&src, &scope(&[], false));
        for body in [&llm_d[..], &legacy[..]] {
            let read = |ex: &Extractor, role| {
                let (r, _) = ex.extract(body, &mut Scratch::default()).unwrap();
                get(ex, &r, role)
            };
            assert_eq!(read(&first, Role::Queue), Value::Scalar(7.0));
            assert_eq!(read(&first, Role::Saturation), Value::Scalar(0.5));
            // Both ranks of b-0; nothing pool-wide.
            assert_eq!(read(&second, Role::Queue), Value::Scalar(7.0));
            assert_eq!(read(&second, Role::Saturation), Value::Absent);
            // A zone without Pods has no share to read.
            assert_eq!(read(&empty, Role::Queue), Value::Absent);
            // Unscoped (a file-configured picker): every series.
            let all = Extractor::new(&src);
            assert_eq!(read(&all, Role::Queue), Value::Scalar(114.0));
        }
    }

    #[test]
    fn every_fixture_extracts_with_its_profile() {
        for (file, profile) in [
            ("envoy-1.40-real-capture.prom", "envoy"),
            ("envoy-stats-sample.prom", "envoy"),
            ("sglang-sample.prom", "sglang"),
            (
                "istio-ambient-waypoint-minimal-sample.prom",
                "istio-waypoint",
            ),
        ] {
            let ex = Extractor::new(&source(profile, &[]));
            let (r, _) = ex.extract(&fixture(file), &mut Scratch::default()).unwrap();
            assert!(
                !matches!(get(&ex, &r, Role::Requests), Value::Absent),
                "{file}: no requests input"
            );
        }
    }
}
