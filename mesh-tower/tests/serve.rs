//! `Mesh::serve` (an axum app behind the whole inbound stack, in one call) and the request
//! builder (`Mesh::get`/`post`: typed errors when the mesh answers itself), on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use mesh_tower::client::ClientError;
use mesh_tower::{Mesh, MeshError};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A policy file: plaintext, and a DENY rule on `/admin` for everyone.
fn policy(name: &str) -> (Dir, PathBuf) {
    let dir = Dir(std::env::temp_dir().join(format!("mesh-serve-{name}-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("policy.yaml");
    std::fs::write(
        &path,
        r#"workload: { name: api, labels: { app: api } }
peerAuthentications:
  - metadata: { name: default, namespace: default }
    spec: { mtls: { mode: DISABLE } }
authorizationPolicies:
  - metadata: { name: no-admin, namespace: default }
    spec:
      action: DENY
      rules:
        - to: [{ operation: { paths: ["/admin"] } }]
"#,
    )
    .unwrap();
    (dir, path)
}

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/admin", get(|| async { "secret" }))
        .route(
            "/echo",
            post(|Json(v): Json<serde_json::Value>| async move { Json(v) }),
        )
        // The trace context the stack made current for the handler.
        .route(
            "/trace",
            get(|| async {
                mesh_tower::trace::current()
                    .map(|c| c.trace_id.to_string())
                    .unwrap_or_default()
            }),
        )
}

async fn serve(mesh: &Mesh) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = mesh.clone();
    let task = tokio::spawn(async move {
        server
            .serve(listener, app(), std::future::pending())
            .await
            .unwrap();
    });
    (addr, task)
}

/// [`serve`] with the policy `name` and these inbound connection settings.
async fn serve_with(
    name: &str,
    config: mesh_tower::inbound::InboundConfig,
) -> (Dir, SocketAddr, tokio::task::JoinHandle<()>) {
    let (dir, path) = policy(name);
    let mesh = Mesh::builder()
        .policy_file(&path)
        .inbound_config(config)
        .build()
        .unwrap();
    let (addr, task) = serve(&mesh).await;
    (dir, addr, task)
}

#[tokio::test]
async fn one_call_serves_an_axum_app_with_the_whole_inbound_stack() {
    let (_dir, path) = policy("stack");
    let mesh = Mesh::builder().policy_file(&path).build().unwrap();
    let (addr, task) = serve(&mesh).await;

    let hello = mesh
        .get(&format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text().await.unwrap(), "hello");

    // Authorization is in the stack: the DENY rule answers 403 before the handler.
    let admin = mesh
        .get(&format!("http://{addr}/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);

    // Trace context: the handler runs with one current, continuing the caller's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let seen = mesh
        .get(&format!("http://{addr}/trace"))
        .header(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, trace_id);

    // JSON both ways.
    let echoed: serde_json::Value = mesh
        .post(&format!("http://{addr}/echo"))
        .json(&serde_json::json!({ "item": "book", "amount_cents": 1200 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["item"], "book");

    // Metrics are in the stack: the inbound side recorded the 403.
    let text = mesh.metrics().render();
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"destination\"")
            && l.contains("response_code=\"403\"")),
        "{text}"
    );
    task.abort();
}

#[tokio::test]
async fn the_request_builder_gives_the_mesh_error_as_a_type() {
    let mesh = Mesh::builder().build().unwrap();
    // Nothing listens there: the mesh answers the call itself.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = mesh
        .get(&format!("http://{addr}/x"))
        .send()
        .await
        .unwrap_err();
    match &err {
        ClientError::Mesh(MeshError::Connect { endpoint, .. }) => {
            assert_eq!(endpoint, &addr.to_string());
        }
        other => panic!("not a connect error: {other:?}"),
    }
    assert_eq!(
        err.mesh_error().unwrap().http_status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A request that cannot be built says so.
    let bad = mesh.get("http://bad host/").send().await.unwrap_err();
    assert!(matches!(bad, ClientError::InvalidRequest(_)), "{bad:?}");
}

#[test]
fn a_mesh_with_defaults_is_named_after_its_executable_not_unknown() {
    if std::env::var_os("ISTIO_META_WORKLOAD_NAME").is_some()
        || std::env::var_os("OTEL_SERVICE_NAME").is_some()
    {
        return; // the environment names the workload; covered by the labels' own tests
    }
    let exe = std::env::current_exe().unwrap();
    let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let mesh = mesh_tower::Mesh::with_defaults();
    let local = mesh.metrics().local();
    assert_eq!(local.workload, stem);
    assert_ne!(local.workload, "unknown");
}

/// A zero header-read timeout is none, as Envoy's `request_headers_timeout`: an HTTP/1.1
/// keep-alive connection that pauses between requests is not closed at once (it was,
/// one millisecond after each response, when zero was taken as a limit).
#[tokio::test]
async fn a_zero_header_read_timeout_keeps_a_pausing_keep_alive_connection() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    let config = mesh_tower::inbound::InboundConfig::default()
        .with_header_read_timeout(std::time::Duration::ZERO);
    let (_dir, addr, task) = serve_with("zero-timeout", config).await;

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for pause_ms in [0, 50, 200] {
        // Time for the connection's idle check to run (it did within 1 ms).
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        send.ready().await.unwrap();
        let req = http::Request::get(format!("http://{addr}/hello"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("after a {pause_ms} ms pause: {e}"));
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    assert!(!conn.is_finished(), "the connection is still open");
    task.abort();
}

/// HTTP/2 keepalive, when turned on (it is off by default, as in Envoy), pings a peer and
/// closes the connection of one that never answers: here a raw HTTP/2 client that sends
/// its preface and settings, then only reads.
#[tokio::test]
async fn an_http2_peer_that_never_answers_keepalive_pings_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = mesh_tower::inbound::InboundConfig::default().with_http2_keep_alive(
        Some(std::time::Duration::from_millis(50)),
        std::time::Duration::from_millis(100),
    );
    let (_dir, addr, task) = serve_with("keepalive", config).await;

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The client preface and an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let frames = async {
        let mut pings = 0;
        let mut head = [0u8; 9];
        loop {
            if tcp.read_exact(&mut head).await.is_err() {
                return pings; // closed
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                return pings;
            }
            // A PING (type 6) that is not an answer (ACK flag 0x1).
            if head[3] == 6 && head[4] & 1 == 0 {
                pings += 1;
            }
        }
    };
    let pings = tokio::time::timeout(std::time::Duration::from_secs(20), frames)
        .await
        .expect("the server closes a connection whose pings go unanswered");
    assert!(
        pings >= 1,
        "the server pinged before it closed ({pings} pings)"
    );
    task.abort();
}
