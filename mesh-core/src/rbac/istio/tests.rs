use std::net::SocketAddr;

use super::*;
use crate::rbac::{Authorization, RbacAction, Request};

const PAYMENT_ACCESS: &str = "
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
";

const ORDER: &str = "spiffe://cluster.local/ns/default/sa/order-service";
const CHECKOUT: &str = "spiffe://cluster.local/ns/default/sa/checkout-service";
const OTHER: &str = "spiffe://cluster.local/ns/default/sa/other";

fn spec(yaml: &str) -> AuthorizationPolicySpec {
    serde_norway::from_str(yaml).expect("spec parses")
}

fn policy(name: &str, ns: &str, yaml: &str) -> AuthorizationPolicy {
    AuthorizationPolicy::new(name, ns, spec(yaml))
}

fn payment_service() -> Workload {
    Workload::new("default", [("app", "payment-service")])
}

fn authz(policies: &[AuthorizationPolicy], w: &Workload) -> Authorization {
    to_authorization(policies, w).expect("translates")
}

fn allowed(a: &Authorization, method: &str, path: &str, peer: Option<&str>) -> bool {
    a.evaluate(&Request::new(method, path).with_peer_principal(peer))
        .is_allowed()
}

#[test]
fn payment_access_behaves_as_istio_documents() {
    let a = authz(
        &[policy("payment-access", "default", PAYMENT_ACCESS)],
        &payment_service(),
    );
    assert!(allowed(&a, "POST", "/api/v1/payments/1", Some(ORDER)));
    assert!(allowed(
        &a,
        "GET",
        "/api/v1/payments/1?expand=1",
        Some(CHECKOUT)
    ));
    assert!(
        !allowed(&a, "POST", "/api/v1/payments/1", Some(OTHER)),
        "other SA"
    );
    assert!(
        !allowed(&a, "DELETE", "/api/v1/payments/1", Some(ORDER)),
        "DELETE"
    );
    assert!(!allowed(&a, "POST", "/other", Some(ORDER)), "/other");
    assert!(
        !allowed(&a, "POST", "/api/v1/payments", Some(ORDER)),
        "prefix needs the slash"
    );
    assert!(
        !allowed(&a, "POST", "/api/v1/payments/1", None),
        "unauthenticated"
    );
    let d =
        a.evaluate(&Request::new("POST", "/api/v1/payments/1").with_peer_principal(Some(ORDER)));
    assert_eq!(
        d.policy(),
        Some("ns[default]-policy[payment-access]-rule[0]")
    );

    // Not selected: another app in the namespace has no ALLOW policy, so all is allowed.
    let other_app = Workload::new("default", [("app", "order-service")]);
    let a = authz(
        &[policy("payment-access", "default", PAYMENT_ACCESS)],
        &other_app,
    );
    assert!(a.engines.is_empty());
    assert!(allowed(&a, "DELETE", "/x", None));
}

#[test]
fn deny_all_denies_everything() {
    let deny_all = policy("deny-all", "default", "{}");
    assert_eq!(deny_all.spec, AuthorizationPolicySpec::default());
    let a = authz(std::slice::from_ref(&deny_all), &payment_service());
    assert!(!allowed(&a, "GET", "/", None));
    assert!(!allowed(&a, "POST", "/api/v1/payments/1", Some(ORDER)));
    // Together with payment-access, the allow rule opens its own traffic only.
    let a = authz(
        &[
            deny_all,
            policy("payment-access", "default", PAYMENT_ACCESS),
        ],
        &payment_service(),
    );
    assert!(allowed(&a, "POST", "/api/v1/payments/1", Some(ORDER)));
    assert!(!allowed(&a, "GET", "/", Some(ORDER)));
}

#[test]
fn empty_rule_matches_everything_and_deny_runs_first() {
    let allow_any = policy("allow-any", "default", "rules:\n  - {}\n");
    let deny_delete = policy(
        "no-delete",
        "istio-system",
        "action: DENY\nrules:\n  - to:\n      - operation:\n          methods: [DELETE]\n",
    );
    let a = authz(&[allow_any, deny_delete], &payment_service());
    assert_eq!(a.engines.len(), 2);
    assert_eq!(a.engines[0].action, RbacAction::Deny);
    assert!(allowed(&a, "GET", "/anything", None));
    let d = a.evaluate(&Request::new("DELETE", "/x"));
    assert!(!d.is_allowed());
    assert_eq!(
        d.policy(),
        Some("ns[istio-system]-policy[no-delete]-rule[0]")
    );
}

