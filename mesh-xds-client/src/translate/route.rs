//! RouteConfiguration -> [`mesh_core::route::RouteConfig`].

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as DataSpecifier;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier as PbClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher as PbStringMatcher;
use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, Regex, StringMatch, StringMatcher};
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, FractionalPercent, MaxStreamDuration, PathMatch,
    QueryParamMatcher, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost, WeightedCluster,
    WeightedClusters,
};

use super::duration;
use super::filters::{filter_overrides, FaultOverrides};
use super::route_policy::{hash_policies, request_response_mutations, retry_policy};
use crate::resource::FieldError;

/// Per virtual host, per translated route: the fault-filter overrides that apply to it
/// (the route's `typed_per_filter_config` over its virtual host's).
pub type RouteFaultOverrides = Vec<Vec<FaultOverrides>>;

/// Translates a route configuration. Routes gRPC ignores (an unsupported path
/// specifier, `cluster_header`, a cluster specifier plugin) are left out; anything else
/// that cannot be represented is an error with its field path.
///
/// Per-route fault overrides need the listener's filter chain to mean anything; this
/// returns the routes without them (see [`route_config_parts`]).
pub fn route_config(rc: &pb::RouteConfiguration) -> Result<RouteConfig, FieldError> {
    route_config_parts(rc).map(|(rc, _)| rc)
}

/// [`route_config`], with each route's fault-filter overrides kept aside for the
/// listener that uses it.
pub fn route_config_parts(
    rc: &pb::RouteConfiguration,
) -> Result<(RouteConfig, RouteFaultOverrides), FieldError> {
    let mut virtual_hosts = Vec::with_capacity(rc.virtual_hosts.len());
    let mut faults = Vec::with_capacity(rc.virtual_hosts.len());
    for (v, vh) in rc.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{v}]");
        let (vh, vh_faults) = translate_virtual_host(vh).map_err(|e| e.under(&at))?;
        virtual_hosts.push(vh);
        faults.push(vh_faults);
    }
    Ok((RouteConfig::new(rc.name.clone(), virtual_hosts), faults))
}

fn translate_virtual_host(
    vh: &pb::VirtualHost,
) -> Result<(VirtualHost, Vec<FaultOverrides>), FieldError> {
    let vh_overrides = filter_overrides(&vh.typed_per_filter_config)?;
    let mut routes = Vec::with_capacity(vh.routes.len());
    let mut faults = Vec::with_capacity(vh.routes.len());
    for (r, route) in vh.routes.iter().enumerate() {
        let at = format!("routes[{r}]");
        let Some(translated) = translate_route(route).map_err(|e| e.under(&at))? else {
            continue;
        };
        let mut overrides = vh_overrides.clone();
        overrides
            .extend(filter_overrides(&route.typed_per_filter_config).map_err(|e| e.under(&at))?);
        routes.push(translated);
        faults.push(overrides);
    }
    let retry = vh
        .retry_policy
        .as_ref()
        .map(retry_policy)
        .transpose()
        .map_err(|e| e.under("retry_policy"))?
        .flatten();
    let (request, response) = request_response_mutations(
        &vh.request_headers_to_add,
        &vh.request_headers_to_remove,
        &vh.response_headers_to_add,
        &vh.response_headers_to_remove,
    )?;
    let translated = VirtualHost::new(vh.name.clone(), vh.domains.clone(), routes)
        .with_retry_policy(retry)
        .with_headers(request, response)
        .with_request_attempt_count(vh.include_request_attempt_count);
    Ok((translated, faults))
}

