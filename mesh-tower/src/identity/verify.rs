//! Verifying a peer's X.509-SVID: the chain against the trust bundle (rustls-webpki: time
//! validity, extended key usage), the key usage, then the SPIFFE ID against the trust domain
//! and the accepted SANs. No DNS name is ever checked: SVIDs name workloads by URI SAN.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mesh_core::identity::SpiffeId;
use mesh_core::matcher::{StringMatch, StringMatcher};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::certs::{leaf_info, SvidProblem};
use super::{CertificateSource, TrustBundle};

/// Why a peer's certificate was rejected. Each case says what a person needs to fix it.
///
/// It reaches callers inside the handshake's `io::Error`; [`VerifyError::find`] digs it
/// out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The certificate is not parseable X.509.
    #[error("peer certificate is malformed: {0}")]
    Malformed(String),
    /// `notAfter` is in the past.
    #[error("peer certificate expired: valid until {not_after} (unix seconds), now is {now}")]
    Expired {
        /// The certificate's `notAfter`, unix seconds.
        not_after: u64,
        /// The time of the check, unix seconds.
        now: u64,
    },
    /// `notBefore` is in the future.
    #[error(
        "peer certificate is not valid yet: valid from {not_before} (unix seconds), now is {now}"
    )]
    NotYetValid {
        /// The certificate's `notBefore`, unix seconds.
        not_before: u64,
        /// The time of the check, unix seconds.
        now: u64,
    },
    /// The key usage or extended key usage does not allow this use.
    #[error("peer certificate has the wrong key usage: {0}")]
    WrongKeyUsage(String),
    /// The chain does not lead to a root of the trust bundle.
    #[error(
        "peer certificate has an unknown issuer: its chain leads to no root of the trust bundle"
    )]
    UnknownIssuer,
    /// The certificate is not an X.509-SVID.
    #[error("peer certificate carries no SPIFFE ID: {0}")]
    NotAnSvid(SvidProblem),
    /// The SPIFFE ID is from another trust domain than the bundle's.
    #[error(
        "wrong trust domain: peer is {peer}, trust domain {seen}; expected trust domain {expected}"
    )]
    WrongTrustDomain {
        /// The peer's SPIFFE ID.
        peer: String,
        /// Its trust domain.
        seen: String,
        /// The bundle's trust domain.
        expected: String,
    },
    /// The SPIFFE ID is none of the accepted ones (wrong service account).
    #[error(
        "SAN mismatch (wrong service account): peer's URI SAN is {seen}, accepted: {accepted:?}"
    )]
    SanMismatch {
        /// The peer's URI SAN.
        seen: String,
        /// The accepted SANs, as `exact:…`, `prefix:…`, `suffix:…`, `contains:…`, `regex:…`.
        accepted: Vec<String>,
    },
    /// Any other rejection by rustls-webpki.
    #[error("peer certificate rejected: {0}")]
    Invalid(String),
}

impl VerifyError {
    /// Finds the verification error inside a handshake error (`io::Error` → rustls error →
    /// this), if that is why the handshake failed.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a VerifyError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(v) = e.downcast_ref::<VerifyError>() {
                return Some(v);
            }
            if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) =
                e.downcast_ref::<rustls::Error>()
            {
                return o.0.downcast_ref::<VerifyError>();
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                current = io
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static));
                continue;
            }
            current = e.source();
        }
        None
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(self),
        )))
    }
}

fn secs(t: UnixTime) -> u64 {
    t.as_secs()
}

/// Describes a matcher for error messages: `exact:spiffe://…`.
pub(crate) fn describe(m: &StringMatcher) -> String {
    match m.kind() {
        StringMatch::Exact(s) => format!("exact:{s}"),
        StringMatch::Prefix(s) => format!("prefix:{s}"),
        StringMatch::Suffix(s) => format!("suffix:{s}"),
        StringMatch::Contains(s) => format!("contains:{s}"),
        StringMatch::Regex(r) => format!("regex:{}", r.as_str()),
        other => format!("{other:?}"),
    }
}

fn map_webpki(e: webpki::Error, now: UnixTime) -> VerifyError {
    match e {
        webpki::Error::CertExpired { not_after, .. } => VerifyError::Expired {
            not_after: secs(not_after),
            now: secs(now),
        },
        webpki::Error::CertNotValidYet { not_before, .. } => VerifyError::NotYetValid {
            not_before: secs(not_before),
            now: secs(now),
        },
        // A bad signature on the path means the issuer named is not the trusted one (a CA
        // with a root's name but another key): to the operator, an unknown issuer.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            VerifyError::UnknownIssuer
        }
        #[allow(deprecated)]
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
            VerifyError::WrongKeyUsage(format!("extended key usage: {e}"))
        }
        webpki::Error::BadDer | webpki::Error::BadDerTime => VerifyError::Malformed(e.to_string()),
        other => VerifyError::Invalid(other.to_string()),
    }
}

