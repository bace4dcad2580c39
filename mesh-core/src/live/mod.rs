//! The live policy handle: one current [`Snapshot`], swapped atomically.
//!
//! Requests read the current snapshot with a lock-free load (an `Arc` swap) and keep it for
//! their whole life, so a request never sees half an update. Whoever holds the handle can
//! publish a new snapshot, and watchers wake when one lands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use event_listener::Event;

use crate::Snapshot;

/// A shared, atomically replaced [`Snapshot`]. Clones share the same policy.
#[derive(Clone)]
pub struct LivePolicy {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    /// Bumped after every publish, once the new snapshot is in place.
    generation: AtomicU64,
    changed: Event,
}

impl std::fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicy")
            .field("generation", &self.generation())
            .field("version", &self.snapshot().version())
            .finish()
    }
}

impl LivePolicy {
    /// A handle serving `initial`.
    pub fn new(initial: Snapshot) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(initial),
                generation: AtomicU64::new(0),
                changed: Event::new(),
            }),
        }
    }

    /// The current snapshot, lock-free. Hold it for one request, not longer.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// How many snapshots have been published since this handle was made.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Replaces the current snapshot and wakes every watcher. Returns the new generation.
    pub fn publish(&self, snapshot: Snapshot) -> u64 {
        self.publish_arc(Arc::new(snapshot))
    }

    /// As [`publish`](Self::publish), for a snapshot already in an `Arc`.
    pub fn publish_arc(&self, snapshot: Arc<Snapshot>) -> u64 {
        self.shared.current.store(snapshot);
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.changed.notify(usize::MAX);
        generation
    }

    /// A watcher that has seen the current snapshot and waits for the next.
    pub fn watch(&self) -> PolicyWatch {
        PolicyWatch {
            policy: self.clone(),
            seen: self.generation(),
        }
    }
}

/// Waits for snapshots newer than the last one it returned.
#[derive(Debug)]
pub struct PolicyWatch {
    policy: LivePolicy,
    seen: u64,
}

impl PolicyWatch {
    /// Resolves with the current snapshot once one newer than the last seen is published.
    /// Several publishes in a row may resolve once, with the latest.
    pub async fn changed(&mut self) -> Arc<Snapshot> {
        loop {
            // Listen before checking, so a publish between the check and the wait is not lost.
            let listener = self.policy.shared.changed.listen();
            let now = self.policy.generation();
            if now > self.seen {
                self.seen = now;
                return self.policy.snapshot();
            }
            listener.await;
        }
    }

    /// The policy being watched.
    pub fn policy(&self) -> &LivePolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests;
