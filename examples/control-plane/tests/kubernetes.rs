//! The Kubernetes manifests in `examples/kubernetes/` can't run here; this keeps them valid:
//! every document parses, the Kubernetes objects pass `kubernetes-validate` (Kubernetes'
//! own schemas), the fields the services rely on are there and agree with each other and
//! with the README's commands, and the Istio objects go through the same translation the
//! control plane serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod interop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_xds_client::resource::XdsType;
use prost::Message;
use serde::Deserialize;
use serde_norway::Value;

/// The Kubernetes versions whose schemas the objects are checked against: the oldest one
/// Istio 1.30 supports, and the newest schema kubernetes-validate 1.37.0 ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.32.0", "1.37.0"];

/// The oldest Istio the manifests work with: the first that serves the
/// `networking.istio.io/v1` and `security.istio.io/v1` APIs they use.
const MIN_ISTIO: &str = "1.22";

const MANIFESTS: [&str; 2] = ["workloads.yaml", "istio.yaml"];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kubernetes")
}

fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for file in MANIFESTS {
        let text = std::fs::read_to_string(manifests_dir().join(file)).unwrap();
        for de in serde_norway::Deserializer::from_str(&text) {
            let doc = Value::deserialize(de).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !doc.is_null() {
                docs.push(doc);
            }
        }
    }
    docs
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn is_istio(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.contains(".istio.io/"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    &args[i + 1]
}

/// The number of a container port given by number or by name.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a probe port is a number or a name");
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn every_manifest_parses_and_the_fields_the_services_rely_on_agree() {
    let docs = documents();
    let accounts: Vec<&str> = docs
        .iter()
        .filter(|d| kind(d) == "ServiceAccount")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(accounts, ["order-service", "payment-service"]);
    let services: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Service").collect();
    let service_ports: Vec<u64> = services
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_sequence().unwrap())
        .flat_map(|p| [p["port"].as_u64(), p["targetPort"].as_u64()])
        .flatten()
        .collect();

    // The admin server's probe path answers 200 from the real admin server.
    let mesh = mesh_tower::Mesh::builder().build().unwrap();
    let admin_server = mesh_tower::admin::AdminServer::new(mesh);

    let deployments: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let template = &d["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(
            annotations["inject.istio.io/templates"].as_str(),
            Some("grpc-agent"),
            "{name}: proxyless injection"
        );
        assert_eq!(
            annotations["sidecar.istio.io/rewriteAppHTTPProbers"].as_str(),
            Some("false"),
            "{name}: the kubelet probes the admin port itself"
        );
        let sa = template["spec"]["serviceAccountName"].as_str().unwrap();
        assert!(
            accounts.contains(&sa),
            "{name}: service account {sa} exists"
        );
        let labels = &template["metadata"]["labels"];
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(&labels[k], v, "{name}: the selector selects the pods");
        }
        assert!(labels["app"].as_str().is_some() && labels["version"].as_str().is_some());

        let container = &template["spec"]["containers"][0];
        // A fixed tag that kind can load, never pulled when present.
        let image = container["image"].as_str().unwrap();
        let app = name.trim_end_matches("-v1").trim_end_matches("-v2");
        assert_eq!(
            image,
            format!("rust-mesh/{app}:{}", env!("CARGO_PKG_VERSION")),
            "{name}: image"
        );
        assert_eq!(
            container["imagePullPolicy"].as_str(),
            Some("IfNotPresent"),
            "{name}"
        );

        let args = strs(&container["args"]);
        let listen: SocketAddr = flag(&args, "--listen").parse().unwrap();
        assert_eq!(
            container["ports"][0]["containerPort"].as_u64(),
            Some(u64::from(listen.port())),
            "{name}: the container port is the one it listens on"
        );
        // A Service selects these pods on that port.
        let service = services
            .iter()
            .find(|s| s["spec"]["selector"]["app"] == labels["app"])
            .unwrap_or_else(|| panic!("{name}: no Service selects it"));
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_u64(),
            Some(u64::from(listen.port()))
        );

        // The admin server: on the pod's address (the kubelet probes the pod IP), on a port
        // that is not a Service port (so istiod builds no inbound listener, and no
        // PeerAuthentication applies, for it).
        let admin: SocketAddr = flag(&args, "--admin").parse().unwrap();
        assert!(
            admin.ip().is_unspecified(),
            "{name}: --admin {admin} is reachable by the kubelet"
        );
        assert_ne!(admin.port(), listen.port(), "{name}");
        assert!(
            !service_ports.contains(&u64::from(admin.port())),
            "{name}: the admin port is no Service port"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(
                resolve_port(container, &get["port"]),
                u64::from(admin.port()),
                "{name}: {probe} goes to the admin port"
            );
            let path = get["path"].as_str().unwrap();
            let answer = admin_server.handle(&http::Method::GET, path);
            assert_eq!(answer.status(), 200, "{name}: {probe} path {path}");
        }

        if name == "order-service" {
            assert_eq!(
                flag(&args, "--payment-target"),
                "xds:///payment-service.default.svc.cluster.local:8080"
            );
        }
        if name.starts_with("payment-service-") {
            assert_eq!(Some(flag(&args, "--version")), labels["version"].as_str());
            assert_eq!(
                labels["security.istio.io/tlsMode"].as_str(),
                Some("istio"),
                "{name}: serves Istio mTLS"
            );
        }
    }

    // istiod's proxyless generator turns client mTLS on only for an explicit ISTIO_MUTUAL,
    // and a subset's own `tls` would replace the top-level one.
    let dr = docs.iter().find(|d| kind(d) == "DestinationRule").unwrap();
    assert_eq!(
        dr["spec"]["trafficPolicy"]["tls"]["mode"].as_str(),
        Some("ISTIO_MUTUAL")
    );
    for subset in dr["spec"]["subsets"].as_sequence().unwrap() {
        let tls = &subset["trafficPolicy"]["tls"];
        assert!(
            tls.is_null() || tls["mode"].as_str() == Some("ISTIO_MUTUAL"),
            "subset {:?}: {tls:?}",
            subset["name"]
        );
    }
    // Port-level modes are honoured only with a selector.
    for pa in docs.iter().filter(|d| kind(d) == "PeerAuthentication") {
        if !pa["spec"]["portLevelMtls"].is_null() {
            assert!(
                !pa["spec"]["selector"]["matchLabels"].is_null(),
                "{:?}",
                pa["metadata"]["name"]
            );
        }
    }

    // The AuthorizationPolicy's principals are identities that exist.
    let authz = docs
        .iter()
        .find(|d| kind(d) == "AuthorizationPolicy")
        .unwrap();
    for p in strs(&authz["spec"]["rules"][0]["from"][0]["source"]["principals"]) {
        let sa = p.rsplit('/').next().unwrap();
        assert!(accounts.contains(&sa), "principal {p}");
    }
}

