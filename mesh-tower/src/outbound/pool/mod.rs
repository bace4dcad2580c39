//! Connections to a cluster's endpoints.
//!
//! Each endpoint's state holds its pools, so a request finds its connection without a keyed
//! lookup: [`H1Pool`] (HTTP/1.1, and ALPN when the cluster offers both) and [`H2Pool`]
//! (HTTP/2, one shared connection).

mod h1;
mod h2;
mod registry;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;

pub(crate) use h1::{H1Pool, IDLE_TIMEOUT};
pub(crate) use h2::H2Pool;
pub(crate) use registry::ByAuthority;

/// `http://authority/`: what a pool's connector dials.
fn endpoint_uri(authority: &http::uri::Authority) -> http::Uri {
    http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .unwrap_or_default()
}

/// A request on its way through an endpoint's pool.
pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Result<Answered, PoolError>> + Send>>;

/// A pool's response to a request.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) resp: Response<Incoming>,
    /// What the server said of itself in Istio's metadata exchange (the id of its
    /// metadata, or what the connection remembers of it), when the pool exchanges it;
    /// `None` when it does not.
    pub(crate) peer: Option<Option<u32>>,
}

/// A connection's end of the metadata exchange, when its pool exchanges it: `metrics`
/// holds this workload's metadata.
fn exchange_end(
    connector: &super::connect::MeshConnector,
    io: &super::connect::MeshIo,
) -> Option<crate::metrics::ClientEnd> {
    connector
        .exchange()
        .and_then(|metrics| io.exchange_end(metrics))
}

use super::connect::ConnectError;

/// Why a request got no response from its pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// The dial failed (shared by the requests that waited for it).
    #[error(transparent)]
    Connect(Arc<ConnectError>),
    /// The handshake on a new connection failed.
    #[error("handshake")]
    Handshake(#[source] Arc<hyper::Error>),
    /// A version hyper's HTTP/1 client cannot write (HTTP/0.9, HTTP/3, an HTTP/1.0
    /// CONNECT).
    #[error("{0:?} is not sent on an HTTP/1.1 connection")]
    Unsupported(http::Version),
    /// The connection failed the request.
    #[error(transparent)]
    Send(hyper::Error),
    /// The connection failed before it took the request: the connection's own error.
    #[error("the connection failed before it took the request")]
    ConnectionFailed(#[source] Arc<hyper::Error>),
    /// The dial's task ended without an answer (the runtime is shutting down).
    #[error("the dial for this request was dropped")]
    DialDropped,
}

impl PoolError {
    /// The connector's error, if the dial failed.
    pub(crate) fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Handshake(_)
            | Self::Send(_)
            | Self::ConnectionFailed(_)
            | Self::DialDropped
            | Self::Unsupported(_) => None,
        }
    }
}
