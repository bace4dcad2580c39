//! Harnesses for certificate loading in mesh-tower: the SVID and trust-bundle loaders
//! (PEM and DER), the chain verification of the outbound side, and the peer SPIFFE ID the
//! inbound side reads from a leaf. Bad input must come back as a `CertificateError` /
//! `VerifyError` / `None`, never a panic.
//!
//! Shared by `fuzz_targets/cert_{der,pem}.rs` and `mesh-tower/tests/fuzz_seeds.rs`.

use std::sync::OnceLock;

use mesh_tower::identity::testing::TestCa;
use mesh_tower::identity::{fuzzing, verify_server_chain, CertifiedIdentity, TrustBundle};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A real trust bundle to verify fuzzed chains against (made once per process).
fn bundle() -> &'static TrustBundle {
    static BUNDLE: OnceLock<TrustBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        ca.bundle()
            .unwrap_or_else(|e| panic!("test CA bundle: {e}"))
    })
}

/// One DER certificate.
pub fn cert_der(data: &[u8]) {
    if let Some(id) = fuzzing::peer_spiffe_id(data) {
        assert!(id.as_str().starts_with("spiffe://"));
    }
    let leaf = CertificateDer::from(data.to_vec());
    // The key is never valid: loading stops at it once the leaf has been read.
    let no_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(Vec::new()));
    let _ = CertifiedIdentity::from_der(vec![leaf.clone()], no_key, "fuzz");
    let _ = TrustBundle::from_der(vec![leaf.clone()], "fuzz");
    let _ = verify_server_chain(bundle(), &[leaf], &[]);
}

/// PEM text: a certificate chain, then (after the first NUL byte, if any) a private key;
/// the whole input is also read as a trust bundle.
pub fn cert_pem(data: &[u8]) {
    let (chain, key) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, data),
    };
    if let Ok(identity) = CertifiedIdentity::from_pem(chain, key, "fuzz") {
        assert!(identity.spiffe_id().as_str().starts_with("spiffe://"));
        let _ = verify_server_chain(bundle(), identity.chain(), &[]);
    }
    if let Ok(roots) = TrustBundle::from_pem(data, "fuzz") {
        assert!(!roots.roots().is_empty());
    }
}
