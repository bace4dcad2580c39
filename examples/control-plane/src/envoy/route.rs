//! mesh-core route configurations -> Envoy `RouteConfiguration`.

use envoy_types::pb::envoy::config::core::v3::{
    data_source, header_value_option, DataSource, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    route_action, route_match, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher as PbStringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent, Int64Range};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatch, StringMatcher};
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, HashPolicyKind, HeaderMutations, PathMatch, RetryPolicy,
    Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

use mesh_core::route::{FaultAbort, FaultInjection};
use mesh_xds_client::resource::to_any;

use super::duration;

/// A value no request path or header carries.
const NEVER: &str = "\u{0}never";

/// A route configuration.
pub fn route_config(rc: &RouteConfig) -> pb::RouteConfiguration {
    pb::RouteConfiguration {
        name: rc.name().to_owned(),
        virtual_hosts: rc.virtual_hosts().iter().map(virtual_host).collect(),
        ..Default::default()
    }
}

fn virtual_host(vh: &VirtualHost) -> pb::VirtualHost {
    let (request_headers_to_add, request_headers_to_remove) = mutations(vh.request_headers());
    let (response_headers_to_add, response_headers_to_remove) = mutations(vh.response_headers());
    pb::VirtualHost {
        name: vh.name().to_owned(),
        domains: vh.domains().to_vec(),
        routes: vh.routes().iter().map(route).collect(),
        retry_policy: vh.retry_policy().map(retry_policy),
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        include_request_attempt_count: vh.includes_request_attempt_count(),
        ..Default::default()
    }
}

fn route(r: &Route) -> pb::Route {
    let (request_headers_to_add, request_headers_to_remove) = mutations(r.request_headers());
    let (response_headers_to_add, response_headers_to_remove) = mutations(r.response_headers());
    let action = match r.action() {
        RouteAction::Forward(f) => pb::route::Action::Route(forward(f)),
        RouteAction::Direct { status, body } => {
            pb::route::Action::DirectResponse(pb::DirectResponseAction {
                status: u32::from(*status),
                body: body.clone().map(|b| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(b)),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
        _ => pb::route::Action::NonForwardingAction(pb::NonForwardingAction {}),
    };
    let mut typed_per_filter_config = std::collections::HashMap::new();
    if let Some(f) = r.fault() {
        typed_per_filter_config.insert(super::FAULT_FILTER.to_owned(), to_any(&fault(f)));
    }
    pb::Route {
        name: r.name().to_owned(),
        typed_per_filter_config,
        r#match: Some(route_match_of(r.matcher())),
        action: Some(action),
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        ..Default::default()
    }
}

fn route_match_of(m: &RouteMatch) -> pb::RouteMatch {
    let path_specifier = match m.path_match() {
        PathMatch::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Regex(re) => route_match::PathSpecifier::SafeRegex(regex(re.as_str())),
        PathMatch::SeparatedPrefix(p) => route_match::PathSpecifier::PathSeparatedPrefix(p.clone()),
        // A matcher the model grows later and this conversion does not know matches nothing.
        _ => route_match::PathSpecifier::Path(NEVER.to_owned()),
    };
    pb::RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: Some(BoolValue {
            value: m.is_case_sensitive(),
        }),
        headers: m.headers().iter().map(header_matcher).collect(),
        query_parameters: m
            .query_params()
            .iter()
            .map(|q| pb::QueryParameterMatcher {
                name: q.name().to_owned(),
                query_parameter_match_specifier: Some(match q.value() {
                    Some(v) => QueryParameterMatchSpecifier::StringMatch(string_matcher(v)),
                    None => QueryParameterMatchSpecifier::PresentMatch(true),
                }),
            })
            .collect(),
        runtime_fraction: m.runtime_fraction().map(|f| {
            envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent {
                default_value: Some(fraction(f.numerator(), f.denominator())),
                ..Default::default()
            }
        }),
        ..Default::default()
    }
}

/// Envoy's denominators are 100, 10 000 and 1 000 000; others are scaled to a million.
pub fn fraction(numerator: u32, denominator: u32) -> FractionalPercent {
    use fractional_percent::DenominatorType as D;
    let (numerator, denominator) = match denominator {
        100 => (numerator, D::Hundred),
        10_000 => (numerator, D::TenThousand),
        1_000_000 => (numerator, D::Million),
        0 => (numerator, D::Hundred),
        d => {
            let scaled = u64::from(numerator) * 1_000_000 / u64::from(d);
            (u32::try_from(scaled).unwrap_or(1_000_000), D::Million)
        }
    };
    FractionalPercent {
        numerator,
        denominator: denominator as i32,
    }
}

fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..Default::default()
    }
}

pub(super) fn string_matcher(s: &StringMatcher) -> PbStringMatcher {
    let pattern = match s.kind() {
        StringMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatch::Suffix(v) => MatchPattern::Suffix(v.clone()),
        StringMatch::Contains(v) => MatchPattern::Contains(v.clone()),
        StringMatch::Regex(re) => MatchPattern::SafeRegex(regex(re.as_str())),
        _ => MatchPattern::Exact(NEVER.to_owned()),
    };
    PbStringMatcher {
        match_pattern: Some(pattern),
        ignore_case: s.ignore_case(),
    }
}

