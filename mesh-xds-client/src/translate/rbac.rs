//! Envoy's RBAC HTTP filter -> [`mesh_core::rbac`] (gRFC A41), failing closed.
//!
//! Rules this implementation cannot evaluate (metadata, filter state, CEL conditions,
//! extension matchers) become [`Permission::Unsupported`] / [`Principal::Unsupported`],
//! which never grant access: an ALLOW engine reads them as "no match", a DENY engine as
//! "match". Only malformed values (a bad CIDR, a bad regex) reject the resource.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::config::rbac::v3::permission::Rule;
use envoy_types::pb::envoy::config::rbac::v3::principal::Identifier;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule as PathRule;
use envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher;
use mesh_core::matcher::StringMatcher;
use mesh_core::rbac::{Cidr, Permission, Policy, PortRange, Principal, RbacAction, RbacEngine};

use super::route::{string_matcher, translate_header};
use crate::resource::FieldError;

/// The engine of one RBAC filter config; `None` when the filter enforces nothing (no
/// `rules`, or the `LOG` action, which only logs).
pub(crate) fn rbac_filter(filter: &RbacFilter) -> Result<Option<RbacEngine>, FieldError> {
    match &filter.rules {
        Some(rules) => rbac_rules(rules).map_err(|e| e.under("rules")),
        // The matcher API is not supported: deny everything rather than guess.
        None if filter.matcher.is_some() => Ok(Some(RbacEngine::new(RbacAction::Allow, vec![]))),
        None => Ok(None),
    }
}

pub(crate) fn rbac_rules(rules: &pb::Rbac) -> Result<Option<RbacEngine>, FieldError> {
    let action = match pb::rbac::Action::try_from(rules.action) {
        Ok(pb::rbac::Action::Allow) => RbacAction::Allow,
        Ok(pb::rbac::Action::Deny) => RbacAction::Deny,
        Ok(pb::rbac::Action::Log) => return Ok(None),
        Err(_) => {
            return Err(FieldError::new(
                "action",
                format!("unknown value {}", rules.action),
            ))
        }
    };
    // A map on the wire: sort by name so evaluation order is stable.
    let mut names: Vec<&String> = rules.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let policy = &rules.policies[name];
        let at = format!("policies[{name}]");
        let mut permissions = Vec::with_capacity(policy.permissions.len());
        for (i, p) in policy.permissions.iter().enumerate() {
            permissions
                .push(permission(p).map_err(|e| e.under(&format!("{at}.permissions[{i}]")))?);
        }
        let mut principals = Vec::with_capacity(policy.principals.len());
        for (i, p) in policy.principals.iter().enumerate() {
            principals.push(principal(p).map_err(|e| e.under(&format!("{at}.principals[{i}]")))?);
        }
        if policy.condition.is_some() || policy.checked_condition.is_some() {
            // A CEL condition narrows the policy; unevaluable, so the policy can never
            // grant access (and a DENY policy always denies).
            permissions = vec![Permission::And(vec![
                Permission::Or(permissions),
                Permission::unsupported("CEL condition"),
            ])];
        }
        policies.push((name.clone(), Policy::new(permissions, principals)));
    }
    Ok(Some(RbacEngine::new(action, policies)))
}

#[allow(deprecated)] // `metadata` is deprecated for `sourced_metadata`; both are unsupported
fn permission(p: &pb::Permission) -> Result<Permission, FieldError> {
    let Some(rule) = &p.rule else {
        return Err(FieldError::new("rule", "missing"));
    };
    Ok(match rule {
        Rule::Any(true) => Permission::Any,
        Rule::Any(false) => Permission::Or(vec![]),
        Rule::AndRules(set) => Permission::And(permissions(&set.rules, "and_rules")?),
        Rule::OrRules(set) => Permission::Or(permissions(&set.rules, "or_rules")?),
        Rule::NotRule(inner) => !permission(inner).map_err(|e| e.under("not_rule"))?,
        Rule::Header(h) => Permission::Header(translate_header(h).map_err(|e| e.under("header"))?),
        Rule::UrlPath(path) => Permission::UrlPath(path_matcher(path, "url_path")?),
        Rule::DestinationIp(c) => Permission::DestinationIp(cidr(c, "destination_ip")?),
        Rule::DestinationPort(port) => match u16::try_from(*port) {
            Ok(port) => Permission::DestinationPort(port),
            Err(_) => {
                return Err(FieldError::new(
                    "destination_port",
                    format!("{port} is not a port"),
                ))
            }
        },
        Rule::DestinationPortRange(r) => {
            let bad = || {
                FieldError::new(
                    "destination_port_range",
                    format!("[{}, {}) is not a port range", r.start, r.end),
                )
            };
            let start = u32::try_from(r.start).map_err(|_| bad())?;
            let end = u32::try_from(r.end).map_err(|_| bad())?;
            Permission::DestinationPortRange(PortRange::new(start, end).map_err(|_| bad())?)
        }
        Rule::RequestedServerName(sm) => Permission::RequestedServerName(
            string_matcher(sm).map_err(|e| e.under("requested_server_name"))?,
        ),
        Rule::Metadata(_) => Permission::unsupported("metadata"),
        Rule::SourcedMetadata(_) => Permission::unsupported("sourced_metadata"),
        Rule::Matcher(_) => Permission::unsupported("extension matcher"),
        Rule::UriTemplate(_) => Permission::unsupported("uri_template"),
    })
}

