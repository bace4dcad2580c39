//! EDS: a cluster's endpoints by locality and priority.

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};

use super::{FieldError, Resource, ResourceType, XdsType};

/// An accepted endpoint assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointsResource {
    /// The assignment as received.
    pub assignment: ClusterLoadAssignment,
    /// The assignment translated.
    pub model: std::sync::Arc<mesh_core::cluster::ClusterLoadAssignment>,
}

impl ResourceType for EndpointsResource {
    type Message = ClusterLoadAssignment;
    const TYPE: XdsType = XdsType::ClusterLoadAssignment;

    fn name(message: &ClusterLoadAssignment) -> &str {
        &message.cluster_name
    }

    fn validate(assignment: ClusterLoadAssignment) -> Result<Self, FieldError> {
        let mut priorities = Vec::new();
        for (l, locality) in assignment.endpoints.iter().enumerate() {
            let at = format!("endpoints[{l}]");
            priorities.push(locality.priority);
            for (e, endpoint) in locality.lb_endpoints.iter().enumerate() {
                check_endpoint(endpoint)
                    .map_err(|err| err.under(&format!("{at}.lb_endpoints[{e}]")))?;
            }
        }
        // gRFC A27: priorities must be contiguous from 0.
        priorities.sort_unstable();
        priorities.dedup();
        if let Some((i, p)) = priorities
            .iter()
            .enumerate()
            .find(|(i, p)| u32::try_from(*i).ok() != Some(**p))
        {
            return Err(FieldError::new(
                "endpoints",
                format!("priorities are not contiguous: {p} present but not {i}"),
            ));
        }
        let model = std::sync::Arc::new(crate::translate::cluster_load_assignment(&assignment)?);
        Ok(Self { assignment, model })
    }

    fn references(&self) -> Vec<(XdsType, String)> {
        Vec::new()
    }

    fn into_resource(self) -> Resource {
        Resource::ClusterLoadAssignment(self.into())
    }

    fn message(&self) -> &Self::Message {
        &self.assignment
    }

    fn from_resource(resource: &Resource) -> Option<&Self> {
        match resource {
            Resource::ClusterLoadAssignment(r) => Some(r),
            _ => None,
        }
    }
}

fn check_endpoint(endpoint: &LbEndpoint) -> Result<(), FieldError> {
    let Some(HostIdentifier::Endpoint(ep)) = &endpoint.host_identifier else {
        return Err(FieldError::new("endpoint", "missing"));
    };
    let Some(AddressKind::SocketAddress(sa)) = ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err(FieldError::new(
            "endpoint.address.socket_address",
            "missing",
        ));
    };
    if sa.address.is_empty() {
        return Err(FieldError::new(
            "endpoint.address.socket_address.address",
            "empty",
        ));
    }
    match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) if p <= u32::from(u16::MAX) => Ok(()),
        Some(PortSpecifier::PortValue(p)) => Err(FieldError::new(
            "endpoint.address.socket_address.port_value",
            format!("{p} is not a port"),
        )),
        _ => Err(FieldError::new(
            "endpoint.address.socket_address.port_value",
            "missing",
        )),
    }
}
