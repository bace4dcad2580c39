//! Applying one response (gRFC A46: per resource, NACK if any was rejected). The steps are
//! shared by both flavours; [`AdsCore::handle_response`] is state-of-the-world's entry and
//! `delta.rs` has the incremental one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

use super::{AdsCore, Protocol, ResourceState, UpdateFailure, XdsEvent};
use crate::resource::{
    decode_with, Decoded, FieldError, ListenerModel, Resource, ResourceError, XdsType,
};

/// A response the core could not take at all (nothing changes, nothing is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The response's type is not one of the four this client subscribes to.
    #[error("response for unknown type {0}")]
    UnknownType(String),
    /// A response arrived while no stream is open (the driver's bug).
    #[error("response received with no stream open")]
    NotConnected,
    /// A response of the other flavour than the core speaks (the driver's bug).
    #[error("{0:?} response received while speaking the other protocol flavour")]
    WrongProtocol(Protocol),
}

/// What a response did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ResponseOutcome {
    /// Resources whose data was accepted (changed or not).
    pub accepted: Vec<String>,
    /// Resources (or unnamed entries) that were rejected.
    pub rejected: Vec<ResourceError>,
    /// Resources deleted: no longer listed (state of the world) or named in
    /// `removed_resources` (delta).
    pub removed: Vec<String>,
    /// Whether the response is ACKed (`false`: NACKed).
    pub acked: bool,
}

/// The entries of one response, decoded and checked against the subscriptions.
#[derive(Debug, Default)]
pub(super) struct Decoding {
    /// Valid resources by name.
    pub(super) valid: BTreeMap<String, Resource>,
    /// Every subscribed name the response carried, valid or not.
    pub(super) seen: BTreeSet<String>,
    /// Whether an entry's name could not be read.
    pub(super) undecodable: bool,
}

impl AdsCore {
    /// Applies a state-of-the-world response received at `now` and queues its ACK or NACK,
    /// then any subscription changes it causes.
    pub fn handle_response(
        &mut self,
        response: DiscoveryResponse,
        now: Instant,
    ) -> Result<ResponseOutcome, ProtocolError> {
        let t = self.check_response(Protocol::StateOfTheWorld, &response.type_url)?;
        let mut outcome = ResponseOutcome::default();
        let mut decoding = Decoding::default();
        for (index, any) in response.resources.iter().enumerate() {
            let cache = &self.cache;
            let shape = self.config.shape;
            let decoded = decode_with(t, index, any, shape, &|name| {
                cache.resource(t, name).cloned()
            });
            self.sort_decoded(t, decoded, &mut decoding, &mut outcome);
        }
        let version = response.version_info;
        let undecodable = decoding.undecodable;
        let seen = std::mem::take(&mut decoding.seen);
        self.apply_valid(t, decoding.valid, &|_| version.clone(), now, &mut outcome);
        self.apply_rejected(t, &|_| version.clone(), now, &mut outcome);

        // State of the world: an LDS/CDS resource we hold that the response omits is gone.
        // When an entry's name could not be read, it might have been any of them: keep all.
        if t.is_full_state() && !self.config.ignore_resource_deletion && !undecodable {
            let gone: Vec<String> = self
                .cache
                .entries(t)
                .filter(|(name, e)| e.resource.is_some() && !seen.contains(*name))
                .map(|(name, _)| name.to_owned())
                .collect();
            for name in gone {
                self.delete(t, &name, &version, now, &mut outcome);
            }
        }
        self.settle(
            t,
            response.nonce,
            version,
            response.resources.len(),
            &mut outcome,
        );
        self.sync_subscriptions(now);
        Ok(outcome)
    }

    /// The response's type, if the core can take a response of this flavour now.
    pub(super) fn check_response(
        &self,
        protocol: Protocol,
        type_url: &str,
    ) -> Result<XdsType, ProtocolError> {
        if !self.connected {
            return Err(ProtocolError::NotConnected);
        }
        if self.protocol != protocol {
            return Err(ProtocolError::WrongProtocol(protocol));
        }
        XdsType::from_type_url(type_url).ok_or_else(|| ProtocolError::UnknownType(type_url.into()))
    }

    /// Files one decoded entry: valid, rejected, ignored (not subscribed) or duplicate.
    pub(super) fn sort_decoded(
        &self,
        t: XdsType,
        decoded: Decoded,
        decoding: &mut Decoding,
        outcome: &mut ResponseOutcome,
    ) {
        let subscribed = &self.types[t.index()].subscribed;
        let wildcard = self.is_wildcard(t);
        match decoded {
            Decoded::Undecodable(error) => {
                decoding.undecodable = true;
                outcome.rejected.push(error);
            }
            // A resource we did not ask for is ignored, valid or not.
            Decoded::Valid(name, _) | Decoded::Invalid(name, _)
                if !wildcard && !subscribed.contains(&name) => {}
            Decoded::Valid(name, _) | Decoded::Invalid(name, _)
                if !decoding.seen.insert(name.clone()) =>
            {
                decoding.valid.remove(&name);
                outcome.rejected.push(ResourceError::Duplicate { name });
            }
            Decoded::Valid(name, resource) => match self.unknown_provider(&resource) {
                None => {
                    decoding.valid.insert(name, resource);
                }
                Some(error) => outcome
                    .rejected
                    .push(ResourceError::Invalid { name, error }),
            },
            Decoded::Invalid(_, error) => outcome.rejected.push(error),
        }
    }