fn permissions(list: &[pb::Permission], field: &str) -> Result<Vec<Permission>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| permission(p).map_err(|e| e.under(&format!("{field}.rules[{i}]"))))
        .collect()
}

fn principal(p: &pb::Principal) -> Result<Principal, FieldError> {
    let Some(id) = &p.identifier else {
        return Err(FieldError::new("identifier", "missing"));
    };
    #[allow(deprecated)] // `source_ip` is still sent by older control planes
    Ok(match id {
        Identifier::Any(true) => Principal::Any,
        Identifier::Any(false) => Principal::Or(vec![]),
        Identifier::AndIds(set) => Principal::And(principals(&set.ids, "and_ids")?),
        Identifier::OrIds(set) => Principal::Or(principals(&set.ids, "or_ids")?),
        Identifier::NotId(inner) => !principal(inner).map_err(|e| e.under("not_id"))?,
        Identifier::Authenticated(a) => Principal::Authenticated(
            a.principal_name
                .as_ref()
                .map(string_matcher)
                .transpose()
                .map_err(|e| e.under("authenticated.principal_name"))?,
        ),
        // A proxyless server sees its peer directly: the three are the same address.
        Identifier::SourceIp(c) => Principal::SourceIp(cidr(c, "source_ip")?),
        Identifier::DirectRemoteIp(c) => Principal::SourceIp(cidr(c, "direct_remote_ip")?),
        Identifier::RemoteIp(c) => Principal::SourceIp(cidr(c, "remote_ip")?),
        Identifier::Header(h) => {
            Principal::Header(translate_header(h).map_err(|e| e.under("header"))?)
        }
        Identifier::UrlPath(path) => Principal::UrlPath(path_matcher(path, "url_path")?),
        Identifier::Metadata(_) => Principal::unsupported("metadata"),
        Identifier::FilterState(_) => Principal::unsupported("filter_state"),
        Identifier::SourcedMetadata(_) => Principal::unsupported("sourced_metadata"),
        Identifier::Custom(_) => Principal::unsupported("custom principal"),
    })
}

fn principals(list: &[pb::Principal], field: &str) -> Result<Vec<Principal>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| principal(p).map_err(|e| e.under(&format!("{field}.ids[{i}]"))))
        .collect()
}

fn path_matcher(p: &PathMatcher, field: &str) -> Result<StringMatcher, FieldError> {
    match &p.rule {
        Some(PathRule::Path(sm)) => {
            string_matcher(sm).map_err(|e| e.under(&format!("{field}.path")))
        }
        None => Err(FieldError::new(format!("{field}.rule"), "missing")),
    }
}

fn cidr(c: &CidrRange, field: &str) -> Result<Cidr, FieldError> {
    let addr = c.address_prefix.parse().map_err(|_| {
        FieldError::new(
            format!("{field}.address_prefix"),
            format!("`{}` is not an IP address", c.address_prefix),
        )
    })?;
    let len = c.prefix_len.as_ref().map_or(
        if matches!(addr, std::net::IpAddr::V4(_)) {
            32
        } else {
            128
        },
        |l| l.value,
    );
    Cidr::new(addr, len).map_err(|e| FieldError::new(format!("{field}.prefix_len"), e.to_string()))
}
