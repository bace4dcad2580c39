//! B3 propagation (Zipkin): the multi-header form (`x-b3-traceid`, `x-b3-spanid`,
//! `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`) and the single `b3` header
//! (`{trace}-{span}[-{sampling}[-{parent}]]`, or a lone sampling state).
//!
//! Trace ids are 16 or 32 hex digits (a 64-bit id is the low half of a 128-bit one);
//! span ids are 16; all-zero ids are invalid. Sampling: `1`/`0` (also `true`/`false`),
//! `d` (debug, single header) or `x-b3-flags: 1` (debug, multi-header).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ids::{hex_into, parse_hex, SpanId, TraceId};

/// The single header.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// Multi-header names.
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// The span id header.
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// The parent span id header.
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// The sampling decision header.
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// The debug flag header.
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A sampling decision as B3 carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Do not sample.
    Deny,
    /// Sample.
    Accept,
    /// Sample, and the caller asked for debug.
    Debug,
}

impl Sampling {
    /// Whether the trace is sampled.
    pub fn sampled(self) -> bool {
        !matches!(self, Self::Deny)
    }
}

/// A parsed B3 context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct B3Context {
    /// The trace id (a 64-bit id has its upper half zero).
    pub trace_id: TraceId,
    /// The caller's span id.
    pub span_id: SpanId,
    /// The caller's parent, if sent.
    pub parent_span_id: Option<SpanId>,
    /// The sampling decision; `None` defers it to us.
    pub sampling: Option<Sampling>,
}

/// Why B3 headers were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidB3 {
    /// The trace id is not 16 or 32 hex digits, or is zero.
    #[error("b3 trace id is invalid")]
    TraceId,
    /// The span id (or parent span id) is not 16 hex digits, or is zero.
    #[error("b3 span id is invalid")]
    SpanId,
    /// The sampling state is not one of `0`, `1`, `d`.
    #[error("b3 sampling state is invalid")]
    Sampling,
    /// The single header has the wrong number of fields.
    #[error("b3 header has the wrong shape")]
    Shape,
}

/// What the B3 headers of a request say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Headers {
    /// A full context.
    Context(B3Context),
    /// Only a sampling decision (`b3: 0`, or `x-b3-sampled` alone).
    SamplingOnly(Sampling),
}

fn trace_id(s: &[u8]) -> Result<TraceId, InvalidB3> {
    let id = match s.len() {
        16 => {
            let low = parse_hex::<8>(s, true).ok_or(InvalidB3::TraceId)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        32 => parse_hex::<16>(s, true).ok_or(InvalidB3::TraceId)?,
        _ => return Err(InvalidB3::TraceId),
    };
    Some(TraceId(id))
        .filter(TraceId::is_valid)
        .ok_or(InvalidB3::TraceId)
}

fn span_id(s: &[u8]) -> Result<SpanId, InvalidB3> {
    parse_hex::<8>(s, true)
        .map(SpanId)
        .filter(SpanId::is_valid)
        .ok_or(InvalidB3::SpanId)
}

fn sampling(s: &[u8]) -> Result<Sampling, InvalidB3> {
    match s {
        b"0" | b"false" => Ok(Sampling::Deny),
        b"1" | b"true" => Ok(Sampling::Accept),
        b"d" => Ok(Sampling::Debug),
        _ => Err(InvalidB3::Sampling),
    }
}

/// Parses one single-header `b3` value.
pub fn parse_single(value: &[u8]) -> Result<B3Headers, InvalidB3> {
    let value = value.trim_ascii();
    let mut fields = value.split(|&b| b == b'-');
    let first = fields.next().ok_or(InvalidB3::Shape)?;
    let Some(second) = fields.next() else {
        return sampling(first).map(B3Headers::SamplingOnly);
    };
    let trace_id = trace_id(first)?;
    let span_id = span_id(second)?;
    let sampling = fields.next().map(sampling).transpose()?;
    let parent_span_id = fields.next().map(self::span_id).transpose()?;
    if fields.next().is_some() {
        return Err(InvalidB3::Shape);
    }
    Ok(B3Headers::Context(B3Context {
        trace_id,
        span_id,
        parent_span_id,
        sampling,
    }))
}

/// Parses the multi-header form; `None` when no B3 header is present.
pub fn parse_multi(headers: &HeaderMap) -> Option<Result<B3Headers, InvalidB3>> {
    let get = |name: HeaderName| {
        headers
            .get(name)
            .map(|v: &HeaderValue| v.as_bytes().trim_ascii())
    };
    let debug = get(X_B3_FLAGS) == Some(b"1");
    let sampled = match get(X_B3_SAMPLED).map(sampling).transpose() {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let sampled = if debug {
        Some(Sampling::Debug)
    } else {
        sampled
    };
    let Some(tid) = get(X_B3_TRACEID) else {
        return sampled.map(|s| Ok(B3Headers::SamplingOnly(s)));
    };
    Some((|| {
        let trace_id = trace_id(tid)?;
        let span_id = span_id(get(X_B3_SPANID).ok_or(InvalidB3::SpanId)?)?;
        let parent_span_id = get(X_B3_PARENTSPANID).map(self::span_id).transpose()?;
        Ok(B3Headers::Context(B3Context {
            trace_id,
            span_id,
            parent_span_id,
            sampling: sampled,
        }))
    })())
}

/// Parses the single `b3` header of a request; `None` when absent.
pub fn single_from(headers: &HeaderMap) -> Option<Result<B3Headers, InvalidB3>> {
    headers.get(B3).map(|v| parse_single(v.as_bytes()))
}

fn trace_id_hex<'a>(buf: &'a mut [u8; 32], id: &TraceId) -> &'a [u8] {
    if id.is_64_bit() {
        hex_into(&mut buf[..16], &id.0[8..])
    } else {
        hex_into(buf, &id.0)
    }
}

