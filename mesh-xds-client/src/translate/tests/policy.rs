//! Route policies: retries, hash policies, header mutations, rewrites, fault overrides.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::route::v3::retry_policy::RetryBackOff;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, FilterState, Header, PolicySpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy, HostRewriteSpecifier};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, FilterConfig, RetryPolicy, Route, RouteAction as PbRouteAction,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, FaultAbort as PbAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent as PbFraction;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use http::HeaderMap;
use mesh_core::retry::RetryOn;
use mesh_core::route::{FaultAbort, HashPolicyKind, RouteAction};

use crate::resource::to_any;
use crate::testing::fixtures::{prefix_route, route_config_with, weighted};
use crate::translate::{route_config, route_config_parts};

fn ms(millis: i32) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: 0,
        nanos: millis * 1_000_000,
    })
}

fn to_c() -> Route {
    prefix_route("/", route_action::ClusterSpecifier::Cluster("c".into()))
}

fn action(r: &mut Route) -> &mut PbRouteAction {
    match r.action.as_mut() {
        Some(route::Action::Route(a)) => a,
        _ => unreachable!(),
    }
}

fn forward(rc: &mesh_core::route::RouteConfig) -> &mesh_core::route::ForwardAction {
    match rc.virtual_hosts()[0].routes()[0].action() {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    }
}

fn field(routes: Vec<Route>) -> String {
    route_config(&route_config_with("r", routes))
        .unwrap_err()
        .field
}

fn retry(retry_on: &str) -> RetryPolicy {
    RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: Some(UInt32Value { value: 3 }),
        retry_back_off: Some(RetryBackOff {
            base_interval: ms(10),
            max_interval: ms(50),
        }),
        per_try_timeout: ms(200),
        ..RetryPolicy::default()
    }
}

#[test]
fn retry_policy_honours_grpc_codes_and_envoy_conditions() {
    let mut r = to_c();
    action(&mut r).retry_policy = Some(retry("5xx, unavailable,bogus,retriable-headers"));
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    let p = forward(&rc).retry_policy.as_ref().unwrap();
    assert!(p
        .retry_on
        .contains(RetryOn::FIVE_XX | RetryOn::GRPC_UNAVAILABLE));
    assert!(!p.retry_on.contains(RetryOn::RETRIABLE_HEADERS));
    assert_eq!(p.num_retries, 3);
    assert_eq!(p.backoff.base_interval, Duration::from_millis(10));
    assert_eq!(p.backoff.max_interval, Duration::from_millis(50));
    assert_eq!(p.per_try_timeout, Some(Duration::from_millis(200)));

    // Nothing supported left: no policy at all (gRFC A44).
    let mut r = to_c();
    action(&mut r).retry_policy = Some(retry("bogus,envoy-ratelimited"));
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    assert!(forward(&rc).retry_policy.is_none());

    let mut r = to_c();
    let mut codes = retry("retriable-status-codes");
    codes.retriable_status_codes = vec![503, 429];
    action(&mut r).retry_policy = Some(codes);
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    let p = forward(&rc).retry_policy.as_ref().unwrap();
    assert_eq!(p.retry_on.retriable_status_codes, [503, 429]);
}

#[test]
fn retry_policy_rejections_name_the_field() {
    let at = "virtual_hosts[0].routes[0].route.retry_policy";
    let mut r = to_c();
    let mut p = retry("5xx");
    p.retry_back_off.as_mut().unwrap().base_interval = ms(0);
    action(&mut r).retry_policy = Some(p);
    assert_eq!(field(vec![r]), format!("{at}.retry_back_off.base_interval"));

    let mut r = to_c();
    let mut p = retry("5xx");
    p.retry_back_off.as_mut().unwrap().max_interval = ms(1);
    action(&mut r).retry_policy = Some(p);
    assert_eq!(field(vec![r]), format!("{at}.retry_back_off.max_interval"));

    let mut r = to_c();
    let mut p = retry("retriable-status-codes");
    p.retriable_status_codes = vec![700];
    action(&mut r).retry_policy = Some(p);
    assert_eq!(field(vec![r]), format!("{at}.retriable_status_codes[0]"));
}

