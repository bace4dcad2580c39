use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};

/// Binding the listen address failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why the OS refused.
    #[source]
    pub source: io::Error,
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Turns Nagle's algorithm off on an accepted socket; a failure is logged, not fatal.
pub fn set_nodelay(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY on an accepted connection");
    }
}

/// The accepted connections of `listener`, each with `TCP_NODELAY` set, as the stream
/// `tonic::transport::Server::serve_with_incoming*` takes.
///
/// An accept error is yielded (tonic logs it and goes on) after a short pause, so that a
/// persistent error such as running out of file descriptors does not spin a core.
pub fn incoming_nodelay(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> + Send {
    futures_util::stream::unfold(listener, |listener| async move {
        let next = match listener.accept().await {
            Ok((stream, _peer)) => {
                set_nodelay(&stream);
                Ok(stream)
            }
            Err(err) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(err)
            }
        };
        Some((next, listener))
    })
}

/// Resolves when the process is asked to stop: Ctrl-C, or SIGTERM on Unix.
///
/// If a signal handler cannot be installed, that signal is logged and ignored (the
/// future then waits on the other one only).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() -> io::Result<()> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| e.source)?;
        let addr = listener.local_addr()?;
        let incoming = incoming_nodelay(listener);
        futures_util::pin_mut!(incoming);
        let _client = TcpStream::connect(addr).await?;
        let accepted = match incoming.next().await {
            Some(accepted) => accepted?,
            None => panic!("the stream never ends"),
        };
        assert!(accepted.nodelay()?);
        Ok(())
    }

    #[tokio::test]
    async fn bind_error_names_the_address() -> io::Result<()> {
        let taken = TcpListener::bind("127.0.0.1:0").await?;
        let addr = taken.local_addr()?;
        match bind(addr).await {
            Ok(_) => panic!("the port is taken"),
            Err(err) => assert!(err.to_string().contains(&addr.to_string()), "{err}"),
        }
        Ok(())
    }
}
