//! The outbound client: everything the policy says happens to a call, inside the caller.
//!
//! [`HttpClient`] sends HTTP/1.1 or HTTP/2 requests addressed by logical target (the
//! request's authority, `payment-service:8080`); [`Channel`] is the same client bound to
//! one target, for tonic-generated clients (`PaymentClient::new(mesh.channel(...))`).
//! Per request: the current snapshot (lock-free) -> virtual host (exact domains by map) and
//! route -> fault injection -> weighted cluster -> the cluster's stack, a tower service per
//! concern: `retry` (a `tower::retry::Policy`, only when the route retries) over
//! `breaker` (the request slot taken in `poll_ready`) over `endpoint` (LB, outlier
//! ejection, the pooled connection with TCP_NODELAY and mTLS when the cluster says, the
//! attempt's deadline). A target the policy does not know is resolved by DNS and dialed
//! with default settings.

mod attempt;
mod breaker;
pub(crate) mod cluster;
pub(crate) mod connect;
mod deadline;
mod demand;
mod endpoint;
mod fault;
mod observed;
mod pool;
mod response;
mod retry;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use mesh_core::live::LivePolicy;
use mesh_core::retry::RetryPolicy;
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, HashPolicyKind, PathMatch, Route, RouteAction, VirtualHost,
};
use tokio::time::Instant;

pub use cluster::{EndpointStatus, TlsProvider};
pub use connect::{IoStream, TlsConnected, UpstreamTlsConnect};
pub use response::ResponseBody;

use crate::body::{BoxError, ReplayBody};
use crate::error::MeshError;
use crate::exchange::is_grpc;
use crate::trace::MeshTracer;
use attempt::Attempt;
use breaker::Breaker;
use cluster::{ClusterRegistry, ClusterState};
use endpoint::Endpoints;
use response::error_response;
use retry::Retries;
use tower::ServiceExt;

/// Request bodies as the connection pools carry them.
pub(crate) type RequestBody = ReplayBody<UnsyncBoxBody<Bytes, BoxError>>;

/// Settings of the outbound client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboundConfig {
    /// Bodies up to this size are kept for retries; larger ones are not retried.
    pub retry_buffer_limit: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            retry_buffer_limit: 64 * 1024,
        }
    }
}

/// Subscribes targets with the control plane, when the policy comes from xDS.
pub(crate) struct XdsTargets {
    /// Asks the xDS client to watch a target's listener.
    pub(crate) subscribe: Box<dyn Fn(String) + Send + Sync>,
    /// Targets already asked for.
    known: arc_swap::ArcSwap<std::collections::HashSet<String>>,
    lock: std::sync::Mutex<()>,
    /// How long a call waits for a new target's policy (gRFC A57's does-not-exist time).
    pub(crate) wait: Duration,
}

impl XdsTargets {
    pub(crate) fn new(subscribe: Box<dyn Fn(String) + Send + Sync>, wait: Duration) -> Self {
        Self {
            subscribe,
            known: arc_swap::ArcSwap::from_pointee(std::collections::HashSet::new()),
            lock: std::sync::Mutex::new(()),
            wait,
        }
    }

    /// Subscribes `target` once.
    pub(crate) fn ensure(&self, target: &str) {
        if self.known.load().contains(target) {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.known.load_full();
        if current.contains(target) {
            return;
        }
        let mut next = std::collections::HashSet::clone(&current);
        next.insert(target.to_owned());
        self.known.store(Arc::new(next));
        (self.subscribe)(target.to_owned());
    }
}

/// The shared engine behind every client taken from one mesh.
pub(crate) struct Outbound {
    policy: LivePolicy,
    clusters: ClusterRegistry,
    faults: fault::ActiveFaults,
    config: OutboundConfig,
    xds: Option<XdsTargets>,
    metrics: crate::metrics::Metrics,
    /// Where client spans go; held, not looked up per call.
    tracer: Arc<MeshTracer>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("clusters", &self.clusters)
            .finish()
    }
}

