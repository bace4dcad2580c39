//! Opening a channel to a control plane: TCP `host:port` (plaintext or TLS) or a Unix
//! socket.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::tls::settings;
use super::TransportError;
use crate::bootstrap::{ChannelCreds, ServerTarget, XdsServer};

/// Connects to `server`.
pub(super) async fn connect(
    server: &XdsServer,
    connect_timeout: Duration,
) -> Result<Channel, TransportError> {
    match (&server.target, &server.channel_creds) {
        (ServerTarget::Tcp { authority }, ChannelCreds::Insecure) => {
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| TransportError::InvalidUri(format!("{authority}: {e}")))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true);
            Ok(endpoint.connect().await?)
        }
        (ServerTarget::Tcp { authority }, ChannelCreds::Tls { config }) => {
            let tls = settings(&server.server_uri, authority, config.as_ref())?;
            let connector = tokio_rustls::TlsConnector::from(tls.config);
            let authority = authority.clone();
            // HTTP/2 goes over the TLS stream this connector returns; the URI is only the
            // `:authority`.
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| TransportError::InvalidUri(format!("{authority}: {e}")))?
                .connect_timeout(connect_timeout);
            let server_name = tls.server_name;
            let service = tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                let authority = authority.clone();
                let server_name = server_name.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            });
            Ok(endpoint.connect_with_connector(service).await?)
        }
        (ServerTarget::Unix(path), ChannelCreds::Insecure) => {
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
        _ => Err(TransportError::UnsupportedCredentials(
            server.server_uri.clone(),
        )),
    }
}
