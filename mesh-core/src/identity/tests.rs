use super::*;
use proptest::prelude::*;

fn err(s: &str) -> SpiffeIdError {
    match SpiffeId::parse(s) {
        Ok(id) => panic!("{s:?} parsed as {id}"),
        Err(e) => e,
    }
}

#[test]
fn valid_ids_parse_and_round_trip() {
    for s in [
        "spiffe://cluster.local/ns/default/sa/order-service",
        "spiffe://domain.test",
        "spiffe://domain.test/path/element",
        "spiffe://a-b_c.9/X/y.z/_-./.x/..y",
        "spiffe://trustdomain/PATH/Upper",
    ] {
        let id: SpiffeId = s.parse().expect(s);
        assert_eq!(id.to_string(), s);
        assert_eq!(id.as_str(), s);
    }
    let id = SpiffeId::parse("spiffe://domain.test/path/element").expect("valid");
    assert_eq!(id.trust_domain().as_str(), "domain.test");
    assert_eq!(id.path(), "/path/element");
    let root = SpiffeId::parse("spiffe://domain.test").expect("valid");
    assert_eq!(root.path(), "");
    assert_eq!(root, TrustDomain::new("domain.test").expect("td").id());
}

#[test]
fn malformed_ids_are_rejected_with_the_reason() {
    use SpiffeIdError as E;
    let cases: Vec<(&str, SpiffeIdError)> = vec![
        ("", E::Empty),
        (
            "192.168.2.2:6688",
            E::BadScheme {
                found: "192.168.2".into(),
            },
        ),
        (
            "http://domain.test/path",
            E::BadScheme {
                found: "http://do".into(),
            },
        ),
        (
            "SPIFFE://domain.test/path",
            E::BadScheme {
                found: "SPIFFE://".into(),
            },
        ),
        (
            "spiffe:path/element",
            E::BadScheme {
                found: "spiffe:pa".into(),
            },
        ),
        (
            "spiffe:/path/element",
            E::BadScheme {
                found: "spiffe:/p".into(),
            },
        ),
        ("spiffe://", E::EmptyTrustDomain),
        ("spiffe:///path/element", E::EmptyTrustDomain),
        ("spiffe://domain.test:8080/path", E::Port { position: 20 }),
        ("spiffe://domain.test:/path", E::Port { position: 20 }),
        (
            "spiffe://user:password@test.org/path",
            E::UserInfo { position: 22 },
        ),
        ("spiffe://user@test.org", E::UserInfo { position: 13 }),
        (
            "spiffe://domain.test/path/element?query=1",
            E::Query { position: 33 },
        ),
        ("spiffe://domain.test?query=1", E::Query { position: 20 }),
        (
            "spiffe://domain.test/path/element#frag",
            E::Fragment { position: 33 },
        ),
        ("spiffe://domain.test#frag", E::Fragment { position: 20 }),
        (
            "spiffe://domain.test/path/elem%41ent",
            E::PercentEncoded { position: 30 },
        ),
        (
            "spiffe://domain%2etest/path",
            E::PercentEncoded { position: 15 },
        ),
        (
            "spiffe://Domain.test/path",
            E::UpperCaseTrustDomain {
                character: 'D',
                position: 9,
            },
        ),
        (
            "spiffe://domain.tesT",
            E::UpperCaseTrustDomain {
                character: 'T',
                position: 19,
            },
        ),
        (
            "spiffe://dom$ain.test",
            E::BadTrustDomainChar {
                character: '$',
                position: 12,
            },
        ),
        (
            "spiffe://[::1]/path",
            E::BadTrustDomainChar {
                character: '[',
                position: 9,
            },
        ),
        (
            "spiffe://domain.test/pa:th",
            E::BadPathChar {
                character: ':',
                position: 23,
            },
        ),
        (
            "spiffe://domain.test/pa@th",
            E::BadPathChar {
                character: '@',
                position: 23,
            },
        ),
        (
            "spiffe://domain.test/p!a$t&h'/(e)l*e+m,e;n=t",
            E::BadPathChar {
                character: '!',
                position: 22,
            },
        ),
        (
            "spiffe://domain.test/path/elem[ent",
            E::BadPathChar {
                character: '[',
                position: 30,
            },
        ),
        (
            "spiffe://domain.test/pa th",
            E::BadPathChar {
                character: ' ',
                position: 23,
            },
        ),
        (
            "spiffe://domain.test/é",
            E::BadPathChar {
                character: 'é',
                position: 21,
            },
        ),
        (
            "spiffe://domain.test//path",
            E::EmptySegment { position: 21 },
        ),
        (
            "spiffe://domain.test/path//element",
            E::EmptySegment { position: 26 },
        ),
        ("spiffe://domain.test//", E::EmptySegment { position: 21 }),
        ("spiffe://domain.test/", E::TrailingSlash { position: 20 }),
        (
            "spiffe://domain.test/path/",
            E::TrailingSlash { position: 25 },
        ),
        (
            "spiffe://domain.test/./path",
            E::DotSegment {
                segment: ".".into(),
                position: 21,
            },
        ),
        (
            "spiffe://domain.test/path/..",
            E::DotSegment {
                segment: "..".into(),
                position: 26,
            },
        ),
        (
            "spiffe://domain.test/spiffe://domain.test/path",
            E::BadPathChar {
                character: ':',
                position: 27,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), want, "input {input:?}");
    }
}

