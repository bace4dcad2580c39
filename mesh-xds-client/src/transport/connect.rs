//! Opening a channel to a control plane: TCP `host:port` or a Unix socket.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::TransportError;
use crate::bootstrap::{ChannelCreds, ServerTarget, XdsServer};

/// Connects to `server`.
pub(super) async fn connect(
    server: &XdsServer,
    connect_timeout: Duration,
) -> Result<Channel, TransportError> {
    if server.channel_creds != ChannelCreds::Insecure {
        return Err(TransportError::UnsupportedCredentials(
            server.server_uri.clone(),
        ));
    }
    match &server.target {
        ServerTarget::Tcp { authority } => {
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| TransportError::InvalidUri(format!("{authority}: {e}")))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true);
            Ok(endpoint.connect().await?)
        }
        ServerTarget::Unix(path) => {
            let path = path.clone();
            // The URI is only a placeholder for HTTP/2's `:authority`; the connector ignores it.
            let endpoint =
                Endpoint::from_static("http://localhost").connect_timeout(connect_timeout);
            let connector = tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            Ok(endpoint.connect_with_connector(connector).await?)
        }
    }
}
