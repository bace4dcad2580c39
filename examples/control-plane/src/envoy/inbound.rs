//! Inbound (server) listeners, as istiod sends them to proxyless gRPC servers (gRFC A36):
//! one per workload address, named `xds.istio.io/grpc/lds/inbound/IP:PORT`, whose filter
//! chains carry the PeerAuthentication mode (mutual TLS from the `default` certificate
//! provider instance, plaintext, or both) and whose HTTP filters carry the
//! AuthorizationPolicies as RBAC.

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, transport_socket, Address, CidrRange, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as rpb;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3::{path_matcher, PathMatcher};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::rbac::{Authorization, Permission, Principal, RbacAction};
use mesh_xds_client::resource::to_any;

use super::route::{header_matcher, string_matcher};

/// The listener name template istiod and the gRPC agent use.
pub const INBOUND_PREFIX: &str = "xds.istio.io/grpc/lds/inbound/";

/// The inbound listener of `addr` under `policy`.
pub fn listener(addr: SocketAddr, policy: &InboundPolicy) -> Listener {
    let hcm = to_any(&hcm(addr, &policy.authorization));
    let chain = |tls: Option<TransportSocket>, protocol: &str| FilterChain {
        name: format!("inbound|{}|{protocol}", addr.port()),
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: protocol.to_owned(),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(hcm.clone())),
        }],
        transport_socket: tls,
        ..Default::default()
    };
    let filter_chains = match policy.mode_for_port(addr.port()) {
        TlsMode::Disable => vec![chain(None, "raw_buffer")],
        TlsMode::Permissive => vec![
            chain(Some(downstream_tls()), "tls"),
            chain(None, "raw_buffer"),
        ],
        // STRICT, and any mode added later: mutual TLS only (fail closed).
        _ => vec![chain(Some(downstream_tls()), "tls")],
    };
    Listener {
        name: format!("{INBOUND_PREFIX}{addr}"),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        filter_chains,
        ..Default::default()
    }
}

