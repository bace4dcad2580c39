use http::{HeaderMap, HeaderName, HeaderValue};

/// Header changes (Envoy's `request_headers_to_add` / `_to_remove`, Istio's `headers`):
/// built once per snapshot as ready `http` values, applied without parsing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderMutations {
    set: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderMutations {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the header (Istio `set`).
    pub fn set(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.set.push((name, value));
        self
    }

    /// Adds a value, keeping existing ones (Istio `add`).
    pub fn append(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.append.push((name, value));
        self
    }

    /// Removes the header.
    pub fn remove(mut self, name: HeaderName) -> Self {
        self.remove.push(name);
        self
    }

    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.append.is_empty() && self.remove.is_empty()
    }

    /// The headers replaced.
    pub fn sets(&self) -> &[(HeaderName, HeaderValue)] {
        &self.set
    }

    /// The headers appended.
    pub fn appends(&self) -> &[(HeaderName, HeaderValue)] {
        &self.append
    }

    /// The headers removed.
    pub fn removals(&self) -> &[HeaderName] {
        &self.remove
    }

    /// Applies the changes: removals first, then sets, then appends.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
    }
}
