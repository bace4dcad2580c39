//! VirtualService HTTP routes -> mesh routes.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::duration::parse_duration;
use super::networking::{self as net, HttpRoute};
use super::{IstioError, IstioErrorKind as Kind, Path};
use crate::matcher::{HeaderMatcher, HeaderValueMatch, Regex, StringMatch, StringMatcher};
use crate::retry::{BackoffConfig, RetryOn};
use crate::route::{
    ClusterSpecifier, FaultAbort, FaultDelay, FaultInjection, ForwardAction, FractionalPercent,
    HeaderMutations, PathMatch, QueryParamMatcher, RetryPolicy, Route, RouteAction, RouteMatch,
    WeightedCluster, WeightedClusters,
};

/// Resolves a route destination to a cluster name; errors name the host or subset.
pub(super) trait ResolveDestination {
    fn cluster_for(&self, dest: &net::Destination, path: &Path) -> Result<String, IstioError>;
}

/// Istio's default retry policy for mesh routes that set none: 2 retries on
/// connect-failure, refused-stream, unavailable, cancelled and retriable status codes (503).
pub fn default_retry_policy() -> RetryPolicy {
    let on = RetryOn::none()
        .with(
            RetryOn::CONNECT_FAILURE
                | RetryOn::REFUSED_STREAM
                | RetryOn::GRPC_UNAVAILABLE
                | RetryOn::GRPC_CANCELLED
                | RetryOn::RETRIABLE_STATUS_CODES,
        )
        .with_retriable_status_codes([503]);
    RetryPolicy::new(2, on)
}

/// Translates one HTTP route into one mesh route per match condition (Istio ORs them).
pub(super) fn translate_http_route(
    http: &HttpRoute,
    path: &Path,
    resolver: &dyn ResolveDestination,
) -> Result<Vec<Route>, IstioError> {
    for (set, feature, field) in [
        (http.redirect.is_some(), "redirect", "redirect"),
        (http.delegate.is_some(), "delegate", "delegate"),
        (http.mirror.is_some(), "traffic mirroring", "mirror"),
        (http.mirrors.is_some(), "traffic mirroring", "mirrors"),
        (
            http.mirror_percentage.is_some(),
            "traffic mirroring",
            "mirrorPercentage",
        ),
        (
            http.mirror_percent.is_some(),
            "traffic mirroring",
            "mirrorPercent",
        ),
        (http.cors_policy.is_some(), "CORS policy", "corsPolicy"),
    ] {
        if set {
            return Err(path.field(field).err(Kind::Unsupported { feature }));
        }
    }
    let name = http.name.clone().unwrap_or_default();
    let action = translate_action(http, path, resolver)?;
    let (req_headers, resp_headers) = match &http.headers {
        Some(h) => header_ops(h, &path.field("headers"))?,
        None => Default::default(),
    };
    let fault = match &http.fault {
        Some(f) => Some(translate_fault(f, &path.field("fault"))?),
        None => None,
    };
    let matches = if http.matches.is_empty() {
        vec![RouteMatch::default()]
    } else {
        http.matches
            .iter()
            .enumerate()
            .map(|(i, m)| translate_match(m, &path.field("match").index(i)))
            .collect::<Result<_, _>>()?
    };
    Ok(matches
        .into_iter()
        .map(|m| {
            Route::new(name.clone(), m, action.clone())
                .with_headers(req_headers.clone(), resp_headers.clone())
                .with_fault(fault.clone())
        })
        .collect())
}

