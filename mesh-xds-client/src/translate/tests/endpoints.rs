//! Endpoint assignments: localities, priorities, weights, health.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus as PbHealth, Locality as PbLocality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    cluster_load_assignment::Policy, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::cluster::HealthStatus;

use crate::resource::{EndpointsResource, ResourceType};
use crate::testing::fixtures::endpoints_message;

#[test]
fn localities_priorities_weights_and_health() {
    let mut cla = endpoints_message(
        "eds",
        &[
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ],
    );
    let mut failover = endpoints_message("eds", &["10.1.0.1:80".parse().unwrap()])
        .endpoints
        .remove(0);
    failover.priority = 1;
    failover.load_balancing_weight = Some(UInt32Value { value: 3 });
    failover.locality = Some(PbLocality {
        region: "r".into(),
        zone: "z".into(),
        sub_zone: "s".into(),
    });
    cla.endpoints.push(failover);
    cla.endpoints.push(LocalityLbEndpoints {
        load_balancing_weight: Some(UInt32Value { value: 0 }),
        ..endpoints_message("eds", &["10.2.0.1:80".parse().unwrap()])
            .endpoints
            .remove(0)
    });
    let eps = &mut cla.endpoints[0].lb_endpoints;
    eps[0].health_status = PbHealth::Unhealthy as i32;
    eps[1].health_status = PbHealth::Healthy as i32;
    eps[1].load_balancing_weight = Some(UInt32Value { value: 0 });
    cla.policy = Some(Policy {
        overprovisioning_factor: Some(UInt32Value { value: 200 }),
        ..Policy::default()
    });

    let model = EndpointsResource::validate(cla.clone()).unwrap().model;
    assert_eq!(model.cluster_name, "eds");
    assert_eq!(
        model.localities.len(),
        2,
        "a locality of weight 0 is dropped"
    );
    assert_eq!(model.overprovisioning_factor, 200);
    let p0 = &model.localities[0];
    assert_eq!((p0.priority, p0.weight), (0, 1));
    assert_eq!(p0.endpoints[0].health, HealthStatus::Unhealthy);
    assert!(!p0.endpoints[0].health.is_usable());
    assert_eq!(p0.endpoints[1].health, HealthStatus::Healthy);
    assert_eq!(p0.endpoints[1].weight, 1, "weight 0 reads as 1");
    let p1 = &model.localities[1];
    assert_eq!(
        (p1.priority, p1.weight, p1.locality.zone.as_str()),
        (1, 3, "z")
    );

    cla.policy = Some(Policy {
        overprovisioning_factor: Some(UInt32Value { value: 0 }),
        ..Policy::default()
    });
    assert_eq!(
        EndpointsResource::validate(cla).unwrap_err().field,
        "policy.overprovisioning_factor"
    );
}

#[test]
fn host_names_are_not_endpoints() {
    let mut cla = endpoints_message("eds", &["10.0.0.1:80".parse().unwrap()]);
    if let Some(
        envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep),
    ) = cla.endpoints[0].lb_endpoints[0].host_identifier.as_mut()
    {
        if let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
            ep.address.as_mut().and_then(|a| a.address.as_mut())
        {
            sa.address = "payments.example".into();
        }
    }
    assert_eq!(
        EndpointsResource::validate(cla).unwrap_err().field,
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    );
}