impl Outbound {
    pub(crate) fn new(
        policy: LivePolicy,
        tls: Option<Arc<dyn TlsProvider>>,
        config: OutboundConfig,
        xds: Option<XdsTargets>,
        tracer: Arc<MeshTracer>,
    ) -> Self {
        Self {
            policy,
            clusters: ClusterRegistry::new(tls),
            faults: fault::ActiveFaults::default(),
            config,
            xds,
            metrics: crate::metrics::Metrics::default(),
            tracer,
        }
    }

    /// The tracer its client spans go to.
    pub(crate) fn tracer(&self) -> &Arc<MeshTracer> {
        &self.tracer
    }

    /// Subscribes a target with the control plane (no-op without xDS).
    pub(crate) fn subscribe(&self, target: &str) {
        if let Some(x) = &self.xds {
            x.ensure(target);
        }
    }

    /// With xDS, a target not yet in the policy is waited for (up to the does-not-exist
    /// time) rather than dialed by DNS at once.
    async fn await_target(&self, target: &str) -> Arc<mesh_core::Snapshot> {
        let snap = self.policy.snapshot();
        let Some(xds) = &self.xds else {
            return snap;
        };
        if snap.outbound(target).is_some() {
            return snap;
        }
        xds.ensure(target);
        let mut watch = self.policy.watch();
        let deadline = Instant::now() + xds.wait;
        loop {
            let snap = self.policy.snapshot();
            if snap.outbound(target).is_some() {
                return snap;
            }
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                tracing::warn!(target, "the control plane sent no listener for this target");
                return self.policy.snapshot();
            }
        }
    }

    /// Says, in a failure to reach a target dialed by DNS, which target it was and why it
    /// was dialed by DNS rather than by the policy.
    fn explain_passthrough(&self, error: MeshError, target: &str) -> MeshError {
        let why = match &self.xds {
            Some(xds) => format!(
                "the control plane sent no listener for it within {:?}",
                xds.wait
            ),
            None => "the policy has no service of that name".to_owned(),
        };
        match error {
            MeshError::Connect { endpoint, reason } => MeshError::Connect {
                reason: format!(
                    "{reason} (target {target} is not in the mesh policy: {why}; it was dialed by DNS)"
                ),
                endpoint,
            },
            other => other,
        }
    }

    /// Records into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.clusters.set_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// The endpoints of every cluster in use, for admin pages and tests.
    pub(crate) fn cluster_status(&self) -> Vec<(String, Vec<EndpointStatus>)> {
        let mut out: Vec<_> = self
            .clusters
            .snapshot()
            .iter()
            .map(|(k, v)| (k.clone(), v.endpoint_status()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Each cluster's breaker limits.
    pub(crate) fn breaker_status(&self) -> Vec<(String, Vec<BreakerStatus>)> {
        use mesh_core::breaker::BreakerLimit as L;
        let limits = [
            L::MaxConnections,
            L::MaxPendingRequests,
            L::MaxRequests,
            L::MaxRetries,
        ];
        self.clusters
            .snapshot()
            .iter()
            .map(|(k, v)| {
                let t = v.breaker.thresholds();
                let row = limits
                    .iter()
                    .map(|l| BreakerStatus {
                        limit: *l,
                        in_flight: v.breaker.in_flight(*l),
                        max: t.get(*l),
                    })
                    .collect();
                (k.clone(), row)
            })
            .collect()
    }

    /// Forgets the state of clusters the current policy no longer has.
    pub(crate) fn prune(&self) {
        let snap = self.policy.snapshot();
        self.clusters
            .retain(|name| snap.cluster(name).is_some() || name.starts_with(cluster::PASSTHROUGH));
    }
}

/// One circuit-breaker limit of a cluster, as the admin server shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// The limit.
    pub limit: mesh_core::breaker::BreakerLimit,
    /// How much of it is in use.
    pub in_flight: u32,
    /// Its maximum.
    pub max: u32,
}

/// An HTTP client whose requests go through the mesh, addressed by their authority.
pub struct HttpClient<B> {
    outbound: Arc<Outbound>,
    target: Option<Arc<Target>>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        Self {
            outbound: Arc::clone(&self.outbound),
            target: self.target.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for HttpClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.target)
            .finish()
    }
}

