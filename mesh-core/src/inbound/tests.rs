use super::peer_authentication::*;
use super::*;
use crate::rbac::istio::{AuthorizationPolicy, Workload};
use crate::rbac::Request;

/// The seed guide's three PeerAuthentications, as YAML specs.
const NAMESPACE_STRICT: &str = "mtls:\n  mode: STRICT\n";
const MESH_STRICT: &str = "mtls:\n  mode: STRICT\n";
const LEGACY: &str = "
selector:
  matchLabels:
    app: legacy-adapter
mtls:
  mode: STRICT
portLevelMtls:
  8080:
    mode: PERMISSIVE
";

fn pa(name: &str, ns: &str, yaml: &str) -> PeerAuthentication {
    let spec: PeerAuthenticationSpec = serde_norway::from_str(yaml).expect("spec parses");
    PeerAuthentication::new(name, ns, spec)
}

fn resolve(policies: &[PeerAuthentication], workload: &Workload) -> ResolvedMtls {
    resolve_mtls(policies, workload).expect("resolves")
}

#[test]
fn tls_mode_serde() {
    assert_eq!(
        serde_json::to_string(&TlsMode::Permissive).expect("ser"),
        "\"PERMISSIVE\""
    );
    let m: TlsMode = serde_json::from_str("\"DISABLE\"").expect("de");
    assert_eq!(m, TlsMode::Disable);
    assert!(serde_json::from_str::<TlsMode>("\"strict\"").is_err());
}

#[test]
fn nothing_set_is_permissive() {
    let w = Workload::new("default", [("app", "x")]);
    let r = resolve(&[], &w);
    assert_eq!(r.default_mode, TlsMode::Permissive);
    assert!(r.port_modes.is_empty());
    assert_eq!(
        InboundPolicy::default().mode_for_port(1),
        TlsMode::Permissive
    );
}

#[test]
fn seed_guide_examples() {
    let policies = [
        pa("default", "default", NAMESPACE_STRICT),
        pa("default", "istio-system", MESH_STRICT),
        pa("legacy-integration", "default", LEGACY),
    ];
    let legacy = Workload::new("default", [("app", "legacy-adapter")]);
    let r = resolve(&policies, &legacy);
    assert_eq!(r.default_mode, TlsMode::Strict);
    assert_eq!(r.port_modes.get(&8080), Some(&TlsMode::Permissive));

    let policy = inbound_policy(&policies, &[], &legacy).expect("policy");
    assert_eq!(policy.mode_for_port(8080), TlsMode::Permissive);
    assert_eq!(policy.mode_for_port(9090), TlsMode::Strict);

    let other = Workload::new("default", [("app", "payment-service")]);
    let r = resolve(&policies, &other);
    assert_eq!(r.default_mode, TlsMode::Strict);
    assert!(
        r.port_modes.is_empty(),
        "port overrides are the legacy adapter's only"
    );

    // Another namespace only gets the mesh-wide policy.
    let elsewhere = Workload::new("shop", [("app", "legacy-adapter")]);
    assert_eq!(resolve(&policies, &elsewhere).default_mode, TlsMode::Strict);
    assert!(resolve(&policies, &elsewhere).port_modes.is_empty());
}

#[test]
fn levels_override_and_unset_inherits() {
    let mesh = pa("default", "istio-system", "mtls:\n  mode: STRICT\n");
    let ns_permissive = pa("ns", "default", "mtls:\n  mode: PERMISSIVE\n");
    let ns_unset = pa("ns", "default", "mtls:\n  mode: UNSET\n");
    let wl_disable = pa(
        "wl",
        "default",
        "selector:\n  matchLabels:\n    app: a\nmtls:\n  mode: DISABLE\n",
    );
    let wl_unset_port = pa(
        "wl",
        "default",
        "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  81:\n    mode: UNSET\n  82:\n    mode: DISABLE\n",
    );
    let w = Workload::new("default", [("app", "a")]);
    let mode = |ps: &[PeerAuthentication]| resolve(ps, &w).default_mode;

    assert_eq!(mode(std::slice::from_ref(&mesh)), TlsMode::Strict);
    assert_eq!(
        mode(&[mesh.clone(), ns_permissive.clone()]),
        TlsMode::Permissive
    );
    assert_eq!(mode(&[mesh.clone(), ns_unset.clone()]), TlsMode::Strict);
    assert_eq!(
        mode(&[mesh.clone(), ns_permissive, wl_disable]),
        TlsMode::Disable
    );

    let r = resolve(&[mesh.clone(), ns_unset, wl_unset_port], &w);
    assert_eq!(
        r.default_mode,
        TlsMode::Strict,
        "workload mtls absent inherits"
    );
    assert_eq!(
        r.port_modes.get(&81),
        Some(&TlsMode::Strict),
        "UNSET port inherits"
    );
    assert_eq!(r.port_modes.get(&82), Some(&TlsMode::Disable));

    // A mesh policy in a different root namespace.
    let w2 = Workload::new("default", [("app", "a")]).with_root_namespace("mesh-root");
    assert_eq!(resolve(&[mesh], &w2).default_mode, TlsMode::Permissive);
}

