//! What passes between the layers of a cluster's stack: one attempt of a request, and how
//! it failed.

use std::net::SocketAddr;

use http::{Request, Response};
use mesh_core::classify::{classify, ResponseClass, TransportError};
use tokio::time::Instant;

use super::response::ResponseBody;
use super::RequestBody;
use crate::error::MeshError;

/// One try of a request at a cluster, with what the layers below need to know of it.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) req: Request<RequestBody>,
    /// The ring-hash key from the route's (or the cluster's) hash policies.
    pub(crate) hash: Option<u64>,
    /// The endpoint the previous attempt went to, avoided when another is available.
    pub(crate) avoid: Option<SocketAddr>,
    /// When this attempt must have its response head (the per-try timeout within the
    /// call's).
    pub(crate) deadline: Option<Instant>,
    /// When the call began, for the timeout's error.
    pub(crate) started: Instant,
}

impl Attempt {
    /// An attempt of `req` begun at `started` (the clock read once per call), with no
    /// deadline or endpoint preference.
    pub(crate) fn new(req: Request<RequestBody>, started: Instant) -> Self {
        Self {
            req,
            hash: None,
            avoid: None,
            deadline: None,
            started,
        }
    }

    /// A copy to send again, when its body is held in memory.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        let body = self.req.body().try_clone()?;
        let mut req = Request::new(body);
        *req.method_mut() = self.req.method().clone();
        *req.uri_mut() = self.req.uri().clone();
        *req.version_mut() = self.req.version();
        *req.headers_mut() = self.req.headers().clone();
        *req.extensions_mut() = self.req.extensions().clone();
        Some(Self {
            req,
            hash: self.hash,
            avoid: self.avoid,
            deadline: self.deadline,
            started: self.started,
        })
    }
}

/// An attempt that got no response.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: MeshError,
    /// The transport failure, when the attempt reached for an endpoint; `None` for a refusal
    /// (breaker, no endpoint, no pool), which ends the call without a retry.
    pub(crate) transport: Option<TransportError>,
    /// The endpoint it went to.
    pub(crate) endpoint: Option<SocketAddr>,
}

impl Failed {
    /// A refusal: not sent, not retried.
    pub(crate) fn refused(error: MeshError) -> Self {
        Self {
            error,
            transport: None,
            endpoint: None,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// How a response counts for retries and outlier detection: its status, and its
/// `grpc-status` when the head carries one (a trailers-only gRPC answer).
pub(crate) fn class_of(resp: &Response<ResponseBody>) -> ResponseClass {
    let grpc_status = resp
        .body()
        .head_grpc_status()
        .unwrap_or_else(|| crate::observe::grpc_status(resp.headers()));
    classify(Some(resp.status().as_u16()), grpc_status, None)
}
