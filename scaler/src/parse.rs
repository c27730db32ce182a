//! Zero-copy parser for the Prometheus text exposition format (0.0.4), with name-first skipping.
//!
//! A scrape body is mostly series we do not care about (a busy Envoy exposes thousands), so
//! [`parse`] reads each line's metric name first and hands it to a `select` closure; only
//! selected lines have their labels and value parsed. Everything borrows from the body.
//!
//! Grammar, per line (`ws` is a space or a tab; `\n` ends a line, a `\r` before it is ignored,
//! the last line needs no `\n`):
//!
//! ```text
//! line      = *ws [ comment / sample ]
//! comment   = "#" *any                                  ; HELP, TYPE and free comments: skipped
//! sample    = name ( *ws "{" labels "}" *ws / 1*ws ) value [ 1*ws timestamp ] [ 1*ws exemplar ] *ws
//! name      = [a-zA-Z_:] *[a-zA-Z0-9_:]
//! labels    = *ws *( lname *ws "=" *ws lvalue *ws [ "," *ws ] )
//! lname     = [a-zA-Z_] *[a-zA-Z0-9_]
//! lvalue    = DQUOTE *( "\" any-byte / any-byte-but-DQUOTE-or-backslash ) DQUOTE
//! value     = Go `strconv.ParseFloat` syntax without hex floats or `_`, as Prometheus:
//!             [+-] decimal [ (e/E) [+-] digits ], NaN, [+-]Inf, [+-]Infinity (any case)
//! timestamp = 1*DIGIT                                   ; milliseconds; must fit an i64
//! exemplar  = "#" *any                                  ; OpenMetrics exemplar: tolerated, skipped
//! ```
//!
//! Deliberately like Prometheus' own text parser (`promlex.l`): `name{}` is fine, a trailing
//! comma and blanks inside the braces are fine, the comma between pairs is optional, and only
//! `\\`, `\"` and `\n` are decoded in label values (other escapes stay verbatim). A value that
//! overflows f64 or a signed NaN is an error, as with Go's `ParseFloat`.
//!
//! Not checked (Prometheus checks these after parsing, we leave them to callers): duplicate
//! label names (the first wins in [`Labels::get`]), UTF-8 validity of label values (decoded
//! lossily), and whether HELP/TYPE lines are well formed.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr3};

/// One sample line, borrowing from the scrape body.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    /// The metric name, validated: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    pub name: &'a [u8],
    /// The label pairs, decoded on demand.
    pub labels: Labels<'a>,
    /// The sample value; NaN and ±Inf included.
    pub value: f64,
    /// The optional timestamp after the value, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sample")
            .field("name", &String::from_utf8_lossy(self.name))
            .field("labels", &self.labels)
            .field("value", &self.value)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

/// The label set of a sample: the raw bytes between the braces, validated by [`parse`].
///
/// Pairs are decoded lazily on iteration, so a sample whose labels are never looked at costs
/// nothing beyond the validation pass.
#[derive(Clone, Copy)]
pub struct Labels<'a> {
    raw: &'a [u8],
}

impl<'a> Labels<'a> {
    /// A label set with no pairs (a sample written without braces).
    pub fn empty() -> Labels<'static> {
        Labels { raw: b"" }
    }

    /// The bytes between the braces as written (validated, not decoded).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The pairs in input order.
    pub fn iter(&self) -> LabelIter<'a> {
        LabelIter { rest: self.raw }
    }

    /// The value of the first pair named `name`.
    pub fn get(&self, name: &[u8]) -> Option<LabelValue<'a>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether there are no pairs (`name`, `name{}` and `name{ }` alike).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a> IntoIterator for Labels<'a> {
    type Item = (&'a [u8], LabelValue<'a>);
    type IntoIter = LabelIter<'a>;
    fn into_iter(self) -> LabelIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (String::from_utf8_lossy(n), v)))
            .finish()
    }
}