/// Which end of the connection the peer is: the EKU it must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRole {
    /// A server we dial: `serverAuth`.
    Server,
    /// A client that dialed us: `clientAuth`.
    Client,
}

/// Verifies a peer's chain and returns its SPIFFE ID. No SAN or trust-domain policy here.
pub(crate) fn verify_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, VerifyError> {
    let cert = EndEntityCert::try_from(end_entity).map_err(|e| map_webpki(e, now))?;
    let usage = match role {
        PeerRole::Server => KeyUsage::server_auth(),
        PeerRole::Client => KeyUsage::client_auth(),
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(|e| map_webpki(e, now))?;
    let info = leaf_info(end_entity).map_err(VerifyError::Malformed)?;
    if info.digital_signature == Some(false) {
        return Err(VerifyError::WrongKeyUsage(
            "key usage lacks digitalSignature".to_owned(),
        ));
    }
    info.spiffe_id.map_err(VerifyError::NotAnSvid)
}

/// The trust-domain and SAN policy on a verified SPIFFE ID. Empty `accepted` accepts any ID
/// of the bundle's trust domain (any ID at all when the bundle names none).
pub(crate) fn check_identity(
    bundle: &TrustBundle,
    accepted: &[StringMatcher],
    id: &SpiffeId,
) -> Result<(), VerifyError> {
    if let Some(td) = bundle.trust_domain() {
        if id.trust_domain() != td {
            return Err(VerifyError::WrongTrustDomain {
                peer: id.to_string(),
                seen: id.trust_domain().to_string(),
                expected: td.to_string(),
            });
        }
    }
    if accepted.is_empty() || accepted.iter().any(|m| m.matches(id.as_str())) {
        return Ok(());
    }
    Err(VerifyError::SanMismatch {
        seen: id.to_string(),
        accepted: accepted.iter().map(describe).collect(),
    })
}

fn verify_signature_algs() -> &'static rustls::crypto::WebPkiSupportedAlgorithms {
    static ALGS: std::sync::OnceLock<rustls::crypto::WebPkiSupportedAlgorithms> =
        std::sync::OnceLock::new();
    ALGS.get_or_init(|| super::provider().signature_verification_algorithms)
}

/// The client side's verifier of servers: chain, then trust domain and accepted SANs.
pub(crate) struct SpiffeServerVerifier {
    pub(crate) roots: CertificateSource,
    pub(crate) accepted: Vec<StringMatcher>,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field(
                "accepted",
                &self.accepted.iter().map(describe).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.roots.bundle();
        let id = verify_chain(&bundle, end_entity, intermediates, now, PeerRole::Server)
            .map_err(VerifyError::into_rustls)?;
        check_identity(&bundle, &self.accepted, &id).map_err(VerifyError::into_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, verify_signature_algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, verify_signature_algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_signature_algs().supported_schemes()
    }
}

/// The server side's verifier of clients: the chain against the current bundle and a
/// SPIFFE ID in the leaf. Who may call what is authorization's business, not this.
pub(crate) struct SpiffeClientVerifier {
    pub(crate) roots: CertificateSource,
    pub(crate) mandatory: bool,
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients then send whatever SVID they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.roots.bundle();
        let id = verify_chain(&bundle, end_entity, intermediates, now, PeerRole::Client)
            .map_err(VerifyError::into_rustls)?;
        check_identity(&bundle, &[], &id).map_err(VerifyError::into_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, verify_signature_algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, verify_signature_algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_signature_algs().supported_schemes()
    }
}

/// `now` for verification outside a handshake (tests, tools).
pub(crate) fn unix_now() -> UnixTime {
    UnixTime::since_unix_epoch(
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    )
}

/// Verifies `chain` (leaf first) as a server certificate the way the client side does, with
/// `accepted` SAN matchers. For tools and tests that check a certificate without a
/// handshake.
pub fn verify_server_chain(
    bundle: &TrustBundle,
    chain: &[CertificateDer<'_>],
    accepted: &[StringMatcher],
) -> Result<SpiffeId, VerifyError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(VerifyError::Malformed("empty chain".to_owned()));
    };
    let id = verify_chain(bundle, leaf, intermediates, unix_now(), PeerRole::Server)?;
    check_identity(bundle, accepted, &id)?;
    Ok(id)
}
