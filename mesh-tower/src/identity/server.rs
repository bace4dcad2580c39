//! The server side: a rustls `ServerConfig` whose certificate comes from a
//! [`CertificateSource`] at each handshake and whose client certificates are verified
//! against the source's current bundle.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::verify::SpiffeClientVerifier;
use super::{CertificateSource, TlsConfigError};

/// Whether a server asks for client certificates or demands them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A client must present a valid SVID (STRICT).
    Required,
    /// A client may present one; if it does, it must be valid (PERMISSIVE over TLS).
    Optional,
}

/// Serves the source's current identity.
#[derive(Debug)]
pub(crate) struct SourceResolver(pub(crate) CertificateSource);

impl ResolvesServerCert for SourceResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity().certified_key().clone())
    }
}

impl rustls::client::ResolvesClientCert for SourceResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity().certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The ALPN values a mesh server accepts, in its order of preference: the standard ones,
/// then Istio's. An Istio sidecar offers `istio-http/1.1` or `istio-h2` with `istio` (HTTP
/// ports) or only `istio-peer-exchange,istio` (TCP ports); refusing those would fail the
/// handshake (RFC 7301's `no_application_protocol`). Whatever is chosen, the connection's
/// first bytes decide between HTTP/1.1 and HTTP/2. `istio-peer-exchange` is not accepted:
/// with it the client would wrap its data in Istio's TCP metadata exchange; `istio` is
/// chosen instead, and the client then sends its data as it is.
pub const SERVER_ALPN: &[&[u8]] = &[
    b"h2",
    b"http/1.1",
    b"istio-h2",
    b"istio-http/1.1",
    b"istio-http/1.0",
    b"istio",
];

/// A server config presenting `source`'s identity, verifying clients against its bundle,
/// with ALPN [`SERVER_ALPN`]. Build it once: rotation happens underneath.
pub fn server_config(
    source: &CertificateSource,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let verifier = SpiffeClientVerifier {
        roots: source.clone(),
        mandatory: client_auth == ClientAuth::Required,
    };
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SourceResolver(source.clone())));
    config.alpn_protocols = SERVER_ALPN.iter().map(|v| v.to_vec()).collect();
    Ok(Arc::new(config))
}