/// Iterator over `(name, value)` pairs of a [`Labels`].
#[derive(Clone)]
pub struct LabelIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = (&'a [u8], LabelValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        // `Labels` only ever holds bytes that `scan_labels` accepted, so this re-scan never
        // meets malformed input; it still bails out instead of panicking if it did.
        let s = self.rest;
        self.rest = &[];
        let start = skip_ws(s, 0);
        let end = scan_class(s, start, LABEL);
        if end == start {
            return None;
        }
        let name = &s[start..end];
        let eq = skip_ws(s, end);
        if s.get(eq) != Some(&b'=') {
            return None;
        }
        let open = skip_ws(s, eq + 1);
        if s.get(open) != Some(&b'"') {
            return None;
        }
        let (close, escaped) = scan_quoted(s, open + 1)?;
        let value = LabelValue {
            raw: &s[open + 1..close],
            escaped,
        };
        let mut next = skip_ws(s, close + 1);
        if s.get(next) == Some(&b',') {
            next += 1;
        }
        self.rest = s.get(next..).unwrap_or(&[]);
        Some((name, value))
    }
}

/// A label value as written between the quotes.
#[derive(Clone, Copy)]
pub struct LabelValue<'a> {
    raw: &'a [u8],
    /// Whether `raw` contains a backslash; without one, unescaping is the identity.
    escaped: bool,
}

impl<'a> LabelValue<'a> {
    /// The bytes between the quotes, escapes not decoded.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The value with `\\`, `\"` and `\n` decoded; borrows unless there was an escape or
    /// invalid UTF-8 (replaced with U+FFFD).
    pub fn unescaped(&self) -> Cow<'a, str> {
        if !self.escaped {
            return String::from_utf8_lossy(self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        for_each_unescaped(self.raw, |piece| {
            out.extend_from_slice(piece);
            true
        });
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Whether the unescaped value equals `s`, without allocating. A value that is not valid
    /// UTF-8 equals no `s` (even though [`unescaped`](Self::unescaped) would show U+FFFD).
    pub fn eq_str(&self, s: &str) -> bool {
        let mut want = s.as_bytes();
        if !self.escaped {
            return self.raw == want;
        }
        for_each_unescaped(self.raw, |piece| match want.strip_prefix(piece) {
            Some(rest) => {
                want = rest;
                true
            }
            None => false,
        }) && want.is_empty()
    }
}

impl fmt::Debug for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.unescaped(), f)
    }
}

/// Counts from one [`parse`] call, for scrape telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ParseStats {
    /// Lines in the body, blank and comment lines included.
    pub lines: usize,
    /// Samples passed to the sink.
    pub selected: usize,
}

/// A malformed line. Every variant names the 1-based line and carries an excerpt of it
/// (at most 80 bytes of the line around the fault, lossily decoded).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line does not follow the grammar; `what` says what was expected or found.
    #[error("line {line}: {what} in `{excerpt}`")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What was expected or found, e.g. "expected '=' after label name".
        what: &'static str,
        /// The line, or 80 bytes of it around the fault.
        excerpt: String,
    },
    /// The value token is not a number Prometheus accepts.
    #[error("line {line}: invalid sample value `{token}` in `{excerpt}`")]
    Value {
        /// 1-based line number.
        line: usize,
        /// The rejected value as written.
        token: String,
        /// The line, or 80 bytes of it around the value.
        excerpt: String,
    },
    /// The token after the value is not integer milliseconds that fit an i64.
    #[error("line {line}: invalid timestamp `{token}` (want integer milliseconds) in `{excerpt}`")]
    Timestamp {
        /// 1-based line number.
        line: usize,
        /// The rejected timestamp as written.
        token: String,
        /// The line, or 80 bytes of it around the timestamp.
        excerpt: String,
    },
}

impl ParseError {
    /// The 1-based line number of the offending line.
    pub fn line(&self) -> usize {
        match self {
            ParseError::Syntax { line, .. }
            | ParseError::Value { line, .. }
            | ParseError::Timestamp { line, .. } => *line,
        }
    }
}

