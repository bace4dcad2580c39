//! What a policy change takes away from a workload's inbound protection.
//!
//! [`weakenings`] compares two [`InboundPolicy`]s and lists what the new one no longer
//! enforces: a port whose mTLS mode got weaker (STRICT -> PERMISSIVE or DISABLE,
//! PERMISSIVE -> DISABLE), DENY rules that are gone, an ALLOW policy that is gone (so
//! every caller not denied is let in), or the whole policy removed.
//! [`snapshot_weakenings`] does the same for every listener of two snapshots. Changes that
//! make the policy stricter or leave it as strict are not listed; neither are rules whose
//! content changed under the same name (only removals are).
//!
//! Sources log these at WARN when they publish a new policy, so an operator sees when an
//! edit (or a truncated file, or a deleted one) removed mTLS or authorization.
//!
//! ```
//! use mesh_core::inbound::{diff::weakenings, InboundPolicy, TlsMode};
//!
//! let before = InboundPolicy::new(TlsMode::Strict);
//! let after = InboundPolicy::new(TlsMode::Permissive);
//! let found = weakenings(Some(&before), Some(&after));
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].to_string(), "mTLS STRICT -> PERMISSIVE on every port");
//! assert!(weakenings(Some(&after), Some(&before)).is_empty());
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;

use super::{InboundPolicy, TlsMode};
use crate::rbac::{Authorization, RbacAction};
use crate::Snapshot;

/// One thing a new inbound policy no longer enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Weakening {
    /// The inbound policy is gone: the listener falls back to its defaults (PERMISSIVE with
    /// certificates, plaintext without) and lets every caller in.
    PolicyRemoved,
    /// A port takes a weaker mTLS mode.
    Mtls {
        /// The port; `None` for the mode of every port without a mode of its own.
        port: Option<u16>,
        /// The mode before.
        from: TlsMode,
        /// The mode now.
        to: TlsMode,
    },
    /// DENY rules were removed: requests they denied are let through now.
    DenyRulesRemoved {
        /// The rules' names (for Istio policies, `ns[NS]-policy[NAME]-rule[N]`).
        rules: Vec<String>,
    },
    /// An ALLOW policy was removed: callers no longer have to match an ALLOW rule.
    AllowPolicyRemoved {
        /// The ALLOW rules that were enforced and are gone.
        rules: Vec<String>,
    },
}

impl Weakening {
    /// Whether this is about mTLS (as opposed to authorization).
    pub fn is_mtls(&self) -> bool {
        matches!(self, Self::Mtls { .. })
    }
}

impl fmt::Display for Weakening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PolicyRemoved => f.write_str(
                "inbound policy removed: the listener falls back to its defaults (PERMISSIVE \
                 with certificates, plaintext without) and lets every caller in",
            ),
            Self::Mtls {
                port: None,
                from,
                to,
            } => write!(f, "mTLS {} -> {} on every port", name(*from), name(*to)),
            Self::Mtls {
                port: Some(p),
                from,
                to,
            } => write!(f, "mTLS {} -> {} on port {p}", name(*from), name(*to)),
            Self::DenyRulesRemoved { rules } => write!(
                f,
                "DENY rules removed ({}): requests they denied are now let through",
                rules.join(", ")
            ),
            Self::AllowPolicyRemoved { rules } if rules.is_empty() => {
                f.write_str("ALLOW policy removed: every caller not denied is now let in")
            }
            Self::AllowPolicyRemoved { rules } => write!(
                f,
                "ALLOW policy removed ({}): every caller not denied is now let in",
                rules.join(", ")
            ),
        }
    }
}

fn name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Strict => "STRICT",
        TlsMode::Permissive => "PERMISSIVE",
        TlsMode::Disable => "DISABLE",
    }
}

/// How much a mode protects: STRICT > PERMISSIVE > DISABLE.
fn strength(mode: TlsMode) -> u8 {
    match mode {
        TlsMode::Strict => 2,
        TlsMode::Permissive => 1,
        TlsMode::Disable => 0,
    }
}