#[test]
fn virtual_host_retry_policy_and_headers() {
    let mut rc = route_config_with("r", vec![to_c()]);
    let vh = &mut rc.virtual_hosts[0];
    vh.retry_policy = Some(retry("cancelled"));
    vh.request_headers_to_add = vec![header(
        "x-mesh",
        "1",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    vh.response_headers_to_remove = vec!["server".into()];
    let rc = route_config(&rc).unwrap();
    let vh = &rc.virtual_hosts()[0];
    assert!(vh
        .retry_policy()
        .unwrap()
        .retry_on
        .contains(RetryOn::GRPC_CANCELLED));
    let mut h = HeaderMap::new();
    vh.request_headers().apply(&mut h);
    assert_eq!(h["x-mesh"], "1");
    assert_eq!(vh.response_headers().removals()[0], "server");
    assert!(!vh.includes_request_attempt_count(), "Envoy's default: off");

    let mut rc = route_config_with("r", vec![to_c()]);
    rc.virtual_hosts[0].include_request_attempt_count = true;
    let rc = route_config(&rc).unwrap();
    assert!(rc.virtual_hosts()[0].includes_request_attempt_count());
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..HeaderValue::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    }
}

#[test]
fn header_mutations_on_routes_and_weighted_clusters() {
    let mut r = prefix_route("/", weighted(&[("a", 1), ("b", 1)]));
    r.request_headers_to_add = vec![
        header("x-set", "s", HeaderAppendAction::OverwriteIfExistsOrAdd),
        header("x-add", "a", HeaderAppendAction::AppendIfExistsOrAdd),
    ];
    r.request_headers_to_remove = vec!["x-drop".into()];
    if let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
        &mut action(&mut r).cluster_specifier
    {
        wc.clusters[0].response_headers_to_add = vec![header(
            "x-from",
            "a",
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        )];
    }
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    let route = &rc.virtual_hosts()[0].routes()[0];
    let mut h = HeaderMap::new();
    h.insert("x-drop", "1".parse().unwrap());
    h.insert("x-add", "0".parse().unwrap());
    route.request_headers().apply(&mut h);
    assert!(h.get("x-drop").is_none());
    assert_eq!(h["x-set"], "s");
    assert_eq!(h.get_all("x-add").iter().count(), 2);
    let mesh_core::route::ClusterSpecifier::Weighted(w) = forward(&rc).clusters() else {
        panic!()
    };
    assert_eq!(w.clusters()[0].response_headers().sets().len(), 1);

    let mut bad = to_c();
    bad.request_headers_to_add = vec![header(
        ":path",
        "/x",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    assert_eq!(
        field(vec![bad]),
        "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key"
    );
    let mut bad = to_c();
    bad.response_headers_to_add = vec![header("x", "y", HeaderAppendAction::AddIfAbsent)];
    assert_eq!(
        field(vec![bad]),
        "virtual_hosts[0].routes[0].response_headers_to_add[0].append_action"
    );
    let mut bad = to_c();
    bad.request_headers_to_remove = vec!["bad name".into()];
    assert_eq!(
        field(vec![bad]),
        "virtual_hosts[0].routes[0].request_headers_to_remove[0]"
    );
}

#[test]
fn hash_policies_and_rewrites() {
    let mut r = to_c();
    let a = action(&mut r);
    let policy = |p: PolicySpecifier, terminal| HashPolicy {
        policy_specifier: Some(p),
        terminal,
    };
    a.hash_policy = vec![
        policy(
            PolicySpecifier::Header(Header {
                header_name: "X-User".into(),
                regex_rewrite: None,
            }),
            true,
        ),
        policy(
            PolicySpecifier::Header(Header {
                header_name: "x-binary".into(),
                regex_rewrite: None,
            }),
            false,
        ),
        policy(
            PolicySpecifier::Header(Header {
                header_name: "x-id-bin".into(),
                regex_rewrite: None,
            }),
            false,
        ),
        policy(PolicySpecifier::Cookie(Cookie::default()), false),
        policy(
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true }),
            false,
        ),
        policy(
            PolicySpecifier::FilterState(FilterState {
                key: "io.grpc.channel_id".into(),
            }),
            false,
        ),
        policy(
            PolicySpecifier::FilterState(FilterState {
                key: "other".into(),
            }),
            false,
        ),
    ];
    a.prefix_rewrite = "/v2/".into();
    a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
        "upstream.local".into(),
    ));
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    let f = forward(&rc);
    let kinds: Vec<_> = f
        .hash_policies
        .iter()
        .map(|h| (h.kind.clone(), h.terminal))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                HashPolicyKind::Header {
                    name: "x-user".into()
                },
                true
            ),
            (
                HashPolicyKind::Header {
                    name: "x-binary".into()
                },
                false
            ),
            (HashPolicyKind::SourceIp, false),
            (HashPolicyKind::ChannelId, false),
        ]
    );
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/v2/"));
    assert_eq!(f.host_rewrite.as_deref(), Some("upstream.local"));
}

