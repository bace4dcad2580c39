use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket addr")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher::new(name, HeaderValueMatch::String(m), false).expect("header matcher")
}

#[test]
fn cidr_parse_and_contains() {
    let net = cidr("10.0.0.0/8");
    assert!(net.contains(ip("10.1.2.3")));
    assert!(!net.contains(ip("11.0.0.1")));
    assert!(net.contains(ip("::ffff:10.9.9.9")), "v4-mapped v6 is v4");
    assert!(!net.contains(ip("::1")));
    assert_eq!(cidr("10.1.2.3/8"), net, "host bits are cleared");
    assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
    let host = cidr("192.168.0.1");
    assert_eq!(host.prefix_len(), 32);
    assert!(host.contains(ip("192.168.0.1")));
    assert!(!host.contains(ip("192.168.0.2")));
    assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
    let v6 = cidr("2001:db8::/32");
    assert!(v6.contains(ip("2001:db8:1::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    assert!(cidr("::/0").contains(ip("::1")));
    assert_eq!(cidr("::1").prefix_len(), 128);
}

#[test]
fn cidr_errors() {
    let e = |s: &str| s.parse::<Cidr>().expect_err(s);
    assert_eq!(
        e("10.0.0/8"),
        CidrError::BadAddress {
            value: "10.0.0".into()
        }
    );
    assert_eq!(e(""), CidrError::BadAddress { value: "".into() });
    assert_eq!(
        e("10.0.0.0/"),
        CidrError::BadPrefixLength { value: "".into() }
    );
    assert_eq!(
        e("10.0.0.0/+8"),
        CidrError::BadPrefixLength { value: "+8".into() }
    );
    assert_eq!(
        e("10.0.0.0/8/8"),
        CidrError::BadPrefixLength {
            value: "8/8".into()
        }
    );
    assert_eq!(
        e("10.0.0.0/33"),
        CidrError::PrefixTooLong { len: 33, max: 32 }
    );
    assert_eq!(e("::/129"), CidrError::PrefixTooLong { len: 129, max: 128 });
    assert!(matches!(
        e("1.2.3.4/99999999999"),
        CidrError::BadPrefixLength { .. }
    ));
}

#[test]
fn three_valued_logic() {
    use Evaluation::*;
    assert_eq!(Evaluation::all([]), Match);
    assert_eq!(Evaluation::any([]), NoMatch);
    assert_eq!(Evaluation::all([Match, Unknown]), Unknown);
    assert_eq!(Evaluation::all([Unknown, NoMatch]), NoMatch);
    assert_eq!(Evaluation::any([NoMatch, Unknown]), Unknown);
    assert_eq!(Evaluation::any([Unknown, Match]), Match);
    assert_eq!(!Unknown, Unknown);
    assert_eq!(!Match, NoMatch);
    let unsupported = Permission::unsupported("x");
    let req = Request::new("GET", "/");
    assert_eq!((!unsupported.clone()).evaluate(&req), Unknown);
    assert_eq!(
        Permission::Or(vec![unsupported.clone(), Permission::Any]).evaluate(&req),
        Match
    );
    assert_eq!(
        Permission::And(vec![unsupported, !Permission::Any]).evaluate(&req),
        NoMatch
    );
}

#[test]
fn permissions_read_the_request() {
    let headers = [("x-user", "alice")];
    let req = Request::new("POST", "/api/v1/x?debug=1")
        .with_authority("Pay.example.com")
        .with_headers(&headers)
        .with_destination(addr("10.0.0.5:8443"))
        .with_sni(Some("pay.example.com"));
    let yes = |p: Permission| assert_eq!(p.evaluate(&req), Evaluation::Match, "{p:?}");
    let no = |p: Permission| assert_eq!(p.evaluate(&req), Evaluation::NoMatch, "{p:?}");
    yes(Permission::Header(header(
        ":method",
        StringMatcher::exact("POST"),
    )));
    no(Permission::Header(header(
        ":method",
        StringMatcher::exact("GET"),
    )));
    yes(Permission::Header(header(
        ":path",
        StringMatcher::suffix("debug=1"),
    )));
    yes(Permission::Header(header(
        ":authority",
        StringMatcher::prefix("Pay."),
    )));
    yes(Permission::Header(header(
        "x-user",
        StringMatcher::exact("alice"),
    )));
    no(Permission::Header(header(
        "x-missing",
        StringMatcher::prefix(""),
    )));
    yes(Permission::UrlPath(StringMatcher::exact("/api/v1/x")));
    no(Permission::UrlPath(StringMatcher::suffix("1")));
    yes(Permission::DestinationIp(cidr("10.0.0.0/24")));
    yes(Permission::DestinationPort(8443));
    no(Permission::DestinationPort(80));
    yes(Permission::DestinationPortRange(
        PortRange::new(8000, 9000).expect("range"),
    ));
    no(Permission::DestinationPortRange(
        PortRange::new(8444, 65536).expect("range"),
    ));
    yes(Permission::RequestedServerName(StringMatcher::suffix(
        ".example.com",
    )));
    let no_sni = Request::new("GET", "/");
    assert_eq!(
        Permission::RequestedServerName(StringMatcher::prefix("")).evaluate(&no_sni),
        Evaluation::NoMatch
    );
    assert!(PortRange::new(10, 10).is_err());
    assert!(PortRange::new(0, 65537).is_err());
    assert!(PortRange::new(65535, 65536).expect("range").contains(65535));
}

#[test]
fn principals_read_the_peer() {
    let sa = "spiffe://cluster.local/ns/default/sa/order-service";
    let mtls = Request::new("GET", "/x?q")
        .with_source(addr("10.1.2.3:5555"))
        .with_peer_principal(Some(sa));
    let plain = Request::new("GET", "/x").with_source(addr("[::1]:5555"));
    let exact = Principal::Authenticated(Some(StringMatcher::exact(sa)));
    assert_eq!(exact.evaluate(&mtls), Evaluation::Match);
    assert_eq!(exact.evaluate(&plain), Evaluation::NoMatch);
    assert_eq!(
        Principal::Authenticated(None).evaluate(&mtls),
        Evaluation::Match
    );
    assert_eq!(
        Principal::Authenticated(None).evaluate(&plain),
        Evaluation::NoMatch
    );
    assert_eq!(
        Principal::SourceIp(cidr("10.0.0.0/8")).evaluate(&mtls),
        Evaluation::Match
    );
    assert_eq!(
        Principal::SourceIp(cidr("10.0.0.0/8")).evaluate(&plain),
        Evaluation::NoMatch
    );
    assert_eq!(
        Principal::UrlPath(StringMatcher::exact("/x")).evaluate(&mtls),
        Evaluation::Match
    );
    assert_eq!(Principal::Any.evaluate(&plain), Evaluation::Match);
    assert_eq!(
        Principal::unsupported("jwt").evaluate(&plain),
        Evaluation::Unknown
    );
}

fn engine(action: RbacAction, permissions: Vec<Permission>) -> RbacEngine {
    let policies = permissions
        .into_iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i}"), Policy::new(vec![p], vec![Principal::Any])))
        .collect();
    RbacEngine::new(action, policies)
}

#[test]
fn chain_decisions_name_their_policy() {
    let get = Permission::Header(header(":method", StringMatcher::exact("GET")));
    let admin = Permission::UrlPath(StringMatcher::prefix("/admin"));
    let authz = Authorization::new(vec![
        engine(RbacAction::Deny, vec![admin]),
        engine(RbacAction::Allow, vec![get]),
    ]);
    let d = authz.evaluate(&Request::new("GET", "/admin/x"));
    assert!(!d.is_allowed());
    assert_eq!(d.policy(), Some("p0"));
    assert_eq!(d.decided_by().map(|b| b.engine), Some(0));

    let d = authz.evaluate(&Request::new("GET", "/ok"));
    assert!(d.is_allowed());
    assert_eq!(
        d.decided_by().map(|b| (b.engine, b.action)),
        Some((1, RbacAction::Allow))
    );

    let d = authz.evaluate(&Request::new("POST", "/ok"));
    assert!(!d.is_allowed());
    assert_eq!(d.policy(), None, "default deny: no policy matched");
    assert_eq!(d.decided_by().map(|b| b.engine), Some(1));

    assert!(Authorization::allow_all()
        .evaluate(&Request::new("X", "/"))
        .is_allowed());
    assert_eq!(
        Authorization::allow_all()
            .evaluate(&Request::new("X", "/"))
            .decided_by(),
        None
    );
}

#[test]
fn unknown_fails_closed_in_both_engines() {
    let req = Request::new("GET", "/");
    let allow = Authorization::new(vec![engine(
        RbacAction::Allow,
        vec![Permission::unsupported("x")],
    )]);
    assert!(!allow.evaluate(&req).is_allowed());
    let deny = Authorization::new(vec![engine(
        RbacAction::Deny,
        vec![Permission::unsupported("x")],
    )]);
    let d = deny.evaluate(&req);
    assert!(!d.is_allowed());
    assert_eq!(
        d.decided_by().and_then(|b| b.evaluation),
        Some(Evaluation::Unknown)
    );
}

fn leaf() -> impl Strategy<Value = Permission> {
    prop_oneof![
        Just(Permission::Any),
        Just(Permission::unsupported("unsupported")),
        (1u16..4).prop_map(Permission::DestinationPort),
        prop::sample::select(vec!["GET", "POST"])
            .prop_map(|m| Permission::Header(header(":method", StringMatcher::exact(m)))),
        prop::sample::select(vec!["/a", "/b"])
            .prop_map(|p| Permission::UrlPath(StringMatcher::prefix(p))),
    ]
}

fn permission() -> impl Strategy<Value = Permission> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Permission::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Permission::Or),
            inner.prop_map(|p| !p),
        ]
    })
}