/// What `new` no longer enforces that `old` did. `None` is "no inbound policy", read as
/// [`InboundPolicy::default`] (PERMISSIVE, every caller allowed).
pub fn weakenings(old: Option<&InboundPolicy>, new: Option<&InboundPolicy>) -> Vec<Weakening> {
    let fallback = InboundPolicy::default();
    let Some(old) = old else {
        // Nothing was enforced beyond the defaults; a new policy cannot take anything away.
        return Vec::new();
    };
    let mut out = Vec::new();
    if new.is_none() {
        out.push(Weakening::PolicyRemoved);
    }
    let new = new.unwrap_or(&fallback);
    if strength(new.default_mode) < strength(old.default_mode) {
        out.push(Weakening::Mtls {
            port: None,
            from: old.default_mode,
            to: new.default_mode,
        });
    }
    let ports: BTreeSet<u16> = old
        .port_modes
        .keys()
        .chain(new.port_modes.keys())
        .copied()
        .collect();
    for port in ports {
        let (from, to) = (old.mode_for_port(port), new.mode_for_port(port));
        // A port that follows the default was reported with it.
        let both_default =
            !old.port_modes.contains_key(&port) && !new.port_modes.contains_key(&port);
        if strength(to) < strength(from) && !both_default {
            out.push(Weakening::Mtls {
                port: Some(port),
                from,
                to,
            });
        }
    }
    out.extend(authorization_weakenings(
        &old.authorization,
        &new.authorization,
    ));
    out
}

fn rule_names(a: &Authorization, action: RbacAction) -> Vec<&str> {
    let mut seen = HashSet::new();
    a.engines
        .iter()
        .filter(|e| e.action == action)
        .flat_map(|e| e.policies.iter().map(|(n, _)| n.as_str()))
        .filter(|n| seen.insert(*n))
        .collect()
}

fn authorization_weakenings(old: &Authorization, new: &Authorization) -> Vec<Weakening> {
    let mut out = Vec::new();
    let new_deny: HashSet<&str> = rule_names(new, RbacAction::Deny).into_iter().collect();
    let removed: Vec<String> = rule_names(old, RbacAction::Deny)
        .into_iter()
        .filter(|n| !new_deny.contains(n))
        .map(str::to_owned)
        .collect();
    if !removed.is_empty() {
        out.push(Weakening::DenyRulesRemoved { rules: removed });
    }
    // Every ALLOW engine must let a request through: one fewer opens access. (Removing
    // rules from an ALLOW engine that stays narrows access instead.)
    let allow_engines = |a: &Authorization| {
        a.engines
            .iter()
            .filter(|e| e.action == RbacAction::Allow)
            .count()
    };
    if allow_engines(new) < allow_engines(old) {
        let still: HashSet<&str> = rule_names(new, RbacAction::Allow).into_iter().collect();
        let rules = rule_names(old, RbacAction::Allow)
            .into_iter()
            .filter(|n| !still.contains(n))
            .map(str::to_owned)
            .collect();
        out.push(Weakening::AllowPolicyRemoved { rules });
    }
    out
}

/// Which listener of a snapshot a weakening is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum InboundScope {
    /// The workload-wide policy (listeners without a policy of their own).
    Workload,
    /// The listener on this address.
    Listener(SocketAddr),
}

impl fmt::Display for InboundScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload => f.write_str("workload"),
            Self::Listener(addr) => write!(f, "listener {addr}"),
        }
    }
}

/// [`weakenings`] for every inbound listener of two snapshots: the workload-wide policy,
/// and each address either snapshot binds a policy to, compared as the listener on it
/// sees them ([`Snapshot::inbound_for`]).
pub fn snapshot_weakenings(old: &Snapshot, new: &Snapshot) -> Vec<(InboundScope, Weakening)> {
    let mut out: Vec<(InboundScope, Weakening)> = weakenings(
        old.inbound_default().map(AsRef::as_ref),
        new.inbound_default().map(AsRef::as_ref),
    )
    .into_iter()
    .map(|w| (InboundScope::Workload, w))
    .collect();
    let addrs: BTreeSet<SocketAddr> = old
        .inbound_listeners()
        .chain(new.inbound_listeners())
        .map(|(a, _)| *a)
        .collect();
    for addr in addrs {
        let found = weakenings(
            old.inbound_for(addr).map(AsRef::as_ref),
            new.inbound_for(addr).map(AsRef::as_ref),
        );
        out.extend(found.into_iter().map(|w| (InboundScope::Listener(addr), w)));
    }
    out
}

/// Every authorization rule of a snapshot's inbound policies that cannot be evaluated,
/// with its reason ([`Authorization::unsupported_rules`]): such rules fail closed, and a
/// source logs them so that an operator learns what is denied and why.
pub fn snapshot_unsupported_rules(s: &Snapshot) -> Vec<(InboundScope, &str)> {
    let mut out: Vec<(InboundScope, &str)> = s
        .inbound_default()
        .map(|p| p.authorization.unsupported_rules())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (InboundScope::Workload, r))
        .collect();
    for (addr, policy) in s.inbound_listeners() {
        out.extend(
            policy
                .authorization
                .unsupported_rules()
                .into_iter()
                .map(|r| (InboundScope::Listener(*addr), r)),
        );
    }
    out
}
