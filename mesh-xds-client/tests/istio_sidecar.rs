//! `MESH_ISTIO_SHAPE=sidecar`: istiod's Envoy sidecar output, served over a real ADS stream
//! on 127.0.0.1, becomes the mesh's policy with every DestinationRule setting in it.
//!
//! The resources come from Istio's real config dumps (`../shared/testdata/istio`): the route
//! configuration `http.8080` with its retry policies, the cluster
//! `outbound|9080|v1|productpage...` with its circuit breakers, `transport_socket_matches`,
//! SDS secrets and metadata-exchange filter, the endpoints of productpage, and a waypoint's
//! `main_internal` listener and `inbound-vip` cluster full of Istio's private filters.
//! The dumps hold no outbound port listener and no `virtualInbound`; those two are written
//! here the way istiod's sidecar generator writes them (`pilot/pkg/networking/core`): the
//! HTTP chain with `rds: 8080`-style naming, Istio's HTTP filters as `TypedStruct`s, the
//! passthrough default chain; the inbound chains per destination port with the SDS
//! `DownstreamTlsContext`, `istio_authn`, RBAC and the black-hole and catch-all chains.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod istio_json;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_core::inbound::TlsMode;
use mesh_core::lb::LbPolicy;
use mesh_core::live::LivePolicy;
use mesh_core::rbac::Request;
use mesh_core::route::RouteAction;
use mesh_core::Snapshot;
use mesh_xds_client::ads::{AdsConfig, ResourceState};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::{to_any, XdsType};
use mesh_xds_client::shape::IstioShape;
use mesh_xds_client::testing::TestAdsServer;
use mesh_xds_client::transport::{Backoff, XdsClient, XdsClientConfig};
use serde_json::{json, Value as Json};

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::RouteConfiguration;
const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::ClusterLoadAssignment;

/// The cluster of the dump (the DestinationRule's v1 subset) ...
const PRODUCTPAGE_V1: &str = "outbound|9080|v1|productpage.default.svc.cluster.local";
/// ... and the one the dump's routes name, which istiod writes with the same traffic policy.
const PRODUCTPAGE: &str = "outbound|9080||productpage.default.svc.cluster.local";
const TARGET: &str = "productpage.default.svc.cluster.local:8080";
const PATIENCE: Duration = Duration::from_secs(20);

/// The first resource of `type_name` named `name` in a dump, as JSON.
fn from_dump(file: &str, type_name: &str, name: &str) -> Json {
    let mut found = Vec::new();
    istio_json::resources(&istio_json::dump(file), &mut found);
    found
        .into_iter()
        .find(|(t, r)| {
            let named = r.get("name").or_else(|| r.get("cluster_name"));
            t == type_name && named.and_then(Json::as_str) == Some(name)
        })
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("{file} has no {type_name} {name}"))
}

fn typed_struct(url: &str, value: Json) -> Json {
    json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": url, "value": value})
}

/// Istio's SDS reference to a secret (`default`, `ROOTCA`) through the agent's socket.
fn sds(name: &str) -> Json {
    json!({
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                "set_node_on_first_message_only": true,
                "transport_api_version": "V3"
            },
            "initial_fetch_timeout": "0s",
            "resource_api_version": "V3"
        }
    })
}

/// The outbound listener istiod writes for an HTTP port: the HCM chain naming the port's
/// route configuration, Istio's HTTP filters, the passthrough default chain.
fn outbound_port_listener(port: u16, rds: &str) -> Json {
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": format!("0.0.0.0_{port}"),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false,
        "filter_chains": [{
            "filter_chain_match": {"application_protocols": ["http/1.1", "h2c"]},
            "name": format!("0.0.0.0_{port}"),
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": format!("outbound_0.0.0.0_{port}"),
                    "rds": {
                        "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
                        "route_config_name": rds
                    },
                    "http_filters": [
                        {"name": "istio.metadata_exchange", "typed_config": typed_struct(
                            "type.googleapis.com/io.istio.http.peer_metadata.Config",
                            json!({"upstream_discovery": [{"istio_headers": {}}], "upstream_propagation": [{"istio_headers": {}}]}))},
                        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                            "emit_filter_state": true, "stats_for_all_methods": false}},
                        {"name": "envoy.filters.http.fault", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                        {"name": "envoy.filters.http.cors", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                        {"name": "istio.stats", "typed_config": typed_struct(
                            "type.googleapis.com/stats.PluginConfig", json!({"reporter": "CLIENT"}))},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                    ],
                    "use_remote_address": false,
                    "normalize_path": true,
                    "path_with_escaped_slashes_action": "KEEP_UNCHANGED"
                }
            }]
        }],
        "default_filter_chain": {
            "name": "PassthroughFilterChain",
            "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "PassthroughCluster",
                    "cluster": "PassthroughCluster"
                }
            }]
        }
    })
}

