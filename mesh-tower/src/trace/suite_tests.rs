//! Every case of the W3C trace-context test suite (github.com/w3c/trace-context, `test/`,
//! Level 2, strict) as a table over the whole inbound-to-outbound path: the headers a
//! request brings, through extraction and the server span, to the headers a call made
//! while handling it carries. Plus B3 sampling-only headers, the B3 form, baggage, the
//! `OTEL_PROPAGATORS` settings and the 512-character `tracestate` cap.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::propagation::{B3Form, Propagation};
use super::span::{start_client, start_server, Exchange, MeshTracer};
use super::*;

const T: &str = "12345678901234567890123456789012";
const P: &str = "1234567890123456";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
        h.append(name, HeaderValue::from_str(v).expect("header value"));
    }
    h
}

fn exchange(method: &Method) -> Exchange<'_> {
    Exchange {
        method,
        path: "/test",
        route: None,
        grpc: false,
        server: None,
        peer: None,
    }
}

/// The no-op tracer (no SDK installed), as the mesh holds it: spans skipped; with
/// `spans`, as it was before the mesh told the no-op tracer apart (spans started, no-op).
fn noop_tracer(spans: bool) -> MeshTracer {
    let noop = opentelemetry::global::BoxedTracer::new(Box::new(
        opentelemetry::trace::noop::NoopTracer::new(),
    ));
    let tracer = MeshTracer::new(noop);
    assert!(!tracer.makes_spans(), "the no-op tracer makes no spans");
    if spans {
        tracer.always_spans()
    } else {
        tracer
    }
}

fn propagate_through(
    tracer: &MeshTracer,
    inbound: &[(&str, &str)],
    propagation: Propagation,
) -> HeaderMap {
    let method = Method::POST;
    let incoming = extract_with(&headers(inbound), propagation);
    let (ctx, _server) = start_server(tracer, incoming, &exchange(&method), propagation);
    let mut out = HeaderMap::new();
    let _client = start_client(tracer, Some(ctx), &mut out, &exchange(&method));
    out
}

/// What a call made while handling a request with `inbound` headers carries. Checked
/// both ways the no-op tracer can be driven: the same headers, the same trace and flags
/// (span ids are new each call).
fn propagate_with(inbound: &[(&str, &str)], propagation: Propagation) -> HeaderMap {
    let out = propagate_through(&noop_tracer(false), inbound, propagation);
    let spanned = propagate_through(&noop_tracer(true), inbound, propagation);
    let names = |h: &HeaderMap| h.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&out), names(&spanned), "the same headers either way");
    if out.contains_key("traceparent") {
        let (a, b) = (traceparent(&out), traceparent(&spanned));
        assert_eq!(a.2, b.2, "the same flags either way");
        if inbound.iter().any(|(_, v)| v.contains(&a.0)) {
            assert_eq!(a.0, b.0, "the caller's trace either way");
        }
    }
    out
}

fn propagate(inbound: &[(&str, &str)]) -> HeaderMap {
    propagate_with(inbound, Propagation::default())
}

fn get(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The outbound `traceparent`, checked for the form the suite expects.
fn traceparent(h: &HeaderMap) -> (String, String, u8) {
    let all: Vec<_> = h.get_all("traceparent").iter().collect();
    assert_eq!(all.len(), 1, "one traceparent: {h:?}");
    let tp = all[0].to_str().expect("ascii");
    let parsed = w3c::parse_traceparent(tp.as_bytes()).expect("valid traceparent");
    assert_eq!(parsed.version, 0);
    (
        parsed.trace_id.to_string(),
        parsed.parent_id.to_string(),
        parsed.flags,
    )
}

/// Suite cases where the caller's trace must be continued (same trace id, new parent).
#[test]
fn continued_traces() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "traceparent_included_tracestate_missing",
            &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-01")],
        ),
        (
            "header_name_valid_casing",
            &[("TrAcEpArEnT", "00-12345678901234567890123456789012-1234567890123456-01")],
        ),
        (
            "version_0xcc",
            &[("traceparent", "cc-12345678901234567890123456789012-1234567890123456-01")],
        ),
        (
            "version_0xcc_future_fields",
            &[(
                "traceparent",
                "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            )],
        ),
        (
            "ows_leading_tab_space",
            &[("traceparent", "\t 00-12345678901234567890123456789012-1234567890123456-01 \t")],
        ),
        (
            "not_sampled",
            &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-00")],
        ),
    ];
    for (name, inbound) in cases {
        let out = propagate(inbound);
        let (trace, parent, _) = traceparent(&out);
        assert_eq!(trace, T, "{name}");
        assert_ne!(parent, P, "{name}: the parent id must be ours");
    }
}

