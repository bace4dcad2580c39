//! The dev control plane serves both of istiod's shapes from one Istio YAML: a mesh with
//! `MESH_ISTIO_SHAPE=sidecar` gets the sidecar shape (wildcard listeners `0.0.0.0_PORT` and
//! `virtualInbound`, routes by port, clusters with every DestinationRule setting) and
//! enforces the DestinationRule's `http2MaxRequests` (breaker rejects) and
//! `consecutive5xxErrors` (the failing replica ejected), while a proxyless mesh on the same
//! control plane keeps getting the proxyless shape.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control_plane::{Config, ControlPlane};
use mesh_tower::client::ClientError;
use mesh_tower::error::MeshError;
use mesh_tower::{IstioShape, Mesh};
use mesh_xds_client::ads::ResourceState;
use mesh_xds_client::resource::XdsType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 server answering every request with `status` and `x-backend: NAME`; with a
/// gate, each request first waits for a permit (so a test can hold requests in flight).
async fn backend(name: &'static str, status: u16, gate: Option<Arc<Semaphore>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if let Some(gate) = &gate {
                            if let Ok(permit) = gate.acquire().await {
                                permit.forget();
                            }
                        }
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nx-backend: {name}\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn policy(good: SocketAddr, bad: SocketAddr, slow: SocketAddr) -> String {
    format!(
        r#"namespace: default
autoMtls: false
services:
  - name: reviews
    ports: [{{ port: 9080, name: http }}]
    endpoints:
      - {{ address: "{good}", labels: {{ version: v1 }} }}
      - {{ address: "{bad}", labels: {{ version: v1 }} }}
  - name: ratings
    ports: [{{ port: 9090, name: http }}]
    endpoints:
      - {{ address: "{slow}", labels: {{ version: v1 }} }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: reviews }}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 300s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: ratings }}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      http:
        http2MaxRequests: 1
        http1MaxPendingRequests: 1
"#
    )
}

fn bootstrap(cp: &ControlPlane, dir: &Path, name: &str) -> PathBuf {
    let addr = cp.addr().unwrap();
    // The node as the Istio agent writes it for a proxyless pod: GENERATOR grpc. The
    // sidecar shape announces it without.
    let json = format!(
        r#"{{
  "xds_servers": [{{ "server_uri": "{addr}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"] }}],
  "node": {{ "id": "sidecar~127.0.0.1~{name}.default~default.svc.cluster.local", "metadata": {{ "GENERATOR": "grpc", "NAMESPACE": "default" }} }}
}}"#
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json).unwrap();
    path
}

async fn backend_of(mesh: &Mesh, uri: &str) -> Result<String, ClientError> {
    let resp = mesh.get(uri).send().await?;
    let name = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(format!("{} {name}", resp.status().as_u16()))
}

