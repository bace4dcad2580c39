//! Workload identity: X.509-SVIDs, trust bundles, and the rustls configs of the mesh's mTLS.
//!
//! - [`CertifiedIdentity`] is our SVID (chain, key, SPIFFE ID); [`TrustBundle`] the roots
//!   peers must chain to, optionally bound to one trust domain.
//! - [`CertificateSource`] holds both, live: static files, the bootstrap's `file_watcher`
//!   provider (Istio's `cert-chain.pem`, `key.pem`, `root-cert.pem`, reloaded on change), or
//!   memory. TLS configs read it per handshake, so rotation needs no restart.
//! - [`server_config`] (inbound) and [`client_config`] / [`MeshTls`] (outbound) verify peers
//!   by SPIFFE ID, never by DNS name: the chain against the bundle (validity, key usage),
//!   then the trust domain, then the accepted SAN matchers. Rejections say why
//!   ([`VerifyError`]).
//! - [`testing`] issues a CA and SVIDs with rcgen, for tests and demos.
//!
//! Only rustls with the `ring` provider is used.
//!
//! ```
//! use mesh_tower::identity::{testing::TestCa, CertificateSource, verify_server_chain};
//! use mesh_core::matcher::StringMatcher;
//!
//! let ca = TestCa::new().unwrap();
//! let payment = ca.svid("default", "payment-service").unwrap();
//! let source = CertificateSource::in_memory(payment.identity().unwrap(), ca.bundle().unwrap());
//! let accepted = [StringMatcher::exact("spiffe://cluster.local/ns/default/sa/payment-service")];
//! let id = verify_server_chain(&source.bundle(), source.identity().chain(), &accepted).unwrap();
//! assert_eq!(id.service_account(), Some("payment-service"));
//! ```

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

mod certs;
mod client;
mod server;
mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verify;

pub use certs::{CertificateError, CertifiedIdentity, SvidProblem, TrustBundle};
pub use client::{client_config, MeshTls, MeshTlsConnector, UpstreamTlsError, PLACEHOLDER_SNI};
pub use server::{server_config, ClientAuth, SERVER_ALPN};
pub use source::{
    CertificateSource, CertificateWatch, FileWatcherConfig, SourceEvent, DEFAULT_REFRESH_INTERVAL,
    ISTIO_CERT_CHAIN, ISTIO_KEY, ISTIO_ROOT_CERT,
};
pub use verify::{verify_server_chain, VerifyError};

/// A rustls config could not be built (a protocol-version or provider problem).
#[derive(Debug, thiserror::Error)]
#[error("building the TLS config: {0}")]
pub struct TlsConfigError(pub rustls::Error);

/// The crypto provider of every config here: ring, built once.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The SPIFFE ID of a verified peer's leaf certificate.
pub(crate) fn peer_spiffe_id(leaf: &[u8]) -> Option<mesh_core::identity::SpiffeId> {
    certs::leaf_info(leaf).ok()?.spiffe_id.ok()
}

/// Entry points for the fuzz targets in `fuzz/` and their smoke tests; not part of the
/// API, may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    /// What the inbound listener reads from a peer's leaf certificate (DER) once the
    /// handshake verified it: its SPIFFE ID, if it is an X.509-SVID.
    pub fn peer_spiffe_id(leaf: &[u8]) -> Option<mesh_core::identity::SpiffeId> {
        super::peer_spiffe_id(leaf)
    }
}
