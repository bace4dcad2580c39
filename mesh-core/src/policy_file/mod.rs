//! The static policy file: the whole mesh policy in one YAML file, so a service runs with
//! no control plane at all.
//!
//! The file speaks Istio: its `virtualServices`, `destinationRules`,
//! `peerAuthentications` and `authorizationPolicies` hold the same objects users apply to a
//! cluster (pasted as they are), and `services` lists what Kubernetes would provide (ports,
//! endpoints with labels, service accounts).
//!
//! ```yaml
//! namespace: default
//! services:
//!   - name: payment-service
//!     ports: [{ port: 8080, name: grpc }]
//!     serviceAccounts: [payment-service]
//!     endpoints:
//!       - { address: "127.0.0.1:50051", labels: { version: v1 } }
//!       - { address: "127.0.0.1:50052", labels: { version: v2 } }
//! destinationRules:
//!   - spec:
//!       host: payment-service
//!       subsets:
//!         - { name: v1, labels: { version: v1 } }
//!         - { name: v2, labels: { version: v2 } }
//! virtualServices:
//!   - spec:
//!       hosts: [payment-service]
//!       http:
//!         - route:
//!             - { destination: { host: payment-service, subset: v1 }, weight: 90 }
//!             - { destination: { host: payment-service, subset: v2 }, weight: 10 }
//! ```
//!
//! Errors name the file, the field path and, where the YAML parser knows it, the line.

use std::fmt;

use serde::Deserialize;

use crate::inbound::peer_authentication::{
    inbound_policy, PeerAuthentication, PeerAuthenticationSpec,
};
use crate::istio::networking::{DestinationRuleSpec, Object, VirtualServiceSpec};
use crate::istio::services::Service;
use crate::istio::{self, IstioError, MeshInputs};
use crate::rbac::istio::{AuthorizationPolicy, AuthorizationPolicySpec};
use crate::snapshot::Snapshot;

mod locate;

/// The workload this file configures (its identity and labels select inbound policies).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Name (`order-service`).
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace (defaults to the file's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Service account: the SPIFFE ID is `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Labels, matched by policies' selectors.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Certificate files (Istio's layout: `cert-chain.pem`, `key.pem`, `root-cert.pem`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain (leaf first).
    pub certificate_file: String,
    /// The private key.
    pub private_key_file: String,
    /// The trust bundle.
    pub ca_certificate_file: String,
}

/// The policy file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFile {
    /// The namespace of everything that names none (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The cluster domain (default `cluster.local`).
    #[serde(default)]
    pub domain_suffix: Option<String>,
    /// The SPIFFE trust domain (default `cluster.local`).
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// Send mTLS to services that have service accounts unless a DestinationRule disables
    /// it (Istio's auto mTLS; default: on when `certificates` is set).
    #[serde(default)]
    pub auto_mtls: Option<bool>,
    /// This workload.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// Static certificate files.
    #[serde(default)]
    pub certificates: Option<CertificateFiles>,
    /// Services and endpoints.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Istio VirtualServices.
    #[serde(default)]
    pub virtual_services: Vec<Object<VirtualServiceSpec>>,
    /// Istio DestinationRules.
    #[serde(default)]
    pub destination_rules: Vec<Object<DestinationRuleSpec>>,
    /// Istio PeerAuthentications (the inbound TLS mode).
    #[serde(default)]
    pub peer_authentications: Vec<Object<PeerAuthenticationSpec>>,
    /// Istio AuthorizationPolicies (who may call this workload).
    #[serde(default)]
    pub authorization_policies: Vec<Object<AuthorizationPolicySpec>>,
    /// The mesh's root namespace (default `istio-system`).
    #[serde(default)]
    pub root_namespace: Option<String>,
    /// The text it was parsed from, to give errors found later a line and column.
    #[serde(skip)]
    source: Option<std::sync::Arc<str>>,
}

