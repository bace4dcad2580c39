//! RBAC evaluation over 100 rules: the cost authorization adds to a request.
//!
//! The chain is a DENY engine of 50 path rules and an ALLOW engine of 50 rules (principal
//! plus method and path), built the way the Istio translation builds them. The request
//! matches only the last ALLOW rule, so every rule is evaluated.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};
use mesh_core::rbac::{
    Authorization, Permission, Policy, Principal, RbacAction, RbacEngine, Request,
};

fn method(m: &str) -> Permission {
    match HeaderMatcher::new(
        ":method",
        HeaderValueMatch::String(StringMatcher::exact(m)),
        false,
    ) {
        Ok(h) => Permission::Header(h),
        Err(e) => panic!("bad matcher: {e}"),
    }
}

fn chain() -> Authorization {
    let deny = (0..50)
        .map(|i| {
            let p = Policy::new(
                vec![Permission::UrlPath(StringMatcher::prefix(format!(
                    "/admin/{i}/"
                )))],
                vec![Principal::Any],
            );
            (format!("deny-{i}"), p)
        })
        .collect();
    let allow = (0..50)
        .map(|i| {
            let p = Policy::new(
                vec![Permission::And(vec![
                    Permission::Or(vec![method("GET"), method("POST")]),
                    Permission::UrlPath(StringMatcher::prefix(format!("/api/v{i}/"))),
                ])],
                vec![Principal::Authenticated(Some(StringMatcher::exact(
                    format!("spiffe://cluster.local/ns/default/sa/client-{i}"),
                )))],
            );
            (format!("allow-{i}"), p)
        })
        .collect();
    Authorization::new(vec![
        RbacEngine::new(RbacAction::Deny, deny),
        RbacEngine::new(RbacAction::Allow, allow),
    ])
}

fn bench(c: &mut Criterion) {
    let authz = chain();
    let headers = [("content-type", "application/grpc")];
    let req = Request::new("POST", "/api/v49/payments/1?x=1")
        .with_headers(&headers)
        .with_source(SocketAddr::from(([10, 0, 0, 7], 40000)))
        .with_destination(SocketAddr::from(([10, 0, 0, 1], 8080)))
        .with_peer_principal(Some("spiffe://cluster.local/ns/default/sa/client-49"));
    assert!(authz.evaluate(&req).is_allowed());
    c.bench_function("rbac_100_rules_last_matches", |b| {
        b.iter(|| black_box(&authz).evaluate(black_box(&req)).is_allowed())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
