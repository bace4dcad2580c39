//! Clusters (an upstream service, or one subset of it) and their endpoints.

mod endpoints;

pub use endpoints::{ClusterLoadAssignment, Endpoint, HealthStatus, Locality, LocalityEndpoints};

use std::time::Duration;

use crate::breaker::Thresholds;
use crate::lb::LbPolicy;
use crate::matcher::StringMatcher;
use crate::outlier::OutlierConfig;
use crate::retry::RetryBudgetConfig;
use crate::route::HashPolicy;

/// How a cluster learns its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Discovery {
    /// From EDS (or the static file), under this service name (the cluster name when `None`).
    Eds {
        /// The EDS resource name, when it differs from the cluster name.
        service_name: Option<String>,
    },
    /// One DNS name, resolved when connecting (gRFC A37's LOGICAL_DNS).
    LogicalDns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Which HTTP version the cluster's endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UpstreamProtocol {
    /// HTTP/2 only (gRPC).
    Http2,
    /// HTTP/1.1 only.
    Http1,
    /// Whatever the caller's request uses.
    #[default]
    Auto,
}

/// One certificate from a certificate provider instance (the bootstrap's
/// `certificate_providers`, or the static file's certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInstance {
    /// The provider instance (Istio: `default`).
    pub instance_name: String,
    /// The certificate within it (Istio: `default`, or `ROOTCA` for roots).
    pub certificate_name: String,
}

impl CertificateInstance {
    /// A certificate reference.
    pub fn new(instance_name: impl Into<String>, certificate_name: impl Into<String>) -> Self {
        Self {
            instance_name: instance_name.into(),
            certificate_name: certificate_name.into(),
        }
    }
}

/// TLS towards a cluster's endpoints (Envoy's `UpstreamTlsContext`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    /// SNI to send.
    pub sni: Option<String>,
    /// The server's URI SAN (its SPIFFE ID) must match one of these; empty accepts any
    /// certificate that chains to the roots.
    pub accepted_sans: Vec<StringMatcher>,
    /// The certificate we present (our SVID); `None` = no client certificate.
    pub identity: Option<CertificateInstance>,
    /// The roots the server is verified against.
    pub roots: Option<CertificateInstance>,
}

/// An upstream cluster and its traffic policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    name: String,
    /// How endpoints are found.
    pub discovery: Discovery,
    /// TLS towards endpoints; `None` = plaintext.
    pub tls: Option<UpstreamTls>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// HTTP version spoken to endpoints.
    pub protocol: UpstreamProtocol,
    /// Close a connection after this many requests (Istio `maxRequestsPerConnection`).
    pub max_requests_per_connection: Option<u32>,
    /// The service this cluster belongs to, for metrics (`destination_service`).
    pub service: Option<String>,
    /// The subset (`v1`), for display and metrics.
    pub subset: Option<String>,
    /// How endpoints are picked.
    pub lb: LbPolicy,
    /// Hash policies used by ring hash when the route has none (Istio's `consistentHash`).
    pub hash_policies: Vec<HashPolicy>,
    /// Circuit-breaker limits.
    pub circuit_breakers: Thresholds,
    /// Retry budget; `None` leaves only `max_retries` in force.
    pub retry_budget: Option<RetryBudgetConfig>,
    /// Outlier detection; `None` = off.
    pub outlier_detection: Option<OutlierConfig>,
}

impl Cluster {
    /// A cluster fed by EDS under its own name, plaintext, default policy.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            discovery: Discovery::Eds { service_name: None },
            tls: None,
            connect_timeout: Duration::from_secs(10),
            protocol: UpstreamProtocol::Auto,
            max_requests_per_connection: None,
            service: None,
            subset: None,
            lb: LbPolicy::RoundRobin,
            hash_policies: Vec::new(),
            circuit_breakers: Thresholds::default(),
            retry_budget: None,
            outlier_detection: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name its endpoints are published under.
    pub fn eds_name(&self) -> &str {
        match &self.discovery {
            Discovery::Eds {
                service_name: Some(s),
            } => s,
            _ => &self.name,
        }
    }
}
