use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;
use crate::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn fwd(cluster: &str) -> RouteAction {
    RouteAction::Forward(ForwardAction::to_cluster(cluster))
}

fn cluster_of(route: &Route) -> &str {
    match route.action() {
        RouteAction::Forward(f) => f.cluster_names().next().unwrap_or(""),
        _ => "",
    }
}

/// The seed guide's reviews VirtualService: beta testers to v2, everyone else 90/10.
fn reviews() -> RouteConfig {
    let beta = RouteMatch::prefix("").with_headers(vec![HeaderMatcher::new(
        "end-user",
        HeaderValueMatch::String(StringMatcher::exact("beta-tester")),
        false,
    )
    .expect("valid")]);
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("reviews-v1", 90),
        WeightedCluster::new("reviews-v2", 10),
    ])
    .expect("valid");
    RouteConfig::new(
        "reviews:9080",
        vec![VirtualHost::new(
            "reviews",
            vec!["reviews".into(), "reviews.default.svc.cluster.local".into()],
            vec![
                Route::new("beta", beta, fwd("reviews-v2")),
                Route::new(
                    "split",
                    RouteMatch::default(),
                    RouteAction::Forward(ForwardAction::new(ClusterSpecifier::Weighted(split))),
                ),
            ],
        )],
    )
}

#[test]
fn header_route_wins_for_beta_testers() {
    let rc = reviews();
    let h = headers(&[("end-user", "beta-tester")]);
    for random in 0..200 {
        let (_, r) = rc
            .route_for("reviews:9080", "/x", &h, random)
            .expect("route");
        assert_eq!(cluster_of(r), "reviews-v2");
    }
    let (_, r) = rc
        .route_for("reviews", "/x", &HeaderMap::new(), 0)
        .expect("route");
    assert_eq!(r.name(), "split");
}

#[test]
fn weighted_split_is_exact_over_a_full_cycle() {
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("v1", 90),
        WeightedCluster::new("v2", 10),
    ])
    .expect("valid");
    let v2 = (0..100u64)
        .filter(|r| split.pick(*r).name() == "v2")
        .count();
    assert_eq!(v2, 10);
}

#[test]
fn weighted_split_rejects_bad_totals() {
    assert_eq!(
        WeightedClusters::new(vec![]),
        Err(WeightedClustersError::Empty)
    );
    assert_eq!(
        WeightedClusters::new(vec![WeightedCluster::new("a", 0)]),
        Err(WeightedClustersError::ZeroTotal)
    );
    assert!(matches!(
        WeightedClusters::new(vec![
            WeightedCluster::new("a", u32::MAX),
            WeightedCluster::new("b", 1)
        ]),
        Err(WeightedClustersError::TotalTooLarge(_))
    ));
}

#[test]
fn zero_weight_cluster_is_never_picked() {
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("a", 0),
        WeightedCluster::new("b", 3),
        WeightedCluster::new("c", 0),
    ])
    .expect("valid");
    for r in 0..50 {
        assert_eq!(split.pick(r).name(), "b");
    }
}

#[test]
fn domain_precedence() {
    let vh = |name: &str, d: &str| VirtualHost::new(name, vec![d.to_owned()], vec![]);
    let rc = RouteConfig::new(
        "rc",
        vec![
            vh("any", "*"),
            vh("prefix", "foo.*"),
            vh("suffix", "*.example.com"),
            vh("longer-suffix", "*.api.example.com"),
            vh("exact", "foo.example.com"),
        ],
    );
    let name = |a: &str| rc.virtual_host_for(a).map(|v| v.name().to_owned());
    assert_eq!(name("foo.example.com").as_deref(), Some("exact"));
    assert_eq!(name("x.api.example.com").as_deref(), Some("longer-suffix"));
    assert_eq!(name("bar.example.com").as_deref(), Some("suffix"));
    assert_eq!(name("foo.bar").as_deref(), Some("prefix"));
    assert_eq!(name("other").as_deref(), Some("any"));
    assert_eq!(name("FOO.EXAMPLE.COM").as_deref(), Some("exact"));
}

/// The domain search as a scan of every virtual host's domains in order: what the index
/// must agree with.
fn scan_for_vhost<'a>(rc: &'a RouteConfig, authority: &str) -> Option<(DomainMatch, &'a str)> {
    let mut best: Option<(DomainMatch, &str)> = None;
    for vh in rc.virtual_hosts() {
        for domain in &vh.domains {
            let Some(m) = DomainMatch::of(domain, authority) else {
                continue;
            };
            if m == DomainMatch::Exact {
                return Some((m, vh.name()));
            }
            if best.as_ref().is_none_or(|(b, _)| m > *b) {
                best = Some((m, vh.name()));
            }
        }
    }
    best
}

