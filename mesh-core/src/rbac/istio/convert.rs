//! The translation of `AuthorizationPolicy` specs into RBAC engines, as istiod does it.

use super::{
    AuthorizationAction, AuthorizationPolicy, Condition, IstioAuthzError, Operation, Rule, Source,
    Workload,
};
use crate::matcher::{HeaderMatcher, HeaderValueMatch, StringMatch, StringMatcher};
use crate::rbac::{Authorization, Cidr, Permission, Policy, Principal, RbacAction, RbacEngine};

/// Translates the policies that apply to `workload` into an [`Authorization`]: a DENY
/// engine (if any DENY policy applies) followed by an ALLOW engine (if any ALLOW policy
/// applies). Policies are taken in the order given; each rule becomes a policy named
/// `ns[NAMESPACE]-policy[NAME]-rule[INDEX]`, as istiod names them.
///
/// A policy whose action the mesh cannot enforce — CUSTOM (an external authorizer this
/// mesh cannot call) or an action it does not know — denies every request to the
/// workloads it selects: it becomes a DENY rule named
/// `ns[NAMESPACE]-policy[NAME]-deny-due-to-unsupported-action` that cannot be evaluated
/// ([`Permission::Unsupported`], which a DENY engine reads as a match), carrying the
/// reason. [`Authorization::unsupported_rules`] lists it, for sources to log.
///
/// Fails on the first policy that applies and cannot be translated (a value that is not
/// valid, such as a bad port or CIDR), so that a broken DENY policy is never silently
/// dropped.
pub fn to_authorization(
    policies: &[AuthorizationPolicy],
    workload: &Workload,
) -> Result<Authorization, IstioAuthzError> {
    let mut deny = Vec::new();
    let mut allow = Vec::new();
    let mut any_allow = false;
    for policy in policies {
        let spec = &policy.spec;
        if !workload.is_selected_by(&policy.namespace, spec.selector.as_ref()) {
            continue;
        }
        let target = match &spec.action {
            AuthorizationAction::Allow => {
                any_allow = true;
                &mut allow
            }
            AuthorizationAction::Deny => &mut deny,
            AuthorizationAction::Audit => continue,
            unenforceable => {
                let reason = unenforceable_reason(policy, unenforceable);
                deny.push((
                    format!(
                        "ns[{}]-policy[{}]-deny-due-to-unsupported-action",
                        policy.namespace, policy.name
                    ),
                    Policy::new(vec![Permission::unsupported(reason)], vec![Principal::Any]),
                ));
                continue;
            }
        };
        let cx = Cx {
            policy: policy_id(policy),
        };
        for (i, rule) in spec.rules.iter().enumerate() {
            let name = format!("ns[{}]-policy[{}]-rule[{i}]", policy.namespace, policy.name);
            target.push((name, cx.rule(rule, &format!("rules[{i}]"))?));
        }
    }
    let mut engines = Vec::new();
    if !deny.is_empty() {
        engines.push(RbacEngine::new(RbacAction::Deny, deny));
    }
    if any_allow {
        engines.push(RbacEngine::new(RbacAction::Allow, allow));
    }
    Ok(Authorization::new(engines))
}

/// Why a policy with this action denies everything it selects.
fn unenforceable_reason(policy: &AuthorizationPolicy, action: &AuthorizationAction) -> String {
    let id = policy_id(policy);
    match action {
        AuthorizationAction::Custom => {
            let provider = policy
                .spec
                .provider
                .as_ref()
                .map(|p| format!(" (provider {:?})", p.name))
                .unwrap_or_default();
            format!(
                "policy {id}: action CUSTOM{provider} delegates to an external authorizer, \
                 which this mesh cannot call: every request to the workloads it selects is \
                 denied"
            )
        }
        other => format!(
            "policy {id}: action {:?} is not one this mesh enforces (ALLOW, DENY, AUDIT): \
             every request to the workloads it selects is denied",
            other.as_str()
        ),
    }
}

