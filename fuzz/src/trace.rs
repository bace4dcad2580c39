//! Harnesses for the trace headers of mesh-tower (`trace::w3c`, `trace::b3` and
//! `trace::extract`, all public). Besides "no panic": what is accepted and written back
//! out parses again to the same context.
//!
//! The whole input is tried as one header value; it is also read as a header block, one
//! `name: value` per line, for the functions that take a `HeaderMap`.
//!
//! Shared by `fuzz_targets/trace_{w3c,b3}.rs` and `mesh-tower/tests/fuzz_seeds.rs`.

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_tower::trace::{b3, extract, w3c};

/// `name: value` lines as headers; lines that are not valid headers are skipped.
fn header_block(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// The whole of what a server reads from a request's trace headers.
fn extract_all(headers: &HeaderMap) {
    let incoming = extract(headers);
    if let Some((trace_id, span_id)) = incoming.parent {
        assert!(
            trace_id.is_valid() && span_id.is_valid(),
            "invalid ids accepted"
        );
    }
}

/// W3C `traceparent` and `tracestate`.
pub fn trace_w3c(data: &[u8]) {
    if let Ok(tp) = w3c::parse_traceparent(data) {
        let out = w3c::format_traceparent(&tp.trace_id, &tp.parent_id, tp.flags);
        let again = w3c::parse_traceparent(out.as_bytes())
            .unwrap_or_else(|e| panic!("our own traceparent {out:?} rejected: {e}"));
        assert_eq!(
            (again.trace_id, again.parent_id, again.flags),
            // Level 2: the sampled and random flags are kept, the rest dropped.
            (
                tp.trace_id,
                tp.parent_id,
                tp.flags & (mesh_tower::trace::FLAG_SAMPLED | mesh_tower::trace::FLAG_RANDOM)
            )
        );
    }
    if let Ok(Some(state)) = w3c::parse_tracestate(data.split(|&b| b == b'\n')) {
        let again = w3c::parse_tracestate(std::iter::once(state.header_value().as_bytes()));
        assert_eq!(
            again,
            Ok(Some(state.clone())),
            "tracestate did not round-trip"
        );
        assert!(!state.as_str().is_empty());
    }
    let headers = header_block(data);
    let _ = w3c::traceparent_from(&headers);
    let _ = w3c::tracestate_from(&headers);
    extract_all(&headers);
}

/// B3, single `b3` header and the `x-b3-*` headers.
pub fn trace_b3(data: &[u8]) {
    if let Ok(b3::B3Headers::Context(ctx)) = b3::parse_single(data) {
        let out = b3::format_single(&ctx);
        let again = b3::parse_single(out.as_bytes())
            .unwrap_or_else(|e| panic!("our own b3 {out:?} rejected: {e}"));
        assert_eq!(again, b3::B3Headers::Context(ctx), "b3 did not round-trip");
    }
    let headers = header_block(data);
    let _ = b3::single_from(&headers);
    if let Some(Ok(b3::B3Headers::Context(ctx))) = b3::parse_multi(&headers) {
        let mut out = HeaderMap::new();
        b3::insert_multi(&mut out, &ctx);
        assert_eq!(
            b3::parse_multi(&out),
            Some(Ok(b3::B3Headers::Context(ctx))),
            "x-b3-* did not round-trip"
        );
    }
    extract_all(&headers);
}
