//! Trace context in, out and through.
//!
//! [`TraceLayer`] reads the caller's context — W3C `traceparent`/`tracestate`, B3 (single
//! `b3` or the `x-b3-*` headers) and `x-request-id` (made when absent) — starts a server
//! span, and runs the handler with that context current (put in place around each poll of
//! the handler's future, as a task-local is). Every call the handler makes through the
//! mesh's [`HttpClient`](crate::outbound::HttpClient) or channel then gets a client span
//! and carries the same trace id, the client span's id as parent, and the same request id,
//! in W3C and B3 headers: the application copies no header. Work moved to another task
//! keeps the context with [`spawn`] or [`InCurrentTrace::in_current_trace`].
//!
//! Malformed headers never fail a request: an invalid `traceparent` restarts the trace,
//! a bad `tracestate` is dropped, as the W3C spec says.
//!
//! Spans are OpenTelemetry spans, exported by the tracer the mesh was given
//! ([`MeshBuilder::tracer`](crate::MeshBuilder::tracer)), else by the global provider
//! installed when the mesh (or a [`TraceLayer`]) was built ([`otel::init_from_env`] installs
//! the OTLP exporter the `OTEL_*` variables describe); without one, ids are still made and
//! propagated.
//!
//! ```
//! use axum::{routing::get, Router};
//! use mesh_tower::trace::TraceLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hi" }))
//!     .layer(TraceLayer::new());
//! ```

pub mod b3;
pub mod baggage;
mod context;
mod ids;
mod layer;
pub mod otel;
pub mod propagation;
mod span;
pub mod w3c;

#[cfg(test)]
mod suite_tests;
#[cfg(test)]
mod tests;

pub use context::{
    current, extract, extract_with, scope, spawn, InCurrentTrace, Incoming, Scope, TraceContext,
    WithTrace, FLAG_RANDOM, FLAG_SAMPLED, X_REQUEST_ID,
};
pub(crate) use ids::index_unique_names;
pub use ids::{new_request_id, SpanId, TraceId};
pub(crate) use layer::Scoped;
pub use layer::{ResponseFuture, Trace, TraceLayer};
pub use propagation::{B3Form, Propagation};
pub use span::{global_tracer, SpanGuard, TRACER_NAME};

pub(crate) use span::{start_client, Exchange, MeshTracer};
