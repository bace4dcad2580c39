//! W3C Trace Context: the `traceparent` and `tracestate` headers.
//!
//! Parsing follows the spec's rules for a receiver: version `ff` is invalid; version `00`
//! is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version may carry more fields after
//! a `-`, of which only the first four are read; hex must be lower case; all-zero ids are
//! invalid. An invalid `traceparent` restarts the trace. A `tracestate` with a bad
//! member, a duplicate key or more than 32 members is dropped as a whole.

use http::HeaderValue;

use super::ids::{hex_into, parse_hex, SpanId, TraceId};

/// The header names.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor-specific header.
pub const TRACESTATE: &str = "tracestate";

/// Most list members a `tracestate` may have.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceParent {
    /// The version it was sent with (we always send `00`).
    pub version: u8,
    /// The trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub parent_id: SpanId,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTraceParent {
    /// More than one `traceparent` header.
    #[error("more than one traceparent header")]
    Duplicate,
    /// Not the length the version demands.
    #[error("traceparent has the wrong length ({0} bytes)")]
    Length(usize),
    /// The version is not two lower-case hex digits, or is `ff`.
    #[error("traceparent version is invalid")]
    Version,
    /// A `-` is missing where a field ends.
    #[error("traceparent field delimiter missing")]
    Delimiter,
    /// The trace id is not 32 lower-case hex digits or is all zeros.
    #[error("traceparent trace-id is invalid")]
    TraceId,
    /// The parent id is not 16 lower-case hex digits or is all zeros.
    #[error("traceparent parent-id is invalid")]
    ParentId,
    /// The flags are not two lower-case hex digits.
    #[error("traceparent trace-flags are invalid")]
    Flags,
}

/// Length of a version-00 `traceparent`.
const V00_LEN: usize = 55;

/// Parses one `traceparent` value (surrounding spaces and tabs are ignored).
pub fn parse_traceparent(value: &[u8]) -> Result<TraceParent, InvalidTraceParent> {
    let v = trim_ows(value);
    if v.len() < V00_LEN {
        return Err(InvalidTraceParent::Length(v.len()));
    }
    let version = parse_hex::<1>(&v[..2], false).ok_or(InvalidTraceParent::Version)?[0];
    if version == 0xff {
        return Err(InvalidTraceParent::Version);
    }
    if version == 0 && v.len() != V00_LEN {
        return Err(InvalidTraceParent::Length(v.len()));
    }
    // A future version may append fields, but only after a delimiter.
    if v.len() > V00_LEN && v[V00_LEN] != b'-' {
        return Err(InvalidTraceParent::Delimiter);
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(InvalidTraceParent::Delimiter);
    }
    let trace_id = parse_hex::<16>(&v[3..35], false)
        .map(TraceId)
        .filter(TraceId::is_valid)
        .ok_or(InvalidTraceParent::TraceId)?;
    let parent_id = parse_hex::<8>(&v[36..52], false)
        .map(SpanId)
        .filter(SpanId::is_valid)
        .ok_or(InvalidTraceParent::ParentId)?;
    let flags = parse_hex::<1>(&v[53..55], false).ok_or(InvalidTraceParent::Flags)?[0];
    Ok(TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// Parses the `traceparent` of a request: exactly one header must be present.
pub fn traceparent_from(
    headers: &http::HeaderMap,
) -> Option<Result<TraceParent, InvalidTraceParent>> {
    let mut all = headers.get_all(TRACEPARENT).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return Some(Err(InvalidTraceParent::Duplicate));
    }
    Some(parse_traceparent(first.as_bytes()))
}

/// The version-00 `traceparent` for a span (only the sampled bit of `flags` is sent).
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> HeaderValue {
    let mut out = [0u8; V00_LEN];
    out[..3].copy_from_slice(b"00-");
    hex_into(&mut out[3..35], &trace_id.0);
    out[35] = b'-';
    hex_into(&mut out[36..52], &span_id.0);
    out[52] = b'-';
    hex_into(&mut out[53..55], &[flags & 0x01]);
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
}

/// A validated `tracestate`, passed on unchanged (members joined by `,`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceState(HeaderValue);

impl TraceState {
    /// The header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The list as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// Why a `tracestate` was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTraceState {
    /// More than [`MAX_TRACESTATE_MEMBERS`] list members.
    #[error("tracestate has more than 32 list members")]
    TooManyMembers,
    /// A member is not `key=value`, or its key or value breaks the grammar.
    #[error("tracestate member {0} is malformed")]
    Member(usize),
    /// Two members have the same key.
    #[error("tracestate has a duplicate key at member {0}")]
    DuplicateKey(usize),
}

/// Parses the `tracestate` headers of a request (several headers are one list); `None`
/// when there is none or it is empty.
pub fn tracestate_from(headers: &http::HeaderMap) -> Option<Result<TraceState, InvalidTraceState>> {
    let values = headers.get_all(TRACESTATE);
    values.iter().next()?;
    parse_tracestate(values.iter().map(HeaderValue::as_bytes)).transpose()
}

/// Parses a `tracestate` list split over any number of header values.
pub fn parse_tracestate<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<TraceState>, InvalidTraceState> {
    let mut members: Vec<&[u8]> = Vec::new();
    for value in values {
        for member in value.split(|&b| b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue; // empty list members are allowed
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return Err(InvalidTraceState::TooManyMembers);
            }
            let n = members.len();
            let eq = member
                .iter()
                .position(|&b| b == b'=')
                .ok_or(InvalidTraceState::Member(n))?;
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if !valid_key(key) || !valid_value(value) {
                return Err(InvalidTraceState::Member(n));
            }
            if members
                .iter()
                .any(|m| m.starts_with(key) && m.get(key.len()) == Some(&b'='))
            {
                return Err(InvalidTraceState::DuplicateKey(n));
            }
            members.push(member);
        }
    }
    if members.is_empty() {
        return Ok(None);
    }
    let joined = members.join(&b","[..]);
    HeaderValue::from_bytes(&joined)
        .map(|v| Some(TraceState(v)))
        .map_err(|_| InvalidTraceState::Member(0))
}

fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            (1..=256).contains(&key.len())
                && key[0].is_ascii_lowercase()
                && key.iter().all(|&b| key_char(b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|&b| key_char(b))
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&b| key_char(b))
        }
    }
}

/// Up to 256 printable ASCII characters except `,` and `=`, not ending in a space.
fn valid_value(value: &[u8]) -> bool {
    let nblk = |b: u8| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=';
    (1..=256).contains(&value.len())
        && value.last().is_some_and(|&b| nblk(b))
        && value.iter().all(|&b| b == b' ' || nblk(b))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