/// The target a client is bound to, and what is built once from it.
#[derive(Debug)]
struct Target {
    name: Arc<str>,
    /// The Host header of its HTTP/1.1 requests.
    host: Option<HeaderValue>,
    /// Its `destination_service` metric label, interned.
    service: u32,
}

/// A client bound to one target, for tonic-generated clients: `B` is the body tonic sends
/// (`tonic::body::Body`), inferred where the channel is used.
pub type Channel<B> = HttpClient<B>;

impl<B> HttpClient<B> {
    pub(crate) fn new(outbound: Arc<Outbound>, target: Option<&str>) -> Self {
        let target = target.map(|name| {
            Arc::new(Target {
                name: Arc::from(name),
                host: HeaderValue::from_str(name).ok(),
                service: outbound.metrics.intern(crate::metrics::host_of(name)),
            })
        });
        Self {
            outbound,
            target,
            _body: PhantomData,
        }
    }
}

impl<B> tower::Service<Request<B>> for HttpClient<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Limits are enforced per call (the breaker answers at once); nothing to wait for.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
        Box::pin(Outbound::dispatch(
            Arc::clone(&self.outbound),
            self.target.clone(),
            Box::new(req),
        ))
    }
}

/// Headers most requests gain on their way out, reserved before they go in so that the
/// map grows at most once, and before it fills: `traceparent`, `x-request-id`,
/// `x-envoy-attempt-count` and the `content-length` (or on HTTP/1.1 the `Host`) hyper
/// adds. (The metadata exchange's headers go only on a connection's first requests
/// between mesh services.) `try_reserve` sizes a map for what it holds plus this, a third
/// more, rounded up to a power of two. Not more: 8 (every header the client may add) gave
/// an empty map (a request a handler built) room for 12 in a 1,344-byte block, past glibc's
/// per-thread cache of small blocks; and 5 made a tonic call's map (two headers, room for
/// six) grow to room for 12 before the mesh added anything, while 4 fits it as it is.
const MESH_HEADERS: usize = 4;

/// The virtual host and route a request matched, and the route's forward action.
#[derive(Clone, Copy)]
struct Chosen<'s> {
    vh: &'s VirtualHost,
    route: &'s Route,
    fwd: &'s ForwardAction,
}

/// The rest of a routed request's path after the fault filter, as its inner service. Only
/// routes with a fault filter go through it (its call boxes the rest of the path); the
/// others call [`Outbound::forward`] directly.
#[derive(Clone, Copy)]
struct Forward<'s> {
    outbound: &'s Outbound,
    snap: &'s mesh_core::Snapshot,
    chosen: Chosen<'s>,
    target: Option<&'s Target>,
    authority: &'s str,
    grpc: bool,
}

impl<'s> tower::Service<Request<UnsyncBoxBody<Bytes, BoxError>>> for Forward<'s> {
    type Response = Response<ResponseBody>;
    type Error = MeshError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, MeshError>> + Send + 's>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<UnsyncBoxBody<Bytes, BoxError>>) -> Self::Future {
        let this = *self;
        Box::pin(this.outbound.forward(
            this.snap,
            this.chosen,
            this.target,
            this.authority,
            this.grpc,
            req,
        ))
    }
}

