//! gRPC's xDS bootstrap: which control plane to talk to, who we are, and where our
//! certificates live.
//!
//! The format is gRPC's (gRFC A27, with A29's certificate providers and A47's
//! authorities), read from the file named by `GRPC_XDS_BOOTSTRAP` or from the JSON in
//! `GRPC_XDS_BOOTSTRAP_CONFIG`. Unknown fields are ignored, so the files the Istio agent
//! writes load as they are.
//!
//! Per `xds_servers` entry, beyond gRPC's fields:
//! - `"api_type": "DELTA_GRPC"` (or `"GRPC"`) picks the incremental or state-of-the-world
//!   protocol for that server, with Envoy's `ApiConfigSource.api_type` names. gRPC's
//!   bootstrap has no such field (gRPC speaks state of the world only), so gRPC ignores it
//!   and the file stays valid for both. Without it, the client's configuration decides
//!   ([`crate::ads::AdsConfig::protocol`], state of the world by default). Any other value
//!   is an error naming `xds_servers[i].api_type`.
//! - `channel_creds` `{"type": "tls", "config": {...}}` takes gRPC's TLS creds fields
//!   (gRFC A65): `ca_certificate_file` (required: there are no system roots here),
//!   `certificate_file` and `private_key_file` (together, for mutual TLS). The files are
//!   read when the client connects; a bad one is reported in the client's view.
//! - Several servers are tried in order, as gRFC A71 says (see [`crate::transport`]).
//!
//! ```
//! use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource, ServerTarget};
//!
//! let json = r#"{
//!   "xds_servers": [{"server_uri": "unix:///etc/istio/XDS",
//!                    "channel_creds": [{"type": "insecure"}],
//!                    "server_features": ["xds_v3"]}],
//!   "node": {"id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
//!            "metadata": {"GENERATOR": "grpc"}}
//! }"#;
//! let bootstrap = Bootstrap::from_json(json, BootstrapSource::Inline)?;
//! assert_eq!(
//!     bootstrap.xds_servers[0].target,
//!     ServerTarget::Unix("/etc/istio/XDS".into())
//! );
//! assert_eq!(bootstrap.node.metadata_str("GENERATOR"), Some("grpc"));
//! # Ok::<(), mesh_xds_client::bootstrap::BootstrapError>(())
//! ```

mod error;
mod node;
mod raw;
mod server;

pub use error::{BootstrapError, BootstrapSource};
pub use node::{json_object_to_struct, json_to_value, NodeConfig, NodeLocality};
pub use server::{ChannelCreds, ServerTarget, XdsServer};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawBootstrap;

/// The variable naming a bootstrap file.
pub const BOOTSTRAP_PATH_VAR: &str = "GRPC_XDS_BOOTSTRAP";
/// The variable holding bootstrap JSON.
pub const BOOTSTRAP_CONFIG_VAR: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// A loaded, checked bootstrap.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Bootstrap {
    /// The control planes, in order of preference (gRFC A71 falls back down the list).
    pub xds_servers: Vec<XdsServer>,
    /// Who we are.
    pub node: NodeConfig,
    /// Certificate provider instances by name (Istio: `default`).
    pub certificate_providers: BTreeMap<String, CertificateProvider>,
    /// The name template of inbound listeners (Istio: `xds.istio.io/grpc/lds/inbound/%s`).
    pub server_listener_resource_name_template: Option<String>,
    /// The name template of outbound listeners; `%s` when absent.
    pub client_default_listener_resource_name_template: String,
    /// Federation authorities (gRFC A47) by name.
    pub authorities: BTreeMap<String, Authority>,
}

/// A federation authority (gRFC A47).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Authority {
    /// Listener name template for targets of this authority.
    pub client_listener_resource_name_template: Option<String>,
    /// Its own servers; empty means the top-level ones.
    pub xds_servers: Vec<XdsServer>,
}

/// A certificate provider instance.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CertificateProvider {
    /// `file_watcher`: PEM files re-read every `refresh_interval` (what the Istio agent uses).
    FileWatcher(FileWatcherConfig),
    /// A plugin this crate does not know; kept so a resource naming it gets a clear error.
    Other {
        /// `plugin_name`.
        plugin_name: String,
        /// Its `config`, untouched.
        config: serde_json::Value,
    },
}

/// The `file_watcher` plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileWatcherConfig {
    /// Our certificate chain (PEM).
    pub certificate_file: Option<PathBuf>,
    /// Our private key (PEM).
    pub private_key_file: Option<PathBuf>,
    /// The roots (PEM).
    pub ca_certificate_file: Option<PathBuf>,
    /// How often to re-read the files; gRPC's default is 10 minutes.
    pub refresh_interval: Duration,
}

