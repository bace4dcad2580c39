//! Translation never panics: arbitrary well-typed protos and arbitrary bytes are either
//! accepted or rejected with a non-empty field path.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, LbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::retry_policy::RetryBackOff;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, RetryPolicy, Route, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value, UInt64Value};
use mesh_xds_client::resource::{
    to_any, ClusterResource, EndpointsResource, FieldError, ListenerResource, ResourceType,
    RouteConfigurationResource,
};
use mesh_xds_client::testing::fixtures::*;
use proptest::prelude::*;
use prost::Message;

fn check<T: ResourceType>(message: T::Message) -> Result<(), TestCaseError> {
    match T::validate(message) {
        Ok(_) => Ok(()),
        Err(FieldError { field, reason }) => {
            prop_assert!(
                !field.is_empty(),
                "rejection without a field path: {reason}"
            );
            Ok(())
        }
    }
}

fn duration() -> impl Strategy<Value = Option<PbDuration>> {
    proptest::option::of(
        (-5i64..100_000, -2i32..1_000_000_001)
            .prop_map(|(seconds, nanos)| PbDuration { seconds, nanos }),
    )
}

fn u32v() -> impl Strategy<Value = Option<UInt32Value>> {
    proptest::option::of(any::<u32>().prop_map(|value| UInt32Value { value }))
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(":path".to_owned()),
        Just("host".to_owned()),
        "[a-z-]{0,8}",
        "\\PC{0,6}"
    ]
}

fn headers() -> impl Strategy<Value = Vec<HeaderValueOption>> {
    proptest::collection::vec(
        (header_name(), "\\PC{0,6}", -1i32..5).prop_map(|(key, value, append_action)| {
            HeaderValueOption {
                header: Some(HeaderValue {
                    key,
                    value,
                    ..HeaderValue::default()
                }),
                append_action,
                ..HeaderValueOption::default()
            }
        }),
        0..3,
    )
}

fn fault() -> impl Strategy<Value = Any> {
    (any::<u32>(), any::<u32>(), 0i32..4).prop_map(|(status, numerator, denominator)| {
        to_any(&HttpFault {
            abort: Some(FaultAbort {
                error_type: Some(fault_abort::ErrorType::HttpStatus(status)),
                percentage: Some(envoy_types::pb::envoy::r#type::v3::FractionalPercent {
                    numerator,
                    denominator,
                }),
                ..FaultAbort::default()
            }),
            ..HttpFault::default()
        })
    })
}

fn route_strategy() -> impl Strategy<Value = Route> {
    (
        prop_oneof!["/[a-z]{0,4}", "\\PC{0,6}", "[(*+?]{1,3}"],
        any::<bool>(),
        proptest::collection::vec(("[a-c]{1,2}", any::<u32>()), 0..4),
        proptest::option::of((
            "[a-z0-9,-]{0,30}",
            u32v(),
            duration(),
            duration(),
            duration(),
        )),
        headers(),
        proptest::option::of(fault()),
    )
        .prop_map(|(path, regex, clusters, retry, add, fault)| {
            let specifier = if clusters.len() == 1 {
                route_action::ClusterSpecifier::Cluster(clusters[0].0.clone())
            } else {
                let list: Vec<(&str, u32)> =
                    clusters.iter().map(|(n, w)| (n.as_str(), *w)).collect();
                weighted(&list)
            };
            let mut r = prefix_route("/", specifier);
            if regex {
                r.r#match.as_mut().unwrap().path_specifier =
                    Some(route_match::PathSpecifier::SafeRegex(
                        envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                            regex: path,
                            ..Default::default()
                        },
                    ));
            } else {
                r.r#match.as_mut().unwrap().path_specifier =
                    Some(route_match::PathSpecifier::Path(path));
            }
            if let Some(route::Action::Route(a)) = r.action.as_mut() {
                a.retry_policy =
                    retry.map(|(retry_on, num_retries, base, max, per_try)| RetryPolicy {
                        retry_on,
                        num_retries,
                        per_try_timeout: per_try,
                        retry_back_off: Some(RetryBackOff {
                            base_interval: base,
                            max_interval: max,
                        }),
                        ..RetryPolicy::default()
                    });
            }
            r.request_headers_to_add = add;
            if let Some(f) = fault {
                r.typed_per_filter_config.insert("fault".into(), f);
            }
            r
        })
}

