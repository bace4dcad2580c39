//! Listeners: client HTTP filters (A39, A33), server listeners (A36) and RBAC (A41).

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, transport_socket, Address, CidrRange, HttpProtocolOptions,
    SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, principal::Authenticated, rbac::Action, Permission, Policy, Principal,
    Rbac as RbacRules,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CertificateProviderPluginInstance,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use mesh_core::inbound::TlsMode;
use mesh_core::rbac::Request;

use crate::resource::{to_any, ListenerModel, ListenerResource, ResourceType};
use crate::testing::fixtures::{listener_rds_message, route_config_message};
use crate::translate::{ClientListener, ServerListener};

fn filter_of(name: &str, any: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..HttpFilter::default()
    }
}

fn router() -> HttpFilter {
    filter_of("router", to_any(&Router::default()))
}

fn client(filters: Vec<HttpFilter>) -> Result<ClientListener, String> {
    let mut l = listener_rds_message("l", "r");
    let api = l.api_listener.as_mut().unwrap();
    let mut hcm = HttpConnectionManager::decode_from(api.api_listener.as_ref().unwrap());
    hcm.http_filters = filters;
    hcm.common_http_protocol_options = Some(HttpProtocolOptions {
        max_stream_duration: Some(PbDuration {
            seconds: 30,
            nanos: 0,
        }),
        ..HttpProtocolOptions::default()
    });
    api.api_listener = Some(to_any(&hcm));
    match ListenerResource::validate(l) {
        Ok(ListenerResource {
            model: ListenerModel::Client(c),
            ..
        }) => Ok(c),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.field),
    }
}

trait DecodeAny: Sized {
    fn decode_from(any: &Any) -> Self;
}

impl DecodeAny for HttpConnectionManager {
    fn decode_from(any: &Any) -> Self {
        prost::Message::decode(any.value.as_slice()).unwrap()
    }
}

#[test]
fn client_filters_fault_and_router() {
    let delay = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(PbDuration {
                seconds: 1,
                nanos: 0,
            })),
            percentage: None,
        }),
        max_active_faults: Some(UInt32Value { value: 7 }),
        ..HttpFault::default()
    };
    let c = client(vec![filter_of("fault", to_any(&delay)), router()]).unwrap();
    let (name, base) = c.filters.fault.unwrap();
    assert_eq!(name, "fault");
    let base = base.unwrap();
    assert_eq!(base.delay.unwrap().fixed, Some(Duration::from_secs(1)));
    assert_eq!(base.max_active_faults, Some(7));
    assert_eq!(c.max_stream_duration, Some(Duration::from_secs(30)));

    let at = "api_listener.api_listener.http_filters";
    let unknown = Any {
        type_url: "type.googleapis.com/example.Filter".into(),
        value: vec![],
    };
    assert_eq!(
        client(vec![filter_of("x", unknown.clone()), router()]).unwrap_err(),
        format!("{at}[0].typed_config")
    );
    let mut optional = filter_of("x", unknown);
    optional.is_optional = true;
    assert!(client(vec![optional, router()])
        .unwrap()
        .filters
        .fault
        .is_none());
    assert_eq!(
        client(vec![router(), filter_of("fault", to_any(&delay))]).unwrap_err(),
        format!("{at}[0]")
    );
    assert_eq!(
        client(vec![filter_of("fault", to_any(&delay))]).unwrap_err(),
        format!("{at}[0]")
    );
    assert_eq!(client(vec![]).unwrap_err(), at);
    // RBAC is a server-side filter (gRFC A41).
    assert_eq!(
        client(vec![filter_of("rbac", to_any(&Rbac::default())), router()]).unwrap_err(),
        format!("{at}[0].typed_config")
    );
}

fn hcm_with(filters: Vec<HttpFilter>) -> Filter {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config_message(
            "inbound", "x",
        ))),
        http_filters: filters,
        ..HttpConnectionManager::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
    }
}

fn mtls(require: bool) -> TransportSocket {
    let provider = |name: &str| {
        Some(CertificateProviderPluginInstance {
            instance_name: "default".into(),
            certificate_name: name.into(),
        })
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: provider("default"),
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    ca_certificate_provider_instance: provider("ROOTCA"),
                    ..CertificateValidationContext::default()
                },
            )),
            ..CommonTlsContext::default()
        }),
        require_client_certificate: Some(BoolValue { value: require }),
        ..DownstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}

fn chain(tls: Option<TransportSocket>, filters: Vec<HttpFilter>) -> FilterChain {
    let protocol = if tls.is_some() { "tls" } else { "raw_buffer" };
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: protocol.into(),
            ..FilterChainMatch::default()
        }),
        filters: vec![hcm_with(filters)],
        transport_socket: tls,
        ..FilterChain::default()
    }
}

fn server(chains: Vec<FilterChain>) -> Result<ServerListener, String> {
    let l = Listener {
        name: "xds.istio.io/grpc/lds/inbound/0.0.0.0:8080".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: chains,
        ..Listener::default()
    };
    match ListenerResource::validate(l) {
        Ok(ListenerResource {
            model: ListenerModel::Server(s),
            ..
        }) => Ok(s),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.field),
    }
}

