//! ClusterLoadAssignment -> [`mesh_core::cluster::ClusterLoadAssignment`] (gRFC A27).
//!
//! Localities keep their priority and weight; an explicit locality weight of 0 drops the
//! locality, as gRPC does (unset stays 0, "no locality weighting"). Endpoints keep their
//! health status: the model's [`HealthStatus::is_usable`] is what leaves UNHEALTHY,
//! DRAINING, TIMEOUT and DEGRADED endpoints unpicked, as gRPC ignores them.
//! `drop_overloads` is not supported and ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::HealthStatus as PbHealth;
use envoy_types::pb::envoy::config::endpoint::v3 as pb;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::google::protobuf::value::Kind;
use mesh_core::cluster::{
    ClusterLoadAssignment, Endpoint, HealthStatus, Locality, LocalityEndpoints,
};

use crate::resource::FieldError;

/// Translates an endpoint assignment (named by its EDS name).
pub fn cluster_load_assignment(
    cla: &pb::ClusterLoadAssignment,
) -> Result<ClusterLoadAssignment, FieldError> {
    let mut localities = Vec::with_capacity(cla.endpoints.len());
    for (l, group) in cla.endpoints.iter().enumerate() {
        let at = format!("endpoints[{l}]");
        let weight = group.load_balancing_weight.as_ref().map(|w| w.value);
        if weight == Some(0) {
            continue;
        }
        let mut endpoints = Vec::with_capacity(group.lb_endpoints.len());
        for (e, ep) in group.lb_endpoints.iter().enumerate() {
            endpoints
                .push(endpoint(ep).map_err(|err| err.under(&format!("{at}.lb_endpoints[{e}]")))?);
        }
        let locality = group.locality.as_ref().map(|loc| Locality {
            region: loc.region.clone(),
            zone: loc.zone.clone(),
            sub_zone: loc.sub_zone.clone(),
        });
        localities.push(LocalityEndpoints {
            locality: locality.unwrap_or_default(),
            weight: weight.unwrap_or(0),
            priority: group.priority,
            endpoints,
        });
    }
    let mut out = ClusterLoadAssignment::new(cla.cluster_name.clone(), localities);
    if let Some(f) = cla
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
    {
        if f.value == 0 {
            return Err(FieldError::new(
                "policy.overprovisioning_factor",
                "must be above 0",
            ));
        }
        out.overprovisioning_factor = f.value;
    }
    Ok(out)
}

fn endpoint(ep: &pb::LbEndpoint) -> Result<Endpoint, FieldError> {
    let Some(HostIdentifier::Endpoint(e)) = &ep.host_identifier else {
        return Err(FieldError::new("endpoint", "missing"));
    };
    let at = "endpoint.address.socket_address";
    let Some(AddressKind::SocketAddress(sa)) = e.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err(FieldError::new(at, "missing"));
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        FieldError::new(
            format!("{at}.address"),
            format!("`{}` is not an IP address", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).ok(),
        _ => None,
    }
    .ok_or_else(|| FieldError::new(format!("{at}.port_value"), "missing or not a port"))?;
    let mut out = Endpoint::new(SocketAddr::new(ip, port));
    // Envoy requires a weight of at least 1; gRPC reads 0 and unset as 1.
    out.weight = ep
        .load_balancing_weight
        .as_ref()
        .map_or(1, |w| w.value.max(1));
    out.health = match PbHealth::try_from(ep.health_status) {
        Ok(PbHealth::Unknown) | Err(_) => HealthStatus::Unknown,
        Ok(PbHealth::Healthy) => HealthStatus::Healthy,
        Ok(PbHealth::Unhealthy) => HealthStatus::Unhealthy,
        Ok(PbHealth::Draining) => HealthStatus::Draining,
        Ok(PbHealth::Timeout) => HealthStatus::Timeout,
        Ok(PbHealth::Degraded) => HealthStatus::Degraded,
    };
    out.labels = labels(ep);
    Ok(out)
}

/// String values under the `envoy.lb` metadata key, which Envoy's subset balancing reads.
fn labels(ep: &pb::LbEndpoint) -> BTreeMap<String, String> {
    ep.metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.lb"))
        .map(|s| {
            s.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