proptest! {
    #[test]
    fn the_domain_index_agrees_with_a_scan_in_order(
        hosts in prop::collection::vec(
            prop::collection::vec("(\\*|\\*\\.?[aB]{0,2}|[aB]{0,2}\\.?\\*|[aB.]{1,3})", 1..4),
            1..6,
        ),
        authority in "[aAbB.]{0,4}",
    ) {
        let vhs: Vec<VirtualHost> = hosts
            .iter()
            .enumerate()
            .map(|(i, d)| VirtualHost::new(format!("vh{i}"), d.clone(), vec![]))
            .collect();
        let rc = RouteConfig::new("rc", vhs);
        let indexed = rc.find_vhost_ranked(&authority).map(|(m, vh)| (m, vh.name()));
        prop_assert_eq!(indexed, scan_for_vhost(&rc, &authority));
    }
}

#[test]
fn the_first_virtual_host_listing_an_exact_domain_keeps_it() {
    let rc = RouteConfig::new(
        "rc",
        vec![
            VirtualHost::new("first", vec!["Svc.NS".into()], vec![]),
            VirtualHost::new("second", vec!["svc.ns".into(), "*".into()], vec![]),
        ],
    );
    assert_eq!(
        rc.virtual_host_for("svc.ns").map(|v| v.name()),
        Some("first")
    );
    assert_eq!(
        rc.virtual_host_for("SVC.ns").map(|v| v.name()),
        Some("first")
    );
    assert_eq!(
        rc.virtual_host_for("other").map(|v| v.name()),
        Some("second")
    );
}

#[test]
fn port_is_dropped_only_when_nothing_matches_with_it() {
    let rc = RouteConfig::new(
        "rc",
        vec![
            VirtualHost::new("with-port", vec!["svc:8080".into()], vec![]),
            VirtualHost::new("bare", vec!["svc".into(), "[::1]".into()], vec![]),
        ],
    );
    assert_eq!(
        rc.virtual_host_for("svc:8080").map(|v| v.name()),
        Some("with-port")
    );
    assert_eq!(
        rc.virtual_host_for("svc:9090").map(|v| v.name()),
        Some("bare")
    );
    assert_eq!(
        rc.virtual_host_for("[::1]:80").map(|v| v.name()),
        Some("bare")
    );
    assert!(rc.virtual_host_for("other:80").is_none());
}

#[test]
fn a_specific_host_without_the_port_beats_a_catch_all_with_it() {
    // istiod's sidecar route configuration `8080`: services' domains (here without ports)
    // and `allow_any` (`*`) to PassthroughCluster.
    let rc = RouteConfig::new(
        "8080",
        vec![
            VirtualHost::new(
                "payment-service.default.svc.cluster.local:8080",
                vec!["payment-service".into(), "*.svc.cluster.local".into()],
                vec![],
            ),
            VirtualHost::new("allow_any", vec!["*".into()], vec![]),
        ],
    );
    let name = |a: &str| rc.virtual_host_for(a).map(|v| v.name().to_owned());
    let payment = Some("payment-service.default.svc.cluster.local:8080".to_owned());
    assert_eq!(name("payment-service:8080"), payment);
    assert_eq!(name("x.default.svc.cluster.local:8080"), payment);
    assert_eq!(name("example.com:8080"), Some("allow_any".to_owned()));
    assert_eq!(name("example.com"), Some("allow_any".to_owned()));
}

#[test]
fn path_matches() {
    let h = HeaderMap::new();
    let exact = RouteMatch::path(PathMatch::Exact("/a/b".into()));
    assert!(exact.matches("/a/b", &h, 0));
    assert!(
        exact.matches("/a/b?x=1", &h, 0),
        "query is not part of the path"
    );
    assert!(!exact.matches("/a/b/", &h, 0));
    let ci = RouteMatch::prefix("/API").case_sensitive(false);
    assert!(ci.matches("/api/x", &h, 0));
    let re = RouteMatch::path(PathMatch::Regex(
        crate::matcher::Regex::new(r"/payment\.v1\.PaymentService/.*").expect("regex"),
    ));
    assert!(re.matches("/payment.v1.PaymentService/Authorize", &h, 0));
    assert!(!re.matches("/other/Authorize", &h, 0));
}

