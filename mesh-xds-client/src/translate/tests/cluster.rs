//! Clusters: discovery, load balancing, circuit breakers, outlier detection, protocol, TLS.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::{thresholds, Thresholds};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    LbConfig, LbPolicy as PbLb, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::load_balancing_policy::Policy as LbpPolicy;
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster as PbCluster, LoadBalancingPolicy, OutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket, RoutingPriority, TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::{
    pick_first::v3::PickFirst, ring_hash::v3::RingHash, round_robin::v3::RoundRobin,
    wrr_locality::v3::WrrLocality,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, common_tls_context::CertificateProviderInstance,
    common_tls_context::CombinedCertificateValidationContext, subject_alt_name_matcher::SanType,
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value, UInt64Value};
use mesh_core::cluster::{CertificateInstance, Discovery, UpstreamProtocol};
use mesh_core::lb::LbPolicy;

use crate::resource::{ClusterResource, ResourceType};
use crate::testing::fixtures::cluster_eds_message;
use crate::translate::cluster;

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn ok(c: &PbCluster) -> mesh_core::cluster::Cluster {
    let r = ClusterResource::validate(c.clone()).unwrap();
    (*r.model).clone()
}

fn rejected(c: &PbCluster) -> String {
    ClusterResource::validate(c.clone()).unwrap_err().field
}

fn extension(any: envoy_types::pb::google::protobuf::Any) -> LbpPolicy {
    LbpPolicy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: "p".into(),
            typed_config: Some(any),
        }),
    }
}

#[test]
fn discovery_and_defaults() {
    let c = ok(&cluster_eds_message(
        "outbound|8080|v1|payments.default.svc.cluster.local",
        Some("eds"),
    ));
    assert_eq!(
        c.discovery,
        Discovery::Eds {
            service_name: Some("eds".into())
        }
    );
    assert_eq!(c.eds_name(), "eds");
    assert_eq!(c.connect_timeout, Duration::from_secs(5), "Envoy's default");
    assert_eq!(c.lb, LbPolicy::RoundRobin);
    assert_eq!(
        c.service.as_deref(),
        Some("payments.default.svc.cluster.local")
    );
    assert_eq!(c.subset.as_deref(), Some("v1"));
    assert!(c.tls.is_none() && c.outlier_detection.is_none() && c.retry_budget.is_none());

    let mut m = cluster_eds_message("c", None);
    m.connect_timeout = secs(2);
    let c = ok(&m);
    assert_eq!(c.discovery, Discovery::Eds { service_name: None });
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
    m.connect_timeout = Some(PbDuration {
        seconds: -1,
        nanos: 0,
    });
    assert_eq!(rejected(&m), "connect_timeout");
    m.connect_timeout = secs(0);
    assert_eq!(rejected(&m), "connect_timeout");
}

#[test]
fn lb_policy_enum_and_configs() {
    let mut m = cluster_eds_message("c", None);
    m.lb_policy = PbLb::RingHash as i32;
    m.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: Some(UInt64Value { value: 10 }),
        maximum_ring_size: Some(UInt64Value { value: 100 }),
        ..RingHashLbConfig::default()
    }));
    assert_eq!(
        ok(&m).lb,
        LbPolicy::RingHash {
            min_ring_size: 10,
            max_ring_size: 100
        }
    );
    m.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: Some(UInt64Value { value: 100 }),
        maximum_ring_size: Some(UInt64Value { value: 10 }),
        ..RingHashLbConfig::default()
    }));
    assert_eq!(rejected(&m), "ring_hash_lb_config");
    m.lb_config = None;
    assert_eq!(ok(&m).lb, LbPolicy::ring_hash());

    m.lb_policy = PbLb::LeastRequest as i32;
    m.lb_config = Some(LbConfig::LeastRequestLbConfig(Default::default()));
    assert_eq!(ok(&m).lb, LbPolicy::least_request());
    m.lb_policy = PbLb::Maglev as i32;
    assert_eq!(rejected(&m), "lb_policy");
}

