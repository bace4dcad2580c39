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

use tower::Layer;

use crate::inbound::{AuthorizationLayer, Authorize, HttpService, ResponseBody};
use crate::metrics::{Metered, MetricsLayer};
use crate::trace::{Trace, TraceLayer};
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
    metrics: MetricsLayer,
    authorization: AuthorizationLayer,
}

impl MeshLayer {
    /// The stack for `mesh`: its metrics and its live authorization policy.
    pub fn new(mesh: &Mesh) -> Self {
        Self {
            trace: TraceLayer::new(),
            metrics: MetricsLayer::new(mesh.metrics().clone()),
            authorization: mesh.authorization_layer(),
        }
    }

    /// Uses this trace layer (e.g. one with its own tracer) instead of the default.
    pub fn with_trace(mut self, trace: TraceLayer) -> Self {
        self.trace = trace;
        self
    }
}

/// The service [`MeshLayer`] makes: `Trace<Metered<Authorize<S>>>`.
pub type MeshService<S> = Trace<Metered<Authorize<S>>>;

impl<S> Layer<S> for MeshLayer {
    type Service = MeshService<S>;

    fn layer(&self, inner: S) -> MeshService<S> {
        self.trace
            .layer(self.metrics.layer(self.authorization.layer(inner)))
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
