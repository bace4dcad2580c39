use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, route, route_action, route_match::PathSpecifier,
    DirectResponseAction, HeaderMatcher as PbHeaderMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher as PbStringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration};
use http::HeaderMap;
use mesh_core::route::{ClusterSpecifier, RouteAction};

use super::*;
use crate::resource::{ListenerResource, ResourceType};
use crate::testing::fixtures::{
    listener_inline, listener_rds_message, prefix_route, route_config_message, route_config_with,
    weighted,
};

fn forward(action: &RouteAction) -> &mesh_core::route::ForwardAction {
    match action {
        RouteAction::Forward(f) => f,
        other => panic!("not forwarding: {other:?}"),
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, v.parse().unwrap());
    }
    map
}

#[test]
fn simple_route_configuration() {
    let rc = route_config(&route_config_message("routes", "payments")).unwrap();
    assert_eq!(rc.name(), "routes");
    let (vh, route) = rc
        .route_for("anything:80", "/x", &HeaderMap::new(), 0)
        .unwrap();
    assert_eq!(vh.domains(), ["*"]);
    let f = forward(route.action());
    assert_eq!(f.clusters(), &ClusterSpecifier::Cluster("payments".into()));
    assert_eq!(f.timeout, None);
}

#[test]
fn weighted_clusters_and_timeouts() {
    let mut r = prefix_route("/", weighted(&[("v1", 90), ("v2", 10)]));
    if let Some(route::Action::Route(a)) = &mut r.action {
        a.timeout = Some(PbDuration {
            seconds: 5,
            nanos: 0,
        });
    }
    let mut zero = prefix_route("/zero", route_action::ClusterSpecifier::Cluster("c".into()));
    if let Some(route::Action::Route(a)) = &mut zero.action {
        a.timeout = Some(PbDuration::default());
    }
    let rc = route_config(&route_config_with("r", vec![zero, r])).unwrap();
    let routes = rc.virtual_hosts()[0].routes();
    assert_eq!(
        forward(routes[0].action()).timeout,
        None,
        "zero disables the timeout"
    );
    let f = forward(routes[1].action());
    assert_eq!(f.timeout, Some(std::time::Duration::from_secs(5)));
    let ClusterSpecifier::Weighted(w) = f.clusters() else {
        panic!()
    };
    assert_eq!(w.total_weight(), 100);
    assert_eq!(f.cluster_names().collect::<Vec<_>>(), ["v1", "v2"]);
}

#[test]
fn matches_translate() {
    let mut r = prefix_route("/", route_action::ClusterSpecifier::Cluster("c".into()));
    let m = r.r#match.as_mut().unwrap();
    m.path_specifier = Some(PathSpecifier::SafeRegex(RegexMatcher {
        regex: "/svc/[a-z]+".into(),
        ..Default::default()
    }));
    m.case_sensitive = Some(BoolValue { value: false });
    #[allow(deprecated)]
    let exact = HeaderMatchSpecifier::ExactMatch("canary".into());
    m.headers = vec![
        PbHeaderMatcher {
            name: "x-track".into(),
            header_match_specifier: Some(exact),
            ..Default::default()
        },
        PbHeaderMatcher {
            name: "x-n".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Int64Range {
                start: 1,
                end: 10,
            })),
            ..Default::default()
        },
        PbHeaderMatcher {
            name: "x-user".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(PbStringMatcher {
                match_pattern: Some(MatchPattern::Prefix("ADMIN".into())),
                ignore_case: true,
            })),
            ..Default::default()
        },
        PbHeaderMatcher {
            name: "grpc-timeout".into(),
            ..Default::default()
        },
    ];
    let rc = route_config(&route_config_with("r", vec![r])).unwrap();
    let route = &rc.virtual_hosts()[0].routes()[0];
    assert_eq!(
        route.matcher().headers().len(),
        3,
        "grpc- headers are ignored"
    );
    let good = headers(&[("x-track", "canary"), ("x-n", "3"), ("x-user", "admin-1")]);
    assert!(rc.route_for("h", "/svc/abc", &good, 0).is_some());
    assert!(rc.route_for("h", "/svc/ABC1", &good, 0).is_none());
    let bad = headers(&[("x-track", "canary"), ("x-n", "30"), ("x-user", "admin-1")]);
    assert!(rc.route_for("h", "/svc/abc", &bad, 0).is_none());
}

#[test]
fn path_separated_prefix_routes_match_on_a_segment_boundary() {
    // As istiod emits a Gateway API PathPrefix match: the route is kept, not dropped.
    let mut api = prefix_route("/", route_action::ClusterSpecifier::Cluster("api".into()));
    api.r#match.as_mut().unwrap().path_specifier =
        Some(PathSpecifier::PathSeparatedPrefix("/api".into()));
    let rest = prefix_route("/", route_action::ClusterSpecifier::Cluster("rest".into()));
    let rc = route_config(&route_config_with("r", vec![api, rest])).unwrap();
    assert_eq!(rc.virtual_hosts()[0].routes().len(), 2);
    let cluster = |path: &str| {
        let (_, route) = rc.route_for("h", path, &HeaderMap::new(), 0).unwrap();
        match forward(route.action()).clusters() {
            ClusterSpecifier::Cluster(c) => c.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(cluster("/api"), "api");
    assert_eq!(cluster("/api/v1/orders"), "api");
    assert_eq!(cluster("/apiv1"), "rest");
}

#[test]
fn ignored_and_non_forwarding_routes() {
    let header_route = prefix_route(
        "/h",
        route_action::ClusterSpecifier::ClusterHeader("x-c".into()),
    );
    let mut direct = prefix_route("/d", route_action::ClusterSpecifier::Cluster("c".into()));
    direct.action = Some(route::Action::DirectResponse(DirectResponseAction {
        status: 418,
        ..Default::default()
    }));
    let rc = route_config(&route_config_with("r", vec![header_route, direct])).unwrap();
    let routes = rc.virtual_hosts()[0].routes();
    assert_eq!(
        routes.len(),
        1,
        "cluster_header routes are ignored, as gRPC does"
    );
    assert_eq!(
        routes[0].action(),
        &RouteAction::Direct {
            status: 418,
            body: None
        }
    );
}

#[test]
fn translation_errors_carry_the_field_path() {
    let mut r = prefix_route("/", route_action::ClusterSpecifier::Cluster("c".into()));
    if let Some(route::Action::Route(a)) = &mut r.action {
        a.timeout = Some(PbDuration {
            seconds: -1,
            nanos: 0,
        });
    }
    let err = route_config(&route_config_with("r", vec![r])).unwrap_err();
    assert_eq!(err.field, "virtual_hosts[0].routes[0].route.timeout");
}

#[test]
fn listener_routes_from_rds_or_inline() {
    let l = ListenerResource::validate(listener_rds_message("l", "r")).unwrap();
    assert_eq!(
        listener_routes(&l).unwrap(),
        ListenerRoutes::Rds("r".into())
    );
    let inline = listener_inline("l", route_config_message("inline", "c"));
    let msg = prost::Message::decode(inline.value.as_slice()).unwrap();
    let l = ListenerResource::validate(msg).unwrap();
    let ListenerRoutes::Inline(rc) = listener_routes(&l).unwrap() else {
        panic!()
    };
    assert_eq!(rc.name(), "inline");
}

mod cluster;
mod endpoints;
mod listener;
mod policy;