fn translate_action(
    http: &HttpRoute,
    path: &Path,
    resolver: &dyn ResolveDestination,
) -> Result<RouteAction, IstioError> {
    if let Some(direct) = &http.direct_response {
        let p = path.field("directResponse");
        let status = u16::try_from(direct.status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .ok_or_else(|| {
                p.field("status").err(Kind::InvalidValue {
                    value: direct.status.to_string(),
                    expected: "an HTTP status between 200 and 599",
                })
            })?;
        if direct.body.as_ref().is_some_and(|b| b.bytes.is_some()) {
            return Err(p.field("body").field("bytes").err(Kind::Unsupported {
                feature: "binary direct response bodies",
            }));
        }
        return Ok(RouteAction::Direct {
            status,
            body: direct.body.as_ref().and_then(|b| b.string.clone()),
        });
    }
    if http.route.is_empty() {
        return Err(path.field("route").err(Kind::InvalidValue {
            value: "[]".into(),
            expected: "at least one destination (or a directResponse)",
        }));
    }
    let mut clusters = Vec::with_capacity(http.route.len());
    for (i, dest) in http.route.iter().enumerate() {
        let p = path.field("route").index(i);
        let cluster = resolver.cluster_for(&dest.destination, &p.field("destination"))?;
        // One destination alone may omit its weight (it gets 100).
        let weight = match dest.weight {
            Some(w) => w,
            None if http.route.len() == 1 => 100,
            None => 0,
        };
        let (req, resp) = match &dest.headers {
            Some(h) => header_ops(h, &p.field("headers"))?,
            None => Default::default(),
        };
        clusters.push(WeightedCluster::new(cluster, weight).with_headers(req, resp));
    }
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight())).sum();
    if http.route.len() > 1 && total != 100 {
        return Err(path.field("route").err(Kind::Weights { sum: total }));
    }
    let specifier = if clusters.len() == 1 {
        ClusterSpecifier::Cluster(clusters[0].name().to_owned())
    } else {
        ClusterSpecifier::Weighted(
            WeightedClusters::new(clusters).map_err(|e| path.field("route").err(Kind::Split(e)))?,
        )
    };
    let mut action = ForwardAction::new(specifier);
    if let Some(t) = &http.timeout {
        let d = duration(t, &path.field("timeout"))?;
        // Istio: a zero timeout disables it.
        action.timeout = (!d.is_zero()).then_some(d);
    }
    action.retry_policy = Some(match &http.retries {
        Some(r) => translate_retries(r, &path.field("retries"))?,
        None => default_retry_policy(),
    })
    .filter(|p| p.num_retries > 0);
    if let Some(rw) = &http.rewrite {
        let p = path.field("rewrite");
        if rw.uri_regex_rewrite.is_some() {
            return Err(p.field("uriRegexRewrite").err(Kind::Unsupported {
                feature: "regex URI rewrite",
            }));
        }
        action.prefix_rewrite = rw.uri.clone();
        action.host_rewrite = rw.authority.clone();
    }
    Ok(RouteAction::Forward(action))
}

fn translate_retries(r: &net::HttpRetry, path: &Path) -> Result<RetryPolicy, IstioError> {
    let mut policy = default_retry_policy();
    policy.num_retries = r.attempts;
    if let Some(t) = &r.per_try_timeout {
        policy.per_try_timeout = Some(duration(t, &path.field("perTryTimeout"))?);
    }
    if let Some(b) = &r.backoff {
        let base = duration(b, &path.field("backoff"))?;
        policy.backoff = BackoffConfig::new(base);
    }
    if let Some(on) = &r.retry_on {
        // Istio accepts bare status codes in retryOn ("503,reset").
        let mut names = Vec::new();
        let mut codes = Vec::new();
        for token in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token.parse::<u16>() {
                Ok(code) if (100..600).contains(&code) => codes.push(code),
                Ok(_) => {
                    return Err(path.field("retryOn").err(Kind::InvalidValue {
                        value: token.to_owned(),
                        expected: "an HTTP status code between 100 and 599 or a retry condition",
                    }))
                }
                Err(_) => names.push(token),
            }
        }
        if !codes.is_empty() {
            names.push("retriable-status-codes");
        }
        let on = RetryOn::parse(&names.join(","))
            .map_err(|e| path.field("retryOn").err(Kind::RetryOn(e)))?;
        policy.retry_on = on.with_retriable_status_codes(codes);
    }
    Ok(policy)
}

