//! The harness of the development control plane's input: multi-document Istio YAML
//! (VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy and the
//! endpoints document) through `control_plane::input`, mesh-core's Istio translation, and
//! the conversion into the Envoy resources it serves. What it serves must be accepted by
//! our own xDS client: a rejection there is a bug of one side or the other.
//!
//! Shared by `fuzz_targets/istio_yaml.rs` and `examples/control-plane/tests/fuzz_seeds.rs`.

use control_plane::envoy::sidecar::is_sidecar_listener;
use control_plane::input::Input;
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::resource::{
    ClusterResource, EndpointsResource, FieldError, ListenerResource, ResourceType,
    RouteConfigurationResource, XdsType,
};
use mesh_xds_client::shape::IstioShape;
use prost::Message;

fn accepted<T: ResourceType>(any: &Any) -> Result<(), FieldError> {
    accepted_as::<T>(any, IstioShape::Proxyless).map(|_| ())
}

fn accepted_as<T: ResourceType>(any: &Any, shape: IstioShape) -> Result<T, FieldError> {
    let message = T::Message::decode(any.value.as_slice())
        .map_err(|e| FieldError::new("", format!("cannot decode: {e}")))?;
    T::validate_as(message, shape)
}

/// One YAML file's text.
pub fn istio_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(input) = Input::from_text(text, "fuzz.yaml") else {
        return;
    };
    let Ok(resources) = input.to_resources() else {
        return;
    };
    for (t, by_name) in &resources.by_type {
        for (name, any) in by_name {
            let verdict = match t {
                // The sidecar shape's listeners, as the mesh reads them in that shape.
                XdsType::Listener if is_sidecar_listener(name) => {
                    accepted_as::<ListenerResource>(any, IstioShape::Sidecar).map(|_| ())
                }
                XdsType::Listener => accepted::<ListenerResource>(any),
                XdsType::RouteConfiguration => accepted::<RouteConfigurationResource>(any),
                XdsType::Cluster => accepted::<ClusterResource>(any),
                XdsType::ClusterLoadAssignment => accepted::<EndpointsResource>(any),
            };
            if let Err(e) = verdict {
                panic!("the control plane serves {t} {name:?}, which our client rejects: {e}");
            }
        }
    }
    // The sidecar shape's clusters: accepted, and usable but for Istio's own.
    for (name, any) in &resources.sidecar_clusters {
        match accepted_as::<ClusterResource>(any, IstioShape::Sidecar) {
            Err(e) => panic!(
                "the control plane serves sidecar cluster {name:?}, which our client rejects: {e}"
            ),
            Ok(c) => {
                let istio_own = name == "PassthroughCluster"
                    || name == "BlackHoleCluster"
                    || name.starts_with("inbound|");
                if let (Some(why), false) = (&c.unsupported, istio_own) {
                    panic!("sidecar cluster {name:?} is not usable by our client: {why}");
                }
            }
        }
    }
}
