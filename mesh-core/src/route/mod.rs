//! Outbound routing: route configurations, virtual hosts, routes and their actions, and
//! the matching that picks one for a request.
//!
//! Everything a request needs is precompiled here (regexes, weight tables), so matching
//! reads only: no allocation, no lock.

mod action;
mod fault;
mod headers;
mod matching;
mod weighted;

pub use action::{
    ClusterSpecifier, ForwardAction, HashPolicy, HashPolicyKind, MaxStreamDuration, RetryPolicy,
    RouteAction,
};
pub use fault::{FaultAbort, FaultDelay, FaultInjection, FractionalPercent};
pub use headers::HeaderMutations;
pub use matching::{PathMatch, QueryParamMatcher, RouteMatch};
pub use weighted::{WeightedCluster, WeightedClusters, WeightedClustersError};

use http::HeaderMap;

/// A named route configuration (Envoy's `RouteConfiguration`): virtual hosts by domain.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    name: String,
    virtual_hosts: Vec<VirtualHost>,
    /// Built with the configuration, so a request does not scan every domain.
    domains: DomainIndex,
}

/// The virtual hosts' domains, indexed: exact domains (lowercase) in a map, the wildcard
/// patterns in configuration order.
#[derive(Debug, Clone, PartialEq, Default)]
struct DomainIndex {
    exact: std::collections::HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    patterns: Vec<(Box<str>, usize)>,
}

impl DomainIndex {
    fn build(virtual_hosts: &[VirtualHost]) -> Self {
        let mut index = Self::default();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                if domain.starts_with('*') || domain.ends_with('*') {
                    index.patterns.push((domain.as_str().into(), i));
                } else {
                    // The first virtual host listing a domain keeps it, as a scan in order would.
                    index
                        .exact
                        .entry(domain.to_ascii_lowercase().into_boxed_str())
                        .or_insert(i);
                }
            }
        }
        index
    }

    fn exact(&self, authority: &str) -> Option<usize> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            // Rare: a mixed-case authority is lowercased for the lookup.
            return self
                .exact
                .get(authority.to_ascii_lowercase().as_str())
                .copied();
        }
        self.exact.get(authority).copied()
    }
}

impl RouteConfig {
    /// A route configuration.
    pub fn new(name: impl Into<String>, virtual_hosts: Vec<VirtualHost>) -> Self {
        Self {
            name: name.into(),
            domains: DomainIndex::build(&virtual_hosts),
            virtual_hosts,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its virtual hosts, in order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// The virtual host for `authority`, with Envoy's and gRPC's precedence: an exact domain,
    /// then the longest `*.suffix` wildcard, then the longest `prefix.*` wildcard, then `*`.
    /// When the authority carries a port and matches nothing, or only a `*` catch-all, the
    /// host without the port is tried, so `payment-service:8080` finds a virtual host for
    /// `payment-service` — also beside istiod's `allow_any` (`*`) host, whose route
    /// configurations list many services' domains without ports.
    pub fn virtual_host_for(&self, authority: &str) -> Option<&VirtualHost> {
        let with_port = self.find_vhost_ranked(authority);
        if matches!(with_port, Some((m, _)) if m != DomainMatch::Universal) {
            return with_port.map(|(_, vh)| vh);
        }
        let without_port = authority.rsplit_once(':').and_then(|(host, port)| {
            let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            let plain_host = !host.contains(':') || (host.starts_with('[') && host.ends_with(']'));
            if is_port && plain_host {
                self.find_vhost_ranked(host)
            } else {
                None
            }
        });
        match (with_port, without_port) {
            (_, Some((m, vh))) if m != DomainMatch::Universal => Some(vh),
            (Some((_, vh)), _) | (None, Some((_, vh))) => Some(vh),
            (None, None) => None,
        }
    }

    fn find_vhost_ranked(&self, authority: &str) -> Option<(DomainMatch, &VirtualHost)> {
        if let Some(vh) = self
            .domains
            .exact(authority)
            .and_then(|i| self.virtual_hosts.get(i))
        {
            return Some((DomainMatch::Exact, vh));
        }
        let mut best: Option<(DomainMatch, usize)> = None;
        for (domain, i) in &self.domains.patterns {
            let Some(m) = DomainMatch::of(domain, authority) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| m > *b) {
                best = Some((m, *i));
            }
        }
        best.and_then(|(m, i)| Some((m, self.virtual_hosts.get(i)?)))
    }

    /// Matches a request: the virtual host by authority, then the first matching route.
    ///
    /// `random` is a uniformly random number the caller draws once per request; it decides
    /// runtime-fraction matches.
    pub fn route_for(
        &self,
        authority: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        random: u64,
    ) -> Option<(&VirtualHost, &Route)> {
        let vh = self.virtual_host_for(authority)?;
        let route = vh.route_for(path_and_query, headers, random)?;
        Some((vh, route))
    }
}

/// How well a domain pattern matched an authority; a larger value wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DomainMatch {
    Universal,
    /// `prefix.*`, ranked by the pattern's length.
    Prefix(usize),
    /// `*.suffix`, ranked by the pattern's length.
    Suffix(usize),
    Exact,
}

