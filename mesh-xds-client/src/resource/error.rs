//! Why a resource was rejected.

/// A rejected field inside one resource: the path from the resource's root
/// (`virtual_hosts[0].routes[3].route.weighted_clusters`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field path, from the resource's root.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error one level deeper: `prefix.field`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// A resource of a response that was not accepted. Sent back to the control plane in the
/// NACK's `error_detail`, and kept in the resource's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// The bytes are not the message the type URL says; the name is unknown.
    #[error("resource #{index}: cannot decode {type_url}: {message}")]
    Decode {
        /// Its position in the response.
        index: usize,
        /// The type it claims.
        type_url: String,
        /// What the decoder said.
        message: String,
    },
    /// The resource's type is not the response's type.
    #[error("resource #{index}: type {found} in a response for {expected}")]
    WrongType {
        /// Its position in the response.
        index: usize,
        /// The response's type URL.
        expected: String,
        /// The resource's type URL.
        found: String,
    },
    /// The resource decoded but breaks a rule.
    #[error("resource {name}: {error}")]
    Invalid {
        /// The resource's name.
        name: String,
        /// The field and the reason.
        #[source]
        error: FieldError,
    },
    /// The same name appears twice in one response.
    #[error("resource {name}: listed more than once in the response")]
    Duplicate {
        /// The resource's name.
        name: String,
    },
}

impl ResourceError {
    /// The resource's name, when it could be read.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Invalid { name, .. } | Self::Duplicate { name } => Some(name),
            Self::Decode { .. } | Self::WrongType { .. } => None,
        }
    }

    /// The rejected field's path, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { error, .. } => Some(&error.field),
            _ => None,
        }
    }
}
