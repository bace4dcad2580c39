//! The per-route traffic policy: retries (gRFC A44, plus Envoy's HTTP conditions and
//! `per_try_timeout`), hash policies (gRFC A42) and header mutations (Envoy's
//! `*_headers_to_add` / `*_headers_to_remove`).

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use http::{HeaderName, HeaderValue};
use mesh_core::retry::{BackoffConfig, RetryOn, RetryPolicy};
use mesh_core::route::{HashPolicy, HashPolicyKind, HeaderMutations};

use super::duration;
use crate::resource::FieldError;

/// gRPC's filter-state key that hashes on the channel (gRFC A42).
const CHANNEL_ID_KEY: &str = "io.grpc.channel_id";

/// An Envoy `RetryPolicy`. `retry_on` tokens this implementation does not know are
/// ignored, as gRFC A44 ignores every token it does not support; the HTTP conditions Envoy
/// knows (`5xx`, `connect-failure`, ...) are honoured on top of gRPC's status codes.
/// `None` when no supported condition is left (A44: no retry policy at all).
pub(crate) fn retry_policy(p: &pb::RetryPolicy) -> Result<Option<RetryPolicy>, FieldError> {
    // `retriable-headers` needs the header list, which the model does not carry: dropped
    // like the other conditions gRPC ignores.
    let known: Vec<&str> = p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| RetryOn::KNOWN_NAMES.contains(t) && *t != "retriable-headers")
        .collect();
    let mut retry_on =
        RetryOn::parse(&known.join(",")).map_err(|e| FieldError::new("retry_on", e.to_string()))?;
    if retry_on.contains(RetryOn::RETRIABLE_STATUS_CODES) {
        let mut codes = Vec::with_capacity(p.retriable_status_codes.len());
        for (i, code) in p.retriable_status_codes.iter().enumerate() {
            let code = u16::try_from(*code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| {
                    FieldError::new(
                        format!("retriable_status_codes[{i}]"),
                        format!("{code} is not an HTTP status"),
                    )
                })?;
            codes.push(code);
        }
        retry_on = retry_on.with_retriable_status_codes(codes);
    }
    if retry_on.is_empty() {
        return Ok(None);
    }
    // Envoy's default is one retry; zero means "no retries" and is kept as such.
    let num_retries = p.num_retries.as_ref().map_or(1, |n| n.value);
    let mut policy = RetryPolicy::new(num_retries, retry_on);
    if let Some(backoff) = &p.retry_back_off {
        // gRPC and Envoy both require a positive base interval and a cap not below it.
        let base = backoff
            .base_interval
            .as_ref()
            .ok_or_else(|| FieldError::new("retry_back_off.base_interval", "missing"))
            .and_then(|d| duration(d, "retry_back_off.base_interval"))?;
        if base.is_zero() {
            return Err(FieldError::new(
                "retry_back_off.base_interval",
                "must be above zero",
            ));
        }
        let mut config = BackoffConfig::new(base);
        if let Some(max) = &backoff.max_interval {
            let max = duration(max, "retry_back_off.max_interval")?;
            if max < base {
                return Err(FieldError::new(
                    "retry_back_off.max_interval",
                    format!("{max:?} is below base_interval {base:?}"),
                ));
            }
            config = config.with_max_interval(max);
        }
        policy = policy.with_backoff(config);
    }
    if let Some(t) = &p.per_try_timeout {
        let t = duration(t, "per_try_timeout")?;
        policy = policy.with_per_try_timeout(Some(t).filter(|d| !d.is_zero()));
    }
    Ok(Some(policy))
}

/// gRFC A42 hash policies. Kinds gRPC does not support (cookie, query parameter, other
/// filter-state keys) are skipped, as are `-bin` headers.
pub(crate) fn hash_policies(list: &[pb::route_action::HashPolicy]) -> Vec<HashPolicy> {
    list.iter()
        .filter_map(|h| {
            let kind = match h.policy_specifier.as_ref()? {
                PolicySpecifier::Header(header) if !header.header_name.ends_with("-bin") => {
                    HashPolicyKind::Header {
                        name: header.header_name.to_ascii_lowercase(),
                    }
                }
                PolicySpecifier::ConnectionProperties(c) if c.source_ip => HashPolicyKind::SourceIp,
                PolicySpecifier::FilterState(f) if f.key == CHANNEL_ID_KEY => {
                    HashPolicyKind::ChannelId
                }
                _ => return None,
            };
            Some(HashPolicy {
                kind,
                terminal: h.terminal,
            })
        })
        .collect()
}

/// Envoy's header mutations: `add` lists then `remove` names. Invalid names or values, the
/// pseudo-headers and `host` are rejected, as Envoy rejects them; `ADD_IF_ABSENT` and
/// `OVERWRITE_IF_EXISTS` have no equivalent here and are rejected rather than approximated.
pub(crate) fn header_mutations(
    add: &[HeaderValueOption],
    remove: &[String],
    add_field: &str,
    remove_field: &str,
) -> Result<HeaderMutations, FieldError> {
    let mut m = HeaderMutations::new();
    for (i, option) in add.iter().enumerate() {
        let at = format!("{add_field}[{i}]");
        let header = option
            .header
            .as_ref()
            .ok_or_else(|| FieldError::new(format!("{at}.header"), "missing"))?;
        let name = header_name(&header.key).map_err(|e| e.under(&format!("{at}.header.key")))?;
        let raw = if header.raw_value.is_empty() {
            header.value.as_bytes()
        } else {
            header.raw_value.as_slice()
        };
        let value = HeaderValue::from_bytes(raw).map_err(|_| {
            FieldError::new(format!("{at}.header.value"), "not a valid header value")
        })?;
        if raw.is_empty() && !option.keep_empty_value {
            continue;
        }
        #[allow(deprecated)] // `append` is what older control planes send
        let append = match option.append {
            Some(b) => b.value,
            None => match HeaderAppendAction::try_from(option.append_action) {
                Ok(HeaderAppendAction::AppendIfExistsOrAdd) => true,
                Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => false,
                Ok(other) => {
                    return Err(FieldError::new(
                        format!("{at}.append_action"),
                        format!("{} is not supported", other.as_str_name()),
                    ))
                }
                Err(_) => {
                    return Err(FieldError::new(
                        format!("{at}.append_action"),
                        format!("unknown value {}", option.append_action),
                    ))
                }
            },
        };
        m = if append {
            m.append(name, value)
        } else {
            m.set(name, value)
        };
    }
    for (i, name) in remove.iter().enumerate() {
        m = m.remove(header_name(name).map_err(|e| e.under(&format!("{remove_field}[{i}]")))?);
    }
    Ok(m)
}

fn header_name(name: &str) -> Result<HeaderName, FieldError> {
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(FieldError::new("", format!("`{name}` may not be modified")));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FieldError::new("", format!("`{name}` is not a valid header name")))
}

/// The request and response mutations of anything with Envoy's four header lists.
pub(crate) fn request_response_mutations(
    req_add: &[HeaderValueOption],
    req_remove: &[String],
    resp_add: &[HeaderValueOption],
    resp_remove: &[String],
) -> Result<(HeaderMutations, HeaderMutations), FieldError> {
    Ok((
        header_mutations(
            req_add,
            req_remove,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
        header_mutations(
            resp_add,
            resp_remove,
            "response_headers_to_add",
            "response_headers_to_remove",
        )?,
    ))
}
