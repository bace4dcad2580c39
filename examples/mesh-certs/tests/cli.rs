//! Runs the binary and loads what it wrote as a real workload would.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use mesh_tower::identity::{CertificateSource, FileWatcherConfig};

#[test]
fn issues_loadable_svids_in_istio_layout() {
    let out = std::env::temp_dir().join(format!("mesh-certs-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_mesh-certs"))
        .args([
            "--out",
            out.to_str().unwrap(),
            "--svid",
            "default/order-service",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let dir = out.join("order-service");
    let source = CertificateSource::from_pem_files(
        &dir.join("cert-chain.pem"),
        &dir.join("key.pem"),
        &dir.join("root-cert.pem"),
    )
    .unwrap();
    assert_eq!(
        source.identity().spiffe_id().to_string(),
        "spiffe://cluster.local/ns/default/sa/order-service"
    );
    let _ = FileWatcherConfig::istio(&dir);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_svid_argument_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-certs"))
        .args(["--out", "/tmp/unused-mesh-certs", "--svid", "no-slash"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAMESPACE/SERVICE_ACCOUNT"), "{err}");
}
