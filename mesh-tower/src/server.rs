//! Serving an application in the mesh: [`Mesh::serve`] in one call, or [`MeshLayer`] for
//! those who compose their own server.
//!
//! The inbound stack is, outermost first: trace context (W3C, B3, `x-request-id`, a server
//! span, the context current for the handler so its outbound calls continue the trace) ->
//! Istio's request metrics -> authorization (the policy's AuthorizationPolicies: 403, or
//! `PERMISSION_DENIED` for gRPC). It sits inside the mesh listener, which does the TLS
//! (STRICT / PERMISSIVE / DISABLE per port) and puts the peer's identity on each request.
//!
//! An axum service, served with the whole stack:
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use mesh_tower::Mesh;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::builder().build()?;
//! let app = Router::new().route("/hello", get(|| async { "hello from the mesh" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! mesh.serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A tonic service is served the same way, from its `Routes`:
//!
//! ```no_run
//! # async fn run(
//! #     greeter: tonic::service::Routes,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! # let mesh = mesh_tower::Mesh::builder().build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! mesh.serve(listener, greeter, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::inbound::{AuthorizationLayer, Authorize, HttpService, ResponseBody};
use crate::metrics::{InboundSample, Metrics};
use crate::observe::{CountedBody, ExchangeEnd, ExchangeObserver, ObservedBody};

use crate::trace::{Scoped, SpanGuard, TraceLayer};
use crate::Mesh;

/// The mesh's inbound stack as one layer: trace context, then metrics, then
/// authorization. Apply it once, outermost, to the application's service (axum's
/// `Router::layer` also works, but calling it once per mesh layer nests routers).
///
/// ```
/// # fn demo() -> Result<(), mesh_tower::mesh::MeshBuildError> {
/// use axum::{routing::get, Router};
/// use tower::Layer;
///
/// let mesh = mesh_tower::Mesh::builder().build()?;
/// let app: Router = Router::new().route("/", get(|| async { "ok" }));
/// // What `Mesh::serve` serves: hand it to `mesh.listener(..).serve(..)` yourself.
/// let service = mesh.layer().layer(app);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MeshLayer {
    trace: TraceLayer,
    metrics: Metrics,
    authorization: AuthorizationLayer,
}

impl MeshLayer {
    /// The stack for `mesh`: its tracer, its metrics and its live authorization policy.
    pub fn new(mesh: &Mesh) -> Self {
        Self {
            trace: TraceLayer::shared(std::sync::Arc::clone(mesh.tracer())),
            metrics: mesh.metrics().clone(),
            authorization: mesh.authorization_layer(),
        }
    }

    /// Uses this trace layer (e.g. one with its own tracer) instead of the default.
    pub fn with_trace(mut self, trace: TraceLayer) -> Self {
        self.trace = trace;
        self
    }
}

/// The service [`MeshLayer`] makes: [`Observed`] around [`Authorize`].
pub type MeshService<S> = Observed<Authorize<S>>;

impl<S> Layer<S> for MeshLayer {
    type Service = MeshService<S>;