fn downstream_tls() -> TransportSocket {
    use tls::common_tls_context::ValidationContextType;
    let provider = |cert: &str| tls::CertificateProviderPluginInstance {
        instance_name: "default".to_owned(),
        certificate_name: cert.to_owned(),
    };
    let ctx = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_provider_instance: Some(provider("default")),
            validation_context_type: Some(ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    ca_certificate_provider_instance: Some(provider("ROOTCA")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}

fn hcm(addr: SocketAddr, authz: &Authorization) -> HttpConnectionManager {
    let filter = |name: String, config: Any| HttpFilter {
        name,
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let mut http_filters: Vec<HttpFilter> = authz
        .engines
        .iter()
        .enumerate()
        .map(|(i, engine)| {
            let deny = engine.action == RbacAction::Deny;
            let rules = rbac::Rbac {
                action: if deny {
                    rbac::rbac::Action::Deny as i32
                } else {
                    rbac::rbac::Action::Allow as i32
                },
                policies: engine
                    .policies
                    .iter()
                    .map(|(name, p)| {
                        let policy = rbac::Policy {
                            permissions: p
                                .permissions
                                .iter()
                                .map(|x| permission(x, deny))
                                .collect(),
                            principals: p.principals.iter().map(|x| principal(x, deny)).collect(),
                            ..Default::default()
                        };
                        (name.clone(), policy)
                    })
                    .collect::<HashMap<_, _>>(),
                ..Default::default()
            };
            let config = RbacFilter {
                rules: Some(rules),
                ..Default::default()
            };
            filter(format!("envoy.filters.http.rbac.{i}"), to_any(&config))
        })
        .collect();
    http_filters.push(filter(
        "envoy.filters.http.router".to_owned(),
        to_any(&Router::default()),
    ));
    HttpConnectionManager {
        stat_prefix: format!("inbound|{}", addr.port()),
        route_specifier: Some(RouteSpecifier::RouteConfig(rpb::RouteConfiguration {
            name: format!("inbound|{addr}"),
            virtual_hosts: vec![rpb::VirtualHost {
                name: "inbound|http".to_owned(),
                domains: vec!["*".to_owned()],
                routes: vec![rpb::Route {
                    r#match: Some(rpb::RouteMatch {
                        path_specifier: Some(rpb::route_match::PathSpecifier::Prefix(
                            "/".to_owned(),
                        )),
                        ..Default::default()
                    }),
                    action: Some(rpb::route::Action::NonForwardingAction(
                        rpb::NonForwardingAction {},
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters,
        ..Default::default()
    }
}

fn cidr(c: &mesh_core::rbac::Cidr) -> CidrRange {
    CidrRange {
        address_prefix: c.addr().to_string(),
        prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value {
            value: u32::from(c.prefix_len()),
        }),
    }
}

fn path(m: &mesh_core::matcher::StringMatcher) -> PathMatcher {
    PathMatcher {
        rule: Some(path_matcher::Rule::Path(string_matcher(m))),
    }
}

/// A rule the model could not evaluate: it matches in a DENY engine and never in an ALLOW
/// one, so it always fails closed.
fn unsupported_permission(deny: bool) -> rbac::Permission {
    use rbac::permission::Rule;
    let any = rbac::Permission {
        rule: Some(Rule::Any(true)),
    };
    if deny {
        any
    } else {
        rbac::Permission {
            rule: Some(Rule::NotRule(Box::new(any))),
        }
    }
}

fn permission(p: &Permission, deny: bool) -> rbac::Permission {
    use rbac::permission::{Rule, Set};
    let set = |v: &[Permission]| Set {
        rules: v.iter().map(|x| permission(x, deny)).collect(),
    };
    let rule = match p {
        Permission::Any => Rule::Any(true),
        Permission::And(v) => Rule::AndRules(set(v)),
        Permission::Or(v) => Rule::OrRules(set(v)),
        // Not of an unsupported rule must still fail closed: invert the polarity inside.
        Permission::Not(inner) => Rule::NotRule(Box::new(permission(inner, !deny))),
        Permission::Header(h) => Rule::Header(header_matcher(h)),
        Permission::UrlPath(m) => Rule::UrlPath(path(m)),
        Permission::DestinationIp(c) => Rule::DestinationIp(cidr(c)),
        Permission::DestinationPort(port) => Rule::DestinationPort(u32::from(*port)),
        Permission::DestinationPortRange(r) => Rule::DestinationPortRange(Int32Range {
            start: i32::from(r.start()),
            end: i32::try_from(r.end()).unwrap_or(i32::MAX),
        }),
        Permission::RequestedServerName(m) => Rule::RequestedServerName(string_matcher(m)),
        _ => return unsupported_permission(deny),
    };
    rbac::Permission { rule: Some(rule) }
}

fn principal(p: &Principal, deny: bool) -> rbac::Principal {
    use rbac::principal::{Authenticated, Identifier, Set};
    let set = |v: &[Principal]| Set {
        ids: v.iter().map(|x| principal(x, deny)).collect(),
    };
    let id = match p {
        Principal::Any => Identifier::Any(true),
        Principal::And(v) => Identifier::AndIds(set(v)),
        Principal::Or(v) => Identifier::OrIds(set(v)),
        Principal::Not(inner) => Identifier::NotId(Box::new(principal(inner, !deny))),
        Principal::Authenticated(m) => Identifier::Authenticated(Authenticated {
            principal_name: m.as_ref().map(string_matcher),
        }),
        Principal::SourceIp(c) => Identifier::DirectRemoteIp(cidr(c)),
        Principal::Header(h) => Identifier::Header(header_matcher(h)),
        Principal::UrlPath(m) => Identifier::UrlPath(path(m)),
        _ => {
            let any = rbac::Principal {
                identifier: Some(Identifier::Any(true)),
            };
            return if deny {
                any
            } else {
                rbac::Principal {
                    identifier: Some(Identifier::NotId(Box::new(any))),
                }
            };
        }
    };
    rbac::Principal {
        identifier: Some(id),
    }
}
