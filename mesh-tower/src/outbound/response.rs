//! Response bodies of the outbound client: the upstream's body, or one the mesh wrote.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use mesh_core::breaker::BreakerGuard;

use super::cluster::EndpointState;
use super::observed::OutboundObserver;
use crate::body::BoxError;
use crate::error::MeshError;
use crate::observe::Watch;

/// What an attempt holds until its response body is done: the endpoint's in-flight count
/// (least request reads it).
pub(crate) struct AttemptGuard {
    endpoint: Arc<EndpointState>,
    /// On an HTTP/1.1 pool, the request counted in its endpoint's dial demand.
    _demand: Option<super::demand::DemandRequest>,
}

impl AttemptGuard {
    /// `http1`: the attempt goes to the endpoint's HTTP/1.1 pool (one connection per
    /// request), where it counts for the pool's dials.
    pub(crate) fn new(endpoint: Arc<EndpointState>, http1: bool) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        let demand = if http1 {
            endpoint.demand.as_ref().map(|d| d.request())
        } else {
            None
        };
        Self {
            endpoint,
            _demand: demand,
        }
    }

    /// The endpoint's address.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.endpoint.addr
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The body of a response from the outbound client.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        guard: Option<AttemptGuard>,
        // The breaker's request slot, held until the body ends.
        permit: Option<BreakerGuard>,
        // Observability: the call's span and metrics, finished when the body ends.
        observer: Option<Watch<OutboundObserver>>,
        // The head's `grpc-status`, read once when the upstream's response arrived:
        // outlier detection, the retry policy and the metrics each ask. `None`: not read
        // (a body the mesh wrote, or a head changed since).
        head_grpc_status: Option<Option<i32>>,
        // What the server said of itself (Istio's metadata exchange), as its pool took it
        // off the head; `None`: the pool did not exchange it.
        peer_meta: Option<Option<u32>>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] body: hyper::body::Incoming },
        Full { data: Option<Bytes> },
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream { .. } => "upstream",
            Kind::Full { .. } => "local",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl ResponseBody {
    /// The upstream's body; `head` is its response's head, whose `grpc-status` is read
    /// here once.
    pub(crate) fn upstream(
        body: hyper::body::Incoming,
        head: &HeaderMap,
        guard: Option<AttemptGuard>,
    ) -> Self {
        Self {
            kind: Kind::Upstream { body },
            guard,
            permit: None,
            observer: None,
            head_grpc_status: Some(crate::observe::grpc_status(head)),
            peer_meta: None,
        }
    }

    /// A body the mesh wrote.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            guard: None,
            permit: None,
            observer: None,
            head_grpc_status: None,
            peer_meta: None,
        }
    }

    /// The `grpc-status` of its response's head, when it was read as the response arrived
    /// and the head has not changed since.
    pub(crate) fn head_grpc_status(&self) -> Option<Option<i32>> {
        self.head_grpc_status
    }

    /// What the server said of itself in the metadata exchange, when its pool exchanged it.
    pub(crate) fn peer_meta(&self) -> Option<Option<u32>> {
        self.peer_meta
    }

    pub(crate) fn with_peer_meta(mut self, peer: Option<Option<u32>>) -> Self {
        self.peer_meta = peer;
        self
    }

    /// The response's head changed: its `grpc-status` is read again when asked.
    pub(crate) fn head_changed(&mut self) {
        self.head_grpc_status = None;
    }

    /// Holds the breaker's request slot until the body ends.
    pub(crate) fn hold(&mut self, permit: BreakerGuard) {
        self.permit = Some(permit);
    }

    /// Whether it holds a breaker slot (for tests).
    #[cfg(test)]
    pub(crate) fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The endpoint the response came from, when it came from one.
    pub(crate) fn endpoint(&self) -> Option<std::net::SocketAddr> {
        self.guard.as_ref().map(AttemptGuard::addr)
    }

    /// Watches this body for the end of the exchange.
    pub(crate) fn observe(mut self, observer: OutboundObserver, headers: &HeaderMap) -> Self {
        let status = self
            .head_grpc_status
            .unwrap_or_else(|| crate::observe::grpc_status(headers));
        let mut watch = Watch::with_grpc_status(observer, status);
        if self.is_end_stream() {
            watch.ended_early();
        }
        self.observer = Some(watch);
        self
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = match this.kind.as_mut().project() {
            KindProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Some(watch) = this.observer.as_mut() {
            let end_stream = match &*this.kind {
                Kind::Upstream { body } => body.is_end_stream(),
                Kind::Full { data } => data.is_none(),
            };
            watch.on_poll(&polled, end_stream);
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // The exchange is over: release the breaker slot and in-flight count now.
            this.guard.take();
            this.permit.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The response for a mesh failure: 503-style for HTTP, trailers-only for gRPC.
pub(crate) fn error_response(err: MeshError, grpc: bool) -> Response<ResponseBody> {
    let mut resp = if grpc {
        grpc_status_response(err.grpc_code(), &err.to_string())
    } else {
        let mut r = Response::new(ResponseBody::full(format!("{err}\n")));
        *r.status_mut() = err.http_status();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    resp.headers_mut()
        .insert("x-mesh-error", HeaderValue::from_static(err.kind()));
    resp.extensions_mut().insert(err);
    resp
}

/// A trailers-only gRPC response with this status.
pub(crate) fn grpc_status_response(code: u32, message: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` stays.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
