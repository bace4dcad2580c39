//! The outbound client's TLS hooks, as the lead defines them in `crate::outbound`.
// TEMPORARY: replaced by crate::outbound::connect / cluster on merge

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::BoxError;

/// A byte stream a TLS implementation hands back.
pub trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> IoStream for T {}

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

/// What the outbound client needs from TLS: wrap a fresh TCP connection.
pub trait UpstreamTlsConnect: Send + Sync + 'static {
    /// Runs the client handshake on `tcp`. `authority` is the endpoint dialed.
    fn connect(
        &self,
        tcp: tokio::net::TcpStream,
        authority: &str,
    ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>>;
}

/// Builds the TLS connector for a cluster, when it has TLS settings.
pub trait TlsProvider: Send + Sync + 'static {
    /// The connector for `cluster`'s TLS settings, or an error saying why none can be made
    /// (then the cluster's requests fail rather than go out in plaintext).
    fn connector_for(
        &self,
        cluster: &mesh_core::cluster::Cluster,
    ) -> Result<Option<Arc<dyn UpstreamTlsConnect>>, String>;
}
