use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{socket_address::PortSpecifier, PathConfigSource};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
use envoy_types::pb::google::protobuf::Any;

use super::*;
use crate::testing::fixtures::*;

/// Decodes `any` as `t` and returns the rejected field path.
fn rejected_field(t: XdsType, any: &Any) -> String {
    match decode(t, 0, any) {
        Decoded::Invalid(_, err) => err.field().unwrap_or_default().to_owned(),
        other => panic!("not rejected: {other:?}"),
    }
}

fn valid(t: XdsType, any: &Any) -> Resource {
    match decode(t, 0, any) {
        Decoded::Valid(_, r) => r,
        other => panic!("not accepted: {other:?}"),
    }
}

fn edit_hcm(
    listener: &mut envoy_types::pb::envoy::config::listener::v3::Listener,
    f: impl FnOnce(&mut HttpConnectionManager),
) {
    let api = listener
        .api_listener
        .as_mut()
        .unwrap()
        .api_listener
        .as_mut()
        .unwrap();
    let mut hcm = HttpConnectionManager::decode(api.value.as_slice()).unwrap();
    f(&mut hcm);
    *api = to_any(&hcm);
}

#[test]
fn type_urls_round_trip() {
    for t in XdsType::ALL {
        assert_eq!(XdsType::from_type_url(t.type_url()), Some(t));
    }
    assert!(XdsType::Listener.is_full_state() && XdsType::Cluster.is_full_state());
    assert!(!XdsType::RouteConfiguration.is_full_state());
    assert_eq!(XdsType::ClusterLoadAssignment.to_string(), "EDS");
}

#[test]
fn listener_references_its_route_configuration() {
    let r = valid(XdsType::Listener, &listener_rds("l", "r"));
    assert_eq!(
        r.references(),
        [(XdsType::RouteConfiguration, "r".to_owned())]
    );
    let Resource::Listener(l) = r else {
        unreachable!()
    };
    assert_eq!(l.rds_name(), Some("r"));
}

#[test]
fn listener_rules_name_the_field() {
    let mut l = listener_rds_message("l", "r");
    edit_hcm(&mut l, |h| h.http_filters.clear());
    assert_eq!(
        rejected_field(XdsType::Listener, &to_any(&l)),
        "api_listener.api_listener.http_filters"
    );

    let mut l = listener_rds_message("l", "r");
    edit_hcm(&mut l, |h| {
        h.http_filters[0].config_type = Some(
        envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(to_any(&route_config_message("x", "y"))))
    });
    assert_eq!(
        rejected_field(XdsType::Listener, &to_any(&l)),
        "api_listener.api_listener.http_filters[0].typed_config"
    );

    let mut l = listener_rds_message("l", "r");
    edit_hcm(&mut l, |h| {
        if let Some(RouteSpecifier::Rds(rds)) = &mut h.route_specifier {
            rds.config_source.as_mut().unwrap().config_source_specifier = Some(
                ConfigSourceSpecifier::PathConfigSource(PathConfigSource::default()),
            );
        }
    });
    assert_eq!(
        rejected_field(XdsType::Listener, &to_any(&l)),
        "api_listener.api_listener.rds.config_source"
    );

    let mut l = listener_rds_message("l", "r");
    edit_hcm(&mut l, |h| h.route_specifier = None);
    assert_eq!(
        rejected_field(XdsType::Listener, &to_any(&l)),
        "api_listener.api_listener.route_specifier"
    );

    let mut l = listener_rds_message("l", "r");
    l.api_listener.as_mut().unwrap().api_listener = Some(route_config("x", "y"));
    assert_eq!(
        rejected_field(XdsType::Listener, &to_any(&l)),
        "api_listener.api_listener"
    );
}

#[test]
fn inline_route_errors_carry_the_full_path() {
    let rc = route_config_with(
        "in",
        vec![prefix_route("/", weighted(&[("a", 0), ("b", 0)]))],
    );
    assert_eq!(
        rejected_field(XdsType::Listener, &listener_inline("l", rc)),
        "api_listener.api_listener.route_config.virtual_hosts[0].routes[0].route.weighted_clusters"
    );
}

