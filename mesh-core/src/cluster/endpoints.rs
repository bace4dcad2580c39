use std::collections::BTreeMap;
use std::net::SocketAddr;

/// An endpoint's health as the control plane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Not known: used, as gRPC and Envoy do.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy: not used.
    Unhealthy,
    /// Draining: not used for new requests.
    Draining,
    /// Health check timed out: not used.
    Timeout,
    /// Degraded: not used (gRFC A27 uses only UNKNOWN and HEALTHY).
    Degraded,
}

impl HealthStatus {
    /// Whether new requests may go to an endpoint in this state (gRFC A27).
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }
}

/// Where an endpoint runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub address: SocketAddr,
    /// Its load-balancing weight (at least 1).
    pub weight: u32,
    /// Its health.
    pub health: HealthStatus,
    /// Labels (`version: v1`), used for subsets by the static file.
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// A healthy-by-default endpoint of weight 1.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: 1,
            health: HealthStatus::Unknown,
            labels: BTreeMap::new(),
        }
    }
}

/// The endpoints of one locality at one priority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalityEndpoints {
    /// The locality.
    pub locality: Locality,
    /// The locality's weight for locality-weighted balancing (0 = unset).
    pub weight: u32,
    /// Its priority: 0 is used first, higher ones on failover.
    pub priority: u32,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// All endpoints of a cluster (Envoy's `ClusterLoadAssignment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLoadAssignment {
    /// The EDS name.
    pub cluster_name: String,
    /// Endpoints grouped by locality and priority.
    pub localities: Vec<LocalityEndpoints>,
    /// Envoy's overprovisioning factor in percent (default 140).
    pub overprovisioning_factor: u32,
}

impl ClusterLoadAssignment {
    /// An assignment with these localities.
    pub fn new(cluster_name: impl Into<String>, localities: Vec<LocalityEndpoints>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            localities,
            overprovisioning_factor: 140,
        }
    }

    /// One locality of plain endpoints, priority 0.
    pub fn from_endpoints(cluster_name: impl Into<String>, endpoints: Vec<Endpoint>) -> Self {
        Self::new(
            cluster_name,
            vec![LocalityEndpoints {
                endpoints,
                ..LocalityEndpoints::default()
            }],
        )
    }

    /// Every endpoint, across localities and priorities.
    pub fn endpoints(&self) -> impl Iterator<Item = (&LocalityEndpoints, &Endpoint)> {
        self.localities
            .iter()
            .flat_map(|l| l.endpoints.iter().map(move |e| (l, e)))
    }
}