#[test]
fn length_limits() {
    let td = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    assert!(SpiffeId::parse(&format!("spiffe://{td}/x")).is_ok());
    let long_td = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
    assert_eq!(
        err(&format!("spiffe://{long_td}")),
        SpiffeIdError::TrustDomainTooLong {
            len: MAX_TRUST_DOMAIN_LEN + 1,
            max: MAX_TRUST_DOMAIN_LEN
        }
    );
    let base = "spiffe://td/";
    let exact = format!("{base}{}", "p".repeat(MAX_ID_LEN - base.len()));
    assert!(SpiffeId::parse(&exact).is_ok());
    let over = format!("{exact}p");
    assert_eq!(
        err(&over),
        SpiffeIdError::TooLong {
            len: MAX_ID_LEN + 1,
            max: MAX_ID_LEN
        }
    );
}

#[test]
fn trust_domain_parsing() {
    assert_eq!(
        TrustDomain::new("cluster.local").expect("td").as_str(),
        "cluster.local"
    );
    assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::EmptyTrustDomain));
    assert_eq!(
        "spiffe://td".parse::<TrustDomain>(),
        Err(SpiffeIdError::Port { position: 6 })
    );
    assert!(matches!(
        TrustDomain::new("Td"),
        Err(SpiffeIdError::UpperCaseTrustDomain {
            character: 'T',
            position: 0
        })
    ));
}

#[test]
fn istio_helpers() {
    let td = TrustDomain::new("cluster.local").expect("td");
    let id = SpiffeId::istio(&td, "default", "order-service").expect("id");
    assert_eq!(
        id.as_str(),
        "spiffe://cluster.local/ns/default/sa/order-service"
    );
    assert_eq!(id.namespace(), Some("default"));
    assert_eq!(id.service_account(), Some("order-service"));
    assert_eq!(
        SpiffeId::istio(&td, "bad/ns", "sa"),
        Err(SpiffeIdError::BadPathChar {
            character: '/',
            position: 29
        })
    );
    assert!(SpiffeId::istio(&td, "ns", "s/a").is_err());
    assert!(SpiffeId::istio(&td, "", "sa").is_err());
    for not_istio in [
        "spiffe://td",
        "spiffe://td/ns/default",
        "spiffe://td/ns/default/sa",
        "spiffe://td/ns/default/sa/x/extra",
        "spiffe://td/namespace/default/sa/x",
    ] {
        let id = SpiffeId::parse(not_istio).expect(not_istio);
        assert_eq!(id.namespace(), None, "{not_istio}");
        assert_eq!(id.service_account(), None, "{not_istio}");
    }
    assert!(matches!(
        SpiffeId::from_parts(&td, "no-slash"),
        Err(SpiffeIdError::PathWithoutLeadingSlash { .. })
    ));
}

fn td_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn segment_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,20}".prop_filter("dot segments are invalid", |s| s != "." && s != "..")
}

proptest! {
    #[test]
    fn generated_ids_round_trip(td in td_strategy(), segs in prop::collection::vec(segment_strategy(), 0..6)) {
        let path: String = segs.iter().map(|s| format!("/{s}")).collect();
        let s = format!("spiffe://{td}{path}");
        let id = SpiffeId::parse(&s).expect("generated id is valid");
        prop_assert_eq!(id.to_string(), s.clone());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(id.path(), path.as_str());
        let again: SpiffeId = id.to_string().parse().expect("display parses");
        prop_assert_eq!(again, id);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,80}") {
        let _ = SpiffeId::parse(&s);
        let _ = TrustDomain::new(&s);
        let _ = SpiffeId::parse(&format!("spiffe://{s}"));
    }

    #[test]
    fn near_valid_strings_never_panic(s in "spiffe://[a-zA-Z0-9:/@?#%.é-]{0,40}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }
}
