//! One consistent [`Snapshot`] from the resource cache (gRFC A74).
//!
//! [`SnapshotAssembler::assemble`] walks the cascade from every watched listener and
//! builds a snapshot only when every resource on the way has been decided — received,
//! known not to exist, or rejected with no earlier version. While any is still awaited it
//! returns [`Incomplete`], so a listener is never published without its routes, nor a
//! route without its clusters and endpoints: the previous snapshot stays in force.
//!
//! Translation already happened when each resource was accepted; assembling only clones
//! `Arc`s, so an update of one resource costs a walk of the cascade, not a re-translation.
//! The one derived part — a route configuration with the listener's fault filter and
//! `max_stream_duration` applied — is cached and rebuilt only when its inputs change.
//!
//! ```
//! use std::time::Instant;
//! use mesh_xds_client::ads::{AdsConfig, AdsCore};
//! use mesh_xds_client::bootstrap::NodeConfig;
//! use mesh_xds_client::snapshot::SnapshotAssembler;
//!
//! let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), AdsConfig::default());
//! core.add_target("payment-service:8080", Instant::now());
//! let mut assembler = SnapshotAssembler::new("%s");
//! // Nothing received yet: no snapshot.
//! assert!(assembler.assemble(core.targets(), core.cache(), "").is_err());
//! ```

mod derive;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::route::{RouteAction, RouteConfig};
use mesh_core::snapshot::SnapshotBuilder;
use mesh_core::Snapshot;

use crate::ads::{ResourceCache, ResourceEntry, ResourceState};
use crate::resource::{ListenerModel, Resource, XdsType};
use crate::shape::{IstioShape, INBOUND_PREFIX};
use crate::translate::sidecar::PASSTHROUGH_CLUSTER;
use crate::translate::ClientRoutes;

/// A resource the snapshot waits for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waiting for {xds_type} resource {name:?}")]
pub struct Incomplete {
    /// Its type.
    pub xds_type: XdsType,
    /// Its name.
    pub name: String,
}

/// Builds snapshots from the cache; keeps the derived route configurations between calls.
#[derive(Debug, Default)]
pub struct SnapshotAssembler {
    template_prefix: String,
    template_suffix: String,
    derived: HashMap<String, derive::Derived>,
    shape: IstioShape,
}

/// What the cache says about one resource.
enum Lookup<'a> {
    /// Its accepted data.
    Present(&'a Resource),
    /// Decided absent: deleted, never existed, or rejected with nothing earlier.
    Absent,
    /// Not decided yet.
    Pending,
}

fn lookup<'a>(cache: &'a ResourceCache, t: XdsType, name: &str) -> Lookup<'a> {
    lookup_in(cache, t, name, false)
}

/// [`lookup`]; with `wildcard`, a name the cache does not hold once the server has
/// answered for the type is absent (it sends every resource of a wildcard type).
fn lookup_in<'a>(cache: &'a ResourceCache, t: XdsType, name: &str, wildcard: bool) -> Lookup<'a> {
    match cache.get(t, name) {
        None if wildcard && cache.has_answered(t) => Lookup::Absent,
        Some(ResourceEntry {
            resource: Some(r), ..
        }) => Lookup::Present(r),
        Some(e) if matches!(e.state, ResourceState::DoesNotExist | ResourceState::Nacked) => {
            Lookup::Absent
        }
        _ => Lookup::Pending,
    }
}

impl SnapshotAssembler {
    /// An assembler for a client whose outbound listener names are `template` with `%s`
    /// replaced by the target (the bootstrap's `client_default_listener_resource_name_template`;
    /// `%s` when there is none). Snapshot listeners are keyed by the target itself.
    pub fn new(template: &str) -> Self {
        let (prefix, suffix) = template.split_once("%s").unwrap_or(("", ""));
        Self {
            template_prefix: prefix.to_owned(),
            template_suffix: suffix.to_owned(),
            derived: HashMap::new(),
            shape: IstioShape::Proxyless,
        }
    }

