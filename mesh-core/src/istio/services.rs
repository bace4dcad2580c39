//! The services of the mesh and their endpoints: what Kubernetes would provide (Services,
//! EndpointSlices, pods' labels and service accounts), written by hand for local use.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

/// A service, its ports and endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Short name (`payment-service`).
    pub name: String,
    /// Namespace (defaults to the file's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Ports. A service with one port may leave endpoints' `ports` out.
    pub ports: Vec<ServicePort>,
    /// The service accounts its workloads run as (their SPIFFE IDs are what mTLS accepts).
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<ServiceEndpoint>,
}

/// A service port.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port callers use.
    pub port: u16,
    /// Name (`grpc`, `http`).
    #[serde(default)]
    pub name: Option<String>,
    /// `GRPC`, `HTTP2`, `HTTP` (HTTP/1.1), or `TCP`; inferred from the name when absent.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One endpoint (a pod).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEndpoint {
    /// Address for the service's first port (`127.0.0.1:50051`).
    pub address: SocketAddr,
    /// Other ports: service port -> endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<u16, u16>,
    /// Labels (`version: v1`), matched by DestinationRule subsets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// `region/zone/subzone`.
    #[serde(default)]
    pub locality: Option<String>,
    /// `HEALTHY` (default), `UNHEALTHY`, `DRAINING`.
    #[serde(default)]
    pub health: Option<EndpointHealth>,
}

/// An endpoint's health, as the file states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointHealth {
    /// Serving.
    Healthy,
    /// Not serving.
    Unhealthy,
    /// Finishing its requests, taking no new ones.
    Draining,
}

impl Service {
    /// The namespace, or `default_ns`.
    pub fn namespace_or<'a>(&'a self, default_ns: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default_ns)
    }

    /// `name.namespace.svc.suffix`.
    pub fn fqdn(&self, default_ns: &str, suffix: &str) -> String {
        format!(
            "{}.{}.svc.{suffix}",
            self.name,
            self.namespace_or(default_ns)
        )
    }
}

impl ServicePort {
    /// Whether calls on this port are HTTP/2 (gRPC, HTTP2) rather than HTTP/1.1.
    pub fn is_http2(&self) -> bool {
        let proto = self
            .protocol
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or("")
            .to_ascii_lowercase();
        proto.starts_with("grpc") || proto.starts_with("http2") || proto.starts_with("h2")
    }
}
