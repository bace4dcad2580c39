//! Route matching over 10 and 1,000 routes (the request matches the last one, so every
//! route is tried), and the weighted-cluster pick.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
    WeightedCluster, WeightedClusters,
};

/// `n` routes: each a path prefix plus a header match; only the last matches the request.
fn config(n: usize) -> RouteConfig {
    let routes = (0..n)
        .map(|i| {
            let header = match HeaderMatcher::new(
                "end-user",
                HeaderValueMatch::String(StringMatcher::exact(if i + 1 == n {
                    "beta-tester".to_owned()
                } else {
                    format!("user-{i}")
                })),
                false,
            ) {
                Ok(h) => h,
                Err(e) => panic!("bad matcher: {e}"),
            };
            let m = RouteMatch::prefix(if i + 1 == n {
                "/payment.v1.PaymentService/".to_owned()
            } else {
                format!("/svc{i}.Service/")
            })
            .with_headers(vec![header]);
            Route::new(
                format!("r{i}"),
                m,
                RouteAction::Forward(ForwardAction::to_cluster(format!("c{i}"))),
            )
        })
        .collect();
    RouteConfig::new(
        "rc",
        vec![VirtualHost::new(
            "payment",
            vec!["payment-service".into(), "payment-service:8080".into()],
            routes,
        )],
    )
}

fn route_match(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("end-user", HeaderValue::from_static("beta-tester"));
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1000] {
        let rc = config(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &rc, |b, rc| {
            b.iter(|| {
                let hit = rc.route_for(
                    black_box("payment-service:8080"),
                    black_box("/payment.v1.PaymentService/Authorize"),
                    black_box(&headers),
                    black_box(7),
                );
                assert!(hit.is_some());
                hit.map(|(_, r)| r.name().len())
            })
        });
    }
    group.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let split = match WeightedClusters::new(vec![
        WeightedCluster::new("v1", 90),
        WeightedCluster::new("v2", 10),
    ]) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("weighted_pick/2", |b| {
        b.iter(|| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            black_box(split.pick(black_box(x)).name().len())
        })
    });
    let _ = ClusterSpecifier::Weighted(split);
}

criterion_group!(benches, route_match, weighted_pick);
criterion_main!(benches);