#[test]
fn route_rules_name_the_field() {
    let rc = route_config_with("r", vec![prefix_route("/", weighted(&[]))]);
    assert_eq!(
        rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
        "virtual_hosts[0].routes[0].route.weighted_clusters.clusters"
    );
    let rc = route_config_with(
        "r",
        vec![prefix_route("/", weighted(&[("a", u32::MAX), ("b", 1)]))],
    );
    assert_eq!(
        rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
        "virtual_hosts[0].routes[0].route.weighted_clusters"
    );
    let mut rc = route_config_message("r", "c");
    rc.virtual_hosts[0].routes[0]
        .r#match
        .as_mut()
        .unwrap()
        .path_specifier = Some(PathSpecifier::SafeRegex(RegexMatcher {
        regex: "(".into(),
        ..Default::default()
    }));
    assert_eq!(
        rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
        "virtual_hosts[0].routes[0].match.safe_regex.regex"
    );
    for bad in ["/api/", "/a?b", "/a#b", "/"] {
        let mut rc = route_config_message("r", "c");
        rc.virtual_hosts[0].routes[0]
            .r#match
            .as_mut()
            .unwrap()
            .path_specifier = Some(PathSpecifier::PathSeparatedPrefix(bad.into()));
        assert_eq!(
            rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
            "virtual_hosts[0].routes[0].match.path_separated_prefix",
            "{bad}"
        );
    }
    let mut rc = route_config_message("r", "c");
    rc.virtual_hosts[0].domains = vec!["a.*.b".into()];
    assert_eq!(
        rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
        "virtual_hosts[0].domains[0]"
    );
    let mut rc = route_config_message("r", "c");
    rc.virtual_hosts[0].routes[0].action = None;
    assert_eq!(
        rejected_field(XdsType::RouteConfiguration, &to_any(&rc)),
        "virtual_hosts[0].routes[0].action"
    );
}

#[test]
fn route_configuration_references_each_cluster_once() {
    let rc = route_config_with(
        "r",
        vec![
            prefix_route("/a", weighted(&[("x", 1), ("y", 1)])),
            prefix_route("/", weighted(&[("x", 2)])),
        ],
    );
    let refs = valid(XdsType::RouteConfiguration, &to_any(&rc)).references();
    assert_eq!(
        refs,
        [
            (XdsType::Cluster, "x".to_owned()),
            (XdsType::Cluster, "y".to_owned())
        ]
    );
}

#[test]
fn cluster_rules() {
    let r = valid(XdsType::Cluster, &cluster_eds("c", None));
    assert_eq!(
        r.references(),
        [(XdsType::ClusterLoadAssignment, "c".to_owned())]
    );
    let mut c = cluster_eds_message("c", None);
    c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
    assert_eq!(rejected_field(XdsType::Cluster, &to_any(&c)), "type");
    let mut c = cluster_eds_message("c", None);
    c.eds_cluster_config.as_mut().unwrap().eds_config = None;
    assert_eq!(
        rejected_field(XdsType::Cluster, &to_any(&c)),
        "eds_cluster_config.eds_config"
    );
    let mut c = cluster_eds_message("c", None);
    c.lb_policy = LbPolicy::Maglev as i32;
    assert_eq!(rejected_field(XdsType::Cluster, &to_any(&c)), "lb_policy");
    c.lb_policy = LbPolicy::RingHash as i32;
    valid(XdsType::Cluster, &to_any(&c));
}

#[test]
fn endpoint_rules() {
    let addr = "10.0.0.1:8080".parse().unwrap();
    valid(XdsType::ClusterLoadAssignment, &endpoints("e", &[addr]));
    let mut cla = endpoints_message("e", &[addr]);
    if let Some(HostIdentifier::Endpoint(ep)) =
        &mut cla.endpoints[0].lb_endpoints[0].host_identifier
    {
        if let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
            &mut ep.address.as_mut().unwrap().address
        {
            sa.port_specifier = Some(PortSpecifier::PortValue(70000));
        }
    }
    assert_eq!(
        rejected_field(XdsType::ClusterLoadAssignment, &to_any(&cla)),
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"
    );
    let mut cla = endpoints_message("e", &[addr]);
    cla.endpoints[0].priority = 1;
    assert_eq!(
        rejected_field(XdsType::ClusterLoadAssignment, &to_any(&cla)),
        "endpoints"
    );
}

#[test]
fn wrapped_resources_are_unwrapped() {
    let wrapped = to_any(&Wrapper {
        name: "l".into(),
        resource: Some(listener_rds("l", "r")),
        ..Wrapper::default()
    });
    assert!(matches!(decode(XdsType::Listener, 0, &wrapped), Decoded::Valid(n, _) if n == "l"));
}

#[test]
fn errors_display_name_and_path() {
    let err = match decode(XdsType::Listener, 0, &listener_rds("l", "")) {
        Decoded::Invalid(_, e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(err.name(), Some("l"));
    assert_eq!(
        err.to_string(),
        "resource l: api_listener.api_listener.rds.route_config_name: empty"
    );
}
