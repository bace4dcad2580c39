//! mesh-core clusters and endpoints -> Envoy `Cluster` and `ClusterLoadAssignment`.

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy as PbLbPolicy,
    LeastRequestLbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, transport_socket, Address, AggregatedConfigSource, ConfigSource,
    HealthStatus as PbHealth, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpOptions,
    Locality as PbLocality, RoutingPriority, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3 as epb;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use mesh_core::cluster::{
    CertificateInstance, Cluster, ClusterLoadAssignment, Discovery, HealthStatus, UpstreamProtocol,
    UpstreamTls,
};
use mesh_core::lb::LbPolicy;
use mesh_core::outlier::OutlierConfig;
use mesh_xds_client::resource::to_any;

use super::duration;

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: 2, // V3
        ..Default::default()
    })
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// A cluster. Only EDS clusters come out of the Istio translation; a logical-DNS one is
/// served as Envoy's `LOGICAL_DNS` with its one address.
pub fn cluster(c: &Cluster) -> pb::Cluster {
    let mut out = pb::Cluster {
        name: c.name().to_owned(),
        connect_timeout: Some(duration(c.connect_timeout)),
        circuit_breakers: Some(pb::CircuitBreakers {
            thresholds: vec![pb::circuit_breakers::Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: u32v(c.circuit_breakers.max_connections),
                max_pending_requests: u32v(c.circuit_breakers.max_pending_requests),
                max_requests: u32v(c.circuit_breakers.max_requests),
                max_retries: u32v(c.circuit_breakers.max_retries),
                retry_budget: c.retry_budget.as_ref().map(|b| {
                    pb::circuit_breakers::thresholds::RetryBudget {
                        budget_percent: Some(Percent {
                            value: b.budget_percent,
                        }),
                        min_retry_concurrency: u32v(b.min_retry_concurrency),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        outlier_detection: c.outlier_detection.as_ref().map(outlier_detection),
        transport_socket: c.tls.as_ref().map(upstream_tls),
        ..Default::default()
    };
    match &c.discovery {
        Discovery::LogicalDns { host, port } => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32));
            out.load_assignment = Some(epb::ClusterLoadAssignment {
                cluster_name: c.name().to_owned(),
                endpoints: vec![epb::LocalityLbEndpoints {
                    lb_endpoints: vec![lb_endpoint(host, *port, 1, HealthStatus::Unknown)],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        // EDS, and anything newer the model grows: its endpoints come from EDS.
        _ => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            let eds = c.eds_name();
            out.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: ads(),
                service_name: if eds == c.name() {
                    String::new()
                } else {
                    eds.to_owned()
                },
            });
        }
    }
    lb(&c.lb, &mut out);
    protocol(c, &mut out);
    out
}

fn lb(policy: &LbPolicy, out: &mut pb::Cluster) {
    let (p, config) = match policy {
        LbPolicy::LeastRequest { choice_count } => (
            PbLbPolicy::LeastRequest,
            Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                choice_count: u32v(*choice_count),
                ..Default::default()
            })),
        ),
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => (
            PbLbPolicy::RingHash,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value {
                    value: *min_ring_size,
                }),
                maximum_ring_size: Some(UInt64Value {
                    value: *max_ring_size,
                }),
                ..Default::default()
            })),
        ),
        LbPolicy::Random => (PbLbPolicy::Random, None),
        _ => (PbLbPolicy::RoundRobin, None),
    };
    out.lb_policy = p as i32;
    out.lb_config = config;
}

fn protocol(c: &Cluster, out: &mut pb::Cluster) {
    let protocol_config = match c.protocol {
        UpstreamProtocol::Http2 => Some(ProtocolConfig::Http2ProtocolOptions(
            Http2ProtocolOptions::default(),
        )),
        UpstreamProtocol::Http1 => Some(ProtocolConfig::HttpProtocolOptions(Default::default())),
        _ => None,
    };
    if protocol_config.is_none() && c.max_requests_per_connection.is_none() {
        return;
    }
    let options = HttpProtocolOptions {
        common_http_protocol_options: c.max_requests_per_connection.map(|m| CoreHttpOptions {
            max_requests_per_connection: u32v(m),
            ..Default::default()
        }),
        upstream_protocol_options: protocol_config.map(|pc| {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(pc),
            })
        }),
        ..Default::default()
    };
    out.typed_extension_protocol_options
        .insert(HTTP_OPTIONS_KEY.to_owned(), to_any(&options));
}

