//! The test server's delta (incremental) side: per stream, what each client holds, so a
//! change pushes only the resources that changed and names the removed ones.
//!
//! A resource's version is a hash of its bytes, so equal content has the same version
//! across pushes and across server restarts (a client's `initial_resource_versions` then
//! spare it a resend).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{AdsServer, Inner, RecordedDeltaRequest, Shared};
use crate::resource::XdsType;

/// One open delta stream.
#[derive(Debug)]
pub(super) struct DeltaStream {
    id: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    subscribed: BTreeMap<XdsType, BTreeSet<String>>,
    /// What the client holds, by type: name -> version (counting what is queued for it).
    holds: BTreeMap<XdsType, BTreeMap<String, String>>,
    /// Types whose latest changes found the buffer full (the client is not reading), with
    /// the names to report as missing: sent with the stream's next request (the client's
    /// ACK of what it read), or with the type's next change.
    behind: BTreeMap<XdsType, BTreeSet<String>>,
}

impl DeltaStream {
    pub(super) fn end(self, status: Status) {
        let _ = self.tx.try_send(Err(status));
    }
}

fn version_of(value: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Inner {
    /// The response bringing stream `i` up to date for type `t`: changed resources, and
    /// the removed ones it holds (plus `missing`, names just asked for that do not exist).
    /// `None` when there is nothing to say. What the client holds is not changed here:
    /// [`Inner::send_delta`] records it once the response is queued.
    fn delta_response(
        &mut self,
        i: usize,
        t: XdsType,
        missing: &BTreeSet<String>,
    ) -> Option<DeltaDiscoveryResponse> {
        let empty = BTreeMap::new();
        let resources = self.resources.get(&t).unwrap_or(&empty);
        let stream = &self.delta_streams[i];
        let names = stream.subscribed.get(&t).cloned().unwrap_or_default();
        let holds = stream.holds.get(&t);
        let held = |name: &String| holds.and_then(|h| h.get(name));
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for name in &names {
            match resources.get(name) {
                Some(any) => {
                    let version = version_of(&any.value);
                    if held(name) != Some(&version) {
                        changed.push(Resource {
                            name: name.clone(),
                            version,
                            resource: Some(any.clone()),
                            ..Resource::default()
                        });
                    }
                }
                None => {
                    if held(name).is_some() || missing.contains(name) {
                        removed.push(name.clone());
                    }
                }
            }
        }
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        self.next_nonce += 1;
        Some(DeltaDiscoveryResponse {
            system_version_info: self.versions.get(&t).copied().unwrap_or(0).to_string(),
            resources: changed,
            type_url: t.type_url().to_owned(),
            removed_resources: removed,
            nonce: self.next_nonce.to_string(),
            ..DeltaDiscoveryResponse::default()
        })
    }

    /// Queues stream `i`'s changes of type `t` (with `missing` reported as removed) and
    /// records what the client then holds; with the buffer full, records nothing and notes
    /// the type as behind (the changes are worked out again, from what the client holds,
    /// when there is room).
    fn send_delta(&mut self, i: usize, t: XdsType, missing: BTreeSet<String>) {
        let Some(response) = self.delta_response(i, t, &missing) else {
            self.delta_streams[i].behind.remove(&t);
            return;
        };
        let stream = &mut self.delta_streams[i];
        let update: Vec<(String, String)> = response
            .resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let removed = response.removed_resources.clone();
        match stream.tx.try_send(Ok(response)) {
            Ok(()) => {
                stream.behind.remove(&t);
                let holds = stream.holds.entry(t).or_default();
                holds.extend(update);
                for name in &removed {
                    holds.remove(name);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                stream.behind.entry(t).or_default().extend(missing);
            }
            // The stream ended; its reader removes it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends type `t`'s changes to every delta stream subscribed to it.
    pub(super) fn push_delta(&mut self, t: XdsType) {
        for i in 0..self.delta_streams.len() {
            let missing = self.delta_streams[i].behind.remove(&t).unwrap_or_default();
            self.send_delta(i, t, missing);
        }
    }
}

/// Accepts a delta stream: records its requests and answers subscriptions.
pub(super) fn open(
    shared: &Arc<Shared>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    buffer: usize,
) -> Result<mpsc::Receiver<Result<DeltaDiscoveryResponse, Status>>, Status> {
    let (tx, rx) = mpsc::channel(buffer);
    let id = {
        let mut inner = shared.lock();
        if inner.closed {
            return Err(Status::unavailable("ADS server is shutting down"));
        }
        inner.next_stream += 1;
        let id = inner.next_stream;
        inner.delta_streams.push(DeltaStream {
            id,
            tx,
            subscribed: BTreeMap::new(),
            holds: BTreeMap::new(),
            behind: BTreeMap::new(),
        });
        id
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Ok(Some(req)) = inbound.message().await {
            on_request(&shared, id, req);
        }
        shared.lock().delta_streams.retain(|s| s.id != id);
    });
    Ok(rx)
}

fn on_request(shared: &Shared, id: u64, req: DeltaDiscoveryRequest) {
    let mut inner = shared.lock();
    super::record(&mut inner.delta_requests, id, &req);
    inner.received += 1;
    let count = inner.received;
    if let (Some(t), Some(i)) = (
        XdsType::from_type_url(&req.type_url),
        inner.delta_streams.iter().position(|s| s.id == id),
    ) {
        let stream = &mut inner.delta_streams[i];
        let subscribed = stream.subscribed.entry(t).or_default();
        let holds = stream.holds.entry(t).or_default();
        for (name, version) in req.initial_resource_versions {
            holds.insert(name, version);
        }
        let mut new = BTreeSet::new();
        for name in req.resource_names_subscribe {
            if subscribed.insert(name.clone()) {
                new.insert(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            subscribed.remove(name);
            holds.remove(name);
        }
        let mut missing = inner.delta_streams[i].behind.remove(&t).unwrap_or_default();
        missing.extend(new);
        inner.send_delta(i, t, missing);
        // The client read something (this request acknowledges it): the other types a
        // full buffer held back may fit now.
        let behind: Vec<XdsType> = inner.delta_streams[i].behind.keys().copied().collect();
        for other in behind {
            let missing = inner.delta_streams[i]
                .behind
                .remove(&other)
                .unwrap_or_default();
            inner.send_delta(i, other, missing);
        }
    }
    drop(inner);
    shared.recorded.send_replace(count);
}

impl AdsServer {
    /// The delta requests received so far (the latest 10,000), oldest first.
    pub fn delta_requests(&self) -> Vec<RecordedDeltaRequest> {
        self.shared.lock().delta_requests.iter().cloned().collect()
    }

    /// Waits until a recorded delta request satisfies `pred` and returns the first that
    /// does, or `None` after `within` (a deadline for a hung test, not a timing assertion).
    pub async fn wait_for_delta_request(
        &self,
        within: Duration,
        mut pred: impl FnMut(&RecordedDeltaRequest) -> bool,
    ) -> Option<RecordedDeltaRequest> {
        let mut rx = self.shared.recorded.subscribe();
        let search = async {
            loop {
                if let Some(found) = self.delta_requests().into_iter().find(|r| pred(r)) {
                    return Some(found);
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(within, search).await.ok().flatten()
    }
}