/// Suite cases where the `traceparent` is invalid: a new trace.
#[test]
fn restarted_traces() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("both_missing", &[]),
        (
            "duplicated",
            &[
                ("traceparent", "00-12345678901234567890123456789011-1234567890123456-01"),
                ("traceparent", "00-12345678901234567890123456789012-1234567890123456-01"),
            ],
        ),
        (
            "header_name",
            &[("trace-parent", "00-12345678901234567890123456789012-1234567890123456-01")],
        ),
        (
            "header_name_dot",
            &[("trace.parent", "00-12345678901234567890123456789012-1234567890123456-01")],
        ),
        (
            "version_0x00_trailing",
            &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-01.")],
        ),
        (
            "version_0x00_future_fields",
            &[(
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            )],
        ),
        (
            "version_0xcc_bad_delimiter",
            &[(
                "traceparent",
                "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
            )],
        ),
        ("version_0xff", &[("traceparent", "ff-12345678901234567890123456789012-1234567890123456-01")]),
        ("version_illegal_1", &[("traceparent", ".0-12345678901234567890123456789012-1234567890123456-01")]),
        ("version_illegal_2", &[("traceparent", "0.-12345678901234567890123456789012-1234567890123456-01")]),
        ("version_too_long_1", &[("traceparent", "000-12345678901234567890123456789012-1234567890123456-01")]),
        ("version_too_long_2", &[("traceparent", "0000-12345678901234567890123456789012-1234567890123456-01")]),
        ("version_too_short", &[("traceparent", "0-12345678901234567890123456789012-1234567890123456-01")]),
        ("trace_id_all_zero", &[("traceparent", "00-00000000000000000000000000000000-1234567890123456-01")]),
        ("trace_id_illegal_1", &[("traceparent", "00-.2345678901234567890123456789012-1234567890123456-01")]),
        ("trace_id_illegal_2", &[("traceparent", "00-1234567890123456789012345678901.-1234567890123456-01")]),
        ("trace_id_too_long", &[("traceparent", "00-123456789012345678901234567890123-1234567890123456-01")]),
        ("trace_id_too_short", &[("traceparent", "00-1234567890123456789012345678901-1234567890123456-01")]),
        ("parent_id_all_zero", &[("traceparent", "00-12345678901234567890123456789012-0000000000000000-01")]),
        ("parent_id_illegal_1", &[("traceparent", "00-12345678901234567890123456789012-.234567890123456-01")]),
        ("parent_id_illegal_2", &[("traceparent", "00-12345678901234567890123456789012-123456789012345.-01")]),
        ("parent_id_too_long", &[("traceparent", "00-12345678901234567890123456789012-12345678901234567-01")]),
        ("parent_id_too_short", &[("traceparent", "00-12345678901234567890123456789012-123456789012345-01")]),
        ("flags_illegal_1", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-.0")]),
        ("flags_illegal_2", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-0.")]),
        ("flags_too_long", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-001")]),
        ("flags_too_short", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-1")]),
    ];
    for (name, inbound) in cases {
        let out = propagate(inbound);
        let (trace, _, flags) = traceparent(&out);
        for rejected in [
            T,
            "12345678901234567890123456789011",
            "00000000000000000000000000000000",
        ] {
            assert_ne!(trace, rejected, "{name}");
        }
        // A trace the mesh starts has random ids: Level 2 says so with the random flag.
        assert_eq!(flags & FLAG_RANDOM, FLAG_RANDOM, "{name}");
        assert_eq!(
            get(&out, "tracestate"),
            "",
            "{name}: no tracestate on a new trace"
        );
    }
}

#[test]
fn random_flag_is_kept_and_only_then() {
    let out = propagate(&[(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-02",
    )]);
    let (trace, parent, flags) = traceparent(&out);
    assert_eq!((trace.as_str(), flags & FLAG_RANDOM), (T, FLAG_RANDOM));
    assert_ne!(parent, P);
    let out = propagate(&[(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-03",
    )]);
    assert_eq!(traceparent(&out).2, FLAG_SAMPLED | FLAG_RANDOM);
    // Without it, the caller's trace id is not known to be random: not set.
    let out = propagate(&[(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-01",
    )]);
    assert_eq!(traceparent(&out).2, FLAG_SAMPLED);
    // Unknown flags are not passed on.
    let out = propagate(&[(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-ff",
    )]);
    assert_eq!(traceparent(&out).2, FLAG_SAMPLED | FLAG_RANDOM);
}

#[test]
fn multiple_calls_share_the_trace_with_distinct_parents() {
    let tracer = noop_tracer(false);
    let method = Method::POST;
    for inbound in [
        &[(
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-01",
        )][..],
        &[][..],
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-1234567890123456-01",
        )][..],
    ] {
        let incoming = extract_with(&headers(inbound), Propagation::default());
        let (ctx, _s) = start_server(
            &tracer,
            incoming,
            &exchange(&method),
            Propagation::default(),
        );
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut out = HeaderMap::new();
            let _c = start_client(&tracer, Some(ctx.clone()), &mut out, &exchange(&method));
            seen.push(traceparent(&out));
        }
        assert!(seen.iter().all(|(t, _, _)| *t == seen[0].0));
        assert_ne!(seen[0].0, "00000000000000000000000000000000");
        assert!(seen[0].1 != seen[1].1 && seen[1].1 != seen[2].1 && seen[0].1 != seen[2].1);
        if !inbound.is_empty() && inbound[0].1.contains(T) {
            assert_eq!(seen[0].0, T);
        }
    }
}

