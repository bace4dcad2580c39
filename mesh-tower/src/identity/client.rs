//! The client side: a rustls `ClientConfig` that verifies servers by SPIFFE ID (no DNS
//! names) and presents our SVID, and [`MeshTls`], which builds one per cluster for the
//! outbound client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mesh_core::cluster::{CertificateInstance, Cluster, UpstreamProtocol, UpstreamTls};
use mesh_core::matcher::StringMatcher;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::server::SourceResolver;
use super::verify::{SpiffeServerVerifier, VerifyError};
use super::{CertificateSource, TlsConfigError};
use crate::body::BoxError;
use crate::outbound::{TlsConnected, TlsProvider, UpstreamTlsConnect};

/// The server name sent when a cluster names no SNI and its service is no DNS name.
/// Verification ignores it: servers are checked by SPIFFE ID.
pub const PLACEHOLDER_SNI: &str = "outbound.mesh.invalid";

/// Which ALPN protocols a client offers.
fn alpn_for(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    match protocol {
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        _ => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    }
}

/// A client config: servers are verified against `roots`' bundle and must carry a SPIFFE
/// ID of its trust domain matching one of `accepted_sans` (empty: any). `identity`, when
/// given, is presented as our client certificate. ALPN offers `h2` and `http/1.1`.
pub fn client_config(
    roots: &CertificateSource,
    identity: Option<&CertificateSource>,
    accepted_sans: Vec<StringMatcher>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    build_client_config(roots, identity, accepted_sans, UpstreamProtocol::Auto)
        .map(Arc::new)
        .map_err(TlsConfigError)
}

fn build_client_config(
    roots: &CertificateSource,
    identity: Option<&CertificateSource>,
    accepted_sans: Vec<StringMatcher>,
    protocol: UpstreamProtocol,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = SpiffeServerVerifier {
        roots: roots.clone(),
        accepted: accepted_sans,
    };
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(source) => builder.with_client_cert_resolver(Arc::new(SourceResolver(source.clone()))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn_for(protocol);
    Ok(config)
}

/// Why an upstream TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamTlsError {
    /// The server's certificate was rejected.
    #[error("TLS to {authority}: {source}")]
    Verify {
        /// The endpoint dialed.
        authority: String,
        /// Why.
        source: VerifyError,
    },
    /// The handshake failed otherwise (alert from the server, I/O error, protocol error).
    #[error("TLS handshake with {authority} failed: {source}")]
    Handshake {
        /// The endpoint dialed.
        authority: String,
        /// What rustls or the socket said.
        source: std::io::Error,
    },
}

/// Runs client handshakes for one cluster's TLS settings.
#[derive(Clone)]
pub struct MeshTlsConnector {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for MeshTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl MeshTlsConnector {
    /// A connector from a client config and the server name to send.
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self {
            connector: TlsConnector::from(config),
            server_name,
        }
    }

    /// Runs the handshake on `tcp`.
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        authority: &str,
    ) -> Result<TlsConnected, UpstreamTlsError> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| match VerifyError::find(&e) {
                Some(v) => UpstreamTlsError::Verify {
                    authority: authority.to_owned(),
                    source: v.clone(),
                },
                None => UpstreamTlsError::Handshake {
                    authority: authority.to_owned(),
                    source: e,
                },
            })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(TlsConnected {
            stream: Box::new(tls),
            h2,
        })
    }
}

impl UpstreamTlsConnect for MeshTlsConnector {
    fn connect(
        &self,
        tcp: tokio::net::TcpStream,
        authority: &str,
    ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>> {
        let this = self.clone();
        let authority = authority.to_owned();
        Box::pin(async move {
            this.handshake(tcp, &authority)
                .await
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

/// The mesh's [`TlsProvider`]: certificate provider instances by name (Istio: `default`),
/// from which each cluster's `UpstreamTls` picks its identity and roots.
#[derive(Debug, Clone, Default)]
pub struct MeshTls {
    instances: HashMap<String, CertificateSource>,
}

impl MeshTls {
    /// A provider with one instance, `default` (Istio's name for the agent's files).
    pub fn new(default: CertificateSource) -> Self {
        Self::default().with_instance("default", default)
    }

    /// Adds or replaces a named instance.
    pub fn with_instance(mut self, name: impl Into<String>, source: CertificateSource) -> Self {
        self.instances.insert(name.into(), source);
        self
    }

    fn instance(
        &self,
        cluster: &str,
        cert: &CertificateInstance,
    ) -> Result<&CertificateSource, String> {
        self.instances.get(&cert.instance_name).ok_or_else(|| {
            format!(
                "cluster {cluster}: certificate provider instance {:?} is not configured (known: {:?})",
                cert.instance_name,
                self.instances.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The connector for one cluster's TLS settings.
    pub fn connector(
        &self,
        cluster: &Cluster,
        tls: &UpstreamTls,
    ) -> Result<MeshTlsConnector, String> {
        // Fail closed: TLS without roots would accept any server.
        let Some(roots) = &tls.roots else {
            return Err(format!(
                "cluster {}: TLS without a validation context (roots); refusing to connect unverified",
                cluster.name()
            ));
        };
        let roots = self.instance(cluster.name(), roots)?;
        let identity = match &tls.identity {
            Some(id) => Some(self.instance(cluster.name(), id)?),
            None => None,
        };
        let config =
            build_client_config(roots, identity, tls.accepted_sans.clone(), cluster.protocol)
                .map_err(|e| format!("cluster {}: {e}", cluster.name()))?;
        Ok(MeshTlsConnector::new(
            Arc::new(config),
            server_name(cluster, tls),
        ))
    }
}

/// The SNI: the cluster's `sni`, else its service when that is a DNS name, else a
/// placeholder. Only sent, never checked against the certificate.
fn server_name(cluster: &Cluster, tls: &UpstreamTls) -> ServerName<'static> {
    [tls.sni.as_deref(), cluster.service.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|name| ServerName::try_from(name.to_owned()).ok())
        .or_else(|| ServerName::try_from(PLACEHOLDER_SNI).ok())
        // Not reached (the placeholder is a DNS name); an IP sends no SNI at all.
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

impl TlsProvider for MeshTls {
    fn connector_for(
        &self,
        cluster: &Cluster,
    ) -> Result<Option<Arc<dyn UpstreamTlsConnect>>, String> {
        match &cluster.tls {
            None => Ok(None),
            Some(tls) => Ok(Some(Arc::new(self.connector(cluster, tls)?))),
        }
    }
}
