//! The ADS protocol, state-of-the-world and incremental (delta) flavours, as a state
//! machine without I/O.
//!
//! [`AdsCore`] is fed what happens — a stream opened or closed, a response received, time
//! passing — and answers with the [`DiscoveryRequest`]s to send ([`AdsCore::poll_request`],
//! or [`AdsCore::poll_delta_request`] when [`AdsConfig::protocol`] is [`Protocol::Delta`]),
//! the changes for watchers ([`AdsCore::poll_event`]) and when it next needs the clock
//! ([`AdsCore::poll_timeout`]). It holds no timer and reads no clock: every call that
//! depends on time takes an [`Instant`], so tests drive it synchronously.
//!
//! What it implements:
//! - per type (LDS, RDS, CDS, EDS): the subscribed names, the last accepted version, the
//!   last nonce; the node in the first request of each stream;
//! - ACK (the response's version and nonce) and NACK (the previous version, the nonce and
//!   an `INVALID_ARGUMENT` `error_detail` naming each rejected resource and field);
//! - gRFC A46: valid resources of a response are applied even when others are rejected;
//! - deletion of LDS/CDS resources a response no longer lists (unless
//!   `ignore_resource_deletion`, gRFC A53), and gRFC A57's does-not-exist timer;
//! - the cascade: targets -> listeners -> route configurations -> clusters -> endpoints,
//!   with names no longer referenced unsubscribed;
//! - delta: only the names subscribed or unsubscribed since the last request, per-resource
//!   versions, `removed_resources`, ACK/NACK by nonce, and `initial_resource_versions` on a
//!   new stream so the cache is not sent again (`delta.rs`); everything else is shared;
//! - per type, how many responses were accepted and rejected ([`AdsCore::update_counts`]).
//!
//! ```
//! use std::time::Instant;
//! use mesh_xds_client::ads::{AdsConfig, AdsCore};
//! use mesh_xds_client::bootstrap::NodeConfig;
//!
//! let mut core = AdsCore::new(NodeConfig::new("node-1").to_proto(), AdsConfig::default());
//! let now = Instant::now();
//! core.add_target("payment-service:8080", now);
//! core.on_stream_start(now);
//! let first = core.poll_request().expect("an LDS subscription");
//! assert!(first.node.is_some());
//! assert_eq!(first.resource_names, ["payment-service:8080"]);
//! ```

mod cache;
mod delta;
mod response;

pub use cache::{ResourceCache, ResourceEntry, ResourceState, UpdateFailure};
pub use response::{ProtocolError, ResponseOutcome};

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;

use crate::resource::{ResourceError, XdsType};
use crate::shape::IstioShape;

/// The name that subscribes a whole type (xDS wildcard).
pub(crate) const WILDCARD: &str = "*";

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// The flavour of the ADS protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `StreamAggregatedResources`: every response carries the whole set (gRPC's default).
    #[default]
    StateOfTheWorld,
    /// `DeltaAggregatedResources`: incremental requests and responses.
    Delta,
}

/// How many responses of one type were accepted (ACKed) and rejected (NACKed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UpdateCounts {
    /// Responses ACKed.
    pub accepted: u64,
    /// Responses NACKed (some resource in them was rejected).
    pub rejected: u64,
}

/// How the core behaves; the defaults are gRPC's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdsConfig {
    /// Keep LDS/CDS resources that a response stops listing (gRFC A53's
    /// `ignore_resource_deletion` server feature).
    pub ignore_resource_deletion: bool,
    /// How long after subscribing, with the stream up, a resource that has not arrived is
    /// declared missing (gRFC A57: 15 seconds).
    pub does_not_exist_timeout: Duration,
    /// The certificate provider instances the bootstrap defines; a TLS context naming
    /// another one is rejected (gRFC A29). `None` skips the check.
    pub certificate_providers: Option<BTreeSet<String>>,
    /// The protocol flavour; the transport may change it per server
    /// ([`AdsCore::set_protocol`]).
    pub protocol: Protocol,
    /// Which of istiod's outputs to take ([`IstioShape`]): in sidecar shape listeners and
    /// clusters are subscribed by wildcard and Envoy's resources are read leniently.
    pub shape: IstioShape,
}

