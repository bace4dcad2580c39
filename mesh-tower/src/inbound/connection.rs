//! One inbound connection: TLS mode, handshake, then HTTP/1.1 or HTTP/2 with the service.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::inbound::TlsMode;
use mesh_core::live::LivePolicy;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use super::{effective_mode, set_nodelay, PeerIdentity};
use crate::body::BoxError;
use crate::identity::{server_config, CertificateSource, ClientAuth};
use crate::metrics::{Metrics, Reporter, SecurityPolicy};
use crate::outbound::IoStream;

/// The services [`MeshListener`](super::MeshListener) can serve: any cloneable tower
/// service from `http::Request<hyper::body::Incoming>` to `http::Response<B>` (axum's
/// `Router` and tonic's `Routes` are).
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The response bodies it can send.
pub trait ResponseBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

/// The two server configs: STRICT demands a client certificate, PERMISSIVE asks for one.
pub(super) struct Acceptors {
    strict: TlsAcceptor,
    permissive: TlsAcceptor,
}

impl Acceptors {
    pub(super) fn new(source: &CertificateSource) -> io::Result<Self> {
        let build = |auth| {
            server_config(source, auth)
                .map(TlsAcceptor::from)
                .map_err(io::Error::other)
        };
        Ok(Self {
            strict: build(ClientAuth::Required)?,
            permissive: build(ClientAuth::Optional)?,
        })
    }
}

/// What every connection task shares.
pub(super) struct Context {
    pub(super) policy: LivePolicy,
    pub(super) acceptors: Option<Arc<Acceptors>>,
    pub(super) handshake_timeout: Duration,
    pub(super) closing: watch::Receiver<bool>,
    pub(super) metrics: Option<Metrics>,
}

/// Why a connection was closed before HTTP.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{mode:?} port but this listener has no certificates")]
    NoCertificates { mode: TlsMode },
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("reading the first byte: {0}")]
    Peek(io::Error),
    #[error("closed before sending anything")]
    Empty,
    #[error("TLS mode {0:?} is not supported")]
    UnknownMode(TlsMode),
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
}

pub(super) async fn handle<S, B>(
    ctx: Arc<Context>,
    stream: TcpStream,
    remote: SocketAddr,
    service: S,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    set_nodelay(&stream);
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::debug!(%error, %remote, "connection gone before it was handled");
            return;
        }
    };
    let mode = effective_mode(&ctx.policy, local, ctx.acceptors.is_some());
    let mut closing = ctx.closing.clone();
    // A connection still in its handshake (or, on a PERMISSIVE port, that has not sent its
    // first byte) holds no request: on shutdown it is dropped rather than waited for.
    let established = tokio::select! {
        result = tokio::time::timeout(
            ctx.handshake_timeout,
            establish(&ctx, stream, mode, remote, local),
        ) => result.unwrap_or(Err(Refused::Timeout(ctx.handshake_timeout))),
        _ = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
            tracing::debug!(%remote, %local, "shutting down: handshake abandoned");
            return;
        }
    };
    let (io, peer) = match established {
        Ok(established) => established,
        Err(error) => {
            tracing::debug!(%error, %remote, %local, ?mode, "inbound connection refused");
            return;
        }
    };
    let counted = ctx.metrics.as_ref().map(|metrics| {
        let principal = peer.spiffe_id.as_ref().map(ToString::to_string);
        let security = if peer.spiffe_id.is_some() {
            SecurityPolicy::MutualTls
        } else {
            SecurityPolicy::None
        };
        metrics.tcp_opened(Reporter::Destination, principal.as_deref(), security);
        (metrics, principal, security)
    });
    serve_http(io, peer, service, ctx.closing.clone()).await;
    if let Some((metrics, principal, security)) = counted {
        metrics.tcp_closed(Reporter::Destination, principal.as_deref(), security);
    }
}

async fn establish(
    ctx: &Context,
    stream: TcpStream,
    mode: TlsMode,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<(Box<dyn IoStream>, PeerIdentity), Refused> {
    let plain = PeerIdentity::plaintext(remote, local);
    let acceptor = match mode {
        TlsMode::Disable => return Ok((Box::new(stream), plain)),
        TlsMode::Strict => match &ctx.acceptors {
            Some(a) => &a.strict,
            None => return Err(Refused::NoCertificates { mode }),
        },
        TlsMode::Permissive => {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) => return Err(Refused::Empty),
                Ok(_) => {}
                Err(e) => return Err(Refused::Peek(e)),
            }
            // 0x16 is a TLS handshake record: a ClientHello. Anything else is plaintext.
            if first[0] != 0x16 {
                return Ok((Box::new(stream), plain));
            }
            match &ctx.acceptors {
                Some(a) => &a.permissive,
                None => return Err(Refused::NoCertificates { mode }),
            }
        }
        other => return Err(Refused::UnknownMode(other)),
    };
    let tls = acceptor.accept(stream).await.map_err(Refused::Handshake)?;
    let conn = tls.get_ref().1;
    let spiffe_id = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::identity::peer_spiffe_id(leaf));
    let peer = PeerIdentity {
        sni: conn.server_name().map(str::to_owned),
        ..plain.with_spiffe_id(spiffe_id)
    };
    Ok((Box::new(tls), peer))
}

/// Puts the connection's [`PeerIdentity`] on each request, then calls the service.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerIdentity,
}

impl<S> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tower::util::Oneshot<S, Request<Incoming>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.clone().oneshot(req)
    }
}

async fn serve_http<S, B>(
    io: Box<dyn IoStream>,
    peer: PeerIdentity,
    service: S,
    mut closing: watch::Receiver<bool>,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let remote = peer.remote_addr;
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(
        TokioIo::new(io),
        WithPeer {
            inner: service,
            peer,
        },
    );
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %remote, "inbound connection ended with an error");
    }
}
