//! The sidecar shape: what istiod's Envoy generator sends a node without `GENERATOR: grpc`,
//! from the same model as the proxyless shape.
//!
//! - An outbound listener per service port, `0.0.0.0_PORT` (not bound: in a pod, iptables
//!   sends traffic to it), whose HttpConnectionManager takes the route configuration named
//!   by the port from RDS, and whose default chain passes unknown traffic through.
//! - A route configuration per port, `PORT`, holding the virtual hosts of every service on
//!   that port (domains made unique across them), and `allow_any` (`*`) to
//!   `PassthroughCluster`.
//! - Clusters as in the proxyless shape, with TLS contexts naming istiod's SDS secrets
//!   (`default`, the workload certificate; `ROOTCA`, the mesh roots) instead of certificate
//!   provider instances, plus `PassthroughCluster` (ORIGINAL_DST).
//! - `virtualInbound` (0.0.0.0:15006, original destination): per workload address a filter
//!   chain matched by destination port and address carrying the PeerAuthentication mode
//!   (TLS with the SDS secrets, plaintext, or both) and the AuthorizationPolicies as RBAC;
//!   the black-hole chain for 15006 itself.
//!
//! SDS secrets are named without an `sds_config`: an Envoy takes them from its bootstrap's
//! static secrets (the Istio agent serves them over a Unix socket instead), and the mesh's
//! sidecar shape maps them to its certificate provider instance `default`.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3 as cpb;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, transport_socket, Address, CidrRange, SocketAddress, TrafficDirection,
    TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3 as rpb;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use mesh_core::inbound::InboundPolicy;
use mesh_core::Snapshot;
use mesh_xds_client::resource::to_any;
use prost::{Message, Name};

use super::InboundWorkload;

/// Istio's cluster for traffic it knows nothing about.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// Istio's cluster that drops traffic.
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// The sidecar-shaped resources: listeners and route configurations (names of their own),
/// and the clusters that replace the proxyless ones for sidecar nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarResources {
    /// `0.0.0.0_PORT` and `virtualInbound`.
    pub listeners: BTreeMap<String, Any>,
    /// `PORT`.
    pub routes: BTreeMap<String, Any>,
    /// Every cluster, TLS naming SDS secrets, plus `PassthroughCluster`.
    pub clusters: BTreeMap<String, Any>,
}

/// Builds the sidecar shape of `s` (its outbound side) and `inbound` (every workload).
pub fn sidecar_resources(
    s: &Snapshot,
    inbound: &[InboundWorkload],
    catch_all: &InboundPolicy,
) -> SidecarResources {
    let mut out = SidecarResources::default();
    // Route configurations used per port.
    let mut by_port: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for l in s.outbound_listeners() {
        if let Some(port) = l
            .target()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        {
            by_port
                .entry(port)
                .or_default()
                .insert(l.route_config_name().to_owned());
        }
    }
    for (port, rc_names) in &by_port {
        let name = port.to_string();
        let mut seen_domains = BTreeSet::new();
        let mut virtual_hosts = Vec::new();
        for rc_name in rc_names {
            let Some(rc) = s.route_config(rc_name) else {
                continue;
            };
            for mut vh in super::route::route_config(rc).virtual_hosts {
                vh.name = format!("{rc_name}/{}", vh.name);
                vh.domains.retain(|d| seen_domains.insert(d.clone()));
                if !vh.domains.is_empty() {
                    virtual_hosts.push(vh);
                }
            }
        }
        virtual_hosts.push(allow_any());
        let rc = rpb::RouteConfiguration {
            name: name.clone(),
            virtual_hosts,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        };
        out.routes.insert(name.clone(), to_any(&rc));
        let l = outbound_listener(*port, &name);
        out.listeners.insert(l.name.clone(), to_any(&l));
    }
    for c in s.clusters() {
        let mut pb = super::cluster::cluster(c);
        if let Some(ts) = pb.transport_socket.as_mut() {
            upstream_to_sds(ts);
        }
        out.clusters.insert(pb.name.clone(), to_any(&pb));
    }
    let passthrough = cpb::Cluster {
        name: PASSTHROUGH.to_owned(),
        cluster_discovery_type: Some(cpb::cluster::ClusterDiscoveryType::Type(
            cpb::cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cpb::cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(super::duration(std::time::Duration::from_secs(10))),
        ..Default::default()
    };
    out.clusters
        .insert(PASSTHROUGH.to_owned(), to_any(&passthrough));
    let blackhole = cpb::Cluster {
        name: BLACKHOLE.to_owned(),
        cluster_discovery_type: Some(cpb::cluster::ClusterDiscoveryType::Type(
            cpb::cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(super::duration(std::time::Duration::from_secs(10))),
        ..Default::default()
    };
    out.clusters
        .insert(BLACKHOLE.to_owned(), to_any(&blackhole));
    for w in inbound {
        let c = inbound_cluster(w.addr.port());
        out.clusters.insert(c.name.clone(), to_any(&c));
    }
    let vi = virtual_inbound(inbound, catch_all);
    out.listeners.insert(vi.name.clone(), to_any(&vi));
    out
}

fn socket(ip: &str, port: u16) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    })
}

fn network_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(config))),
    }
}

