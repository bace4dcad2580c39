//! String and header matchers shared by routes, RBAC and SAN checks.
//!
//! Matchers are compiled once, when a snapshot is built: a regex is parsed and compiled here,
//! never per request.

use std::fmt;

/// A regular expression compiled when the policy is built.
///
/// Matches the whole input (like RE2's `FullMatch`, which Envoy's `safe_regex` uses).
#[derive(Clone)]
pub struct Regex {
    source: String,
    compiled: regex::Regex,
}

impl Regex {
    /// Compiles `pattern` anchored at both ends.
    pub fn new(pattern: &str) -> Result<Self, MatcherError> {
        let anchored = format!("^(?:{pattern})$");
        let compiled = regex::Regex::new(&anchored).map_err(|e| MatcherError::BadRegex {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            source: pattern.to_owned(),
            compiled,
        })
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `input` matches.
    pub fn is_match(&self, input: &str) -> bool {
        self.compiled.is_match(input)
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.source).finish()
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a matcher could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MatcherError {
    /// The regular expression does not compile.
    #[error("invalid regex {pattern:?}: {reason}")]
    BadRegex {
        /// The pattern as written.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A range whose start is not below its end.
    #[error("invalid range [{start}, {end}): start must be below end")]
    BadRange {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
}

/// How a string is matched (Envoy's `StringMatcher`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// The whole string matches the regex.
    Regex(Regex),
}

/// A string matcher with Envoy's `ignore_case` flag (ignored for regexes).
#[derive(Debug, Clone, PartialEq)]
pub struct StringMatcher {
    kind: StringMatch,
    ignore_case: bool,
}

impl StringMatcher {
    /// A matcher from its kind; `ignore_case` compares ASCII case-insensitively.
    pub fn new(kind: StringMatch, ignore_case: bool) -> Self {
        let kind = if ignore_case {
            match kind {
                StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
                StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
                StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
                StringMatch::Contains(s) => StringMatch::Contains(s.to_ascii_lowercase()),
                other => other,
            }
        } else {
            kind
        };
        Self { kind, ignore_case }
    }

    /// Exact, case-sensitive.
    pub fn exact(s: impl Into<String>) -> Self {
        Self::new(StringMatch::Exact(s.into()), false)
    }

    /// Prefix, case-sensitive.
    pub fn prefix(s: impl Into<String>) -> Self {
        Self::new(StringMatch::Prefix(s.into()), false)
    }

    /// Suffix, case-sensitive.
    pub fn suffix(s: impl Into<String>) -> Self {
        Self::new(StringMatch::Suffix(s.into()), false)
    }

    /// Contains, case-sensitive.
    pub fn contains(s: impl Into<String>) -> Self {
        Self::new(StringMatch::Contains(s.into()), false)
    }

    /// Full-string regex.
    pub fn regex(pattern: &str) -> Result<Self, MatcherError> {
        Ok(Self::new(StringMatch::Regex(Regex::new(pattern)?), false))
    }

    /// The kind of match.
    pub fn kind(&self) -> &StringMatch {
        &self.kind
    }

    /// Whether case is ignored.
    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// True when `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        match &self.kind {
            StringMatch::Regex(r) => r.is_match(input),
            StringMatch::Exact(s) if self.ignore_case => input.eq_ignore_ascii_case(s),
            StringMatch::Exact(s) => input == s,
            StringMatch::Prefix(p) => {
                input.len() >= p.len()
                    && input.is_char_boundary(p.len())
                    && eq_case(&input[..p.len()], p, self.ignore_case)
            }
            StringMatch::Suffix(p) => {
                input.len() >= p.len()
                    && input.is_char_boundary(input.len() - p.len())
                    && eq_case(&input[input.len() - p.len()..], p, self.ignore_case)
            }
            StringMatch::Contains(p) if self.ignore_case => {
                input.to_ascii_lowercase().contains(p.as_str())
            }
            StringMatch::Contains(p) => input.contains(p.as_str()),
        }
    }
}

fn eq_case(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// How a header value is matched (Envoy's `HeaderMatcher` without the name).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HeaderValueMatch {
    /// The value matches the string matcher.
    String(StringMatcher),
    /// The value parses as an integer in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

/// A header matcher: name, how the value is matched, and whether the result is inverted.
///
/// As in Envoy, several values of one header are joined with `,` before matching, and a
/// missing header never matches, inverted or not, unless the matcher is `Present(false)`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatcher {
    name: String,
    value: HeaderValueMatch,
    invert: bool,
}

impl HeaderMatcher {
    /// A matcher on header `name` (stored lower-case, as HTTP/2 sends names).
    pub fn new(name: &str, value: HeaderValueMatch, invert: bool) -> Result<Self, MatcherError> {
        if let HeaderValueMatch::Range { start, end } = value {
            if start >= end {
                return Err(MatcherError::BadRange { start, end });
            }
        }
        Ok(Self {
            name: name.to_ascii_lowercase(),
            value,
            invert,
        })
    }

    /// The header name, lower-case.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the value is matched.
    pub fn value(&self) -> &HeaderValueMatch {
        &self.value
    }

    /// Whether the result is inverted.
    pub fn invert(&self) -> bool {
        self.invert
    }

    /// Matches against the header's value, `None` when the request has no such header.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let hit = match (&self.value, value) {
            (HeaderValueMatch::Present(want), v) => v.is_some() == *want,
            // gRPC and Envoy: an absent header matches nothing, inverted or not.
            (_, None) => return false,
            (HeaderValueMatch::String(m), Some(v)) => m.matches(v),
            (HeaderValueMatch::Range { start, end }, Some(v)) => v
                .trim()
                .parse::<i64>()
                .map(|n| n >= *start && n < *end)
                .unwrap_or(false),
        };
        hit != self.invert
    }
}

#[cfg(test)]
mod tests;
