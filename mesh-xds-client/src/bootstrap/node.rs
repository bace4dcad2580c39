//! The `node` section and its conversion to the Envoy `Node` proto.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf as pbuf;

/// Where the service runs (Envoy's `Locality`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLocality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// The node the client announces to the control plane, as the bootstrap gives it.
///
/// The metadata is sent as written: istiod needs `GENERATOR: grpc` to send proxyless
/// configuration, and the Istio agent's bootstrap carries it; nothing is added here.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.locality`, when present.
    pub locality: Option<NodeLocality>,
    /// `node.metadata`, as JSON.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl NodeConfig {
    /// A node with this id and nothing else.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Sets `metadata[key]` (`GENERATOR: grpc` asks istiod for its proxyless output).
    pub fn with_metadata(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// The metadata value under `key` when it is a string (`GENERATOR` -> `grpc`).
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(|v| v.as_str())
    }

    /// The `Node` proto sent in the first request of each stream.
    pub fn to_proto(&self) -> core::Node {
        core::Node {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            metadata: (!self.metadata.is_empty()).then(|| json_object_to_struct(&self.metadata)),
            locality: self.locality.as_ref().map(|l| core::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            user_agent_name: env!("CARGO_PKG_NAME").to_owned(),
            user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").to_owned(),
            )),
            client_features: vec![
                "envoy.lb.does_not_support_overprovisioning".to_owned(),
                "xds.config.resource-in-sotw".to_owned(),
            ],
            ..core::Node::default()
        }
    }
}

/// JSON object -> `google.protobuf.Struct`.
pub fn json_object_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> pbuf::Struct {
    pbuf::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// JSON value -> `google.protobuf.Value` (numbers become doubles, as in proto3 JSON).
pub fn json_to_value(value: &serde_json::Value) -> pbuf::Value {
    use pbuf::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(pbuf::NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(pbuf::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_object_to_struct(map)),
    };
    pbuf::Value { kind: Some(kind) }
}