    fn layer(&self, inner: S) -> MeshService<S> {
        Observed {
            inner: self.authorization.layer(inner),
            trace: self.trace.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Trace context and Istio's request metrics as one service: what
/// [`TraceLayer`] and [`MetricsLayer`](crate::metrics::MetricsLayer)
/// do stacked, with one response future and one body watcher, so each response's end
/// (bytes, `grpc-status`) is read once for both.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    trace: TraceLayer,
    metrics: Metrics,
}

impl<S> std::fmt::Debug for Observed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

/// Told when an inbound response ends: the metrics sample, then the server span.
type InboundEnd = (InboundSample, SpanGuard);

impl<S, B, RB> Service<Request<B>> for Observed<S>
where
    S: Service<Request<CountedBody<B>>, Response = Response<RB>>,
    B: http_body::Body,
    RB: http_body::Body,
{
    type Response = Response<ObservedBody<RB, InboundEnd>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = &mut self.inner;
        let metrics = &self.metrics;
        let mut sample = None;
        // As the layers stacked: the trace first, then the metrics inside its context.
        let (inner, guard) = self.trace.begin(req, |req| {
            let (mut parts, body) = req.into_parts();
            let (body, begun) = InboundSample::begin(metrics, &mut parts, body);
            sample = Some(begun);
            inner.call(Request::from_parts(parts, body))
        });
        ObservedFuture {
            inner,
            end: sample.map(|sample| (sample, guard)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Observed`]: the inner future with the request's trace
    /// context current.
    pub struct ObservedFuture<F> {
        #[pin]
        inner: Scoped<F>,
        end: Option<InboundEnd>,
    }
}

impl<F> std::fmt::Debug for ObservedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: http_body::Body,
{
    type Output = Result<Response<ObservedBody<RB, InboundEnd>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some((mut sample, mut guard)) = this.end.take() else {
            // Polled after completion: a contract breach by the caller; end quietly.
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                guard.set_status(parts.status.as_u16());
                sample.respond(parts.status, &mut parts.headers);
                let body = ObservedBody::new(body, &parts.headers, (sample, guard));
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                sample.failed();
                guard.on_end(ExchangeEnd {
                    bytes: 0,
                    grpc_status: None,
                    complete: false,
                });
                Err(e)
            }
        })
    }
}

impl Mesh {
    /// The inbound stack ([`MeshLayer`]) for this mesh.
    pub fn layer(&self) -> MeshLayer {
        MeshLayer::new(self)
    }

    /// Serves `app` (an axum `Router`, tonic `Routes`, any tower HTTP service) on
    /// `listener` through the mesh: the listener's TLS mode per port and the peer's
    /// identity ([`Mesh::listener`]), then [`MeshLayer`]'s trace context, metrics and
    /// authorization. Runs until `shutdown` resolves, then finishes the requests in
    /// flight. With an xDS bootstrap that names an inbound listener template, it serves
    /// once the control plane has sent this listener's policy (gRFC A36).
    pub async fn serve<S, B>(
        &self,
        listener: tokio::net::TcpListener,
        app: S,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        MeshService<S>: HttpService<B>,
        B: ResponseBody,
    {
        let service = self.layer().layer(app);
        self.listener(listener).serve(service, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::WorkloadLabels;

    /// A body of queued frames (the authorization layer needs a `Default` body for its
    /// denials).
    #[derive(Default)]
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A gRPC response: a 5-byte message, then trailers with `grpc-status: 14`.
    fn unavailable() -> Response<Frames> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        let frames = [
            Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
            Frame::trailers(trailers),
        ];
        let mut resp = Response::new(Frames(frames.into()));
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        resp
    }

    fn grpc_request() -> Request<Empty<Bytes>> {
        Request::post("http://payment:50051/pay.v1.Payments/Pay")
            .header("content-type", "application/grpc")
            .body(Empty::new())
            .unwrap()
    }

    fn mesh() -> Mesh {
        Mesh::builder()
            .workload(WorkloadLabels::named("payment"))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn one_watcher_records_the_trailers_status_and_runs_the_handler_in_the_trace() {
        let mesh = mesh();
        let app = tower::service_fn(|req: Request<CountedBody<Empty<Bytes>>>| async move {
            // The trace's work happened before the handler: its context is current and the
            // request has an id.
            assert!(crate::trace::current().is_some());
            assert!(req.headers().contains_key("x-request-id"));
            Ok::<_, Infallible>(unavailable())
        });
        let svc = mesh.layer().layer(app);
        let resp = svc.oneshot(grpc_request()).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        // Nothing is recorded until the body ends.
        assert!(!mesh.metrics().render().contains("istio_requests_total{"));
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        let text = mesh.metrics().render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\"")
            })
            .unwrap_or_else(|| panic!("no inbound request counted:\n{text}"));
        assert!(line.contains("grpc_response_status=\"14\""), "{line}");
        assert!(line.contains("response_code=\"200\""), "{line}");
        assert!(line.ends_with(" 1"), "counted once: {line}");
    }

    #[tokio::test]
    async fn a_failed_handler_is_counted_as_a_500() {
        let mesh = mesh();
        let app = tower::service_fn(|_req: Request<CountedBody<Empty<Bytes>>>| async move {
            Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("handler failed"))
        });
        let svc = mesh.layer().layer(app);
        assert!(svc.oneshot(grpc_request()).await.is_err());
        let text = mesh.metrics().render();
        assert!(
            text.lines().any(|l| l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"500\"")
                && l.ends_with(" 1")),
            "{text}"
        );
    }
}