fn translate_route(route: &pb::Route) -> Result<Option<Route>, FieldError> {
    let Some(matcher) = route.r#match.as_ref() else {
        return Err(FieldError::new("match", "missing"));
    };
    let Some(matcher) = translate_match(matcher).map_err(|e| e.under("match"))? else {
        return Ok(None);
    };
    let action = match &route.action {
        Some(pb::route::Action::Route(action)) => {
            match translate_forward(action).map_err(|e| e.under("route"))? {
                Some(forward) => RouteAction::Forward(forward),
                None => return Ok(None),
            }
        }
        Some(pb::route::Action::DirectResponse(direct)) => RouteAction::Direct {
            status: u16::try_from(direct.status)
                .ok()
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| {
                    FieldError::new("direct_response.status", format!("{}", direct.status))
                })?,
            body: direct.body.as_ref().and_then(|b| match &b.specifier {
                Some(DataSpecifier::InlineString(s)) => Some(s.clone()),
                Some(DataSpecifier::InlineBytes(bytes)) => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => None,
            }),
        },
        Some(_) => RouteAction::NonForwarding,
        None => return Err(FieldError::new("action", "missing")),
    };
    let (request, response) = request_response_mutations(
        &route.request_headers_to_add,
        &route.request_headers_to_remove,
        &route.response_headers_to_add,
        &route.response_headers_to_remove,
    )?;
    Ok(Some(
        Route::new(route.name.clone(), matcher, action).with_headers(request, response),
    ))
}

/// `None` when gRPC ignores the route (its path specifier is not one it knows).
fn translate_match(m: &pb::RouteMatch) -> Result<Option<RouteMatch>, FieldError> {
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => PathMatch::SeparatedPrefix(p.clone()),
        Some(PathSpecifier::SafeRegex(re)) => PathMatch::Regex(
            Regex::new(&re.regex)
                .map_err(|e| FieldError::new("safe_regex.regex", e.to_string()))?,
        ),
        Some(_) => return Ok(None),
        None => return Err(FieldError::new("path_specifier", "missing")),
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (h, header) in m.headers.iter().enumerate() {
        // gRPC never matches on `grpc-` headers: they are its own.
        if header.name.starts_with("grpc-") {
            continue;
        }
        headers.push(translate_header(header).map_err(|e| e.under(&format!("headers[{h}]")))?);
    }
    let mut query_params = Vec::with_capacity(m.query_parameters.len());
    for (q, param) in m.query_parameters.iter().enumerate() {
        let value = match &param.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(sm)) => Some(
                string_matcher(sm)
                    .map_err(|e| e.under(&format!("query_parameters[{q}].string_match")))?,
            ),
            Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
        };
        query_params.push(QueryParamMatcher::new(param.name.clone(), value));
    }
    let fraction = m
        .runtime_fraction
        .as_ref()
        .and_then(|rf| rf.default_value.as_ref())
        .map(|f| {
            let denominator = match f.denominator {
                1 => 10_000,
                2 => 1_000_000,
                _ => 100,
            };
            FractionalPercent::new(f.numerator, denominator)
        });
    Ok(Some(
        RouteMatch::path(path)
            .case_sensitive(m.case_sensitive.as_ref().is_none_or(|b| b.value))
            .with_headers(headers)
            .with_query_params(query_params)
            .with_runtime_fraction(fraction),
    ))
}

#[allow(deprecated)] // the deprecated matchers are still sent by older control planes
pub(crate) fn translate_header(h: &pb::HeaderMatcher) -> Result<HeaderMatcher, FieldError> {
    let string = |kind: StringMatch| HeaderValueMatch::String(StringMatcher::new(kind, false));
    let value = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => string(StringMatch::Exact(s.clone())),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => string(StringMatch::Prefix(s.clone())),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => string(StringMatch::Suffix(s.clone())),
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => string(StringMatch::Contains(s.clone())),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            string(StringMatch::Regex(Regex::new(&re.regex).map_err(|e| {
                FieldError::new("safe_regex_match.regex", e.to_string())
            })?))
        }
        Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderValueMatch::Range {
            start: r.start,
            end: r.end,
        },
        Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderValueMatch::Present(*p),
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            HeaderValueMatch::String(string_matcher(sm).map_err(|e| e.under("string_match"))?)
        }
        // Envoy: no specifier means "present".
        None => HeaderValueMatch::Present(true),
    };
    HeaderMatcher::new(&h.name, value, h.invert_match)
        .map_err(|e| FieldError::new("", e.to_string()))
}

