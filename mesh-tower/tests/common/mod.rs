//! Fixtures shared by the TLS tests: a CA with the example services' SVIDs, a server on
//! 127.0.0.1:0, and an HTTP/1.1 client over plaintext or TLS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::live::LivePolicy;
use mesh_core::snapshot::Snapshot;
use mesh_tower::identity::testing::TestCa;
use mesh_tower::identity::{client_config, CertificateSource};
use mesh_tower::inbound::{MeshListener, PeerIdentity};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const ORDER: &str = "spiffe://cluster.local/ns/default/sa/order-service";
pub const PAYMENT: &str = "spiffe://cluster.local/ns/default/sa/payment-service";
pub const OTHER: &str = "spiffe://cluster.local/ns/default/sa/other-service";

/// A CA and sources for the payment service (server), order and other service (clients).
pub struct Mesh {
    pub ca: TestCa,
    pub payment: CertificateSource,
    pub order: CertificateSource,
    pub other: CertificateSource,
}

pub fn mesh() -> Mesh {
    let ca = TestCa::new().unwrap();
    let source = |sa: &str| {
        CertificateSource::in_memory(
            ca.svid("default", sa).unwrap().identity().unwrap(),
            ca.bundle().unwrap(),
        )
    };
    Mesh {
        payment: source("payment-service"),
        order: source("order-service"),
        other: source("other-service"),
        ca,
    }
}

pub fn policy(mode: TlsMode) -> LivePolicy {
    LivePolicy::new(
        Snapshot::builder()
            .inbound_default(Some(InboundPolicy::new(mode)))
            .build(),
    )
}

/// `/whoami` answers the peer's SPIFFE ID (or `none`) and `tls`/`plain`;
/// `/api/v1/payments/{id}` answers `paid`.
pub fn app() -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|Extension(peer): Extension<PeerIdentity>| async move {
                let id = peer.spiffe_id.map(|id| id.to_string());
                format!(
                    "{} {}",
                    id.as_deref().unwrap_or("none"),
                    if peer.tls { "tls" } else { "plain" }
                )
            }),
        )
        .route(
            "/api/v1/payments/{id}",
            get(|| async { "paid" }).post(|| async { "paid" }),
        )
}

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start<S, B>(policy: LivePolicy, tls: Option<CertificateSource>, service: S) -> Server
where
    S: mesh_tower::inbound::HttpService<B>,
    B: mesh_tower::inbound::ResponseBody,
{
    start_with(policy, tls, service, |l| l).await
}

/// [`start`] with the listener adjusted by `configure` (metrics, limits).
#[allow(dead_code)] // not every test binary uses it
pub async fn start_with<S, B>(
    policy: LivePolicy,
    tls: Option<CertificateSource>,
    service: S,
    configure: impl FnOnce(MeshListener) -> MeshListener,
) -> Server
where
    S: mesh_tower::inbound::HttpService<B>,
    B: mesh_tower::inbound::ResponseBody,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        configure(MeshListener::new(listener, policy, tls)).serve(service, async move {
            let _ = stopped.await;
        }),
    );
    Server {
        addr,
        stop: Some(stop),
    }
}

/// A client config verifying the server against `roots` (any SPIFFE ID of its trust
/// domain), presenting `identity`'s SVID if given.
pub fn client_tls(
    roots: &CertificateSource,
    identity: Option<&CertificateSource>,
) -> Arc<ClientConfig> {
    let mut config = (*client_config(roots, identity, Vec::new()).unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 connection.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    /// This end's address.
    pub local: SocketAddr,
    /// The serial of the server's leaf certificate (TLS only).
    pub server_serial: Option<String>,
}

pub async fn connect(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Result<Conn, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let (send, server_serial) = match tls {
        None => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            (send, None)
        }
        Some(config) => {
            let name = ServerName::try_from("payment.default.svc.cluster.local")?;
            let stream = TlsConnector::from(config).connect(name, tcp).await?;
            let serial = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| serial_of(leaf));
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            (send, serial)
        }
    };
    Ok(Conn {
        send,
        local,
        server_serial,
    })
}

pub fn serial_of(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Conn {
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> Result<http::Response<String>, BoxError> {
        self.send.ready().await?;
        let response = self.send.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(http::Response::from_parts(
            parts,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, String), BoxError> {
        let req = Request::get(path)
            .header("host", "payment")
            .body(Empty::new())?;
        let r = self.send(req).await?;
        Ok((r.status(), r.into_body()))
    }
}

/// Connects and GETs `path` on a fresh connection.
pub async fn get_once(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    path: &str,
) -> Result<(StatusCode, String), BoxError> {
    connect(addr, tls).await?.get(path).await
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-tower-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