#[test]
fn grpc_paths() {
    let p = policy(
        "grpc",
        "default",
        "rules:\n  - to:\n      - operation:\n          paths: ['/payment.v1.PaymentService/Authorize', '/grpc.health.v1.Health/*']\n",
    );
    let a = authz(&[p], &payment_service());
    assert!(allowed(
        &a,
        "POST",
        "/payment.v1.PaymentService/Authorize",
        None
    ));
    assert!(allowed(&a, "POST", "/grpc.health.v1.Health/Check", None));
    assert!(!allowed(
        &a,
        "POST",
        "/payment.v1.PaymentService/Refund",
        None
    ));
}

#[test]
fn audit_is_ignored() {
    let audit = policy("audit", "default", "action: AUDIT\nrules:\n  - {}\n");
    assert!(authz(&[audit], &payment_service()).engines.is_empty());
}

#[test]
fn custom_denies_every_request_to_the_workloads_it_selects() {
    // Istio calls the external authorizer first; this mesh cannot, so nothing gets in,
    // not even what an ALLOW policy lets in.
    let custom = policy(
        "ext",
        "default",
        "selector: {matchLabels: {app: payment-service}}\naction: CUSTOM\nprovider:\n  name: opa\nrules:\n  - to: [{operation: {paths: ['/admin/*']}}]\n",
    );
    let access = policy("payment-access", "default", PAYMENT_ACCESS);
    let a = authz(&[access.clone(), custom.clone()], &payment_service());
    for (method, path, peer) in [
        ("POST", "/api/v1/payments/1", Some(ORDER)),
        ("GET", "/admin/x", Some(ORDER)),
        ("GET", "/", None),
    ] {
        let decision = a.evaluate(&Request::new(method, path).with_peer_principal(peer));
        assert!(!decision.is_allowed(), "{method} {path} {peer:?}");
        assert_eq!(
            decision.policy(),
            Some("ns[default]-policy[ext]-deny-due-to-unsupported-action")
        );
    }
    let reasons = a.unsupported_rules();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("default/ext")
            && reasons[0].contains("CUSTOM")
            && reasons[0].contains("\"opa\"")
            && reasons[0].contains("denied"),
        "{}",
        reasons[0]
    );
    // A workload the CUSTOM policy does not select keeps its policy.
    let other = Workload::new("default", [("app", "order-service")]);
    let a = authz(&[custom], &other);
    assert!(a.engines.is_empty());
    assert!(a.unsupported_rules().is_empty());
}

#[test]
fn an_unknown_action_denies_everything_and_says_why() {
    let p = policy("typo", "default", "action: DENNY\nrules:\n  - {}\n");
    assert_eq!(
        p.spec.action,
        AuthorizationAction::Unrecognized("DENNY".into())
    );
    let a = authz(&[p], &payment_service());
    assert!(!allowed(&a, "GET", "/", Some(ORDER)));
    let reasons = a.unsupported_rules();
    assert!(
        reasons.len() == 1
            && reasons[0].contains("\"DENNY\"")
            && reasons[0].contains("default/typo"),
        "{reasons:?}"
    );
}

#[test]
fn actions_round_trip_as_istio_writes_them() {
    for name in ["ALLOW", "DENY", "AUDIT", "CUSTOM", "SOMETHING_NEW"] {
        let action: AuthorizationAction =
            serde_json::from_str(&format!("{name:?}")).expect("parses");
        assert_eq!(action.as_str(), name);
        assert_eq!(
            serde_json::to_string(&action).expect("serializes"),
            format!("{name:?}")
        );
    }
    assert_eq!(AuthorizationAction::default(), AuthorizationAction::Allow);
}

#[test]
fn sources_and_conditions() {
    let p = policy(
        "mixed",
        "default",
        "
rules:
  - from:
      - source:
          namespaces: ['prod-*']
          notPrincipals: ['*/sa/blocked']
      - source:
          ipBlocks: ['10.0.0.0/8']
          notIpBlocks: ['10.9.0.0/16']
    when:
      - key: request.headers[x-tenant]
        values: ['acme', 'beta*']
      - key: destination.port
        notValues: ['9000']
",
    );
    let a = authz(&[p], &payment_service());
    let headers = [("x-tenant", "acme")];
    let ok = |peer: Option<&str>, src: &str, port: u16, headers: &[(&str, &str)]| {
        let src: SocketAddr = src.parse().expect("addr");
        a.evaluate(
            &Request::new("GET", "/")
                .with_peer_principal(peer)
                .with_source(src)
                .with_headers(headers)
                .with_destination(SocketAddr::from(([10, 0, 0, 1], port))),
        )
        .is_allowed()
    };
    assert!(ok(
        Some("spiffe://td/ns/prod-eu/sa/web"),
        "1.1.1.1:1",
        80,
        &headers
    ));
    assert!(!ok(
        Some("spiffe://td/ns/prod-eu/sa/blocked"),
        "1.1.1.1:1",
        80,
        &headers
    ));
    assert!(!ok(
        Some("spiffe://td/ns/dev/sa/web"),
        "1.1.1.1:1",
        80,
        &headers
    ));
    assert!(ok(None, "10.1.1.1:1", 80, &headers));
    assert!(!ok(None, "10.9.1.1:1", 80, &headers));
    assert!(!ok(None, "10.1.1.1:1", 9000, &headers), "notValues port");
    assert!(ok(None, "10.1.1.1:1", 80, &[("x-tenant", "beta-2")]));
    assert!(!ok(None, "10.1.1.1:1", 80, &[("x-tenant", "gamma")]));
    assert!(!ok(None, "10.1.1.1:1", 80, &[]));
}

