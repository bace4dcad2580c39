//! The four resource types of the LDS -> RDS -> CDS -> EDS cascade: decoding from `Any`,
//! validation with field paths, and the names each resource makes the client subscribe to.
//!
//! Resources are kept as the decoded Envoy protos, wrapped with what validation worked out
//! (a listener's route configuration name, a cluster's EDS service name). Translation into
//! mesh-core's model happens later, in [`crate::translate`]-style code, on accepted data only.

mod cluster;
mod endpoints;
mod error;
mod listener;
mod route;

pub use cluster::ClusterResource;
pub use endpoints::EndpointsResource;
pub use error::{FieldError, ResourceError};
pub use listener::{ListenerModel, ListenerResource, ListenerRoute};
pub use route::RouteConfigurationResource;

use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::shape::IstioShape;

/// The xDS resource types the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
}

impl XdsType {
    /// All types, in cascade order.
    pub const ALL: [XdsType; 4] = [
        XdsType::Listener,
        XdsType::RouteConfiguration,
        XdsType::Cluster,
        XdsType::ClusterLoadAssignment,
    ];

    /// The type URL used on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
        }
    }

    /// The type for a type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Whether a state-of-the-world response lists every subscribed resource that exists,
    /// so a missing one has been deleted (LDS and CDS).
    pub fn is_full_state(self) -> bool {
        matches!(self, Self::Listener | Self::Cluster)
    }

    /// A short name for logs: `LDS`, `RDS`, `CDS`, `EDS`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Listener => "LDS",
            Self::RouteConfiguration => "RDS",
            Self::Cluster => "CDS",
            Self::ClusterLoadAssignment => "EDS",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for XdsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// One resource type: how to read its name, validate it and find what it refers to.
///
/// Implemented by the four resource wrappers; the client core dispatches on [`XdsType`].
pub trait ResourceType: Sized + Clone + fmt::Debug + Send + Sync + 'static {
    /// The Envoy proto.
    type Message: Message + Default;
    /// Its xDS type.
    const TYPE: XdsType;
    /// The resource's name as the protocol knows it.
    fn name(message: &Self::Message) -> &str;
    /// Validates the message, with the path of the first rejected field.
    fn validate(message: Self::Message) -> Result<Self, FieldError>;
    /// Validates the message as part of istiod's `shape` output; the proxyless shape is
    /// [`validate`](Self::validate), the sidecar shape reads Envoy's resources leniently
    /// ([`crate::translate::sidecar`]).
    fn validate_as(message: Self::Message, shape: IstioShape) -> Result<Self, FieldError> {
        let _ = shape;
        Self::validate(message)
    }
    /// The resources this one makes the client subscribe to, with their types.
    fn references(&self) -> Vec<(XdsType, String)>;
    /// Wraps it into a [`Resource`].
    fn into_resource(self) -> Resource;
    /// The message it was accepted from.
    fn message(&self) -> &Self::Message;
    /// The resource of this type inside `resource`, if it is one.
    fn from_resource(resource: &Resource) -> Option<&Self>;
}

/// An accepted resource of any type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Resource {
    /// A listener.
    Listener(Arc<ListenerResource>),
    /// A route configuration.
    RouteConfiguration(Arc<RouteConfigurationResource>),
    /// A cluster.
    Cluster(Arc<ClusterResource>),
    /// A cluster's endpoints.
    ClusterLoadAssignment(Arc<EndpointsResource>),
}

impl Resource {
    /// Its type.
    pub fn xds_type(&self) -> XdsType {
        match self {
            Self::Listener(_) => XdsType::Listener,
            Self::RouteConfiguration(_) => XdsType::RouteConfiguration,
            Self::Cluster(_) => XdsType::Cluster,
            Self::ClusterLoadAssignment(_) => XdsType::ClusterLoadAssignment,
        }
    }

    /// The resources it makes the client subscribe to.
    pub fn references(&self) -> Vec<(XdsType, String)> {
        match self {
            Self::Listener(r) => r.references(),
            Self::RouteConfiguration(r) => r.references(),
            Self::Cluster(r) => r.references(),
            Self::ClusterLoadAssignment(r) => r.references(),
        }
    }

