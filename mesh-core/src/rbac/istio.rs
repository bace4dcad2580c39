//! Istio's `security.istio.io/v1` `AuthorizationPolicy`, and its translation into an
//! [`Authorization`](super::Authorization) for one workload, the way istiod translates it for a proxy.
//!
//! - A policy applies to a workload when it is in the workload's namespace, or in the root
//!   namespace (mesh-wide), and its selector (if any) matches the workload's labels.
//! - DENY policies become one DENY engine evaluated first, ALLOW policies one ALLOW engine
//!   after it. AUDIT policies are ignored (they only log). A CUSTOM policy (an external
//!   authorizer, which this mesh cannot call) or one with an action the mesh does not know
//!   fails closed: it denies every request to the workloads it selects, with the reason in
//!   the rule ([`Authorization::unsupported_rules`](super::Authorization::unsupported_rules)).
//!   Without any ALLOW policy there is no ALLOW engine, so everything not denied is allowed;
//!   with one, everything it does not match is denied (`spec: {}` denies everything).
//! - Each rule becomes one RBAC policy: `from`, `to` and `when` are ANDed, the entries of
//!   each list ORed. `{}` as a rule matches every request.
//! - Strings follow Istio's wildcards: `*` (any), `prefix*`, `*suffix`, else exact.
//!   Anything that cannot be checked here (request principals, `request.auth.*`
//!   conditions...) becomes [`Permission::Unsupported`](super::Permission::Unsupported) or [`Principal::Unsupported`](super::Principal::Unsupported), so
//!   it never grants access and always triggers a DENY rule.
//!
//! ```
//! use mesh_core::rbac::istio::{AuthorizationPolicy, AuthorizationPolicySpec, Workload};
//! use mesh_core::rbac::Request;
//!
//! let spec: AuthorizationPolicySpec = serde_json::from_str(r#"{
//!     "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]
//! }"#).unwrap();
//! let policies = [AuthorizationPolicy::new("get-only", "default", spec)];
//! let workload = Workload::new("default", [("app", "web")]);
//! let authz = mesh_core::rbac::istio::to_authorization(&policies, &workload).unwrap();
//! assert!(authz.evaluate(&Request::new("GET", "/")).is_allowed());
//! assert!(!authz.evaluate(&Request::new("POST", "/")).is_allowed());
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CidrError;
use crate::matcher::MatcherError;

mod convert;

pub use convert::to_authorization;

/// Istio's default root namespace, whose policies apply mesh-wide.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// An `AuthorizationPolicy` resource: its name, namespace and spec.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuthorizationPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec`.
    pub spec: AuthorizationPolicySpec,
}

impl AuthorizationPolicy {
    /// A policy from its name, namespace and spec.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: AuthorizationPolicySpec,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            spec,
        }
    }
}

/// The `spec` of an `AuthorizationPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthorizationPolicySpec {
    /// The workloads it applies to; none = every workload of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// What a match means; ALLOW when absent.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
    /// The rules; ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// Selects workloads by their labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkloadSelector {
    /// Labels a workload must all have, with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// A selector on these labels.
    pub fn new<K: Into<String>, V: Into<String>>(labels: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// True when every label of the selector is on the workload with the same value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// The workload policies are resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Workload {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The mesh's root namespace, [`DEFAULT_ROOT_NAMESPACE`] unless set.
    pub root_namespace: String,
}

impl Workload {
    /// A workload in `namespace` with these labels, in a mesh whose root namespace is
    /// `istio-system`.
    pub fn new<K: Into<String>, V: Into<String>>(
        namespace: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }

    /// Sets the mesh's root namespace.
    pub fn with_root_namespace(mut self, root: impl Into<String>) -> Self {
        self.root_namespace = root.into();
        self
    }

    /// Whether a policy in `namespace` with this selector applies to the workload: it is
    /// in the workload's namespace or the root namespace, and its selector (if any)
    /// matches the workload's labels.
    pub fn is_selected_by(&self, namespace: &str, selector: Option<&WorkloadSelector>) -> bool {
        (namespace == self.namespace || namespace == self.root_namespace)
            && selector.is_none_or(|s| s.matches(&self.labels))
    }
}