#[test]
fn path_separated_prefix_matches_on_a_segment_boundary() {
    // Envoy's examples for the field: /api/dev matches /api/dev, /api/dev/, /api/dev/v1
    // and /api/dev?param=true, not /api/developer.
    let h = HeaderMap::new();
    let m = RouteMatch::path(PathMatch::SeparatedPrefix("/api/dev".into()));
    for path in [
        "/api/dev",
        "/api/dev/",
        "/api/dev/v1",
        "/api/dev?param=true",
    ] {
        assert!(m.matches(path, &h, 0), "{path}");
    }
    for path in ["/api/developer", "/api/de", "/api", "/", "/API/dev"] {
        assert!(!m.matches(path, &h, 0), "{path}");
    }
    let ci = RouteMatch::path(PathMatch::SeparatedPrefix("/api/dev".into())).case_sensitive(false);
    assert!(ci.matches("/API/Dev/v1", &h, 0));
    assert!(!ci.matches("/API/Developer", &h, 0));
}

#[test]
fn query_and_runtime_fraction() {
    let h = HeaderMap::new();
    let q = RouteMatch::default().with_query_params(vec![
        QueryParamMatcher::new("debug", None),
        QueryParamMatcher::new("v", Some(StringMatcher::exact("2"))),
    ]);
    assert!(q.matches("/x?debug&v=2", &h, 0));
    assert!(q.matches("/x?v=2&debug=1", &h, 0));
    assert!(!q.matches("/x?v=3&debug", &h, 0));
    assert!(!q.matches("/x", &h, 0));

    let f = RouteMatch::default().with_runtime_fraction(Some(FractionalPercent::new(25, 100)));
    let hits = (0..100u64).filter(|r| f.matches("/", &h, *r)).count();
    assert_eq!(hits, 25);
}

#[test]
fn repeated_header_values_are_joined() {
    let m = RouteMatch::default().with_headers(vec![HeaderMatcher::new(
        "x",
        HeaderValueMatch::String(StringMatcher::exact("a,b")),
        false,
    )
    .expect("valid")]);
    assert!(m.matches("/", &headers(&[("x", "a"), ("x", "b")]), 0));
    assert!(!m.matches("/", &headers(&[("x", "a")]), 0));
}

#[test]
fn header_mutations_apply_in_order() {
    let muts = HeaderMutations::new()
        .remove(http::header::HeaderName::from_static("drop"))
        .set(
            http::header::HeaderName::from_static("x-set"),
            HeaderValue::from_static("new"),
        )
        .append(
            http::header::HeaderName::from_static("x-add"),
            HeaderValue::from_static("2"),
        );
    let mut h = headers(&[("drop", "1"), ("x-set", "old"), ("x-add", "1")]);
    muts.apply(&mut h);
    assert!(h.get("drop").is_none());
    assert_eq!(h.get("x-set").map(|v| v.as_bytes()), Some(&b"new"[..]));
    assert_eq!(h.get_all("x-add").iter().count(), 2);
}

#[test]
fn fractional_percent_from_istio_percentage() {
    let f = FractionalPercent::from_percent(12.5);
    assert_eq!((f.numerator(), f.denominator()), (125_000, 1_000_000));
    assert_eq!(FractionalPercent::from_percent(f64::NAN).numerator(), 0);
    assert_eq!(
        FractionalPercent::from_percent(400.0).numerator(),
        1_000_000
    );
}

proptest! {
    /// Weighted picks converge to the weights: over many uniform draws each cluster's share
    /// stays within a few points of weight / total.
    #[test]
    fn weighted_picks_converge(weights in proptest::collection::vec(1u32..1000, 1..6), seed in any::<u64>()) {
        use rand::{Rng, SeedableRng};
        let clusters = weights.iter().enumerate().map(|(i, w)| WeightedCluster::new(format!("c{i}"), *w)).collect();
        let split = WeightedClusters::new(clusters).expect("valid");
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let n = 20_000;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..n {
            let c = split.pick(rng.random());
            let idx: usize = c.name()[1..].parse().expect("index");
            counts[idx] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let expected = f64::from(*w) / total as f64;
            let got = f64::from(counts[i]) / f64::from(n);
            prop_assert!((got - expected).abs() < 0.03, "cluster {i}: expected {expected:.3}, got {got:.3}");
        }
    }

    /// Matching never panics, whatever the path, header or authority.
    #[test]
    fn matching_never_panics(authority in ".{0,40}", path in ".{0,60}", value in "[ -~]{0,20}", random in any::<u64>()) {
        let rc = reviews();
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert("end-user", v);
        }
        let _ = rc.route_for(&authority, &path, &h, random);
    }
}