fn policy_id(p: &AuthorizationPolicy) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Istio's string wildcards.
enum Wildcard<'a> {
    Any,
    Prefix(&'a str),
    Suffix(&'a str),
    Exact(&'a str),
}

fn wildcard(v: &str) -> Wildcard<'_> {
    if v == "*" {
        Wildcard::Any
    } else if let Some(p) = v.strip_suffix('*') {
        Wildcard::Prefix(p)
    } else if let Some(s) = v.strip_prefix('*') {
        Wildcard::Suffix(s)
    } else {
        Wildcard::Exact(v)
    }
}

fn string_matcher(v: &str, ignore_case: bool) -> StringMatcher {
    let kind = match wildcard(v) {
        Wildcard::Any => StringMatch::Prefix(String::new()),
        Wildcard::Prefix(p) => StringMatch::Prefix(p.to_owned()),
        Wildcard::Suffix(s) => StringMatch::Suffix(s.to_owned()),
        Wildcard::Exact(e) => StringMatch::Exact(e.to_owned()),
    };
    StringMatcher::new(kind, ignore_case)
}

/// A list field: its name, its values, how one value converts, and whether it is a `notX`.
type Field<'a, T> = (
    &'static str,
    &'a [String],
    fn(&Cx, &str, &str) -> Result<T, IstioAuthzError>,
    bool,
);
type SourceField<'a> = Field<'a, Principal>;
type OperationField<'a> = Field<'a, Permission>;

/// The context of one policy's translation, for error messages.
struct Cx {
    policy: String,
}

impl Cx {
    fn rule(&self, rule: &Rule, at: &str) -> Result<Policy, IstioAuthzError> {
        let mut principals = Vec::new();
        if !rule.from.is_empty() {
            let mut any = Vec::with_capacity(rule.from.len());
            for (i, from) in rule.from.iter().enumerate() {
                let at = format!("{at}.from[{i}].source");
                let source = from.source.as_ref().ok_or_else(|| self.missing(&at))?;
                any.push(self.source(source, &at)?);
            }
            principals.push(Principal::Or(any));
        }
        let mut permissions = Vec::new();
        if !rule.to.is_empty() {
            let mut any = Vec::with_capacity(rule.to.len());
            for (i, to) in rule.to.iter().enumerate() {
                let at = format!("{at}.to[{i}].operation");
                let op = to.operation.as_ref().ok_or_else(|| self.missing(&at))?;
                any.push(self.operation(op, &at)?);
            }
            permissions.push(Permission::Or(any));
        }
        for (i, cond) in rule.when.iter().enumerate() {
            match self.condition(cond, &format!("{at}.when[{i}]"))? {
                Either::Permission(p) => permissions.push(p),
                Either::Principal(p) => principals.push(p),
            }
        }
        Ok(Policy::new(
            vec![and_permissions(permissions)],
            vec![and_principals(principals)],
        ))
    }

