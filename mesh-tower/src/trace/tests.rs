//! The W3C trace-context test suite's cases (github.com/w3c/trace-context, `test/`),
//! written as Rust tests against the parsers and `extract`, and B3 round trips.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::b3::{self, B3Context, B3Headers, Sampling};
use super::w3c::{parse_traceparent, parse_tracestate, InvalidTraceParent, InvalidTraceState};
use super::*;

const T: &str = "12345678901234567890123456789012";
const S: &str = "1234567890123456";

fn tp(s: &str) -> Result<w3c::TraceParent, InvalidTraceParent> {
    parse_traceparent(s.as_bytes())
}

fn ts(values: &[&str]) -> Result<Option<w3c::TraceState>, InvalidTraceState> {
    parse_tracestate(values.iter().map(|v| v.as_bytes()))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(*k, v);
        }
    }
    h
}

#[test]
fn traceparent_valid_and_sampled_flag() {
    let p = tp(&format!("00-{T}-{S}-01")).ok();
    assert_eq!(p.map(|p| (p.version, p.flags)), Some((0, 1)));
    assert_eq!(tp(&format!("00-{T}-{S}-00")).map(|p| p.flags), Ok(0));
    // Other flag bits are accepted (and not propagated).
    assert_eq!(tp(&format!("00-{T}-{S}-09")).map(|p| p.flags), Ok(9));
}

#[test]
fn traceparent_version() {
    assert_eq!(
        tp(&format!("ff-{T}-{S}-01")),
        Err(InvalidTraceParent::Version)
    );
    for v in ["0x", ".0", "0.", "FF", "Cc", "-0"] {
        assert!(tp(&format!("{v}-{T}-{S}-01")).is_err(), "version {v}");
    }
    // A future version parses like 00.
    assert_eq!(tp(&format!("cc-{T}-{S}-01")).map(|p| p.version), Ok(0xcc));
}

#[test]
fn traceparent_extra_fields_only_for_future_versions() {
    assert!(tp(&format!("00-{T}-{S}-01-what-the-future-will-be-like")).is_err());
    assert!(tp(&format!("cc-{T}-{S}-01-what-the-future-will-be-like")).is_ok());
    assert_eq!(
        tp(&format!("cc-{T}-{S}-01.what-the-future-will-be-like")),
        Err(InvalidTraceParent::Delimiter)
    );
    assert!(tp(&format!("00-{T}-{S}-01-")).is_err());
}

#[test]
fn traceparent_trace_id() {
    let zeros = "0".repeat(32);
    assert_eq!(
        tp(&format!("00-{zeros}-{S}-01")),
        Err(InvalidTraceParent::TraceId)
    );
    let upper = "ABCDEF78901234567890123456789012";
    assert_eq!(
        tp(&format!("00-{upper}-{S}-01")),
        Err(InvalidTraceParent::TraceId)
    );
    for bad in [
        "1234567890123456789012345678901",
        "123456789012345678901234567890123",
    ] {
        assert!(tp(&format!("00-{bad}-{S}-01")).is_err(), "{bad}");
    }
    let illegal = "1234567890123456789012345678901.";
    assert!(tp(&format!("00-{illegal}-{S}-01")).is_err());
}

#[test]
fn traceparent_parent_id() {
    assert_eq!(
        tp(&format!("00-{T}-0000000000000000-01")),
        Err(InvalidTraceParent::ParentId)
    );
    assert!(tp(&format!("00-{T}-ABCDEF7890123456-01")).is_err());
    assert!(tp(&format!("00-{T}-123456789012345-01")).is_err());
    assert!(tp(&format!("00-{T}-12345678901234567-01")).is_err());
    assert!(tp(&format!("00-{T}-123456789012345.-01")).is_err());
}

#[test]
fn traceparent_flags() {
    for bad in ["0", "000", ".1", "0.", "AB", "0G"] {
        assert!(tp(&format!("00-{T}-{S}-{bad}")).is_err(), "flags {bad}");
    }
}

