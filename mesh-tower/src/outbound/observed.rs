//! What the outbound client reports about each call: a client span (its context written
//! onto the request, continuing the current request's trace) and Istio's request metrics
//! with `reporter="source"`, both finished when the response body ends.

use http::{Request, Response};
use tokio::time::Instant;

use super::response::ResponseBody;
use crate::error::MeshError;
use crate::metrics::{HttpKey, Metrics, Reporter, ResponseFlags, SecurityPolicy, UNKNOWN};
use crate::observe::{ExchangeEnd, ExchangeObserver};
use crate::trace::{self, Exchange, MeshTracer, SpanGuard};

/// One call in flight.
#[derive(Debug)]
pub(crate) struct OutboundObserver {
    span: SpanGuard,
    metrics: Metrics,
    service: u32,
    grpc: bool,
    started: Instant,
    request_bytes: crate::observe::RequestSize,
    code: u16,
    flags: ResponseFlags,
    /// What the server said of itself (metadata exchange).
    peer_meta: Option<u32>,
}

/// A client's target as the observer needs it: its name and its `destination_service`
/// label, interned once when the client was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObservedTarget<'a> {
    pub(crate) name: &'a str,
    pub(crate) service: u32,
}

/// Starts observing a call to `target` (else the request's authority): the client span's
/// context goes onto the request's headers.
pub(crate) fn start<B>(
    tracer: &MeshTracer,
    metrics: &Metrics,
    target: Option<ObservedTarget<'_>>,
    req: &mut Request<B>,
    grpc: bool,
    request_bytes: crate::observe::RequestSize,
) -> OutboundObserver {
    let started = Instant::now();
    // The headers taken out (a map moved, nothing cloned), so that the span reads the head
    // while it writes them.
    let mut headers = std::mem::take(req.headers_mut());
    let host_header = match (target, req.uri().authority()) {
        (None, None) => headers.get(http::header::HOST).cloned(),
        _ => None,
    };
    let authority = target
        .map(|t| t.name)
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .or_else(|| host_header.as_ref().and_then(|h| h.to_str().ok()));
    let service = match target {
        Some(t) => t.service,
        None => metrics.intern_host(authority),
    };
    let ex = Exchange {
        method: req.method(),
        path: req.uri().path(),
        route: None,
        grpc,
        server: authority,
        peer: None,
    };
    let span = trace::start_client(tracer, trace::current(), &mut headers, &ex);
    *req.headers_mut() = headers;
    OutboundObserver {
        span,
        metrics: metrics.clone(),
        service,
        grpc,
        started,
        request_bytes,
        code: 0,
        flags: ResponseFlags::None,
        peer_meta: None,
    }
}

impl OutboundObserver {
    /// Attaches itself to the response, to finish when its body ends.
    pub(crate) fn finish(mut self, resp: Response<ResponseBody>) -> Response<ResponseBody> {
        self.code = resp.status().as_u16();
        self.span.set_status(self.code);
        if let Some(err) = resp.extensions().get::<MeshError>() {
            self.flags = ResponseFlags::for_error(err);
            if let MeshError::CircuitOpen { cluster, limit, .. } = err {
                self.metrics.breaker_rejection(cluster, *limit);
            }
        }
        let (mut parts, body) = resp.into_parts();
        // Taken off the head by the pool when it exchanges metadata; else (a destination
        // outside the policy, a response the mesh wrote) here.
        self.peer_meta = match body.peer_meta() {
            Some(peer) => peer,
            None => self.metrics.take_peer(&mut parts.headers).1,
        };
        let body = body.observe(self, &parts.headers);
        Response::from_parts(parts, body)
    }
}

impl ExchangeObserver for OutboundObserver {
    fn on_end(self, end: ExchangeEnd) {
        let key = HttpKey {
            reporter: Reporter::Source,
            peer: UNKNOWN,
            service: self.service,
            grpc: self.grpc,
            code: self.code,
            grpc_status: end.grpc_status,
            flags: self.flags,
            security: SecurityPolicy::Unknown,
            peer_meta: self.peer_meta,
        };
        self.metrics.record(
            key,
            self.started.elapsed(),
            (self.request_bytes.get(), end.bytes),
        );
        self.span.on_end(end);
    }
}