/// What is wrong with a policy file, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        reason: String,
    },
    /// The file holds no policy at all: 0 bytes, whitespace, or only comments and `---`
    /// markers. Taken as a policy it would drop every route, mTLS mode and authorization
    /// rule, which is how a truncated file opens a service; so it is refused.
    #[error("{file}: the policy file is empty (nothing but whitespace, comments or `---`); refusing it, as an empty policy would drop every route, mTLS mode and authorization rule")]
    Empty {
        /// The file.
        file: String,
    },
    /// The YAML is malformed, or a field is unknown or of the wrong type.
    #[error("{file}{}: {path}: {message}", line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        /// The file.
        file: String,
        /// Line and column, when known.
        line: Option<(usize, usize)>,
        /// The field path (`.` for the top).
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value is invalid or refers to something that does not exist.
    #[error("{}", join(.file, .errors, .at))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found.
        errors: Vec<IstioError>,
        /// Where each error's field is in the file (line, column), when known.
        at: Vec<Option<(usize, usize)>>,
    },
    /// The inbound policies (PeerAuthentication, AuthorizationPolicy) are invalid.
    #[error("{file}{}: inbound policy: {reason}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Inbound {
        /// The file.
        file: String,
        /// Where the policy's field is in the file (line, column), when known.
        at: Option<(usize, usize)>,
        /// What the translation said (it names the policy and field path).
        reason: String,
    },
}

/// `file:line:col: error`, one per error, joined by `; `.
fn join(file: &str, errors: &[IstioError], at: &[Option<(usize, usize)>]) -> String {
    errors
        .iter()
        .enumerate()
        .map(|(i, e)| match at.get(i).copied().flatten() {
            Some((line, col)) => format!("{file}:{line}:{col}: {e}"),
            None => format!("{file}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyFile {
    /// Parses YAML text; `origin` names it in errors. Text with no YAML content (see
    /// [`is_blank_yaml`]) is [`PolicyError::Empty`].
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        if is_blank_yaml(text) {
            return Err(PolicyError::Empty {
                file: origin.to_owned(),
            });
        }
        let de = serde_norway::Deserializer::from_str(text);
        let parsed: Result<Self, _> = serde_path_to_error::deserialize(de);
        parsed
            .map(|mut file| {
                file.source = Some(text.into());
                file
            })
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.location().map(|l| (l.line(), l.column()));
                // serde_norway appends " at line X column Y"; the location is shown up front.
                let mut message = inner.to_string();
                if let Some(idx) = message.find(" at line ") {
                    message.truncate(idx);
                }
                // It also starts with its own copy of the field path, shown once already.
                if let Some((head, rest)) = message.split_once(": ") {
                    if !head.is_empty() && !head.contains(char::is_whitespace) {
                        message = rest.to_owned();
                    }
                }
                PolicyError::Syntax {
                    file: origin.to_owned(),
                    line,
                    path,
                    message,
                }
            })
    }

    /// The file's namespace.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        self.trust_domain.as_deref().unwrap_or("cluster.local")
    }

    /// Translates the file into a snapshot. `origin` names the file in errors.
    pub fn to_snapshot(&self, origin: &str) -> Result<Snapshot, PolicyError> {
        let inputs = MeshInputs {
            services: &self.services,
            virtual_services: &self.virtual_services,
            destination_rules: &self.destination_rules,
            default_namespace: self.namespace(),
            domain_suffix: self.domain_suffix.as_deref().unwrap_or("cluster.local"),
            trust_domain: self.trust_domain(),
            // With certificates configured, mTLS is on by default, as in Istio.
            auto_mtls: self.auto_mtls.unwrap_or(self.certificates.is_some()),
        };
        let invalid = |errors: Vec<IstioError>| PolicyError::Invalid {
            file: origin.to_owned(),
            at: errors.iter().map(|e| self.locate(&e.path)).collect(),
            errors,
        };
        let outbound = istio::translate(inputs).map_err(invalid)?;
        let inbound = self
            .inbound_policy()
            .map_err(|reason| PolicyError::Inbound {
                file: origin.to_owned(),
                at: self.locate_inbound(&reason),
                reason,
            })?;
        let version = format!("file:{:016x}", digest(origin, &outbound, inbound.as_ref()));
        Ok(outbound
            .into_builder(Snapshot::builder().version(&version))
            .inbound_default(inbound)
            .build())
    }
}