#[test]
fn unsupported_keys_fail_closed() {
    let allow_jwt = policy(
        "jwt",
        "default",
        "rules:\n  - when:\n      - key: request.auth.claims[iss]\n        values: ['x']\n",
    );
    let a = authz(&[allow_jwt], &payment_service());
    assert!(
        !allowed(&a, "GET", "/", Some(ORDER)),
        "unknown never allows"
    );

    let deny_not_jwt = policy(
        "jwt-deny",
        "default",
        "action: DENY\nrules:\n  - from:\n      - source:\n          notRequestPrincipals: ['*']\n",
    );
    let a = authz(&[deny_not_jwt], &payment_service());
    assert!(
        !allowed(&a, "GET", "/", Some(ORDER)),
        "a DENY we cannot evaluate denies"
    );
}

#[test]
fn errors_carry_field_paths() {
    let w = payment_service();
    let err = |yaml: &str| to_authorization(&[policy("p", "default", yaml)], &w).expect_err(yaml);
    assert_eq!(
        err("rules:\n  - to:\n      - operation:\n          ports: ['80', 'http']\n"),
        IstioAuthzError::BadPort {
            policy: "default/p".into(),
            field: "rules[0].to[0].operation.ports[1]".into(),
            value: "http".into()
        }
    );
    assert!(matches!(
        err("rules:\n  - {}\n  - from:\n      - source:\n          ipBlocks: ['10.0.0.0/33']\n"),
        IstioAuthzError::BadCidr { field, value, .. }
            if field == "rules[1].from[0].source.ipBlocks[0]" && value == "10.0.0.0/33"
    ));
    assert!(matches!(
        err("rules:\n  - from:\n      - {}\n"),
        IstioAuthzError::Missing { field, .. } if field == "rules[0].from[0].source"
    ));
    assert!(matches!(
        err("rules:\n  - to:\n      - operation: {}\n"),
        IstioAuthzError::Empty { field, .. } if field == "rules[0].to[0].operation"
    ));
    assert!(matches!(
        err("rules:\n  - when:\n      - key: source.ip\n"),
        IstioAuthzError::ConditionWithoutValues { field, .. } if field == "rules[0].when[0]"
    ));
    assert!(matches!(
        err("rules:\n  - when:\n      - key: request.headers[]\n        values: [a]\n"),
        IstioAuthzError::BadHeaderKey { field, .. } if field == "rules[0].when[0].key"
    ));
    assert!(matches!(
        err("rules:\n  - to:\n      - operation:\n          methods: ['']\n"),
        IstioAuthzError::EmptyValue { field, .. } if field == "rules[0].to[0].operation.methods[0]"
    ));
    assert!(serde_norway::from_str::<AuthorizationPolicySpec>("rulez: []\n").is_err());
    // An unknown action parses (and fails closed: see
    // an_unknown_action_denies_everything_and_says_why); an unknown field does not.
    assert!(serde_norway::from_str::<AuthorizationPolicySpec>("action: MAYBE\n").is_ok());
}

#[test]
fn selection_follows_namespaces() {
    let mesh_wide = policy("mesh", "istio-system", "action: DENY\nrules:\n  - {}\n");
    let elsewhere = policy("x", "other", "action: DENY\nrules:\n  - {}\n");
    let w = payment_service();
    assert!(authz(std::slice::from_ref(&elsewhere), &w)
        .engines
        .is_empty());
    assert_eq!(authz(std::slice::from_ref(&mesh_wide), &w).engines.len(), 1);
    let w = payment_service().with_root_namespace("mesh-root");
    assert!(authz(&[mesh_wide], &w).engines.is_empty());
}
