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