impl PolicyFile {
    /// The file's PeerAuthentications, each in its namespace (the file's when it names none).
    pub fn peer_authentication_objects(&self) -> Vec<PeerAuthentication> {
        self.peer_authentications
            .iter()
            .map(|o| {
                let (name, namespace) = self.name_and_namespace(&o.metadata);
                PeerAuthentication::new(name, namespace, o.spec.clone())
            })
            .collect()
    }

    /// The file's AuthorizationPolicies, each in its namespace (the file's when it names none).
    pub fn authorization_policy_objects(&self) -> Vec<AuthorizationPolicy> {
        self.authorization_policies
            .iter()
            .map(|o| {
                let (name, namespace) = self.name_and_namespace(&o.metadata);
                AuthorizationPolicy::new(name, namespace, o.spec.clone())
            })
            .collect()
    }

    fn name_and_namespace(&self, m: &crate::istio::networking::ObjectMeta) -> (String, String) {
        (
            m.name.clone(),
            m.namespace
                .clone()
                .unwrap_or_else(|| self.namespace().to_owned()),
        )
    }

    /// Where the field at `path` is in the text this was parsed from.
    fn locate(&self, path: &str) -> Option<(usize, usize)> {
        locate::locate(self.source.as_deref()?, path)
    }

    /// Where the field an inbound-policy error names (`policy NS/NAME: FIELD: ...`) is:
    /// the field of that PeerAuthentication or AuthorizationPolicy, else the object.
    fn locate_inbound(&self, reason: &str) -> Option<(usize, usize)> {
        let rest = reason.strip_prefix("policy ")?;
        let (id, rest) = rest.split_once(": ")?;
        let name = id.rsplit('/').next()?;
        let field = rest
            .split([':', ' '])
            .next()
            .filter(|f| !f.is_empty() && !f.contains(char::is_whitespace));
        let found = |list: &str, i: usize| {
            let object = format!("{list}[{i}]");
            field
                .and_then(|f| self.locate(&format!("{object}.spec.{f}")))
                .or_else(|| self.locate(&object))
        };
        if let Some(i) = self
            .authorization_policies
            .iter()
            .position(|o| o.metadata.name == name)
        {
            return found("authorizationPolicies", i);
        }
        let i = self
            .peer_authentications
            .iter()
            .position(|o| o.metadata.name == name)?;
        found("peerAuthentications", i)
    }

    /// The workload's inbound policy, when the file has any PeerAuthentication or
    /// AuthorizationPolicy; `None` leaves the inbound side on the defaults.
    pub fn inbound_policy(&self) -> Result<Option<crate::inbound::InboundPolicy>, String> {
        if self.peer_authentications.is_empty() && self.authorization_policies.is_empty() {
            return Ok(None);
        }
        let ns = self.namespace().to_owned();
        let workload = self.workload.clone().unwrap_or_default();
        let mut wl = crate::rbac::istio::Workload::new(
            workload.namespace.clone().unwrap_or_else(|| ns.clone()),
            workload.labels.clone(),
        );
        if let Some(root) = &self.root_namespace {
            wl = wl.with_root_namespace(root.clone());
        }
        let peer = self.peer_authentication_objects();
        let authz = self.authorization_policy_objects();
        inbound_policy(&peer, &authz, &wl)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Whether YAML text holds no content: only whitespace, comments, and document markers
/// (`---`, `...`). Such a file parses as "nothing set", which must never pass for a policy.
pub fn is_blank_yaml(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|line| {
        let line = line.trim();
        let rest = line
            .strip_prefix("---")
            .or_else(|| line.strip_prefix("..."))
            .map_or(line, str::trim_start);
        rest.is_empty() || rest.starts_with('#')
    })
}

/// The version of a file's snapshot: a digest of everything it enforces — routes,
/// clusters, endpoints, TLS modes and authorization — so that any change of policy shows
/// as a new version (the model's `Debug` output lists every field, maps in key order).
fn digest(
    origin: &str,
    outbound: &istio::Outbound,
    inbound: Option<&crate::inbound::InboundPolicy>,
) -> u64 {
    let text = format!("{origin}\n{outbound:?}\n{inbound:?}");
    xxhash_rust::xxh64::xxh64(text.as_bytes(), 0)
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.name.as_deref().unwrap_or("?"),
            self.namespace.as_deref().unwrap_or("?")
        )
    }
}

#[cfg(test)]
mod tests;