/// A sample with owned, unescaped strings; labels in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSample {
    /// The metric name.
    pub name: String,
    /// `(name, unescaped value)` pairs in input order.
    pub labels: Vec<(String, String)>,
    /// The sample value.
    pub value: f64,
    /// The optional timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl From<Sample<'_>> for OwnedSample {
    fn from(s: Sample<'_>) -> Self {
        OwnedSample {
            name: String::from_utf8_lossy(s.name).into_owned(),
            labels: s
                .labels
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        v.unescaped().into_owned(),
                    )
                })
                .collect(),
            value: s.value,
            timestamp_ms: s.timestamp_ms,
        }
    }
}

/// Calls `select(name)` once per sample line with the metric name (bytes before `{` or
/// whitespace). Lines whose name is not selected are skipped without looking at labels or value
/// (only a memchr to the next newline). For selected lines the labels and value are parsed and
/// `sink(tag, sample)` is called. A malformed *selected* line fails the whole parse with
/// [`ParseError`] (as Prometheus fails a scrape): nothing is silently dropped.
///
/// `select` sees the name before it is validated; a selected name outside
/// `[a-zA-Z_:][a-zA-Z0-9_:]*` is an error. A line with an empty name (it starts with `{`)
/// belongs to no family and is always an error. Allocates nothing.
pub fn parse<'a, T>(
    body: &'a [u8],
    mut select: impl FnMut(&[u8]) -> Option<T>,
    mut sink: impl FnMut(T, Sample<'a>),
) -> Result<ParseStats, ParseError> {
    let mut stats = ParseStats::default();
    let mut pos = 0;
    while pos < body.len() {
        let rest = &body[pos..];
        let (mut line, next) = match memchr(b'\n', rest) {
            Some(i) => (&rest[..i], pos + i + 1),
            None => (rest, body.len()),
        };
        pos = next;
        stats.lines += 1;
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        // Dispatch on the first byte: nearly every line starts with a name or `#`.
        let Some(&first) = line.first() else {
            continue;
        };
        let start = if class(first) & NAME_START != 0 {
            0
        } else if first == b'#' {
            continue;
        } else {
            let start = skip_ws(line, 0);
            match line.get(start) {
                None | Some(b'#') => continue,
                Some(_) => start,
            }
        };
        // The name ends at the first `{`, space or tab. One SIMD search is cheaper than a
        // per-byte class check, and only names that get selected need their bytes validated:
        // a malformed line nobody asked for is skipped like any other.
        let end = memchr3(b'{', b' ', b'\t', &line[start..]).map_or(line.len(), |i| start + i);
        let name = &line[start..end];
        if name.is_empty() {
            // The line starts with `{`: it belongs to no family, so no filter can skip it.
            return Err(
                Fault::Syntax("expected metric name at start of line", start)
                    .into_error(line, stats.lines),
            );
        }
        let Some(tag) = select(name) else {
            continue;
        };
        if let Some(what) = invalid_name(name) {
            return Err(Fault::Syntax(what, start).into_error(line, stats.lines));
        }
        let (labels, value, timestamp_ms) =
            parse_rest(line, end).map_err(|fault| fault.into_error(line, stats.lines))?;
        stats.selected += 1;
        sink(
            tag,
            Sample {
                name,
                labels,
                value,
                timestamp_ms,
            },
        );
    }
    Ok(stats)
}

/// Convenience: every sample (select everything). Used by tests and tools.
pub fn parse_all(body: &[u8]) -> Result<Vec<OwnedSample>, ParseError> {
    let mut out = Vec::new();
    parse(body, |_| Some(()), |(), s| out.push(OwnedSample::from(s)))?;
    Ok(out)
}

/// Why `name` is not `[a-zA-Z_:][a-zA-Z0-9_:]*`, if it is not.
fn invalid_name(name: &[u8]) -> Option<&'static str> {
    match name.first() {
        None => Some("expected metric name at start of line"),
        Some(&b) if class(b) & NAME_START == 0 => Some("metric name must start with [a-zA-Z_:]"),
        Some(_) if scan_class(name, 1, NAME) != name.len() => {
            Some("invalid character in metric name")
        }
        Some(_) => None,
    }
}