fn abort(status: u32, percent: u32) -> HttpFault {
    HttpFault {
        abort: Some(PbAbort {
            error_type: Some(ErrorType::HttpStatus(status)),
            percentage: Some(PbFraction {
                numerator: percent,
                denominator: 0,
            }),
            ..PbAbort::default()
        }),
        ..HttpFault::default()
    }
}

#[test]
fn fault_overrides_per_route_and_virtual_host() {
    const FAULT: &str = "envoy.filters.http.fault";
    let mut r0 = to_c();
    r0.typed_per_filter_config
        .insert(FAULT.into(), to_any(&abort(503, 50)));
    let mut r1 = to_c();
    r1.typed_per_filter_config.insert(
        FAULT.into(),
        to_any(&FilterConfig {
            disabled: true,
            ..FilterConfig::default()
        }),
    );
    let r2 = to_c();
    let mut rc = route_config_with("r", vec![r0, r1, r2]);
    rc.virtual_hosts[0]
        .typed_per_filter_config
        .insert(FAULT.into(), to_any(&abort(500, 10)));
    let (_, overrides) = route_config_parts(&rc).unwrap();
    let FaultAbort::Http { status, percentage } = overrides[0][0][FAULT]
        .as_ref()
        .unwrap()
        .abort
        .clone()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (status, percentage.numerator(), percentage.denominator()),
        (503, 50, 100)
    );
    assert_eq!(overrides[0][1][FAULT], None, "disabled on this route");
    let FaultAbort::Http { status, .. } = overrides[0][2][FAULT]
        .as_ref()
        .unwrap()
        .abort
        .clone()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(status, 500, "inherited from the virtual host");

    let bad_status = abort(99, 1);
    let mut r = to_c();
    r.typed_per_filter_config
        .insert(FAULT.into(), to_any(&bad_status));
    assert_eq!(
        field(vec![r]),
        format!("virtual_hosts[0].routes[0].typed_per_filter_config[{FAULT}].abort.http_status")
    );
}

#[test]
fn unknown_or_unsafe_filter_overrides() {
    let unknown = Any {
        type_url: "type.googleapis.com/example.Unknown".into(),
        value: vec![],
    };
    let mut r = to_c();
    r.typed_per_filter_config
        .insert("x".into(), unknown.clone());
    assert_eq!(
        field(vec![r]),
        "virtual_hosts[0].routes[0].typed_per_filter_config[x]"
    );

    let mut r = to_c();
    r.typed_per_filter_config.insert(
        "x".into(),
        to_any(&FilterConfig {
            config: Some(unknown),
            is_optional: true,
            disabled: false,
        }),
    );
    assert!(
        route_config(&route_config_with("r", vec![r])).is_ok(),
        "optional: ignored"
    );

    let mut r = to_c();
    r.typed_per_filter_config
        .insert("rbac".into(), to_any(&RbacPerRoute::default()));
    assert_eq!(
        field(vec![r]),
        "virtual_hosts[0].routes[0].typed_per_filter_config[rbac]"
    );
}