impl DomainMatch {
    fn of(pattern: &str, authority: &str) -> Option<Self> {
        if pattern == "*" {
            return Some(Self::Universal);
        }
        if let Some(suffix) = pattern.strip_prefix('*') {
            let hit = authority.len() > suffix.len()
                && authority
                    .get(authority.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix));
            return hit.then_some(Self::Suffix(pattern.len()));
        }
        if let Some(prefix) = pattern.strip_suffix('*') {
            let hit = authority.len() > prefix.len()
                && authority
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
            return hit.then_some(Self::Prefix(pattern.len()));
        }
        pattern
            .eq_ignore_ascii_case(authority)
            .then_some(Self::Exact)
    }
}

/// A virtual host: the domains it serves and its routes, first match wins.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    name: String,
    domains: Vec<String>,
    routes: Vec<Route>,
    retry_policy: Option<RetryPolicy>,
    request_headers: HeaderMutations,
    response_headers: HeaderMutations,
    /// Envoy's `include_request_attempt_count`: upstream requests carry
    /// `x-envoy-attempt-count` (istiod sets it on a sidecar's virtual hosts).
    request_attempt_count: bool,
}

impl VirtualHost {
    /// A virtual host serving `domains` with `routes`.
    pub fn new(name: impl Into<String>, domains: Vec<String>, routes: Vec<Route>) -> Self {
        Self {
            name: name.into(),
            domains,
            routes,
            retry_policy: None,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            request_attempt_count: false,
        }
    }

    /// Whether each upstream request says which attempt it is in `x-envoy-attempt-count`
    /// (Envoy's `include_request_attempt_count`; off by default, as in Envoy).
    pub fn with_request_attempt_count(mut self, include: bool) -> Self {
        self.request_attempt_count = include;
        self
    }

    /// Whether upstream requests carry `x-envoy-attempt-count`.
    pub fn includes_request_attempt_count(&self) -> bool {
        self.request_attempt_count
    }

    /// The same virtual host (name, domains and every host-wide setting) with other
    /// routes: for a configuration derived from this one.
    pub fn with_routes(&self, routes: Vec<Route>) -> Self {
        // Every field named: a new setting must be decided on here, not forgotten.
        Self {
            name: self.name.clone(),
            domains: self.domains.clone(),
            routes,
            retry_policy: self.retry_policy.clone(),
            request_headers: self.request_headers.clone(),
            response_headers: self.response_headers.clone(),
            request_attempt_count: self.request_attempt_count,
        }
    }

    /// Sets the retry policy used by routes that have none of their own.
    pub fn with_retry_policy(mut self, policy: Option<RetryPolicy>) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Sets the header changes applied to every request and response of this host.
    pub fn with_headers(mut self, request: HeaderMutations, response: HeaderMutations) -> Self {
        self.request_headers = request;
        self.response_headers = response;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domains it serves.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Its routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The host-wide retry policy.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry_policy.as_ref()
    }

    /// Header changes for requests.
    pub fn request_headers(&self) -> &HeaderMutations {
        &self.request_headers
    }

    /// Header changes for responses.
    pub fn response_headers(&self) -> &HeaderMutations {
        &self.response_headers
    }

    /// The first route whose match accepts the request.
    pub fn route_for(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
        random: u64,
    ) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(path_and_query, headers, random))
    }
}

/// One route: a match and what to do with the requests it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    name: String,
    matcher: RouteMatch,
    action: RouteAction,
    request_headers: HeaderMutations,
    response_headers: HeaderMutations,
    fault: Option<FaultInjection>,
}

impl Route {
    /// A route.
    pub fn new(name: impl Into<String>, matcher: RouteMatch, action: RouteAction) -> Self {
        Self {
            name: name.into(),
            matcher,
            action,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            fault: None,
        }
    }

    /// Sets the header changes of this route.
    pub fn with_headers(mut self, request: HeaderMutations, response: HeaderMutations) -> Self {
        self.request_headers = request;
        self.response_headers = response;
        self
    }

    /// Sets the fault injected on this route.
    pub fn with_fault(mut self, fault: Option<FaultInjection>) -> Self {
        self.fault = fault;
        self
    }

    /// Its name (may be empty).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it matches.
    pub fn matcher(&self) -> &RouteMatch {
        &self.matcher
    }

    /// What it does.
    pub fn action(&self) -> &RouteAction {
        &self.action
    }

    /// Header changes for requests.
    pub fn request_headers(&self) -> &HeaderMutations {
        &self.request_headers
    }

    /// Header changes for responses.
    pub fn response_headers(&self) -> &HeaderMutations {
        &self.response_headers
    }

    /// The fault injected on this route.
    pub fn fault(&self) -> Option<&FaultInjection> {
        self.fault.as_ref()
    }
}

#[cfg(test)]
mod tests;
