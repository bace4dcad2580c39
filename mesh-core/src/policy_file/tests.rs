use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::lb::LbPolicy;
use crate::route::{ClusterSpecifier, RouteAction};

const SEED: &str = include_str!("../../tests/data/seed-guide-policy.yaml");

fn snapshot() -> Snapshot {
    PolicyFile::parse(SEED, "seed.yaml")
        .expect("parses")
        .to_snapshot("seed.yaml")
        .expect("translates")
}

fn cluster_for(snap: &Snapshot, target: &str, headers: &HeaderMap, random: u64) -> String {
    let rc = snap
        .outbound(target)
        .and_then(|l| l.route_config())
        .expect("listener with routes");
    let (_, route) = rc.route_for(target, "/", headers, random).expect("route");
    match route.action() {
        RouteAction::Forward(f) => match f.clusters() {
            ClusterSpecifier::Cluster(c) => c.clone(),
            ClusterSpecifier::Weighted(w) => w.pick(random).name().to_owned(),
        },
        other => panic!("unexpected action {other:?}"),
    }
}

#[test]
fn seed_guide_virtual_service_routes_beta_testers_and_splits_90_10() {
    let snap = snapshot();
    snap.validate().expect("no dangling references");
    let v2 = "outbound|9080|v2|reviews.default.svc.cluster.local";
    let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
    let mut beta = HeaderMap::new();
    beta.insert("end-user", HeaderValue::from_static("beta-tester"));
    for r in 0..100 {
        assert_eq!(cluster_for(&snap, "reviews:9080", &beta, r), v2);
    }
    let none = HeaderMap::new();
    let to_v2 = (0..100)
        .filter(|r| cluster_for(&snap, "reviews:9080", &none, *r) == v2)
        .count();
    assert_eq!(to_v2, 10);
    let to_v1 = (0..100)
        .filter(|r| cluster_for(&snap, "reviews:9080", &none, *r) == v1)
        .count();
    assert_eq!(to_v1, 90);
    // Every name Istio accepts for the service reaches the same routes.
    for target in [
        "reviews.default:9080",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local:9080",
    ] {
        assert_eq!(cluster_for(&snap, target, &beta, 0), v2, "{target}");
    }
}

#[test]
fn seed_guide_canary_95_5() {
    let snap = snapshot();
    let none = HeaderMap::new();
    let canary = (0..100)
        .filter(|r| cluster_for(&snap, "my-service:8080", &none, *r).contains("|canary|"))
        .count();
    assert_eq!(canary, 5);
}

#[test]
fn seed_guide_destination_rules_become_cluster_policy() {
    let snap = snapshot();
    let v1 = snap
        .cluster("outbound|9080|v1|reviews.default.svc.cluster.local")
        .expect("v1");
    let v2 = snap
        .cluster("outbound|9080|v2|reviews.default.svc.cluster.local")
        .expect("v2");
    assert_eq!(v1.lb, LbPolicy::RoundRobin);
    assert!(matches!(v2.lb, LbPolicy::LeastRequest { .. }));
    // The subset inherits the service-level connection pool.
    for c in [v1, v2] {
        assert_eq!(c.circuit_breakers.max_connections, 100);
        assert_eq!(c.circuit_breakers.max_pending_requests, 100);
        assert_eq!(c.circuit_breakers.max_requests, 1000);
    }
    let v1_eps = snap.endpoints_of(v1).expect("endpoints");
    let addrs: Vec<String> = v1_eps
        .endpoints()
        .map(|(_, e)| e.address.to_string())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:19081"]);

    let pay = snap
        .cluster("outbound|8080||payment-service.default.svc.cluster.local")
        .expect("payment cluster");
    let t = &pay.circuit_breakers;
    assert_eq!(
        (
            t.max_connections,
            t.max_pending_requests,
            t.max_requests,
            t.max_retries
        ),
        (50, 50, 100, 3)
    );
    assert_eq!(pay.max_requests_per_connection, Some(10));
    let od = pay.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(od.consecutive_5xx, 5);
    assert_eq!(od.interval, Duration::from_secs(30));
    assert_eq!(od.base_ejection_time, Duration::from_secs(30));
    assert_eq!(od.max_ejection_percent, 50);
}