fn translate_fault(f: &net::HttpFaultInjection, path: &Path) -> Result<FaultInjection, IstioError> {
    let mut fault = FaultInjection::default();
    if let Some(d) = &f.delay {
        let p = path.field("delay");
        if d.exponential_delay.is_some() {
            return Err(p.field("exponentialDelay").err(Kind::Unsupported {
                feature: "exponential fault delay",
            }));
        }
        let fixed = d
            .fixed_delay
            .as_deref()
            .ok_or_else(|| p.field("fixedDelay").err(Kind::Missing))?;
        fault.delay = Some(FaultDelay {
            fixed: Some(duration(fixed, &p.field("fixedDelay"))?),
            header_controlled: false,
            percentage: percentage(d.percentage, d.percent, &p)?,
        });
    }
    if let Some(a) = &f.abort {
        let p = path.field("abort");
        let pct = percentage(a.percentage, None, &p)?;
        fault.abort = Some(match (&a.http_status, &a.grpc_status, &a.http2_error) {
            (Some(status), None, None) => FaultAbort::Http {
                status: u16::try_from(*status)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .ok_or_else(|| {
                        p.field("httpStatus").err(Kind::InvalidValue {
                            value: status.to_string(),
                            expected: "an HTTP status between 200 and 599",
                        })
                    })?,
                percentage: pct,
            },
            (None, Some(name), None) => FaultAbort::Grpc {
                code: grpc_code(name).ok_or_else(|| {
                    p.field("grpcStatus").err(Kind::InvalidValue {
                        value: name.clone(),
                        expected: "a gRPC status name such as UNAVAILABLE",
                    })
                })?,
                percentage: pct,
            },
            (None, None, Some(_)) => {
                return Err(p.field("http2Error").err(Kind::Unsupported {
                    feature: "HTTP/2 error fault injection",
                }))
            }
            _ => {
                return Err(p.err(Kind::InvalidValue {
                    value: "abort".into(),
                    expected: "exactly one of httpStatus, grpcStatus",
                }))
            }
        });
    }
    Ok(fault)
}

fn percentage(
    pct: Option<net::Percent>,
    legacy: Option<u32>,
    path: &Path,
) -> Result<FractionalPercent, IstioError> {
    let value = match (pct, legacy) {
        (Some(p), _) => p.value,
        (None, Some(p)) => f64::from(p),
        // Istio: no percentage means every request.
        (None, None) => 100.0,
    };
    if !(0.0..=100.0).contains(&value) {
        return Err(path.field("percentage").err(Kind::InvalidValue {
            value: value.to_string(),
            expected: "a percentage between 0 and 100",
        }));
    }
    Ok(FractionalPercent::from_percent(value))
}

/// gRPC status names as Istio writes them.
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
        .or_else(|| name.parse().ok().filter(|c| *c < 17))
}

fn translate_match(m: &net::HttpMatchRequest, path: &Path) -> Result<RouteMatch, IstioError> {
    for (set, feature, field) in [
        (m.scheme.is_some(), "scheme matching", "scheme"),
        (
            m.source_labels.is_some(),
            "sourceLabels matching",
            "sourceLabels",
        ),
        (
            m.source_namespace.is_some(),
            "sourceNamespace matching",
            "sourceNamespace",
        ),
    ] {
        if set {
            return Err(path.field(field).err(Kind::Unsupported { feature }));
        }
    }
    let path_match = match &m.uri {
        None => PathMatch::Prefix(String::new()),
        Some(sm) => match one_of(sm, &path.field("uri"))? {
            OneOf::Exact(s) => PathMatch::Exact(s.to_owned()),
            OneOf::Prefix(s) => PathMatch::Prefix(s.to_owned()),
            OneOf::Regex(r) => PathMatch::Regex(
                Regex::new(r)
                    .map_err(|e| path.field("uri").field("regex").err(Kind::Matcher(e)))?,
            ),
        },
    };
    let mut headers = Vec::new();
    for (name, sm) in &m.headers {
        let p = path.field("headers").key(name);
        headers.push(header_matcher(name, sm, false, &p)?);
    }
    for (name, sm) in &m.without_headers {
        let p = path.field("withoutHeaders").key(name);
        headers.push(header_matcher(name, sm, true, &p)?);
    }
    if let Some(sm) = &m.method {
        headers.push(header_matcher(":method", sm, false, &path.field("method"))?);
    }
    if let Some(sm) = &m.authority {
        headers.push(header_matcher(
            ":authority",
            sm,
            false,
            &path.field("authority"),
        )?);
    }
    let mut query = Vec::new();
    for (name, sm) in &m.query_params {
        let p = path.field("queryParams").key(name);
        let matcher = if *sm == net::StringMatch::default() {
            None
        } else {
            Some(string_matcher(sm, false, &p)?)
        };
        query.push(QueryParamMatcher::new(name.clone(), matcher));
    }
    Ok(RouteMatch::path(path_match)
        .case_sensitive(!m.ignore_uri_case)
        .with_headers(headers)
        .with_query_params(query))
}

