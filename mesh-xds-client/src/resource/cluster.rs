//! CDS: clusters fed by EDS or a logical DNS name (gRFCs A27, A37).

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use super::listener::check_config_source;
use super::{FieldError, Resource, ResourceType, XdsType};
use std::sync::Arc;

/// An accepted cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterResource {
    /// The cluster as received.
    pub cluster: Cluster,
    /// The EDS resource holding its endpoints (`None` for a LOGICAL_DNS cluster).
    pub eds_service_name: Option<String>,
    /// The cluster translated.
    pub model: Arc<mesh_core::cluster::Cluster>,
    /// Sidecar shape: why the mesh cannot use this cluster (it is accepted, kept out of
    /// snapshots, and reported). Always `None` in the proxyless shape, which rejects such
    /// clusters.
    pub unsupported: Option<String>,
    /// Sidecar shape: what of it the mesh does not honour.
    pub skipped: Vec<String>,
}

impl ResourceType for ClusterResource {
    type Message = Cluster;
    const TYPE: XdsType = XdsType::Cluster;

    fn name(message: &Cluster) -> &str {
        &message.name
    }

    fn validate(cluster: Cluster) -> Result<Self, FieldError> {
        let kind = match &cluster.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
                .map_err(|_| FieldError::new("type", format!("unknown value {t}")))?,
            Some(ClusterDiscoveryType::ClusterType(custom)) => {
                return Err(FieldError::new(
                    "cluster_type",
                    format!("custom cluster type `{}` is not supported", custom.name),
                ))
            }
            None => DiscoveryType::Static,
        };
        let eds_service_name = match kind {
            DiscoveryType::Eds => {
                let eds = cluster
                    .eds_cluster_config
                    .as_ref()
                    .ok_or_else(|| FieldError::new("eds_cluster_config", "missing"))?;
                check_config_source(eds.eds_config.as_ref())
                    .map_err(|e| e.under("eds_cluster_config.eds_config"))?;
                Some(if eds.service_name.is_empty() {
                    cluster.name.clone()
                } else {
                    eds.service_name.clone()
                })
            }
            DiscoveryType::LogicalDns => {
                let hosts = cluster
                    .load_assignment
                    .as_ref()
                    .map(|la| {
                        la.endpoints
                            .iter()
                            .map(|l| l.lb_endpoints.len())
                            .sum::<usize>()
                    })
                    .unwrap_or(0);
                if hosts != 1 {
                    return Err(FieldError::new(
                        "load_assignment",
                        format!("a LOGICAL_DNS cluster needs exactly one endpoint, has {hosts}"),
                    ));
                }
                None
            }
            other => {
                return Err(FieldError::new(
                    "type",
                    format!("{} is not supported", other.as_str_name()),
                ))
            }
        };
        check_lb_policy(&cluster)?;
        let model = Arc::new(crate::translate::cluster(
            &cluster,
            eds_service_name.as_deref(),
        )?);
        Ok(Self {
            cluster,
            eds_service_name,
            model,
            unsupported: None,
            skipped: Vec::new(),
        })
    }

    fn validate_as(cluster: Cluster, shape: crate::shape::IstioShape) -> Result<Self, FieldError> {
        if !shape.is_sidecar() {
            return Self::validate(cluster);
        }
        let mut normalized = cluster.clone();
        let mut skipped = Vec::new();
        let result = crate::translate::sidecar::normalize_cluster(&mut normalized, &mut skipped)
            .and_then(|()| Self::validate(normalized).map_err(|e| e.to_string()));
        match result {
            Ok(mut valid) => {
                valid.cluster = cluster;
                valid.skipped = skipped;
                Ok(valid)
            }
            // istiod validated it; what fails here is what the mesh cannot do. Accepted (no
            // NACK), never used, reported by name.
            Err(why) => {
                tracing::info!(
                    cluster = cluster.name,
                    "sidecar shape: cluster not usable, skipped: {why}"
                );
                Ok(Self {
                    model: Arc::new(mesh_core::cluster::Cluster::new(cluster.name.clone())),
                    cluster,
                    eds_service_name: None,
                    unsupported: Some(why),
                    skipped,
                })
            }
        }
    }

    fn references(&self) -> Vec<(XdsType, String)> {
        self.eds_service_name
            .iter()
            .map(|n| (XdsType::ClusterLoadAssignment, n.clone()))
            .collect()
    }

    fn into_resource(self) -> Resource {
        Resource::Cluster(self.into())
    }

    fn message(&self) -> &Self::Message {
        &self.cluster
    }

    fn from_resource(resource: &Resource) -> Option<&Self> {
        match resource {
            Resource::Cluster(r) => Some(r),
            _ => None,
        }
    }
}

/// gRFCs A27, A42, A48: round robin, ring hash and least request are supported; a
/// `load_balancing_policy` (gRFC A52) takes precedence and is checked at translation.
fn check_lb_policy(cluster: &Cluster) -> Result<(), FieldError> {
    if cluster.load_balancing_policy.is_some() {
        return Ok(());
    }
    match LbPolicy::try_from(cluster.lb_policy) {
        Ok(LbPolicy::RoundRobin | LbPolicy::RingHash | LbPolicy::LeastRequest) => Ok(()),
        Ok(other) => Err(FieldError::new(
            "lb_policy",
            format!("{} is not supported", other.as_str_name()),
        )),
        Err(_) => Err(FieldError::new(
            "lb_policy",
            format!("unknown value {}", cluster.lb_policy),
        )),
    }
}