const TP00: (&str, &str) = (
    "traceparent",
    "00-12345678901234567890123456789012-1234567890123456-00",
);

/// Suite `tracestate` cases: the list the call carries (`None`: none at all).
#[test]
fn tracestate_cases() {
    let all_value: String = (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect();
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let key_vendor = format!("{key}@a-z0-9_-*/");
    let all_plain = format!("{key}={all_value}");
    let all_vendor = format!("{key_vendor}={all_value}");
    let z256 = format!("{}=1", "z".repeat(256));
    let z257 = format!("{}=1", "z".repeat(257));
    let t241 = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let t242 = format!("{}@v=1", "t".repeat(242));
    let t_v15 = format!("t@{}=1", "v".repeat(15));
    let members = |from: usize, to: usize| {
        (from..=to)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (m1, m2, m3) = (members(1, 10), members(11, 20), members(21, 30));
    let (m4_32, m4_33) = (members(31, 32), members(31, 33));
    let joined32 = members(1, 32);
    /// (case, request headers, the tracestate expected on the call).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            "included",
            vec![TP00, ("tracestate", "foo=1,bar=2")],
            Some("foo=1,bar=2".into()),
        ),
        (
            "missing_traceparent",
            vec![("tracestate", "foo=1,bar=2")],
            None,
        ),
        ("header_name", vec![TP00, ("trace-state", "foo=1")], None),
        (
            "header_name_dot",
            vec![TP00, ("trace.state", "foo=1")],
            None,
        ),
        (
            "casing",
            vec![TP00, ("TrAcEsTaTe", "foo=1")],
            Some("foo=1".into()),
        ),
        ("empty", vec![TP00, ("tracestate", "")], None),
        (
            "empty_after",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", "")],
            Some("foo=1".into()),
        ),
        (
            "empty_before",
            vec![TP00, ("tracestate", ""), ("tracestate", "foo=1")],
            Some("foo=1".into()),
        ),
        (
            "multiple_headers",
            vec![
                TP00,
                ("tracestate", "foo=1,bar=2"),
                ("tracestate", "rojo=1,congo=2"),
                ("tracestate", "baz=3"),
            ],
            Some("foo=1,bar=2,rojo=1,congo=2,baz=3".into()),
        ),
        (
            "dup_same",
            vec![TP00, ("tracestate", "foo=1,foo=1")],
            Some("foo=1".into()),
        ),
        (
            "dup_diff",
            vec![TP00, ("tracestate", "foo=1,foo=2")],
            Some("foo=1".into()),
        ),
        (
            "dup_headers_same",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", "foo=1")],
            Some("foo=1".into()),
        ),
        (
            "dup_headers_diff",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", "foo=2")],
            Some("foo=1".into()),
        ),
        (
            "all_chars",
            vec![TP00, ("tracestate", all_plain.as_str())],
            Some(all_plain.clone()),
        ),
        (
            "all_chars_vendor",
            vec![TP00, ("tracestate", all_vendor.as_str())],
            Some(all_vendor.clone()),
        ),
        (
            "ows_1",
            vec![TP00, ("tracestate", "foo=1 \t , \t bar=2, \t baz=3")],
            Some("foo=1,bar=2,baz=3".into()),
        ),
        (
            "ows_2",
            vec![TP00, ("tracestate", "foo=1\t \t,\t \tbar=2,\t \tbaz=3")],
            Some("foo=1,bar=2,baz=3".into()),
        ),
        ("key_space", vec![TP00, ("tracestate", "foo =1")], None),
        ("key_upper", vec![TP00, ("tracestate", "FOO=1")], None),
        ("key_dot", vec![TP00, ("tracestate", "foo.bar=1")], None),
        (
            "key_at_end",
            vec![TP00, ("tracestate", "foo@=1,bar=2")],
            Some("foo@=1,bar=2".into()),
        ),
        (
            "key_at_start",
            vec![TP00, ("tracestate", "@foo=1,bar=2")],
            None,
        ),
        (
            "key_at_at",
            vec![TP00, ("tracestate", "foo@@bar=1,bar=2")],
            Some("foo@@bar=1,bar=2".into()),
        ),
        (
            "key_two_ats",
            vec![TP00, ("tracestate", "foo@bar@baz=1,bar=2")],
            Some("foo@bar@baz=1,bar=2".into()),
        ),
        (
            "members_32",
            vec![
                TP00,
                ("tracestate", m1.as_str()),
                ("tracestate", m2.as_str()),
                ("tracestate", m3.as_str()),
                ("tracestate", m4_32.as_str()),
            ],
            Some(joined32),
        ),
        (
            "members_33",
            vec![
                TP00,
                ("tracestate", m1.as_str()),
                ("tracestate", m2.as_str()),
                ("tracestate", m3.as_str()),
                ("tracestate", m4_33.as_str()),
            ],
            None,
        ),
        (
            "key_256",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", z256.as_str())],
            Some(format!("foo=1,{z256}")),
        ),
        (
            "key_257",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", z257.as_str())],
            None,
        ),
        (
            "key_241_at_14",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", t241.as_str())],
            Some(format!("foo=1,{t241}")),
        ),
        (
            "key_242_at_1",
            vec![TP00, ("tracestate", "foo=1"), ("tracestate", t242.as_str())],
            Some(format!("foo=1,{t242}")),
        ),
        (
            "key_1_at_15",
            vec![
                TP00,
                ("tracestate", "foo=1"),
                ("tracestate", t_v15.as_str()),
            ],
            Some(format!("foo=1,{t_v15}")),
        ),
        ("value_eq", vec![TP00, ("tracestate", "foo=bar=baz")], None),
        (
            "value_empty",
            vec![TP00, ("tracestate", "foo=,bar=3")],
            None,
        ),
    ];
    for (name, inbound, expected) in cases {
        let out = propagate(&inbound);
        let (trace, _, _) = traceparent(&out);
        if inbound.contains(&TP00) {
            assert_eq!(trace, T, "{name}");
        }
        let got = out
            .get("tracestate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(got, expected, "{name}");
    }
    // OWS around a single member is removed.
    for v in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        let out = propagate(&[TP00, ("tracestate", v)]);
        assert_eq!(get(&out, "tracestate"), "foo=1", "{v:?}");
    }
}

