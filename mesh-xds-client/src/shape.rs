//! Which of istiod's outputs the client asks for: the proxyless one (gRPC's, the default) or
//! the one it writes for Envoy sidecars.
//!
//! istiod answers a node whose metadata says `GENERATOR: grpc` with its proxyless generator
//! (`pilot/pkg/networking/grpcgen`): listeners named after each target, and clusters that
//! carry only TLS and the load-balancing policy. A DestinationRule's `connectionPool` and
//! `outlierDetection` never reach such a client. Every other node gets the sidecar output:
//! per-port listeners (`0.0.0.0_8080`) whose HttpConnectionManager names a route
//! configuration by port (`8080`), virtual hosts by domain, clusters with every traffic
//! policy, TLS contexts naming SDS secrets (`default`, `ROOTCA`), and the inbound side as
//! the filter chains of `virtualInbound`.
//!
//! [`IstioShape::Sidecar`] takes that output: the node is announced without `GENERATOR`,
//! listeners and clusters are subscribed by wildcard (as Envoy does), targets resolve as an
//! Envoy sidecar resolves them, and what the mesh cannot honour (Istio's own filters,
//! passthrough chains, clusters of other discovery types) is skipped by name and reported,
//! never a reason to NACK. Trade-offs: the client receives the whole mesh's configuration
//! (every listener, cluster and endpoint istiod sends a sidecar; a Sidecar resource limits
//! it), and istiod must know the pod (a Kubernetes Service selecting it, so that
//! `virtualInbound` has chains for its ports).
//!
//! Chosen by `MESH_ISTIO_SHAPE` (`proxyless` or `sidecar`) or in code.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use envoy_types::pb::envoy::config::core::v3::Node;

/// The environment variable that selects the shape.
pub const ENV: &str = "MESH_ISTIO_SHAPE";

/// The prefix of an inbound target in sidecar shape: `virtualInbound/ADDR` stands for the
/// `virtualInbound` filter chains that match `ADDR`'s port.
pub const INBOUND_PREFIX: &str = "virtualInbound/";

/// istiod's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum IstioShape {
    /// The proxyless output (`GENERATOR: grpc`), as gRPC's xDS clients take it.
    #[default]
    Proxyless,
    /// The Envoy sidecar output.
    Sidecar,
}

/// `MESH_ISTIO_SHAPE` holds something else than `proxyless` or `sidecar`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV}={0:?}: expected `proxyless` or `sidecar`")]
pub struct ShapeError(pub String);

impl IstioShape {
    /// The shape `MESH_ISTIO_SHAPE` selects; proxyless when it is unset or empty.
    pub fn from_env() -> Result<Self, ShapeError> {
        match std::env::var(ENV) {
            Ok(value) => value.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::Proxyless),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(ShapeError(v.to_string_lossy().into_owned()))
            }
        }
    }

    /// Whether listeners and clusters are subscribed by wildcard.
    pub fn is_sidecar(self) -> bool {
        self == Self::Sidecar
    }

    /// The node as announced in this shape: in sidecar shape without the `GENERATOR`
    /// metadata key, so that istiod picks its Envoy generator.
    pub fn announce(self, mut node: Node) -> Node {
        if self.is_sidecar() {
            if let Some(meta) = node.metadata.as_mut() {
                meta.fields.remove("GENERATOR");
            }
        }
        node
    }

    /// The name the client watches for an inbound listener bound to `addr`.
    pub fn inbound_target(addr: SocketAddr) -> String {
        format!("{INBOUND_PREFIX}{addr}")
    }

    /// Its name, as `MESH_ISTIO_SHAPE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxyless => "proxyless",
            Self::Sidecar => "sidecar",
        }
    }
}

impl FromStr for IstioShape {
    type Err = ShapeError;

    fn from_str(s: &str) -> Result<Self, ShapeError> {
        match s.trim() {
            "" | "proxyless" => Ok(Self::Proxyless),
            "sidecar" => Ok(Self::Sidecar),
            other => Err(ShapeError(other.to_owned())),
        }
    }
}

impl fmt::Display for IstioShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

    #[test]
    fn parses_both_names_and_refuses_others() {
        assert_eq!("sidecar".parse(), Ok(IstioShape::Sidecar));
        assert_eq!("proxyless".parse(), Ok(IstioShape::Proxyless));
        assert_eq!("".parse(), Ok(IstioShape::Proxyless));
        let err = "envoy".parse::<IstioShape>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "MESH_ISTIO_SHAPE=\"envoy\": expected `proxyless` or `sidecar`"
        );
    }

    #[test]
    fn sidecar_announces_the_node_without_generator() {
        let mut fields = std::collections::HashMap::new();
        for (k, v) in [("GENERATOR", "grpc"), ("NAMESPACE", "default")] {
            fields.insert(
                k.to_owned(),
                Value {
                    kind: Some(Kind::StringValue(v.to_owned())),
                },
            );
        }
        let node = Node {
            id: "sidecar~10.0.0.1~pod.default~default.svc.cluster.local".into(),
            metadata: Some(Struct { fields }),
            ..Node::default()
        };
        let kept = IstioShape::Proxyless.announce(node.clone());
        assert!(kept
            .metadata
            .as_ref()
            .is_some_and(|m| m.fields.contains_key("GENERATOR")));
        let sidecar = IstioShape::Sidecar.announce(node);
        let meta = sidecar.metadata.expect("metadata kept");
        assert!(!meta.fields.contains_key("GENERATOR"));
        assert!(meta.fields.contains_key("NAMESPACE"));
    }
}
