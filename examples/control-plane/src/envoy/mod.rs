//! The mesh-core model -> Envoy v3 resources, as istiod's proxyless (`GENERATOR: grpc`)
//! generator names them: a client listener per `host:port` target whose HTTP connection
//! manager takes its routes from RDS, route configurations named `fqdn:port`, EDS clusters
//! named `outbound|port|subset|fqdn`, and their endpoints.

mod cluster;
pub mod inbound;
mod route;
pub mod sidecar;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{AggregatedConfigSource, ConfigSource};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use mesh_core::inbound::peer_authentication::inbound_policy;
use mesh_core::policy_file::PolicyFile;
use mesh_core::rbac::istio::Workload;
use mesh_core::Snapshot;
use mesh_xds_client::resource::{to_any, XdsType};

/// The fault filter's name: routes' `typed_per_filter_config` key.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// A client listener as istiod's gRPC generator sends it: an API listener whose HTTP
/// connection manager takes routes from RDS and runs the fault filter (configured per
/// route, off elsewhere) and the router.
fn listener(name: &str, route_config: &str) -> Listener {
    let filter = |name: &str, config: Any| HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: 2, // V3
                ..Default::default()
            }),
            route_config_name: route_config.to_owned(),
        })),
        http_filters: vec![
            filter(FAULT_FILTER, to_any(&HttpFault::default())),
            filter("envoy.filters.http.router", to_any(&Router::default())),
        ],
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(to_any(&hcm)),
        }),
        ..Default::default()
    }
}

/// Every resource to serve, by type and name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// type -> name -> resource.
    pub by_type: BTreeMap<XdsType, BTreeMap<String, Any>>,
    /// The sidecar shape's clusters, served instead of `by_type`'s to Envoy sidecar
    /// nodes (its listeners and routes, named apart, are in `by_type`).
    pub sidecar_clusters: BTreeMap<String, Any>,
}

impl Resources {
    /// Converts a snapshot's outbound side.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let mut by_type: BTreeMap<XdsType, BTreeMap<String, Any>> = BTreeMap::new();
        for t in XdsType::ALL {
            by_type.insert(t, BTreeMap::new());
        }
        let mut put = |t: XdsType, name: &str, any: Any| {
            by_type.entry(t).or_default().insert(name.to_owned(), any);
        };
        for l in s.outbound_listeners() {
            put(
                XdsType::Listener,
                l.target(),
                to_any(&listener(l.target(), l.route_config_name())),
            );
        }
        for rc in s.route_configs() {
            put(
                XdsType::RouteConfiguration,
                rc.name(),
                to_any(&route::route_config(rc)),
            );
        }
        for c in s.clusters() {
            put(XdsType::Cluster, c.name(), to_any(&cluster::cluster(c)));
        }
        for c in s.clusters() {
            if let Some(cla) = s.endpoints_of(c) {
                put(
                    XdsType::ClusterLoadAssignment,
                    &cla.cluster_name,
                    to_any(&cluster::endpoints(cla)),
                );
            }
        }
        Self {
            by_type,
            ..Self::default()
        }
    }

    /// Adds the sidecar shape (see [`sidecar`]) of `s` and `workloads`: its listeners and
    /// routes alongside the proxyless ones, its clusters apart.
    pub fn add_sidecar(
        &mut self,
        s: &Snapshot,
        workloads: &[InboundWorkload],
        catch_all: &mesh_core::inbound::InboundPolicy,
    ) {
        let shape = sidecar::sidecar_resources(s, workloads, catch_all);
        self.by_type
            .entry(XdsType::Listener)
            .or_default()
            .extend(shape.listeners);
        self.by_type
            .entry(XdsType::RouteConfiguration)
            .or_default()
            .extend(shape.routes);
        self.sidecar_clusters = shape.clusters;
    }

    /// Adds an inbound listener per workload address (every endpoint's address on every
    /// service port), with the PeerAuthentication mode and AuthorizationPolicies that
    /// select its labels in its namespace. Errors name the policy and field path.
    pub fn add_inbound(&mut self, file: &PolicyFile) -> Result<(), String> {
        self.add_inbound_workloads(&inbound_workloads(file)?);
        Ok(())
    }

    /// Adds the inbound listener of each workload.
    pub fn add_inbound_workloads(&mut self, workloads: &[InboundWorkload]) {
        let listeners = self.by_type.entry(XdsType::Listener).or_default();
        for w in workloads {
            let l = inbound::listener(w.addr, &w.policy);
            listeners.insert(l.name.clone(), to_any(&l));
        }
    }

    /// How many resources of a type.
    pub fn count(&self, t: XdsType) -> usize {
        self.by_type.get(&t).map_or(0, BTreeMap::len)
    }

    /// `listeners=12 routes=3 clusters=7 endpoints=7`.
    pub fn summary(&self) -> String {
        format!(
            "listeners={} routes={} clusters={} endpoints={}",
            self.count(XdsType::Listener),
            self.count(XdsType::RouteConfiguration),
            self.count(XdsType::Cluster),
            self.count(XdsType::ClusterLoadAssignment)
        )
    }
}

/// A workload's inbound listener: the address it serves, who it is, and its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundWorkload {
    /// The address (an endpoint's address on a service port).
    pub addr: std::net::SocketAddr,
    /// `service ADDR {labels}`, for messages.
    pub workload: String,
    /// Its TLS modes and authorization.
    pub policy: mesh_core::inbound::InboundPolicy,
}

/// The inbound policy of every workload address (every endpoint's address on every service
/// port), from the PeerAuthentications and AuthorizationPolicies that select its labels in
/// its namespace. Errors name the policy and field path.
pub fn inbound_workloads(file: &PolicyFile) -> Result<Vec<InboundWorkload>, String> {
    let ns = file.namespace();
    let peer = file.peer_authentication_objects();
    let authz = file.authorization_policy_objects();
    let mut out = Vec::new();
    for service in &file.services {
        let namespace = service.namespace_or(ns);
        for endpoint in &service.endpoints {
            let mut workload = Workload::new(namespace, endpoint.labels.clone());
            if let Some(root) = &file.root_namespace {
                workload = workload.with_root_namespace(root.clone());
            }
            let policy = inbound_policy(&peer, &authz, &workload).map_err(|e| e.to_string())?;
            let labels = endpoint
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            for (i, port) in service.ports.iter().enumerate() {
                let target = match endpoint.ports.get(&port.port) {
                    Some(p) => *p,
                    None if i == 0 => endpoint.address.port(),
                    None => continue,
                };
                let addr = std::net::SocketAddr::new(endpoint.address.ip(), target);
                out.push(InboundWorkload {
                    addr,
                    workload: format!("{} {addr} {{{labels}}}", service.name),
                    policy: policy.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The inbound policy of a workload in the input's namespace with no labels: what the
/// namespace- and mesh-wide PeerAuthentications and AuthorizationPolicies say, for ports
/// no service declares (`virtualInbound`'s catch-all chains).
pub fn namespace_default(file: &PolicyFile) -> Result<mesh_core::inbound::InboundPolicy, String> {
    let mut workload = Workload::new(
        file.namespace(),
        std::collections::BTreeMap::<String, String>::new(),
    );
    if let Some(root) = &file.root_namespace {
        workload = workload.with_root_namespace(root.clone());
    }
    inbound_policy(
        &file.peer_authentication_objects(),
        &file.authorization_policy_objects(),
        &workload,
    )
    .map_err(|e| e.to_string())
}

/// A protobuf duration.
pub(crate) fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests;