pub(crate) fn string_matcher(sm: &PbStringMatcher) -> Result<StringMatcher, FieldError> {
    let kind = match &sm.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(re)) => StringMatch::Regex(
            Regex::new(&re.regex).map_err(|e| FieldError::new("safe_regex", e.to_string()))?,
        ),
        Some(MatchPattern::Custom(_)) => {
            return Err(FieldError::new(
                "custom",
                "custom matchers are not supported",
            ))
        }
        None => return Err(FieldError::new("match_pattern", "missing")),
    };
    Ok(StringMatcher::new(kind, sm.ignore_case))
}

/// `None` when gRPC ignores the route (`cluster_header`, cluster specifier plugins).
fn translate_forward(a: &pb::RouteAction) -> Result<Option<ForwardAction>, FieldError> {
    let clusters = match &a.cluster_specifier {
        Some(PbClusterSpecifier::Cluster(name)) => ClusterSpecifier::Cluster(name.clone()),
        Some(PbClusterSpecifier::WeightedClusters(wc)) => {
            let mut clusters = Vec::with_capacity(wc.clusters.len());
            for (i, c) in wc.clusters.iter().enumerate() {
                let at = format!("weighted_clusters.clusters[{i}]");
                // Validated (an unknown non-optional override is rejected, gRFC A39) but
                // not applied: the model has no per-cluster fault.
                filter_overrides(&c.typed_per_filter_config).map_err(|e| e.under(&at))?;
                let (request, response) = request_response_mutations(
                    &c.request_headers_to_add,
                    &c.request_headers_to_remove,
                    &c.response_headers_to_add,
                    &c.response_headers_to_remove,
                )
                .map_err(|e| e.under(&at))?;
                clusters.push(
                    WeightedCluster::new(c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value))
                        .with_headers(request, response),
                );
            }
            ClusterSpecifier::Weighted(
                WeightedClusters::new(clusters)
                    .map_err(|e| FieldError::new("weighted_clusters", e.to_string()))?,
            )
        }
        Some(_) => return Ok(None),
        None => return Err(FieldError::new("cluster_specifier", "missing")),
    };
    let mut forward = ForwardAction::new(clusters);
    // Envoy's `timeout`: zero disables it; unset means none here (gRPC has no default).
    forward.timeout = match &a.timeout {
        Some(t) => Some(duration(t, "timeout")?).filter(|d| !d.is_zero()),
        None => None,
    };
    if let Some(msd) = &a.max_stream_duration {
        forward.max_stream_duration = MaxStreamDuration {
            max: msd
                .max_stream_duration
                .as_ref()
                .map(|d| duration(d, "max_stream_duration.max_stream_duration"))
                .transpose()?,
            grpc_timeout_header_max: msd
                .grpc_timeout_header_max
                .as_ref()
                .map(|d| duration(d, "max_stream_duration.grpc_timeout_header_max"))
                .transpose()?,
        };
    }
    forward.retry_policy = a
        .retry_policy
        .as_ref()
        .map(retry_policy)
        .transpose()
        .map_err(|e| e.under("retry_policy"))?
        .flatten();
    forward.hash_policies = hash_policies(&a.hash_policy);
    forward.prefix_rewrite = Some(a.prefix_rewrite.clone()).filter(|p| !p.is_empty());
    forward.host_rewrite = match &a.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(host)) if !host.is_empty() => {
            Some(host.clone())
        }
        // Rewrites from a header, a path regex or the upstream host are not supported:
        // the authority stays as sent, as gRPC leaves it.
        _ => None,
    };
    Ok(Some(forward))
}