#[test]
fn unknown_field_names_file_line_and_path() {
    let text = "services:\n  - name: a\n    ports: [{port: 80}]\n    colour: blue\n";
    let err = PolicyFile::parse(text, "p.yaml").expect_err("unknown field");
    let PolicyError::Syntax {
        file,
        line,
        path,
        message,
    } = &err
    else {
        panic!("wrong error {err:?}");
    };
    assert_eq!(file, "p.yaml");
    assert_eq!(path, "services[0].colour");
    assert_eq!(line.map(|l| l.0), Some(4));
    assert!(message.contains("unknown field `colour`"), "{message}");
    assert!(err.to_string().starts_with("p.yaml:4:"), "{err}");
    // The path once, not twice.
    assert_eq!(err.to_string().matches("services[0]").count(), 1, "{err}");
}

#[test]
fn wrong_type_names_the_path() {
    let text = "services:\n  - name: a\n    ports: [{port: eighty}]\n";
    let err = PolicyFile::parse(text, "p.yaml").expect_err("bad port");
    assert!(
        matches!(&err, PolicyError::Syntax { path, .. } if path == "services[0].ports[0].port"),
        "{err}"
    );
}

fn invalid(text: &str) -> Vec<IstioError> {
    let file = PolicyFile::parse(text, "p.yaml").expect("parses");
    match file.to_snapshot("p.yaml") {
        Err(PolicyError::Invalid { errors, .. }) => errors,
        other => panic!("expected invalid, got {other:?}"),
    }
}

const SVC: &str = "services:\n  - name: pay\n    ports: [{port: 8080}]\n    endpoints: [{address: '127.0.0.1:1', labels: {v: a}}]\ndestinationRules:\n  - spec: {host: pay, subsets: [{name: a, labels: {v: a}}]}\n";

#[test]
fn weights_not_summing_to_100_are_rejected_with_path() {
    let errs = invalid(&format!(
        "{SVC}virtualServices:\n  - spec:\n      hosts: [pay]\n      http:\n        - route:\n            - {{destination: {{host: pay, subset: a}}, weight: 90}}\n            - {{destination: {{host: pay}}, weight: 5}}\n"
    ));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "virtualServices[0].spec.http[0].route");
    assert!(errs[0].to_string().contains("add up to 95"), "{}", errs[0]);
}

#[test]
fn unknown_subset_host_and_bad_duration_are_all_reported() {
    let errs = invalid(&format!(
        "{SVC}virtualServices:\n  - spec:\n      hosts: [pay]\n      http:\n        - route: [{{destination: {{host: pay, subset: b}}}}]\n        - route: [{{destination: {{host: nope}}}}]\n        - route: [{{destination: {{host: pay}}}}]\n          timeout: 30x\n"
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "virtualServices[0].spec.http[0].route[0].destination.subset",
            "virtualServices[0].spec.http[1].route[0].destination.host",
            "virtualServices[0].spec.http[2].timeout",
        ]
    );
}

