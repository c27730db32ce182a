//! PromQL-style label matchers, parsed once and compiled once.

use std::fmt;

use regex::Regex;

use crate::parse::Labels;

/// A PromQL-style label matcher: `label="v"`, `label!="v"`, `label=~"re"`, `label!~"re"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored like PromQL's; compiled once.
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    #[error("`{0}` is not a label matcher: expected label=\"value\" (or !=, =~, !~)")]
    Syntax(String),
    #[error("`{0}`: label name must match [a-zA-Z_][a-zA-Z0-9_]*")]
    LabelName(String),
    #[error("`{input}`: invalid regular expression: {reason}")]
    Regex { input: String, reason: String },
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let valid_name = label
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if label.is_empty() || !valid_name {
            return Err(MatcherError::LabelName(label.to_string()));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(Regex::new(&format!("^(?:{value})$")).map_err(
                |e| MatcherError::Regex {
                    input: format!("{label}{op}\"{value}\""),
                    reason: e.to_string(),
                },
            )?),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    pub fn eq(label: &str, value: &str) -> Self {
        Matcher {
            label: label.to_string(),
            op: MatchOp::Eq,
            value: value.to_string(),
            regex: None,
        }
    }

    /// Parses `label="value"` as written in PromQL (double or single quotes, `\"` escapes).
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let syntax = || MatcherError::Syntax(input.to_string());
        let s = input.trim();
        let op_at = s.find(['=', '!']).ok_or_else(syntax)?;
        let label = s[..op_at].trim();
        let rest = &s[op_at..];
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Eq, r)
        } else {
            return Err(syntax());
        };
        let rest = rest.trim();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
        let quote = quote.ok_or_else(syntax)?;
        let inner = rest[1..].strip_suffix(quote).ok_or_else(syntax)?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => return Err(syntax()),
                },
                c if c == quote => return Err(syntax()),
                c => value.push(c),
            }
        }
        Matcher::new(label, op, &value)
    }

    /// Whether a series' labels satisfy this matcher. A missing label reads as "" (as in PromQL).
    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        let found = labels.get(self.label.as_bytes());
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => found.map_or(self.value.is_empty(), |v| v.eq_str(&self.value)),
            (MatchOp::Ne, _) => !found.map_or(self.value.is_empty(), |v| v.eq_str(&self.value)),
            (MatchOp::Re, Some(re)) => {
                re.is_match(&found.map(|v| v.unescaped()).unwrap_or_default())
            }
            (MatchOp::NotRe, Some(re)) => {
                !re.is_match(&found.map(|v| v.unescaped()).unwrap_or_default())
            }
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        })
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.label, self.op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_matchers_like_promql() {
        let m = Matcher::parse(r#"envoy_cluster_name="httproute/ml/llama/rule/0""#).unwrap();
        assert_eq!(m.op, MatchOp::Eq);
        assert_eq!(m.value, "httproute/ml/llama/rule/0");
        let m = Matcher::parse(r#" response_code =~ '5..' "#).unwrap();
        assert_eq!((m.label.as_str(), m.op), ("response_code", MatchOp::Re));
        let m = Matcher::parse(r#"a!="x\"y""#).unwrap();
        assert_eq!((m.op, m.value.as_str()), (MatchOp::Ne, "x\"y"));
        assert!(matches!(Matcher::parse("a"), Err(MatcherError::Syntax(_))));
        assert!(matches!(
            Matcher::parse("a=b"),
            Err(MatcherError::Syntax(_))
        ));
        assert!(matches!(
            Matcher::parse("1a=\"b\""),
            Err(MatcherError::LabelName(_))
        ));
        assert!(matches!(
            Matcher::parse("a=~\"(\""),
            Err(MatcherError::Regex { .. })
        ));
    }
}