fn inbound_http_chain(port: u16, tls: bool, principal: &str) -> Json {
    let mut chain = json!({
        "name": format!("0.0.0.0_{port}"),
        "filter_chain_match": {
            "destination_port": port,
            "transport_protocol": if tls { "tls" } else { "raw_buffer" },
        },
        "filters": [
            {"name": "istio_authn", "typed_config": typed_struct(
                "type.googleapis.com/io.istio.network.authn.Config", json!({}))},
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("inbound_0.0.0.0_{port}"),
                "route_config": {
                    "name": format!("inbound|{port}||"),
                    "virtual_hosts": [{"name": format!("inbound|http|{port}"), "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "name": "default",
                            "route": {"cluster": format!("inbound|{port}||"), "timeout": "0s",
                                "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}},
                            "decorator": {"operation": format!(":{port}/*")}}]}],
                    "validate_clusters": false
                },
                "http_filters": [
                    {"name": "istio.metadata_exchange", "typed_config": typed_struct(
                        "type.googleapis.com/io.istio.http.peer_metadata.Config",
                        json!({"downstream_discovery": [{"istio_headers": {}}], "downstream_propagation": [{"istio_headers": {}}]}))},
                    {"name": "envoy.filters.http.rbac", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                        "rules": {"policies": {"ns[default]-policy[productpage-viewer]-rule[0]": {
                            "permissions": [{"and_rules": {"rules": [{"any": true}]}}],
                            "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [
                                {"authenticated": {"principal_name": {"exact": principal}}}
                            ]}}]}}]
                        }}},
                        "shadow_rules_stat_prefix": "istio_dry_run_allow_"
                    }},
                    {"name": "envoy.filters.http.grpc_stats", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                        "emit_filter_state": true}},
                    {"name": "envoy.filters.http.fault", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                    {"name": "istio.stats", "typed_config": typed_struct(
                        "type.googleapis.com/stats.PluginConfig", json!({"reporter": "SERVER"}))},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                ]
            }}
        ]
    });
    if tls {
        chain["filter_chain_match"]["application_protocols"] =
            json!(["istio-http/1.0", "istio-http/1.1", "istio-h2"]);
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificate_sds_secret_configs": [sds("default")],
                    "combined_validation_context": {
                        "default_validation_context": {},
                        "validation_context_sds_secret_config": sds("ROOTCA")
                    }
                },
                "require_client_certificate": true
            }
        });
    }
    chain
}

/// `virtualInbound` as istiod writes it for a pod serving HTTP on `port`: STRICT (TLS
/// chains only) or PERMISSIVE (TLS and plaintext), with the black-hole chain for 15006
/// and the catch-all passthrough chains.
fn virtual_inbound(port: u16, permissive: bool, principal: &str) -> Json {
    let mut chains = vec![json!({
        "name": "virtualInbound-blackhole",
        "filter_chain_match": {"destination_port": 15006},
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "BlackHoleCluster", "cluster": "BlackHoleCluster"}}]
    })];
    chains.push(inbound_http_chain(port, true, principal));
    if permissive {
        chains.push(inbound_http_chain(port, false, principal));
    }
    chains.push(json!({
        "name": "virtualInbound",
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": "0.0.0.0", "prefix_len": 0}]},
        "filters": [
            {"name": "istio.metadata_exchange", "typed_config": typed_struct(
                "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
                json!({"protocol": "istio-peer-exchange"}))},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "InboundPassthroughCluster", "cluster": "InboundPassthroughCluster"}}
        ]
    }));
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "traffic_direction": "INBOUND",
        "use_original_dst": true,
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}
        ],
        "filter_chains": chains
    })
}

