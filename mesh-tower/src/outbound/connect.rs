//! Opening connections to endpoints: TCP with TCP_NODELAY, a connect timeout, the cluster's
//! `max_connections` limit, and TLS when the cluster asks for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use mesh_core::breaker::{BreakerGuard, CircuitBreaker, Overflow};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::metrics::{Metrics, Reporter, SecurityPolicy};

/// A byte stream a TLS implementation hands back.
pub trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> IoStream for T {}

/// What the outbound client needs from TLS: wrap a fresh TCP connection.
pub trait UpstreamTlsConnect: Send + Sync + 'static {
    /// Runs the client handshake on `tcp`. `authority` is the endpoint dialed.
    fn connect(
        &self,
        tcp: TcpStream,
        authority: &str,
    ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>>;
}

/// A finished client handshake.
pub struct TlsConnected {
    /// The encrypted stream.
    pub stream: Box<dyn IoStream>,
    /// Whether ALPN chose h2.
    pub h2: bool,
}

impl std::fmt::Debug for TlsConnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnected")
            .field("h2", &self.h2)
            .finish()
    }
}

/// Dials endpoints for one cluster.
#[derive(Clone)]
pub struct MeshConnector {
    connect_timeout: Duration,
    breaker: Arc<CircuitBreaker>,
    tls: Option<Arc<dyn UpstreamTlsConnect>>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The cluster's `max_connections` is reached.
    #[error(transparent)]
    Overflow(#[from] Overflow),
    /// The URI has no host or port.
    #[error("endpoint URI {0} has no host and port")]
    BadUri(String),
    /// TCP connect failed.
    #[error("connect to {authority}: {source}")]
    Tcp {
        /// Where.
        authority: String,
        /// The OS error.
        source: io::Error,
    },
    /// The connect timeout passed.
    #[error("connect to {authority}: timed out after {timeout:?}")]
    Timeout {
        /// Where.
        authority: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {authority}: {source}")]
    Tls {
        /// Where.
        authority: String,
        /// Why.
        source: BoxError,
    },
}

impl MeshConnector {
    /// A connector with these settings.
    pub fn new(
        connect_timeout: Duration,
        breaker: Arc<CircuitBreaker>,
        tls: Option<Arc<dyn UpstreamTlsConnect>>,
    ) -> Self {
        Self {
            connect_timeout,
            breaker,
            tls,
            metrics: None,
        }
    }

    /// Counts the connections it opens in `metrics` (`istio_tcp_connections_opened_total`
    /// and `_closed_total`, `reporter="source"`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn dial(self, uri: http::Uri) -> Result<MeshIo, ConnectError> {
        let guard = self.breaker.try_connection()?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let port = uri
            .port_u16()
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.clone(),
            timeout: self.connect_timeout,
        })?
        .map_err(|source| ConnectError::Tcp {
            authority: authority.clone(),
            source,
        })?;
        tcp.set_nodelay(true).map_err(|source| ConnectError::Tcp {
            authority: authority.clone(),
            source,
        })?;
        let (stream, h2) = match &self.tls {
            None => (Stream::Plain(tcp), false),
            Some(tls) => {
                let done =
                    tls.connect(tcp, &authority)
                        .await
                        .map_err(|source| ConnectError::Tls {
                            authority: authority.clone(),
                            source,
                        })?;
                (Stream::Tls(done.stream), done.h2)
            }
        };
        let counted = self.metrics.map(Counted::open);
        Ok(MeshIo {
            io: TokioIo::new(stream),
            h2,
            _guard: guard,
            _counted: counted,
        })
    }
}

impl tower::Service<http::Uri> for MeshConnector {
    type Response = MeshIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial(uri))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<dyn IoStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An open connection to an endpoint; holds its `max_connections` slot until closed.
pub struct MeshIo {
    io: TokioIo<Stream>,
    h2: bool,
    _guard: BreakerGuard,
    _counted: Option<Counted>,
}

/// An open connection in the TCP metrics: counted open when made, closed when dropped.
struct Counted(Metrics);

impl Counted {
    fn open(metrics: Metrics) -> Self {
        // Istio's source reporter labels connections `unknown` for the security policy.
        metrics.tcp_opened(Reporter::Source, None, SecurityPolicy::Unknown);
        Self(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .tcp_closed(Reporter::Source, None, SecurityPolicy::Unknown);
    }
}

impl std::fmt::Debug for MeshIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIo").field("h2", &self.h2).finish()
    }
}

impl Connection for MeshIo {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl Read for MeshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for MeshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