#[test]
fn the_readme_builds_and_loads_the_images_the_manifests_run() {
    let readme = std::fs::read_to_string(manifests_dir().join("README.md")).unwrap();
    let dockerfile = std::fs::read_to_string(manifests_dir().join("Dockerfile")).unwrap();
    let mut images: Vec<String> = documents()
        .iter()
        .filter(|d| kind(d) == "Deployment")
        .map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    images.sort();
    images.dedup();

    let words = |line: &str| -> Vec<String> {
        line.split_whitespace()
            .take_while(|w| !w.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let mut built = Vec::new();
    let mut loaded = Vec::new();
    for line in readme.lines() {
        let w = words(line);
        if w.starts_with(&["docker".into(), "build".into()]) {
            built.push(flag(&w, "-t").to_owned());
            let target = flag(&w, "--target");
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "Dockerfile stage {target}"
            );
        }
        if w.starts_with(&["kind".into(), "load".into(), "docker-image".into()]) {
            loaded.extend(w[3..].iter().filter(|a| !a.starts_with('-')).cloned());
        }
    }
    built.sort();
    loaded.sort();
    assert_eq!(built, images, "README: docker build -t");
    assert_eq!(loaded, images, "README: kind load docker-image");

    // The Istio version needed is stated in the README and in both manifests.
    let needs = format!("Istio {MIN_ISTIO} or later");
    assert!(readme.contains(&needs), "README: {needs}");
    for file in MANIFESTS {
        let text = std::fs::read_to_string(manifests_dir().join(file)).unwrap();
        assert!(text.contains(&needs), "{file}: {needs}");
    }
}

#[test]
fn the_kubernetes_objects_pass_kubernetes_validate() {
    let python = PathBuf::from(std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned()));
    let installed = Command::new(&python)
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let _: Option<()> = interop::missing(
            "kubernetes-validate is not installed (pip install kubernetes-validate)",
        );
        return;
    }
    let mut cmd = Command::new(&python);
    cmd.current_dir(manifests_dir())
        .args(["-m", "kubernetes_validate", "--strict"]);
    for v in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd.args(MANIFESTS).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    // It only warns about kinds it has no schema for: those must be Istio's CRDs, not a
    // misspelled Kubernetes kind.
    for line in text.lines().filter(|l| !l.starts_with("INFO ")) {
        assert!(
            line.starts_with("WARN ")
                && line.contains("Couldn't find schema")
                && line.contains(".istio.io/"),
            "kubernetes-validate:\n{text}"
        );
    }
    let kubernetes_objects = documents().iter().filter(|d| !is_istio(d)).count();
    let passed = text
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        kubernetes_objects * KUBERNETES_VERSIONS.len(),
        "every Kubernetes object validated against every version:\n{text}"
    );
}