fn outlier_detection(o: &OutlierConfig) -> pb::OutlierDetection {
    pb::OutlierDetection {
        consecutive_5xx: u32v(o.consecutive_5xx),
        enforcing_consecutive_5xx: u32v(o.enforcing_consecutive_5xx),
        consecutive_gateway_failure: u32v(o.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: u32v(o.enforcing_consecutive_gateway_failure),
        success_rate_minimum_hosts: u32v(o.success_rate_minimum_hosts),
        success_rate_request_volume: u32v(o.success_rate_request_volume),
        success_rate_stdev_factor: u32v(o.success_rate_stdev_factor),
        enforcing_success_rate: u32v(o.enforcing_success_rate),
        failure_percentage_threshold: u32v(o.failure_percentage_threshold),
        failure_percentage_minimum_hosts: u32v(o.failure_percentage_minimum_hosts),
        failure_percentage_request_volume: u32v(o.failure_percentage_request_volume),
        enforcing_failure_percentage: u32v(o.enforcing_failure_percentage),
        interval: Some(duration(o.interval)),
        base_ejection_time: Some(duration(o.base_ejection_time)),
        max_ejection_time: Some(duration(o.max_ejection_time)),
        max_ejection_percent: u32v(o.max_ejection_percent),
        ..Default::default()
    }
}

fn provider(i: &CertificateInstance) -> tls::CertificateProviderPluginInstance {
    tls::CertificateProviderPluginInstance {
        instance_name: i.instance_name.clone(),
        certificate_name: i.certificate_name.clone(),
    }
}

/// Upstream TLS with certificates from provider instances and URI SAN (SPIFFE) matching,
/// as gRFC A29 reads it.
fn upstream_tls(t: &UpstreamTls) -> TransportSocket {
    use tls::common_tls_context::ValidationContextType;
    use tls::subject_alt_name_matcher::SanType;
    let validation = tls::CertificateValidationContext {
        ca_certificate_provider_instance: t.roots.as_ref().map(provider),
        match_typed_subject_alt_names: t
            .accepted_sans
            .iter()
            .map(|m| tls::SubjectAltNameMatcher {
                san_type: SanType::Uri as i32,
                matcher: Some(super::route::string_matcher(m)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let ctx = tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_provider_instance: t.identity.as_ref().map(provider),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            ..Default::default()
        }),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}

fn health(h: HealthStatus) -> PbHealth {
    match h {
        HealthStatus::Healthy => PbHealth::Healthy,
        HealthStatus::Unhealthy => PbHealth::Unhealthy,
        HealthStatus::Draining => PbHealth::Draining,
        HealthStatus::Timeout => PbHealth::Timeout,
        HealthStatus::Degraded => PbHealth::Degraded,
        _ => PbHealth::Unknown,
    }
}

fn lb_endpoint(host: &str, port: u16, weight: u32, h: HealthStatus) -> epb::LbEndpoint {
    epb::LbEndpoint {
        host_identifier: Some(epb::lb_endpoint::HostIdentifier::Endpoint(epb::Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host.to_owned(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: health(h) as i32,
        load_balancing_weight: u32v(weight.max(1)),
        ..Default::default()
    }
}

/// The endpoints of one EDS name.
pub fn endpoints(cla: &ClusterLoadAssignment) -> epb::ClusterLoadAssignment {
    epb::ClusterLoadAssignment {
        cluster_name: cla.cluster_name.clone(),
        endpoints: cla
            .localities
            .iter()
            .map(|l| epb::LocalityLbEndpoints {
                locality: Some(PbLocality {
                    region: l.locality.region.clone(),
                    zone: l.locality.zone.clone(),
                    sub_zone: l.locality.sub_zone.clone(),
                }),
                lb_endpoints: l
                    .endpoints
                    .iter()
                    .map(|e| {
                        lb_endpoint(
                            &e.address.ip().to_string(),
                            e.address.port(),
                            e.weight,
                            e.health,
                        )
                    })
                    .collect(),
                // gRPC ignores a locality without weight under weighted-target balancing.
                load_balancing_weight: u32v(l.weight.max(1)),
                priority: l.priority,
                ..Default::default()
            })
            .collect(),
        policy: Some(epb::cluster_load_assignment::Policy {
            overprovisioning_factor: u32v(cla.overprovisioning_factor),
            ..Default::default()
        }),
        ..Default::default()
    }
}
