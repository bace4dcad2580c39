use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use mesh_core::route::RouteAction;
use prost::Message;

use super::*;
use crate::resource::{
    to_any, ClusterResource, EndpointsResource, ListenerResource, ResourceType,
    RouteConfigurationResource,
};
use crate::testing::fixtures::*;

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::RouteConfiguration;
const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::ClusterLoadAssignment;

fn put(cache: &mut ResourceCache, t: XdsType, name: &str, resource: Option<Resource>) {
    let entry = cache.insert_requested(t, name);
    entry.state = if resource.is_some() {
        ResourceState::Acked
    } else {
        ResourceState::DoesNotExist
    };
    entry.resource = resource;
}

fn full_cache() -> ResourceCache {
    let mut cache = ResourceCache::default();
    let l = ListenerResource::validate(listener_rds_message("xds:///svc:80", "routes")).unwrap();
    put(&mut cache, LDS, "xds:///svc:80", Some(l.into_resource()));
    let rc = RouteConfigurationResource::validate(route_config_message("routes", "c")).unwrap();
    put(&mut cache, RDS, "routes", Some(rc.into_resource()));
    let c = ClusterResource::validate(cluster_eds_message("c", Some("c-eds"))).unwrap();
    put(&mut cache, CDS, "c", Some(c.into_resource()));
    let e = EndpointsResource::validate(endpoints_message(
        "c-eds",
        &["10.0.0.1:80".parse().unwrap()],
    ))
    .unwrap();
    put(&mut cache, EDS, "c-eds", Some(e.into_resource()));
    cache
}

#[test]
fn complete_cascade_builds_a_linked_snapshot_keyed_by_target() {
    let cache = full_cache();
    let mut a = SnapshotAssembler::new("xds:///%s");
    assert_eq!(a.target_of("xds:///svc:80"), "svc:80");
    let s = a.assemble(["xds:///svc:80"], &cache, "v1").unwrap();
    assert_eq!(s.version(), "v1");
    let l = s.outbound("svc:80").unwrap();
    assert_eq!(l.route_config_name(), "routes");
    assert!(l.route_config().is_some());
    s.validate().unwrap();
    assert_eq!(
        s.endpoints_of(s.cluster("c").unwrap())
            .unwrap()
            .endpoints()
            .count(),
        1
    );

    // Assembling again reuses the cached Arcs: nothing is translated twice.
    let again = a.assemble(["xds:///svc:80"], &cache, "v1").unwrap();
    assert!(Arc::ptr_eq(
        s.route_config("routes").unwrap(),
        again.route_config("routes").unwrap()
    ));
    assert!(Arc::ptr_eq(
        s.cluster("c").unwrap(),
        again.cluster("c").unwrap()
    ));
}

#[test]
fn every_pending_step_of_the_cascade_blocks_the_snapshot() {
    for (t, name) in [
        (LDS, "xds:///svc:80"),
        (RDS, "routes"),
        (CDS, "c"),
        (EDS, "c-eds"),
    ] {
        let mut cache = full_cache();
        let entry = cache.get_mut(t, name).unwrap();
        entry.resource = None;
        entry.state = ResourceState::Requested;
        let err = SnapshotAssembler::new("xds:///%s")
            .assemble(["xds:///svc:80"], &cache, "")
            .unwrap_err();
        assert_eq!((err.xds_type, err.name.as_str()), (t, name));
    }
}

#[test]
fn absent_resources_complete_the_cascade() {
    let mut cache = full_cache();
    put(&mut cache, EDS, "c-eds", None);
    let s = SnapshotAssembler::new("%s")
        .assemble(["xds:///svc:80"], &cache, "")
        .unwrap();
    assert!(s.cluster("c").is_some() && s.endpoints("c-eds").is_none());

    put(&mut cache, RDS, "routes", None);
    let s = SnapshotAssembler::new("%s")
        .assemble(["xds:///svc:80"], &cache, "")
        .unwrap();
    assert!(s
        .outbound("xds:///svc:80")
        .unwrap()
        .route_config()
        .is_none());

    put(&mut cache, LDS, "xds:///svc:80", None);
    let s = SnapshotAssembler::new("%s")
        .assemble(["xds:///svc:80"], &cache, "")
        .unwrap();
    assert!(s.outbound("xds:///svc:80").is_none());
}

