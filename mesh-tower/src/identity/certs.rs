//! Certificates as loaded: our own SVID ([`CertifiedIdentity`]) and the roots we trust
//! ([`TrustBundle`]), parsed from PEM with errors that name the file and the problem.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::identity::{SpiffeId, SpiffeIdError, TrustDomain};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate, key or bundle could not be loaded. `origin` is the file path, or a
/// label such as `in-memory identity` for certificates that came from memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read {origin}: {source}")]
    Read {
        /// The file.
        origin: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No `CERTIFICATE` PEM block was found.
    #[error("{origin}: no PEM CERTIFICATE block found")]
    NoCertificate {
        /// Where.
        origin: String,
    },
    /// The PEM text is malformed.
    #[error("{origin}: malformed PEM: {reason}")]
    Pem {
        /// Where.
        origin: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// No private key PEM block (PKCS#8, PKCS#1 or SEC1) was found.
    #[error("{origin}: no PEM private key found")]
    NoKey {
        /// Where.
        origin: String,
    },
    /// The private key is of a kind we cannot sign with.
    #[error("{origin}: private key not usable: {reason}")]
    BadKey {
        /// Where.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("{origin}: the private key does not match the leaf certificate ({reason})")]
    KeyMismatch {
        /// Where.
        origin: String,
        /// What rustls reported.
        reason: String,
    },
    /// A certificate is not valid X.509 DER.
    #[error("{origin}: certificate #{index} is not valid X.509: {reason}")]
    BadCertificate {
        /// Where.
        origin: String,
        /// Its position in the file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The leaf certificate is not an X.509-SVID (no single SPIFFE URI SAN).
    #[error("{origin}: the leaf certificate is not an X.509-SVID: {reason}")]
    NotAnSvid {
        /// Where.
        origin: String,
        /// Why.
        reason: String,
    },
    /// A root certificate cannot be used as a trust anchor.
    #[error("{origin}: root certificate #{index} is not a usable trust anchor: {reason}")]
    BadRoot {
        /// Where.
        origin: String,
        /// Its position in the file, from 0.
        index: usize,
        /// What webpki said.
        reason: String,
    },
}

/// What we need from a leaf certificate, read with x509-parser.
#[derive(Debug, Clone)]
pub(crate) struct LeafInfo {
    pub(crate) spiffe_id: Result<SpiffeId, SvidProblem>,
    pub(crate) serial: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// `Some(false)` when a keyUsage extension is present without digitalSignature.
    pub(crate) digital_signature: Option<bool>,
}

/// Why a leaf certificate carries no usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidProblem {
    /// No URI SAN at all.
    #[error("no URI SAN (an X.509-SVID carries its SPIFFE ID as its one URI SAN)")]
    NoUriSan,
    /// More than one URI SAN.
    #[error("{0} URI SANs; an X.509-SVID has exactly one")]
    SeveralUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a SPIFFE ID: {error}")]
    NotSpiffe {
        /// The SAN.
        uri: String,
        /// Why.
        error: SpiffeIdError,
    },
}

fn unix(ts: i64) -> SystemTime {
    match u64::try_from(ts) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

/// Parses a DER certificate for its SPIFFE ID, serial, validity and key usage.
pub(crate) fn leaf_info(der: &[u8]) -> Result<LeafInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let sans = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let spiffe_id = match uris.as_slice() {
        [] => Err(SvidProblem::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(|error| SvidProblem::NotSpiffe {
            uri: (*uri).to_owned(),
            error,
        }),
        more => Err(SvidProblem::SeveralUriSans(more.len())),
    };
    let digital_signature = cert
        .key_usage()
        .map_err(|e| e.to_string())?
        .map(|ku| ku.value.digital_signature());
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(LeafInfo {
        spiffe_id,
        serial,
        not_before: unix(cert.validity().not_before.timestamp()),
        not_after: unix(cert.validity().not_after.timestamp()),
        digital_signature,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read {
        origin: path.display().to_string(),
        source,
    })
}

/// A PEM error as a person reads it: the marker lines as text, not as byte arrays
/// (rustls-pki-types prints `[45, 45, ...]`).
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    match e {
        Error::MissingSectionEnd { end_marker } => {
            // The marker is the label only (`CERTIFICATE`).
            format!(
                "the section has no \"-----END {}-----\" line (truncated file?)",
                text(end_marker)
            )
        }
        Error::IllegalSectionStart { line } => {
            format!("{:?} is not a valid BEGIN line", text(line))
        }
        Error::Base64Decode(reason) => format!("the base64 inside a section is corrupt: {reason}"),
        Error::NoItemsFound => "no PEM section of the expected kind".to_owned(),
        other => other.to_string(),
    }
}

fn parse_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Pem {
            origin: origin.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(CertificateError::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

/// Our own identity: an X.509-SVID chain, its private key, and the SPIFFE ID read from the
/// leaf's URI SAN. Ready for rustls (the key is loaded once, here).
#[derive(Clone)]
pub struct CertifiedIdentity {
    key: Arc<CertifiedKey>,
    spiffe_id: SpiffeId,
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for CertifiedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedIdentity")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl CertifiedIdentity {
    /// From DER: the chain (leaf first) and its private key.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        origin: &str,
    ) -> Result<Self, CertificateError> {
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::NoCertificate {
                origin: origin.to_owned(),
            });
        };
        let info = leaf_info(leaf).map_err(|reason| CertificateError::BadCertificate {
            origin: origin.to_owned(),
            index: 0,
            reason,
        })?;
        let spiffe_id = info
            .spiffe_id
            .map_err(|problem| CertificateError::NotAnSvid {
                origin: origin.to_owned(),
                reason: problem.to_string(),
            })?;
        let signing_key = super::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertificateError::BadKey {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|e| CertificateError::KeyMismatch {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            key: Arc::new(certified),
            spiffe_id,
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// From PEM text: a certificate chain (leaf first) and a private key.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        origin: &str,
    ) -> Result<Self, CertificateError> {
        let chain = parse_certs(chain_pem, origin)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoKey {
                origin: origin.to_owned(),
            },
            other => CertificateError::Pem {
                origin: origin.to_owned(),
                reason: pem_reason(&other),
            },
        })?;
        Self::from_der(chain, key, origin)
    }

    /// From PEM files: the chain (Istio's `cert-chain.pem`) and key (`key.pem`).
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<Self, CertificateError> {
        let chain_pem = read(chain)?;
        let key_pem = read(key)?;
        let origin = format!("{} + {}", chain.display(), key.display());
        Self::from_pem(&chain_pem, &key_pem, &origin)
    }

    /// The SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// The leaf's serial number in lower-case hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// When the leaf becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain and signing key as rustls uses them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

/// The roots peers are verified against, and the trust domain they stand for (when known;
/// then a peer from another trust domain is rejected even if its chain verifies).
#[derive(Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Arc<[TrustAnchor<'static>]>,
    trust_domain: Option<TrustDomain>,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.roots.len())
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

impl TrustBundle {
    /// From DER root certificates.
    pub fn from_der(
        roots: Vec<CertificateDer<'static>>,
        origin: &str,
    ) -> Result<Self, CertificateError> {
        if roots.is_empty() {
            return Err(CertificateError::NoCertificate {
                origin: origin.to_owned(),
            });
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| CertificateError::BadRoot {
                        origin: origin.to_owned(),
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            roots,
            anchors: anchors.into(),
            trust_domain: None,
        })
    }

    /// From PEM text holding one or more root certificates.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, CertificateError> {
        Self::from_der(parse_certs(pem, origin)?, origin)
    }

    /// From a PEM file (Istio's `root-cert.pem`).
    pub fn from_pem_file(path: &Path) -> Result<Self, CertificateError> {
        Self::from_pem(&read(path)?, &path.display().to_string())
    }

    /// Restricts the bundle to one trust domain (`None`: any SPIFFE ID that chains to the
    /// roots, for federation).
    pub fn with_trust_domain(mut self, trust_domain: Option<TrustDomain>) -> Self {
        self.trust_domain = trust_domain;
        self
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The trust domain, if the bundle is restricted to one.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

#[cfg(test)]
mod pem_tests {
    use super::*;

    #[test]
    fn pem_errors_read_as_text() {
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let err = TrustBundle::from_pem(truncated, "root-cert.pem").expect_err("truncated");
        let shown = err.to_string();
        assert_eq!(
            shown,
            "root-cert.pem: malformed PEM: the section has no \"-----END CERTIFICATE-----\" line (truncated file?)"
        );
        let corrupt = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let shown = TrustBundle::from_pem(corrupt, "r.pem")
            .expect_err("corrupt")
            .to_string();
        assert!(
            shown.starts_with("r.pem: malformed PEM: the base64 inside a section is corrupt"),
            "{shown}"
        );
        assert!(!shown.contains("[45"), "{shown}");
    }
}