#[test]
fn load_balancing_policy_takes_the_first_supported() {
    let mut m = cluster_eds_message("c", None);
    m.lb_policy = PbLb::Maglev as i32; // ignored when load_balancing_policy is set
    let ring = RingHash {
        minimum_ring_size: Some(UInt64Value { value: 64 }),
        maximum_ring_size: Some(UInt64Value { value: 128 }),
        ..RingHash::default()
    };
    m.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![
            extension(crate::resource::to_any(&PickFirst::default())),
            extension(crate::resource::to_any(&ring)),
        ],
    });
    assert_eq!(
        ok(&m).lb,
        LbPolicy::RingHash {
            min_ring_size: 64,
            max_ring_size: 128
        }
    );

    let wrr = WrrLocality {
        endpoint_picking_policy: Some(LoadBalancingPolicy {
            policies: vec![extension(crate::resource::to_any(&RoundRobin::default()))],
        }),
    };
    m.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![extension(crate::resource::to_any(&wrr))],
    });
    assert_eq!(ok(&m).lb, LbPolicy::RoundRobin);

    m.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![extension(crate::resource::to_any(&PickFirst::default()))],
    });
    assert_eq!(rejected(&m), "load_balancing_policy.policies");
}

#[test]
fn circuit_breakers_all_four_thresholds_and_budget() {
    let mut m = cluster_eds_message("c", None);
    let high = Thresholds {
        priority: RoutingPriority::High as i32,
        max_requests: u32v(1),
        ..Thresholds::default()
    };
    let default = Thresholds {
        priority: RoutingPriority::Default as i32,
        max_connections: u32v(10),
        max_pending_requests: u32v(20),
        max_requests: u32v(30),
        max_retries: u32v(4),
        retry_budget: Some(thresholds::RetryBudget {
            budget_percent: Some(Percent { value: 25.0 }),
            min_retry_concurrency: u32v(5),
            ..Default::default()
        }),
        ..Thresholds::default()
    };
    m.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![high, default],
        ..CircuitBreakers::default()
    });
    let c = ok(&m);
    assert_eq!(
        c.circuit_breakers,
        mesh_core::breaker::Thresholds::new(10, 20, 30, 4)
    );
    let budget = c.retry_budget.unwrap();
    assert_eq!(
        (budget.budget_percent, budget.min_retry_concurrency),
        (25.0, 5)
    );

    let mut bad = default;
    bad.retry_budget.as_mut().unwrap().budget_percent = Some(Percent { value: 150.0 });
    m.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![bad],
        ..CircuitBreakers::default()
    });
    assert_eq!(
        rejected(&m),
        "circuit_breakers.thresholds[0].retry_budget.budget_percent"
    );
}

#[test]
fn outlier_detection_fields_and_limits() {
    let mut m = cluster_eds_message("c", None);
    m.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: u32v(3),
        enforcing_consecutive_5xx: u32v(90),
        consecutive_gateway_failure: u32v(2),
        enforcing_consecutive_gateway_failure: u32v(100),
        interval: secs(1),
        base_ejection_time: secs(10),
        max_ejection_time: secs(60),
        max_ejection_percent: u32v(50),
        success_rate_minimum_hosts: u32v(3),
        success_rate_request_volume: u32v(10),
        success_rate_stdev_factor: u32v(1000),
        enforcing_success_rate: u32v(0),
        failure_percentage_threshold: u32v(70),
        failure_percentage_minimum_hosts: u32v(2),
        failure_percentage_request_volume: u32v(20),
        enforcing_failure_percentage: u32v(100),
        ..OutlierDetection::default()
    });
    let od = ok(&m).outlier_detection.unwrap();
    assert_eq!((od.consecutive_5xx, od.enforcing_consecutive_5xx), (3, 90));
    assert_eq!(
        (
            od.consecutive_gateway_failure,
            od.enforcing_consecutive_gateway_failure
        ),
        (2, 100)
    );
    assert_eq!(od.interval, Duration::from_secs(1));
    assert_eq!(
        (od.base_ejection_time, od.max_ejection_time),
        (Duration::from_secs(10), Duration::from_secs(60))
    );
    assert_eq!(od.max_ejection_percent, 50);
    assert_eq!(
        (
            od.success_rate_minimum_hosts,
            od.success_rate_request_volume,
            od.success_rate_stdev_factor,
            od.enforcing_success_rate
        ),
        (3, 10, 1000, 0)
    );
    assert_eq!(
        (
            od.failure_percentage_threshold,
            od.failure_percentage_minimum_hosts,
            od.failure_percentage_request_volume,
            od.enforcing_failure_percentage
        ),
        (70, 2, 20, 100)
    );

    m.outlier_detection
        .as_mut()
        .unwrap()
        .enforcing_consecutive_5xx = u32v(101);
    assert_eq!(rejected(&m), "outlier_detection.enforcing_consecutive_5xx");
    m.outlier_detection = Some(OutlierDetection {
        failure_percentage_threshold: u32v(200),
        ..OutlierDetection::default()
    });
    assert_eq!(
        rejected(&m),
        "outlier_detection.failure_percentage_threshold"
    );
    m.outlier_detection = Some(OutlierDetection {
        interval: secs(0),
        ..OutlierDetection::default()
    });
    assert_eq!(rejected(&m), "outlier_detection.interval");
    m.outlier_detection = Some(OutlierDetection::default());
    assert_eq!(
        ok(&m).outlier_detection,
        Some(mesh_core::outlier::OutlierConfig::default())
    );
}

