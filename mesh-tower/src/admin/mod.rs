//! The admin server: a small HTTP/1.1 server for operators, off unless configured, on
//! `127.0.0.1` by default.
//!
//! | path | answer |
//! |---|---|
//! | `/` | an HTML page: routes with weights, clusters, endpoint health, request and error totals |
//! | `/metrics`, `/stats/prometheus` | Prometheus text (format 0.0.4): Istio's metrics, the mesh's own, the application's ([`Metrics::register_app_metrics`](crate::metrics::Metrics::register_app_metrics)), endpoint gauges |
//! | `/config_dump` | the live snapshot as JSON (listeners, routes with weights, clusters with policy, endpoints) and, under `xds`, the xDS client's per-resource status |
//! | `/clusters` | JSON: endpoints with health, ejections and load; breaker limits in use |
//! | `/ready`, `/healthz/ready` | readiness ([`Mesh::readiness`]): `200 ready`, or `503 not ready: <reason>` until the first policy arrived and every mesh listener serves, and from shutdown on |
//! | `/healthz`, `/healthz/live` | liveness: `200 live` while the process runs |
//!
//! `/stats/prometheus` and `/healthz/ready` are the paths Envoy's admin and Istio's agent
//! use, so scrape annotations and probes written for them work unchanged:
//!
//! ```yaml
//! readinessProbe:
//!   httpGet: { path: /healthz/ready, port: 15000 }
//! livenessProbe:
//!   httpGet: { path: /healthz, port: 15000 }
//! ```
//!
//! (the admin address must then be one the kubelet reaches: `--admin 0.0.0.0:15000`).
//!
//! It speaks HTTP/1.1 and HTTP/2 (cleartext, by prior knowledge); over HTTP/2 it also
//! serves gRPC: the health service (`grpc.health.v1.Health`, [`Mesh::health_service`]),
//! and the CSDS service (gRFC A40, `envoy.service.status.v3.ClientStatusDiscoveryService`)
//! when the mesh's policy comes from a control plane.
//!
//! ```no_run
//! # async fn demo(mesh: mesh_tower::Mesh) -> std::io::Result<()> {
//! let admin = mesh_tower::admin::AdminServer::new(mesh)
//!     .spawn(mesh_tower::admin::DEFAULT_ADDR)
//!     .await?;
//! println!("admin on http://{}", admin.local_addr());
//! # Ok(())
//! # }
//! ```

mod dump;
mod page;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Mesh;

/// The default admin address (Envoy's admin port, on localhost only).
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

/// Reports the xDS client's per-resource status for `/config_dump`.
pub type XdsStatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The admin server of one mesh.
#[derive(Clone)]
pub struct AdminServer {
    mesh: Mesh,
    xds: Option<XdsStatusFn>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("xds", &self.xds.is_some())
            .finish()
    }
}

/// A running admin server; dropping it stops the server.
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl AdminHandle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl AdminServer {
    /// An admin server for `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh, xds: None }
    }

    /// Adds the xDS client's per-resource status to `/config_dump`.
    pub fn with_xds_status(mut self, status: XdsStatusFn) -> Self {
        self.xds = Some(status);
        self
    }

    /// Binds `addr` and serves in a background task until the handle is dropped.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<AdminHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            self.serve(listener, shutdown).await
        });
        Ok(AdminHandle { addr, _stop: stop })
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let csds = self.mesh.csds().map(|c| c.into_server());
        let health = self.mesh.health_service();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(error) => {
                        tracing::debug!(%error, "admin accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let csds = csds.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let this = this.clone();
                    let csds = csds.clone();
                    let health = health.clone();
                    async move {
                        if req.uri().path().starts_with(HEALTH_PATH) {
                            return Ok::<_, Infallible>(
                                match tower::ServiceExt::oneshot(health, req).await {
                                    Ok(resp) => {
                                        resp.map(|b| b.map_err(BoxError::from).boxed_unsync())
                                    }
                                    Err(never) => match never {},
                                },
                            );
                        }
                        if req.uri().path().starts_with(CSDS_PATH) {
                            return Ok::<_, Infallible>(match csds {
                                Some(csds) => match tower::ServiceExt::oneshot(csds, req).await {
                                    Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed_unsync()),
                                    Err(never) => match never {},
                                },
                                None => boxed(text(
                                    StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "no xDS client: the policy does not come from a control plane\n"
                                        .into(),
                                )),
                            });
                        }
                        Ok(boxed(this.handle(req.method(), req.uri().path())))
                    }
                });
                if let Err(error) =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                {
                    tracing::debug!(%error, "admin connection failed");
                }
            });
        }
    }

    /// The answer for `method path`.
    pub fn handle(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match path {
            "/" => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&self.mesh),
            ),
            // `/stats/prometheus`: Envoy's path, which Istio's scrape configuration uses.
            "/metrics" | "/stats/prometheus" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics(),
            ),
            "/config_dump" => json(&dump::config_dump(
                &self.mesh,
                self.xds.as_ref().map(|f| f()),
            )),
            "/clusters" => json(&dump::clusters_status(&self.mesh)),
            "/ready" | "/healthz/ready" => {
                let status = self.mesh.readiness().status();
                let code = if status.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(code, "text/plain; charset=utf-8", format!("{status}\n"))
            }
            "/healthz" | "/healthz/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// `/metrics`: the recorded metrics plus endpoint gauges from the clusters in use.
    pub fn metrics(&self) -> String {
        let mut out = self.mesh.metrics().render();
        out.push_str("# HELP mesh_cluster_endpoints Endpoints of the clusters in use, by state.\n");
        out.push_str("# TYPE mesh_cluster_endpoints gauge\n");
        for (name, eps) in self.mesh.cluster_status() {
            let mut counts = [0u64; 3];
            for e in &eps {
                let i = match (e.healthy, e.ejected) {
                    (_, true) => 2,
                    (false, _) => 1,
                    (true, false) => 0,
                };
                counts[i] += 1;
            }
            for (state, n) in ["healthy", "unhealthy", "ejected"].iter().zip(counts) {
                let mut labels = String::new();
                crate::metrics::push_label_pub(&mut labels, "cluster", &name);
                crate::metrics::push_label_pub(&mut labels, "state", state);
                let _ = writeln!(out, "mesh_cluster_endpoints{{{labels}}} {n}");
            }
        }
        out
    }
}

/// The CSDS service's path prefix.
const CSDS_PATH: &str = "/envoy.service.status.v3.ClientStatusDiscoveryService/";

/// The gRPC health service's path prefix.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn boxed(resp: Response<Full<Bytes>>) -> Response<UnsyncBoxBody<Bytes, BoxError>> {
    resp.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text(StatusCode::OK, "application/json", body)
}
