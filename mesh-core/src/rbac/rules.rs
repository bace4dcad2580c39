//! The rule trees of a policy: what a request does ([`Permission`]) and who sends it
//! ([`Principal`]), evaluated three-valued.

use super::{Cidr, Evaluation, RequestAttributes};
use crate::matcher::{HeaderMatcher, MatcherError, StringMatcher};

/// A half-open range of ports `[start, end)`, as Envoy's `Int32Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u32,
}

impl PortRange {
    /// The ports `start..end`; `end` may be 65536 to include port 65535.
    pub fn new(start: u32, end: u32) -> Result<Self, MatcherError> {
        if start >= end || end > 65536 {
            return Err(MatcherError::BadRange {
                start: i64::from(start),
                end: i64::from(end),
            });
        }
        // start < end <= 65536, so start fits in u16.
        let start = u16::try_from(start).map_err(|_| MatcherError::BadRange {
            start: i64::from(start),
            end: i64::from(end),
        })?;
        Ok(Self { start, end })
    }

    /// Inclusive start.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Exclusive end.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.start && u32::from(port) < self.end
    }
}

/// What a request does: Envoy's `config.rbac.v3.Permission`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Permission {
    /// Every request.
    Any,
    /// All of these (an empty list matches).
    And(Vec<Permission>),
    /// Any of these (an empty list does not match).
    Or(Vec<Permission>),
    /// Not this one.
    Not(Box<Permission>),
    /// A request header; `:method`, `:path` and `:authority` read the pseudo-headers.
    Header(HeaderMatcher),
    /// The request path without its query string or fragment.
    UrlPath(StringMatcher),
    /// The local address the connection arrived on.
    DestinationIp(Cidr),
    /// The local port the connection arrived on.
    DestinationPort(u16),
    /// The local port is in the range.
    DestinationPortRange(PortRange),
    /// The TLS server name the client asked for (no SNI never matches).
    RequestedServerName(StringMatcher),
    /// A rule this implementation cannot evaluate, with the reason; evaluates to
    /// [`Evaluation::Unknown`] so that it never grants access.
    Unsupported(String),
}

impl Permission {
    /// `Unsupported(reason)`.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported(reason.into())
    }

    /// Evaluates the rule against a request.
    pub fn evaluate<R: RequestAttributes + ?Sized>(&self, req: &R) -> Evaluation {
        match self {
            Self::Any => Evaluation::Match,
            Self::And(all) => Evaluation::all(all.iter().map(|p| p.evaluate(req))),
            Self::Or(any) => Evaluation::any(any.iter().map(|p| p.evaluate(req))),
            Self::Not(inner) => !inner.evaluate(req),
            Self::Header(h) => header_matches(h, req).into(),
            Self::UrlPath(m) => m.matches(url_path(req.path())).into(),
            Self::DestinationIp(c) => c.contains(req.destination().ip()).into(),
            Self::DestinationPort(p) => (req.destination().port() == *p).into(),
            Self::DestinationPortRange(r) => r.contains(req.destination().port()).into(),
            Self::RequestedServerName(m) => req.sni().is_some_and(|s| m.matches(s)).into(),
            Self::Unsupported(_) => Evaluation::Unknown,
        }
    }

    /// Adds the reason of every [`Unsupported`](Self::Unsupported) rule in the tree.
    pub(crate) fn collect_unsupported<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::And(v) | Self::Or(v) => v.iter().for_each(|p| p.collect_unsupported(out)),
            Self::Not(inner) => inner.collect_unsupported(out),
            Self::Unsupported(reason) => out.push(reason),
            _ => {}
        }
    }
}

/// Who sends a request: Envoy's `config.rbac.v3.Principal`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Principal {
    /// Everyone, authenticated or not.
    Any,
    /// All of these (an empty list matches).
    And(Vec<Principal>),
    /// Any of these (an empty list does not match).
    Or(Vec<Principal>),
    /// Not this one.
    Not(Box<Principal>),
    /// A peer authenticated with mTLS whose principal (its URI SAN, such as
    /// `spiffe://cluster.local/ns/default/sa/order-service`) matches; `None` matches any
    /// authenticated peer. An unauthenticated peer never matches.
    Authenticated(Option<StringMatcher>),
    /// The peer's address (the direct remote address of the connection) is in the range.
    SourceIp(Cidr),
    /// A request header; `:method`, `:path` and `:authority` read the pseudo-headers.
    Header(HeaderMatcher),
    /// The request path without its query string or fragment.
    UrlPath(StringMatcher),
    /// A rule this implementation cannot evaluate, with the reason; evaluates to
    /// [`Evaluation::Unknown`] so that it never grants access.
    Unsupported(String),
}

impl Principal {
    /// `Unsupported(reason)`.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported(reason.into())
    }

    /// Evaluates the rule against a request.
    pub fn evaluate<R: RequestAttributes + ?Sized>(&self, req: &R) -> Evaluation {
        match self {
            Self::Any => Evaluation::Match,
            Self::And(all) => Evaluation::all(all.iter().map(|p| p.evaluate(req))),
            Self::Or(any) => Evaluation::any(any.iter().map(|p| p.evaluate(req))),
            Self::Not(inner) => !inner.evaluate(req),
            Self::Authenticated(m) => match (req.peer_principal(), m) {
                (None, _) => Evaluation::NoMatch,
                (Some(_), None) => Evaluation::Match,
                (Some(p), Some(m)) => m.matches(p).into(),
            },
            Self::SourceIp(c) => c.contains(req.source().ip()).into(),
            Self::Header(h) => header_matches(h, req).into(),
            Self::UrlPath(m) => m.matches(url_path(req.path())).into(),
            Self::Unsupported(_) => Evaluation::Unknown,
        }
    }

    /// Adds the reason of every [`Unsupported`](Self::Unsupported) rule in the tree.
    pub(crate) fn collect_unsupported<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::And(v) | Self::Or(v) => v.iter().for_each(|p| p.collect_unsupported(out)),
            Self::Not(inner) => inner.collect_unsupported(out),
            Self::Unsupported(reason) => out.push(reason),
            _ => {}
        }
    }
}

impl std::ops::Not for Permission {
    type Output = Self;

    /// `Not(self)`.
    fn not(self) -> Self {
        Self::Not(Box::new(self))
    }
}

impl std::ops::Not for Principal {
    type Output = Self;

    /// `Not(self)`.
    fn not(self) -> Self {
        Self::Not(Box::new(self))
    }
}

/// The path without query string and fragment.
fn url_path(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

fn header_matches<R: RequestAttributes + ?Sized>(h: &HeaderMatcher, req: &R) -> bool {
    let value = match h.name() {
        ":method" => Some(req.method()),
        ":path" => Some(req.path()),
        ":authority" | "host" => Some(req.authority()),
        name => req.header(name),
    };
    h.matches(value)
}
