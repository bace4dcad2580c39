//! W3C Trace Context: the `traceparent` and `tracestate` headers.
//!
//! Parsing follows the spec's rules for a receiver: version `ff` is invalid; version `00`
//! is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version may carry more fields after
//! a `-`, of which only the first four are read; hex must be lower case; all-zero ids are
//! invalid. An invalid `traceparent` restarts the trace.
//!
//! Trace flags follow Level 2: bit 0 is `sampled`, bit 1 is `random` (the trace id has at
//! least 56 random bits); both are passed on, other bits are sent as zero.
//!
//! `tracestate` follows the Level 2 rules: keys are `(lcalpha / DIGIT) 0*255 keychar` with
//! `@` an ordinary key character; a bad member or more than 32 members drops the header as
//! a whole; a key seen twice keeps its first (left-most, most recent) entry, as the spec
//! allows; and the list passed on is capped at [`MAX_TRACESTATE_LEN`] characters by
//! dropping whole entries, those longer than 128 characters first, then from the end.

use http::{HeaderName, HeaderValue};

use super::ids::{hex_into, parse_hex, SpanId, TraceId};

/// The header names.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The vendor-specific header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Most list members a `tracestate` may have.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The longest `tracestate` passed on (the spec asks that at least this much is kept).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Entries longer than this are the first dropped when a `tracestate` is too long.
const LONG_ENTRY: usize = 128;

/// The `sampled` trace flag.
pub const FLAG_SAMPLED: u8 = 0x01;
/// The Level 2 `random` trace flag: the trace id is random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags this implementation knows and passes on.
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

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
    /// The trace flags as sent (bit 0: sampled, bit 1: random).
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
    let first = all.next();
    single_traceparent(first, all.next().is_some())
}

/// The `traceparent` of a request whose first such header is `first`, and which had
/// another when `repeated` (invalid: exactly one must be present).
pub(crate) fn single_traceparent(
    first: Option<&HeaderValue>,
    repeated: bool,
) -> Option<Result<TraceParent, InvalidTraceParent>> {
    let first = first?;
    if repeated {
        return Some(Err(InvalidTraceParent::Duplicate));
    }
    Some(parse_traceparent(first.as_bytes()))
}

/// The version-00 `traceparent` for a span; of `flags`, the known bits ([`KNOWN_FLAGS`]:
/// sampled and random) are sent, the others as zero.
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> HeaderValue {
    let mut out = [0u8; V00_LEN];
    out[..3].copy_from_slice(b"00-");
    hex_into(&mut out[3..35], &trace_id.0);
    out[35] = b'-';
    hex_into(&mut out[36..52], &span_id.0);
    out[52] = b'-';
    hex_into(&mut out[53..55], &[flags & KNOWN_FLAGS]);
    super::ids::unique_value(out).unwrap_or(HeaderValue::from_static(""))
}

/// A validated `tracestate`, passed on (members joined by `,`, duplicates and excess
/// length removed).
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
}

/// Parses the `tracestate` headers of a request (several headers are one list); `None`
/// when there is none or it is empty.
pub fn tracestate_from(headers: &http::HeaderMap) -> Option<Result<TraceState, InvalidTraceState>> {
    let values = headers.get_all(TRACESTATE);
    let mut iter = values.iter();
    let first = iter.next()?;
    if iter.next().is_none() {
        // The common case: one header, usually already in normal form, kept as it came.
        return parse_one(first).transpose();
    }
    parse_tracestate(values.iter().map(HeaderValue::as_bytes)).transpose()
}

fn parse_one(value: &HeaderValue) -> Result<Option<TraceState>, InvalidTraceState> {
    let mut members = Vec::new();
    let changed = collect_members(&mut members, std::iter::once(value.as_bytes()))?;
    if members.is_empty() {
        return Ok(None);
    }
    if !changed && value.len() <= MAX_TRACESTATE_LEN {
        return Ok(Some(TraceState(value.clone())));
    }
    Ok(Some(join(&mut members)))
}

/// Parses a `tracestate` list split over any number of header values.
pub fn parse_tracestate<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<TraceState>, InvalidTraceState> {
    let mut members = Vec::new();
    collect_members(&mut members, values)?;
    if members.is_empty() {
        return Ok(None);
    }
    Ok(Some(join(&mut members)))
}

/// Validates the members of `values` into `members`, the first entry of each key only.
/// Returns whether the list differs from its single input value (whitespace, empty
/// members or duplicates removed).
fn collect_members<'a>(
    members: &mut Vec<&'a [u8]>,
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<bool, InvalidTraceState> {
    let mut seen = 0usize;
    let mut changed = false;
    for value in values {
        for raw in value.split(|&b| b == b',') {
            let member = trim_ows(raw);
            if member.len() != raw.len() {
                changed = true;
            }
            if member.is_empty() {
                changed = true;
                continue; // empty list members are allowed
            }
            if seen == MAX_TRACESTATE_MEMBERS {
                return Err(InvalidTraceState::TooManyMembers);
            }
            seen += 1;
            let n = seen - 1;
            let eq = member
                .iter()
                .position(|&b| b == b'=')
                .ok_or(InvalidTraceState::Member(n))?;
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if !valid_key(key) || !valid_value(value) {
                return Err(InvalidTraceState::Member(n));
            }
            // A key seen before: the left-most entry is the most recent position, keep it.
            if members
                .iter()
                .any(|m| m.starts_with(key) && m.get(key.len()) == Some(&b'='))
            {
                changed = true;
                continue;
            }
            members.push(member);
        }
    }
    Ok(changed)
}

/// Joins members with `,`, dropping whole entries until the list fits
/// [`MAX_TRACESTATE_LEN`]: entries longer than 128 characters first (from the end), then
/// entries from the end.
fn join(members: &mut Vec<&[u8]>) -> TraceState {
    let len = |m: &[&[u8]]| m.iter().map(|e| e.len()).sum::<usize>() + m.len().saturating_sub(1);
    while len(members) > MAX_TRACESTATE_LEN {
        match members.iter().rposition(|e| e.len() > LONG_ENTRY) {
            Some(i) => {
                members.remove(i);
            }
            None => {
                members.pop();
            }
        }
    }
    let joined = members.join(&b","[..]);
    // Only validated printable ASCII was joined.
    TraceState(HeaderValue::from_bytes(&joined).unwrap_or(HeaderValue::from_static("")))
}

fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
}

/// `key = ( lcalpha / DIGIT ) 0*255 keychar`, `@` being a key character like the others.
fn valid_key(key: &[u8]) -> bool {
    (1..=256).contains(&key.len())
        && (key[0].is_ascii_lowercase() || key[0].is_ascii_digit())
        && key.iter().all(|&b| key_char(b))
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