fn listener_with_fault(name: &str) -> ListenerResource {
    let mut l = listener_rds_message(name, "routes");
    let api = l.api_listener.as_mut().unwrap();
    let mut hcm =
        HttpConnectionManager::decode(api.api_listener.as_ref().unwrap().value.as_slice()).unwrap();
    let delay = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(PbDuration {
                seconds: 2,
                nanos: 0,
            })),
            percentage: None,
        }),
        ..HttpFault::default()
    };
    hcm.http_filters = vec![
        HttpFilter {
            name: "fault".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(&delay))),
            ..HttpFilter::default()
        },
        HttpFilter {
            name: "router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
                &Router::default(),
            ))),
            ..HttpFilter::default()
        },
    ];
    hcm.common_http_protocol_options = Some(Default::default());
    if let Some(o) = hcm.common_http_protocol_options.as_mut() {
        o.max_stream_duration = Some(PbDuration {
            seconds: 9,
            nanos: 0,
        });
    }
    api.api_listener = Some(to_any(&hcm));
    ListenerResource::validate(l).unwrap()
}

#[test]
fn the_listener_filters_apply_to_its_routes() {
    let mut cache = full_cache();
    // A virtual host with host-wide settings, which the derived configuration keeps.
    let mut routes = route_config_message("routes", "c");
    let vh = &mut routes.virtual_hosts[0];
    vh.include_request_attempt_count = true;
    vh.response_headers_to_remove = vec!["server".into()];
    vh.retry_policy = Some(envoy_types::pb::envoy::config::route::v3::RetryPolicy {
        retry_on: "5xx".into(),
        ..Default::default()
    });
    let source = crate::translate::route_config(&routes).unwrap();
    put(
        &mut cache,
        RDS,
        "routes",
        Some(
            RouteConfigurationResource::validate(routes)
                .unwrap()
                .into_resource(),
        ),
    );
    put(
        &mut cache,
        LDS,
        "xds:///svc:80",
        Some(listener_with_fault("xds:///svc:80").into_resource()),
    );
    let mut a = SnapshotAssembler::new("xds:///%s");
    let s = a.assemble(["xds:///svc:80"], &cache, "").unwrap();
    let rc = s
        .outbound("svc:80")
        .unwrap()
        .route_config()
        .unwrap()
        .clone();
    assert_eq!(rc.name(), "routes@xds:///svc:80");
    // Everything but the routes as the source had it.
    let (derived, want) = (&rc.virtual_hosts()[0], &source.virtual_hosts()[0]);
    assert!(derived.includes_request_attempt_count());
    assert_eq!(&derived.with_routes(want.routes().to_vec()), want);
    let route = &rc.virtual_hosts()[0].routes()[0];
    let delay = route.fault().unwrap().delay.as_ref().unwrap();
    assert_eq!(delay.fixed, Some(Duration::from_secs(2)));
    let RouteAction::Forward(f) = route.action() else {
        panic!()
    };
    assert_eq!(
        f.max_stream_duration.max,
        Some(Duration::from_secs(9)),
        "gRFC A31 fallback"
    );

    // Unchanged inputs: the derived configuration is reused.
    let again = a.assemble(["xds:///svc:80"], &cache, "").unwrap();
    assert!(Arc::ptr_eq(
        &rc,
        again.outbound("svc:80").unwrap().route_config().unwrap()
    ));
}

#[test]
fn server_listeners_become_inbound_policies_by_address() {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
    use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;

    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config_message(
            "inbound", "x",
        ))),
        http_filters: vec![HttpFilter {
            name: "router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
                &Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    let name = "xds.istio.io/grpc/lds/inbound/0.0.0.0:8080";
    let l = Listener {
        name: name.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "hcm".into(),
                config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    };
    let mut cache = full_cache();
    put(
        &mut cache,
        LDS,
        name,
        Some(ListenerResource::validate(l).unwrap().into_resource()),
    );
    let s = SnapshotAssembler::new("xds:///%s")
        .assemble(["xds:///svc:80", name], &cache, "")
        .unwrap();
    let inbound = s.inbound_for("10.1.2.3:8080".parse().unwrap()).unwrap();
    assert_eq!(inbound.default_mode, mesh_core::inbound::TlsMode::Disable);
    assert!(s.inbound_for("10.1.2.3:9090".parse().unwrap()).is_none());
    assert!(
        s.outbound("svc:80").is_some(),
        "outbound and inbound in one snapshot"
    );
}