#[test]
fn tracestate_is_capped_at_512_by_whole_entries() {
    let long = |k: &str| format!("{k}={}", "x".repeat(200)); // 202+ characters
    let short = |i: usize| format!("k{i:02}={}", "y".repeat(40)); // 44 characters
                                                                  // Fits: passed on as it is.
    let fits: Vec<String> = (0..11).map(short).collect();
    let fits = fits.join(",");
    assert!(fits.len() <= 512);
    let out = propagate(&[TP00, ("tracestate", &fits)]);
    assert_eq!(get(&out, "tracestate"), fits);
    // Too long: entries over 128 characters go first, from the end...
    let list = [short(0), long("big1"), short(1), long("big2"), short(2)].join(",");
    assert!(list.len() > 512);
    let out = propagate(&[TP00, ("tracestate", &list)]);
    let kept = get(&out, "tracestate");
    assert_eq!(kept, [short(0), long("big1"), short(1), short(2)].join(","));
    assert!(kept.len() <= 512);
    // ...then entries from the end.
    let many: Vec<String> = (0..14).map(short).collect();
    let out = propagate(&[TP00, ("tracestate", &many.join(","))]);
    assert_eq!(get(&out, "tracestate"), many[..11].join(","));
}

#[test]
fn b3_sampling_only_headers_are_honoured() {
    let propagation = Propagation::default();
    for (inbound, sampled, debug) in [
        (&[("b3", "0")][..], false, false),
        (&[("b3", "1")][..], true, false),
        (&[("b3", "d")][..], true, true),
        (&[("x-b3-sampled", "0")][..], false, false),
        (&[("x-b3-sampled", "1")][..], true, false),
        (&[("x-b3-flags", "1")][..], true, true),
    ] {
        let incoming = extract_with(&headers(inbound), propagation);
        assert_eq!(incoming.parent, None, "{inbound:?}");
        assert_eq!(
            (incoming.sampled, incoming.debug),
            (Some(sampled), debug),
            "{inbound:?}"
        );
        let out = propagate_with(inbound, propagation);
        let (_, _, flags) = traceparent(&out);
        assert_eq!(flags & FLAG_SAMPLED != 0, sampled, "{inbound:?}: {out:?}");
        // The B3 form that came is the form that goes on, with the same decision.
        let single = inbound[0].0 == "b3";
        if single {
            let b3 = get(&out, "b3");
            let want = match (sampled, debug) {
                (_, true) => "-d-",
                (true, _) => "-1-",
                _ => "-0-",
            };
            assert!(
                b3.contains(want) || b3.ends_with(&want[..2]),
                "{inbound:?}: {b3}"
            );
            assert_eq!(get(&out, "x-b3-traceid"), "");
        } else {
            assert_eq!(get(&out, "b3"), "");
            let (s, f) = (get(&out, "x-b3-sampled"), get(&out, "x-b3-flags"));
            match (sampled, debug) {
                (_, true) => assert_eq!(f, "1"),
                (true, _) => assert_eq!(s, "1"),
                _ => assert_eq!(s, "0"),
            }
        }
    }
}

