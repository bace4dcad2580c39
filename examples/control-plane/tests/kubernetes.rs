//! The Kubernetes manifests in `examples/kubernetes/` can't run here; this keeps them valid:
//! every document parses, the fields the services rely on are there and agree with each
//! other, and the Istio objects go through the same translation the control plane serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kubernetes")
}

fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for file in ["workloads.yaml", "istio.yaml"] {
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

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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

    let deployments: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let template = &d["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["inject.istio.io/templates"].as_str(),
            Some("grpc-agent"),
            "{name}: proxyless injection"
        );
        let sa = template["spec"]["serviceAccountName"].as_str().unwrap();
        assert!(
            accounts.contains(&sa),
            "{name}: service account {sa} exists"
        );
        let labels = &template["metadata"]["labels"];
        assert_eq!(
            &d["spec"]["selector"]["matchLabels"], labels,
            "{name}: selector"
        );
        assert!(labels["app"].as_str().is_some() && labels["version"].as_str().is_some());
        let args = strs(&template["spec"]["containers"][0]["args"]);
        let listen = args.iter().position(|a| a == "--listen").expect("--listen");
        let port: u16 = args[listen + 1]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            template["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64(),
            Some(u64::from(port)),
            "{name}: the container port is the one it listens on"
        );
        // A Service selects these pods on that port.
        let service = docs
            .iter()
            .filter(|s| kind(s) == "Service")
            .find(|s| s["spec"]["selector"]["app"] == labels["app"])
            .unwrap_or_else(|| panic!("{name}: no Service selects it"));
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_u64(),
            Some(u64::from(port))
        );
        if name == "order-service" {
            let t = args.iter().position(|a| a == "--payment-target").unwrap();
            assert_eq!(
                args[t + 1],
                "xds:///payment-service.default.svc.cluster.local:8080"
            );
        }
        if name.starts_with("payment-service-") {
            let v = args.iter().position(|a| a == "--version").unwrap();
            assert_eq!(Some(args[v + 1].as_str()), labels["version"].as_str());
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
fn the_istio_objects_translate_as_the_control_plane_serves_them() {
    let dir = std::env::temp_dir().join(format!("k8s-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["workloads.yaml", "istio.yaml"] {
        std::fs::copy(manifests_dir().join(file), dir.join(file)).unwrap();
    }
    // What Kubernetes would provide once the pods run.
    std::fs::write(
        dir.join("endpoints.yaml"),
        "services:\n  - name: payment-service\n    ports: [{ port: 8080, name: grpc }]\n    serviceAccounts: [payment-service]\n    endpoints:\n      - { address: \"10.0.0.1:8080\", labels: { app: payment-service, version: v1 } }\n      - { address: \"10.0.0.2:8080\", labels: { app: payment-service, version: v2 } }\n",
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
    let _ = std::fs::remove_dir_all(&dir);
}
