use super::*;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn fixture_files() -> Vec<PathBuf> {
    let dir = redbridge_fixtures::path("exposition");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixture dir {}: {e}", dir.display()))
        .map(|entry| entry.expect("fixture dir entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "prom"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .prom fixtures in {}", dir.display());
    files
}

fn fixture(name: &str) -> Vec<u8> {
    let path = redbridge_fixtures::path(format!("exposition/{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn one(body: &str) -> OwnedSample {
    let mut all = parse_all(body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    assert_eq!(all.len(), 1, "{body:?} gave {all:?}");
    all.remove(0)
}

fn err(body: &str) -> ParseError {
    match parse_all(body.as_bytes()) {
        Ok(samples) => panic!("{body:?} parsed as {samples:?}, expected an error"),
        Err(e) => e,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Bitwise equal, or both NaN (so -0.0 and 0.0 differ, NaN equals NaN).
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn value_of(body: &str) -> f64 {
    one(&format!("m {body}\n")).value
}

// ---------------------------------------------------------------- fixtures

#[test]
fn every_fixture_parses_and_sample_count_matches_naive_line_count() {
    for path in fixture_files() {
        let body = std::fs::read(&path).expect("read fixture");
        let text = String::from_utf8_lossy(&body);
        let naive = text
            .lines()
            .map(|l| l.trim_matches(|c| c == ' ' || c == '\t' || c == '\r'))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        let samples = parse_all(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(samples.len(), naive, "{}", path.display());
        assert!(naive > 0, "{} has no samples", path.display());
        let stats = parse(&body, |_| Some(()), |_, _| {}).expect("parse");
        assert_eq!(stats.lines, text.lines().count(), "{}", path.display());
        assert_eq!(stats.selected, naive, "{}", path.display());
    }
}

#[test]
fn vllm_colon_series_value() {
    let all = parse_all(&fixture("vllm-v0-v1-mixed-sample.prom")).expect("parse");
    let s = all
        .iter()
        .find(|s| s.name == "vllm:prompt_tokens_total")
        .expect("vllm:prompt_tokens_total present");
    assert_eq!(s.labels, labels(&[("model_name", "facebook/opt-125m")]));
    assert_eq!(s.value, 5.0);
    let info = all
        .iter()
        .find(|s| s.name == "vllm:cache_config_info")
        .expect("vllm:cache_config_info present");
    assert_eq!(info.labels.len(), 10);
    assert_eq!(info.labels[6], ("num_gpu_blocks".into(), "7281".into()));
    let rss = all
        .iter()
        .find(|s| s.name == "process_resident_memory_bytes")
        .expect("process_resident_memory_bytes present");
    assert_eq!(rss.value, 5.106151424e9);
}

#[test]
fn envoy_empty_braces_line_from_capture() {
    let all = parse_all(&fixture("envoy-1.40-real-capture.prom")).expect("parse");
    let s = all
        .iter()
        .find(|s| s.name == "envoy_cluster_manager_cluster_added")
        .expect("present");
    assert!(s.labels.is_empty());
    assert_eq!(s.value, 1.0);
}

#[test]
fn envoy_long_sum_gives_nearest_f64() {
    let body = fixture("envoy-1.40-real-capture.prom");
    let mut got = None;
    parse(
        &body,
        |name| (name == b"envoy_cluster_upstream_rq_time_sum").then_some(()),
        |(), s| {
            got = Some((
                s.value,
                s.labels
                    .get(b"envoy_cluster_name")
                    .map(|v| v.eq_str("backend")),
            ))
        },
    )
    .expect("parse");
    let (value, backend) = got.expect("rq_time_sum present");
    assert_eq!(backend, Some(true));
    assert_eq!(
        value,
        "26128.216449495772394584491848946"
            .parse::<f64>()
            .expect("std")
    );
    assert_eq!(value, 26128.216449495772);
}

#[test]
fn envoy_filtered_families_from_capture() {
    let body = fixture("envoy-1.40-real-capture.prom");
    let mut xx = Vec::new();
    let stats = parse(
        &body,
        |name| (name == b"envoy_cluster_upstream_rq_xx").then_some(7u8),
        |tag, s| {
            assert_eq!(tag, 7);
            let class = s.labels.get(b"envoy_response_code_class").expect("class");
            xx.push((class.unescaped().into_owned(), s.value));
        },
    )
    .expect("parse");
    assert_eq!(xx, vec![("2".to_string(), 384.0), ("5".to_string(), 16.0)]);
    assert_eq!(stats.selected, 2);
}

// ---------------------------------------------------------------- edge cases

#[test]
fn empty_braces_with_and_without_value() {
    let s = one("name{} 1\n");
    assert_eq!((s.name.as_str(), s.labels.len(), s.value), ("name", 0, 1.0));
    let e = err("name{}\n");
    assert!(e.to_string().contains("expected value after labels"), "{e}");
}

#[test]
fn colon_in_metric_name() {
    let s = one("vllm:num_requests_running{model_name=\"m\"} 3\n");
    assert_eq!(s.name, "vllm:num_requests_running");
    assert_eq!(one(":leading:colon 1").name, ":leading:colon");
}

#[test]
fn blanks_inside_braces_around_equals_and_trailing_comma() {
    let s = one("m{ a = \"1\" ,\tb\t=\t\"2\" , } 5\n");
    assert_eq!(s.labels, labels(&[("a", "1"), ("b", "2")]));
    assert_eq!(s.value, 5.0);
    assert_eq!(one("m{a=\"1\",} 5").labels, labels(&[("a", "1")]));
}

#[test]
fn blank_between_name_and_brace_and_none_after_brace() {
    // Both are accepted by Prometheus' lexer.
    let s = one("m {a=\"1\"}7\n");
    assert_eq!((s.labels.clone(), s.value), (labels(&[("a", "1")]), 7.0));
}

#[test]
fn comma_between_pairs_is_optional_like_prometheus() {
    assert_eq!(
        one("m{a=\"1\" b=\"2\"} 1").labels,
        labels(&[("a", "1"), ("b", "2")])
    );
}

#[test]
fn no_final_newline() {
    let all = parse_all(b"a 1\nb 2").expect("parse");
    assert_eq!(all.len(), 2);
    assert_eq!((all[1].name.as_str(), all[1].value), ("b", 2.0));
}

#[test]
fn crlf_line_ends() {
    let all = parse_all(b"# TYPE a gauge\r\na{x=\"y\"} 1\r\nb 2 1000\r\n\r\n").expect("parse");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].labels, labels(&[("x", "y")]));
    assert_eq!((all[1].value, all[1].timestamp_ms), (2.0, Some(1000)));
}

#[test]
fn blank_and_whitespace_only_lines() {
    let all = parse_all(b"\n\n  \n\t\na 1\n\n").expect("parse");
    assert_eq!(all.len(), 1);
}

#[test]
fn comments_help_and_type_are_not_samples() {
    let body = "# HELP a Some help with {braces} and = 1 2 3\n# TYPE a counter\n#no space comment\n  # indented comment\na_total 1\n";
    let all = parse_all(body.as_bytes()).expect("parse");
    assert_eq!(all.len(), 1);
    let stats = parse(body.as_bytes(), |_| Some(()), |_, _| {}).expect("parse");
    assert_eq!(
        stats,
        ParseStats {
            lines: 5,
            selected: 1
        }
    );
}

#[test]
fn family_reappears_later() {
    let all =
        parse_all(b"# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\na{x=\"1\"} 3\n").expect("parse");
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "a"]);
}

#[test]
fn exemplar_suffix_is_skipped() {
    let s = one("rq_bucket{le=\"0.5\"} 3 # {trace_id=\"x\"} 1.0 1234\n");
    assert_eq!((s.value, s.timestamp_ms), (3.0, None));
    let s = one("rq_bucket{le=\"0.5\"} 3 1700000000000 # {trace_id=\"x\"} 1.0\n");
    assert_eq!((s.value, s.timestamp_ms), (3.0, Some(1_700_000_000_000)));
}

#[test]
fn optional_integer_timestamp() {
    let s = one("m 1 1712345678901\n");
    assert_eq!(s.timestamp_ms, Some(1_712_345_678_901));
    assert_eq!(one("m 1").timestamp_ms, None);
    assert_eq!(one("m 1 \t").timestamp_ms, None);
    assert_eq!(one("m{a=\"b\"}\t1\t0").timestamp_ms, Some(0));
}

#[test]
fn special_values() {
    assert!(value_of("NaN").is_nan());
    assert!(value_of("nan").is_nan());
    for inf in ["+Inf", "Inf", "inf", "+inf", "INF", "Infinity", "+infinity"] {
        assert_eq!(value_of(inf), f64::INFINITY, "{inf}");
    }
    for inf in ["-Inf", "-inf", "-Infinity"] {
        assert_eq!(value_of(inf), f64::NEG_INFINITY, "{inf}");
    }
}

#[test]
fn go_parsefloat_forms_that_prometheus_accepts() {
    // Prometheus parses values with Go's strconv.ParseFloat, which takes exponents and -0;
    // the fixtures rely on this (`6.634254336e+09`).
    assert_eq!(value_of("1e3"), 1000.0);
    assert_eq!(value_of("6.634254336e+09"), 6_634_254_336.0);
    assert_eq!(value_of("2.194e-05"), 2.194e-05);
    assert!(same_f64(value_of("-0"), -0.0));
    assert_eq!(value_of("+5"), 5.0);
    assert_eq!(value_of(".5"), 0.5);
    assert_eq!(value_of("5."), 5.0);
    assert_eq!(value_of("-12.25"), -12.25);
    assert_eq!(value_of("1e-400"), 0.0);
}

#[test]
fn short_decimal_fast_path_matches_std() {
    for text in [
        "0",
        "7",
        "400",
        "999999999999999",
        "0.1",
        "0.3",
        "123456.789012345",
        "9.99999999999999",
        "-0.000000000000001",
        "1234567890.12345",
        "0.000000000000001",
        "1.",
        "-3.",
        // 16 digits: the mantissa no longer fits 2^53, so the fast path must hand these to std.
        "90071992547409.93",
        "900719925474099.5",
        "-900719925474099.7",
        "9007199254740993",
    ] {
        let want: f64 = text.parse().expect("std");
        assert!(same_f64(value_of(text), want), "{text}");
    }
}

#[test]
fn long_envoy_sum_gives_nearest_f64() {
    let s = one("envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"a\"} 1234567890123456789012345.123\n");
    assert_eq!(
        s.value,
        "1234567890123456789012345.123".parse::<f64>().expect("std")
    );
    assert_eq!(s.value, 1.2345678901234568e24);
    assert_eq!(value_of("0.1000000000000000055511151231257827"), 0.1);
}

#[test]
fn escaped_label_values_with_separators() {
    let body = r#"m{a="x\\y",b="say \"hi\", ok",c="l1\nl2",d="{=},}",e="\t kept"} 1"#;
    let all = parse_all(body.as_bytes()).expect("parse");
    assert_eq!(
        all[0].labels,
        labels(&[
            ("a", "x\\y"),
            ("b", "say \"hi\", ok"),
            ("c", "l1\nl2"),
            ("d", "{=},}"),
            ("e", "\\t kept"),
        ])
    );
}

#[test]
fn leading_whitespace() {
    let s = one("  \t m{a=\"1\"} 2\n");
    assert_eq!((s.name.as_str(), s.value), ("m", 2.0));
}

#[test]
fn utf8_label_values() {
    let s = one("m{model=\"日本語-é\"} 1");
    assert_eq!(s.labels, labels(&[("model", "日本語-é")]));
}

// ---------------------------------------------------------------- borrowed API

#[test]
fn labels_api() {
    let body = br#"m{a="1",b="x\"y",a="dup"} 1"#;
    let mut seen = 0;
    parse(
        body,
        |_| Some(()),
        |(), s| {
            seen += 1;
            assert_eq!(s.name, b"m");
            assert!(!s.labels.is_empty());
            let a = s.labels.get(b"a").expect("a");
            assert_eq!(a.raw(), b"1");
            assert!(matches!(a.unescaped(), Cow::Borrowed("1")));
            assert!(a.eq_str("1") && !a.eq_str("11") && !a.eq_str(""));
            let b = s.labels.get(b"b").expect("b");
            assert_eq!(b.raw(), br#"x\"y"#);
            assert_eq!(b.unescaped(), "x\"y");
            assert!(b.eq_str("x\"y"));
            assert!(!b.eq_str("x\\\"y") && !b.eq_str("x\"") && !b.eq_str("x\"yz"));
            assert!(s.labels.get(b"c").is_none());
            let names: Vec<&[u8]> = s.labels.iter().map(|(n, _)| n).collect();
            assert_eq!(names, [&b"a"[..], b"b", b"a"]);
            assert_eq!(
                format!("{:?}", s.labels),
                r#"{"a": "1", "b": "x\"y", "a": "dup"}"#
            );
        },
    )
    .expect("parse");
    assert_eq!(seen, 1);
    assert!(Labels::empty().is_empty());
    assert_eq!(Labels::empty().iter().count(), 0);
}

#[test]
fn eq_str_agrees_with_unescaped() {
    let body = br#"m{a="",b="\\",c="\n",d="a\\nb",e="\q",f="tail\\"} 1"#;
    parse(
        body,
        |_| Some(()),
        |(), s| {
            for (_, v) in s.labels.iter() {
                let u = v.unescaped();
                assert!(v.eq_str(&u), "{:?} vs {u:?}", v.raw());
                assert!(!v.eq_str(&format!("{u}x")));
            }
        },
    )
    .expect("parse");
}

#[test]
fn invalid_utf8_label_value_is_lossy() {
    let s = one_bytes(b"m{a=\"x\xffy\"} 1");
    assert_eq!(s.labels, labels(&[("a", "x\u{FFFD}y")]));
}

fn one_bytes(body: &[u8]) -> OwnedSample {
    let mut all = parse_all(body).expect("parse");
    assert_eq!(all.len(), 1);
    all.remove(0)
}

// ---------------------------------------------------------------- errors

#[test]
fn error_message_names_line_and_shows_it() {
    let mut body = String::new();
    for i in 0..11 {
        body.push_str(&format!("ok_{i} {i}\n"));
    }
    body.push_str("foo{a 1}\nbar 2\n");
    let e = err(&body);
    assert_eq!(e.line(), 12);
    assert_eq!(
        e.to_string(),
        "line 12: expected '=' after label name in `foo{a 1}`"
    );
}

#[test]
fn error_cases_report_their_line() {
    let cases: &[(&str, &str)] = &[
        ("m{a=\"1} 2", "unterminated label value"),
        ("m{a=\"1\\\"} 2", "unterminated label value"),
        ("m{a=\"1\" 2", "expected label name"),
        ("m{a=\"1\"", "expected '}' to close the labels"),
        ("m{a=1} 2", "expected '\"' to open the label value"),
        ("m{,} 2", "expected label name"),
        ("m{1a=\"x\"} 2", "expected label name"),
        ("m{a:b=\"x\"} 2", "expected '=' after label name"),
        ("m", "expected value after metric name"),
        ("m ", "expected value after metric name"),
        ("m{a=\"b\"}", "expected value after labels"),
        ("m 1 2 3", "unexpected text after timestamp"),
        ("{a=\"b\"} 1", "expected metric name at start of line"),
        ("m-x 1", "invalid character in metric name"),
        ("m 1 5x", "invalid timestamp `5x`"),
        ("m 1 -5", "invalid timestamp `-5`"),
        ("m 1 1.5", "invalid timestamp `1.5`"),
        ("m 1 99999999999999999999", "invalid timestamp"),
        ("m 1 1e3", "invalid timestamp"),
    ];
    for (line, want) in cases {
        let body = format!("# TYPE m gauge\nfirst 1\n{line}\nlast 2\n");
        let e = err(&body);
        assert_eq!(e.line(), 3, "{line:?}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with("line 3: "), "{line:?}: {msg}");
        assert!(msg.contains(want), "{line:?}: {msg} (want {want:?})");
        assert!(msg.contains(line.trim_end()), "{line:?}: {msg}");
    }
}

#[test]
fn values_prometheus_rejects() {
    for bad in [
        "0x10", "0x1p3", "1_000", "1e", "e3", ".", "-", "+", "1.2.3", "--1", "1e3x", "+NaN",
        "-nan", "infin", "1e400", "-1e400", "1,5", "１",
    ] {
        let e = err(&format!("m {bad}\n"));
        assert!(
            matches!(&e, ParseError::Value { line: 1, token, .. } if token == bad),
            "{bad}: {e}"
        );
        assert_eq!(
            e.to_string(),
            format!("line 1: invalid sample value `{bad}` in `m {bad}`")
        );
    }
}

#[test]
fn excerpt_is_short_and_near_the_fault() {
    let long_value = "v".repeat(300);
    let body = format!("m{{a=\"{long_value}\",b 1}} 1\n");
    let e = err(&body);
    let ParseError::Syntax { excerpt, what, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(*what, "expected '=' after label name");
    assert!(excerpt.len() <= 80, "{}", excerpt.len());
    assert!(excerpt.contains(",b 1}"), "{excerpt}");
    // Multi-byte characters are not split at the window edges.
    let body = format!("m{{a=\"{}\",b 1}} 1\n", "é".repeat(200));
    let e = err(&body);
    let ParseError::Syntax { excerpt, .. } = &e else {
        panic!("{e}");
    };
    assert!(
        excerpt.len() <= 80 && !excerpt.contains('\u{FFFD}'),
        "{excerpt}"
    );
}

// ---------------------------------------------------------------- selection

#[test]
fn unselected_garbage_is_skipped_and_selected_garbage_fails() {
    let body = b"good 1\nbad{a=1} 2\nbad-name{{{ x\n9lives 3\ngood 4\n";
    let mut got = Vec::new();
    let stats = parse(
        body,
        |n| (n == b"good").then_some(()),
        |(), s| got.push(s.value),
    )
    .expect("skip");
    assert_eq!(got, [1.0, 4.0]);
    assert_eq!(
        stats,
        ParseStats {
            lines: 5,
            selected: 2
        }
    );

    let e = parse(body, |n| (n == b"bad").then_some(()), |_, _| {}).expect_err("bad selected");
    assert_eq!(e.line(), 2);
    assert!(
        e.to_string()
            .contains("expected '\"' to open the label value"),
        "{e}"
    );

    let e = parse(body, |n| (n == b"bad-name").then_some(()), |_, _| {})
        .expect_err("bad-name selected");
    assert_eq!(e.line(), 3);
    assert!(
        e.to_string().contains("invalid character in metric name"),
        "{e}"
    );

    let e =
        parse(body, |n| (n == b"9lives").then_some(()), |_, _| {}).expect_err("9lives selected");
    assert_eq!(e.line(), 4);
    assert!(e.to_string().contains("must start with"), "{e}");
}

#[test]
fn select_sees_each_sample_name_once_and_nothing_else() {
    let body = b"# HELP a x\n# TYPE a gauge\na{x=\"1\"} 1\n\n  a 2\nb{} 3\n";
    let mut names = Vec::new();
    parse(
        body,
        |n| {
            names.push(String::from_utf8_lossy(n).into_owned());
            None::<()>
        },
        |_, _| unreachable!("nothing selected"),
    )
    .expect("parse");
    assert_eq!(names, ["a", "a", "b"]);
}

#[test]
fn empty_body() {
    assert_eq!(
        parse(b"", |_| Some(()), |_, _| {}).expect("empty"),
        ParseStats::default()
    );
    assert!(parse_all(b"\n\n# only comments\n")
        .expect("comments")
        .is_empty());
}

// ---------------------------------------------------------------- property test

mod property {
    use super::*;
    use proptest::prelude::*;

    /// A value as written plus the f64 it must parse to.
    #[derive(Debug, Clone)]
    struct Val {
        text: String,
        want: f64,
    }

    /// Per-line rendering knobs; those marked "free" are ignored in plain documents (which
    /// stick to what the openmetrics-parser oracle understands, so it can be asserted to accept).
    #[derive(Debug, Clone)]
    struct Fmt {
        lead_ws: &'static str,  // free
        brace_ws: &'static str, // free: between name and `{`, and around tokens inside
        sep: &'static str,      // before the value ("\t" only when free)
        trailing_comma: bool,
        drop_commas: bool, // free: pairs separated by blanks only (Prometheus quirk)
        empty_braces: bool, // `{}` on a label-less sample
        exemplar: bool,    // free
        trailing_ws: bool, // free
        crlf: bool,
        blank_before: bool,   // free
        comment_before: bool, // free
    }

    #[derive(Debug, Clone)]
    struct ModelSample {
        values: Vec<String>,
        val: Val,
        ts: Option<i64>,
        fmt: Fmt,
    }

    #[derive(Debug, Clone)]
    struct Family {
        name: String,
        label_names: Vec<String>,
        help: bool,
        samples: Vec<ModelSample>,
    }

    #[derive(Debug, Clone)]
    struct Doc {
        plain: bool,
        families: Vec<Family>,
        final_newline: bool,
        repeat_first: bool,
    }

    fn val() -> impl Strategy<Value = Val> {
        let v = |text: &str, want: f64| Val {
            text: text.to_string(),
            want,
        };
        prop_oneof![
            4 => (0u32..100_000).prop_map(|n| Val { text: n.to_string(), want: f64::from(n) }),
            2 => any::<i64>().prop_map(|n| Val { text: n.to_string(), want: n as f64 }),
            // Short decimals exercise the fast path; std's correctly rounded parse is the reference.
            3 => (0u64..100_000_000_000_000_000, 0usize..18, any::<bool>()).prop_map(|(m, scale, neg)| {
                let digits = format!("{m:018}");
                let (int, frac) = digits.split_at(18 - scale);
                let int = match int.trim_start_matches('0') { "" => "0", int => int };
                let text = format!("{}{int}.{frac}", if neg { "-" } else { "" });
                Val { want: text.parse().expect("std parses generated decimal"), text }
            }),
            2 => (any::<f64>().prop_filter("finite", |f| f.is_finite()), any::<bool>()).prop_map(|(f, e)| {
                Val { text: if e { format!("{f:e}") } else { format!("{f:?}") }, want: f }
            }),
            // Envoy-style sums with more digits than an f64 holds.
            1 => "[1-9][0-9]{15,30}\\.[0-9]{10,33}".prop_map(|text| Val { want: text.parse().expect("std"), text }),
            1 => prop_oneof![Just(v("NaN", f64::NAN)), Just(v("nan", f64::NAN)), Just(v("NAN", f64::NAN))],
            1 => prop_oneof![
                Just(v("+Inf", f64::INFINITY)), Just(v("Inf", f64::INFINITY)), Just(v("+inf", f64::INFINITY)),
                Just(v("+Infinity", f64::INFINITY)), Just(v("infinity", f64::INFINITY)),
            ],
            1 => prop_oneof![Just(v("-Inf", f64::NEG_INFINITY)), Just(v("-infinity", f64::NEG_INFINITY))],
            1 => prop_oneof![Just(v("-0", -0.0)), Just(v("-0.0", -0.0)), Just(v("0.000", 0.0))],
        ]
    }

    fn label_value() -> impl Strategy<Value = String> {
        let chars = vec![
            'a', 'Z', '0', ' ', ',', '=', '{', '}', '\\', '"', '\n', 'é', '日', '#', '\t',
        ];
        prop::collection::vec(prop::sample::select(chars), 0..8).prop_map(String::from_iter)
    }

    fn fmt() -> impl Strategy<Value = Fmt> {
        (
            prop::sample::select(vec!["", "", " ", "\t ", "  "]),
            prop::sample::select(vec!["", "", " ", "\t", " \t "]),
            prop::sample::select(vec![" ", " ", "  ", "\t"]),
            any::<bool>(),
            prop::bool::weighted(0.1),
            any::<bool>(),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(
                    lead_ws,
                    brace_ws,
                    sep,
                    trailing_comma,
                    drop_commas,
                    empty_braces,
                    exemplar,
                    trailing_ws,
                    crlf,
                    blank_before,
                    comment_before,
                )| Fmt {
                    lead_ws,
                    brace_ws,
                    sep,
                    trailing_comma,
                    drop_commas,
                    empty_braces,
                    exemplar,
                    trailing_ws,
                    crlf,
                    blank_before,
                    comment_before,
                },
            )
    }

    fn family(plain: bool) -> impl Strategy<Value = Family> {
        let name = if plain {
            "[a-z][a-z0-9_]{0,12}"
        } else {
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"
        };
        (
            name,
            prop::collection::vec("[a-zA-Z_][a-zA-Z0-9_]{0,8}", 0..4),
            any::<bool>(),
        )
            .prop_flat_map(|(name, mut label_names, help)| {
                let mut seen = std::collections::HashSet::new();
                label_names.retain(|n| seen.insert(n.clone()));
                let n = label_names.len();
                let sample = (
                    prop::collection::vec(label_value(), n),
                    val(),
                    prop::option::weighted(0.3, 0i64..=i64::MAX),
                    fmt(),
                )
                    .prop_map(|(values, val, ts, fmt)| ModelSample {
                        values,
                        val,
                        ts,
                        fmt,
                    });
                (
                    Just(name),
                    Just(label_names),
                    Just(help),
                    prop::collection::vec(sample, 1..5),
                )
            })
            .prop_map(|(name, label_names, help, mut samples)| {
                // One sample per label set, as the oracle (and Prometheus' storage) requires.
                let mut seen = std::collections::HashSet::new();
                samples.retain(|s| seen.insert(s.values.clone()));
                Family {
                    name,
                    label_names,
                    help,
                    samples,
                }
            })
    }

    fn doc() -> impl Strategy<Value = Doc> {
        any::<bool>().prop_flat_map(|plain| {
            (
                Just(plain),
                prop::collection::vec(family(plain), 1..6),
                prop::bool::weighted(0.8),
                prop::bool::weighted(0.2),
            )
                .prop_map(|(plain, mut families, final_newline, repeat_first)| {
                    if plain {
                        let mut seen = std::collections::HashSet::new();
                        families.retain(|f| seen.insert(f.name.clone()));
                    }
                    Doc {
                        plain,
                        families,
                        final_newline,
                        repeat_first,
                    }
                })
        })
    }

    fn escape(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    fn render(doc: &Doc) -> String {
        let plain = doc.plain;
        let free = |s: &'static str| if plain { "" } else { s };
        let mut out = String::new();
        let mut families: Vec<&Family> = doc.families.iter().collect();
        if !plain && doc.repeat_first {
            families.push(&doc.families[0]);
        }
        for f in families {
            if f.help {
                out.push_str(&format!("# HELP {} Help with {{braces}} = 1 2\n", f.name));
            }
            out.push_str(&format!("# TYPE {} gauge\n", f.name));
            for s in &f.samples {
                let x = &s.fmt;
                let eol = if x.crlf { "\r\n" } else { "\n" };
                if !plain && x.blank_before {
                    out.push_str(&format!(" \t{eol}"));
                }
                if !plain && x.comment_before {
                    out.push_str(&format!("# a comment {{x=\"1\"}} 2{eol}"));
                }
                out.push_str(free(x.lead_ws));
                out.push_str(&f.name);
                if !f.label_names.is_empty() || x.empty_braces {
                    let ws = free(x.brace_ws);
                    out.push_str(ws);
                    out.push('{');
                    let pairs: Vec<String> = f
                        .label_names
                        .iter()
                        .zip(&s.values)
                        .map(|(n, v)| format!("{ws}{n}{ws}={ws}\"{}\"{ws}", escape(v)))
                        .collect();
                    let comma = if !plain && x.drop_commas { " " } else { "," };
                    out.push_str(&pairs.join(comma));
                    if x.trailing_comma && !pairs.is_empty() {
                        out.push(',');
                        out.push_str(ws);
                    }
                    out.push('}');
                }
                out.push_str(if plain && x.sep == "\t" { " " } else { x.sep });
                // The oracle takes only signed infinities, and its PEG commits to "inf" before
                // trying "infinity"; keep plain documents within what it can read.
                let text = match s.val.text.as_str() {
                    "Inf" | "infinity" | "+Infinity" if plain => "+Inf",
                    "-infinity" if plain => "-Inf",
                    other => other,
                };
                out.push_str(text);
                if let Some(ts) = s.ts {
                    out.push_str(&format!("{}{ts}", if plain { " " } else { x.sep }));
                }
                if !plain && x.exemplar {
                    out.push_str(" # {trace_id=\"abc\"} 1.0 1234");
                }
                if !plain && x.trailing_ws {
                    out.push_str(" \t");
                }
                out.push_str(eol);
            }
        }
        if !doc.final_newline && !plain {
            while out.ends_with('\n') || out.ends_with('\r') {
                out.pop();
            }
        }
        out
    }

    fn model(doc: &Doc) -> Vec<OwnedSample> {
        let mut families: Vec<&Family> = doc.families.iter().collect();
        if !doc.plain && doc.repeat_first {
            families.push(&doc.families[0]);
        }
        families
            .into_iter()
            .flat_map(|f| {
                f.samples.iter().map(move |s| OwnedSample {
                    name: f.name.clone(),
                    labels: f
                        .label_names
                        .iter()
                        .cloned()
                        .zip(s.values.iter().cloned())
                        .collect(),
                    value: s.val.want,
                    timestamp_ms: s.ts,
                })
            })
            .collect()
    }

    /// (name, labels sorted by name with *raw* values, value, timestamp) — the oracle keeps
    /// label values escaped and sorts labels, so compare in that shape.
    type Flat = (String, Vec<(String, String)>, f64, Option<f64>);

    fn ours_flat(body: &[u8]) -> Vec<Flat> {
        let mut out = Vec::new();
        parse(
            body,
            |_| Some(()),
            |(), s| {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v.raw()).into_owned(),
                        )
                    })
                    .collect();
                labels.sort();
                out.push((
                    String::from_utf8_lossy(s.name).into_owned(),
                    labels,
                    s.value,
                    s.timestamp_ms.map(|t| t as f64),
                ));
            },
        )
        .expect("already parsed once");
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    fn oracle_flat(body: &str) -> Result<Vec<Flat>, String> {
        use openmetrics_parser::PrometheusValue;
        let expo = match catch_unwind(AssertUnwindSafe(|| {
            openmetrics_parser::prometheus::parse_prometheus(body)
        })) {
            Ok(Ok(expo)) => expo,
            Ok(Err(e)) => return Err(format!("rejected: {e}")),
            Err(_) => return Err("panicked".to_string()),
        };
        let mut out = Vec::new();
        for family in expo.families.values() {
            for s in family.iter_samples() {
                let value = match &s.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                    other => return Err(format!("unexpected value kind {other:?}")),
                };
                let labels = s.get_labelset().map_err(|e| format!("labelset: {e}"))?;
                let mut labels: Vec<(String, String)> =
                    labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
                labels.sort();
                out.push((family.family_name.clone(), labels, value, s.timestamp));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    fn same_sample(a: &OwnedSample, b: &OwnedSample) -> bool {
        a.name == b.name
            && a.labels == b.labels
            && same_f64(a.value, b.value)
            && a.timestamp_ms == b.timestamp_ms
    }

    proptest! {
        // 512 cases by default; PROPTEST_CASES overrides for longer hunts.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
            ..ProptestConfig::default()
        })]

        #[test]
        fn parse_all_matches_model_and_oracle(doc in doc()) {
            let text = render(&doc);
            let got = parse_all(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let want = model(&doc);
            prop_assert_eq!(got.len(), want.len(), "{}", text);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!(same_sample(g, w), "got {:?}\nwant {:?}\nin\n{}", g, w, text);
            }

            match oracle_flat(&text) {
                Ok(theirs) => {
                    let ours = ours_flat(text.as_bytes());
                    prop_assert_eq!(ours.len(), theirs.len(), "{}", text);
                    for (o, t) in ours.iter().zip(&theirs) {
                        // The oracle reads "-0" as the integer 0, so compare with ==, not bits.
                        let value_eq = o.2 == t.2 || (o.2.is_nan() && t.2.is_nan());
                        prop_assert!(o.0 == t.0 && o.1 == t.1 && value_eq && o.3 == t.3,
                            "ours {:?}\noracle {:?}\nin\n{}", o, t, text);
                    }
                }
                // Plain documents are written to be inside the oracle's grammar: it must accept them.
                Err(why) => prop_assert!(!doc.plain, "oracle {} plain document\n{}", why, text),
            }
        }
    }
}
