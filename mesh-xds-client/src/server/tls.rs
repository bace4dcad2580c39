//! Serving the test ADS server over TLS (rustls), so clients' TLS channel credentials can
//! be tested against it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Time allowed for one handshake, so a silent client cannot hold the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted, handshaken connection.
#[derive(Debug)]
pub(super) struct TlsConn(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The handshaken connections of `listener`; failed handshakes are logged and skipped.
pub(super) fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures_util::Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    futures_util::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => return Some((Err(e), (listener, acceptor))),
            };
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return Some((Ok(TlsConn(tls)), (listener, acceptor))),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "test ADS server: TLS handshake failed")
                }
                Err(_) => tracing::debug!(%peer, "test ADS server: TLS handshake timed out"),
            }
        }
    })
}