    /// Reads targets as istiod's `shape` output lays them out: in sidecar shape an
    /// outbound target `host:port` resolves through the listener `0.0.0.0_PORT`, its route
    /// configuration and the virtual host whose domains match `host:port`, as an Envoy
    /// sidecar resolves it; an inbound target `virtualInbound/ADDR` is the policy of the
    /// `virtualInbound` chains for `ADDR`'s port.
    pub fn with_shape(mut self, shape: IstioShape) -> Self {
        self.shape = shape;
        self
    }

    /// The target (`payment-service:8080`) a listener name stands for.
    pub fn target_of<'a>(&self, listener_name: &'a str) -> &'a str {
        listener_name
            .strip_prefix(self.template_prefix.as_str())
            .and_then(|rest| rest.strip_suffix(self.template_suffix.as_str()))
            .unwrap_or(listener_name)
    }

    /// A snapshot of everything `targets` (listener names) lead to, or the first resource
    /// still awaited.
    pub fn assemble<'a>(
        &mut self,
        targets: impl IntoIterator<Item = &'a str>,
        cache: &ResourceCache,
        version: &str,
    ) -> Result<Snapshot, Incomplete> {
        let pending = |t: XdsType, name: &str| Incomplete {
            xds_type: t,
            name: name.to_owned(),
        };
        let mut b = Snapshot::builder().version(version);
        let mut clusters_seen = HashSet::new();
        let mut derived_used = HashSet::new();
        for listener_name in targets {
            if self.shape.is_sidecar() {
                b = self.add_sidecar_target(
                    b,
                    listener_name,
                    cache,
                    &mut clusters_seen,
                    &mut derived_used,
                )?;
                continue;
            }
            let listener = match lookup(cache, XdsType::Listener, listener_name) {
                Lookup::Present(Resource::Listener(l)) => l,
                Lookup::Pending => return Err(pending(XdsType::Listener, listener_name)),
                _ => continue,
            };
            let client = match &listener.model {
                ListenerModel::Server(server) => {
                    b = match server.address {
                        Some(addr) => b.inbound_listener_arc(addr, server.policy.clone()),
                        None => b.inbound_default_arc(server.policy.clone()),
                    };
                    continue;
                }
                ListenerModel::Client(client) => client,
                // Only in the sidecar shape, handled above.
                ListenerModel::Sidecar(_) => continue,
            };
            let target = self.target_of(listener_name);
            let (rc, faults) = match &client.routes {
                ClientRoutes::Inline(rc, faults) => (rc.clone(), faults.clone()),
                ClientRoutes::Rds(name) => match lookup(cache, XdsType::RouteConfiguration, name) {
                    Lookup::Present(Resource::RouteConfiguration(r)) => {
                        (r.model.clone(), r.fault_overrides.clone())
                    }
                    Lookup::Pending => return Err(pending(XdsType::RouteConfiguration, name)),
                    // The listener stays, without routes: its calls fail, as gRPC's do.
                    _ => {
                        b = b.listener(target, name);
                        continue;
                    }
                },
            };
            let rc = match self.derive(listener_name, &rc, &faults, client) {
                Some(derived) => {
                    derived_used.insert(derived.name().to_owned());
                    derived
                }
                None => rc,
            };
            b = b.listener(target, rc.name());
            b = self.add_clusters(b, &rc, cache, &mut clusters_seen)?;
            b = b.route_config_arc(rc);
        }
        self.derived.retain(|name, _| derived_used.contains(name));
        Ok(b.build())
    }

    /// One target of the sidecar shape (see [`SnapshotAssembler::with_shape`]). A target
    /// without a port, without an HTTP listener for its port, or whose virtual host only
    /// passes traffic through (`PassthroughCluster`) gets no listener: the mesh then calls
    /// it directly, as the sidecar would pass it through.
    fn add_sidecar_target(
        &mut self,
        mut b: SnapshotBuilder,
        listener_name: &str,
        cache: &ResourceCache,
        clusters_seen: &mut HashSet<String>,
        derived_used: &mut HashSet<String>,
    ) -> Result<SnapshotBuilder, Incomplete> {
        let pending = |t: XdsType, name: &str| Incomplete {
            xds_type: t,
            name: name.to_owned(),
        };
        let target = self.target_of(listener_name).to_owned();
        if let Some(addr) = target.strip_prefix(INBOUND_PREFIX) {
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                return Ok(b);
            };
            match lookup_in(cache, XdsType::Listener, "virtualInbound", true) {
                Lookup::Present(Resource::Listener(l)) => {
                    if let ListenerModel::Sidecar(s) = &l.model {
                        if let Some(policy) = s.inbound_policy(addr) {
                            b = b.inbound_listener_arc(addr, Arc::new(policy));
                        }
                    }
                }
                Lookup::Pending => return Err(pending(XdsType::Listener, "virtualInbound")),
                _ => {}
            }
            return Ok(b);
        }
        let Some(port) = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        else {
            return Ok(b);
        };
        let name = format!("0.0.0.0_{port}");
        let listener = match lookup_in(cache, XdsType::Listener, &name, true) {
            Lookup::Present(Resource::Listener(l)) => l,
            Lookup::Pending => return Err(pending(XdsType::Listener, &name)),
            _ => return Ok(b),
        };
        let ListenerModel::Sidecar(sidecar) = &listener.model else {
            return Ok(b);
        };
        let Some(client) = sidecar.http_client() else {
            return Ok(b);
        };
        let (rc, faults) = match &client.routes {
            ClientRoutes::Inline(rc, faults) => (rc.clone(), faults.clone()),
            ClientRoutes::Rds(rds) => match lookup(cache, XdsType::RouteConfiguration, rds) {
                Lookup::Present(Resource::RouteConfiguration(r)) => {
                    (r.model.clone(), r.fault_overrides.clone())
                }
                Lookup::Pending => return Err(pending(XdsType::RouteConfiguration, rds)),
                _ => return Ok(b),
            },
        };
        let passthrough_only = match rc.virtual_host_for(&target) {
            None => true,
            Some(vh) => vh.routes().iter().all(|r| match r.action() {
                RouteAction::Forward(f) => f
                    .cluster_names()
                    .into_iter()
                    .all(|c| c == PASSTHROUGH_CLUSTER),
                _ => false,
            }),
        };
        if passthrough_only {
            return Ok(b);
        }
        let rc = match self.derive(&name, &rc, &faults, client) {
            Some(derived) => {
                derived_used.insert(derived.name().to_owned());
                derived
            }
            None => rc,
        };
        b = b.listener(target.as_str(), rc.name());
        b = self.add_clusters(b, &rc, cache, clusters_seen)?;
        Ok(b.route_config_arc(rc))
    }

    fn add_clusters(
        &self,
        mut b: SnapshotBuilder,
        rc: &RouteConfig,
        cache: &ResourceCache,
        seen: &mut HashSet<String>,
    ) -> Result<SnapshotBuilder, Incomplete> {
        let names = rc
            .virtual_hosts()
            .iter()
            .flat_map(|vh| vh.routes())
            .filter_map(|r| match r.action() {
                RouteAction::Forward(f) => Some(f.cluster_names()),
                _ => None,
            })
            .flatten();
        for name in names {
            if !seen.insert(name.to_owned()) {
                continue;
            }
            let wildcard = self.shape.is_sidecar();
            let cluster = match lookup_in(cache, XdsType::Cluster, name, wildcard) {
                // Sidecar shape: a cluster the mesh cannot use stays out; calls to it fail.
                Lookup::Present(Resource::Cluster(c)) if c.unsupported.is_some() => continue,
                Lookup::Present(Resource::Cluster(c)) => c,
                Lookup::Pending => {
                    return Err(Incomplete {
                        xds_type: XdsType::Cluster,
                        name: name.to_owned(),
                    })
                }
                _ => continue,
            };
            b = b.cluster_arc(cluster.model.clone());
            if let Some(eds) = &cluster.eds_service_name {
                match lookup(cache, XdsType::ClusterLoadAssignment, eds) {
                    Lookup::Present(Resource::ClusterLoadAssignment(e)) => {
                        b = b.endpoints_arc(e.model.clone());
                    }
                    Lookup::Pending => {
                        return Err(Incomplete {
                            xds_type: XdsType::ClusterLoadAssignment,
                            name: eds.clone(),
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
