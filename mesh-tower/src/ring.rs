//! A thread's memory of its last few lookups, for the request path's repeated keys (a
//! connection's Host, its peer's metadata, its metric series): a hit compares a key
//! instead of hashing it and probing a shared map.

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