fn request() -> impl Strategy<Value = (String, String, u16)> {
    (
        prop::sample::select(vec!["GET", "POST", "DELETE"]),
        prop::sample::select(vec!["/a/1", "/b", "/c?x"]),
        1u16..4,
    )
        .prop_map(|(m, p, port)| (m.to_owned(), p.to_owned(), port))
}

/// Replaces every unsupported leaf by `with`.
fn resolve_unknown(p: &Permission, with: &Permission) -> Permission {
    match p {
        Permission::Unsupported(_) => with.clone(),
        Permission::And(v) => Permission::And(v.iter().map(|p| resolve_unknown(p, with)).collect()),
        Permission::Or(v) => Permission::Or(v.iter().map(|p| resolve_unknown(p, with)).collect()),
        Permission::Not(p) => !resolve_unknown(p, with),
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn deny_wins_over_allow(deny in prop::collection::vec(permission(), 1..4),
                            allow in prop::collection::vec(permission(), 0..4),
                            (m, p, port) in request()) {
        let req = Request::new(&m, &p).with_destination(SocketAddr::from(([10, 0, 0, 1], port)));
        let deny_engine = engine(RbacAction::Deny, deny);
        let deny_hit = deny_engine.policies.iter().any(|(_, pol)| pol.evaluate(&req) != Evaluation::NoMatch);
        let authz = Authorization::new(vec![deny_engine, engine(RbacAction::Allow, allow)]);
        if deny_hit {
            prop_assert!(!authz.evaluate(&req).is_allowed());
        }
    }

    #[test]
    fn allow_engine_denies_what_it_does_not_match(allow in prop::collection::vec(permission(), 0..4),
                                                 (m, p, port) in request()) {
        let req = Request::new(&m, &p).with_destination(SocketAddr::from(([10, 0, 0, 1], port)));
        let e = engine(RbacAction::Allow, allow);
        let any_match = e.policies.iter().any(|(_, pol)| pol.evaluate(&req) == Evaluation::Match);
        prop_assert_eq!(Authorization::new(vec![e]).evaluate(&req).is_allowed(), any_match);
    }

    /// Whatever an unsupported rule would have meant, not knowing never allows more than
    /// the most restrictive reading, and never denies less.
    #[test]
    fn unknown_never_allows(rule in permission(), (m, p, port) in request()) {
        let req = Request::new(&m, &p).with_destination(SocketAddr::from(([10, 0, 0, 1], port)));
        let as_never = resolve_unknown(&rule, &!Permission::Any);
        let as_always = resolve_unknown(&rule, &Permission::Any);
        let allow = |r: &Permission| Authorization::new(vec![engine(RbacAction::Allow, vec![r.clone()])]).evaluate(&req).is_allowed();
        let deny = |r: &Permission| Authorization::new(vec![engine(RbacAction::Deny, vec![r.clone()])]).evaluate(&req).is_allowed();
        if allow(&rule) {
            prop_assert!(allow(&as_never) && allow(&as_always));
        }
        if deny(&rule) {
            prop_assert!(deny(&as_never) && deny(&as_always));
        }
        if rule.evaluate(&req) == Evaluation::Unknown {
            prop_assert!(!allow(&rule));
            prop_assert!(!deny(&rule));
        }
    }
}
