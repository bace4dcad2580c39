//! The inbound side of a workload: which TLS mode each port requires, and who may call it.
//!
//! [`InboundPolicy`] is what the inbound listener consults per connection (the TLS mode of
//! the local port) and per request (the [`Authorization`] chain). [`peer_authentication`]
//! resolves Istio `PeerAuthentication` resources into the TLS modes the way istiod does.
//!
//! ```
//! use mesh_core::inbound::{InboundPolicy, TlsMode};
//!
//! let policy = InboundPolicy::new(TlsMode::Strict).with_port_mode(8080, TlsMode::Permissive);
//! assert_eq!(policy.mode_for_port(8080), TlsMode::Permissive);
//! assert_eq!(policy.mode_for_port(9090), TlsMode::Strict);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rbac::Authorization;

pub mod diff;
pub mod peer_authentication;

/// How a port treats TLS from its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum TlsMode {
    /// Only mutual TLS; plaintext connections are refused.
    Strict,
    /// Mutual TLS or plaintext, whichever the peer speaks.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// The inbound policy of a workload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InboundPolicy {
    /// The mode of ports without an entry in `port_modes`.
    pub default_mode: TlsMode,
    /// Modes of particular ports.
    pub port_modes: BTreeMap<u16, TlsMode>,
    /// Who may call the workload.
    pub authorization: Authorization,
}

impl InboundPolicy {
    /// A policy with this mode on every port and no authorization (allow all).
    pub fn new(default_mode: TlsMode) -> Self {
        Self {
            default_mode,
            port_modes: BTreeMap::new(),
            authorization: Authorization::allow_all(),
        }
    }

    /// Sets the mode of one port.
    pub fn with_port_mode(mut self, port: u16, mode: TlsMode) -> Self {
        self.port_modes.insert(port, mode);
        self
    }

    /// Sets the authorization chain.
    pub fn with_authorization(mut self, authorization: Authorization) -> Self {
        self.authorization = authorization;
        self
    }

    /// The TLS mode of a local port.
    pub fn mode_for_port(&self, port: u16) -> TlsMode {
        self.port_modes
            .get(&port)
            .copied()
            .unwrap_or(self.default_mode)
    }
}

impl Default for InboundPolicy {
    /// Istio's default when no `PeerAuthentication` applies: PERMISSIVE, allow all.
    fn default() -> Self {
        Self::new(TlsMode::Permissive)
    }
}

#[cfg(test)]
mod tests;
