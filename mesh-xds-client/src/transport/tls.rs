//! TLS channel credentials to the control plane: gRPC's `tls` creds config (gRFC A65's
//! names: `ca_certificate_file`, `certificate_file`, `private_key_file`) over rustls with
//! the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

use super::TransportError;

/// The `config` of a `tls` channel creds entry.
#[derive(Debug, Default, Deserialize)]
struct TlsCredsConfig {
    #[serde(default)]
    ca_certificate_file: Option<PathBuf>,
    #[serde(default)]
    certificate_file: Option<PathBuf>,
    #[serde(default)]
    private_key_file: Option<PathBuf>,
}

/// What a TLS connection to one server needs.
#[derive(Debug, Clone)]
pub(super) struct TlsSettings {
    pub(super) config: Arc<rustls::ClientConfig>,
    pub(super) server_name: ServerName<'static>,
}

/// Builds the client configuration for `server_uri` at `authority` from the creds'
/// `config`; every error names the server and the file or field.
pub(super) fn settings(
    server_uri: &str,
    authority: &str,
    config: Option<&serde_json::Value>,
) -> Result<TlsSettings, TransportError> {
    let fail = |reason: String| TransportError::Tls {
        server: server_uri.to_owned(),
        reason,
    };
    let creds: TlsCredsConfig = match config {
        None => TlsCredsConfig::default(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| fail(format!("channel_creds tls config: {e}")))?,
    };
    let ca = creds.ca_certificate_file.ok_or_else(|| {
        fail("ca_certificate_file is required (system roots are not supported)".into())
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&ca).map_err(fail)? {
        roots
            .add(cert)
            .map_err(|e| fail(format!("ca_certificate_file {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (creds.certificate_file, creds.private_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(&cert).map_err(fail)?;
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| fail(format!("private_key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail(format!("client certificate: {e}")))?
        }
        _ => {
            return Err(fail(
                "certificate_file and private_key_file must be given together".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| fail(format!("`{host}` is not a TLS server name: {e}")))?;
    Ok(TlsSettings {
        config: Arc::new(config),
        server_name,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