#[test]
fn unsupported_features_are_named() {
    let errs = invalid(&format!(
        "{SVC}virtualServices:\n  - spec:\n      hosts: [pay]\n      http:\n        - route: [{{destination: {{host: pay}}}}]\n          mirror: {{host: pay}}\n"
    ));
    assert!(
        errs[0]
            .to_string()
            .contains("traffic mirroring is not supported"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[0].path, "virtualServices[0].spec.http[0].mirror");
}

#[test]
fn service_without_virtual_service_gets_a_default_route_with_istio_retries() {
    let file = PolicyFile::parse(SVC, "p.yaml").expect("parses");
    let snap = file.to_snapshot("p.yaml").expect("valid");
    let rc = snap
        .outbound("pay:8080")
        .and_then(|l| l.route_config())
        .expect("routes");
    let (_, route) = rc
        .route_for("pay:8080", "/x", &HeaderMap::new(), 0)
        .expect("route");
    let RouteAction::Forward(f) = route.action() else {
        panic!("forward expected");
    };
    assert_eq!(
        f.cluster_names().collect::<Vec<_>>(),
        ["outbound|8080||pay.default.svc.cluster.local"]
    );
    assert_eq!(f.retry_policy.as_ref().map(|p| p.num_retries), Some(2));
}

#[test]
fn seed_guide_peer_authentication_and_payment_access_policy() {
    let text = r#"
namespace: default
workload:
  name: payment-service
  labels: { app: payment-service }
peerAuthentications:
  - apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata:
      name: default
      namespace: default
    spec:
      mtls:
        mode: STRICT
authorizationPolicies:
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata:
      name: payment-access
      namespace: default
    spec:
      selector:
        matchLabels:
          app: payment-service
      rules:
        - from:
            - source:
                principals:
                  - cluster.local/ns/default/sa/order-service
                  - cluster.local/ns/default/sa/checkout-service
          to:
            - operation:
                methods: ['POST', 'GET']
                paths: ['/api/v1/payments/*']
"#;
    let snap = PolicyFile::parse(text, "p.yaml")
        .expect("parses")
        .to_snapshot("p.yaml")
        .expect("valid");
    let local: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let inbound = snap.inbound_for(local).expect("inbound policy");
    assert_eq!(inbound.mode_for_port(8080), crate::inbound::TlsMode::Strict);
    let order = crate::rbac::Request::new("POST", "/api/v1/payments/1")
        .with_peer_principal(Some("spiffe://cluster.local/ns/default/sa/order-service"));
    assert!(inbound.authorization.evaluate(&order).is_allowed());
    let other = crate::rbac::Request::new("POST", "/api/v1/payments/1")
        .with_peer_principal(Some("spiffe://cluster.local/ns/default/sa/fraud"));
    assert!(!inbound.authorization.evaluate(&other).is_allowed());
}

#[test]
fn the_example_policy_file_is_valid() {
    let text = include_str!("../../../examples/policy/local.yaml");
    let snap = PolicyFile::parse(text, "local.yaml")
        .expect("parses")
        .to_snapshot("local.yaml")
        .expect("valid");
    snap.validate().expect("no dangling references");
    assert!(snap.outbound("payment-service:8080").is_some());
}

#[test]
fn empty_files_are_refused_not_taken_as_an_empty_policy() {
    for text in [
        "",
        "   \n\t\n",
        "# only a comment\n\n  # another\n",
        "---\n",
        "--- # a marker with a comment\n...\n",
        "\u{feff}\n---\n# truncated\n",
    ] {
        let err = PolicyFile::parse(text, "p.yaml").expect_err(text);
        assert_eq!(
            err,
            PolicyError::Empty {
                file: "p.yaml".into()
            },
            "{text:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("p.yaml: the policy file is empty"),
            "{message}"
        );
    }
    // A document that says something is not empty, even if it sets little.
    assert!(PolicyFile::parse("---\nnamespace: shop\n", "p.yaml").is_ok());
    assert!(!is_blank_yaml("{}"));
}

/// A policy for payment-service with the given AuthorizationPolicy spec (indented under
/// `spec:`) and PeerAuthentication mode.
fn payment_policy(mode: &str, authz_spec: &str) -> String {
    format!(
        "namespace: default\nworkload: {{ name: payment-service, labels: {{ app: payment-service }} }}\n\
         peerAuthentications:\n  - metadata: {{ name: default }}\n    spec: {{ mtls: {{ mode: {mode} }} }}\n\
         authorizationPolicies:\n  - metadata: {{ name: payment-access }}\n    spec:\n{authz_spec}"
    )
}

fn version_of(text: &str) -> String {
    PolicyFile::parse(text, "p.yaml")
        .and_then(|f| f.to_snapshot("p.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .version()
        .to_owned()
}

#[test]
fn the_version_covers_authorization_and_mtls() {
    let specs = [
        "      rules: [{ from: [{ source: { principals: [cluster.local/ns/default/sa/order-service] } }] }]\n",
        "      rules: [{ from: [{ source: { principals: [cluster.local/ns/default/sa/checkout] } }] }]\n",
        "      rules: [{}]\n",
        "      action: DENY\n      rules: [{}]\n",
        "      {}\n",
    ];
    let versions: Vec<String> = specs
        .iter()
        .map(|s| version_of(&payment_policy("STRICT", s)))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = versions.iter().collect();
    assert_eq!(distinct.len(), specs.len(), "{versions:?}");
    // The mTLS mode alone changes it too; the same text gives the same version.
    let strict = payment_policy("STRICT", specs[0]);
    let permissive = payment_policy("PERMISSIVE", specs[0]);
    assert_ne!(version_of(&strict), version_of(&permissive));
    assert_eq!(version_of(&strict), version_of(&strict));
    assert!(
        version_of(&strict).starts_with("file:"),
        "{}",
        version_of(&strict)
    );
}

#[test]
fn semantic_errors_carry_line_and_column() {
    let text = format!(
        "{SVC}virtualServices:\n  - spec:\n      hosts: [pay]\n      http:\n        - route: [{{destination: {{host: pay, subset: b}}}}]\n        - route: [{{destination: {{host: pay}}}}]\n          timeout: 30x\n"
    );
    let file = PolicyFile::parse(&text, "p.yaml").expect("parses");
    let err = file.to_snapshot("p.yaml").expect_err("invalid");
    let shown = err.to_string();
    // Line 11 is the first route (SVC has 6 lines), `b` in column 53; the timeout is on
    // line 13, its value in column 20.
    assert!(
        shown.starts_with(
            "p.yaml:11:53: virtualServices[0].spec.http[0].route[0].destination.subset: "
        ),
        "{shown}"
    );
    assert!(
        shown.contains("; p.yaml:13:20: virtualServices[0].spec.http[1].timeout: "),
        "{shown}"
    );
}

#[test]
fn inbound_policy_errors_carry_line_and_column() {
    let text = "authorizationPolicies:\n  - metadata: {name: ok}\n    spec: {}\n  - metadata: {name: bad-port}\n    spec:\n      rules:\n        - to:\n            - operation:\n                ports: [\"http\"]\n";
    let file = PolicyFile::parse(text, "a.yaml").expect("parses");
    let shown = file.to_snapshot("a.yaml").expect_err("invalid").to_string();
    assert!(
        shown.starts_with("a.yaml:9:25: inbound policy: "),
        "{shown}"
    );
    assert!(shown.contains("bad-port"), "{shown}");
}

#[test]
fn service_names_must_be_dns_names() {
    // Found by fuzzing (fuzz/seeds/istio_yaml/regression-service-name-wildcard): a name
    // with spaces and `*` became a route domain xDS clients reject.
    let errs = invalid("services:\n  - name: 'pay *ment'\n    ports: [{port: 8080}]\n  - name: ok\n    namespace: Bad_NS\n    ports: [{port: 80}]\n");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["services[0].name", "services[1].namespace"],
        "{errs:?}"
    );
    assert!(errs[0].to_string().contains("a DNS name"), "{}", errs[0]);
}

#[test]
fn the_default_namespace_and_domain_suffix_must_be_dns_names() {
    // Found by fuzzing (fuzz/seeds/istio_yaml/regression-default-namespace): the file's
    // `namespace:` goes into every host name of services without their own.
    let errs = invalid(
        "namespace: 'default /sa/x'\ndomainSuffix: 'cluster local'\nservices:\n  - name: pay\n    ports: [{port: 8080}]\n",
    );
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["namespace", "domainSuffix"], "{errs:?}");
    assert!(errs[0].to_string().contains("a DNS name"), "{}", errs[0]);
}