/// The real cluster under the name the dump's routes use (istiod writes a DestinationRule's
/// top-level traffic policy on the subset-less cluster as on each subset), with the outlier
/// detection istiod writes for `outlierDetection: {consecutive5xxErrors: 1, interval: 1s,
/// baseEjectionTime: 3m, maxEjectionPercent: 100}` (the dump's DestinationRule has none).
fn productpage_cluster() -> Json {
    let mut c = from_dump(
        "retry-and-breaker-config-dump.json",
        "envoy.config.cluster.v3.Cluster",
        PRODUCTPAGE_V1,
    );
    c["name"] = json!(PRODUCTPAGE);
    c["eds_cluster_config"]["service_name"] = json!(PRODUCTPAGE);
    c["outlier_detection"] = json!({
        "consecutive_5xx": 1,
        "interval": "1s",
        "base_ejection_time": "180s",
        "max_ejection_percent": 100,
        "enforcing_consecutive_5xx": 100,
        "enforcing_success_rate": 0,
        "consecutive_gateway_failure": 0
    });
    c
}

struct Served {
    server: TestAdsServer,
}

/// Every resource a sidecar of productpage's client would get, on a test ADS server.
async fn serve(permissive: bool) -> Served {
    let pool = istio_json::pool();
    let server = TestAdsServer::start().await.unwrap();
    let listener = |j: Json| {
        to_any(&istio_json::decode::<Listener>(
            &pool,
            "envoy.config.listener.v3.Listener",
            j,
        ))
    };
    let cluster = |j: Json| {
        to_any(&istio_json::decode::<Cluster>(
            &pool,
            "envoy.config.cluster.v3.Cluster",
            j,
        ))
    };
    server.put(
        LDS,
        "0.0.0.0_8080",
        listener(outbound_port_listener(8080, "http.8080")),
    );
    server.put(
        LDS,
        "virtualInbound",
        listener(virtual_inbound(
            9080,
            permissive,
            "spiffe://cluster.local/ns/default/sa/order",
        )),
    );
    server.put(
        LDS,
        "main_internal",
        listener(from_dump(
            "sidecar-config-dump.json",
            "envoy.config.listener.v3.Listener",
            "main_internal",
        )),
    );
    let rc = from_dump(
        "retry-and-breaker-config-dump.json",
        "envoy.config.route.v3.RouteConfiguration",
        "http.8080",
    );
    server.put(
        RDS,
        "http.8080",
        to_any(&istio_json::decode::<RouteConfiguration>(
            &pool,
            "envoy.config.route.v3.RouteConfiguration",
            rc,
        )),
    );
    server.put(CDS, PRODUCTPAGE, cluster(productpage_cluster()));
    for (file, name) in [
        (
            "sidecar-config-dump.json",
            "inbound-vip|8000|http|httpbin.default.svc.cluster.local",
        ),
        ("sidecar-config-dump.json", "agent"),
    ] {
        server.put(
            CDS,
            name,
            cluster(from_dump(file, "envoy.config.cluster.v3.Cluster", name)),
        );
    }
    let cla = from_dump(
        "endpoints-config-dump.json",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        PRODUCTPAGE,
    );
    server.put(
        EDS,
        PRODUCTPAGE,
        to_any(&istio_json::decode::<ClusterLoadAssignment>(
            &pool,
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            cla,
        )),
    );
    Served { server }
}

/// A node as the Istio agent announces a proxyless pod (`GENERATOR: grpc`).
fn grpc_agent_node() -> envoy_types::pb::envoy::config::core::v3::Node {
    let mut node =
        NodeConfig::new("sidecar~10.244.0.7~order-7d4f.default~default.svc.cluster.local")
            .to_proto();
    let mut fields = std::collections::HashMap::new();
    for (k, v) in [("GENERATOR", "grpc"), ("NAMESPACE", "default")] {
        fields.insert(
            k.to_owned(),
            Value {
                kind: Some(Kind::StringValue(v.to_owned())),
            },
        );
    }
    node.metadata = Some(Struct { fields });
    node
}

fn start(served: &Served, policy: LivePolicy) -> XdsClient {
    let ads = AdsConfig::default()
        .with_certificate_providers(Some(BTreeSet::from(["default".to_owned()])));
    let config = XdsClientConfig::default()
        .with_ads(ads)
        .with_shape(IstioShape::Sidecar)
        .with_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ));
    XdsClient::start_with_policy(
        served.server.xds_server(),
        grpc_agent_node(),
        config,
        policy,
    )
}

const INBOUND: &str = "127.0.0.1:9080";

async fn wait_snapshot(policy: &LivePolicy, pred: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let mut changes = policy.watch();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let s = policy.snapshot();
            if pred(&s) {
                return s;
            }
            changes.changed().await;
        }
    })
    .await
    .expect("the sidecar-shaped policy in time")
}