enum OneOf<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

fn one_of<'a>(sm: &'a net::StringMatch, path: &Path) -> Result<OneOf<'a>, IstioError> {
    match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(e), None, None) => Ok(OneOf::Exact(e)),
        (None, Some(p), None) => Ok(OneOf::Prefix(p)),
        (None, None, Some(r)) => Ok(OneOf::Regex(r)),
        _ => Err(path.err(Kind::InvalidValue {
            value: format!("{sm:?}"),
            expected: "exactly one of exact, prefix, regex",
        })),
    }
}

fn string_matcher(
    sm: &net::StringMatch,
    ignore_case: bool,
    path: &Path,
) -> Result<StringMatcher, IstioError> {
    Ok(match one_of(sm, path)? {
        OneOf::Exact(s) => StringMatcher::new(StringMatch::Exact(s.to_owned()), ignore_case),
        OneOf::Prefix(s) => StringMatcher::new(StringMatch::Prefix(s.to_owned()), ignore_case),
        OneOf::Regex(r) => {
            StringMatcher::regex(r).map_err(|e| path.field("regex").err(Kind::Matcher(e)))?
        }
    })
}

fn header_matcher(
    name: &str,
    sm: &net::StringMatch,
    invert: bool,
    path: &Path,
) -> Result<HeaderMatcher, IstioError> {
    // Istio: an empty match object means "the header is present".
    let value = if *sm == net::StringMatch::default() {
        HeaderValueMatch::Present(true)
    } else {
        HeaderValueMatch::String(string_matcher(sm, false, path)?)
    };
    HeaderMatcher::new(name, value, invert).map_err(|e| path.err(Kind::Matcher(e)))
}

fn header_ops(
    h: &net::Headers,
    path: &Path,
) -> Result<(HeaderMutations, HeaderMutations), IstioError> {
    let one =
        |ops: &Option<net::HeaderOperations>, p: Path| -> Result<HeaderMutations, IstioError> {
            let mut muts = HeaderMutations::new();
            let Some(ops) = ops else {
                return Ok(muts);
            };
            for (k, v) in &ops.set {
                let p = p.field("set").key(k);
                muts = muts.set(header_name(k, &p)?, header_value(v, &p)?);
            }
            for (k, v) in &ops.add {
                let p = p.field("add").key(k);
                muts = muts.append(header_name(k, &p)?, header_value(v, &p)?);
            }
            for (i, k) in ops.remove.iter().enumerate() {
                muts = muts.remove(header_name(k, &p.field("remove").index(i))?);
            }
            Ok(muts)
        };
    Ok((
        one(&h.request, path.field("request"))?,
        one(&h.response, path.field("response"))?,
    ))
}

fn header_name(name: &str, path: &Path) -> Result<HeaderName, IstioError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
        path.err(Kind::InvalidValue {
            value: name.to_owned(),
            expected: "a valid HTTP header name",
        })
    })
}

fn header_value(value: &str, path: &Path) -> Result<HeaderValue, IstioError> {
    HeaderValue::from_str(value).map_err(|_| {
        path.err(Kind::InvalidValue {
            value: value.to_owned(),
            expected: "a valid HTTP header value",
        })
    })
}

pub(super) fn duration(value: &str, path: &Path) -> Result<Duration, IstioError> {
    parse_duration(value).map_err(|e| path.err(Kind::Duration(e)))
}