#[test]
fn traceparent_whitespace_and_delimiters() {
    assert!(tp(&format!(" \t00-{T}-{S}-01 \t")).is_ok());
    assert!(tp(&format!("00_{T}-{S}-01")).is_err());
    assert!(tp(&format!("00-{T}_{S}-01")).is_err());
    assert!(tp("").is_err());
    assert!(tp("00").is_err());
}

#[test]
fn invalid_traceparent_restarts_the_trace_and_drops_tracestate() {
    let h = headers(&[
        ("traceparent", &format!("00-{T}-0000000000000000-01")),
        ("tracestate", "foo=1"),
    ]);
    let incoming = extract(&h);
    assert_eq!(incoming.parent, None);
    assert_eq!(incoming.tracestate, None);
}

#[test]
fn duplicated_traceparent_restarts_the_trace() {
    let a = format!("00-{T}-{S}-01");
    let b = format!("00-{}-{S}-01", "1".repeat(32));
    let h = headers(&[("traceparent", &a), ("traceparent", &b)]);
    assert_eq!(extract(&h).parent, None);
}

#[test]
fn traceparent_wins_over_b3() {
    let h = headers(&[
        ("traceparent", &format!("00-{T}-{S}-01")),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]);
    let p = extract(&h)
        .parent
        .map(|(t, s)| (t.to_string(), s.to_string()));
    assert_eq!(p, Some((T.to_owned(), S.to_owned())));
}

#[test]
fn tracestate_valid_lists() {
    let st = ts(&["foo=1, bar=2"]).ok().flatten();
    assert_eq!(
        st.as_ref().map(w3c::TraceState::as_str),
        Some("foo=1,bar=2")
    );
    // Several headers are one list; empty members are skipped.
    let st = ts(&["foo=1,,", " ,bar=2"]).ok().flatten();
    assert_eq!(
        st.as_ref().map(w3c::TraceState::as_str),
        Some("foo=1,bar=2")
    );
    assert_eq!(ts(&[""]), Ok(None));
    assert!(ts(&["tenant@system=x", "a*b/c_d-e=y", "0tenant@s=1"]).is_ok());
}

#[test]
fn tracestate_duplicates_keep_the_first_entry() {
    let st = |v: &[&str]| ts(v).ok().flatten().map(|t| t.as_str().to_owned());
    assert_eq!(st(&["foo=1,foo=1"]).as_deref(), Some("foo=1"));
    assert_eq!(st(&["foo=1", "foo=2"]).as_deref(), Some("foo=1"));
    assert_eq!(st(&["foo=1,bar=2,foo=3"]).as_deref(), Some("foo=1,bar=2"));
    assert_eq!(st(&["foo=1,foobar=2"]).as_deref(), Some("foo=1,foobar=2"));
}

#[test]
fn tracestate_keys() {
    for bad in [
        "Foo=1",
        "foo.bar=1",
        "=1",
        "foo =1",
        "@foo=1",
        "_foo=1",
        "fOo=1",
    ] {
        assert!(ts(&[bad]).is_err(), "key {bad:?}");
    }
    // Level 2: `@` is an ordinary key character after the first; keys may start with a digit.
    for good in [
        "1foo=1",
        "foo@=1",
        "foo@@bar=1",
        "foo@bar@baz=1",
        "tenant@system=x",
        "a*b/c_d-e=y",
    ] {
        assert!(matches!(ts(&[good]), Ok(Some(_))), "key {good:?}");
    }
    let key256 = format!("a{}", "b".repeat(255));
    assert!(ts(&[&format!("{key256}=1")]).is_ok());
    assert!(ts(&[&format!("{key256}b=1")]).is_err());
    let at = format!("{}@{}", "t".repeat(242), "v");
    assert!(ts(&[&format!("{at}=1")]).is_ok());
    let at = format!("t@{}", "v".repeat(254));
    assert!(ts(&[&format!("{at}=1")]).is_ok());
    assert!(ts(&[&format!("{at}v=1")]).is_err());
}

