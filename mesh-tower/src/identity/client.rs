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

/// Which ALPN protocols a client offers: Istio's in-mesh values first, as its sidecars
/// offer them (the `istio.alpn` filter's overrides), so that a PERMISSIVE Istio sidecar in
/// front of the server matches its mTLS filter chain (it matches on `istio*` values) instead
/// of passing the TLS bytes through to a plaintext application; then the standard ones,
/// which any other server picks.
fn alpn_for(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    let values: &[&[u8]] = match protocol {
        UpstreamProtocol::Http2 => &[b"istio-h2", b"istio", b"h2"],
        UpstreamProtocol::Http1 => &[b"istio-http/1.1", b"istio", b"http/1.1"],
        _ => &[b"istio-h2", b"istio-http/1.1", b"istio", b"h2", b"http/1.1"],
    };
    values.iter().map(|v| v.to_vec()).collect()
}

/// Whether the negotiated protocol is HTTP/2 (`h2`, or Istio's `istio-h2`).
pub(crate) fn is_h2_alpn(protocol: Option<&[u8]>) -> bool {
    matches!(protocol, Some(b"h2" | b"istio-h2"))
}

/// A client config: servers are verified against `roots`' bundle and must carry a SPIFFE
/// ID of its trust domain matching one of `accepted_sans` (empty: any). `identity`, when
/// given, is presented as our client certificate. ALPN offers Istio's in-mesh values, then
/// `h2` and `http/1.1`.
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
        let h2 = is_h2_alpn(tls.get_ref().1.alpn_protocol());
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

/// The SNI: the cluster's `sni`; else, for an Istio cluster name
/// (`outbound|8080|v1|payment-service.default.svc.cluster.local`), the name Istio's
/// sidecars send (`outbound_.8080_.v1_.payment-service.default.svc.cluster.local`); else
/// its service when that is a DNS name; else a placeholder. Only sent, never checked
/// against the certificate.
fn server_name(cluster: &Cluster, tls: &UpstreamTls) -> ServerName<'static> {
    let istio = istio_sni(cluster.name());
    let chosen = [
        tls.sni.as_deref(),
        istio.as_deref(),
        cluster.service.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|name| ServerName::try_from(name.to_owned()).ok());
    chosen
        .or_else(|| ServerName::try_from(PLACEHOLDER_SNI).ok())
        // Not reached (the placeholder is a DNS name); an IP sends no SNI at all.
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// Istio's SNI for an outbound cluster name: `outbound_.PORT_.SUBSET_.HOST` (an empty
/// subset gives `outbound_.8080_._.HOST`); `None` for other names.
pub(crate) fn istio_sni(cluster_name: &str) -> Option<String> {
    let mut parts = cluster_name.split('|');
    let (direction, port, subset, host) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || direction != "outbound" || host.is_empty() {
        return None;
    }
    port.parse::<u16>().ok()?;
    Some(format!("outbound_.{port}_.{subset}_.{host}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_sni_is_the_cluster_name_in_dns_form() {
        assert_eq!(
            istio_sni("outbound|8080|v1|payment-service.default.svc.cluster.local").as_deref(),
            Some("outbound_.8080_.v1_.payment-service.default.svc.cluster.local")
        );
        assert_eq!(
            istio_sni("outbound|8080||payment-service.default.svc.cluster.local").as_deref(),
            Some("outbound_.8080_._.payment-service.default.svc.cluster.local")
        );
        for other in [
            "payment",
            "inbound|8080||a",
            "outbound|http|v1|a",
            "outbound|80|v1|",
        ] {
            assert_eq!(istio_sni(other), None, "{other}");
        }
        // rustls takes it as a server name (underscores and all).
        let name = istio_sni("outbound|8080||payment-service.default.svc.cluster.local")
            .expect("test input");
        assert!(ServerName::try_from(name).is_ok());
    }

    #[test]
    fn the_client_offers_istio_alpn_before_the_standard_values() {
        let http2 = alpn_for(UpstreamProtocol::Http2);
        assert_eq!(http2, [&b"istio-h2"[..], b"istio", b"h2"]);
        let http1 = alpn_for(UpstreamProtocol::Http1);
        assert_eq!(http1, [&b"istio-http/1.1"[..], b"istio", b"http/1.1"]);
        assert!(is_h2_alpn(Some(b"istio-h2")) && is_h2_alpn(Some(b"h2")));
        assert!(!is_h2_alpn(Some(b"istio")) && !is_h2_alpn(None));
    }
}
