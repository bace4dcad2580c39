//! The order service's client of the payment service.

use bytes::Bytes;
use payment_api::PaymentServiceClient;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::config::PaymentTarget;

/// A type-erased error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a [`PaymentChannel`]: whatever the transport failed with.
///
/// A named type rather than a bare [`BoxError`]: with `Box<dyn Error>` as the service's
/// error, rustc cannot prove the handlers' futures `Send` ("implementation of `From` is
/// not general enough", a known higher-ranked-lifetime limitation).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PaymentChannelError(BoxError);

impl PaymentChannelError {
    /// The transport's error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

/// Any transport the payment client can run on, type-erased: a plain
/// `tonic::transport::Channel` or the mesh's channel ([`mesh_tower::Mesh::channel`]). Build one with
/// [`boxed_channel`].
pub type PaymentChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    PaymentChannelError,
>;

/// The payment client the handlers use; it does not change when the transport does.
pub type PaymentClient = PaymentServiceClient<PaymentChannel>;

/// Erases the type of a gRPC transport (anything tonic's generated clients accept that is
/// also `Clone + Send + Sync`) into a [`PaymentChannel`].
pub fn boxed_channel<S, B>(service: S) -> PaymentChannel
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        service
            .map_response(|response: http::Response<B>| response.map(tonic::body::Body::new))
            .map_err(|err: S::Error| PaymentChannelError(err.into())),
    )
}

/// Builds the payment client for `target` on the mesh: routing, load balancing, circuit
/// breaking, outlier detection, retries and timeouts all happen inside this channel, as the
/// mesh policy says. A target the policy does not know is dialed by DNS.
pub fn payment_client(target: &PaymentTarget, mesh: &mesh_tower::Mesh) -> PaymentClient {
    PaymentServiceClient::new(boxed_channel(mesh.channel(target.authority())))
}
