//! [`AuthorizationLayer`]: RBAC on each inbound request, before the application sees it.
//!
//! The policy is the current `InboundPolicy.authorization` of the connection's local
//! address (read lock-free from the live policy per request), or a fixed one. The request
//! is judged on its method, path, authority, headers, the peer's SPIFFE ID (the principal)
//! and addresses from its [`PeerIdentity`].
//!
//! | outcome | HTTP caller | gRPC caller (`content-type: application/grpc*`) |
//! |---|---|---|
//! | denied ([`PermissionDenied`]) | 403, empty body | 200, trailers-only, `grpc-status: 7` (`PERMISSION_DENIED`) |
//!
//! A denied request never reaches the inner service; the [`PermissionDenied`] is in the
//! response's extensions. Fail closed: with a non-empty policy and no [`PeerIdentity`] on
//! the request (the layer used outside [`MeshListener`](super::MeshListener)), the request is
//! denied.
//!
//! ```
//! use mesh_core::rbac::Authorization;
//! use mesh_tower::inbound::AuthorizationLayer;
//! use tower::ServiceBuilder;
//!
//! let svc = ServiceBuilder::new()
//!     .layer(AuthorizationLayer::fixed(Authorization::allow_all()))
//!     .service(axum::Router::<()>::new());
//! # let _ = svc;
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::live::LivePolicy;
use mesh_core::rbac::{self, RequestAttributes};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::PeerIdentity;

/// A request denied by authorization; in the denial response's extensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RBAC: access denied{}", policy.as_deref().map(|p| format!(" by policy {p}")).unwrap_or_default())]
#[non_exhaustive]
pub struct PermissionDenied {
    /// The policy that decided, if one did (none when no ALLOW policy matched).
    pub policy: Option<String>,
}

/// Where the layer finds its authorization policy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Authorization {
    /// The live policy: the inbound policy of the request's local address.
    Live(LivePolicy),
    /// A fixed chain, for use without the mesh.
    Fixed(Arc<rbac::Authorization>),
}

/// Applies authorization to every request (what it checks: the `inbound::authz` module docs).
#[derive(Debug, Clone)]
pub struct AuthorizationLayer {
    source: Authorization,
}

impl AuthorizationLayer {
    /// Authorization from the live policy.
    pub fn new(policy: LivePolicy) -> Self {
        Self {
            source: Authorization::Live(policy),
        }
    }

    /// A fixed authorization chain.
    pub fn fixed(authorization: rbac::Authorization) -> Self {
        Self {
            source: Authorization::Fixed(Arc::new(authorization)),
        }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service [`AuthorizationLayer`] makes.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    source: Authorization,
}

impl<S> Authorize<S> {
    /// `Err` with the deciding policy when the request is denied.
    fn decide<B>(&self, req: &Request<B>) -> Result<(), PermissionDenied> {
        let peer = req.extensions().get::<PeerIdentity>();
        let snapshot;
        let authorization = match &self.source {
            Authorization::Fixed(a) => Some(&**a),
            Authorization::Live(policy) => {
                snapshot = policy.load();
                let inbound = match peer {
                    Some(p) => snapshot.inbound_for(p.local_addr),
                    None => snapshot.inbound_default(),
                };
                inbound.map(|i| &i.authorization)
            }
        };
        let Some(authorization) = authorization.filter(|a| !a.engines.is_empty()) else {
            return Ok(()); // no policy: Istio allows
        };
        let Some(peer) = peer else {
            return Err(PermissionDenied {
                policy: Some("(no PeerIdentity on the request: fail closed)".to_owned()),
            });
        };
        let attrs = HttpAttributes::new(req, peer);
        match authorization.evaluate(&attrs) {
            rbac::Decision::Allowed(_) => Ok(()),
            denied => Err(PermissionDenied {
                policy: denied.policy().map(str::to_owned),
            }),
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.decide(&req) {
            Ok(()) => ResponseFuture {
                state: State::Inner {
                    future: self.inner.call(req),
                },
            },
            Err(denied) => {
                tracing::debug!(%denied, path = req.uri().path(), "request denied");
                ResponseFuture {
                    state: State::Denied {
                        response: Some(denial(&req, denied)),
                    },
                }
            }
        }
    }
}

fn denial<B, ResB: Default>(req: &Request<B>, denied: PermissionDenied) -> Response<ResB> {
    let mut response = Response::new(ResB::default());
    if crate::exchange::is_grpc(req.headers()) {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("7"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("RBAC:%20access%20denied"),
        );
    } else {
        *response.status_mut() = StatusCode::FORBIDDEN;
    }
    response.extensions_mut().insert(denied);
    response
}

pin_project! {
    /// The future of [`Authorize`]: the inner call, or the ready denial.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Denied { response: Option<Response<B>> },
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Denied { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending, // polled after completion
            },
        }
    }
}

/// A request and its connection as RBAC sees them; borrows, and allocates only to join a
/// header that appears more than once.
struct HttpAttributes<'a, B> {
    req: &'a Request<B>,
    peer: &'a PeerIdentity,
    joined: Vec<(&'a str, String)>,
}

impl<'a, B> HttpAttributes<'a, B> {
    fn new(req: &'a Request<B>, peer: &'a PeerIdentity) -> Self {
        let headers = req.headers();
        let mut joined = Vec::new();
        if headers.keys_len() != headers.len() {
            for name in headers.keys() {
                let mut values = headers.get_all(name).iter();
                if let (Some(first), Some(_)) = (values.next(), values.next()) {
                    let all: Vec<&str> = std::iter::once(first)
                        .chain(headers.get_all(name).iter().skip(1))
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    joined.push((name.as_str(), all.join(",")));
                }
            }
        }
        Self { req, peer, joined }
    }
}

impl<B> RequestAttributes for HttpAttributes<'_, B> {
    fn method(&self) -> &str {
        self.req.method().as_str()
    }

    fn path(&self) -> &str {
        self.req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    }

    fn authority(&self) -> &str {
        self.req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                self.req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        if let Some((_, v)) = self.joined.iter().find(|(n, _)| *n == name) {
            return Some(v);
        }
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn source(&self) -> SocketAddr {
        self.peer.remote_addr
    }

    fn destination(&self) -> SocketAddr {
        self.peer.local_addr
    }

    fn peer_principal(&self) -> Option<&str> {
        self.peer.spiffe_id.as_ref().map(|id| id.as_str())
    }

    fn sni(&self) -> Option<&str> {
        self.peer.sni.as_deref()
    }
}