    fn source(&self, s: &Source, at: &str) -> Result<Principal, IstioAuthzError> {
        let mut all = Vec::new();
        let fields: [SourceField<'_>; 10] = [
            ("principals", &s.principals, Cx::principal, false),
            ("notPrincipals", &s.not_principals, Cx::principal, true),
            (
                "requestPrincipals",
                &s.request_principals,
                Cx::request_principal,
                false,
            ),
            (
                "notRequestPrincipals",
                &s.not_request_principals,
                Cx::request_principal,
                true,
            ),
            ("namespaces", &s.namespaces, Cx::namespace, false),
            ("notNamespaces", &s.not_namespaces, Cx::namespace, true),
            ("ipBlocks", &s.ip_blocks, Cx::source_ip, false),
            ("notIpBlocks", &s.not_ip_blocks, Cx::source_ip, true),
            ("remoteIpBlocks", &s.remote_ip_blocks, Cx::source_ip, false),
            (
                "notRemoteIpBlocks",
                &s.not_remote_ip_blocks,
                Cx::source_ip,
                true,
            ),
        ];
        for (name, values, convert, negate) in fields {
            if values.is_empty() {
                continue;
            }
            let mut any = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                any.push(convert(self, v, &format!("{at}.{name}[{i}]"))?);
            }
            let or = Principal::Or(any);
            all.push(if negate { !or } else { or });
        }
        if all.is_empty() {
            return Err(self.empty(at));
        }
        Ok(Principal::And(all))
    }

    fn operation(&self, o: &Operation, at: &str) -> Result<Permission, IstioAuthzError> {
        let mut all = Vec::new();
        let fields: [OperationField<'_>; 8] = [
            ("hosts", &o.hosts, Cx::host, false),
            ("notHosts", &o.not_hosts, Cx::host, true),
            ("ports", &o.ports, Cx::port, false),
            ("notPorts", &o.not_ports, Cx::port, true),
            ("methods", &o.methods, Cx::method, false),
            ("notMethods", &o.not_methods, Cx::method, true),
            ("paths", &o.paths, Cx::path, false),
            ("notPaths", &o.not_paths, Cx::path, true),
        ];
        for (name, values, convert, negate) in fields {
            if values.is_empty() {
                continue;
            }
            let mut any = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                any.push(convert(self, v, &format!("{at}.{name}[{i}]"))?);
            }
            let or = Permission::Or(any);
            all.push(if negate { !or } else { or });
        }
        if all.is_empty() {
            return Err(self.empty(at));
        }
        Ok(Permission::And(all))
    }

    fn condition(&self, c: &Condition, at: &str) -> Result<Either, IstioAuthzError> {
        if c.values.is_empty() && c.not_values.is_empty() {
            return Err(IstioAuthzError::ConditionWithoutValues {
                policy: self.policy.clone(),
                field: at.to_owned(),
                key: c.key.clone(),
            });
        }
        let key = c.key.as_str();
        let principal = |convert: fn(&Cx, &str, &str) -> Result<Principal, IstioAuthzError>| {
            let (yes, no) = self.values(c, at, |v, at| convert(self, v, at))?;
            let mut all: Vec<Principal> = yes.map(Principal::Or).into_iter().collect();
            all.extend(no.map(|n| !Principal::Or(n)));
            Ok(Either::Principal(and_principals(all)))
        };
        let permission = |convert: &dyn Fn(&str, &str) -> Result<Permission, IstioAuthzError>| {
            let (yes, no) = self.values(c, at, convert)?;
            let mut all: Vec<Permission> = yes.map(Permission::Or).into_iter().collect();
            all.extend(no.map(|n| !Permission::Or(n)));
            Ok(Either::Permission(and_permissions(all)))
        };
        match key {
            "source.ip" | "remote.ip" => principal(Cx::source_ip),
            "source.namespace" => principal(Cx::namespace),
            "source.principal" => principal(Cx::principal),
            "destination.port" => permission(&|v, at| self.port(v, at)),
            "destination.ip" => permission(&|v, at| self.destination_ip(v, at)),
            "connection.sni" => permission(&|v, at| self.sni(v, at)),
            _ if key.starts_with("request.headers[") => {
                let name = key
                    .strip_prefix("request.headers[")
                    .and_then(|k| k.strip_suffix(']'))
                    .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
                    .ok_or_else(|| IstioAuthzError::BadHeaderKey {
                        policy: self.policy.clone(),
                        field: format!("{at}.key"),
                        key: key.to_owned(),
                    })?;
                permission(&|v, at| self.header(name, v, at))
            }
            // request.auth.*, experimental.* and anything unknown: fail closed.
            _ => Ok(Either::Permission(Permission::unsupported(format!(
                "{}: {at}: condition key {key:?} is not supported",
                self.policy
            )))),
        }
    }

    /// Converts `values` and `notValues`; `None` for a list that is empty.
    #[allow(clippy::type_complexity)]
    fn values<T>(
        &self,
        c: &Condition,
        at: &str,
        convert: impl Fn(&str, &str) -> Result<T, IstioAuthzError>,
    ) -> Result<(Option<Vec<T>>, Option<Vec<T>>), IstioAuthzError> {
        let list = |values: &[String], name: &str| -> Result<Option<Vec<T>>, IstioAuthzError> {
            if values.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                out.push(convert(v, &format!("{at}.{name}[{i}]"))?);
            }
            Ok(Some(out))
        };
        Ok((
            list(&c.values, "values")?,
            list(&c.not_values, "notValues")?,
        ))
    }

    fn header(&self, name: &str, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        let value = match wildcard(v) {
            Wildcard::Any => HeaderValueMatch::Present(true),
            _ => HeaderValueMatch::String(string_matcher(v, false)),
        };
        HeaderMatcher::new(name, value, false)
            .map(Permission::Header)
            .map_err(|e| self.bad_matcher(at, v, e))
    }

    fn principal(&self, v: &str, at: &str) -> Result<Principal, IstioAuthzError> {
        self.non_empty(v, at)?;
        let m = match wildcard(v) {
            Wildcard::Any => return Ok(Principal::Authenticated(None)),
            Wildcard::Prefix(p) => StringMatcher::prefix(format!("spiffe://{p}")),
            Wildcard::Suffix(s) => StringMatcher::suffix(s),
            Wildcard::Exact(e) => StringMatcher::exact(format!("spiffe://{e}")),
        };
        Ok(Principal::Authenticated(Some(m)))
    }

    fn request_principal(&self, v: &str, at: &str) -> Result<Principal, IstioAuthzError> {
        self.non_empty(v, at)?;
        Ok(Principal::unsupported(format!(
            "{}: {at}: request principals (JWT) are not supported",
            self.policy
        )))
    }

    fn namespace(&self, v: &str, at: &str) -> Result<Principal, IstioAuthzError> {
        self.non_empty(v, at)?;
        let ns = match wildcard(v) {
            Wildcard::Any => "[^/]+".to_owned(),
            Wildcard::Prefix(p) => format!("{}[^/]*", regex::escape(p)),
            Wildcard::Suffix(s) => format!("[^/]*{}", regex::escape(s)),
            Wildcard::Exact(e) => regex::escape(e),
        };
        let m = StringMatcher::regex(&format!("spiffe://[^/]+/ns/{ns}/.*"))
            .map_err(|e| self.bad_matcher(at, v, e))?;
        Ok(Principal::Authenticated(Some(m)))
    }

    fn source_ip(&self, v: &str, at: &str) -> Result<Principal, IstioAuthzError> {
        Ok(Principal::SourceIp(self.cidr(v, at)?))
    }

    fn destination_ip(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        Ok(Permission::DestinationIp(self.cidr(v, at)?))
    }

    fn cidr(&self, v: &str, at: &str) -> Result<Cidr, IstioAuthzError> {
        v.parse().map_err(|source| IstioAuthzError::BadCidr {
            policy: self.policy.clone(),
            field: at.to_owned(),
            value: v.to_owned(),
            source,
        })
    }

    fn host(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        self.non_empty(v, at)?;
        let value = match wildcard(v) {
            Wildcard::Any => HeaderValueMatch::Present(true),
            _ => HeaderValueMatch::String(string_matcher(v, true)),
        };
        HeaderMatcher::new(":authority", value, false)
            .map(Permission::Header)
            .map_err(|e| self.bad_matcher(at, v, e))
    }

    fn port(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        let port = Some(v)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| IstioAuthzError::BadPort {
                policy: self.policy.clone(),
                field: at.to_owned(),
                value: v.to_owned(),
            })?;
        Ok(Permission::DestinationPort(port))
    }

    fn method(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        self.non_empty(v, at)?;
        let value = match wildcard(v) {
            Wildcard::Any => HeaderValueMatch::Present(true),
            _ => HeaderValueMatch::String(string_matcher(v, false)),
        };
        HeaderMatcher::new(":method", value, false)
            .map(Permission::Header)
            .map_err(|e| self.bad_matcher(at, v, e))
    }

    fn path(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        self.non_empty(v, at)?;
        if v.contains("{*}") || v.contains("{**}") {
            return Ok(Permission::unsupported(format!(
                "{}: {at}: path templates are not supported",
                self.policy
            )));
        }
        Ok(Permission::UrlPath(string_matcher(v, false)))
    }

    fn sni(&self, v: &str, at: &str) -> Result<Permission, IstioAuthzError> {
        self.non_empty(v, at)?;
        Ok(Permission::RequestedServerName(string_matcher(v, false)))
    }

    fn non_empty(&self, v: &str, at: &str) -> Result<(), IstioAuthzError> {
        if v.is_empty() {
            return Err(IstioAuthzError::EmptyValue {
                policy: self.policy.clone(),
                field: at.to_owned(),
            });
        }
        Ok(())
    }

    fn missing(&self, at: &str) -> IstioAuthzError {
        IstioAuthzError::Missing {
            policy: self.policy.clone(),
            field: at.to_owned(),
        }
    }

    fn empty(&self, at: &str) -> IstioAuthzError {
        IstioAuthzError::Empty {
            policy: self.policy.clone(),
            field: at.to_owned(),
        }
    }

    fn bad_matcher(
        &self,
        at: &str,
        v: &str,
        source: crate::matcher::MatcherError,
    ) -> IstioAuthzError {
        IstioAuthzError::BadMatcher {
            policy: self.policy.clone(),
            field: at.to_owned(),
            value: v.to_owned(),
            source,
        }
    }
}

enum Either {
    Permission(Permission),
    Principal(Principal),
}

fn and_permissions(mut all: Vec<Permission>) -> Permission {
    match all.len() {
        0 => Permission::Any,
        1 => all.pop().unwrap_or(Permission::Any),
        _ => Permission::And(all),
    }
}

fn and_principals(mut all: Vec<Principal>) -> Principal {
    match all.len() {
        0 => Principal::Any,
        1 => all.pop().unwrap_or(Principal::Any),
        _ => Principal::And(all),
    }
}