#[test]
fn protocol_options() {
    let mut m = cluster_eds_message("c", None);
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
            },
        )),
        common_http_protocol_options: Some(Default::default()),
        ..HttpProtocolOptions::default()
    };
    let mut with_max = opts.clone();
    with_max
        .common_http_protocol_options
        .as_mut()
        .unwrap()
        .max_requests_per_connection = u32v(100);
    m.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        crate::resource::to_any(&with_max),
    );
    let c = ok(&m);
    assert_eq!(c.protocol, UpstreamProtocol::Http2);
    assert_eq!(c.max_requests_per_connection, Some(100));
    let c = cluster(&cluster_eds_message("plain", None), Some("plain")).unwrap();
    assert_eq!(c.protocol, UpstreamProtocol::Auto);
}

fn provider(name: &str) -> Option<CertificateProviderPluginInstance> {
    Some(CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: name.into(),
    })
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ..StringMatcher::default()
    }
}

fn with_tls(ctx: &UpstreamTlsContext) -> PbCluster {
    let mut m = cluster_eds_message("c", None);
    m.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(
            crate::resource::to_any(ctx),
        )),
    });
    m
}

const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/payments";

#[test]
fn tls_with_current_fields() {
    let ctx = UpstreamTlsContext {
        sni: "outbound_.8080_._.payments".into(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: provider("default"),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: provider("ROOTCA"),
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                            san_type: SanType::Uri as i32,
                            matcher: Some(exact(SPIFFE)),
                            ..SubjectAltNameMatcher::default()
                        }],
                        ..CertificateValidationContext::default()
                    },
                ),
            ),
            ..CommonTlsContext::default()
        }),
        ..UpstreamTlsContext::default()
    };
    let tls = ok(&with_tls(&ctx)).tls.unwrap();
    assert_eq!(tls.sni.as_deref(), Some("outbound_.8080_._.payments"));
    assert_eq!(
        tls.identity,
        Some(CertificateInstance::new("default", "default"))
    );
    assert_eq!(
        tls.roots,
        Some(CertificateInstance::new("default", "ROOTCA"))
    );
    assert_eq!(tls.accepted_sans.len(), 1);
    assert!(tls.accepted_sans[0].matches(SPIFFE));

    let mut dns = ctx.clone();
    if let Some(common_tls_context::ValidationContextType::ValidationContext(v)) = dns
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type
        .as_mut()
    {
        v.match_typed_subject_alt_names[0].san_type = SanType::Dns as i32;
    }
    assert_eq!(
        rejected(&with_tls(&dns)),
        "transport_socket.typed_config.common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type"
    );
}

#[test]
#[allow(deprecated)]
fn tls_with_the_deprecated_fields_istiod_sends() {
    let legacy = |name: &str| {
        Some(CertificateProviderInstance {
            instance_name: "default".into(),
            certificate_name: name.into(),
        })
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_certificate_provider_instance: legacy("default"),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_subject_alt_names: vec![exact(SPIFFE)],
                            ..CertificateValidationContext::default()
                        }),
                        validation_context_certificate_provider_instance: legacy("ROOTCA"),
                        ..Default::default()
                    },
                ),
            ),
            ..CommonTlsContext::default()
        }),
        ..UpstreamTlsContext::default()
    };
    let tls = ok(&with_tls(&ctx)).tls.unwrap();
    assert_eq!(
        tls.identity,
        Some(CertificateInstance::new("default", "default"))
    );
    assert_eq!(
        tls.roots,
        Some(CertificateInstance::new("default", "ROOTCA"))
    );
    assert!(tls.accepted_sans[0].matches(SPIFFE));
    assert!(!tls.accepted_sans[0].matches("spiffe://cluster.local/ns/default/sa/other"));

    // Without roots the server cannot be verified: rejected.
    let mut no_roots = ctx.clone();
    no_roots
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = None;
    assert_eq!(
        rejected(&with_tls(&no_roots)),
        "transport_socket.typed_config.common_tls_context"
    );
    // Inline certificates are not something a proxyless client loads.
    let mut inline = ctx;
    inline.common_tls_context.as_mut().unwrap().tls_certificates = vec![TlsCertificate::default()];
    assert_eq!(
        rejected(&with_tls(&inline)),
        "transport_socket.typed_config.common_tls_context.tls_certificates"
    );
}