/// Parses what follows the metric name ending at `name_end`: labels, value, timestamp, exemplar.
#[inline]
fn parse_rest(line: &[u8], name_end: usize) -> Result<(Labels<'_>, f64, Option<i64>), Fault> {
    let mut i = skip_ws(line, name_end);
    let mut labels = Labels::empty();
    let mut what = "expected value after metric name";
    if line.get(i) == Some(&b'{') {
        let close = scan_labels(line, i + 1)?;
        labels = Labels {
            raw: &line[i + 1..close],
        };
        i = skip_ws(line, close + 1);
        what = "expected value after labels";
    }
    let value_start = i;
    i = scan_token(line, i);
    if i == value_start {
        return Err(Fault::Syntax(what, i));
    }
    let value = parse_value(&line[value_start..i]).ok_or(Fault::Value(value_start, i))?;
    i = skip_ws(line, i);
    let mut timestamp = None;
    if i < line.len() && line[i] != b'#' {
        let ts_start = i;
        i = scan_token(line, i);
        timestamp = Some(parse_timestamp(&line[ts_start..i]).ok_or(Fault::Timestamp(ts_start, i))?);
        i = skip_ws(line, i);
        if i < line.len() && line[i] != b'#' {
            return Err(Fault::Syntax("unexpected text after timestamp", i));
        }
    }
    // Anything left starts with `#`: an exemplar, which we do not use.
    Ok((labels, value, timestamp))
}