#[tokio::test]
async fn sidecar_shape_from_the_dev_control_plane_enforces_connection_pool_and_outlier_detection() {
    let good = backend("good", 200, None).await;
    let bad = backend("bad", 500, None).await;
    let gate = Arc::new(Semaphore::new(0));
    let slow = backend("slow", 200, Some(Arc::clone(&gate))).await;
    let dir = std::env::temp_dir().join(format!("control-plane-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy(good, bad, slow)).unwrap();
    let cp = ControlPlane::start(Config {
        paths: vec![file],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(50),
    })
    .await
    .unwrap();

    let mesh = Mesh::builder()
        .bootstrap(bootstrap(&cp, &dir, "productpage"))
        .istio_shape(IstioShape::Sidecar)
        .build()
        .unwrap();

    // Outlier detection: round robin over good and bad until bad has failed once; from
    // then on only good answers (bad is ejected for 300 s). Without ejection, round robin
    // would send every other request to bad.
    let mut statuses = Vec::new();
    let mut failed = false;
    for _ in 0..200 {
        let got = backend_of(&mesh, "http://reviews:9080/").await.unwrap();
        failed |= got == "500 bad";
        statuses.push(got);
        if failed {
            break;
        }
    }
    assert!(failed, "bad never answered: {statuses:?}");
    let mut after = Vec::new();
    for _ in 0..40 {
        after.push(backend_of(&mesh, "http://reviews:9080/").await.unwrap());
    }
    // The ejection takes effect once the detector has run (its interval is 1 s): allow the
    // requests before that, then only good.
    let tail: Vec<&String> = after.iter().rev().take(20).collect();
    let ejected = tail.iter().all(|s| *s == "200 good");
    if !ejected {
        // The detector may not have run yet on a slow machine: give it the interval.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut run = 0;
        while run < 20 && tokio::time::Instant::now() < deadline {
            let got = backend_of(&mesh, "http://reviews:9080/").await.unwrap();
            run = if got == "200 good" { run + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(run, 20, "bad was never ejected: {after:?}");
    }

    // Connection pool: one request in flight to ratings; the next is rejected by the
    // breaker (http2MaxRequests: 1), not queued.
    let first = {
        let mesh = mesh.clone();
        tokio::spawn(async move { backend_of(&mesh, "http://ratings:9090/").await })
    };
    let mut rejected = None;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while rejected.is_none() && tokio::time::Instant::now() < deadline {
        match backend_of(&mesh, "http://ratings:9090/").await {
            Err(ClientError::Mesh(e @ MeshError::CircuitOpen { .. })) => rejected = Some(e),
            // The first request may not be in flight yet (its permit taken): try again.
            Ok(_) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
        if rejected.is_none() {
            gate.add_permits(1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let rejected = rejected.expect("the breaker rejected a second concurrent request");
    assert_eq!(rejected.http_status(), 503);
    gate.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), "200 slow");

    // What the mesh got: the sidecar shape, nothing NACKed.
    let view = mesh.xds_view().expect("xDS");
    for (t, name) in [
        (XdsType::Listener, "0.0.0.0_9080"),
        (XdsType::Listener, "virtualInbound"),
        (XdsType::RouteConfiguration, "9080"),
        (
            XdsType::Cluster,
            "outbound|9080||reviews.default.svc.cluster.local",
        ),
    ] {
        let entry = view
            .cache
            .get(t, name)
            .unwrap_or_else(|| panic!("{t} {name}"));
        assert_eq!(entry.state, ResourceState::Acked, "{t} {name}");
    }
    assert!(
        view.cache.get(XdsType::Listener, "reviews:9080").is_none(),
        "no proxyless listener for a sidecar node"
    );
    let nacked: Vec<String> = view
        .cache
        .iter()
        .filter(|(_, _, e)| e.state == ResourceState::Nacked)
        .map(|(t, n, _)| format!("{t} {n}"))
        .collect();
    assert!(nacked.is_empty(), "{nacked:?}");
    let snap = mesh.policy().snapshot();
    assert_eq!(
        snap.outbound("reviews:9080")
            .map(|l| l.route_config_name().to_owned()),
        Some("9080".to_owned())
    );
    let passthrough = view
        .cache
        .get(XdsType::Cluster, "PassthroughCluster")
        .and_then(|e| e.resource.as_ref())
        .map(|r| r.not_applied())
        .unwrap_or_default();
    assert!(
        passthrough.iter().any(|s| s.contains("ORIGINAL_DST")),
        "{passthrough:?}"
    );

    // A proxyless mesh on the same control plane still gets the proxyless shape.
    let proxyless = Mesh::builder()
        .bootstrap(bootstrap(&cp, &dir, "details"))
        .istio_shape(IstioShape::Proxyless)
        .build()
        .unwrap();
    let got = backend_of(&proxyless, "http://reviews:9080/")
        .await
        .unwrap();
    assert!(matches!(got.as_str(), "200 good" | "500 bad"), "{got}");
    let view = proxyless.xds_view().unwrap();
    assert!(view.cache.get(XdsType::Listener, "reviews:9080").is_some());
    assert!(view.cache.get(XdsType::Listener, "0.0.0.0_9080").is_none());
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
