//! SPIFFE identities for the demo's services, issued on the fly by a test CA into a
//! temporary directory in Istio's file layout (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), the way the Istio agent would write them. Policy files point at them
//! with a `certificates:` block.

use std::path::{Path, PathBuf};

use mesh_tower::identity::testing::TestCa;
use mesh_tower::identity::CertificateSource;

use crate::DemoError;

/// The Kubernetes namespace of every workload of the demo.
pub const NAMESPACE: &str = "default";

/// The service account of the order-service.
pub const ORDER_SA: &str = "order-service";
/// The service account of the payment-service.
pub const PAYMENT_SA: &str = "payment-service";
/// The service account of the caller the payment-service must refuse.
pub const INTRUDER_SA: &str = "intruder";

/// The test CA and the directory of the identities it issued; the directory is removed
/// when this is dropped.
pub struct Identities {
    ca: TestCa,
    root: PathBuf,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Where one workload's certificate files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The service account.
    pub service_account: String,
    /// The directory holding `cert-chain.pem`, `key.pem` and `root-cert.pem`.
    pub dir: PathBuf,
}

impl Issued {
    /// The certificate chain file.
    pub fn chain(&self) -> PathBuf {
        self.dir.join("cert-chain.pem")
    }

    /// The private key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The trust bundle file.
    pub fn roots(&self) -> PathBuf {
        self.dir.join("root-cert.pem")
    }

    /// The SPIFFE ID in its certificate.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(&self.service_account)
    }

    /// The policy file's `certificates:` block for these files.
    pub fn certificates_yaml(&self) -> String {
        format!(
            "certificates:\n  certificateFile: \"{}\"\n  privateKeyFile: \"{}\"\n  caCertificateFile: \"{}\"\n",
            self.chain().display(),
            self.key().display(),
            self.roots().display()
        )
    }

    /// Loads the files as the mesh's certificate source (for a mesh built in code).
    pub fn source(&self) -> Result<CertificateSource, DemoError> {
        Ok(CertificateSource::from_pem_files(
            &self.chain(),
            &self.key(),
            &self.roots(),
        )?)
    }
}

/// `spiffe://cluster.local/ns/default/sa/<service_account>`.
pub fn spiffe_id(service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/{service_account}")
}

impl Identities {
    /// A new test CA and an empty directory under the system's temporary directory.
    pub fn new() -> Result<Self, DemoError> {
        let ca = TestCa::new()?;
        let root = std::env::temp_dir().join(format!(
            "mesh-demo-{}-{}",
            std::process::id(),
            mesh_tower::trace::SpanId::random()
        ));
        std::fs::create_dir_all(&root).map_err(|source| DemoError::Files {
            path: root.clone(),
            source,
        })?;
        Ok(Self { ca, root })
    }

    /// The directory everything is written in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Issues an SVID for `service_account` and writes its files.
    pub fn issue(&self, service_account: &str) -> Result<Issued, DemoError> {
        let dir = self.root.join(service_account);
        self.ca
            .svid(NAMESPACE, service_account)?
            .write_istio_files(&dir, &self.ca)?;
        Ok(Issued {
            service_account: service_account.to_owned(),
            dir,
        })
    }

    /// Writes `text` to the file `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, DemoError> {
        let path = self.root.join(name);
        std::fs::write(&path, text).map_err(|source| DemoError::Files {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for Identities {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
