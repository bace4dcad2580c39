//! A test CA that issues SPIFFE X.509-SVIDs with rcgen, for tests, examples and the demo,
//! so nobody needs openssl recipes. Also issues the bad certificates verification must
//! reject, and writes Istio's file layout.
//!
//! ```
//! use mesh_tower::identity::testing::{SvidSpec, TestCa};
//!
//! let ca = TestCa::new().unwrap();
//! let order = ca.svid("default", "order-service").unwrap();
//! assert_eq!(
//!     order.identity().unwrap().spiffe_id().as_str(),
//!     "spiffe://cluster.local/ns/default/sa/order-service"
//! );
//! let expired = ca.issue(&SvidSpec::istio("cluster.local", "default", "old").expired()).unwrap();
//! # let _ = expired;
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{CertificateError, CertifiedIdentity, TrustBundle};

/// Why issuing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// rcgen refused the parameters.
    #[error("issuing {what}: {source}")]
    Rcgen {
        /// What was being issued.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Writing the files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which extended key usages a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eku {
    /// serverAuth and clientAuth (an SVID).
    Both,
    /// serverAuth only.
    ServerOnly,
    /// clientAuth only.
    ClientOnly,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SvidSpec {
    /// URI SANs (an SVID has exactly one).
    pub uri_sans: Vec<String>,
    /// DNS SANs (an SVID needs none).
    pub dns_sans: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Extended key usages.
    pub eku: Eku,
    /// Whether keyUsage has digitalSignature (and keyEncipherment).
    pub digital_signature: bool,
    /// A fixed serial; `None` takes the CA's next one.
    pub serial: Option<u64>,
}

impl SvidSpec {
    /// An SVID for `spiffe_id`: valid from an hour ago for a day, digitalSignature +
    /// keyEncipherment, serverAuth + clientAuth, no DNS name.
    pub fn new(spiffe_id: impl Into<String>) -> Self {
        let now = SystemTime::now();
        Self {
            uri_sans: vec![spiffe_id.into()],
            dns_sans: Vec::new(),
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(86_400),
            eku: Eku::Both,
            digital_signature: true,
            serial: None,
        }
    }

    /// Istio's SVID for a service account: `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn istio(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self::new(format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// Expired a day ago.
    pub fn expired(mut self) -> Self {
        let now = SystemTime::now();
        self.not_before = now - Duration::from_secs(2 * 86_400);
        self.not_after = now - Duration::from_secs(86_400);
        self
    }

    /// Valid only from tomorrow.
    pub fn not_yet_valid(mut self) -> Self {
        let now = SystemTime::now();
        self.not_before = now + Duration::from_secs(86_400);
        self.not_after = now + Duration::from_secs(2 * 86_400);
        self
    }

    /// Sets the extended key usages.
    pub fn with_eku(mut self, eku: Eku) -> Self {
        self.eku = eku;
        self
    }

    /// keyUsage without digitalSignature (keyEncipherment only).
    pub fn without_digital_signature(mut self) -> Self {
        self.digital_signature = false;
        self
    }

    /// Adds a DNS SAN.
    pub fn with_dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_sans.push(name.into());
        self
    }

    /// Sets the serial number.
    pub fn with_serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }
}

/// A certificate and key as PEM, as issued.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The chain (the leaf; the CA is self-signed and kept in the bundle), PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf in DER.
    pub der: CertificateDer<'static>,
    /// The serial in lower-case hex, as [`CertifiedIdentity::serial`] shows it.
    pub serial: String,
}

impl IssuedCert {
    /// Loads it as an identity.
    pub fn identity(&self) -> Result<CertifiedIdentity, CertificateError> {
        CertifiedIdentity::from_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
            "issued certificate",
        )
    }

    /// Writes `cert-chain.pem` and `key.pem` into `dir` (made if missing), and
    /// `root-cert.pem` from `ca`.
    pub fn write_istio_files(&self, dir: &Path, ca: &TestCa) -> Result<(), IssueError> {
        std::fs::create_dir_all(dir).map_err(|source| IssueError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        for (name, text) in [
            (super::ISTIO_CERT_CHAIN, self.chain_pem.as_str()),
            (super::ISTIO_KEY, self.key_pem.as_str()),
            (super::ISTIO_ROOT_CERT, ca.root_pem()),
        ] {
            write_atomically(&dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), IssueError> {
    let tmp = path.with_extension("tmp");
    let err = |source| IssueError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&tmp, contents).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A self-signed CA for one trust domain.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    root_der: CertificateDer<'static>,
    trust_domain: String,
    next_serial: AtomicU64,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn rcgen_err(what: &str) -> impl FnOnce(rcgen::Error) -> IssueError + '_ {
    move |source| IssueError::Rcgen {
        what: what.to_owned(),
        source,
    }
}

impl TestCa {
    /// A CA for `cluster.local`, Istio's default trust domain.
    pub fn new() -> Result<Self, IssueError> {
        Self::for_trust_domain("cluster.local")
    }

    /// A CA for `trust_domain`.
    pub fn for_trust_domain(trust_domain: &str) -> Result<Self, IssueError> {
        let key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("mesh test CA {trust_domain}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain.to_owned());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - Duration::from_secs(86_400));
        params.not_after = OffsetDateTime::from(now + Duration::from_secs(365 * 86_400));
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("CA certificate"))?;
        Ok(Self {
            root_pem: cert.pem(),
            root_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.to_owned(),
            next_serial: AtomicU64::new(1000),
        })
    }

    /// The root certificate, PEM (Istio's `root-cert.pem`).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// A bundle of this CA's root.
    pub fn bundle(&self) -> Result<TrustBundle, CertificateError> {
        TrustBundle::from_der(vec![self.root_der.clone()], "test CA")
    }

    /// Istio's SVID for `namespace`/`service_account` in this CA's trust domain.
    pub fn svid(&self, namespace: &str, service_account: &str) -> Result<IssuedCert, IssueError> {
        self.issue(&SvidSpec::istio(
            &self.trust_domain,
            namespace,
            service_account,
        ))
    }

    /// Issues a leaf certificate as `spec` says.
    pub fn issue(&self, spec: &SvidSpec) -> Result<IssuedCert, IssueError> {
        let what = spec.uri_sans.first().map(String::as_str).unwrap_or("leaf");
        let key = KeyPair::generate().map_err(rcgen_err(what))?;
        let mut params = CertificateParams::default();
        let mut sans = Vec::new();
        for uri in &spec.uri_sans {
            sans.push(SanType::URI(
                Ia5String::try_from(uri.clone()).map_err(rcgen_err(what))?,
            ));
        }
        for dns in &spec.dns_sans {
            sans.push(SanType::DnsName(
                Ia5String::try_from(dns.clone()).map_err(rcgen_err(what))?,
            ));
        }
        params.subject_alt_names = sans;
        params.key_usages = if spec.digital_signature {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::KeyEncipherment]
        };
        params.extended_key_usages = match spec.eku {
            Eku::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Eku::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Eku::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = OffsetDateTime::from(spec.not_before);
        params.not_after = OffsetDateTime::from(spec.not_after);
        let serial = spec
            .serial
            .unwrap_or_else(|| self.next_serial.fetch_add(1, Ordering::Relaxed));
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err(what))?;
        // Read back the way CertifiedIdentity reads it, so the two always compare equal.
        let serial_hex = super::certs::leaf_info(cert.der())
            .map(|info| info.serial)
            .unwrap_or_default();
        Ok(IssuedCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            serial: serial_hex,
        })
    }
}