#[tokio::test]
async fn istiod_sidecar_output_becomes_the_policy_with_every_destination_rule_field() {
    let served = serve(false).await;
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&served, policy.clone());
    client.add_target(TARGET).await.unwrap();
    let inbound: SocketAddr = INBOUND.parse().unwrap();
    client
        .add_target(&IstioShape::inbound_target(inbound))
        .await
        .unwrap();
    let snap = wait_snapshot(&policy, |s| {
        s.outbound(TARGET).is_some() && s.inbound_for(INBOUND.parse().unwrap()).is_some()
    })
    .await;

    // Announced as a sidecar: no GENERATOR; listeners and clusters by wildcard.
    let requests = served.server.requests();
    let first = requests.first().expect("a request");
    let meta = first
        .request
        .node
        .as_ref()
        .and_then(|n| n.metadata.as_ref())
        .expect("node metadata");
    assert!(!meta.fields.contains_key("GENERATOR"), "{meta:?}");
    assert!(meta.fields.contains_key("NAMESPACE"));
    for t in [LDS, CDS] {
        let r = requests
            .iter()
            .find(|r| r.xds_type() == Some(t))
            .expect("subscribed");
        assert!(
            r.request.resource_names.is_empty(),
            "{t}: {:?}",
            r.request.resource_names
        );
    }
    // Nothing NACKed: Istio's filters, passthrough chains, clusters the mesh cannot use.
    let nacks: Vec<_> = requests.iter().filter(|r| r.is_nack()).collect();
    assert!(nacks.is_empty(), "{nacks:#?}");

    // Routes: the dump's `http.8080`, retry policy and timeout as written.
    let listener = snap.outbound(TARGET).expect("listener");
    let rc = snap
        .route_config(listener.route_config_name())
        .expect("routes");
    assert_eq!(rc.name(), "http.8080");
    let (vh, route) = rc
        .route_for(TARGET, "/productpage", &http::HeaderMap::new(), 0)
        .expect("the /productpage route");
    assert!(
        vh.includes_request_attempt_count(),
        "istiod's include_request_attempt_count"
    );
    let RouteAction::Forward(f) = route.action() else {
        panic!("{route:?}")
    };
    assert_eq!(f.cluster_names().collect::<Vec<_>>(), [PRODUCTPAGE]);
    assert_eq!(f.timeout, None, "timeout 0s: none");
    let retry = f.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.num_retries, 2);
    assert_eq!(retry.retry_on.retriable_status_codes, [503]);
    let names: Vec<&str> = retry.retry_on.names().collect();
    for token in [
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ] {
        assert!(names.contains(&token), "{token}: {names:?}");
    }

    // Cluster: breaker thresholds, outlier detection, LB, TLS from `tlsMode-istio` with SDS
    // `default`/`ROOTCA` mapped to the provider instance `default`.
    let c = snap.cluster(PRODUCTPAGE).expect("cluster");
    let max = u32::MAX;
    assert_eq!(
        (
            c.circuit_breakers.max_connections,
            c.circuit_breakers.max_pending_requests,
            c.circuit_breakers.max_requests,
            c.circuit_breakers.max_retries
        ),
        (max, max, max, max)
    );
    let od = c.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(od.consecutive_5xx, 1);
    assert_eq!(od.enforcing_consecutive_5xx, 100);
    assert_eq!(od.interval, Duration::from_secs(1));
    assert_eq!(od.base_ejection_time, Duration::from_secs(180));
    assert_eq!(od.max_ejection_percent, 100);
    assert!(matches!(c.lb, LbPolicy::LeastRequest { .. }), "{:?}", c.lb);
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    let tls = c.tls.as_ref().expect("mTLS");
    assert_eq!(
        tls.sni.as_deref(),
        Some("outbound_.9080_.v1_.productpage.default.svc.cluster.local")
    );
    let identity = tls.identity.as_ref().expect("identity");
    assert_eq!(
        (
            identity.instance_name.as_str(),
            identity.certificate_name.as_str()
        ),
        ("default", "default")
    );
    let roots = tls.roots.as_ref().expect("roots");
    assert_eq!(
        (
            roots.instance_name.as_str(),
            roots.certificate_name.as_str()
        ),
        ("default", "ROOTCA")
    );
    assert_eq!(tls.accepted_sans.len(), 2, "{:?}", tls.accepted_sans);
    assert_eq!(
        c.service.as_deref(),
        Some("productpage.default.svc.cluster.local")
    );
    let endpoints = snap.endpoints_of(c).expect("endpoints");
    assert_eq!(endpoints.endpoints().count(), 1);

    // Inbound: STRICT from the TLS-only chains of port 9080, RBAC from their HTTP filter.
    let inbound_policy = snap.inbound_for(inbound).expect("inbound policy");
    assert_eq!(inbound_policy.mode_for_port(9080), TlsMode::Strict);
    let allowed = Request::new("GET", "/productpage")
        .with_peer_principal(Some("spiffe://cluster.local/ns/default/sa/order"));
    let denied = Request::new("GET", "/productpage")
        .with_peer_principal(Some("spiffe://cluster.local/ns/default/sa/other"));
    assert!(inbound_policy.authorization.evaluate(&allowed).is_allowed());
    assert!(!inbound_policy.authorization.evaluate(&denied).is_allowed());

    // What the mesh does not honour is reported by name, not dropped silently.
    let view = client.view();
    let not_applied = |t: XdsType, name: &str| -> Vec<String> {
        let entry = view
            .cache
            .get(t, name)
            .unwrap_or_else(|| panic!("{t} {name} cached"));
        assert_eq!(entry.state, ResourceState::Acked, "{t} {name}");
        entry
            .resource
            .as_ref()
            .map(|r| r.not_applied())
            .unwrap_or_default()
    };
    let port = not_applied(LDS, "0.0.0.0_8080");
    for name in [
        "istio.metadata_exchange",
        "istio.stats",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_stats",
    ] {
        assert!(port.iter().any(|s| s.contains(name)), "{name} in {port:#?}");
    }
    let vi = not_applied(LDS, "virtualInbound");
    assert!(vi.iter().any(|s| s.contains("istio_authn")), "{vi:#?}");
    let waypoint = not_applied(LDS, "main_internal");
    assert!(
        waypoint
            .iter()
            .any(|s| s.contains("waypoint_upstream_peer_metadata")),
        "{waypoint:#?}"
    );
    let pp = not_applied(CDS, PRODUCTPAGE);
    assert!(
        pp.iter().any(|s| s.contains("istio.metadata_exchange")),
        "{pp:#?}"
    );
    assert!(pp.iter().any(|s| s.contains("tlsMode-istio")), "{pp:#?}");
    let agent = not_applied(CDS, "agent");
    assert!(
        agent
            .iter()
            .any(|s| s.contains("not usable") && s.contains("STATIC")),
        "{agent:#?}"
    );
    let vip = not_applied(
        CDS,
        "inbound-vip|8000|http|httpbin.default.svc.cluster.local",
    );
    assert!(vip.iter().any(|s| s.contains("not usable")), "{vip:#?}");
    assert!(
        snap.cluster("agent").is_none(),
        "an unusable cluster stays out of the policy"
    );
    client.shutdown().await;
    served.server.shutdown().await;
}

