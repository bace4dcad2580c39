//! The immutable view of the whole policy a service runs on.
//!
//! A [`Snapshot`] is built once (from xDS, a static file or defaults), links listeners to
//! their route configurations up front, and is then only read. [`Snapshot::validate`] says
//! which references dangle, for sources that must be complete (the static file).

use std::collections::BTreeMap;
use std::sync::Arc;

use std::net::SocketAddr;

use crate::cluster::{Cluster, ClusterLoadAssignment};
use crate::inbound::InboundPolicy;
use crate::route::{RouteAction, RouteConfig};

/// Looked up by name on every request: foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An outbound target (`payment-service:8080`) and the routes that serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundListener {
    target: String,
    route_config_name: String,
    route_config: Option<Arc<RouteConfig>>,
}

impl OutboundListener {
    /// The target this listener serves.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The name of its route configuration.
    pub fn route_config_name(&self) -> &str {
        &self.route_config_name
    }

    /// Its route configuration, when the snapshot has it.
    pub fn route_config(&self) -> Option<&Arc<RouteConfig>> {
        self.route_config.as_ref()
    }
}

/// A reference in the snapshot that points at nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A listener names a route configuration the snapshot lacks.
    #[error("listener {target:?} uses route configuration {route_config:?}, which is not defined")]
    MissingRouteConfig {
        /// The listener's target.
        target: String,
        /// The missing route configuration.
        route_config: String,
    },
    /// A route sends to a cluster the snapshot lacks.
    #[error("route {route:?} in route configuration {route_config:?} sends to cluster {cluster:?}, which is not defined")]
    MissingCluster {
        /// The route configuration.
        route_config: String,
        /// The route (its name, or its index).
        route: String,
        /// The missing cluster.
        cluster: String,
    },
}

/// The whole policy of one service at one moment. Immutable; share it behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    version: String,
    outbound: BTreeMap<String, OutboundListener>,
    route_configs: HashMap<String, Arc<RouteConfig>>,
    clusters: HashMap<String, Arc<Cluster>>,
    endpoints: HashMap<String, Arc<ClusterLoadAssignment>>,
    inbound_default: Option<Arc<InboundPolicy>>,
    inbound_by_addr: BTreeMap<SocketAddr, Arc<InboundPolicy>>,
}

