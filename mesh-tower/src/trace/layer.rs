//! [`TraceLayer`]: the inbound half of trace propagation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::global::BoxedTracer;

use super::context::{enter, extract_with, Held, X_REQUEST_ID};
use super::propagation::Propagation;
use super::span::{global_tracer, start_server, Exchange, MeshTracer, SpanGuard};
use crate::exchange::PeerIdentity;
use crate::observe::{ExchangeEnd, ExchangeObserver, ObservedBody};

/// Reads the caller's trace context (per [`Propagation`]: W3C, B3, baggage, and
/// `x-request-id`), starts a server span, and runs the inner service with the request's
/// context current — both the mesh's [`TraceContext`](super::TraceContext) (so every call
/// made through the mesh's clients continues the trace) and the OpenTelemetry context (so
/// spans the handler starts, with the OpenTelemetry API or through
/// `tracing-opentelemetry`, are children of the server span, and its calls continue from
/// them). The context is also
/// in the request's extensions, and `x-request-id` is set on the request when the caller
/// sent none.
///
/// The server span is named as OpenTelemetry's semantic conventions say: `{method}
/// {route}` when the route template is known (axum's `MatchedPath`, present when the
/// layer is added with `Router::layer`), else `{method}`; `{package.Service}/{Method}`
/// for gRPC. It goes to the OpenTelemetry tracer given (by default the global provider's,
/// taken when the layer is built: install the provider first).
///
/// [`TraceLayer::with_log_span`] also wraps the handler in a `tracing` span named
/// `inbound` carrying `trace_id` and `request_id`, for log lines; leave it off when
/// `tracing-opentelemetry` exports your spans, or it is exported as a span of its own.
///
/// ```
/// use axum::{routing::get, Router};
/// use mesh_tower::trace::{TraceContext, TraceLayer};
///
/// // Per route, so the span is named `GET /hello`; `mesh.layer()` includes it.
/// let app: Router = Router::new()
///     .route("/hello", get(|| async {
///         // The request's context, current for the handler.
///         let trace_id = mesh_tower::trace::current().map(|cx: TraceContext| cx.trace_id);
///         format!("{trace_id:?}")
///     }))
///     .layer(TraceLayer::new());
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct TraceLayer {
    tracer: Arc<MeshTracer>,
    propagation: Propagation,
    log_span: bool,
}

