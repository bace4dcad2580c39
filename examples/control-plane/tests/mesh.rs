//! A mesh built from a bootstrap file that points at the control plane routes real HTTP
//! requests by the Istio YAML the control plane reads, and follows edits of it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use control_plane::{Config, ControlPlane};
use http::Request;
use http_body_util::{BodyExt, Full};
use mesh_tower::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Service, ServiceExt};

/// A minimal HTTP/1.1 server answering every request with `x-backend: NAME`.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: {}\r\n\r\n{name}",
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

fn policy(v1: SocketAddr, v2: SocketAddr, w1: u32, w2: u32) -> String {
    format!(
        r#"namespace: default
services:
  - name: reviews
    ports: [{{ port: 9080, name: http }}]
    endpoints:
      - {{ address: "{v1}", labels: {{ version: v1 }} }}
      - {{ address: "{v2}", labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: reviews-route }}
spec:
  hosts: [reviews]
  http:
    - match:
        - headers: {{ end-user: {{ exact: beta-tester }} }}
      route:
        - destination: {{ host: reviews, subset: v2 }}
    - route:
        - destination: {{ host: reviews, subset: v1 }}
          weight: {w1}
        - destination: {{ host: reviews, subset: v2 }}
          weight: {w2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: reviews-destination }}
spec:
  host: reviews
  subsets:
    - {{ name: v1, labels: {{ version: v1 }} }}
    - {{ name: v2, labels: {{ version: v2 }} }}
"#
    )
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn bootstrap(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let addr = cp.addr().unwrap();
    let json = format!(
        r#"{{
  "xds_servers": [{{ "server_uri": "{addr}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"] }}],
  "node": {{ "id": "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", "metadata": {{ "GENERATOR": "grpc" }} }}
}}"#
    );
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, json).unwrap();
    path
}

async fn get<S>(client: &mut S, beta: bool) -> String
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<mesh_tower::outbound::ResponseBody>>,
    S::Error: std::fmt::Debug,
{
    let mut req = Request::get("http://reviews:9080/reviews/1");
    if beta {
        req = req.header("end-user", "beta-tester");
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    let backend = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = resp.into_body().collect().await;
    backend
}

#[tokio::test]
async fn mesh_routes_requests_by_the_yaml_and_follows_edits() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let dir = std::env::temp_dir().join(format!("control-plane-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reviews.yaml");
    write(&file, &policy(v1, v2, 100, 0));
    let cp = ControlPlane::start(Config {
        paths: vec![file.clone()],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(20),
    })
    .await
    .unwrap();

    let mesh = Mesh::builder()
        .bootstrap(bootstrap(&cp, &dir))
        .build()
        .unwrap();
    let mut client = mesh.http_client();
    // The first call waits for the target's policy from the control plane.
    for _ in 0..20 {
        assert_eq!(get(&mut client, false).await, "v1");
    }
    assert_eq!(get(&mut client, true).await, "v2");

    // Shift everything to v2 by editing the VirtualService: requests follow.
    write(&file, &policy(v1, v2, 0, 100));
    let mut moved = false;
    for _ in 0..2000 {
        if get(&mut client, false).await == "v2" {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(moved, "the edit never reached the mesh");
    for _ in 0..20 {
        assert_eq!(get(&mut client, false).await, "v2");
    }
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