#[test]
fn port_overrides_need_a_selector() {
    let ns_with_ports = pa(
        "ns",
        "default",
        "mtls:\n  mode: STRICT\nportLevelMtls:\n  8080:\n    mode: DISABLE\n",
    );
    let w = Workload::new("default", [("app", "a")]);
    let r = resolve(&[ns_with_ports], &w);
    assert_eq!(r.default_mode, TlsMode::Strict);
    assert!(r.port_modes.is_empty());
}

#[test]
fn selector_must_match_and_first_wins() {
    let a = pa(
        "a",
        "default",
        "selector:\n  matchLabels:\n    app: a\n    tier: web\nmtls:\n  mode: DISABLE\n",
    );
    let b = pa(
        "b",
        "default",
        "selector:\n  matchLabels:\n    app: a\nmtls:\n  mode: STRICT\n",
    );
    let only_app = Workload::new("default", [("app", "a")]);
    assert_eq!(
        resolve(&[a.clone(), b.clone()], &only_app).default_mode,
        TlsMode::Strict
    );
    let both = Workload::new("default", [("app", "a"), ("tier", "web")]);
    assert_eq!(
        resolve(&[a.clone(), b.clone()], &both).default_mode,
        TlsMode::Disable
    );
    assert_eq!(resolve(&[b, a], &both).default_mode, TlsMode::Strict);
}

#[test]
fn bad_specs_are_errors() {
    let w = Workload::new("default", [("app", "a")]);
    let zero = pa(
        "z",
        "default",
        "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  0:\n    mode: STRICT\n",
    );
    assert_eq!(
        resolve_mtls(&[zero], &w),
        Err(PeerAuthenticationError::BadPort {
            policy: "default/z".into(),
            port: 0
        })
    );
    assert!(serde_norway::from_str::<PeerAuthenticationSpec>("mtls:\n  mode: LOOSE\n").is_err());
    assert!(serde_norway::from_str::<PeerAuthenticationSpec>("mtlss: {}\n").is_err());
    assert!(
        serde_norway::from_str::<PeerAuthenticationSpec>("portLevelMtls:\n  70000: {}\n").is_err()
    );
}

#[test]
fn inbound_policy_carries_authorization() {
    let deny_all = AuthorizationPolicy::new("deny-all", "default", Default::default());
    let w = Workload::new("default", [("app", "a")]);
    let policy = inbound_policy(&[], &[deny_all], &w).expect("policy");
    assert!(!policy
        .authorization
        .evaluate(&Request::new("GET", "/"))
        .is_allowed());
    assert_eq!(policy.mode_for_port(80), TlsMode::Permissive);
}

mod weakening {
    use super::super::diff::{snapshot_weakenings, weakenings, InboundScope, Weakening};
    use super::super::{InboundPolicy, TlsMode};
    use crate::rbac::istio::{to_authorization, AuthorizationPolicy, Workload};
    use crate::Snapshot;

    fn authz(specs: &[(&str, &str)]) -> crate::rbac::Authorization {
        let policies: Vec<AuthorizationPolicy> = specs
            .iter()
            .map(|(name, yaml)| {
                AuthorizationPolicy::new(
                    *name,
                    "default",
                    serde_norway::from_str(yaml).expect("spec"),
                )
            })
            .collect();
        to_authorization(&policies, &Workload::new("default", [("app", "pay")])).expect("authz")
    }

    const ALLOW_ORDER: &str =
        "rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/order]}}]}]";
    const DENY_DELETE: &str = "action: DENY\nrules: [{to: [{operation: {methods: [DELETE]}}]}]";