#[test]
fn b3_form_received_is_the_form_sent() {
    let single = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let out = propagate(&[("b3", single)]);
    let b3 = get(&out, "b3");
    assert!(b3.starts_with("80f198ee56343ba864fe8b2a57d3eff7-"), "{b3}");
    // `{trace}-{our client span}-1-{our server span}`: the caller's span is not our parent.
    let fields: Vec<&str> = b3.split('-').collect();
    assert_eq!(fields.len(), 4, "{b3}");
    assert_eq!(fields[2], "1");
    assert_ne!(fields[3], "e457b5a2e4d86bd1");
    assert_eq!(get(&out, "x-b3-traceid"), "");
    assert_eq!(traceparent(&out).0, "80f198ee56343ba864fe8b2a57d3eff7");
    let out = propagate(&[
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(get(&out, "b3"), "");
    assert_eq!(get(&out, "x-b3-traceid"), "64fe8b2a57d3eff7");
    assert_eq!(get(&out, "x-b3-parentspanid").len(), 16);
    assert_eq!(get(&out, "x-b3-sampled"), "1");
    // W3C only in, W3C only out (the default propagators).
    let out = propagate(&[(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-01",
    )]);
    assert_eq!(
        (get(&out, "b3"), get(&out, "x-b3-traceid")),
        (String::new(), String::new())
    );
}

#[test]
fn otel_propagators_settings() {
    let (p, unknown) = Propagation::parse("tracecontext, baggage");
    assert!(p.tracecontext() && p.baggage() && !p.reads_b3() && unknown.is_empty());
    let (p, unknown) = Propagation::parse("b3,jaeger");
    assert!(!p.tracecontext() && p.reads_b3());
    assert_eq!(unknown, ["jaeger"]);
    assert_eq!(Propagation::parse("").0, Propagation::default());
    assert_eq!(Propagation::parse("none").0, Propagation::none());
    assert_eq!(
        Propagation::parse("tracecontext,none").0,
        Propagation::none()
    );

    let tp = (
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-01",
    );
    let b3 = ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
    // Explicit `tracecontext`: B3 is neither read nor written.
    let p = Propagation::parse("tracecontext").0;
    let out = propagate_with(&[b3], p);
    assert_ne!(traceparent(&out).0, "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(get(&out, "b3"), "");
    // `b3multi` alone: no traceparent, B3 in the configured form unless one came in.
    let p = Propagation::parse("b3multi").0;
    let out = propagate_with(&[tp], p);
    assert_eq!(get(&out, "traceparent"), "");
    assert_eq!(get(&out, "x-b3-sampled"), "1");
    assert_ne!(get(&out, "x-b3-traceid"), T, "traceparent is not read");
    let out = propagate_with(&[b3], p);
    assert!(get(&out, "b3").starts_with("80f198ee56343ba864fe8b2a57d3eff7-"));
    // `b3` with W3C: traceparent wins, B3 written as single.
    let p = Propagation::parse("tracecontext,b3").0;
    let out = propagate_with(&[tp, b3], p);
    assert_eq!(traceparent(&out).0, T);
    assert!(get(&out, "b3").starts_with(T));
    // `none`: nothing but the request id.
    let out = propagate_with(&[tp, b3, ("baggage", "k=v")], Propagation::none());
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out.contains_key("x-request-id"));
}

#[test]
fn baggage_is_carried_per_setting() {
    let inbound = [
        (
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-01",
        ),
        ("baggage", "userId=alice,isProduction=false"),
    ];
    let out = propagate(&inbound);
    assert_eq!(get(&out, "baggage"), "userId=alice,isProduction=false");
    let out = propagate_with(&inbound, Propagation::parse("tracecontext").0);
    assert_eq!(get(&out, "baggage"), "");
    // The handler sees it as OpenTelemetry baggage.
    use opentelemetry::baggage::BaggageExt;
    let tracer = noop_tracer(false);
    let method = Method::GET;
    let incoming = extract_with(&headers(&inbound), Propagation::default());
    let (ctx, _s) = start_server(
        &tracer,
        incoming,
        &exchange(&method),
        Propagation::default(),
    );
    let value = ctx
        .otel_context()
        .baggage()
        .get("userId")
        .map(|v| v.as_str().to_owned());
    assert_eq!(value.as_deref(), Some("alice"));
    // A handler that changes the baggage sends its version on.
    let changed = ctx
        .otel_context()
        .with_baggage([opentelemetry::KeyValue::new("userId", "bob")]);
    let _g = changed.attach();
    let mut out = HeaderMap::new();
    let _c = start_client(&tracer, Some(ctx), &mut out, &exchange(&method));
    assert_eq!(get(&out, "baggage"), "userId=bob");
}

#[test]
fn sampling_denied_without_a_trace_is_an_unsampled_new_trace() {
    let out = propagate(&[("b3", "0")]);
    let (trace, _, flags) = traceparent(&out);
    assert_ne!(trace, "00000000000000000000000000000000");
    assert_eq!(flags, FLAG_RANDOM);
    let _ = B3Form::Single;
}
