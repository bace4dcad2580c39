//! Applying one DiscoveryResponse (gRFC A46: per resource, NACK if any was rejected).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

use super::{AdsCore, ResourceState, UpdateFailure, XdsEvent};
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
}

/// What a response did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ResponseOutcome {
    /// Resources whose data was accepted (changed or not).
    pub accepted: Vec<String>,
    /// Resources (or unnamed entries) that were rejected.
    pub rejected: Vec<ResourceError>,
    /// Resources deleted because the response no longer lists them.
    pub removed: Vec<String>,
    /// Whether the response is ACKed (`false`: NACKed).
    pub acked: bool,
}

impl AdsCore {
    /// Applies a response received at `now` and queues its ACK or NACK, then any
    /// subscription changes it causes.
    pub fn handle_response(
        &mut self,
        response: DiscoveryResponse,
        now: Instant,
    ) -> Result<ResponseOutcome, ProtocolError> {
        if !self.connected {
            return Err(ProtocolError::NotConnected);
        }
        let t = XdsType::from_type_url(&response.type_url)
            .ok_or_else(|| ProtocolError::UnknownType(response.type_url.clone()))?;
        let mut outcome = ResponseOutcome::default();
        let mut valid = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut undecodable = false;
        let subscribed = &self.types[t.index()].subscribed;
        let cache = &self.cache;
        let previous = |name: &str| cache.resource(t, name).cloned();
        for (index, any) in response.resources.iter().enumerate() {
            match decode_with(t, index, any, &previous) {
                Decoded::Undecodable(error) => {
                    undecodable = true;
                    outcome.rejected.push(error);
                }
                // A resource we did not ask for is ignored, valid or not.
                Decoded::Valid(name, _) | Decoded::Invalid(name, _)
                    if !subscribed.contains(&name) => {}
                Decoded::Valid(name, _) | Decoded::Invalid(name, _)
                    if !seen.insert(name.clone()) =>
                {
                    valid.remove(&name);
                    outcome.rejected.push(ResourceError::Duplicate { name });
                }
                Decoded::Valid(name, resource) => match self.unknown_provider(&resource) {
                    None => {
                        valid.insert(name, resource);
                    }
                    Some(error) => outcome
                        .rejected
                        .push(ResourceError::Invalid { name, error }),
                },
                Decoded::Invalid(_, error) => outcome.rejected.push(error),
            }
        }

        let version = response.version_info;
        for (name, resource) in valid {
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
            entry.version = Some(version.clone());
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
        for error in &outcome.rejected {
            let Some(name) = error.name() else { continue };
            let Some(entry) = self.cache.get_mut(t, name) else {
                continue;
            };
            entry.state = ResourceState::Nacked;
            entry.does_not_exist_at = None;
            entry.last_error = Some(UpdateFailure {
                version: version.clone(),
                error: error.clone(),
                at: now,
            });
            self.events.push_back(XdsEvent::Rejected {
                xds_type: t,
                name: name.to_owned(),
                error: error.clone(),
            });
        }

        // State of the world: an LDS/CDS resource we hold that the response omits is gone.
        // When an entry's name could not be read, it might have been any of them: keep all.
        if t.is_full_state() && !self.config.ignore_resource_deletion && !undecodable {
            for (name, entry) in self.cache.of_type_mut(t).iter_mut() {
                if entry.resource.is_some() && !seen.contains(name) {
                    entry.resource = None;
                    entry.state = ResourceState::DoesNotExist;
                    entry.version = Some(version.clone());
                    entry.last_updated = Some(now);
                    outcome.removed.push(name.clone());
                    self.events.push_back(XdsEvent::DoesNotExist {
                        xds_type: t,
                        name: name.clone(),
                    });
                }
            }
        }

        let state = &mut self.types[t.index()];
        state.nonce = response.nonce;
        outcome.acked = outcome.rejected.is_empty();
        if outcome.acked {
            state.version = version;
            state.pending_error = None;
        } else {
            let messages: Vec<String> = outcome.rejected.iter().map(|e| e.to_string()).collect();
            state.pending_error = Some(format!(
                "{} of {} resources rejected (version {version}): {}",
                outcome.rejected.len(),
                response.resources.len(),
                messages.join("; ")
            ));
        }
        self.enqueue(t);
        self.sync_subscriptions(now);
        Ok(outcome)
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
