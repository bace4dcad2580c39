//! Authorization with Envoy's RBAC model (`config.rbac.v3`), onto which both xDS RBAC
//! (gRFC A41) and Istio's `AuthorizationPolicy` ([`istio`]) map.
//!
//! An [`Authorization`] is a chain of [`RbacEngine`]s evaluated in order; a request is
//! allowed only when every engine allows it. An engine holds named [`Policy`]s; a policy
//! matches when any of its [`Permission`]s and any of its [`Principal`]s match.
//!
//! Evaluation is three-valued ([`Evaluation`]) and fails closed: a rule that cannot be
//! evaluated ([`Permission::Unsupported`]) is [`Evaluation::Unknown`], which an ALLOW engine
//! reads as "no match" and a DENY engine as "match". A rule we do not understand therefore
//! never opens access.
//!
//! Evaluation reads the request through [`RequestAttributes`] and allocates nothing.
//!
//! ```
//! use mesh_core::matcher::StringMatcher;
//! use mesh_core::rbac::*;
//!
//! let policy = Policy::new(
//!     vec![Permission::UrlPath(StringMatcher::prefix("/api/"))],
//!     vec![Principal::Authenticated(None)],
//! );
//! let authz = Authorization::new(vec![RbacEngine::new(
//!     RbacAction::Allow,
//!     vec![("api".to_owned(), policy)],
//! )]);
//! let req = Request::new("GET", "/api/x?y=1").with_peer_principal(Some("spiffe://td/a"));
//! assert!(authz.evaluate(&req).is_allowed());
//! let anonymous = Request::new("GET", "/api/x");
//! assert!(!authz.evaluate(&anonymous).is_allowed());
//! ```

mod cidr;
pub mod istio;
mod request;
mod rules;

pub use cidr::{Cidr, CidrError};
pub use request::{Request, RequestAttributes};
pub use rules::{Permission, PortRange, Principal};

/// The three-valued result of evaluating a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evaluation {
    /// The rule matches.
    Match,
    /// The rule does not match.
    NoMatch,
    /// The rule cannot be evaluated (it holds something unsupported).
    Unknown,
}

impl Evaluation {
    /// Three-valued AND: `NoMatch` if any is, else `Unknown` if any is, else `Match`.
    /// Stops at the first `NoMatch`.
    pub fn all(items: impl IntoIterator<Item = Evaluation>) -> Self {
        let mut result = Self::Match;
        for e in items {
            match e {
                Self::NoMatch => return Self::NoMatch,
                Self::Unknown => result = Self::Unknown,
                Self::Match => {}
            }
        }
        result
    }

    /// Three-valued OR: `Match` if any is, else `Unknown` if any is, else `NoMatch`.
    /// Stops at the first `Match`.
    pub fn any(items: impl IntoIterator<Item = Evaluation>) -> Self {
        let mut result = Self::NoMatch;
        for e in items {
            match e {
                Self::Match => return Self::Match,
                Self::Unknown => result = Self::Unknown,
                Self::NoMatch => {}
            }
        }
        result
    }
}

impl std::ops::Not for Evaluation {
    type Output = Self;

    /// Three-valued NOT: swaps `Match` and `NoMatch`, keeps `Unknown`.
    fn not(self) -> Self {
        match self {
            Self::Match => Self::NoMatch,
            Self::NoMatch => Self::Match,
            Self::Unknown => Self::Unknown,
        }
    }
}

impl From<bool> for Evaluation {
    fn from(b: bool) -> Self {
        if b {
            Self::Match
        } else {
            Self::NoMatch
        }
    }
}

/// One named rule of an engine: matches when any permission and any principal match.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Policy {
    /// What the request does; ORed. An empty list never matches.
    pub permissions: Vec<Permission>,
    /// Who sends it; ORed. An empty list never matches.
    pub principals: Vec<Principal>,
}

impl Policy {
    /// A policy from its permissions and principals.
    pub fn new(permissions: Vec<Permission>, principals: Vec<Principal>) -> Self {
        Self {
            permissions,
            principals,
        }
    }

    /// Evaluates the policy against a request.
    pub fn evaluate<R: RequestAttributes + ?Sized>(&self, req: &R) -> Evaluation {
        let permission = Evaluation::any(self.permissions.iter().map(|p| p.evaluate(req)));
        if permission == Evaluation::NoMatch {
            return Evaluation::NoMatch;
        }
        let principal = Evaluation::any(self.principals.iter().map(|p| p.evaluate(req)));
        Evaluation::all([permission, principal])
    }
}

/// What an engine does with a request that one of its policies matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RbacAction {
    /// Allow requests some policy matches, deny the rest.
    Allow,
    /// Deny requests some policy matches, allow the rest.
    Deny,
}