    /// Stores the valid resources; `version_of(name)` is the version each came with.
    pub(super) fn apply_valid(
        &mut self,
        t: XdsType,
        valid: BTreeMap<String, Resource>,
        version_of: &dyn Fn(&str) -> String,
        now: Instant,
        outcome: &mut ResponseOutcome,
    ) {
        let wildcard = self.is_wildcard(t);
        for (name, resource) in valid {
            if wildcard {
                self.cache.insert_requested(t, &name);
            }
            let Some(entry) = self.cache.get_mut(t, &name) else {
                continue;
            };
            let changed = entry.resource.as_ref() != Some(&resource);
            // An unchanged resource keeps its `Arc`s, so snapshots and whatever the layers
            // built from them (pickers, rings) are reused across state-of-the-world pushes.
            if changed {
                entry.resource = Some(resource);
            }
            entry.state = ResourceState::Acked;
            entry.version = Some(version_of(&name));
            entry.last_error = None;
            entry.does_not_exist_at = None;
            if changed {
                entry.last_updated = Some(now);
                self.events.push_back(XdsEvent::Updated {
                    xds_type: t,
                    name: name.clone(),
                });
            }
            outcome.accepted.push(name);
        }
    }

    /// Marks the named rejected resources NACKed; their previous data stays.
    pub(super) fn apply_rejected(
        &mut self,
        t: XdsType,
        version_of: &dyn Fn(&str) -> String,
        now: Instant,
        outcome: &mut ResponseOutcome,
    ) {
        let wildcard = self.is_wildcard(t);
        for error in &outcome.rejected {
            let Some(name) = error.name() else { continue };
            if wildcard {
                self.cache.insert_requested(t, name);
            }
            let Some(entry) = self.cache.get_mut(t, name) else {
                continue;
            };
            entry.state = ResourceState::Nacked;
            entry.does_not_exist_at = None;
            entry.last_error = Some(UpdateFailure {
                version: version_of(name),
                error: error.clone(),
                at: now,
            });
            self.events.push_back(XdsEvent::Rejected {
                xds_type: t,
                name: name.to_owned(),
                error: error.clone(),
            });
        }
    }

    /// Deletes one resource's data (the server says it is gone).
    pub(super) fn delete(
        &mut self,
        t: XdsType,
        name: &str,
        version: &str,
        now: Instant,
        outcome: &mut ResponseOutcome,
    ) {
        let Some(entry) = self.cache.get_mut(t, name) else {
            return;
        };
        let had_data = entry.resource.take().is_some();
        let was_missing = entry.state == ResourceState::DoesNotExist;
        entry.state = ResourceState::DoesNotExist;
        entry.version = Some(version.to_owned());
        entry.last_updated = Some(now);
        entry.does_not_exist_at = None;
        if had_data || !was_missing {
            outcome.removed.push(name.to_owned());
            self.events.push_back(XdsEvent::DoesNotExist {
                xds_type: t,
                name: name.to_owned(),
            });
        }
    }

    /// Queues the ACK (the response's version becomes the type's) or the NACK (an
    /// `error_detail` listing every rejected resource and field), and counts it.
    pub(super) fn settle(
        &mut self,
        t: XdsType,
        nonce: String,
        version: String,
        total: usize,
        outcome: &mut ResponseOutcome,
    ) {
        self.cache.set_answered(t);
        let state = &mut self.types[t.index()];
        state.nonce = nonce;
        outcome.acked = outcome.rejected.is_empty();
        let counts = &mut self.counts[t.index()];
        if outcome.acked {
            counts.accepted += 1;
            state.version = version;
            state.pending_error = None;
        } else {
            counts.rejected += 1;
            let messages: Vec<String> = outcome.rejected.iter().map(|e| e.to_string()).collect();
            state.pending_error = Some(format!(
                "{} of {} resources rejected (version {version}): {}",
                outcome.rejected.len(),
                total,
                messages.join("; ")
            ));
        }
        self.enqueue(t);
    }

    /// gRFC A29: a TLS context may only name certificate provider instances the bootstrap
    /// defines.
    fn unknown_provider(&self, resource: &Resource) -> Option<FieldError> {
        let known = self.config.certificate_providers.as_ref()?;
        let (field, used): (&str, Vec<&str>) = match resource {
            Resource::Cluster(c) => (
                "transport_socket.typed_config.common_tls_context",
                c.model
                    .tls
                    .iter()
                    .flat_map(|t| [&t.identity, &t.roots])
                    .flatten()
                    .map(|i| i.instance_name.as_str())
                    .collect(),
            ),
            Resource::Listener(l) => match &l.model {
                ListenerModel::Server(s) => (
                    "filter_chains",
                    s.certificate_providers.iter().map(String::as_str).collect(),
                ),
                // `virtualInbound` carries chains for ports this workload may not serve;
                // a chain whose certificates are missing fails its handshakes, and the
                // listener stays usable for the others.
                ListenerModel::Sidecar(_) => return None,
                _ => return None,
            },
            _ => return None,
        };
        let missing = used.into_iter().find(|name| !known.contains(*name))?;
        Some(FieldError::new(
            field,
            format!("certificate provider instance `{missing}` is not in the bootstrap"),
        ))
    }
}