fn sampling_str(s: Sampling) -> &'static [u8] {
    match s {
        Sampling::Deny => b"0",
        Sampling::Accept => b"1",
        Sampling::Debug => b"d",
    }
}

/// The single `b3` header value for a context.
pub fn format_single(ctx: &B3Context) -> HeaderValue {
    let mut out = Vec::with_capacity(68);
    let mut buf = [0u8; 32];
    out.extend_from_slice(trace_id_hex(&mut buf, &ctx.trace_id));
    out.push(b'-');
    out.extend_from_slice(hex_into(&mut buf, &ctx.span_id.0));
    if let Some(s) = ctx.sampling {
        out.push(b'-');
        out.extend_from_slice(sampling_str(s));
        if let Some(p) = &ctx.parent_span_id {
            out.push(b'-');
            out.extend_from_slice(hex_into(&mut buf, &p.0));
        }
    }
    // Differs on every request: never indexed by HPACK. The buffer becomes the value.
    super::ids::unique_value(out).unwrap_or(HeaderValue::from_static("0"))
}

/// Writes the multi-header form of `ctx` into `headers`, replacing any B3 headers there.
pub fn insert_multi(headers: &mut HeaderMap, ctx: &B3Context) {
    let mut buf = [0u8; 32];
    let mut put = |name: HeaderName, bytes: &[u8]| {
        if let Ok(mut v) = HeaderValue::from_bytes(bytes) {
            // Ids: never indexed by HPACK (see `ids::unique_value`).
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    };
    put(X_B3_TRACEID, trace_id_hex(&mut buf, &ctx.trace_id));
    put(X_B3_SPANID, hex_into(&mut buf, &ctx.span_id.0));
    match &ctx.parent_span_id {
        Some(p) => put(X_B3_PARENTSPANID, hex_into(&mut buf, &p.0)),
        None => {
            headers.remove(X_B3_PARENTSPANID);
        }
    }
    headers.remove(X_B3_FLAGS);
    headers.remove(X_B3_SAMPLED);
    match ctx.sampling {
        Some(Sampling::Debug) => {
            headers.insert(X_B3_FLAGS, HeaderValue::from_static("1"));
        }
        Some(s) => {
            headers.insert(
                X_B3_SAMPLED,
                HeaderValue::from_static(if s.sampled() { "1" } else { "0" }),
            );
        }
        None => {}
    }
}
