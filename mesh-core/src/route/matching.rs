use http::HeaderMap;

use super::fault::FractionalPercent;
use crate::matcher::{HeaderMatcher, Regex, StringMatcher};

/// How the path is matched. The query string is never part of the path match.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PathMatch {
    /// Starts with (an empty prefix matches every path).
    Prefix(String),
    /// Equal to.
    Exact(String),
    /// The whole path matches the regex.
    Regex(Regex),
    /// Envoy's `path_separated_prefix`: the path equals it, or starts with it followed by
    /// `/` (`/api` matches `/api`, `/api/` and `/api/v1`, not `/apiv1`). istiod emits it
    /// for Gateway API `PathPrefix` matches.
    SeparatedPrefix(String),
}

/// A query parameter matcher: `None` means the parameter only has to be present.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryParamMatcher {
    name: String,
    value: Option<StringMatcher>,
}

impl QueryParamMatcher {
    /// A matcher on parameter `name`.
    pub fn new(name: impl Into<String>, value: Option<StringMatcher>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }

    /// The parameter name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value matcher (`None`: present).
    pub fn value(&self) -> Option<&StringMatcher> {
        self.value.as_ref()
    }

    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            name == self.name && self.value.as_ref().is_none_or(|m| m.matches(value))
        })
    }
}

/// What a route matches: path, headers, query parameters and a runtime fraction, all ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    path: PathMatch,
    case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
    query_params: Vec<QueryParamMatcher>,
    runtime_fraction: Option<FractionalPercent>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self::prefix("")
    }
}

impl RouteMatch {
    /// A match on a path prefix (`""` matches everything).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self::path(PathMatch::Prefix(prefix.into()))
    }

    /// A match on the path.
    pub fn path(path: PathMatch) -> Self {
        Self {
            path,
            case_sensitive: true,
            headers: Vec::new(),
            query_params: Vec::new(),
            runtime_fraction: None,
        }
    }

    /// Sets whether prefix and exact path matches compare case (default true).
    pub fn case_sensitive(mut self, yes: bool) -> Self {
        self.case_sensitive = yes;
        self
    }

    /// Adds header matchers.
    pub fn with_headers(mut self, headers: Vec<HeaderMatcher>) -> Self {
        self.headers = headers;
        self
    }

    /// Adds query parameter matchers.
    pub fn with_query_params(mut self, params: Vec<QueryParamMatcher>) -> Self {
        self.query_params = params;
        self
    }

    /// Matches only this fraction of requests.
    pub fn with_runtime_fraction(mut self, fraction: Option<FractionalPercent>) -> Self {
        self.runtime_fraction = fraction;
        self
    }

    /// The path match.
    pub fn path_match(&self) -> &PathMatch {
        &self.path
    }

    /// Whether the path compare is case-sensitive.
    pub fn is_case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    /// The header matchers.
    pub fn headers(&self) -> &[HeaderMatcher] {
        &self.headers
    }

    /// The query parameter matchers.
    pub fn query_params(&self) -> &[QueryParamMatcher] {
        &self.query_params
    }

    /// The runtime fraction.
    pub fn runtime_fraction(&self) -> Option<FractionalPercent> {
        self.runtime_fraction
    }

    /// True when the request matches. `random` decides the runtime fraction.
    pub fn matches(&self, path_and_query: &str, headers: &HeaderMap, random: u64) -> bool {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => {
                path.len() >= p.len()
                    && path.get(..p.len()).is_some_and(|head| {
                        if self.case_sensitive {
                            head == p
                        } else {
                            head.eq_ignore_ascii_case(p)
                        }
                    })
            }
            PathMatch::Exact(p) => {
                if self.case_sensitive {
                    path == p
                } else {
                    path.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::SeparatedPrefix(p) => {
                let head = path.get(..p.len());
                let same = head.is_some_and(|head| {
                    if self.case_sensitive {
                        head == p
                    } else {
                        head.eq_ignore_ascii_case(p)
                    }
                });
                same && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        };
        path_ok
            && self.headers.iter().all(|h| header_matches(h, headers))
            && self.query_params.iter().all(|q| q.matches(query))
            && self.runtime_fraction.is_none_or(|f| f.hits(random))
    }
}

/// Envoy's rule: several values of one header are matched as one, joined with `,`. The join
/// allocates, but only for the rare header sent more than once.
fn header_matches(m: &HeaderMatcher, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(m.name()).iter();
    let Some(first) = values.next() else {
        return m.matches(None);
    };
    let Ok(first) = first.to_str() else {
        return m.matches(None);
    };
    match values.next() {
        None => m.matches(Some(first)),
        Some(second) => {
            let mut joined = String::from(first);
            for v in std::iter::once(second).chain(values) {
                joined.push(',');
                joined.push_str(v.to_str().unwrap_or_default());
            }
            m.matches(Some(&joined))
        }
    }
}
