//! Small, valid Envoy resources for tests, packed as `Any`.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, AggregatedConfigSource, ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, ApiListener, Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, weighted_cluster::ClusterWeight, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};

use crate::resource::to_any;

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    })
}

fn api_listener(name: &str, route_specifier: RouteSpecifier) -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(route_specifier),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
                &Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(to_any(&hcm)),
        }),
        ..Listener::default()
    }
}

/// A client listener whose routes come from RDS under `route_name`.
pub fn listener_rds_message(name: &str, route_name: &str) -> Listener {
    api_listener(
        name,
        RouteSpecifier::Rds(Rds {
            config_source: ads(),
            route_config_name: route_name.into(),
        }),
    )
}

/// [`listener_rds_message`] packed.
pub fn listener_rds(name: &str, route_name: &str) -> Any {
    to_any(&listener_rds_message(name, route_name))
}

/// A client listener with its routes inline.
pub fn listener_inline(name: &str, routes: RouteConfiguration) -> Any {
    to_any(&api_listener(name, RouteSpecifier::RouteConfig(routes)))
}

/// A gRFC A36 server listener for `addr` (named by Istio's template
/// `xds.istio.io/grpc/lds/inbound/IP:PORT`): one plaintext filter chain whose HTTP
/// connection manager routes everything (inline, as istiod sends it) with the router
/// filter only; no TLS, no RBAC.
pub fn inbound_listener_plaintext(addr: SocketAddr) -> Any {
    let routes = route_config_with(
        "inbound",
        vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..RouteMatch::default()
            }),
            action: Some(route::Action::NonForwardingAction(
                envoy_types::pb::envoy::config::route::v3::NonForwardingAction::default(),
            )),
            ..Route::default()
        }],
    );
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
                &Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    let listener = Listener {
        name: format!("xds.istio.io/grpc/lds/inbound/{addr}"),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                ..FilterChainMatch::default()
            }),
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    };
    to_any(&listener)
}

/// A route with a prefix match.
pub fn prefix_route(prefix: &str, action: route_action::ClusterSpecifier) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(action),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// Weighted clusters for [`prefix_route`].
pub fn weighted(clusters: &[(&str, u32)]) -> route_action::ClusterSpecifier {
    route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(name, weight)| ClusterWeight {
                name: (*name).into(),
                weight: Some(UInt32Value { value: *weight }),
                ..ClusterWeight::default()
            })
            .collect(),
        ..WeightedCluster::default()
    })
}

/// A route configuration: one virtual host for `*` with these routes.
pub fn route_config_with(name: &str, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// A route configuration sending everything to `cluster`.
pub fn route_config_message(name: &str, cluster: &str) -> RouteConfiguration {
    route_config_with(
        name,
        vec![prefix_route(
            "/",
            route_action::ClusterSpecifier::Cluster(cluster.into()),
        )],
    )
}

/// [`route_config_message`] packed.
pub fn route_config(name: &str, cluster: &str) -> Any {
    to_any(&route_config_message(name, cluster))
}

/// An EDS cluster; its endpoints are under `service_name`, or its own name.
pub fn cluster_eds_message(name: &str, service_name: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: ads(),
            service_name: service_name.unwrap_or_default().into(),
        }),
        ..Cluster::default()
    }
}

/// [`cluster_eds_message`] packed.
pub fn cluster_eds(name: &str, service_name: Option<&str>) -> Any {
    to_any(&cluster_eds_message(name, service_name))
}

/// Endpoints at these addresses, in one locality.
pub fn endpoints_message(name: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    let lb_endpoints = addrs
        .iter()
        .map(|addr| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            addr.port(),
                        ))),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            ..LbEndpoint::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// [`endpoints_message`] packed.
pub fn endpoints(name: &str, addrs: &[SocketAddr]) -> Any {
    to_any(&endpoints_message(name, addrs))
}

/// A state-of-the-world response of type `t` carrying `resources`; its nonce is `version`.
pub fn sotw_response(
    t: crate::resource::XdsType,
    version: &str,
    resources: Vec<Any>,
) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
    envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: version.into(),
        ..Default::default()
    }
}

/// A delta response of type `t` carrying these named resources, each versioned
/// `NAME-NONCE`.
pub fn delta_response(
    t: crate::resource::XdsType,
    nonce: &str,
    resources: Vec<(String, Any)>,
) -> envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    DeltaDiscoveryResponse {
        resources: resources
            .into_iter()
            .map(|(name, any)| Resource {
                version: format!("{name}-{nonce}"),
                name,
                resource: Some(any),
                ..Resource::default()
            })
            .collect(),
        type_url: t.type_url().into(),
        nonce: nonce.into(),
        ..DeltaDiscoveryResponse::default()
    }
}

/// Cluster `c{i}`'s `per_cluster` endpoints on port 8080, for scale tests: distinct per
/// cluster (up to 65,536 clusters); `shift` moves them (a changed assignment).
pub fn scale_endpoints(i: usize, per_cluster: usize, shift: usize) -> Any {
    let [a, b] = u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes();
    let addrs: Vec<SocketAddr> = (0..per_cluster)
        .map(|e| {
            let last = u8::try_from(e + shift).unwrap_or(u8::MAX);
            SocketAddr::from(([10, a, b, last], 8080))
        })
        .collect();
    endpoints(&format!("c{i}"), &addrs)
}
