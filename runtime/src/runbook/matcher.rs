//! Alertmanager-style label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`. Regular expressions are anchored at both ends, as in Alertmanager.

use regex::Regex;
use std::collections::BTreeMap;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Matches,
    /// `!~`
    NotMatches,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: Op,
    /// Value as written.
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Parse `name OP "value"`; quotes are optional for values without spaces.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let t = text.trim();
        let name_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let (name, rest) = t.split_at(name_end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "`{text}`: expected a label name first, e.g. `alertname=\"DiskSpaceLow\"`"
            ));
        }
        let rest = rest.trim_start();
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Matches, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotMatches, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Equal, v)
        } else {
            return Err(format!(
                "`{text}`: expected one of `=`, `!=`, `=~`, `!~` after `{name}`"
            ));
        };
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(inner) => inner
                .strip_suffix('"')
                .ok_or_else(|| format!("`{text}`: unterminated quote"))?
                .replace("\\\"", "\"")
                .replace("\\\\", "\\"),
            None => value.to_string(),
        };
        let regex = match op {
            Op::Matches | Op::NotMatches => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    // The regex crate's message spans lines (pattern, caret, reason): keep
                    // the reason.
                    let reason = e.to_string();
                    let reason = reason
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_string();
                    format!("`{text}`: invalid regular expression: {reason}")
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    /// Whether `labels` satisfy the matcher. A missing label has the value `""`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Equal, _) => actual == self.value,
            (Op::NotEqual, _) => actual != self.value,
            (Op::Matches, Some(re)) => re.is_match(actual),
            (Op::NotMatches, Some(re)) => !re.is_match(actual),
            (_, None) => false,
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_four_operators_match_like_alertmanager() {
        let l = labels(&[("alertname", "DiskSpaceLow"), ("severity", "critical")]);
        assert!(
            Matcher::parse(r#"alertname="DiskSpaceLow""#)
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::parse(r#"alertname = DiskSpaceLow"#)
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Matcher::parse(r#"alertname!="DiskSpaceLow""#)
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::parse(r#"severity=~"warning|critical""#)
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Matcher::parse(r#"severity=~"crit""#).unwrap().matches(&l),
            "regexes are anchored"
        );
        assert!(
            Matcher::parse(r#"env!~"dev|test""#).unwrap().matches(&l),
            "missing label is empty"
        );
        assert!(Matcher::parse(r#"env="""#).unwrap().matches(&l));
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        assert!(
            Matcher::parse("=x")
                .unwrap_err()
                .contains("expected a label name")
        );
        assert!(
            Matcher::parse("a>b")
                .unwrap_err()
                .contains("expected one of")
        );
        assert!(
            Matcher::parse(r#"a=~"(""#)
                .unwrap_err()
                .contains("invalid regular expression")
        );
        assert!(
            Matcher::parse(r#"a="x"#)
                .unwrap_err()
                .contains("unterminated quote")
        );
    }
}