fn tcp_proxy(cluster: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        &TcpProxy {
            stat_prefix: cluster.to_owned(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        },
    )
}

fn allow_any() -> rpb::VirtualHost {
    rpb::VirtualHost {
        name: "allow_any".to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![rpb::Route {
            name: "allow_any".to_owned(),
            r#match: Some(rpb::RouteMatch {
                path_specifier: Some(rpb::route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(rpb::route::Action::Route(rpb::RouteAction {
                cluster_specifier: Some(rpb::route_action::ClusterSpecifier::Cluster(
                    PASSTHROUGH.to_owned(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        }],
        // As istiod's `allow_any`.
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// `0.0.0.0_PORT`: HTTP from RDS `PORT`, everything else passed through.
fn outbound_listener(port: u16, rds: &str) -> Listener {
    let proxyless = super::listener(&format!("0.0.0.0_{port}"), rds);
    let hcm = proxyless
        .api_listener
        .and_then(|a| a.api_listener)
        .and_then(|any| HttpConnectionManager::decode(any.value.as_slice()).ok())
        .unwrap_or_default();
    Listener {
        name: format!("0.0.0.0_{port}"),
        address: socket("0.0.0.0", port),
        traffic_direction: TrafficDirection::Outbound as i32,
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![FilterChain {
            name: format!("0.0.0.0_{port}"),
            filters: vec![network_filter(
                "envoy.filters.network.http_connection_manager",
                &hcm,
            )],
            ..Default::default()
        }],
        default_filter_chain: Some(FilterChain {
            name: "PassthroughFilterChain".to_owned(),
            filters: vec![tcp_proxy(PASSTHROUGH)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `virtualInbound`: per workload address, chains by destination port and address.
fn virtual_inbound(workloads: &[InboundWorkload], catch_all: &InboundPolicy) -> Listener {
    let mut chains = vec![FilterChain {
        name: "virtualInbound-blackhole".to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value { value: 15006 }),
            ..Default::default()
        }),
        filters: vec![tcp_proxy(BLACKHOLE)],
        ..Default::default()
    }];
    for w in workloads {
        // The proxyless listener's chains carry the mode and RBAC; re-home them.
        let proxyless = super::inbound::listener(w.addr, &w.policy);
        for mut chain in proxyless.filter_chains {
            let m = chain
                .filter_chain_match
                .get_or_insert_with(Default::default);
            m.destination_port = Some(UInt32Value {
                value: u32::from(w.addr.port()),
            });
            m.prefix_ranges = vec![CidrRange {
                address_prefix: w.addr.ip().to_string(),
                prefix_len: Some(UInt32Value {
                    value: if w.addr.is_ipv4() { 32 } else { 128 },
                }),
            }];
            if let Some(ts) = chain.transport_socket.as_mut() {
                downstream_to_sds(ts);
            }
            chain.name = format!("{}_{}", w.addr.ip(), w.addr.port());
            // Envoy routes inbound requests to the local application's cluster.
            route_all_to(&mut chain, &inbound_cluster_name(w.addr.port()));
            chains.push(chain);
        }
    }
    let listener_filter = |name: &str, config: Any| ListenerFilter {
        name: name.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    // Ports no service declares: the namespace's policy, passed through to the
    // destination, as Istio's `virtualInbound-catchall-http` chains.
    let any: std::net::SocketAddr = ([0, 0, 0, 0], 15006).into();
    for mut chain in super::inbound::listener(any, catch_all).filter_chains {
        if let Some(ts) = chain.transport_socket.as_mut() {
            downstream_to_sds(ts);
        }
        let tls = chain.transport_socket.is_some();
        chain.name = format!(
            "virtualInbound-catchall-http{}",
            if tls { "-tls" } else { "" }
        );
        route_all_to(&mut chain, PASSTHROUGH);
        chains.push(chain);
    }
    Listener {
        name: "virtualInbound".to_owned(),
        address: socket("0.0.0.0", 15006),
        traffic_direction: TrafficDirection::Inbound as i32,
        use_original_dst: Some(BoolValue { value: true }),
        listener_filters: vec![
            listener_filter(
                "envoy.filters.listener.original_dst",
                to_any(&OriginalDst::default()),
            ),
            listener_filter(
                "envoy.filters.listener.tls_inspector",
                to_any(&TlsInspector::default()),
            ),
        ],
        filter_chains: chains,
        ..Default::default()
    }
}

/// Points every route of the chain's HttpConnectionManager at `cluster`.
fn route_all_to(chain: &mut FilterChain, cluster: &str) {
    let Some(hcm) = chain
        .filters
        .iter_mut()
        .find_map(|f| match &mut f.config_type {
            Some(filter::ConfigType::TypedConfig(any))
                if any.type_url == HttpConnectionManager::type_url() =>
            {
                Some(any)
            }
            _ => None,
        })
    else {
        return;
    };
    let Ok(mut h) = HttpConnectionManager::decode(hcm.value.as_slice()) else {
        return;
    };
    if let Some(RouteSpecifier::RouteConfig(rc)) = h.route_specifier.as_mut() {
        rc.name = cluster.to_owned();
        for route in rc
            .virtual_hosts
            .iter_mut()
            .flat_map(|v| v.routes.iter_mut())
        {
            route.action = Some(rpb::route::Action::Route(rpb::RouteAction {
                cluster_specifier: Some(rpb::route_action::ClusterSpecifier::Cluster(
                    cluster.to_owned(),
                )),
                ..Default::default()
            }));
        }
    }
    *hcm = to_any(&h);
}

/// Istio's name for the cluster of the local application on `port`.
fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// `inbound|PORT||`: the application behind the sidecar, on the pod's loopback.
fn inbound_cluster(port: u16) -> cpb::Cluster {
    use envoy_types::pb::envoy::config::endpoint::v3 as epb;
    cpb::Cluster {
        name: inbound_cluster_name(port),
        cluster_discovery_type: Some(cpb::cluster::ClusterDiscoveryType::Type(
            cpb::cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(super::duration(std::time::Duration::from_secs(10))),
        load_assignment: Some(epb::ClusterLoadAssignment {
            cluster_name: inbound_cluster_name(port),
            endpoints: vec![epb::LocalityLbEndpoints {
                lb_endpoints: vec![epb::LbEndpoint {
                    host_identifier: Some(epb::lb_endpoint::HostIdentifier::Endpoint(
                        epb::Endpoint {
                            address: socket("127.0.0.1", port),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_owned(),
        sds_config: None,
    }
}

/// A TLS context naming provider instances -> the same naming istiod's SDS secrets.
fn common_to_sds(common: &mut tls::CommonTlsContext) {
    use tls::common_tls_context::ValidationContextType;
    if common.tls_certificate_provider_instance.take().is_some() {
        common.tls_certificate_sds_secret_configs = vec![sds("default")];
    }
    if let Some(ValidationContextType::ValidationContext(v)) = &mut common.validation_context_type {
        if v.ca_certificate_provider_instance.take().is_some() {
            let default = v.clone();
            common.validation_context_type =
                Some(ValidationContextType::CombinedValidationContext(
                    tls::common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(default),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ));
        }
    }
}

fn rewrite<M: Message + Name + Default>(ts: &mut TransportSocket, edit: impl FnOnce(&mut M)) {
    if let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type {
        if any.type_url == M::type_url() {
            if let Ok(mut ctx) = M::decode(any.value.as_slice()) {
                edit(&mut ctx);
                *any = to_any(&ctx);
            }
        }
    }
}

fn upstream_to_sds(ts: &mut TransportSocket) {
    rewrite::<tls::UpstreamTlsContext>(ts, |ctx| {
        if let Some(c) = ctx.common_tls_context.as_mut() {
            common_to_sds(c);
        }
    });
}

fn downstream_to_sds(ts: &mut TransportSocket) {
    rewrite::<tls::DownstreamTlsContext>(ts, |ctx| {
        if let Some(c) = ctx.common_tls_context.as_mut() {
            common_to_sds(c);
        }
    });
}

/// Whether a listener name is the sidecar shape's (`0.0.0.0_PORT`, `virtualInbound`).
pub fn is_sidecar_listener(name: &str) -> bool {
    name == "virtualInbound" || name.starts_with("0.0.0.0_")
}
