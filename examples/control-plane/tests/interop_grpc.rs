//! gRPC's own C-core xDS client (Python `grpcio`) resolves `xds:///payment-service:8080`
//! through the control plane and calls payment-service v1 and v2 (in this process) split
//! 80/20 by a VirtualService; it ACKs every resource type and NACKs nothing. Once in
//! plaintext (PeerAuthentication DISABLE, and a DestinationRule `tls: { mode: DISABLE }`,
//! since the control plane's auto mTLS is on by default), once under STRICT mTLS: the
//! clusters' TLS from xDS (auto mTLS: ISTIO_MUTUAL for a service with a service account),
//! with SVIDs issued in the test and handed to grpcio through the bootstrap's
//! `file_watcher` certificate provider, as the Istio agent does.
//!
//! Skipped (with a message) when python3 or grpcio is missing, unless `MESH_INTEROP` is
//! set, as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod interop;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use example_common::{BackgroundServer, MeshArgs};
use mesh_tower::identity::testing::TestCa;
use mesh_xds_client::resource::XdsType;
use payment_service::{Config, PaymentVersion};

/// Calls the script makes; with p = 0.2 the v2 count's standard deviation is ~5.7.
const CALLS: u32 = 200;
const V2_PERCENT: u32 = 20;
/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(60);
const NODE_ID: &str = "sidecar~127.0.0.1~grpcio-interop.default~default.svc.cluster.local";

/// The control plane's input; `mode` is the PeerAuthentication mode. Under STRICT the
/// clients' ISTIO_MUTUAL comes from the control plane's auto mTLS (on by default, as in
/// Istio: the service has a service account); in plaintext the DestinationRule turns
/// client TLS off explicitly (`tls: { mode: DISABLE }`), as it must with auto mTLS on.
fn policy(v1: SocketAddr, v2: SocketAddr, mode: &str) -> String {
    let v1_percent = 100 - V2_PERCENT;
    let tls = if mode == "STRICT" {
        ""
    } else {
        "\n    tls: { mode: DISABLE }"
    };
    format!(
        r#"namespace: default
services:
  - name: payment-service
    ports: [{{ port: 8080, name: grpc }}]
    serviceAccounts: [payment-service]
    endpoints:
      - {{ address: "{v1}", labels: {{ app: payment-service, version: v1 }} }}
      - {{ address: "{v2}", labels: {{ app: payment-service, version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: payment-service, namespace: default }}
spec:
  hosts: [payment-service]
  http:
    - route:
        - destination: {{ host: payment-service, subset: v1 }}
          weight: {v1_percent}
        - destination: {{ host: payment-service, subset: v2 }}
          weight: {V2_PERCENT}
      timeout: 5s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: payment-service, namespace: default }}
spec:
  host: payment-service
  trafficPolicy:
    connectionPool:
      http: {{ http2MaxRequests: 100 }}{tls}
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
  subsets:
    - {{ name: v1, labels: {{ version: v1 }} }}
    - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: default }}
spec:
  mtls: {{ mode: {mode} }}
"#
    )
}

/// The gRPC bootstrap; with `certs`, the Istio agent's `default` file_watcher provider.
fn bootstrap(ads: SocketAddr, certs: Option<&Path>) -> String {
    let providers = certs.map_or(String::new(), |dir| {
        let d = dir.display();
        format!(
            r#""certificate_providers": {{ "default": {{ "plugin_name": "file_watcher", "config": {{
      "certificate_file": "{d}/cert-chain.pem", "private_key_file": "{d}/key.pem",
      "ca_certificate_file": "{d}/root-cert.pem", "refresh_interval": "600s" }} }} }},"#
        )
    });
    format!(
        r#"{{
  {providers}
  "xds_servers": [{{ "server_uri": "{ads}", "channel_creds": [{{ "type": "insecure" }}],
                    "server_features": ["xds_v3"] }}],
  "node": {{ "id": "{NODE_ID}", "cluster": "grpcio-interop", "locality": {{}},
            "metadata": {{ "GENERATOR": "grpc" }} }}
}}"#
    )
}

/// A payment-service replica; with `policy`, its mesh (certificates, STRICT) from that file.
/// The payment replicas' own mesh policy: their SVID files, STRICT mTLS.
fn server_mesh(certs: &Path) -> String {
    let d = certs.display();
    format!(
        r#"certificates:
  certificateFile: {d}/cert-chain.pem
  privateKeyFile: {d}/key.pem
  caCertificateFile: {d}/root-cert.pem
workload:
  name: payment-service
  serviceAccount: payment-service
  labels: {{ app: payment-service }}
peerAuthentications:
  - metadata: {{ name: default, namespace: default }}
    spec:
      mtls: {{ mode: STRICT }}
"#
    )
}

