//! The incremental (delta) flavour: `DeltaDiscoveryRequest`s that name only what changed,
//! and `DeltaDiscoveryResponse`s that carry only changed resources, each with its own
//! version, and name removed ones.
//!
//! It shares everything else with state of the world: the cascade and its subscriptions,
//! the cache and per-resource status, A46 partial acceptance and the A57 timer.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;

use super::response::Decoding;
use super::{AdsCore, Protocol, ProtocolError, ResponseOutcome, INVALID_ARGUMENT, WILDCARD};
use crate::resource::{decode_with, Decoded, FieldError, ResourceError};

impl AdsCore {
    /// The next delta request to send on the open stream, if any.
    ///
    /// The first request of a type on a stream subscribes every name and lists, in
    /// `initial_resource_versions`, the version of each resource still cached, so the
    /// server resends only what changed meanwhile. Later ones carry the names subscribed
    /// and unsubscribed since, and the nonce of the response they ACK or NACK.
    pub fn poll_delta_request(&mut self) -> Option<DeltaDiscoveryRequest> {
        if !self.connected || self.protocol != Protocol::Delta {
            return None;
        }
        while let Some(t) = self.queue.pop_front() {
            let state = &mut self.types[t.index()];
            let subscribe: Vec<String> =
                state.subscribed.difference(&state.sent).cloned().collect();
            let unsubscribe: Vec<String> =
                state.sent.difference(&state.subscribed).cloned().collect();
            let initial_resource_versions: HashMap<String, String> =
                if state.first_on_stream && self.versions_reusable {
                    self.cache
                        .entries(t)
                        .filter(|(name, e)| {
                            e.resource.is_some()
                                && (state.subscribed.contains(WILDCARD)
                                    || state.subscribed.contains(*name))
                        })
                        .filter_map(|(name, e)| Some((name.to_owned(), e.version.clone()?)))
                        .collect()
                } else {
                    HashMap::new()
                };
            let nonce = std::mem::take(&mut state.nonce);
            let error_detail = state.pending_error.take().map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            });
            // An ACK or a subscription change; the first request of a type on a stream
            // is sent even when empty, as it is the one that opens the type.
            let first = std::mem::take(&mut state.first_on_stream);
            if subscribe.is_empty() && unsubscribe.is_empty() && nonce.is_empty() && !first {
                continue;
            }
            state.sent = state.subscribed.clone();
            let node = if self.node_sent {
                None
            } else {
                self.node_sent = true;
                Some(self.node.clone())
            };
            return Some(DeltaDiscoveryRequest {
                node,
                type_url: t.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions,
                response_nonce: nonce,
                error_detail,
                ..DeltaDiscoveryRequest::default()
            });
        }
        None
    }

    /// Applies a delta response received at `now`: its resources are stored with their own
    /// versions, `removed_resources` are deleted, and its ACK or NACK (by nonce) is queued,
    /// then any subscription changes it causes.
    pub fn handle_delta_response(
        &mut self,
        response: DeltaDiscoveryResponse,
        now: Instant,
    ) -> Result<ResponseOutcome, ProtocolError> {
        let t = self.check_response(Protocol::Delta, &response.type_url)?;
        let mut outcome = ResponseOutcome::default();
        let mut decoding = Decoding::default();
        let mut versions = BTreeMap::new();
        for (index, wrapped) in response.resources.iter().enumerate() {
            let decoded = match &wrapped.resource {
                None => Decoded::Invalid(
                    wrapped.name.clone(),
                    ResourceError::Invalid {
                        name: wrapped.name.clone(),
                        error: FieldError::new(
                            "resource",
                            "missing: a delta resource must carry its data",
                        ),
                    },
                ),
                Some(any) => {
                    let cache = &self.cache;
                    let shape = self.config.shape;
                    match decode_with(t, index, any, shape, &|name| {
                        cache.resource(t, name).cloned()
                    }) {
                        // The wrapper names it even when its bytes are broken.
                        Decoded::Undecodable(error) if !wrapped.name.is_empty() => {
                            Decoded::Invalid(
                                wrapped.name.clone(),
                                ResourceError::Invalid {
                                    name: wrapped.name.clone(),
                                    error: FieldError::new("resource", error.to_string()),
                                },
                            )
                        }
                        Decoded::Valid(name, _) | Decoded::Invalid(name, _)
                            if !wrapped.name.is_empty() && name != wrapped.name =>
                        {
                            Decoded::Invalid(
                                wrapped.name.clone(),
                                ResourceError::Invalid {
                                    name: wrapped.name.clone(),
                                    error: FieldError::new(
                                        "name",
                                        format!("the resource inside is named `{name}`"),
                                    ),
                                },
                            )
                        }
                        decoded => decoded,
                    }
                }
            };
            if let Decoded::Valid(name, _) | Decoded::Invalid(name, _) = &decoded {
                versions.insert(name.clone(), wrapped.version.clone());
            }
            self.sort_decoded(t, decoded, &mut decoding, &mut outcome);
        }
        let version_of = |name: &str| versions.get(name).cloned().unwrap_or_default();
        self.apply_valid(t, decoding.valid, &version_of, now, &mut outcome);
        self.apply_rejected(t, &version_of, now, &mut outcome);
        let keep = t.is_full_state() && self.config.ignore_resource_deletion;
        if !keep {
            for name in &response.removed_resources {
                if self.is_wildcard(t) || self.types[t.index()].subscribed.contains(name) {
                    self.delete(t, name, &response.system_version_info, now, &mut outcome);
                }
            }
        }
        self.settle(
            t,
            response.nonce,
            response.system_version_info,
            response.resources.len(),
            &mut outcome,
        );
        self.sync_subscriptions(now);
        Ok(outcome)
    }
}
