//! A thread's memory of its last few lookups, for the request path's repeated keys (a
//! connection's Host, its peer's metadata, its metric series): a hit compares a key
//! instead of hashing it and probing a shared map.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's memory of its last few lookups: a few slots, reused in turn.
pub(crate) struct Ring<T, const N: usize> {
    slots: [T; N],
    next: usize,
}

impl<T, const N: usize> Ring<T, N> {
    pub(crate) const fn new(slots: [T; N]) -> Self {
        Self { slots, next: 0 }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.slots.iter()
    }

    /// The slot to fill next (the one filled longest ago).
    pub(crate) fn next_slot(&mut self) -> &mut T {
        let i = self.next;
        self.next = (i + 1) % N;
        &mut self.slots[i]
    }
}

/// The thread-local ring a memory lives in.
pub(crate) type Local<T, const N: usize> = LocalKey<RefCell<Ring<T, N>>>;

/// The first of this thread's slots in `ring` that `found` answers for; nothing when the
/// thread's ring is gone (thread exit) or in use.
pub(crate) fn find<T, R, const N: usize>(
    ring: &'static Local<T, N>,
    found: impl FnMut(&T) -> Option<R>,
) -> Option<R> {
    ring.try_with(|r| r.try_borrow().ok()?.iter().find_map(found))
        .ok()
        .flatten()
}

/// Fills the next of this thread's slots in `ring` (skipped when the ring is gone or in
/// use: a memory, nothing lost).
pub(crate) fn fill<T, const N: usize>(ring: &'static Local<T, N>, fill: impl FnOnce(&mut T)) {
    let _ = ring.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            fill(r.next_slot());
        }
    });
}