impl Bootstrap {
    /// Loads the bootstrap from the process environment: `GRPC_XDS_BOOTSTRAP` first, then
    /// `GRPC_XDS_BOOTSTRAP_CONFIG`, as gRPC does.
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Bootstrap::from_env`], with the variables read through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, BootstrapError> {
        if let Some(path) = get(BOOTSTRAP_PATH_VAR).filter(|p| !p.is_empty()) {
            return Self::from_file(path);
        }
        if let Some(json) = get(BOOTSTRAP_CONFIG_VAR).filter(|j| !j.is_empty()) {
            return Self::from_json(&json, BootstrapSource::EnvVar(BOOTSTRAP_CONFIG_VAR));
        }
        Err(BootstrapError::NotConfigured)
    }

    /// Loads a bootstrap file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BootstrapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| BootstrapError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_json(&text, BootstrapSource::File(path.to_owned()))
    }

    /// Parses bootstrap JSON; `origin` is named in errors.
    pub fn from_json(json: &str, origin: BootstrapSource) -> Result<Self, BootstrapError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let raw: RawBootstrap =
            serde_path_to_error::deserialize(de).map_err(|e| BootstrapError::Json {
                origin: origin.clone(),
                json_path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        Self::check(raw, &origin)
    }

    fn check(raw: RawBootstrap, origin: &BootstrapSource) -> Result<Self, BootstrapError> {
        let invalid = |json_path: String, reason: String| BootstrapError::Invalid {
            origin: origin.clone(),
            json_path,
            reason,
        };
        if raw.xds_servers.is_empty() {
            return Err(invalid(
                "xds_servers".into(),
                "must list at least one server".into(),
            ));
        }
        let xds_servers = server::check_servers(raw.xds_servers, "xds_servers", &invalid)?;
        let node = raw.node.map(|n| NodeConfig {
            id: n.id,
            cluster: n.cluster,
            locality: n.locality.map(|l| NodeLocality {
                region: l.region,
                zone: l.zone,
                sub_zone: l.sub_zone,
            }),
            metadata: n.metadata,
        });
        let mut certificate_providers = BTreeMap::new();
        for (name, provider) in raw.certificate_providers {
            let at = format!("certificate_providers.{name}");
            let checked = check_provider(provider, &at, &invalid)?;
            certificate_providers.insert(name, checked);
        }
        let mut authorities = BTreeMap::new();
        for (name, auth) in raw.authorities {
            let at = format!("authorities.{name}.xds_servers");
            authorities.insert(
                name,
                Authority {
                    client_listener_resource_name_template: auth
                        .client_listener_resource_name_template,
                    xds_servers: server::check_servers(auth.xds_servers, &at, &invalid)?,
                },
            );
        }
        Ok(Self {
            xds_servers,
            node: node.unwrap_or_default(),
            certificate_providers,
            server_listener_resource_name_template: raw.server_listener_resource_name_template,
            client_default_listener_resource_name_template: raw
                .client_default_listener_resource_name_template
                .unwrap_or_else(|| "%s".to_owned()),
            authorities,
        })
    }

    /// The listener resource name for an outbound target (`payment-service:8080`), from
    /// `client_default_listener_resource_name_template`.
    pub fn client_listener_name(&self, target: &str) -> String {
        self.client_default_listener_resource_name_template
            .replace("%s", target)
    }
}

fn check_provider(
    provider: raw::RawCertificateProvider,
    at: &str,
    invalid: &impl Fn(String, String) -> BootstrapError,
) -> Result<CertificateProvider, BootstrapError> {
    if provider.plugin_name != "file_watcher" {
        return Ok(CertificateProvider::Other {
            plugin_name: provider.plugin_name,
            config: provider.config,
        });
    }
    let fw: raw::RawFileWatcher = serde_path_to_error::deserialize(provider.config)
        .map_err(|e| invalid(format!("{at}.config.{}", e.path()), e.inner().to_string()))?;
    let refresh_interval = match fw.refresh_interval {
        None => Duration::from_secs(600),
        Some(text) => parse_duration(&text).ok_or_else(|| {
            invalid(
                format!("{at}.config.refresh_interval"),
                format!("`{text}` is not a duration like \"900s\""),
            )
        })?,
    };
    if fw.certificate_file.is_some() != fw.private_key_file.is_some() {
        return Err(invalid(
            format!("{at}.config"),
            "certificate_file and private_key_file must be given together".into(),
        ));
    }
    if fw.certificate_file.is_none() && fw.ca_certificate_file.is_none() {
        return Err(invalid(
            format!("{at}.config"),
            "names neither a certificate nor a CA certificate file".into(),
        ));
    }
    Ok(CertificateProvider::FileWatcher(FileWatcherConfig {
        certificate_file: fw.certificate_file.map(PathBuf::from),
        private_key_file: fw.private_key_file.map(PathBuf::from),
        ca_certificate_file: fw.ca_certificate_file.map(PathBuf::from),
        refresh_interval,
    }))
}

/// A protobuf JSON duration: decimal seconds followed by `s` (`"900s"`, `"1.5s"`).
fn parse_duration(text: &str) -> Option<Duration> {
    let secs = text.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(whole, nanos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