impl Snapshot {
    /// An empty snapshot: every target falls back to DNS with default settings.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Starts building a snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// A builder that starts from this snapshot's contents, to change a part of it.
    pub fn to_builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            version: self.version.clone(),
            listeners: self
                .outbound
                .values()
                .map(|l| (l.target.clone(), l.route_config_name.clone()))
                .collect(),
            route_configs: self.route_configs.clone(),
            clusters: self.clusters.clone(),
            endpoints: self.endpoints.clone(),
            inbound_default: self.inbound_default.clone(),
            inbound_by_addr: self.inbound_by_addr.clone(),
        }
    }

    /// The inbound policy of the listener on `local`: the one for that exact address, else
    /// the one for the port on any address (`0.0.0.0:port` or `[::]:port`), else the
    /// workload's default. `None` when the policy says nothing about inbound traffic.
    pub fn inbound_for(&self, local: SocketAddr) -> Option<&Arc<InboundPolicy>> {
        self.inbound_by_addr
            .get(&local)
            .or_else(|| {
                let any4 = SocketAddr::from(([0, 0, 0, 0], local.port()));
                let any6 = SocketAddr::from(([0u16; 8], local.port()));
                self.inbound_by_addr
                    .get(&any4)
                    .or_else(|| self.inbound_by_addr.get(&any6))
            })
            .or(self.inbound_default.as_ref())
    }

    /// Every inbound policy bound to an address.
    pub fn inbound_listeners(&self) -> impl Iterator<Item = (&SocketAddr, &Arc<InboundPolicy>)> {
        self.inbound_by_addr.iter()
    }

    /// The workload-wide inbound policy.
    pub fn inbound_default(&self) -> Option<&Arc<InboundPolicy>> {
        self.inbound_default.as_ref()
    }

    /// A label for this snapshot (the xDS versions, or the policy file's digest).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The outbound listener for `target` (`host:port`).
    pub fn outbound(&self, target: &str) -> Option<&OutboundListener> {
        self.outbound.get(target)
    }

    /// Every outbound listener, by target.
    pub fn outbound_listeners(&self) -> impl Iterator<Item = &OutboundListener> {
        self.outbound.values()
    }

    /// A route configuration by name.
    pub fn route_config(&self, name: &str) -> Option<&Arc<RouteConfig>> {
        self.route_configs.get(name)
    }

    /// Every route configuration.
    pub fn route_configs(&self) -> impl Iterator<Item = &Arc<RouteConfig>> {
        self.route_configs.values()
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Every cluster.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }

    /// The endpoints of a cluster (looked up by its EDS name).
    pub fn endpoints_of(&self, cluster: &Cluster) -> Option<&Arc<ClusterLoadAssignment>> {
        self.endpoints.get(cluster.eds_name())
    }

    /// Endpoints by EDS name.
    pub fn endpoints(&self, eds_name: &str) -> Option<&Arc<ClusterLoadAssignment>> {
        self.endpoints.get(eds_name)
    }

    /// Every dangling reference: listeners without route configurations, routes to
    /// clusters that do not exist.
    pub fn validate(&self) -> Result<(), Vec<SnapshotError>> {
        let mut errors = Vec::new();
        for l in self.outbound.values() {
            if l.route_config.is_none() {
                errors.push(SnapshotError::MissingRouteConfig {
                    target: l.target.clone(),
                    route_config: l.route_config_name.clone(),
                });
            }
        }
        let mut names: Vec<_> = self.route_configs.keys().collect();
        names.sort();
        for name in names {
            let rc = &self.route_configs[name];
            for vh in rc.virtual_hosts() {
                for (i, route) in vh.routes().iter().enumerate() {
                    let RouteAction::Forward(fwd) = route.action() else {
                        continue;
                    };
                    for cluster in fwd.cluster_names() {
                        if !self.clusters.contains_key(cluster) {
                            errors.push(SnapshotError::MissingCluster {
                                route_config: rc.name().to_owned(),
                                route: if route.name().is_empty() {
                                    format!("{}[{i}]", vh.name())
                                } else {
                                    route.name().to_owned()
                                },
                                cluster: cluster.to_owned(),
                            });
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Collects the parts of a [`Snapshot`]; [`build`](Self::build) links them.
#[derive(Debug, Clone, Default)]
pub struct SnapshotBuilder {
    version: String,
    listeners: BTreeMap<String, String>,
    route_configs: HashMap<String, Arc<RouteConfig>>,
    clusters: HashMap<String, Arc<Cluster>>,
    endpoints: HashMap<String, Arc<ClusterLoadAssignment>>,
    inbound_default: Option<Arc<InboundPolicy>>,
    inbound_by_addr: BTreeMap<SocketAddr, Arc<InboundPolicy>>,
}

impl SnapshotBuilder {
    /// Sets the inbound policy of every listener that has none of its own.
    pub fn inbound_default(mut self, policy: Option<InboundPolicy>) -> Self {
        self.inbound_default = policy.map(Arc::new);
        self
    }

    /// Sets (or with `None`, removes) the inbound policy of the listener on `addr`.
    pub fn inbound_listener(mut self, addr: SocketAddr, policy: Option<InboundPolicy>) -> Self {
        match policy {
            Some(p) => {
                self.inbound_by_addr.insert(addr, Arc::new(p));
            }
            None => {
                self.inbound_by_addr.remove(&addr);
            }
        }
        self
    }

    /// Sets the version label.
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// Serves `target` with the route configuration named `route_config`.
    pub fn listener(mut self, target: &str, route_config: &str) -> Self {
        self.listeners
            .insert(target.to_owned(), route_config.to_owned());
        self
    }

    /// Adds or replaces a route configuration.
    pub fn route_config(mut self, rc: RouteConfig) -> Self {
        self.route_configs
            .insert(rc.name().to_owned(), Arc::new(rc));
        self
    }

    /// Adds or replaces a cluster.
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.clusters
            .insert(cluster.name().to_owned(), Arc::new(cluster));
        self
    }

    /// Adds or replaces a cluster's endpoints.
    pub fn endpoints(mut self, cla: ClusterLoadAssignment) -> Self {
        self.endpoints
            .insert(cla.cluster_name.clone(), Arc::new(cla));
        self
    }

    /// Adds or replaces a route configuration already shared behind an `Arc`, so a source
    /// that keeps translated parts (the xDS client) reuses them across snapshots.
    pub fn route_config_arc(mut self, rc: Arc<RouteConfig>) -> Self {
        self.route_configs.insert(rc.name().to_owned(), rc);
        self
    }

    /// Adds or replaces a shared cluster (see [`route_config_arc`](Self::route_config_arc)).
    pub fn cluster_arc(mut self, cluster: Arc<Cluster>) -> Self {
        self.clusters.insert(cluster.name().to_owned(), cluster);
        self
    }

    /// Adds or replaces shared endpoints (see [`route_config_arc`](Self::route_config_arc)).
    pub fn endpoints_arc(mut self, cla: Arc<ClusterLoadAssignment>) -> Self {
        self.endpoints.insert(cla.cluster_name.clone(), cla);
        self
    }

    /// Sets the shared inbound policy of the listener on `addr`.
    pub fn inbound_listener_arc(mut self, addr: SocketAddr, policy: Arc<InboundPolicy>) -> Self {
        self.inbound_by_addr.insert(addr, policy);
        self
    }

    /// Sets the shared inbound policy of every listener that has none of its own.
    pub fn inbound_default_arc(mut self, policy: Arc<InboundPolicy>) -> Self {
        self.inbound_default = Some(policy);
        self
    }

    /// Removes the listener for `target`.
    pub fn remove_listener(mut self, target: &str) -> Self {
        self.listeners.remove(target);
        self
    }

    /// Removes a cluster (its endpoints stay until removed too).
    pub fn remove_cluster(mut self, name: &str) -> Self {
        self.clusters.remove(name);
        self
    }

    /// Links listeners to route configurations and freezes the result.
    pub fn build(self) -> Snapshot {
        let outbound = self
            .listeners
            .into_iter()
            .map(|(target, rc_name)| {
                let route_config = self.route_configs.get(&rc_name).cloned();
                let l = OutboundListener {
                    target: target.clone(),
                    route_config_name: rc_name,
                    route_config,
                };
                (target, l)
            })
            .collect();
        Snapshot {
            version: self.version,
            outbound,
            route_configs: self.route_configs,
            clusters: self.clusters,
            endpoints: self.endpoints,
            inbound_default: self.inbound_default,
            inbound_by_addr: self.inbound_by_addr,
        }
    }
}

#[cfg(test)]
mod tests;