/// What an `AuthorizationPolicy` does with the requests its rules match. Written as Istio
/// writes it (`ALLOW`, `DENY`, `AUDIT`, `CUSTOM`); any other value is kept as
/// [`Unrecognized`](Self::Unrecognized), which fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthorizationAction {
    /// Allow matching requests (and deny the rest, once any ALLOW policy applies).
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Log matching requests; ignored here.
    Audit,
    /// Delegate to an external authorizer, which this mesh cannot call: denies every
    /// request to the workloads the policy selects.
    Custom,
    /// An action this mesh does not know (a newer Istio's, or a typo): denies every
    /// request to the workloads the policy selects.
    Unrecognized(String),
}

impl AuthorizationAction {
    /// The action as Istio writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
            Self::Custom => "CUSTOM",
            Self::Unrecognized(other) => other,
        }
    }

    /// The action named `name` (Istio's spelling; anything else is `Unrecognized`).
    pub fn from_name(name: &str) -> Self {
        match name {
            "ALLOW" => Self::Allow,
            "DENY" => Self::Deny,
            "AUDIT" => Self::Audit,
            "CUSTOM" => Self::Custom,
            other => Self::Unrecognized(other.to_owned()),
        }
    }
}

impl Serialize for AuthorizationAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuthorizationAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self::from_name(&s))
    }
}

/// The external authorizer of a CUSTOM policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ExtensionProvider {
    /// Its name in the mesh config.
    pub name: String,
}

/// One rule: `from`, `to` and `when` are ANDed; empty lists do not constrain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// Who sends the request; ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// What the request does; ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Further conditions; ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// An entry of `from`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleFrom {
    /// The source; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// Who sends a request; the fields set are ANDed, the values of a field ORed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)] // Each field is Istio's field of the same name.
pub struct Source {
    /// Peer identities without `spiffe://`, such as `cluster.local/ns/default/sa/x`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT principals: not supported (never allow, always deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// CIDR ranges of the peer address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// CIDR ranges of the original client; the same as the peer address here, as in gRPC
    /// (gRFC A41: no `X-Forwarded-For` is trusted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// An entry of `to`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleTo {
    /// The operation; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// What a request does; the fields set are ANDed, the values of a field ORed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)] // Each field is Istio's field of the same name.
pub struct Operation {
    /// Hosts (`:authority`), matched case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC requests are always `POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths without query string (for gRPC, `/package.Service/Method`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An entry of `when`: an attribute whose value must be one of `values` and none of
/// `notValues`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Condition {
    /// The attribute, such as `request.headers[x-user]` or `source.ip`.
    pub key: String,
    /// Accepted values; ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Rejected values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// Why Istio policies could not be translated. `policy` is `namespace/name`; `field` a
/// path into its spec such as `rules[0].to[0].operation.ports[1]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IstioAuthzError {
    /// A port is not a number in 1..=65535.
    #[error("policy {policy}: {field}: {value:?} is not a port number")]
    BadPort {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
        /// The value.
        value: String,
    },
    /// An IP block is not a CIDR range or address.
    #[error("policy {policy}: {field}: {value:?}: {source}")]
    BadCidr {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
        /// The value.
        value: String,
        /// Why.
        source: CidrError,
    },
    /// A value could not be turned into a matcher.
    #[error("policy {policy}: {field}: {value:?}: {source}")]
    BadMatcher {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
        /// The value.
        value: String,
        /// Why.
        source: MatcherError,
    },
    /// A value is the empty string.
    #[error("policy {policy}: {field}: empty value")]
    EmptyValue {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
    },
    /// A `from` entry has no `source`, or a `to` entry no `operation`.
    #[error("policy {policy}: {field} is missing")]
    Missing {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
    },
    /// A `source` or `operation` sets no field.
    #[error("policy {policy}: {field} sets no field")]
    Empty {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
    },
    /// A `when` entry has neither `values` nor `notValues`.
    #[error("policy {policy}: {field} (key {key:?}) has neither values nor notValues")]
    ConditionWithoutValues {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
        /// The key.
        key: String,
    },
    /// A `request.headers[...]` key without a header name between the brackets.
    #[error("policy {policy}: {field}: bad header condition key {key:?}")]
    BadHeaderKey {
        /// The policy.
        policy: String,
        /// Where.
        field: String,
        /// The key.
        key: String,
    },
}

#[cfg(test)]
mod tests;
