//! `xds_servers` entries: where the control plane is and how to reach it.

use std::path::PathBuf;

use super::error::BootstrapError;
use super::raw::RawServer;
use crate::ads::Protocol;

/// How the channel to a control plane is secured: the first entry of `channel_creds`
/// that this client supports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChannelCreds {
    /// Plaintext (the Istio agent's local socket).
    Insecure,
    /// TLS with the system roots, or the `config` given.
    Tls {
        /// The entry's `config`, untouched.
        config: Option<serde_json::Value>,
    },
    /// Google default credentials.
    GoogleDefault,
}

/// Where a control plane listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTarget {
    /// A Unix domain socket (`unix:///etc/istio/XDS`, `unix:relative/path`).
    Unix(PathBuf),
    /// `host:port`, with any `dns:///` or `xds:///`-free prefix removed.
    Tcp {
        /// `host:port` as written.
        authority: String,
    },
}

/// One `xds_servers` entry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct XdsServer {
    /// `server_uri` as written.
    pub server_uri: String,
    /// Where it leads.
    pub target: ServerTarget,
    /// The credentials picked from `channel_creds`.
    pub channel_creds: ChannelCreds,
    /// `server_features` as written (`xds_v3`, `ignore_resource_deletion`).
    pub server_features: Vec<String>,
    /// The protocol flavour from `api_type` (`GRPC` or `DELTA_GRPC`, as Envoy names them);
    /// `None` leaves the choice to the client's configuration.
    pub api_type: Option<Protocol>,
}

impl XdsServer {
    /// A plaintext server at `host:port`, with no features.
    pub fn insecure(authority: impl Into<String>) -> Self {
        let authority = authority.into();
        Self {
            server_uri: authority.clone(),
            target: ServerTarget::Tcp { authority },
            channel_creds: ChannelCreds::Insecure,
            server_features: Vec::new(),
            api_type: None,
        }
    }

    /// A plaintext server at a `server_uri` (`host:port`, `dns:///host:port`, `unix:///path`).
    pub fn from_uri(server_uri: &str) -> Result<Self, String> {
        Ok(Self {
            server_uri: server_uri.to_owned(),
            target: parse_target(server_uri)?,
            channel_creds: ChannelCreds::Insecure,
            server_features: Vec::new(),
            api_type: None,
        })
    }

    /// The same server spoken to with this protocol flavour.
    pub fn with_api_type(mut self, protocol: Protocol) -> Self {
        self.api_type = Some(protocol);
        self
    }

    /// The same server reached with these credentials.
    pub fn with_channel_creds(mut self, creds: ChannelCreds) -> Self {
        self.channel_creds = creds;
        self
    }

    /// Whether `server_features` holds `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.server_features.iter().any(|f| f == feature)
    }

    /// gRFC A53: keep LDS/CDS resources a response no longer lists.
    pub fn ignore_resource_deletion(&self) -> bool {
        self.has_feature("ignore_resource_deletion")
    }
}

/// Parses a `server_uri`.
pub(super) fn parse_target(uri: &str) -> Result<ServerTarget, String> {
    if let Some(rest) = uri.strip_prefix("unix:") {
        // `unix:///abs/path` and `unix:/abs/path` are absolute; `unix:rel` is relative.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err("unix: URI without a path".into());
        }
        return Ok(ServerTarget::Unix(PathBuf::from(path)));
    }
    let authority = if let Some(rest) = uri.strip_prefix("dns:") {
        // `dns:///host:port` or `dns://resolver/host:port`: the host is after the last `/`.
        rest.rsplit('/').next().unwrap_or(rest)
    } else if let Some((scheme, _)) = uri.split_once("://") {
        return Err(format!("unsupported URI scheme `{scheme}`"));
    } else {
        uri
    };
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!("`{authority}` has no port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("`{authority}` is not host:port"));
    }
    Ok(ServerTarget::Tcp {
        authority: authority.to_owned(),
    })
}

pub(super) fn check_servers(
    raw: Vec<RawServer>,
    at: &str,
    invalid: &impl Fn(String, String) -> BootstrapError,
) -> Result<Vec<XdsServer>, BootstrapError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, server)| {
            let target = parse_target(&server.server_uri)
                .map_err(|reason| invalid(format!("{at}[{i}].server_uri"), reason))?;
            let (j, channel_creds) = server
                .channel_creds
                .into_iter()
                .enumerate()
                .find_map(|(j, c)| match c.kind.as_str() {
                    "insecure" => Some((j, ChannelCreds::Insecure)),
                    "tls" => Some((j, ChannelCreds::Tls { config: c.config })),
                    "google_default" => Some((j, ChannelCreds::GoogleDefault)),
                    _ => None,
                })
                .ok_or_else(|| {
                    invalid(
                        format!("{at}[{i}].channel_creds"),
                        "no supported type (insecure, tls, google_default)".into(),
                    )
                })?;
            if let ChannelCreds::Tls {
                config: Some(config),
            } = &channel_creds
            {
                check_tls_config(config).map_err(|(field, reason)| {
                    invalid(
                        format!("{at}[{i}].channel_creds[{j}].config{field}"),
                        reason,
                    )
                })?;
            }
            let api_type = match server.api_type.as_deref() {
                None => None,
                Some("GRPC") => Some(Protocol::StateOfTheWorld),
                Some("DELTA_GRPC") => Some(Protocol::Delta),
                Some(other) => {
                    return Err(invalid(
                        format!("{at}[{i}].api_type"),
                        format!("`{other}` is not GRPC or DELTA_GRPC"),
                    ))
                }
            };
            Ok(XdsServer {
                server_uri: server.server_uri,
                target,
                channel_creds,
                server_features: server.server_features,
                api_type,
            })
        })
        .collect()
}

/// gRPC's `tls` creds config (gRFC A65): the file fields are strings, and a certificate
/// comes with its key. The files themselves are read when connecting (they may appear
/// later, as the Istio agent writes them). Errors: (`.field` or empty, reason).
fn check_tls_config(config: &serde_json::Value) -> Result<(), (String, String)> {
    let Some(object) = config.as_object() else {
        return Err((String::new(), "must be an object".into()));
    };
    for key in [
        "ca_certificate_file",
        "certificate_file",
        "private_key_file",
    ] {
        if object.get(key).is_some_and(|v| !v.is_string()) {
            return Err((format!(".{key}"), "must be a file path (a string)".into()));
        }
    }
    if object.contains_key("certificate_file") != object.contains_key("private_key_file") {
        return Err((
            String::new(),
            "certificate_file and private_key_file must be given together".into(),
        ));
    }
    Ok(())
}