/// What a request is sent to after routing.
struct Routed<'s> {
    state: Arc<ClusterState>,
    retry: Option<&'s RetryPolicy>,
    timeout: Option<Duration>,
    hash: Option<u64>,
    /// The response header changes, most specific first (weighted cluster, route,
    /// virtual host): a fixed array, no allocation per request.
    response_headers: [Option<&'s mesh_core::route::HeaderMutations>; 3],
    /// Each attempt says which it is (`x-envoy-attempt-count`), as the virtual host asks.
    attempt_count: bool,
}

pin_project_lite::pin_project! {
    /// Where routing sent a request, as the future of its response. Routing is
    /// synchronous and only this awaits, so the call's future holds the request once (in
    /// the cluster's stack), not once per step.
    #[project = StepProj]
    enum Step<'s> {
        /// The route answers itself (a direct response).
        Respond { response: Option<Response<ResponseBody>> },
        /// Routing failed.
        Fail { error: Option<MeshError> },
        /// To a cluster of the policy.
        Send { #[pin] sending: Sending<'s> },
        /// To a target outside the policy, dialed by DNS.
        Passthrough {
            #[pin]
            sending: Sending<'s>,
            outbound: &'s Outbound,
            authority: &'s str,
        },
        /// Through the route's fault filter, then on as `Send`. Boxed: a future of the
        /// filter's generic type held across an await trips rustc's higher-ranked `Send`
        /// check.
        Fault {
            faulted: Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, MeshError>> + Send + 's>>,
        },
    }
}

impl Step<'_> {
    fn fail(error: MeshError) -> Self {
        Step::Fail { error: Some(error) }
    }
}

impl Future for Step<'_> {
    type Output = Result<Response<ResponseBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            StepProj::Respond { response } => match response.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                // Polled after completion: a contract breach by the caller.
                None => Poll::Pending,
            },
            StepProj::Fail { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            StepProj::Send { sending } => sending.poll(cx),
            StepProj::Passthrough {
                sending,
                outbound,
                authority,
            } => sending
                .poll(cx)
                .map_err(|e| outbound.explain_passthrough(e, authority)),
            StepProj::Fault { faulted } => faulted.as_mut().poll(cx),
        }
    }
}

/// The cluster's stack for one request: under the route's retries when it has any.
type StackCall<'s> = futures_util::future::Either<
    tower::util::Oneshot<Breaker<Endpoints>, Attempt>,
    tower::util::Oneshot<tower::retry::Retry<Retries<'s>, Breaker<Endpoints>>, Attempt>,
>;

pin_project_lite::pin_project! {
    /// A routed request in its cluster's stack; the route's response header changes are
    /// made to what comes back.
    struct Sending<'s> {
        #[pin]
        call: StackCall<'s>,
        response_headers: [Option<&'s mesh_core::route::HeaderMutations>; 3],
        // The budget counts requests in flight, retried or not.
        budget: Option<mesh_core::retry::RequestToken>,
    }
}

impl Future for Sending<'_> {
    type Output = Result<Response<ResponseBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.call.poll(cx)).map_err(|failed| failed.error)?;
        for muts in this.response_headers.iter().flatten() {
            if !muts.is_empty() {
                muts.apply(resp.headers_mut());
                resp.body_mut().head_changed();
            }
        }
        Poll::Ready(Ok(resp))
    }
}

