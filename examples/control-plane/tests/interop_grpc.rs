//! gRPC's own C-core xDS client (Python `grpcio`) resolves `xds:///payment-service:8080`
//! through the control plane and calls payment-service v1 and v2 (in this process,
//! plaintext: PeerAuthentication DISABLE) split 80/20 by a VirtualService; it ACKs every
//! resource type and NACKs nothing.
//!
//! Skipped (with a message) when python3 or grpcio is missing, unless `MESH_INTEROP` is
//! set, as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod interop;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use example_common::BackgroundServer;
use mesh_xds_client::resource::XdsType;
use payment_service::{Config, PaymentVersion};

/// Calls the script makes; with p = 0.2 the v2 count's standard deviation is ~5.7.
const CALLS: u32 = 200;
const V2_PERCENT: u32 = 20;
/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(60);
const NODE_ID: &str = "sidecar~127.0.0.1~grpcio-interop.default~default.svc.cluster.local";

fn policy(v1: SocketAddr, v2: SocketAddr) -> String {
    let v1_percent = 100 - V2_PERCENT;
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
      http: {{ http2MaxRequests: 100 }}
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
  mtls: {{ mode: DISABLE }}
"#
    )
}

fn bootstrap(ads: SocketAddr) -> String {
    format!(
        r#"{{
  "xds_servers": [{{ "server_uri": "{ads}", "channel_creds": [{{ "type": "insecure" }}],
                    "server_features": ["xds_v3"] }}],
  "node": {{ "id": "{NODE_ID}", "cluster": "grpcio-interop", "locality": {{}},
            "metadata": {{ "GENERATOR": "grpc" }} }}
}}"#
    )
}

async fn payment(version: PaymentVersion) -> BackgroundServer<payment_service::Error> {
    let config = Config::default().with_version(version);
    BackgroundServer::start(|listener, stop| payment_service::run(config, listener, stop))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_resolves_and_splits_through_the_control_plane() {
    let Some(python) = interop::python_with_grpcio() else {
        return;
    };
    let v1 = payment(PaymentVersion::V1).await;
    let v2 = payment(PaymentVersion::V2).await;
    let dir = interop::temp_dir("grpc");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("payment.yaml"), policy(v1.addr(), v2.addr())).unwrap();
    let cp = interop::control_plane(&config).await;
    let bootstrap_path = dir.join("bootstrap.json");
    std::fs::write(&bootstrap_path, bootstrap(cp.addr().unwrap())).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_client.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .arg("xds:///payment-service:8080")
        .arg(CALLS.to_string())
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