pub(super) fn header_matcher(h: &HeaderMatcher) -> pb::HeaderMatcher {
    let spec = match h.value() {
        HeaderValueMatch::String(s) => HeaderMatchSpecifier::StringMatch(string_matcher(s)),
        HeaderValueMatch::Range { start, end } => HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: *start,
            end: *end,
        }),
        HeaderValueMatch::Present(p) => HeaderMatchSpecifier::PresentMatch(*p),
        _ => HeaderMatchSpecifier::StringMatch(PbStringMatcher {
            match_pattern: Some(MatchPattern::Exact(NEVER.to_owned())),
            ignore_case: false,
        }),
    };
    pb::HeaderMatcher {
        name: h.name().to_owned(),
        invert_match: h.invert(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn forward(f: &ForwardAction) -> pb::RouteAction {
    let cluster_specifier = match f.clusters() {
        ClusterSpecifier::Cluster(c) => route_action::ClusterSpecifier::Cluster(c.clone()),
        ClusterSpecifier::Weighted(w) => {
            route_action::ClusterSpecifier::WeightedClusters(pb::WeightedCluster {
                clusters: w
                    .clusters()
                    .iter()
                    .map(|c| {
                        let (request_headers_to_add, request_headers_to_remove) =
                            mutations(c.request_headers());
                        let (response_headers_to_add, response_headers_to_remove) =
                            mutations(c.response_headers());
                        ClusterWeight {
                            name: c.name().to_owned(),
                            weight: Some(UInt32Value { value: c.weight() }),
                            request_headers_to_add,
                            request_headers_to_remove,
                            response_headers_to_add,
                            response_headers_to_remove,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
        }
        // Unknown to this conversion: an empty cluster name, which clients reject (NACK).
        _ => route_action::ClusterSpecifier::Cluster(String::new()),
    };
    let msd = &f.max_stream_duration;
    let max_stream_duration =
        (msd.max.is_some() || msd.grpc_timeout_header_max.is_some()).then(|| {
            route_action::MaxStreamDuration {
                max_stream_duration: msd.max.map(duration),
                grpc_timeout_header_max: msd.grpc_timeout_header_max.map(duration),
                ..Default::default()
            }
        });
    pb::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        // Envoy's default route timeout is 15 s; none in the model means none at all.
        timeout: Some(duration(f.timeout.unwrap_or_default())),
        retry_policy: f.retry_policy.as_ref().map(retry_policy),
        max_stream_duration,
        hash_policy: f.hash_policies.iter().filter_map(hash_policy).collect(),
        prefix_rewrite: f.prefix_rewrite.clone().unwrap_or_default(),
        host_rewrite_specifier: f
            .host_rewrite
            .clone()
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        ..Default::default()
    }
}

fn hash_policy(h: &mesh_core::route::HashPolicy) -> Option<route_action::HashPolicy> {
    use route_action::hash_policy::{ConnectionProperties, FilterState, Header, PolicySpecifier};
    let spec = match &h.kind {
        HashPolicyKind::Header { name } => PolicySpecifier::Header(Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashPolicyKind::SourceIp => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
        HashPolicyKind::ChannelId => PolicySpecifier::FilterState(FilterState {
            key: "io.grpc.channel_id".to_owned(),
        }),
        _ => return None,
    };
    Some(route_action::HashPolicy {
        policy_specifier: Some(spec),
        terminal: h.terminal,
    })
}

/// A retry policy (route or virtual host).
pub fn retry_policy(p: &RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        retry_on: p.retry_on.names().collect::<Vec<_>>().join(","),
        num_retries: Some(UInt32Value {
            value: p.num_retries,
        }),
        per_try_timeout: p.per_try_timeout.map(duration),
        retriable_status_codes: p
            .retry_on
            .retriable_status_codes
            .iter()
            .map(|c| u32::from(*c))
            .collect(),
        retry_back_off: Some(pb::retry_policy::RetryBackOff {
            base_interval: Some(duration(p.backoff.base_interval)),
            max_interval: Some(duration(p.backoff.max_interval)),
        }),
        ..Default::default()
    }
}

fn mutations(m: &HeaderMutations) -> (Vec<HeaderValueOption>, Vec<String>) {
    use header_value_option::HeaderAppendAction as A;
    let option =
        |(name, value): &(http::HeaderName, http::HeaderValue), action: A| HeaderValueOption {
            header: Some(HeaderValue {
                key: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        };
    let add = m
        .sets()
        .iter()
        .map(|h| option(h, A::OverwriteIfExistsOrAdd))
        .chain(
            m.appends()
                .iter()
                .map(|h| option(h, A::AppendIfExistsOrAdd)),
        )
        .collect();
    let remove = m.removals().iter().map(|n| n.as_str().to_owned()).collect();
    (add, remove)
}

/// A route's fault injection, as the fault filter's per-route config (gRFC A33).
fn fault(f: &FaultInjection) -> HttpFault {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as http_fault;
    use http_fault::fault_abort::ErrorType;
    let delay = f.delay.as_ref().map(|d| common::FaultDelay {
        fault_delay_secifier: Some(match d.fixed {
            Some(t) if !d.header_controlled => {
                common::fault_delay::FaultDelaySecifier::FixedDelay(duration(t))
            }
            _ => common::fault_delay::FaultDelaySecifier::HeaderDelay(Default::default()),
        }),
        percentage: Some(fraction(
            d.percentage.numerator(),
            d.percentage.denominator(),
        )),
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let (error_type, p) = match a {
            FaultAbort::Http { status, percentage } => {
                (ErrorType::HttpStatus(u32::from(*status)), percentage)
            }
            FaultAbort::Grpc { code, percentage } => (ErrorType::GrpcStatus(*code), percentage),
            FaultAbort::HeaderControlled { percentage } => {
                (ErrorType::HeaderAbort(Default::default()), percentage)
            }
            _ => return None,
        };
        Some(http_fault::FaultAbort {
            error_type: Some(error_type),
            percentage: Some(fraction(p.numerator(), p.denominator())),
            ..Default::default()
        })
    });
    HttpFault {
        delay,
        abort,
        headers: f.headers.iter().map(header_matcher).collect(),
        max_active_faults: f.max_active_faults.map(|value| UInt32Value { value }),
        ..Default::default()
    }
}