impl Default for AdsConfig {
    fn default() -> Self {
        Self {
            ignore_resource_deletion: false,
            does_not_exist_timeout: Duration::from_secs(15),
            certificate_providers: None,
            protocol: Protocol::StateOfTheWorld,
            shape: IstioShape::Proxyless,
        }
    }
}

impl AdsConfig {
    /// Sets [`AdsConfig::ignore_resource_deletion`].
    pub fn with_ignore_resource_deletion(mut self, yes: bool) -> Self {
        self.ignore_resource_deletion = yes;
        self
    }

    /// Sets [`AdsConfig::certificate_providers`].
    pub fn with_certificate_providers(mut self, names: Option<BTreeSet<String>>) -> Self {
        self.certificate_providers = names;
        self
    }

    /// Sets [`AdsConfig::protocol`].
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets [`AdsConfig::shape`].
    pub fn with_shape(mut self, shape: IstioShape) -> Self {
        self.shape = shape;
        self
    }

    /// Sets [`AdsConfig::does_not_exist_timeout`].
    pub fn with_does_not_exist_timeout(mut self, timeout: Duration) -> Self {
        self.does_not_exist_timeout = timeout;
        self
    }
}

/// A change for the application's watchers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum XdsEvent {
    /// New data was accepted for a resource.
    Updated {
        /// Its type.
        xds_type: XdsType,
        /// Its name.
        name: String,
    },
    /// The resource was deleted, or is known not to exist (timer or server).
    DoesNotExist {
        /// Its type.
        xds_type: XdsType,
        /// Its name.
        name: String,
    },
    /// An update of the resource was rejected; its previous data, if any, stays.
    Rejected {
        /// Its type.
        xds_type: XdsType,
        /// Its name.
        name: String,
        /// Why.
        error: ResourceError,
    },
}

/// Per-type protocol state.
#[derive(Debug, Default)]
struct TypeState {
    /// The names the server was (or is about to be) told.
    subscribed: BTreeSet<String>,
    /// The last accepted `version_info`.
    version: String,
    /// The nonce of the last response on this stream (delta: not yet replied to).
    nonce: String,
    /// The NACK message for the next request.
    pending_error: Option<String>,
    /// Delta: the names the server has been told on this stream.
    sent: BTreeSet<String>,
    /// Delta: no request of this type has been sent on this stream yet.
    first_on_stream: bool,
}

/// The sans-I/O ADS client; see the [module docs](self).
#[derive(Debug)]
pub struct AdsCore {
    node: Node,
    config: AdsConfig,
    targets: BTreeSet<String>,
    types: [TypeState; 4],
    cache: ResourceCache,
    /// Types with a request to send, in the order they became due.
    queue: VecDeque<XdsType>,
    events: VecDeque<XdsEvent>,
    connected: bool,
    node_sent: bool,
    protocol: Protocol,
    /// Whether the cached per-resource versions came from this flavour (delta sends them
    /// back in `initial_resource_versions`; state-of-the-world versions mean nothing there).
    versions_reusable: bool,
    counts: [UpdateCounts; 4],
}

impl AdsCore {
    /// A core for this node (sent in the first request of every stream).
    pub fn new(node: Node, config: AdsConfig) -> Self {
        let mut types: [TypeState; 4] = Default::default();
        if config.shape.is_sidecar() {
            for t in [XdsType::Listener, XdsType::Cluster] {
                types[t.index()].subscribed = BTreeSet::from([WILDCARD.to_owned()]);
            }
        }
        Self {
            node,
            targets: BTreeSet::new(),
            types,
            cache: ResourceCache::default(),
            queue: VecDeque::new(),
            events: VecDeque::new(),
            connected: false,
            node_sent: false,
            protocol: config.protocol,
            versions_reusable: true,
            counts: Default::default(),
            config,
        }
    }

