//! The resource cache and each resource's status, as operators see it (gRFC A40's CSDS
//! and a `/config_dump` page serve this).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::resource::{Resource, ResourceError, XdsType};

/// Where a subscribed resource stands, named as CSDS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceState {
    /// Subscribed; nothing received yet.
    Requested,
    /// The server says (or, after the does-not-exist timeout, implies) it does not exist.
    DoesNotExist,
    /// The last version received for it was accepted.
    Acked,
    /// The last version received for it was rejected; the previous one, if any, is kept.
    Nacked,
}

/// A rejected update of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateFailure {
    /// The version of the response that carried it.
    pub version: String,
    /// Why it was rejected.
    pub error: ResourceError,
    /// When.
    pub at: Instant,
}

/// One subscribed resource: its last accepted data and its status.
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    /// The last accepted data; `None` before the first or after a deletion.
    pub resource: Option<Resource>,
    /// Its state.
    pub state: ResourceState,
    /// The version of the response that brought `resource`.
    pub version: Option<String>,
    /// When `resource` was last accepted (or removed).
    pub last_updated: Option<Instant>,
    /// The last rejected update, cleared when a later one is accepted.
    pub last_error: Option<UpdateFailure>,
    /// When it is declared missing if nothing arrives (gRFC A57).
    pub(crate) does_not_exist_at: Option<Instant>,
}

impl ResourceEntry {
    fn requested() -> Self {
        Self {
            resource: None,
            state: ResourceState::Requested,
            version: None,
            last_updated: None,
            last_error: None,
            does_not_exist_at: None,
        }
    }
}

/// Every subscribed resource by type and name.
#[derive(Debug, Clone, Default)]
pub struct ResourceCache {
    by_type: [BTreeMap<String, ResourceEntry>; 4],
    /// Per type, whether any response has been settled (a wildcard type's missing names
    /// are decided once it has).
    answered: [bool; 4],
}

impl ResourceCache {
    /// One resource's entry.
    pub fn get(&self, xds_type: XdsType, name: &str) -> Option<&ResourceEntry> {
        self.by_type[xds_type.index()].get(name)
    }

    /// One resource's accepted data.
    pub fn resource(&self, xds_type: XdsType, name: &str) -> Option<&Resource> {
        self.get(xds_type, name).and_then(|e| e.resource.as_ref())
    }

    /// The entries of one type, by name.
    pub fn entries(&self, xds_type: XdsType) -> impl Iterator<Item = (&str, &ResourceEntry)> {
        self.by_type[xds_type.index()]
            .iter()
            .map(|(n, e)| (n.as_str(), e))
    }

    /// Every entry, LDS first.
    pub fn iter(&self) -> impl Iterator<Item = (XdsType, &str, &ResourceEntry)> {
        XdsType::ALL
            .into_iter()
            .flat_map(move |t| self.entries(t).map(move |(n, e)| (t, n, e)))
    }

    /// How many resources are subscribed.
    pub fn len(&self) -> usize {
        self.by_type.iter().map(BTreeMap::len).sum()
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the server has sent any response of this type. For a type subscribed by
    /// wildcard, a name it does not hold is then known not to exist.
    pub fn has_answered(&self, xds_type: XdsType) -> bool {
        self.answered[xds_type.index()]
    }

    pub(crate) fn set_answered(&mut self, xds_type: XdsType) {
        self.answered[xds_type.index()] = true;
    }

    pub(crate) fn get_mut(&mut self, xds_type: XdsType, name: &str) -> Option<&mut ResourceEntry> {
        self.by_type[xds_type.index()].get_mut(name)
    }

    pub(crate) fn insert_requested(&mut self, xds_type: XdsType, name: &str) -> &mut ResourceEntry {
        self.by_type[xds_type.index()]
            .entry(name.to_owned())
            .or_insert_with(ResourceEntry::requested)
    }

    pub(crate) fn remove(&mut self, xds_type: XdsType, name: &str) {
        self.by_type[xds_type.index()].remove(name);
    }

    pub(crate) fn entries_mut(
        &mut self,
    ) -> impl Iterator<Item = (XdsType, &String, &mut ResourceEntry)> {
        XdsType::ALL
            .into_iter()
            .zip(self.by_type.iter_mut())
            .flat_map(|(t, m)| m.iter_mut().map(move |(n, e)| (t, n, e)))
    }
}