async fn payment(
    version: PaymentVersion,
    policy: Option<&Path>,
) -> BackgroundServer<payment_service::Error> {
    let mut mesh = MeshArgs::default();
    mesh.policy = policy.map(Path::to_path_buf);
    let config = Config::default().with_version(version).with_mesh(mesh);
    BackgroundServer::start(|listener, stop| payment_service::run(config, listener, stop))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_resolves_and_splits_through_the_control_plane() {
    split_through_the_control_plane(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_calls_over_mtls_from_xds_with_file_watcher_certificates() {
    split_through_the_control_plane(true).await;
}

async fn split_through_the_control_plane(mtls: bool) {
    let Some(python) = interop::python_with_grpcio() else {
        return;
    };
    let dir = interop::temp_dir(if mtls { "grpc-mtls" } else { "grpc" });
    // Under mTLS: a CA, the servers' SVID (payment-service) and the client's (order-service)
    // in Istio's file layout, and the servers' mesh policy: STRICT, no authorization.
    let (server_policy, client_certs) = if mtls {
        let ca = TestCa::new().unwrap();
        let (server, client) = (dir.join("payment-certs"), dir.join("client-certs"));
        ca.svid("default", "payment-service")
            .unwrap()
            .write_istio_files(&server, &ca)
            .unwrap();
        ca.svid("default", "order-service")
            .unwrap()
            .write_istio_files(&client, &ca)
            .unwrap();
        let file = dir.join("payment-mesh.yaml");
        std::fs::write(&file, server_mesh(&server)).unwrap();
        (Some(file), Some(client))
    } else {
        (None, None)
    };
    let v1 = payment(PaymentVersion::V1, server_policy.as_deref()).await;
    let v2 = payment(PaymentVersion::V2, server_policy.as_deref()).await;
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let mode = if mtls { "STRICT" } else { "DISABLE" };
    std::fs::write(
        config.join("payment.yaml"),
        policy(v1.addr(), v2.addr(), mode),
    )
    .unwrap();
    let cp = interop::control_plane(&config).await;
    let bootstrap_path = dir.join("bootstrap.json");
    let json = bootstrap(cp.addr().unwrap(), client_certs.as_deref());
    std::fs::write(&bootstrap_path, json).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_client.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg("xds:///payment-service:8080")
        .arg(CALLS.to_string());
    if mtls {
        command.arg("xds-creds");
    }
    let child = command
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("the grpcio client hung")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "grpcio client failed:\n{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{stderr}", output.stdout));
    println!("grpcio: {result}");
    assert_eq!(result["errors"], 0, "{result}");
    let count = |v: &str| u32::try_from(result["counts"][v].as_u64().unwrap_or(0)).unwrap();
    let (n1, n2) = (count("v1"), count("v2"));
    assert_eq!(n1 + n2, CALLS, "{result}");
    // Binomial(200, 0.2): mean 40, sd 5.66; +-5 sd (a false failure about once in 3.5
    // million runs) still tells 80/20 from 50/50 or 100/0.
    let mean = f64::from(CALLS * V2_PERCENT) / 100.0;
    let sd = (f64::from(CALLS) * 0.2 * 0.8).sqrt();
    assert!(
        (f64::from(n2) - mean).abs() <= 5.0 * sd,
        "v2 got {n2} of {CALLS}, expected about {mean}: {result}"
    );

    // The C-core client ACKed every type and NACKed nothing.
    let requests = cp.servers()[0].requests();
    let streams: Vec<u64> = requests
        .iter()
        .filter(|r| r.request.node.as_ref().is_some_and(|n| n.id == NODE_ID))
        .map(|r| r.stream)
        .collect();
    assert!(!streams.is_empty(), "no stream from the grpcio client");
    let ours: Vec<_> = requests
        .iter()
        .filter(|r| streams.contains(&r.stream))
        .collect();
    let nacks: Vec<_> = ours.iter().filter(|r| r.is_nack()).collect();
    assert!(nacks.is_empty(), "grpcio NACKed: {nacks:#?}");
    for t in XdsType::ALL {
        assert!(
            ours.iter()
                .any(|r| r.xds_type() == Some(t) && r.is_reply() && !r.is_nack()),
            "no {t:?} ACK from grpcio"
        );
    }
    drop(cp);
    v1.stop().await.unwrap();
    v2.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