impl Outbound {
    /// One call: observed (client span, metrics) from here to the end of its response
    /// body; its target's policy, waited for when xDS has not sent it yet; routed; sent.
    // Not an async fn (the lint's suggestion): its arguments would be moved into a second
    // slot of the future; the block's captures are used in place.
    //
    // The request comes boxed: a future keeps its captures for its whole life, and a
    // request captured whole (240 bytes, dead once routing has moved it into the cluster's
    // stack) made the call's future too large for the allocator's per-thread cache
    // (glibc's, 1,032 bytes): its slow path costs far more than a small box. It is moved
    // out of the box only into routing (a local holding it would keep its place in the
    // future as long as the captured request did); the emptied box is freed with the
    // future. (Unboxed inside routing instead, so that the box is freed sooner, the call
    // cost about 450 instructions more in the stack bench: codegen and the allocator.)
    #[allow(clippy::manual_async_fn)]
    fn dispatch(
        self: Arc<Self>,
        target: Option<Arc<Target>>,
        mut req: Box<Request<UnsyncBoxBody<Bytes, BoxError>>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static {
        async move {
            let target = target.as_deref();
            let (observer, grpc) = self.observe(target, &mut req);
            // A client bound to a target (a tonic channel) borrows its name; one addressed
            // by the request's authority holds that (the request changes below).
            let unbound;
            let authority: &str = match target {
                Some(t) => &t.name,
                None => match RequestAuthority::of(&req) {
                    Ok(a) => {
                        unbound = a;
                        unbound.as_str()
                    }
                    Err(e) => return Ok(observer.finish(error_response(e, grpc))),
                },
            };
            let snap = self.await_target(authority).await;
            let resp = match self.route(&snap, target, authority, *req, grpc).await {
                Ok(resp) => resp,
                Err(e) => error_response(e, grpc),
            };
            Ok(observer.finish(resp))
        }
    }

    /// Starts observing a call: the trace context goes onto its headers (the current
    /// request's, in a client span); the span and the metrics finish when the response
    /// body ends. Says whether the call is gRPC.
    fn observe(
        &self,
        target: Option<&Target>,
        req: &mut Request<UnsyncBoxBody<Bytes, BoxError>>,
    ) -> (observed::OutboundObserver, bool) {
        let grpc = is_grpc(req.headers());
        // Room for what the mesh adds to most requests in one allocation: a map that
        // grows rehashes.
        // (`try_reserve`: no panic on a map already at its size limit; it then grows as
        // it can, header by header.)
        let _ = req.headers_mut().try_reserve(MESH_HEADERS);
        // A body without a length (gRPC, streaming) is counted as it is sent.
        let size = match req.body().size_hint().exact() {
            Some(n) => crate::observe::RequestSize::Exact(n),
            None => {
                let (body, size) = crate::observe::CountedBody::new(std::mem::take(req.body_mut()));
                *req.body_mut() = body.boxed_unsync();
                size
            }
        };
        let observer = observed::start(
            &self.tracer,
            &self.metrics,
            target.map(|t| observed::ObservedTarget {
                name: &t.name,
                service: t.service,
            }),
            req,
            grpc,
            size,
        );
        (observer, grpc)
    }

    /// Routes a request to `authority` by the policy in `snap`: virtual host and route,
    /// then the route's fault filter or its cluster's stack. (A `Step`, failures
    /// included, not a `Result` of one: the step holds the cluster stack's future, about a
    /// kilobyte, and each unwrapping moved it.)
    fn route<'s>(
        &'s self,
        snap: &'s mesh_core::Snapshot,
        target: Option<&'s Target>,
        authority: &'s str,
        req: Request<UnsyncBoxBody<Bytes, BoxError>>,
        grpc: bool,
    ) -> Step<'s> {
        let Some(listener) = snap.outbound(authority) else {
            // Not in the policy: DNS, default settings (gRPC's dns: resolver).
            let routed = Routed {
                state: self.clusters.passthrough(authority),
                retry: None,
                timeout: None,
                hash: None,
                response_headers: [None; 3],
                attempt_count: false,
            };
            let host = host_for(target, authority, &req);
            return Step::Passthrough {
                sending: self.send(routed, req, host),
                outbound: self,
                authority,
            };
        };
        let path_and_query = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        // Strings only for the error.
        let no_route = || MeshError::NoRoute {
            authority: authority.to_owned(),
            path: path_and_query.to_owned(),
        };
        let Some(rc) = listener.route_config() else {
            return Step::fail(no_route());
        };
        let draw: u64 = crate::rng::random();
        let Some((vh, route)) = rc.route_for(authority, path_and_query, req.headers(), draw) else {
            return Step::fail(no_route());
        };
        let fwd = match route.action() {
            RouteAction::Forward(f) => f,
            RouteAction::Direct { status, body } => {
                let mut resp = Response::new(ResponseBody::full(body.clone().unwrap_or_default()));
                *resp.status_mut() =
                    http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK);
                return Step::Respond {
                    response: Some(resp),
                };
            }
            _ => return Step::fail(MeshError::NonForwardingAction),
        };
        let chosen = Chosen { vh, route, fwd };
        match route.fault() {
            // Fault injection happens before anything else costs the upstream, and is
            // decided on the request before the route's header changes (as Envoy's fault
            // filter).
            Some(fault) => {
                let forward = Forward {
                    outbound: self,
                    snap,
                    chosen,
                    target,
                    authority,
                    grpc,
                };
                let filter = fault::Fault::new(fault, &self.faults, grpc, forward);
                Step::Fault {
                    faulted: Box::pin(filter.oneshot(req)),
                }
            }
            None => self.forward(snap, chosen, target, authority, grpc, req),
        }
    }

    /// Sends a routed request to its cluster: the weighted pick, the header changes of the
    /// virtual host, route and weighted cluster, then the cluster's stack.
    fn forward<'s>(
        &self,
        snap: &'s mesh_core::Snapshot,
        chosen: Chosen<'s>,
        target: Option<&Target>,
        authority: &str,
        grpc: bool,
        mut req: Request<UnsyncBoxBody<Bytes, BoxError>>,
    ) -> Step<'s> {
        let Chosen { vh, route, fwd } = chosen;
        let (cluster_name, wc_headers) = match fwd.clusters() {
            ClusterSpecifier::Cluster(c) => (c.as_str(), None),
            ClusterSpecifier::Weighted(w) => {
                let c = w.pick(crate::rng::random());
                (c.name(), Some(c))
            }
            _ => return Step::fail(MeshError::NonForwardingAction),
        };
        let Some(cluster) = snap.cluster(cluster_name) else {
            return Step::fail(MeshError::ClusterNotFound(cluster_name.to_owned()));
        };
        let state = self.clusters.get(cluster, snap.endpoints_of(cluster));

        // Header changes, most general first so the most specific wins.
        let headers = req.headers_mut();
        vh.request_headers().apply(headers);
        route.request_headers().apply(headers);
        if let Some(wc) = wc_headers {
            wc.request_headers().apply(headers);
        }
        rewrite(&mut req, route, fwd);
        // Istio's metadata exchange is the cluster's pools' (once per connection between
        // mesh services).

        let hash = request_hash(fwd, &state, &req);
        let response_headers = [
            wc_headers.map(|wc| wc.response_headers()),
            Some(route.response_headers()),
            Some(vh.response_headers()),
        ];
        let routed = Routed {
            timeout: deadline::effective_timeout(fwd, req.headers(), grpc),
            retry: fwd.retry_policy.as_ref().or_else(|| vh_retry(vh)),
            state,
            hash,
            response_headers,
            attempt_count: vh.includes_request_attempt_count(),
        };
        let host = host_for(target, authority, &req);
        Step::Send {
            sending: self.send(routed, req, host),
        }
    }

    /// The cluster's stack for a routed request (breaker over endpoints), under the
    /// route's retries when it has any, with the timeout and the retry budget.
    fn send<'s>(
        &self,
        routed: Routed<'s>,
        req: Request<UnsyncBoxBody<Bytes, BoxError>>,
        host: Option<HeaderValue>,
    ) -> Sending<'s> {
        let state = routed.state;
        let started = Instant::now();
        let deadline = routed.timeout.map(|t| started + t);
        let retry = routed.retry.filter(|p| p.num_retries > 0);
        let (mut parts, body) = req.into_parts();
        if routed.attempt_count && retry.is_none() {
            // The only attempt. (With retries, the retry layer counts them.)
            parts
                .headers
                .insert(retry::ATTEMPT_COUNT.clone(), retry::attempt_count(1));
        }
        let body = match retry {
            Some(_) => ReplayBody::buffer(body, self.config.retry_buffer_limit),
            None => ReplayBody::Streaming {
                prefix: None,
                rest: body,
            },
        };
        let budget = state.budget.as_ref().map(|b| b.request());
        let mut attempt = Attempt::new(Request::from_parts(parts, body), started);
        attempt.hash = routed.hash;
        attempt.deadline = deadline;
        let cluster = Breaker::new(
            Endpoints::new(Arc::clone(&state), host),
            Arc::clone(&state.breaker),
            Arc::clone(&state.config),
        );
        let call = match retry {
            None => futures_util::future::Either::Left(cluster.oneshot(attempt)),
            Some(policy) => {
                let retries = Retries::new(
                    policy,
                    deadline,
                    Arc::clone(&state.breaker),
                    state.budget.clone(),
                    self.metrics.clone(),
                    Arc::clone(&state.config),
                )
                .counting_attempts(routed.attempt_count);
                retries.first(&mut attempt);
                futures_util::future::Either::Right(
                    tower::retry::Retry::new(retries, cluster).oneshot(attempt),
                )
            }
        };
        Sending {
            call,
            response_headers: routed.response_headers,
            budget,
        }
    }
}