/// Validates the label pairs starting just after `{`; returns the index of the closing `}`.
#[inline]
fn scan_labels(line: &[u8], mut i: usize) -> Result<usize, Fault> {
    loop {
        i = skip_ws(line, i);
        let Some(&b) = line.get(i) else {
            return Err(Fault::Syntax("expected '}' to close the labels", i));
        };
        if b == b'}' {
            return Ok(i);
        }
        if class(b) & LABEL_START == 0 {
            return Err(Fault::Syntax("expected label name", i));
        }
        i = skip_ws(line, scan_class(line, i + 1, LABEL));
        if line.get(i) != Some(&b'=') {
            return Err(Fault::Syntax("expected '=' after label name", i));
        }
        i = skip_ws(line, i + 1);
        if line.get(i) != Some(&b'"') {
            return Err(Fault::Syntax("expected '\"' to open the label value", i));
        }
        let Some((close, _)) = scan_quoted(line, i + 1) else {
            return Err(Fault::Syntax("unterminated label value", i));
        };
        i = skip_ws(line, close + 1);
        if line.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// Finds the closing quote of a label value starting at `i`; also says whether a backslash was
/// seen (so decoding can be skipped for the common escape-free value).
#[inline]
fn scan_quoted(s: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Decodes an escaped label value piecewise; stops early (returning false) when `f` does.
fn for_each_unescaped(raw: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let mut rest = raw;
    while let Some(i) = memchr(b'\\', rest) {
        if !f(&rest[..i]) {
            return false;
        }
        let (piece, used): (&[u8], usize) = match rest.get(i + 1) {
            Some(b'\\') => (b"\\", 2),
            Some(b'"') => (b"\"", 2),
            Some(b'n') => (b"\n", 2),
            // Unknown escapes stay verbatim, as in Prometheus.
            Some(_) => (&rest[i..i + 2], 2),
            None => (&rest[i..], 1),
        };
        if !f(piece) {
            return false;
        }
        rest = &rest[i + used..];
    }
    f(rest)
}

/// Parses a sample value. Short plain decimals (almost all Envoy values) take an exact fast
/// path; everything else goes through `f64::from_str`, which rounds long inputs correctly.
#[inline]
fn parse_value(tok: &[u8]) -> Option<f64> {
    match parse_short_decimal(tok) {
        Some(v) => Some(v),
        None => parse_value_slow(tok),
    }
}

/// `[-] digits [. digits]` with at most 15 digits: the mantissa and 10^scale are exact in an
/// f64, so one division is correctly rounded (Clinger's fast path) and matches `from_str`.
#[inline]
fn parse_short_decimal(tok: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match tok {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, tok),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut dot = None;
    for (k, &b) in digits.iter().enumerate() {
        let d = b.wrapping_sub(b'0');
        if d < 10 {
            mantissa = mantissa * 10 + u64::from(d);
        } else if b == b'.' && dot.is_none() {
            dot = Some(k);
        } else {
            return None;
        }
    }
    let n_digits = digits.len() - usize::from(dot.is_some());
    if n_digits == 0 || n_digits > 15 {
        return None;
    }
    let scale = dot.map_or(0, |k| digits.len() - k - 1);
    let magnitude = mantissa as f64 / POW10[scale];
    Some(if negative { -magnitude } else { magnitude })
}

#[cold]
fn parse_value_slow(tok: &[u8]) -> Option<f64> {
    let v: f64 = std::str::from_utf8(tok).ok()?.parse().ok()?;
    if v.is_nan() {
        // Go's ParseFloat (and so Prometheus) rejects a signed NaN; Rust accepts it.
        if matches!(tok.first(), Some(b'+' | b'-')) {
            return None;
        }
    } else if v.is_infinite() && !tok.iter().any(|&b| b == b'i' || b == b'I') {
        // A finite literal beyond f64::MAX: Go reports ErrRange, Rust rounds to infinity.
        return None;
    }
    Some(v)
}

/// Integer milliseconds; Prometheus' lexer accepts only digits here (no sign).
#[inline]
fn parse_timestamp(tok: &[u8]) -> Option<i64> {
    if tok.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in tok {
        let d = b.wrapping_sub(b'0');
        if d >= 10 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(v)
}

/// Where and how a selected line is malformed; turned into a [`ParseError`] only on failure, so
/// the hot path carries two words instead of a String.
enum Fault {
    Syntax(&'static str, usize),
    Value(usize, usize),
    Timestamp(usize, usize),
}

impl Fault {
    #[cold]
    #[inline(never)]
    fn into_error(self, line: &[u8], lineno: usize) -> ParseError {
        match self {
            Fault::Syntax(what, at) => ParseError::Syntax {
                line: lineno,
                what,
                excerpt: excerpt(line, at),
            },
            Fault::Value(start, end) => ParseError::Value {
                line: lineno,
                token: excerpt(&line[start..end], 0),
                excerpt: excerpt(line, start),
            },
            Fault::Timestamp(start, end) => ParseError::Timestamp {
                line: lineno,
                token: excerpt(&line[start..end], 0),
                excerpt: excerpt(line, start),
            },
        }
    }
}

/// At most [`EXCERPT_MAX`] bytes of `line` that include position `at`, cut at UTF-8 boundaries.
fn excerpt(line: &[u8], at: usize) -> String {
    let mut start = 0;
    let mut end = line.len();
    if end > EXCERPT_MAX {
        start = at
            .saturating_sub(EXCERPT_MAX / 2)
            .min(line.len() - EXCERPT_MAX);
        end = start + EXCERPT_MAX;
        // Do not split a multi-byte character: step over continuation bytes.
        while start < end && line[start] & 0xC0 == 0x80 {
            start += 1;
        }
        while end > start && end < line.len() && line[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    String::from_utf8_lossy(&line[start..end]).into_owned()
}

const EXCERPT_MAX: usize = 80;

/// Byte classes, looked up in one table so the name scan is a load and a test per byte.
const NAME_START: u8 = 1;
const NAME: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL: u8 = 8;

static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let digit = c.is_ascii_digit();
        if alpha || c == b':' {
            t[b] |= NAME_START | NAME;
        }
        if digit {
            t[b] |= NAME | LABEL;
        }
        if alpha {
            t[b] |= LABEL_START | LABEL;
        }
        b += 1;
    }
    t
};

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// First index at or after `i` whose byte is not in class `mask`.
#[inline(always)]
fn scan_class(s: &[u8], i: usize, mask: u8) -> usize {
    match s.get(i..) {
        Some(rest) => rest
            .iter()
            .position(|&b| class(b) & mask == 0)
            .map_or(s.len(), |k| i + k),
        None => i,
    }
}

/// First index at or after `i` that is not a space or tab.
#[inline(always)]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// First index at or after `i` that is a space or tab (the end of a value or timestamp token).
#[inline(always)]
fn scan_token(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && !matches!(s[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests;
