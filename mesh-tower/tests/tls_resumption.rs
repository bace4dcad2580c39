//! TLS session resumption between mesh services: a second connection from the same client
//! config to a STRICT mesh listener resumes the session (no certificate exchange, no
//! signature: the cost of a full handshake is what bursts of new connections pay), and the
//! resumed connection still carries the caller's verified SPIFFE ID.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_core::inbound::TlsMode;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One connection: how the handshake went, and what `/whoami` says over it.
async fn whoami(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (HandshakeKind, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("payment.default.svc.cluster.local").unwrap();
    let stream = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    // TLS 1.3 tickets arrive after the handshake, with the first bytes the server sends:
    // the request is answered before the next connection is made.
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let request = async move {
        let response = send
            .send_request(
                Request::get("/whoami")
                    .header("host", "payment")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    let (body, parts) = tokio::join!(request, conn.without_shutdown());
    let stream = parts.unwrap().io.into_inner();
    let kind = stream.get_ref().1.handshake_kind().unwrap();
    (kind, body)
}

#[tokio::test]
async fn a_second_connection_resumes_and_keeps_the_peer_identity() {
    let mesh = common::mesh();
    let server = common::start(
        common::policy(TlsMode::Strict),
        Some(mesh.payment.clone()),
        common::app(),
    )
    .await;
    // One config, as one cluster's connector holds one: its session cache is shared.
    let config = common::client_tls(&mesh.payment, Some(&mesh.order));

    let (first, who) = whoami(server.addr, config.clone()).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(who, format!("{} tls", common::ORDER));

    let (second, who) = whoami(server.addr, config.clone()).await;
    assert_eq!(
        second,
        HandshakeKind::Resumed,
        "the session was not resumed"
    );
    assert_eq!(
        who,
        format!("{} tls", common::ORDER),
        "identity lost on resumption"
    );

    // A client with another config (another cache) pays the full handshake.
    let other = common::client_tls(&mesh.payment, Some(&mesh.order));
    let (third, _) = whoami(server.addr, other).await;
    assert_eq!(third, HandshakeKind::Full);
}