/// An RBAC filter: an action and named policies (Envoy's `config.rbac.v3.RBAC`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RbacEngine {
    /// What a match means.
    pub action: RbacAction,
    /// The policies with their names, evaluated in order.
    pub policies: Vec<(String, Policy)>,
}

impl RbacEngine {
    /// An engine from its action and policies.
    pub fn new(action: RbacAction, policies: Vec<(String, Policy)>) -> Self {
        Self { action, policies }
    }

    /// Evaluates the engine: whether it allows the request, and the policy that decided
    /// (none when an ALLOW engine denies because nothing matched, or a DENY engine allows).
    pub fn evaluate<R: RequestAttributes + ?Sized>(&self, req: &R) -> EngineDecision<'_> {
        for (name, policy) in &self.policies {
            let evaluation = policy.evaluate(req);
            let hit = match self.action {
                RbacAction::Allow => evaluation == Evaluation::Match,
                RbacAction::Deny => evaluation != Evaluation::NoMatch,
            };
            if hit {
                return EngineDecision {
                    allowed: self.action == RbacAction::Allow,
                    policy: Some((name.as_str(), evaluation)),
                };
            }
        }
        EngineDecision {
            allowed: self.action == RbacAction::Deny,
            policy: None,
        }
    }
}

/// What one engine decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineDecision<'a> {
    /// Whether the engine allows the request.
    pub allowed: bool,
    /// The policy that matched (name and how), if one did.
    pub policy: Option<(&'a str, Evaluation)>,
}

/// A chain of RBAC engines: a request is allowed when every engine allows it.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Authorization {
    /// The engines, evaluated in order; the first that denies decides.
    pub engines: Vec<RbacEngine>,
}

impl Authorization {
    /// A chain of engines.
    pub fn new(engines: Vec<RbacEngine>) -> Self {
        Self { engines }
    }

    /// The chain that allows everything (no engines).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Why rules of the chain cannot be evaluated: the reason of every
    /// [`Permission::Unsupported`] and [`Principal::Unsupported`], once each, in order.
    /// Such rules fail closed (never allow, always deny); a source logs these so an
    /// operator learns that part of the policy is enforced as a denial, and why.
    pub fn unsupported_rules(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for engine in &self.engines {
            for (_, policy) in &engine.policies {
                policy
                    .permissions
                    .iter()
                    .for_each(|p| p.collect_unsupported(&mut out));
                policy
                    .principals
                    .iter()
                    .for_each(|p| p.collect_unsupported(&mut out));
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|r| seen.insert(*r));
        out
    }

    /// Evaluates the chain against a request.
    pub fn evaluate<R: RequestAttributes + ?Sized>(&self, req: &R) -> Decision<'_> {
        let mut last_allow = None;
        for (index, engine) in self.engines.iter().enumerate() {
            let d = engine.evaluate(req);
            let decided_by = DecidedBy {
                engine: index,
                action: engine.action,
                policy: d.policy.map(|(name, _)| name),
                evaluation: d.policy.map(|(_, e)| e),
            };
            if !d.allowed {
                return Decision::Denied(decided_by);
            }
            if d.policy.is_some() {
                last_allow = Some(decided_by);
            }
        }
        Decision::Allowed(last_allow)
    }
}

/// Which engine and policy decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecidedBy<'a> {
    /// The engine's index in the chain.
    pub engine: usize,
    /// The engine's action.
    pub action: RbacAction,
    /// The policy that matched; `None` when an ALLOW engine denied because none did.
    pub policy: Option<&'a str>,
    /// How the policy matched: `Unknown` when a DENY engine denied on a rule it could not
    /// evaluate.
    pub evaluation: Option<Evaluation>,
}

/// The outcome of an [`Authorization`]; a denied request maps to HTTP 403 or gRPC
/// `PERMISSION_DENIED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision<'a> {
    /// Allowed; by the last ALLOW policy that matched, if any (none when the chain is
    /// empty or only DENY engines ran).
    Allowed(Option<DecidedBy<'a>>),
    /// Denied by this engine and policy.
    Denied(DecidedBy<'a>),
}

impl<'a> Decision<'a> {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }

    /// The engine and policy that decided, if one did.
    pub fn decided_by(&self) -> Option<DecidedBy<'a>> {
        match self {
            Self::Allowed(by) => *by,
            Self::Denied(by) => Some(*by),
        }
    }

    /// The name of the policy that decided, if one did.
    pub fn policy(&self) -> Option<&'a str> {
        self.decided_by().and_then(|d| d.policy)
    }
}

#[cfg(test)]
mod tests;
