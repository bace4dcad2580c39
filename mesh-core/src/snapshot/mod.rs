//! The immutable view of the whole policy.

/// Placeholder, replaced by the real snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {}
