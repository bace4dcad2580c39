//! WebSocket (an HTTP/1.1 upgrade) through the mesh, on 127.0.0.1: an axum WebSocket
//! handler behind the mesh's inbound stack, reached by tungstenite's own client (an
//! independent implementation of RFC 6455) and by the mesh's HTTP client, whose upgraded
//! connection then carries tungstenite's frames. While that connection stays upgraded, the
//! mesh client's other requests to the same endpoint are not held back by its pool. The
//! same over mutual TLS, to a STRICT listener.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_core::inbound::TlsMode;
use mesh_tower::Mesh;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceExt;

/// A deadline for a hung test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// Echoes every text message back, prefixed.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let AxumMessage::Text(text) = msg {
            let reply = AxumMessage::Text(format!("echo: {}", text.as_str()).into());
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    }
}

fn app() -> Router {
    Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .route("/hello", get(|| async { "hello" }))
}

async fn serve(mesh: &Mesh) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = mesh.clone();
    tokio::spawn(async move {
        server
            .serve(listener, app(), std::future::pending())
            .await
            .unwrap();
    });
    addr
}

async fn round_trip<S>(ws: &mut WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("no reply in time")
        .expect("the socket closed")
        .unwrap();
    reply.into_text().unwrap().as_str().to_owned()
}

#[tokio::test]
async fn a_websocket_client_talks_to_a_handler_behind_the_mesh() {
    let mesh = Mesh::builder().build().unwrap();
    let addr = serve(&mesh).await;
    let (mut ws, resp) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("no handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(round_trip(&mut ws, "one").await, "echo: one");
    assert_eq!(round_trip(&mut ws, "two").await, "echo: two");
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn the_mesh_client_upgrades_and_keeps_serving_the_endpoint_meanwhile() {
    let mesh = Mesh::builder().build().unwrap();
    let addr = serve(&mesh).await;
    let client = mesh.http_client::<Empty<Bytes>>();

    let upgrade = Request::get(format!("http://{addr}/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::new())
        .unwrap();
    let resp = client.clone().oneshot(upgrade).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = tokio::time::timeout(PATIENCE, hyper::upgrade::on(resp))
        .await
        .expect("no upgrade in time")
        .expect("upgraded");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    assert_eq!(round_trip(&mut ws, "one").await, "echo: one");

    // The upgraded connection left the pool but is still open: a plain request to the
    // same endpoint needs (and gets) a connection of its own.
    let hello = client
        .clone()
        .oneshot(
            Request::get(format!("http://{addr}/hello"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(hello.status(), StatusCode::OK, "{:?}", hello.headers());
    let body = hello.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");

    assert_eq!(round_trip(&mut ws, "two").await, "echo: two");
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_websocket_client_over_mutual_tls_talks_to_a_handler_behind_a_strict_listener() {
    let certs = common::mesh();
    let server = common::start(
        common::policy(TlsMode::Strict),
        Some(certs.payment.clone()),
        app(),
    )
    .await;
    let config = common::client_tls(&certs.payment, Some(&certs.order));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("payment.default.svc.cluster.local").unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut ws, resp) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::client_async("ws://payment/ws", tls),
    )
    .await
    .expect("no handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(round_trip(&mut ws, "over tls").await, "echo: over tls");
    ws.close(None).await.unwrap();
}