    #[test]
    fn mtls_getting_weaker_is_reported_per_port_and_stronger_is_not() {
        let strict = InboundPolicy::new(TlsMode::Strict);
        let cases = [
            (TlsMode::Strict, TlsMode::Permissive, true),
            (TlsMode::Strict, TlsMode::Disable, true),
            (TlsMode::Permissive, TlsMode::Disable, true),
            (TlsMode::Permissive, TlsMode::Strict, false),
            (TlsMode::Disable, TlsMode::Permissive, false),
            (TlsMode::Strict, TlsMode::Strict, false),
        ];
        for (from, to, reported) in cases {
            let found = weakenings(
                Some(&InboundPolicy::new(from)),
                Some(&InboundPolicy::new(to)),
            );
            assert_eq!(
                found
                    == [Weakening::Mtls {
                        port: None,
                        from,
                        to
                    }],
                reported,
                "{from:?} -> {to:?}: {found:?}"
            );
        }
        // One port opened while the rest stays STRICT.
        let one_port = strict.clone().with_port_mode(8080, TlsMode::Disable);
        let found = weakenings(Some(&strict), Some(&one_port));
        assert_eq!(
            found,
            [Weakening::Mtls {
                port: Some(8080),
                from: TlsMode::Strict,
                to: TlsMode::Disable
            }]
        );
        assert_eq!(found[0].to_string(), "mTLS STRICT -> DISABLE on port 8080");
        assert!(weakenings(Some(&one_port), Some(&strict)).is_empty());
    }

    #[test]
    fn removed_deny_rules_and_allow_policies_are_reported() {
        let both = InboundPolicy::new(TlsMode::Strict).with_authorization(authz(&[
            ("access", ALLOW_ORDER),
            ("no-delete", DENY_DELETE),
        ]));
        let none = InboundPolicy::new(TlsMode::Strict);
        let found = weakenings(Some(&both), Some(&none));
        assert_eq!(
            found,
            [
                Weakening::DenyRulesRemoved {
                    rules: vec!["ns[default]-policy[no-delete]-rule[0]".into()]
                },
                Weakening::AllowPolicyRemoved {
                    rules: vec!["ns[default]-policy[access]-rule[0]".into()]
                },
            ]
        );
        assert!(found[1].to_string().contains("access"), "{}", found[1]);
        // Emptying the ALLOW policy's rules denies everyone: stricter, not reported.
        let deny_all =
            InboundPolicy::new(TlsMode::Strict).with_authorization(authz(&[("access", "{}")]));
        let allow_only = InboundPolicy::new(TlsMode::Strict)
            .with_authorization(authz(&[("access", ALLOW_ORDER)]));
        assert!(weakenings(Some(&allow_only), Some(&deny_all)).is_empty());
        // Going from deny-all to nothing opens the workload.
        assert!(matches!(
            weakenings(Some(&deny_all), Some(&none))[..],
            [Weakening::AllowPolicyRemoved { .. }]
        ));
    }

    #[test]
    fn a_removed_policy_is_reported_with_what_it_enforced() {
        let strict = InboundPolicy::new(TlsMode::Strict)
            .with_authorization(authz(&[("access", ALLOW_ORDER)]));
        let found = weakenings(Some(&strict), None);
        assert_eq!(found[0], Weakening::PolicyRemoved);
        assert!(found.iter().any(Weakening::is_mtls), "{found:?}");
        assert!(found
            .iter()
            .any(|w| matches!(w, Weakening::AllowPolicyRemoved { .. })));
        assert!(weakenings(None, Some(&strict)).is_empty());
        assert!(weakenings(None, None).is_empty());
    }

    #[test]
    fn snapshots_are_compared_per_listener() {
        let addr: std::net::SocketAddr = "127.0.0.1:50051".parse().expect("addr");
        let other: std::net::SocketAddr = "127.0.0.1:50052".parse().expect("addr");
        let old = Snapshot::builder()
            .inbound_listener(addr, Some(InboundPolicy::new(TlsMode::Strict)))
            .inbound_listener(other, Some(InboundPolicy::new(TlsMode::Permissive)))
            .build();
        let new = Snapshot::builder()
            .inbound_listener(addr, Some(InboundPolicy::new(TlsMode::Disable)))
            .inbound_listener(other, Some(InboundPolicy::new(TlsMode::Strict)))
            .build();
        let found = snapshot_weakenings(&old, &new);
        assert_eq!(
            found,
            [(
                InboundScope::Listener(addr),
                Weakening::Mtls {
                    port: None,
                    from: TlsMode::Strict,
                    to: TlsMode::Disable
                }
            )]
        );
        assert_eq!(found[0].0.to_string(), "listener 127.0.0.1:50051");
        let file_old = Snapshot::builder()
            .inbound_default(Some(InboundPolicy::new(TlsMode::Strict)))
            .build();
        let found = snapshot_weakenings(&file_old, &Snapshot::empty());
        assert_eq!(found[0], (InboundScope::Workload, Weakening::PolicyRemoved));
    }
}