/// The authority a request names, for a client not bound to a target: the URI's (its
/// bytes shared with the request, not copied), else the Host header's.
enum RequestAuthority {
    Uri(Authority),
    Host(String),
}

impl RequestAuthority {
    fn of<B>(req: &Request<B>) -> Result<Self, MeshError> {
        if let Some(a) = req.uri().authority() {
            return Ok(Self::Uri(a.clone()));
        }
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| Self::Host(h.to_owned()))
            .ok_or_else(|| MeshError::NoRoute {
                authority: String::new(),
                path: req.uri().path().to_owned(),
            })
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Uri(a) => a.as_str(),
            Self::Host(h) => h,
        }
    }
}

/// The Host header an HTTP/1.1 request without one is sent with: the target's, built once
/// for a client bound to a target.
fn host_for<B>(target: Option<&Target>, authority: &str, req: &Request<B>) -> Option<HeaderValue> {
    if req.headers().contains_key(http::header::HOST) {
        return None;
    }
    match target {
        Some(t) => t.host.clone(),
        None => recent_host(authority),
    }
}

/// The Host value of an authority a client not bound to a target names, remembered per
/// thread: a client's calls repeat a few authorities, and a value made anew each time was
/// checked, copied and allocated on every call.
fn recent_host(authority: &str) -> Option<HeaderValue> {
    use std::cell::RefCell;

    use crate::ring::{self, Ring};

    type Slot = Option<(Box<str>, HeaderValue)>;
    thread_local! {
        static RECENT: RefCell<Ring<Slot, 4>> = const { RefCell::new(Ring::new([const { None }; 4])) };
    }
    let found = ring::find(&RECENT, |slot| match slot {
        Some((a, host)) if **a == *authority => Some(host.clone()),
        _ => None,
    });
    if found.is_some() {
        return found;
    }
    // Shared from the start, so that each clone counts a reference.
    let host = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(authority.as_bytes())).ok()?;
    ring::fill(&RECENT, |slot| {
        *slot = Some((Box::from(authority), host.clone()))
    });
    Some(host)
}

