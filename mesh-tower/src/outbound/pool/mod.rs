//! Connections to a cluster's endpoints.
//!
//! HTTP/2 has a pool per endpoint ([`H2Pool`]), held by the endpoint's state, so a request
//! finds its connection without a keyed lookup. HTTP/1.1 (and ALPN) goes through hyper-util's
//! pool, keyed by the endpoint's authority, with the endpoint's dial demand
//! ([`demand`](super::demand)) deciding when it dials.

mod h2;
mod registry;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use hyper::body::Incoming;

pub(crate) use h2::{H2Future, H2Pool};
pub(crate) use registry::ByAuthority;

use super::connect::ConnectError;

/// Why a request got no response from its pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// From hyper-util's pool (HTTP/1.1).
    #[error(transparent)]
    Http1(hyper_util::client::legacy::Error),
    /// The dial failed (shared by the requests that waited for it).
    #[error(transparent)]
    Connect(Arc<ConnectError>),
    /// The HTTP/2 handshake on a new connection failed.
    #[error("HTTP/2 handshake: {0}")]
    Handshake(Arc<hyper::Error>),
    /// The connection failed the request.
    #[error(transparent)]
    Send(hyper::Error),
    /// The dial's task ended without an answer (the runtime is shutting down).
    #[error("the dial for this request was dropped")]
    DialDropped,
}

impl PoolError {
    /// The connector's error, if the dial failed.
    pub(crate) fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Http1(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(s) = source {
                    if let Some(ce) = s.downcast_ref::<ConnectError>() {
                        return Some(ce);
                    }
                    source = s.source();
                }
                None
            }
            Self::Handshake(_) | Self::Send(_) | Self::DialDropped => None,
        }
    }

    /// Whether no connection was made for the request (a connect failure, not a reset).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Http1(e) => e.is_connect(),
            Self::Handshake(_) | Self::Send(_) | Self::DialDropped => false,
        }
    }
}

/// A request on its way through a pool.
pub(crate) enum PoolCall {
    Http1(hyper_util::client::legacy::ResponseFuture),
    Http2(H2Future),
}

impl Future for PoolCall {
    type Output = Result<Response<Incoming>, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both are boxed futures: `Unpin`.
        match self.get_mut() {
            Self::Http1(call) => Pin::new(call).poll(cx).map_err(PoolError::Http1),
            Self::Http2(call) => call.as_mut().poll(cx),
        }
    }
}