#[test]
fn the_istio_objects_translate_as_the_control_plane_serves_them() {
    let dir = std::env::temp_dir().join(format!("k8s-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in MANIFESTS {
        std::fs::copy(manifests_dir().join(file), dir.join(file)).unwrap();
    }
    // What Kubernetes would provide once the pods run.
    std::fs::write(
        dir.join("endpoints.yaml"),
        "services:\n  - name: payment-service\n    ports: [{ port: 8080, name: grpc }]\n    serviceAccounts: [payment-service]\n    endpoints:\n      - { address: \"10.0.0.1:8080\", labels: { app: payment-service, version: v1 } }\n      - { address: \"10.0.0.2:8080\", labels: { app: payment-service, version: v2 } }\n  - name: order-service\n    ports: [{ port: 8081, name: http }]\n    serviceAccounts: [order-service]\n    endpoints:\n      - { address: \"10.0.0.3:8081\", labels: { app: order-service, version: v1 } }\n",
    )
    .unwrap();
    let input = control_plane::input::load(std::slice::from_ref(&dir)).unwrap();
    // Deployments, Services and ServiceAccounts are Kubernetes' business, not the mesh's.
    assert_eq!(input.skipped.len(), 7, "{:?}", input.skipped);
    let snap = input.to_snapshot().unwrap();
    let rc = snap
        .outbound("payment-service.default.svc.cluster.local:8080")
        .and_then(|l| l.route_config())
        .expect("the order service's target is served");
    let mut beta = http::HeaderMap::new();
    beta.insert("end-user", http::HeaderValue::from_static("beta-tester"));
    let (_, route) = rc
        .route_for(
            "payment-service:8080",
            "/payment.v1.PaymentService/Authorize",
            &beta,
            0,
        )
        .unwrap();
    let mesh_core::route::RouteAction::Forward(f) = route.action() else {
        panic!("forward expected");
    };
    assert_eq!(
        f.cluster_names().collect::<Vec<_>>(),
        ["outbound|8080|v2|payment-service.default.svc.cluster.local"]
    );

    // Every payment-service cluster (subsets included) is mutual TLS to the
    // payment-service identity: ISTIO_MUTUAL, not auto-mTLS (this input has no
    // certificates, so auto-mTLS is off).
    let payment: Vec<_> = snap
        .clusters()
        .filter(|c| {
            c.name()
                .ends_with("|payment-service.default.svc.cluster.local")
        })
        .collect();
    assert!(payment.len() >= 2, "{payment:?}");
    for c in payment {
        let tls = c
            .tls
            .as_ref()
            .unwrap_or_else(|| panic!("{}: plaintext", c.name()));
        assert!(
            tls.accepted_sans
                .iter()
                .any(|m| m.matches("spiffe://cluster.local/ns/default/sa/payment-service")),
            "{}: {tls:?}",
            c.name()
        );
    }

    // Inbound: the payment servers take mutual TLS only; the order service's HTTP port,
    // the example's entry point, plaintext.
    let resources = input.to_resources().unwrap();
    let inbound = |addr: &str| {
        let name = format!("{}{addr}", control_plane::envoy::inbound::INBOUND_PREFIX);
        let any = &resources.by_type[&XdsType::Listener][&name];
        let l = Listener::decode(any.value.as_slice()).unwrap();
        l.filter_chains
            .iter()
            .map(|c| c.transport_socket.is_some())
            .collect::<Vec<bool>>()
    };
    assert_eq!(inbound("10.0.0.1:8080"), [true], "payment v1: STRICT");
    assert_eq!(inbound("10.0.0.2:8080"), [true], "payment v2: STRICT");
    assert_eq!(
        inbound("10.0.0.3:8081"),
        [false],
        "order-service:8081: DISABLE"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