    /// Sidecar shape: what of it the mesh does not honour, by name (Istio's filters,
    /// chains it has no use for, a cluster it cannot use). Empty in the proxyless shape,
    /// which rejects such resources instead.
    pub fn not_applied(&self) -> Vec<String> {
        match self {
            Self::Listener(l) => match &l.model {
                ListenerModel::Sidecar(s) => s.skipped.clone(),
                _ => Vec::new(),
            },
            Self::Cluster(c) => c
                .unsupported
                .iter()
                .map(|why| format!("not usable: {why}"))
                .chain(c.skipped.iter().cloned())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What became of one entry of a response.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Valid, with its name.
    Valid(String, Resource),
    /// Its name is known but it was rejected.
    Invalid(String, ResourceError),
    /// Not even its name could be read.
    Undecodable(ResourceError),
}

const WRAPPER_TYPE_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// Decodes and validates the `index`-th resource of a response of type `xds_type`.
#[cfg(test)]
pub(crate) fn decode(xds_type: XdsType, index: usize, any: &Any) -> Decoded {
    decode_with(xds_type, index, any, IstioShape::Proxyless, &|_| None)
}

/// [`decode`], reusing `previous(name)` as is when the message is the one it was accepted
/// from: a state-of-the-world response repeats unchanged resources, which then cost a
/// decode and a comparison, not a validation and a translation.
pub(crate) fn decode_with(
    xds_type: XdsType,
    index: usize,
    any: &Any,
    shape: IstioShape,
    previous: &dyn Fn(&str) -> Option<Resource>,
) -> Decoded {
    // With the `xds.config.resource-in-sotw` client feature, a server may wrap resources.
    if any.type_url == WRAPPER_TYPE_URL {
        use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
        return match Wrapper::decode(any.value.as_slice()) {
            Ok(Wrapper {
                resource: Some(inner),
                ..
            }) => decode_with(xds_type, index, &inner, shape, previous),
            Ok(Wrapper { name, .. }) => Decoded::Invalid(
                name.clone(),
                ResourceError::Invalid {
                    name,
                    error: FieldError::new("resource", "wrapper without a resource"),
                },
            ),
            Err(e) => Decoded::Undecodable(ResourceError::Decode {
                index,
                type_url: any.type_url.clone(),
                message: e.to_string(),
            }),
        };
    }
    if any.type_url != xds_type.type_url() {
        return Decoded::Undecodable(ResourceError::WrongType {
            index,
            expected: xds_type.type_url().to_owned(),
            found: any.type_url.clone(),
        });
    }
    match xds_type {
        XdsType::Listener => decode_as::<ListenerResource>(index, any, shape, previous),
        XdsType::RouteConfiguration => {
            decode_as::<RouteConfigurationResource>(index, any, shape, previous)
        }
        XdsType::Cluster => decode_as::<ClusterResource>(index, any, shape, previous),
        XdsType::ClusterLoadAssignment => {
            decode_as::<EndpointsResource>(index, any, shape, previous)
        }
    }
}

fn decode_as<T: ResourceType>(
    index: usize,
    any: &Any,
    shape: IstioShape,
    previous: &dyn Fn(&str) -> Option<Resource>,
) -> Decoded
where
    T::Message: PartialEq,
{
    let message = match T::Message::decode(any.value.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            return Decoded::Undecodable(ResourceError::Decode {
                index,
                type_url: any.type_url.clone(),
                message: e.to_string(),
            })
        }
    };
    let name = T::name(&message).to_owned();
    if name.is_empty() {
        return Decoded::Undecodable(ResourceError::Invalid {
            name: format!("#{index}"),
            error: FieldError::new("name", "empty"),
        });
    }
    if let Some(prev) = previous(&name) {
        if T::from_resource(&prev).is_some_and(|p| *p.message() == message) {
            return Decoded::Valid(name, prev);
        }
    }
    match T::validate_as(message, shape) {
        Ok(valid) => Decoded::Valid(name, valid.into_resource()),
        Err(error) => Decoded::Invalid(name.clone(), ResourceError::Invalid { name, error }),
    }
}

/// Packs a message into an `Any` with its type URL (for tests and the test server).
pub fn to_any<M: Message + prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