#[test]
fn tracestate_values() {
    let v256 = "v".repeat(256);
    assert!(ts(&[&format!("foo={v256}")]).is_ok());
    assert!(ts(&[&format!("foo={v256}v")]).is_err());
    for bad in ["foo=", "foo=a=b", "foo=a\u{7f}", "foo=\u{1}x"] {
        assert!(ts(&[bad]).is_err(), "value {bad:?}");
    }
    // Inner spaces are allowed; trailing ones belong to the list's whitespace.
    assert!(ts(&["foo=a b"]).is_ok());
}

#[test]
fn tracestate_member_limit() {
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert!(ts(&[&members(32)]).is_ok());
    assert_eq!(ts(&[&members(33)]), Err(InvalidTraceState::TooManyMembers));
    let h = headers(&[
        ("traceparent", &format!("00-{T}-{S}-01")),
        ("tracestate", &members(33)),
    ]);
    let incoming = extract(&h);
    assert!(incoming.parent.is_some());
    assert_eq!(incoming.tracestate, None);
}

#[test]
fn inject_writes_w3c_b3_and_request_id() {
    let h = headers(&[
        ("traceparent", &format!("cc-{T}-{S}-01-future")),
        ("tracestate", "foo=1"),
        ("x-request-id", "req-1"),
    ]);
    let incoming = extract(&h);
    let (trace_id, _) = incoming.parent.unwrap_or_default();
    let mut ctx = TraceContext::new_root();
    ctx.trace_id = trace_id;
    ctx.tracestate = incoming.tracestate;
    ctx.request_id = incoming.request_id;
    ctx.propagation = Propagation::all();
    ctx.b3_form = Some(B3Form::Multi);
    let child = ctx.child(SpanId([7; 8]));
    let mut out = HeaderMap::new();
    child.inject(&mut out);
    let get = |k: &str| {
        out.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(get("traceparent"), format!("00-{T}-0707070707070707-03"));
    assert_eq!(get("b3"), "");
    assert_eq!(get("tracestate"), "foo=1");
    assert_eq!(get("x-b3-traceid"), T);
    assert_eq!(get("x-b3-spanid"), "0707070707070707");
    assert_eq!(get("x-b3-parentspanid"), ctx.span_id.to_string());
    assert_eq!(get("x-b3-sampled"), "1");
    assert_eq!(get("x-request-id"), "req-1");
}

#[test]
fn inject_removes_a_stale_tracestate_and_baggage_and_keeps_the_rest() {
    // An application that copies an inbound request's headers onto its call carries the
    // caller's `tracestate` and `baggage`, here twice each: a context without them must
    // not pass them on.
    let mut out = headers(&[
        ("tracestate", "old=1"),
        ("baggage", "user=alice"),
        ("content-type", "application/json"),
        ("x-app", "kept"),
    ]);
    out.append("tracestate", HeaderValue::from_static("old=2"));
    out.append("baggage", HeaderValue::from_static("user=bob"));
    let mut ctx = TraceContext::new_root();
    ctx.propagation = Propagation::all();
    ctx.inject(&mut out);
    assert!(!out.contains_key("tracestate"), "{out:?}");
    assert!(!out.contains_key("baggage"), "{out:?}");
    assert_eq!(
        out.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_eq!(out.get("x-app").map(|v| v.as_bytes()), Some(&b"kept"[..]));
    assert!(out.contains_key("traceparent"));

    // With a tracestate and baggage of its own, the context's replace the request's.
    let mut ctx = TraceContext::new_root();
    ctx.propagation = Propagation::all();
    ctx.tracestate = extract(&headers(&[
        ("traceparent", &format!("00-{T}-{S}-01")),
        ("tracestate", "mine=1"),
    ]))
    .tracestate;
    ctx.baggage = Some(HeaderValue::from_static("k=v"));
    let mut out = headers(&[("tracestate", "old=1"), ("baggage", "user=alice")]);
    ctx.inject(&mut out);
    let all = |k: &str| {
        out.get_all(k)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("tracestate"), vec![b"mine=1".to_vec()]);
    assert_eq!(all("baggage"), vec![b"k=v".to_vec()]);
}

#[test]
fn request_id_is_made_when_absent_or_bad() {
    assert_eq!(extract(&HeaderMap::new()).request_id.len(), 36);
    let long = "x".repeat(300);
    assert_eq!(
        extract(&headers(&[("x-request-id", &long)]))
            .request_id
            .len(),
        36
    );
    let kept = extract(&headers(&[("x-request-id", "abc")])).request_id;
    assert_eq!(kept, "abc");
}

#[test]
fn b3_single_round_trips() {
    for v in [
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
    ] {
        let Ok(B3Headers::Context(c)) = b3::parse_single(v.as_bytes()) else {
            panic!("{v} did not parse");
        };
        assert_eq!(b3::format_single(&c), v);
    }
    assert_eq!(
        b3::parse_single(b"0"),
        Ok(B3Headers::SamplingOnly(Sampling::Deny))
    );
    assert_eq!(
        b3::parse_single(b"d"),
        Ok(B3Headers::SamplingOnly(Sampling::Debug))
    );
    for bad in [
        "",
        "2",
        "x-y",
        "0000000000000000-e457b5a2e4d86bd1-1",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "64fe8b2a57d3eff-e457b5a2e4d86bd1",
    ] {
        assert!(b3::parse_single(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn b3_multi_round_trips() {
    for (trace, parent, sampled, flags) in [
        (
            "80f198ee56343ba864fe8b2a57d3eff7",
            Some("05e3ac9a4f6e3b90"),
            Some("1"),
            None,
        ),
        ("64fe8b2a57d3eff7", None, Some("0"), None),
        ("64fe8b2a57d3eff7", None, None, Some("1")),
    ] {
        let mut h = headers(&[("x-b3-traceid", trace), ("x-b3-spanid", "e457b5a2e4d86bd1")]);
        for (k, v) in [
            ("x-b3-parentspanid", parent),
            ("x-b3-sampled", sampled),
            ("x-b3-flags", flags),
        ] {
            if let Some(v) = v {
                h.insert(k, HeaderValue::from_static(v));
            }
        }
        let Some(Ok(B3Headers::Context(c))) = b3::parse_multi(&h) else {
            panic!("{trace} did not parse");
        };
        let mut out = HeaderMap::new();
        b3::insert_multi(&mut out, &c);
        assert_eq!(out, h);
    }
    let only = headers(&[("x-b3-sampled", "0")]);
    assert_eq!(
        b3::parse_multi(&only),
        Some(Ok(B3Headers::SamplingOnly(Sampling::Deny)))
    );
    let bad = headers(&[("x-b3-traceid", "64fe8b2a57d3eff7")]);
    assert!(matches!(b3::parse_multi(&bad), Some(Err(_))));
}

#[test]
fn b3_is_used_without_traceparent() {
    let h = headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
    let incoming = extract(&h);
    assert_eq!(incoming.sampled, Some(false));
    let (t, s) = incoming.parent.unwrap_or_default();
    assert!(t.is_64_bit());
    assert_eq!(s.to_string(), "e457b5a2e4d86bd1");
    let c = B3Context {
        trace_id: t,
        span_id: s,
        parent_span_id: None,
        sampling: Some(Sampling::Deny),
    };
    assert_eq!(b3::format_single(&c), "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0");
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_traceparent(&bytes);
        let _ = parse_tracestate(std::iter::once(bytes.as_slice()));
        let _ = b3::parse_single(&bytes);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            for name in ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                         "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id"] {
                h.insert(name, v.clone());
            }
        }
        let _ = b3::parse_multi(&h);
        let incoming = extract(&h);
        prop_assert!(!incoming.request_id.is_empty());
    }

    #[test]
    fn traceparent_like_strings_never_panic(s in "[0-9a-fA-F.-]{0,80}") {
        let _ = parse_traceparent(s.as_bytes());
        let _ = b3::parse_single(s.as_bytes());
    }

    #[test]
    fn valid_traceparents_round_trip(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), f in 0u8..2) {
        prop_assume!(t != [0; 16] && s != [0; 8]);
        let v = w3c::format_traceparent(&TraceId(t), &SpanId(s), f);
        let p = parse_traceparent(v.as_bytes());
        prop_assert_eq!(p.map(|p| (p.trace_id.0, p.parent_id.0, p.flags)), Ok((t, s, f)));
    }
}

/// The request id of the current context.
fn current_id() -> Option<String> {
    current().map(|c| c.request_id.to_str().unwrap_or("?").to_owned())
}

fn context_with_id(id: &'static str) -> TraceContext {
    let mut ctx = TraceContext::new_root();
    ctx.request_id = HeaderValue::from_static(id);
    ctx
}

/// Writes the request id current when it is dropped.
struct SeenAtDrop(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Drop for SeenAtDrop {
    fn drop(&mut self) {
        if let Ok(mut seen) = self.0.lock() {
            *seen = current_id();
        }
    }
}

#[tokio::test]
async fn a_scope_is_current_only_while_its_future_runs_and_nests() {
    assert_eq!(current_id(), None);
    let outer = scope(context_with_id("outer"), async {
        let before = current_id();
        let inner = scope(context_with_id("inner"), async {
            tokio::task::yield_now().await;
            current_id()
        })
        .await;
        (before, inner, current_id())
    });
    assert_eq!(
        outer.await,
        (
            Some("outer".to_owned()),
            Some("inner".to_owned()),
            Some("outer".to_owned())
        )
    );
    assert_eq!(current_id(), None);
}

#[tokio::test]
async fn scopes_polled_in_turn_on_one_thread_each_see_their_own() {
    let seen = |id: &'static str| {
        scope(context_with_id(id), async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(current_id());
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    // `join!` polls both in turn on this thread, each yielding in between.
    let (a, b) = tokio::join!(seen("a"), seen("b"));
    assert_eq!(a, vec![Some("a".to_owned()); 3]);
    assert_eq!(b, vec![Some("b".to_owned()); 3]);
    assert_eq!(current_id(), None);
}

#[test]
fn a_scoped_future_is_dropped_with_its_context_current() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let guard = SeenAtDrop(std::sync::Arc::clone(&seen));
    let mut fut = Box::pin(scope(context_with_id("dropped"), async move {
        let _guard = guard;
        std::future::pending::<()>().await
    }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(std::future::Future::poll(fut.as_mut(), &mut cx).is_pending());
    drop(fut);
    assert_eq!(seen.lock().expect("lock").as_deref(), Some("dropped"));
    assert_eq!(current_id(), None);
}

/// The inbound layer's future: the request's context is current in the handler (across
/// awaits), when the handler's future is dropped unfinished, and nowhere after.
#[tokio::test]
async fn the_inbound_layer_keeps_the_requests_context_current_in_the_handler() {
    use tower::{Layer, Service, ServiceExt};

    let seen_at_drop = std::sync::Arc::new(std::sync::Mutex::new(None));
    let for_handler = std::sync::Arc::clone(&seen_at_drop);
    let handler = tower::service_fn(move |req: http::Request<()>| {
        let guard = SeenAtDrop(std::sync::Arc::clone(&for_handler));
        async move {
            let at_call = current_id();
            tokio::task::yield_now().await;
            let after_await = current_id();
            if req.uri().path() == "/hang" {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(format!(
                "{at_call:?} {after_await:?}"
            )))
        }
    });
    let mut svc = TraceLayer::with_tracer(opentelemetry::global::BoxedTracer::new(Box::new(
        opentelemetry::trace::noop::NoopTracer::new(),
    )))
    .layer(handler);
    let request = |path: &str| {
        http::Request::get(path)
            .header("x-request-id", "req-1")
            .body(())
            .expect("request")
    };
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(request("/"))
        .await
        .expect("response");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, r#"Some("req-1") Some("req-1")"#);
    assert_eq!(current_id(), None);

    let mut hanging = Box::pin(svc.ready().await.expect("ready").call(request("/hang")));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..3 {
        assert!(std::future::Future::poll(hanging.as_mut(), &mut cx).is_pending());
    }
    assert_eq!(current_id(), None);
    drop(hanging);
    assert_eq!(seen_at_drop.lock().expect("lock").as_deref(), Some("req-1"));
}

/// `extract` finds the trace headers among any others, in either B3 form, and reads
/// nothing that is absent (a request without trace headers starts a new trace).
#[test]
fn trace_headers_are_found_among_many_others() {
    let trace = [
        ("x-request-id", "req-7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("baggage", "k=v"),
    ];
    let b3_multi = [
        ("x-request-id", "req-8"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ];
    let b3_single = [
        ("x-request-id", "req-9"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    let others: Vec<(String, String)> = (0..40)
        .map(|i| (format!("x-other-{i}"), format!("value-{i}")))
        .chain([
            ("x-b3x".to_owned(), "not b3".to_owned()),
            ("b3-like".to_owned(), "no".to_owned()),
        ])
        .collect();
    type Headers<'a> = &'a [(&'static str, &'static str)];
    let cases: [(Headers<'_>, Option<B3Form>); 3] = [
        (&trace, None),
        (&b3_multi, Some(B3Form::Multi)),
        (&b3_single, Some(B3Form::Single)),
    ];
    for (wanted, b3_form) in cases {
        let alone = headers(wanted);
        // The trace headers between the first 20 others and the rest.
        let mut crowded = HeaderMap::new();
        for (k, v) in others[..20]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(wanted.iter().copied())
            .chain(others[20..].iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            crowded.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let (a, b) = (extract(&alone), extract(&crowded));
        assert!(a.parent.is_some(), "{wanted:?}");
        assert_eq!(a.request_id, wanted[0].1, "{wanted:?}");
        assert_eq!(a.b3_form, b3_form, "{wanted:?}");
        if b3_form.is_none() {
            assert!(a.tracestate.is_some() && a.baggage.is_some(), "{a:?}");
        }
        assert_eq!(a, b, "{wanted:?}");
    }
    let none = extract(&headers(&[("x-b3x", "1"), ("b3-like", "1")]));
    assert_eq!(
        (none.parent, none.sampled, none.b3_form, none.baggage),
        (None, None, None, None)
    );
}

/// A poll that panics still puts the previous context back, and the scope keeps its own.
#[test]
fn a_panicking_poll_restores_the_previous_context() {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut outer = Box::pin(scope(context_with_id("outer"), async {
        let mut inner = Box::pin(scope(context_with_id("inner"), async {
            std::future::ready(()).await;
            panic!("handler panicked");
        }));
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = std::future::Future::poll(inner.as_mut(), &mut cx);
        }));
        (polled.is_err(), current_id())
    }));
    match std::future::Future::poll(outer.as_mut(), &mut cx) {
        std::task::Poll::Ready(out) => assert_eq!(out, (true, Some("outer".to_owned()))),
        std::task::Poll::Pending => panic!("pending"),
    }
    assert_eq!(current_id(), None);
}

/// Polls once with a waker that does nothing.
fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.poll(&mut cx)
}

/// A scope polled on one thread, then on another: current on each while polled, left
/// behind on neither.
#[test]
fn a_scope_moved_between_threads_is_current_only_while_polled() {
    let mut fut = Box::pin(scope(context_with_id("moved"), async move {
        let first = (current_id(), std::thread::current().id());
        // Pending once: the test polls again from another thread.
        let mut yielded = false;
        std::future::poll_fn(|_| {
            if std::mem::replace(&mut yielded, true) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        (first, (current_id(), std::thread::current().id()))
    }));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(current_id(), None);
    let (out, left) = std::thread::scope(|s| {
        s.spawn(|| (poll_once(fut.as_mut()), current_id()))
            .join()
            .expect("thread")
    });
    assert_eq!(left, None);
    let std::task::Poll::Ready(((first, here), (then, there))) = out else {
        panic!("pending");
    };
    assert_ne!(here, there, "polled on two threads");
    assert_eq!(
        (first.as_deref(), then.as_deref()),
        (Some("moved"), Some("moved"))
    );
}
