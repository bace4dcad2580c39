//! Per-endpoint connection state of one cluster, by the authority dialed.
//!
//! Endpoints register when the cluster's endpoints are built; an endpoint that stays across
//! updates gets the same state back (its connections and counts go on), and one that goes
//! leaves a dead entry that is swept as the map grows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Shared per-endpoint state, held by the endpoints and looked up by authority.
#[derive(Debug)]
pub(crate) struct ByAuthority<T> {
    inner: Mutex<Entries<T>>,
}

#[derive(Debug)]
struct Entries<T> {
    by_authority: HashMap<String, Weak<T>>,
    /// Entries after the last sweep of dropped ones; the next sweep at twice as many.
    swept_at: usize,
}

impl<T> Default for ByAuthority<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Entries {
                by_authority: HashMap::new(),
                swept_at: 0,
            }),
        }
    }
}

impl<T> ByAuthority<T> {
    /// The state of `authority`, made by `make` if it has none.
    pub(crate) fn register_with(&self, authority: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = entries.by_authority.get(authority).and_then(Weak::upgrade) {
            return existing;
        }
        let state = Arc::new(make());
        entries
            .by_authority
            .insert(authority.to_owned(), Arc::downgrade(&state));
        // Endpoints that went away leave dead entries: swept when the map has doubled.
        if entries.by_authority.len() >= 2 * entries.swept_at.max(32) {
            entries.by_authority.retain(|_, w| w.strong_count() > 0);
            entries.swept_at = entries.by_authority.len();
        }
        state
    }

    /// The state of `authority`, if an endpoint holds one.
    pub(crate) fn find(&self, authority: &str) -> Option<Arc<T>> {
        let entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        entries.by_authority.get(authority).and_then(Weak::upgrade)
    }

    /// Entries kept, live or dead, for tests.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_authority
            .len()
    }
}

impl<T: Default> ByAuthority<T> {
    /// The state of `authority`, made if it has none.
    pub(crate) fn register(&self, authority: &str) -> Arc<T> {
        self.register_with(authority, T::default)
    }
}
