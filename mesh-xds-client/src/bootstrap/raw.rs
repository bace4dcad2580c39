//! The bootstrap file exactly as gRPC defines its JSON; unknown fields are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct RawBootstrap {
    #[serde(default)]
    pub xds_servers: Vec<RawServer>,
    #[serde(default)]
    pub node: Option<RawNode>,
    #[serde(default)]
    pub certificate_providers: BTreeMap<String, RawCertificateProvider>,
    #[serde(default)]
    pub server_listener_resource_name_template: Option<String>,
    #[serde(default)]
    pub client_default_listener_resource_name_template: Option<String>,
    #[serde(default)]
    pub authorities: BTreeMap<String, RawAuthority>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawServer {
    pub server_uri: String,
    #[serde(default)]
    pub channel_creds: Vec<RawChannelCreds>,
    #[serde(default)]
    pub server_features: Vec<String>,
    /// Not gRPC's: Envoy's `ApiConfigSource.api_type` (`GRPC`, `DELTA_GRPC`).
    #[serde(default)]
    pub api_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawChannelCreds {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawNode {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub locality: Option<RawLocality>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawLocality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCertificateProvider {
    pub plugin_name: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawFileWatcher {
    #[serde(default)]
    pub certificate_file: Option<String>,
    #[serde(default)]
    pub private_key_file: Option<String>,
    #[serde(default)]
    pub ca_certificate_file: Option<String>,
    #[serde(default)]
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAuthority {
    #[serde(default)]
    pub client_listener_resource_name_template: Option<String>,
    #[serde(default)]
    pub xds_servers: Vec<RawServer>,
}