impl std::fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceLayer")
            .field("propagation", &self.propagation)
            .field("log_span", &self.log_span)
            .finish_non_exhaustive()
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// A layer exporting through the global tracer provider, with the propagators
    /// `OTEL_PROPAGATORS` names.
    pub fn new() -> Self {
        Self::with_tracer(global_tracer())
    }

    /// A layer exporting through `tracer`.
    pub fn with_tracer(tracer: BoxedTracer) -> Self {
        Self::shared(Arc::new(MeshTracer::new(tracer)))
    }

    /// A layer exporting through a tracer shared with others (the mesh's).
    pub(crate) fn shared(tracer: Arc<MeshTracer>) -> Self {
        Self {
            tracer,
            propagation: Propagation::from_env(),
            log_span: false,
        }
    }

    /// Reads and writes the headers `propagation` names instead of `OTEL_PROPAGATORS`'.
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// Wraps the handler in a `tracing` span `inbound{trace_id, request_id}` for log lines.
    pub fn with_log_span(mut self, on: bool) -> Self {
        self.log_span = on;
        self
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S> std::fmt::Debug for Trace<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
fn route_of<B>(req: &Request<B>) -> Option<&str> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
fn route_of<B>(_req: &Request<B>) -> Option<&str> {
    None
}

impl<S, B, RB> tower::Service<Request<B>> for Trace<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    RB: http_body::Body,
{
    type Response = Response<ObservedBody<RB, SpanGuard>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = &mut self.inner;
        let (inner, guard) = self.layer.begin(req, |req| inner.call(req));
        ResponseFuture {
            inner,
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// An inner service's future with the request's trace context current while it is
    /// polled (and dropped): the mesh's own context (for [`current`](super::current) and
    /// outbound calls), OpenTelemetry's, and the `tracing` span. One wrapper for the three:
    /// the handler's future is moved into it once.
    pub(crate) struct Scoped<F> {
        #[pin]
        fut: Option<F>,
        ctx: Held,
        otel: opentelemetry::Context,
        span: tracing::Span,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.fut.is_some() {
                // The mesh's context and the span, as tokio's task-local future and
                // tracing's `Instrumented` did on drop; not OpenTelemetry's (its
                // `WithContext` did not, and attaching panics once that thread-local is
                // gone, as in a runtime dropped at thread exit).
                let _ctx = enter(this.ctx);
                let _span = this.span.enter();
                this.fut.set(None);
            }
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let _ctx = enter(this.ctx);
        let _otel = this.otel.clone().attach();
        let _span = this.span.enter();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            // Only dropped in place, never polled after.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.poll(cx));
        // Done: dropped here, with the contexts still current, not later when the wrapper
        // is (which would enter them once more for nothing).
        this.fut.set(None);
        Poll::Ready(out)
    }
}

impl TraceLayer {
    /// What [`Trace`] does before the inner service: the caller's context extracted (or a
    /// new trace), the server span started, `x-request-id` set, the context put in the
    /// request's extensions; then `call` runs with the context current, and its future is
    /// returned scoped to it, with the server span's guard.
    pub(crate) fn begin<B, F: Future>(
        &self,
        mut req: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> (Scoped<F>, SpanGuard) {
        let incoming = extract_with(req.headers(), self.propagation);
        let request_id_sent = incoming.request_id_sent;
        let grpc = crate::exchange::is_grpc(req.headers());
        let server = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let ex = Exchange {
            method: req.method(),
            path: req.uri().path(),
            route: route_of(&req),
            grpc,
            server,
            peer: req
                .extensions()
                .get::<PeerIdentity>()
                .map(|p| p.remote_addr),
        };
        let (ctx, guard) = start_server(&self.tracer, incoming, &ex, self.propagation);
        let span = if self.log_span {
            let span = tracing::info_span!(
                "inbound",
                http.request.method = %req.method(),
                url.path = %req.uri().path(),
                trace_id = tracing::field::Empty,
                request_id = tracing::field::Empty,
            );
            if !span.is_disabled() {
                span.record("trace_id", tracing::field::display(ctx.trace_id));
                if let Ok(id) = ctx.request_id.to_str() {
                    span.record("request_id", id);
                }
            }
            span
        } else {
            tracing::Span::none()
        };
        // Not `entry`: it makes room for one more header even when the id is there, and a
        // map hyper filled to its capacity then grows on every request. (Whether it is
        // there, the extraction's pass over the headers found.)
        if !request_id_sent {
            req.headers_mut()
                .insert(X_REQUEST_ID, ctx.request_id.clone());
        }
        req.extensions_mut().insert(ctx.clone());
        let otel = ctx.otel.clone();
        let mut ctx = Some(Box::new(ctx));
        let fut = {
            let _ctx = enter(&mut ctx);
            let _otel = otel.clone().attach();
            let _span = span.enter();
            call(req)
        };
        let scoped = Scoped {
            fut: Some(fut),
            ctx,
            otel,
            span,
        };
        (scoped, guard)
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Trace`]: the inner future with the trace context current.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Scoped<F>,
        guard: Option<SpanGuard>,
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
    type Output = Result<Response<ObservedBody<RB, SpanGuard>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(mut guard) = this.guard.take() else {
            // Polled after completion: a contract breach by the caller; end quietly.
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(resp) => {
                guard.set_status(resp.status().as_u16());
                let (parts, body) = resp.into_parts();
                let body = ObservedBody::new(body, &parts.headers, guard);
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
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
