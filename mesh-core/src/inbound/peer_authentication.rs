//! Istio's `security.istio.io/v1` `PeerAuthentication`, resolved for one workload the way
//! istiod resolves it.
//!
//! Three levels apply, most specific first: a policy in the workload's namespace whose
//! selector matches the workload; a policy in the workload's namespace without selector;
//! a policy in the root namespace without selector (mesh-wide). A level whose mode is
//! UNSET (or absent) inherits from the next; when nothing is set the mode is PERMISSIVE.
//! Port-level modes are honoured only from the workload-level (selector) policy; an UNSET
//! port-level mode inherits the workload's resolved mode.
//!
//! When several policies compete for one level, istiod takes the oldest; pass the policies
//! oldest first and the first one wins here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{InboundPolicy, TlsMode};
use crate::rbac::istio::{
    to_authorization, AuthorizationPolicy, IstioAuthzError, Workload, WorkloadSelector,
};

/// A `PeerAuthentication` resource: name, namespace and spec.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerAuthentication {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec`.
    pub spec: PeerAuthenticationSpec,
}

impl PeerAuthentication {
    /// A resource from its name, namespace and spec.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: PeerAuthenticationSpec,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            spec,
        }
    }
}

/// The `spec` of a `PeerAuthentication`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PeerAuthenticationSpec {
    /// The workloads it applies to; none = the whole namespace (or mesh, in the root
    /// namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode of every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Modes of particular ports (only honoured with a selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u16, PeerMtls>,
}

/// The `mtls` block of a `PeerAuthentication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PeerMtls {
    /// The mode; UNSET when absent.
    #[serde(default)]
    pub mode: MtlsMode,
}

impl PeerMtls {
    /// An `mtls` block with this mode.
    pub fn new(mode: MtlsMode) -> Self {
        Self { mode }
    }
}

/// A `PeerAuthentication` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum MtlsMode {
    /// Inherit from the parent level.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Mutual TLS or plaintext.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MtlsMode {
    /// The TLS mode, `None` for UNSET.
    pub fn tls_mode(self) -> Option<TlsMode> {
        match self {
            Self::Unset => None,
            Self::Disable => Some(TlsMode::Disable),
            Self::Permissive => Some(TlsMode::Permissive),
            Self::Strict => Some(TlsMode::Strict),
        }
    }
}

/// Why policies could not be resolved into an [`InboundPolicy`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerAuthenticationError {
    /// A `portLevelMtls` key is port 0.
    #[error("PeerAuthentication {policy}: portLevelMtls[{port}]: port must be 1..=65535")]
    BadPort {
        /// `namespace/name`.
        policy: String,
        /// The port.
        port: u16,
    },
    /// An `AuthorizationPolicy` could not be translated.
    #[error(transparent)]
    Authorization(#[from] IstioAuthzError),
}

/// The TLS modes of a workload's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolvedMtls {
    /// The mode of ports without an entry in `port_modes`.
    pub default_mode: TlsMode,
    /// Modes of particular ports.
    pub port_modes: BTreeMap<u16, TlsMode>,
}

fn has_selector(spec: &PeerAuthenticationSpec) -> bool {
    spec.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// Resolves the TLS modes of `workload` from the `PeerAuthentication`s of the mesh.
pub fn resolve_mtls(
    policies: &[PeerAuthentication],
    workload: &Workload,
) -> Result<ResolvedMtls, PeerAuthenticationError> {
    let find = |pred: &dyn Fn(&PeerAuthentication) -> bool| policies.iter().find(|p| pred(p));
    let workload_level = find(&|p| {
        p.namespace == workload.namespace
            && has_selector(&p.spec)
            && workload.is_selected_by(&p.namespace, p.spec.selector.as_ref())
    });
    let namespace_level = find(&|p| p.namespace == workload.namespace && !has_selector(&p.spec));
    let mesh_level = find(&|p| p.namespace == workload.root_namespace && !has_selector(&p.spec));

    let mut default_mode = TlsMode::Permissive;
    for level in [mesh_level, namespace_level, workload_level]
        .into_iter()
        .flatten()
    {
        if let Some(mode) = level.spec.mtls.and_then(|m| m.mode.tls_mode()) {
            default_mode = mode;
        }
    }
    let mut port_modes = BTreeMap::new();
    if let Some(p) = workload_level {
        for (&port, mtls) in &p.spec.port_level_mtls {
            if port == 0 {
                return Err(PeerAuthenticationError::BadPort {
                    policy: format!("{}/{}", p.namespace, p.name),
                    port,
                });
            }
            port_modes.insert(port, mtls.mode.tls_mode().unwrap_or(default_mode));
        }
    }
    Ok(ResolvedMtls {
        default_mode,
        port_modes,
    })
}

/// The whole inbound policy of `workload`: TLS modes from the `PeerAuthentication`s and
/// the authorization chain from the `AuthorizationPolicy`s.
pub fn inbound_policy(
    peer_authentications: &[PeerAuthentication],
    authorization_policies: &[AuthorizationPolicy],
    workload: &Workload,
) -> Result<InboundPolicy, PeerAuthenticationError> {
    let mtls = resolve_mtls(peer_authentications, workload)?;
    Ok(InboundPolicy {
        default_mode: mtls.default_mode,
        port_modes: mtls.port_modes,
        authorization: to_authorization(authorization_policies, workload)?,
    })
}