fn vh_retry(vh: &VirtualHost) -> Option<&RetryPolicy> {
    vh.retry_policy()
}

/// Applies the route's prefix and authority rewrites.
fn rewrite<B>(req: &mut Request<B>, route: &Route, fwd: &ForwardAction) {
    if let Some(new_prefix) = &fwd.prefix_rewrite {
        let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let rewritten = match route.matcher().path_match() {
            PathMatch::Prefix(p) if pq.starts_with(p.as_str()) => {
                Some(format!("{new_prefix}{}", &pq[p.len()..]))
            }
            PathMatch::Exact(p) | PathMatch::SeparatedPrefix(p) if pq.starts_with(p.as_str()) => {
                Some(format!("{new_prefix}{}", &pq[p.len()..]))
            }
            _ => None,
        };
        if let Some(new) = rewritten.and_then(|s| PathAndQuery::try_from(s).ok()) {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(new);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    if let Some(host) = &fwd.host_rewrite {
        if let Ok(v) = HeaderValue::from_str(host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        if let Ok(a) = Authority::try_from(host.as_str()) {
            let mut parts = req.uri().clone().into_parts();
            if parts.scheme.is_some() {
                parts.authority = Some(a);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
}

/// The ring-hash key of a request from the route's hash policies (or the cluster's).
fn request_hash<B>(fwd: &ForwardAction, state: &ClusterState, req: &Request<B>) -> Option<u64> {
    let policies = if fwd.hash_policies.is_empty() {
        &state.config.hash_policies
    } else {
        &fwd.hash_policies
    };
    let mut hash: Option<u64> = None;
    for p in policies {
        let h = match &p.kind {
            HashPolicyKind::Header { name } => req
                .headers()
                .get(name.as_str())
                .map(|v| xxhash_rust::xxh64::xxh64(v.as_bytes(), 0)),
            _ => None,
        };
        if let Some(h) = h {
            // Envoy combines several hashes by rotating and xoring.
            hash = Some(hash.map_or(h, |acc| acc.rotate_left(1) ^ h));
            if p.terminal {
                break;
            }
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The room reserved for the mesh's headers: a tonic call's map (two headers) and an
    /// empty one (a request a handler built) take the usual three and the `content-length`
    /// hyper adds (or an HTTP/1.1 `Host`) without growing, the tonic map as it came, the
    /// empty one in a small block.
    #[test]
    fn the_reserved_room_fits_the_usual_headers_without_growing() {
        let usual = [
            crate::trace::w3c::TRACEPARENT,
            crate::trace::X_REQUEST_ID,
            retry::ATTEMPT_COUNT.clone(),
            http::header::CONTENT_LENGTH,
        ];
        let value = HeaderValue::from_static("v");
        let mut tonic = http::HeaderMap::new();
        tonic.insert(http::header::TE, value.clone());
        tonic.insert(http::header::CONTENT_TYPE, value.clone());
        let mut built = http::HeaderMap::new();
        let tonic_room = tonic.capacity();
        for map in [&mut tonic, &mut built] {
            map.try_reserve(MESH_HEADERS).unwrap();
            let room = map.capacity();
            for name in &usual {
                // As hyper adds `content-length`: `entry` makes room for one more first.
                map.entry(name).or_insert_with(|| value.clone());
            }
            assert_eq!(map.capacity(), room, "the usual headers fit");
        }
        assert!(built.capacity() < 12, "room for {}", built.capacity());
        assert_eq!(tonic.capacity(), tonic_room, "the tonic map did not grow");
    }

    #[test]
    fn an_unbound_clients_host_is_its_authority_remembered_per_thread() {
        let req = Request::new(());
        // More authorities than the thread remembers, twice over: each gets its own.
        for _ in 0..2 {
            for n in 0..9 {
                let authority = format!("payment-{n}.shop:8080");
                let host = host_for(None, &authority, &req).expect("a valid host");
                assert_eq!(host.to_str().unwrap(), authority);
            }
        }
        // Not a header value: no Host from it (the pool then writes the endpoint's).
        assert_eq!(host_for(None, "bad\nhost", &req), None);
        // A request with its own Host keeps it.
        let mut with_host = Request::new(());
        with_host
            .headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("mine"));
        assert_eq!(host_for(None, "payment:8080", &with_host), None);
    }
}