#[tokio::test]
async fn permissive_chains_and_unknown_targets_resolve_as_a_sidecar_would() {
    let served = serve(true).await;
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&served, policy.clone());
    let inbound: SocketAddr = INBOUND.parse().unwrap();
    client
        .add_target(&IstioShape::inbound_target(inbound))
        .await
        .unwrap();
    // A port istiod has no listener for: Envoy passes such traffic through; the mesh calls
    // the target directly (no listener in the policy), without waiting.
    client.add_target("example.com:7777").await.unwrap();
    // An inbound port without chains of its own: the catch-all chain (TCP passthrough).
    let other: SocketAddr = "127.0.0.1:7070".parse().unwrap();
    client
        .add_target(&IstioShape::inbound_target(other))
        .await
        .unwrap();
    let snap = wait_snapshot(&policy, |s| s.inbound_for(inbound).is_some()).await;
    assert_eq!(
        snap.inbound_for(inbound).unwrap().mode_for_port(9080),
        TlsMode::Permissive
    );
    assert!(snap.outbound("example.com:7777").is_none());
    let catch_all = snap.inbound_for(other).expect("catch-all chains");
    assert_eq!(catch_all.mode_for_port(7070), TlsMode::Disable);
    // A change pushed by istiod: the port becomes STRICT.
    let pool = istio_json::pool();
    served.server.put(
        LDS,
        "virtualInbound",
        to_any(&istio_json::decode::<Listener>(
            &pool,
            "envoy.config.listener.v3.Listener",
            virtual_inbound(9080, false, "spiffe://cluster.local/ns/default/sa/order"),
        )),
    );
    wait_snapshot(&policy, |s| {
        s.inbound_for(inbound)
            .is_some_and(|p| p.mode_for_port(9080) == TlsMode::Strict)
    })
    .await;
    assert!(served.server.requests().iter().all(|r| !r.is_nack()));
    client.shutdown().await;
    served.server.shutdown().await;
}