fn cluster_strategy() -> impl Strategy<Value = Cluster> {
    (
        (0i32..8, 0i32..10, duration()),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::collection::vec((0i32..3, u32v(), u32v(), u32v(), u32v()), 0..3),
        proptest::option::of((u32v(), u32v(), u32v(), u32v(), duration(), duration())),
    )
        .prop_map(|((kind, lb, timeout), ring, thresholds, od)| {
            let mut c = cluster_eds_message("c", None);
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind));
            c.lb_policy = lb;
            c.connect_timeout = timeout;
            c.lb_config = ring.map(|(min, max)| {
                LbConfig::RingHashLbConfig(RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value { value: min }),
                    maximum_ring_size: Some(UInt64Value { value: max }),
                    ..RingHashLbConfig::default()
                })
            });
            c.circuit_breakers = Some(CircuitBreakers {
                thresholds: thresholds
                    .into_iter()
                    .map(|(priority, a, b, c, d)| Thresholds {
                        priority,
                        max_connections: a,
                        max_pending_requests: b,
                        max_requests: c,
                        max_retries: d,
                        ..Thresholds::default()
                    })
                    .collect(),
                ..CircuitBreakers::default()
            });
            c.outlier_detection = od.map(|(c5, e5, pct, fp, base, max)| OutlierDetection {
                consecutive_5xx: c5,
                enforcing_consecutive_5xx: e5,
                max_ejection_percent: pct,
                failure_percentage_threshold: fp,
                base_ejection_time: base,
                max_ejection_time: max,
                ..OutlierDetection::default()
            });
            c
        })
}

fn listener_strategy() -> impl Strategy<Value = Listener> {
    let filter = (
        prop_oneof![
            Just(to_any(&Router::default())),
            fault(),
            Just(Any {
                type_url: "type.googleapis.com/x.Unknown".into(),
                value: vec![1, 2]
            }),
        ],
        "[a-c]{0,2}",
        any::<bool>(),
    )
        .prop_map(|(any, name, is_optional)| HttpFilter {
            name,
            is_optional,
            config_type: Some(http_filter::ConfigType::TypedConfig(any)),
            ..HttpFilter::default()
        });
    (
        proptest::collection::vec(filter, 0..4),
        proptest::collection::vec(route_strategy(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(filters, routes, inline)| {
            let mut l = if inline {
                let rc = route_config_with("inline", routes);
                Listener::decode(listener_inline("l", rc).value.as_slice()).unwrap()
            } else {
                listener_rds_message("l", "r")
            };
            let api = l.api_listener.as_mut().unwrap();
            let mut hcm =
                HttpConnectionManager::decode(api.api_listener.as_ref().unwrap().value.as_slice())
                    .unwrap();
            hcm.http_filters = filters;
            api.api_listener = Some(to_any(&hcm));
            l
        })
}

fn cla_strategy() -> impl Strategy<Value = ClusterLoadAssignment> {
    proptest::collection::vec((prop_oneof!["10\\.0\\.0\\.[0-9]{1,3}", "[a-z.:]{0,8}"], any::<u32>(), 0u32..4, -1i32..7, u32v()), 0..5)
        .prop_map(|eps| {
            let mut cla = endpoints_message("e", &[]);
            for (i, (addr, port, priority, health, weight)) in eps.into_iter().enumerate() {
                let mut one = endpoints_message("e", &["1.2.3.4:5".parse().unwrap()]).endpoints.remove(0);
                one.priority = priority;
                one.load_balancing_weight = weight;
                let ep = &mut one.lb_endpoints[0];
                ep.health_status = health;
                if let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(e)) = ep.host_identifier.as_mut() {
                    if let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
                        e.address.as_mut().and_then(|a| a.address.as_mut())
                    {
                        sa.address = addr;
                        sa.port_specifier = Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port));
                    }
                }
                if i % 2 == 0 {
                    cla.endpoints.push(one);
                } else if let Some(last) = cla.endpoints.last_mut() {
                    last.lb_endpoints.extend(one.lb_endpoints);
                }
            }
            cla
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn route_configurations(routes in proptest::collection::vec(route_strategy(), 0..4)) {
        check::<RouteConfigurationResource>(route_config_with("r", routes))?;
    }

    #[test]
    fn clusters(c in cluster_strategy()) {
        check::<ClusterResource>(c)?;
    }

    #[test]
    fn listeners(l in listener_strategy()) {
        check::<ListenerResource>(l)?;
    }

    #[test]
    fn endpoint_assignments(cla in cla_strategy()) {
        check::<EndpointsResource>(cla)?;
    }

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = Listener::decode(bytes.as_slice()) { check::<ListenerResource>(m)?; }
        if let Ok(m) = RouteConfiguration::decode(bytes.as_slice()) { check::<RouteConfigurationResource>(m)?; }
        if let Ok(m) = Cluster::decode(bytes.as_slice()) { check::<ClusterResource>(m)?; }
        if let Ok(m) = ClusterLoadAssignment::decode(bytes.as_slice()) { check::<EndpointsResource>(m)?; }
    }
}