#[test]
fn server_tls_modes() {
    let strict = server(vec![chain(Some(mtls(true)), vec![router()])]).unwrap();
    assert_eq!(strict.address, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(strict.policy.default_mode, TlsMode::Strict);
    let disable = server(vec![chain(None, vec![router()])]).unwrap();
    assert_eq!(disable.policy.default_mode, TlsMode::Disable);
    let permissive = server(vec![
        chain(Some(mtls(true)), vec![router()]),
        chain(None, vec![router()]),
    ])
    .unwrap();
    assert_eq!(permissive.policy.default_mode, TlsMode::Permissive);
    assert_eq!(
        server(vec![chain(Some(mtls(false)), vec![router()])]).unwrap_err(),
        "filter_chains"
    );
    // A chain that needs SNI never matches a proxyless server: ignored.
    let mut sni = chain(None, vec![router()]);
    sni.filter_chain_match.as_mut().unwrap().server_names = vec!["x".into()];
    assert_eq!(
        server(vec![chain(Some(mtls(true)), vec![router()]), sni])
            .unwrap()
            .policy
            .default_mode,
        TlsMode::Strict
    );
    // A plaintext chain for some sources only cannot be honoured without opening the rest.
    let mut by_source = chain(None, vec![router()]);
    by_source
        .filter_chain_match
        .as_mut()
        .unwrap()
        .source_prefix_ranges = vec![CidrRange {
        address_prefix: "10.0.0.0".into(),
        prefix_len: Some(UInt32Value { value: 8 }),
    }];
    assert_eq!(
        server(vec![chain(Some(mtls(true)), vec![router()]), by_source]).unwrap_err(),
        "filter_chains[1].filter_chain_match"
    );
    let none = server(vec![]).unwrap();
    assert!(
        !none
            .policy
            .authorization
            .evaluate(&Request::new("GET", "/"))
            .is_allowed(),
        "no chain: refuse all"
    );
}

fn rbac(action: Action, policies: Vec<(&str, Policy)>) -> HttpFilter {
    let rules = RbacRules {
        action: action as i32,
        policies: policies
            .into_iter()
            .map(|(n, p)| (n.to_owned(), p))
            .collect::<HashMap<_, _>>(),
        ..RbacRules::default()
    };
    filter_of(
        "rbac",
        to_any(&Rbac {
            rules: Some(rules),
            ..Rbac::default()
        }),
    )
}

fn allow_principal(spiffe: &str) -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Authenticated(Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(spiffe.into())),
                    ..StringMatcher::default()
                }),
            })),
        }],
        ..Policy::default()
    }
}

const ORDERS: &str = "spiffe://cluster.local/ns/default/sa/orders";

#[test]
fn server_rbac_allows_denies_and_fails_closed() {
    let chains = |filters: Vec<HttpFilter>| {
        vec![
            chain(Some(mtls(true)), filters.clone()),
            chain(None, filters),
        ]
    };
    let s = server(chains(vec![
        rbac(Action::Allow, vec![("orders", allow_principal(ORDERS))]),
        router(),
    ]))
    .unwrap();
    let authz = &s.policy.authorization;
    assert!(authz
        .evaluate(&Request::new("POST", "/pay").with_peer_principal(Some(ORDERS)))
        .is_allowed());
    assert!(!authz
        .evaluate(&Request::new("POST", "/pay").with_peer_principal(Some("spiffe://x/y")))
        .is_allowed());
    assert!(!authz.evaluate(&Request::new("POST", "/pay")).is_allowed());

    // A rule that cannot be evaluated never grants access, and always denies in a DENY engine.
    let metadata = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::SourcedMetadata(Default::default())),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }],
        ..Policy::default()
    };
    let allow = server(chains(vec![
        rbac(Action::Allow, vec![("m", metadata.clone())]),
        router(),
    ]))
    .unwrap();
    assert!(!allow
        .policy
        .authorization
        .evaluate(&Request::new("GET", "/"))
        .is_allowed());
    let deny = server(chains(vec![
        rbac(Action::Deny, vec![("m", metadata)]),
        router(),
    ]))
    .unwrap();
    assert!(!deny
        .policy
        .authorization
        .evaluate(&Request::new("GET", "/"))
        .is_allowed());

    // Chains that disagree on RBAC cannot share one authorization.
    let split = vec![
        chain(
            Some(mtls(true)),
            vec![
                rbac(Action::Allow, vec![("orders", allow_principal(ORDERS))]),
                router(),
            ],
        ),
        chain(None, vec![router()]),
    ];
    assert_eq!(server(split).unwrap_err(), "filter_chains[1]");

    let bad_cidr = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                address_prefix: "not-an-ip".into(),
                prefix_len: None,
            })),
        }],
        ..Policy::default()
    };
    assert_eq!(
        server(vec![chain(None, vec![rbac(Action::Allow, vec![("p", bad_cidr)]), router()])]).unwrap_err(),
        "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.policies[p].principals[0].direct_remote_ip.address_prefix"
    );
}

#[test]
fn server_address_from_the_istio_listener_name() {
    let l = Listener {
        name: "xds.istio.io/grpc/lds/inbound/127.0.0.1:9000".into(),
        filter_chains: vec![chain(None, vec![router()])],
        ..Listener::default()
    };
    let Ok(ListenerResource {
        model: ListenerModel::Server(s),
        ..
    }) = ListenerResource::validate(l)
    else {
        panic!()
    };
    assert_eq!(s.address, Some("127.0.0.1:9000".parse().unwrap()));
}