/// istiod's inbound chain for a workload under a CUSTOM AuthorizationPolicy: an
/// `ext_authz` filter before the RBAC filters, which istiod names alike for DENY and ALLOW.
fn with_ext_authz_and_two_rbac_filters(mut vi: Json) -> Json {
    let chains = vi["filter_chains"].as_array_mut().unwrap();
    let chain = chains
        .iter_mut()
        .find(|c| c["filter_chain_match"]["destination_port"] == 9080)
        .unwrap();
    let hcm = &mut chain["filters"][1]["typed_config"];
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    let rbac = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.rbac")
        .cloned()
        .unwrap();
    let mut deny = rbac.clone();
    deny["typed_config"]["rules"]["action"] = json!("DENY");
    deny["typed_config"]["rules"]["policies"] = json!({});
    filters.insert(1, deny);
    filters.insert(
        1,
        json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "outbound|9000||ext-authz.foo.svc.cluster.local"}},
            "transport_api_version": "V3"
        }}),
    );
    vi
}

#[tokio::test]
async fn a_filter_that_may_refuse_requests_denies_the_port_instead_of_being_skipped() {
    let served = serve(false).await;
    let pool = istio_json::pool();
    let inbound: SocketAddr = INBOUND.parse().unwrap();
    let principal = "spiffe://cluster.local/ns/default/sa/order";
    // First the plain chains, with istiod's two RBAC filters of the same name: allowed.
    let mut two_rbac = virtual_inbound(9080, false, principal);
    {
        let chains = two_rbac["filter_chains"].as_array_mut().unwrap();
        let chain = chains
            .iter_mut()
            .find(|c| c["filter_chain_match"]["destination_port"] == 9080)
            .unwrap();
        let filters = chain["filters"][1]["typed_config"]["http_filters"]
            .as_array_mut()
            .unwrap();
        let mut deny = filters
            .iter()
            .find(|f| f["name"] == "envoy.filters.http.rbac")
            .cloned()
            .unwrap();
        deny["typed_config"]["rules"]["action"] = json!("DENY");
        deny["typed_config"]["rules"]["policies"] = json!({});
        filters.insert(1, deny);
    }
    let put = |j: Json| {
        served.server.put(
            LDS,
            "virtualInbound",
            to_any(&istio_json::decode::<Listener>(
                &pool,
                "envoy.config.listener.v3.Listener",
                j,
            )),
        )
    };
    put(two_rbac);
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&served, policy.clone());
    client
        .add_target(&IstioShape::inbound_target(inbound))
        .await
        .unwrap();
    let allowed = Request::new("GET", "/").with_peer_principal(Some(principal));
    let snap = wait_snapshot(&policy, |s| s.inbound_for(inbound).is_some()).await;
    let p = snap.inbound_for(inbound).unwrap();
    assert!(p.authorization.evaluate(&allowed).is_allowed(), "{p:?}");
    // Then a CUSTOM policy's ext_authz: the port denies everything, and says why.
    put(with_ext_authz_and_two_rbac_filters(virtual_inbound(
        9080, false, principal,
    )));
    let snap = wait_snapshot(&policy, |s| {
        s.inbound_for(inbound)
            .is_some_and(|p| !p.authorization.evaluate(&allowed).is_allowed())
    })
    .await;
    assert_eq!(
        snap.inbound_for(inbound).unwrap().mode_for_port(9080),
        TlsMode::Strict
    );
    let view = client.view();
    let why = view
        .cache
        .get(LDS, "virtualInbound")
        .and_then(|e| e.resource.as_ref())
        .map(|r| r.not_applied())
        .unwrap_or_default();
    assert!(
        why.iter()
            .any(|s| s.contains("ext_authz") && s.contains("denied")),
        "{why:#?}"
    );
    assert!(served.server.requests().iter().all(|r| !r.is_nack()));
    client.shutdown().await;
    served.server.shutdown().await;
}