    /// Starts watching a listener (an outbound target's or an inbound listener's name).
    pub fn add_target(&mut self, listener_name: &str, now: Instant) {
        if self.targets.insert(listener_name.to_owned()) {
            self.sync_subscriptions(now);
        }
    }

    /// Stops watching a listener; what only it referenced is unsubscribed.
    pub fn remove_target(&mut self, listener_name: &str, now: Instant) {
        if self.targets.remove(listener_name) {
            self.sync_subscriptions(now);
        }
    }

    /// The protocol flavour spoken on the next stream; the cache is kept. Takes effect at
    /// the next [`AdsCore::on_stream_start`] (call it while no stream is open).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        if protocol != self.protocol {
            self.protocol = protocol;
            self.versions_reusable = false;
        }
    }

    /// Whether LDS/CDS resources the server stops sending are kept (gRFC A53); the
    /// transport sets it per server. Takes effect with the next response.
    pub fn set_ignore_resource_deletion(&mut self, yes: bool) {
        self.config.ignore_resource_deletion = yes;
    }

    /// The protocol flavour in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How many responses of a type were accepted and rejected.
    pub fn update_counts(&self, xds_type: XdsType) -> UpdateCounts {
        self.counts[xds_type.index()]
    }

    /// Whether a watched resource has neither data nor a does-not-exist verdict (gRFC A71
    /// falls back to another server only then).
    pub fn has_uncached(&self) -> bool {
        self.cache
            .iter()
            .any(|(_, _, e)| e.resource.is_none() && e.state != ResourceState::DoesNotExist)
    }

    /// The watched listener names.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(String::as_str)
    }

    /// A new stream is open: every subscription is sent again with the last accepted
    /// version and no nonce, the node goes in the first request, and the does-not-exist
    /// timers of resources still without data start.
    pub fn on_stream_start(&mut self, now: Instant) {
        self.connected = true;
        self.node_sent = false;
        self.queue.clear();
        for t in XdsType::ALL {
            let state = &mut self.types[t.index()];
            state.nonce.clear();
            state.pending_error = None;
            state.sent.clear();
            state.first_on_stream = true;
            if !state.subscribed.is_empty() {
                self.queue.push_back(t);
            }
        }
        let deadline = now + self.config.does_not_exist_timeout;
        for (_, _, entry) in self.cache.entries_mut() {
            if entry.resource.is_none() && entry.state == ResourceState::Requested {
                entry.does_not_exist_at = Some(deadline);
            }
        }
    }

    /// The stream is gone: nothing is sent until the next [`AdsCore::on_stream_start`], and
    /// the does-not-exist timers stop (gRFC A57). The cache is kept.
    pub fn on_stream_closed(&mut self) {
        if self.connected && self.protocol == Protocol::Delta {
            // Versions accepted on a delta stream are worth offering to the next one.
            self.versions_reusable = true;
        }
        self.connected = false;
        self.queue.clear();
        for (_, _, entry) in self.cache.entries_mut() {
            entry.does_not_exist_at = None;
        }
    }

    /// Whether a stream is open.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The next request to send on the open stream, if any.
    pub fn poll_request(&mut self) -> Option<DiscoveryRequest> {
        if !self.connected || self.protocol != Protocol::StateOfTheWorld {
            return None;
        }
        let t = self.queue.pop_front()?;
        let state = &mut self.types[t.index()];
        let node = if self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.node.clone())
        };
        Some(DiscoveryRequest {
            version_info: state.version.clone(),
            node,
            // Wildcard, as Envoy asks for it: no names.
            resource_names: state
                .subscribed
                .iter()
                .filter(|n| *n != WILDCARD)
                .cloned()
                .collect(),
            type_url: t.type_url().to_owned(),
            response_nonce: state.nonce.clone(),
            error_detail: state.pending_error.take().map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..DiscoveryRequest::default()
        })
    }

    /// The next change for watchers, if any. Drain after every call that feeds the core.
    pub fn poll_event(&mut self) -> Option<XdsEvent> {
        self.events.pop_front()
    }

    /// When [`AdsCore::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cache
            .iter()
            .filter_map(|(_, _, e)| e.does_not_exist_at)
            .min()
    }

    /// Declares missing every resource whose does-not-exist timer has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (t, name, entry) in self.cache.entries_mut() {
            if entry.does_not_exist_at.is_some_and(|at| at <= now) {
                entry.does_not_exist_at = None;
                entry.state = ResourceState::DoesNotExist;
                expired.push(XdsEvent::DoesNotExist {
                    xds_type: t,
                    name: name.clone(),
                });
            }
        }
        self.events.extend(expired);
    }

    /// The cache, with every subscribed resource's data and status.
    pub fn cache(&self) -> &ResourceCache {
        &self.cache
    }

    /// The last accepted version of a type (empty before the first).
    pub fn version(&self, xds_type: XdsType) -> &str {
        &self.types[xds_type.index()].version
    }

    /// The names subscribed for a type.
    pub fn subscriptions(&self, xds_type: XdsType) -> impl Iterator<Item = &str> {
        self.types[xds_type.index()]
            .subscribed
            .iter()
            .map(String::as_str)
    }

    fn enqueue(&mut self, t: XdsType) {
        if !self.queue.contains(&t) {
            self.queue.push_back(t);
        }
    }

    /// Recomputes the names each type needs from the targets and the accepted data, and
    /// queues a request for each type whose set changed.
    fn sync_subscriptions(&mut self, now: Instant) {
        let mut wanted: [BTreeSet<String>; 4] = Default::default();
        wanted[XdsType::Listener.index()] = self.targets.clone();
        // References only point down the cascade, so one pass in order suffices. A
        // wildcard type's references come from everything it holds.
        for t in XdsType::ALL {
            let names: Vec<String> = if self.is_wildcard(t) {
                self.cache.entries(t).map(|(n, _)| n.to_owned()).collect()
            } else {
                wanted[t.index()].iter().cloned().collect()
            };
            for name in names {
                if let Some(resource) = self.cache.resource(t, &name) {
                    for (rt, rn) in resource.references() {
                        wanted[rt.index()].insert(rn);
                    }
                }
            }
        }
        for t in XdsType::ALL {
            if self.is_wildcard(t) {
                wanted[t.index()] = BTreeSet::from([WILDCARD.to_owned()]);
            }
        }
        for (t, want) in XdsType::ALL.into_iter().zip(wanted) {
            let have = &self.types[t.index()].subscribed;
            if *have == want {
                continue;
            }
            let removed: Vec<String> = have.difference(&want).cloned().collect();
            let added: Vec<String> = want.difference(have).cloned().collect();
            for name in &removed {
                self.cache.remove(t, name);
            }
            let deadline = self
                .connected
                .then(|| now + self.config.does_not_exist_timeout);
            for name in added.iter().filter(|n| *n != WILDCARD) {
                let entry = self.cache.insert_requested(t, name);
                entry.does_not_exist_at = deadline;
            }
            self.types[t.index()].subscribed = want;
            self.enqueue(t);
        }
    }

    /// Whether a type is subscribed by wildcard (listeners and clusters in sidecar shape,
    /// as Envoy subscribes them).
    pub fn is_wildcard(&self, t: XdsType) -> bool {
        self.config.shape.is_sidecar() && t.is_full_state()
    }

    /// The shape of istiod's output this core takes.
    pub fn shape(&self) -> IstioShape {
        self.config.shape
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
