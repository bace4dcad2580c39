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

/// The crypto provider of every config here: ring, built once, with the AES-128-GCM suites
/// offered first.
///
/// rustls lists AES-256-GCM first. BoringSSL (so Envoy, so Istio's sidecars) and Go's
/// crypto/tls offer AES-128-GCM first on CPUs with AES instructions, and meshes of them
/// talk AES-128-GCM. Its 10 rounds against 14 cut the cost of sealing and opening every
/// record by about a fifth. Order within each TLS version is otherwise rustls's; servers
/// here still follow the client's order, as rustls does by default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                let tls12 = suite.version().version == rustls::ProtocolVersion::TLSv1_2;
                (tls12, !is_aes_128_gcm(suite.suite()))
            });
            Arc::new(provider)
        })
        .clone()
}

fn is_aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
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

#[cfg(test)]
mod tests {
    use rustls::CipherSuite as S;

    #[test]
    fn aes_128_gcm_comes_first_in_each_version_and_no_suite_is_lost() {
        let order: Vec<S> = super::provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(
            order,
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        let mut rustls: Vec<S> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        let mut ours = order.clone();
        rustls.sort_by_key(|s| u16::from(*s));
        ours.sort_by_key(|s| u16::from(*s));
        assert_eq!(ours, rustls);
    }
}
