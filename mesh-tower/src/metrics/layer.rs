//! [`MetricsLayer`]: Istio's request metrics for inbound requests (`reporter="destination"`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;

use super::{HttpKey, Metrics, Reporter, ResponseFlags, SecurityPolicy, UNKNOWN};
use crate::exchange::PeerIdentity;
use crate::observe::{CountedBody, ExchangeEnd, ExchangeObserver, ObservedBody, RequestSize};

/// Records every inbound request into [`Metrics`] when its response ends: the caller's
/// principal and connection security from the [`PeerIdentity`] the listener attached,
/// the status and `grpc-status`, duration and sizes (the request's from `content-length`,
/// else counted as the application reads the body: the inner service receives it as a
/// [`CountedBody`]).
///
/// ```
/// use axum::{routing::get, Router};
/// use mesh_tower::metrics::{Metrics, MetricsLayer, WorkloadLabels};
///
/// let metrics = Metrics::new(WorkloadLabels::named("inventory").with_namespace("shop"));
/// let app: Router = Router::new()
///     .route("/stock", get(|| async { "42" }))
///     .layer(MetricsLayer::new(metrics.clone()));
/// // `metrics.render()` is the Prometheus text the admin server's /metrics serves.
/// assert!(metrics.render().is_empty() || metrics.render().starts_with('#'));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// Records into `metrics` (usually `mesh.metrics()`).
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Metrics,
}

/// What an inbound request is recorded with, once its response ends.
#[derive(Debug)]
pub struct InboundSample {
    metrics: Metrics,
    peer: u32,
    service: u32,
    grpc: bool,
    security: SecurityPolicy,
    started: Instant,
    request_bytes: RequestSize,
    code: u16,
    /// What the caller said of itself (metadata exchange), or what its connection
    /// remembers of it.
    peer_meta: Option<u32>,
    /// What the response says back.
    answer: super::Answer,
}

impl ExchangeObserver for InboundSample {
    fn on_end(self, end: ExchangeEnd) {
        let key = HttpKey {
            reporter: Reporter::Destination,
            peer: self.peer,
            service: self.service,
            grpc: self.grpc,
            code: self.code,
            grpc_status: end.grpc_status.or((self.grpc && end.complete).then_some(0)),
            flags: if end.complete {
                ResponseFlags::None
            } else {
                ResponseFlags::DownstreamTermination
            },
            security: self.security,
            peer_meta: self.peer_meta,
        };
        self.metrics.record(
            key,
            self.started.elapsed(),
            (self.request_bytes.get(), end.bytes),
        );
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Metered<S>
where
    S: tower::Service<Request<CountedBody<B>>, Response = Response<RB>>,
    B: http_body::Body,
    RB: http_body::Body,
{
    type Response = Response<ObservedBody<RB, InboundSample>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let (body, sample) = InboundSample::begin(&self.metrics, &mut parts, body);
        ResponseFuture {
            inner: self.inner.call(Request::from_parts(parts, body)),
            sample: Some(sample),
        }
    }
}

impl InboundSample {
    /// What [`Metered`] does before the inner service: the peer's metadata-exchange headers
    /// taken off the request, its labels resolved, the request body counted.
    pub(crate) fn begin<B: http_body::Body>(
        metrics: &Metrics,
        parts: &mut http::request::Parts,
        body: B,
    ) -> (CountedBody<B>, Self) {
        let started = Instant::now();
        let peer = parts.extensions.get::<PeerIdentity>();
        // A caller that sent its metadata-exchange headers gets ours on the response.
        let (answer, peer_meta) = metrics.take_caller(&mut parts.headers, peer);
        let r = &metrics.inner;
        let principal = peer
            .and_then(|p| p.spiffe_id.as_ref())
            .map(|id| id.as_str());
        let security = match peer {
            Some(p) if p.tls && p.spiffe_id.is_some() => SecurityPolicy::MutualTls,
            Some(_) => SecurityPolicy::None,
            None => SecurityPolicy::Unknown,
        };
        // Interned once when the workload knows its service; else from the request.
        let service = r.local_service.unwrap_or_else(|| {
            metrics.intern_host(parts.uri.authority().map(|a| a.as_str()).or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            }))
        });
        let (body, request_bytes) = CountedBody::new(body);
        let sample = InboundSample {
            metrics: metrics.clone(),
            peer: principal.map_or(UNKNOWN, |p| r.strings.intern(p)),
            service,
            grpc: crate::exchange::is_grpc(&parts.headers),
            security,
            started,
            request_bytes,
            code: 0,
            peer_meta,
            answer,
        };
        (body, sample)
    }

    /// The response's head is out: its status is recorded, and a caller that announced
    /// itself is told who answered.
    pub(crate) fn respond(&mut self, status: http::StatusCode, headers: &mut http::HeaderMap) {
        self.code = status.as_u16();
        self.metrics.answer(self.answer, headers);
    }

    /// The service failed: the connection is reset, counted as a 500 would be.
    pub(crate) fn failed(mut self) {
        self.code = 500;
        self.on_end(ExchangeEnd {
            bytes: 0,
            grpc_status: None,
            complete: true,
        });
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Metered`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        sample: Option<InboundSample>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: http_body::Body,
{
    type Output = Result<Response<ObservedBody<RB, InboundSample>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(mut sample) = this.sample.take() else {
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                sample.respond(parts.status, &mut parts.headers);
                let body = ObservedBody::new(body, &parts.headers, sample);
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                sample.failed();
                Err(e)
            }
        })
    }
}
