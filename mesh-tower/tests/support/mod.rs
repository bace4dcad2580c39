//! Shared fixtures: scripted backends on 127.0.0.1 and snapshot builders.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Endpoint};
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
    WeightedCluster, WeightedClusters,
};
use mesh_core::snapshot::SnapshotBuilder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How a backend answers.
#[derive(Clone, Debug)]
pub enum Script {
    /// 200 always.
    Ok,
    /// This status always.
    Status(u16),
    /// 503 on every other request (the 1st, 3rd, ...).
    FailEveryOther,
    /// Wait this long (tokio time), then 200.
    Delay(Duration),
    /// Wait for a permit from the gate, then 200.
    Gate(Arc<Semaphore>),
    /// Wait this long, then this status.
    DelayThen(Duration, u16),
    /// A trailers-only gRPC answer with this `grpc-status` (HTTP 200).
    GrpcStatus(u32),
}

/// A running backend.
#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Requests in flight whose `x-envoy-attempt-count` is above 1, and the most seen.
    pub retries_in_flight: Arc<AtomicUsize>,
    pub max_retries_in_flight: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
}

impl Backend {
    pub async fn start(name: &'static str, script: Script) -> Backend {
        Self::start_on("127.0.0.1:0", name, script).await
    }

    /// A backend listening on `bind` (`[::1]:0` for IPv6 loopback).
    pub async fn start_on(bind: &str, name: &'static str, script: Script) -> Backend {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Backend {
            name,
            addr,
            hits: Arc::new(AtomicUsize::new(0)),
            retries_in_flight: Arc::new(AtomicUsize::new(0)),
            max_retries_in_flight: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let b = backend.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                b.accepted.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let b = b.clone();
                        let script = script.clone();
                        async move { Ok::<_, Infallible>(b.answer(req, script).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        backend
    }

    async fn answer(&self, req: Request<Incoming>, script: Script) -> Response<Full<Bytes>> {
        let n = self.hits.fetch_add(1, Ordering::SeqCst);
        let is_retry = req
            .headers()
            .get("x-envoy-attempt-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n > 1);
        if is_retry {
            let now = self.retries_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_retries_in_flight.fetch_max(now, Ordering::SeqCst);
        }
        let version = format!("{:?}", req.version());
        // What the request said of its attempt, echoed ("none": no header).
        let seen_attempt_count = req
            .headers()
            .get("x-envoy-attempt-count")
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("none"));
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let status = match script.clone() {
            Script::Ok => 200,
            Script::Status(s) => s,
            Script::FailEveryOther => {
                if n.is_multiple_of(2) {
                    503
                } else {
                    200
                }
            }
            Script::Delay(d) => {
                tokio::time::sleep(d).await;
                200
            }
            Script::DelayThen(d, s) => {
                tokio::time::sleep(d).await;
                s
            }
            Script::Gate(sem) => {
                let _permit = sem.acquire().await.unwrap();
                200
            }
            Script::GrpcStatus(_) => 200,
        };
        if is_retry {
            self.retries_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let mut resp = Response::builder()
            .status(status)
            .header("x-backend", self.name)
            .header("x-http-version", version)
            .header("x-seen-attempt-count", seen_attempt_count);
        if let Script::GrpcStatus(code) = script {
            resp = resp
                .header("content-type", "application/grpc")
                .header("grpc-status", code.to_string());
        }
        resp.body(Full::new(body)).unwrap()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A cluster named `name` with these endpoints.
pub fn cluster(
    b: SnapshotBuilder,
    name: &str,
    backends: &[&Backend],
    edit: impl FnOnce(&mut Cluster),
) -> SnapshotBuilder {
    let mut c = Cluster::new(name);
    edit(&mut c);
    let eps = backends.iter().map(|be| Endpoint::new(be.addr)).collect();
    b.cluster(c)
        .endpoints(ClusterLoadAssignment::from_endpoints(name, eps))
}

/// `target` routed to one forward action.
pub fn route(b: SnapshotBuilder, target: &str, action: ForwardAction) -> SnapshotBuilder {
    with_route(b, target, forward_all(action))
}

/// A route sending every request on with `action`.
fn forward_all(action: ForwardAction) -> Route {
    Route::new("r", RouteMatch::default(), RouteAction::Forward(action))
}

/// `target` with this one route.
pub fn with_route(b: SnapshotBuilder, target: &str, route: Route) -> SnapshotBuilder {
    with_vhost(
        b,
        target,
        VirtualHost::new("vh", vec!["*".into()], vec![route]),
    )
}

/// `target` routed to one forward action on a virtual host that numbers attempts in
/// `x-envoy-attempt-count` (`include_request_attempt_count`, as istiod sets it).
pub fn counted_route(b: SnapshotBuilder, target: &str, action: ForwardAction) -> SnapshotBuilder {
    let vh = VirtualHost::new("vh", vec!["*".into()], vec![forward_all(action)]);
    with_vhost(b, target, vh.with_request_attempt_count(true))
}

/// `target` served by this one virtual host.
pub fn with_vhost(b: SnapshotBuilder, target: &str, vh: VirtualHost) -> SnapshotBuilder {
    b.listener(target, target)
        .route_config(RouteConfig::new(target, vec![vh]))
}

/// A weighted action.
pub fn weighted(split: &[(&str, u32)]) -> ForwardAction {
    ForwardAction::new(ClusterSpecifier::Weighted(
        WeightedClusters::new(
            split
                .iter()
                .map(|(n, w)| WeightedCluster::new(*n, *w))
                .collect(),
        )
        .unwrap(),
    ))
}

/// GETs `uri` through `client` and returns (status, x-backend, x-mesh-error).
pub async fn get<S>(client: &mut S, uri: &str) -> (u16, String, String)
where
    S: tower::Service<
        Request<Full<Bytes>>,
        Response = Response<mesh_tower::outbound::ResponseBody>,
    >,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let out = (resp.status().as_u16(), h("x-backend"), h("x-mesh-error"));
    let _ = resp.into_body().collect().await;
    out
}
