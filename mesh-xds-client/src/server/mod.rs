//! An ADS server over gRPC on TCP, TLS or a Unix socket: the server side of this crate's
//! client. The dev control plane (`examples/control-plane`) serves its configuration with
//! it, and the tests of this workspace use it as the control plane.
//!
//! It serves whatever resources its owner puts in it, state-of-the-world: a response per
//! type when a stream first asks for it or changes its names, and a push to every
//! subscribed stream when the owner changes that type. LDS and CDS answer wildcard
//! requests (`*`, or no names on a stream's first request for the type, as Envoy sends)
//! with every resource of the type; a [`WildcardFilter`] narrows them per node, and
//! [variants](AdsServer::put_variant) serve different resources to the nodes a
//! [`VariantSelector`] picks. Delta streams get only what changed for them (and the names
//! of removed resources); their requests are recorded apart
//! ([`AdsServer::delta_requests`]). Every request is recorded, so ACKs, NACKs and their
//! `error_detail` can be read back ([`AdsServer::requests`]).
//!
//! Like the control planes people run (istiod, the Istio agent, go-control-plane: grpc-go;
//! grpcio: C-core), it sends an ADS call's response headers only with its first response
//! ([`HeaderTiming::WithFirstResponse`]); a client that waits for headers before asking
//! for anything waits forever. [`AdsServer::set_header_timing`] makes it answer at once,
//! as a tonic server does. For fault drills it can drop its streams, go silent, refuse
//! new calls, and stop and start again on the same port.

mod delta;
mod service;
mod tls;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::bootstrap::XdsServer;
use crate::resource::XdsType;

/// How many requests of each kind are kept for [`AdsServer::requests`] and
/// [`AdsServer::delta_requests`]: the latest, so that a long-running server's memory does
/// not grow with every ACK.
const MAX_RECORDED: usize = 10_000;

/// Keeps `request` (a copy), received on `stream`, as the latest of at most
/// [`MAX_RECORDED`] records.
fn record<R: Clone>(records: &mut VecDeque<Recorded<R>>, stream: u64, request: &R) {
    if records.len() == MAX_RECORDED {
        records.pop_front();
    }
    records.push_back(Recorded {
        stream,
        request: request.clone(),
    });
}

/// The name a wildcard subscription (every resource of a type) is kept under.
const WILDCARD: &str = "*";

/// A request the server received, with the stream it came on (streams count from 1; delta
/// streams are numbered with the state-of-the-world ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<R> {
    /// The stream.
    pub stream: u64,
    /// The request.
    pub request: R,
}

/// A state-of-the-world request the server received.
pub type RecordedRequest = Recorded<DiscoveryRequest>;

/// A delta request the server received.
pub type RecordedDeltaRequest = Recorded<DeltaDiscoveryRequest>;

/// What a discovery request of either kind says about the response it answers.
pub trait AdsRequest {
    /// The nonce of the response it answers; empty on a first request.
    fn response_nonce(&self) -> &str;
    /// Whether it rejects that response (carries an `error_detail`).
    fn has_error_detail(&self) -> bool;
    /// Its type URL.
    fn type_url(&self) -> &str;
}

/// The two request types carry the same three fields under the same names.
macro_rules! ads_request {
    ($($t:ty),*) => {$(
        impl AdsRequest for $t {
            fn response_nonce(&self) -> &str {
                &self.response_nonce
            }
            fn has_error_detail(&self) -> bool {
                self.error_detail.is_some()
            }
            fn type_url(&self) -> &str {
                &self.type_url
            }
        }
    )*};
}

ads_request!(DiscoveryRequest, DeltaDiscoveryRequest);

impl<R: AdsRequest> Recorded<R> {
    /// Whether it is an ACK or NACK of a response (it carries a nonce).
    pub fn is_reply(&self) -> bool {
        !self.request.response_nonce().is_empty()
    }

    /// Whether it is a NACK (it carries an `error_detail`).
    pub fn is_nack(&self) -> bool {
        self.request.has_error_detail()
    }

    /// Its type.
    pub fn xds_type(&self) -> Option<XdsType> {
        XdsType::from_type_url(self.request.type_url())
    }
}

#[derive(Debug)]
struct StreamHandle {
    id: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, tonic::Status>>,
    subscribed: BTreeMap<XdsType, BTreeSet<String>>,
    /// The node its first request named.
    node: Option<Node>,
    /// Types whose latest push found the buffer full (the client is not reading): sent
    /// again, current, with the stream's next request (the client's ACK of what it read).
    behind: BTreeSet<XdsType>,
}

impl StreamHandle {
    /// Queues `response` (for type `t`), or notes the type as behind when the buffer is
    /// full. A state-of-the-world response replaces every earlier one of its type, so the
    /// client is up to date once the latest reaches it.
    fn send(&mut self, t: XdsType, response: DiscoveryResponse) {
        match self.tx.try_send(Ok(response)) {
            Ok(()) => {
                self.behind.remove(&t);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind.insert(t);
            }
            // The stream ended; its reader removes it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Decides which resources a wildcard subscription of a node gets, by node, type and
/// resource name (see [`AdsServer::set_wildcard_filter`]).
pub type WildcardFilter = Arc<dyn Fn(Option<&Node>, XdsType, &str) -> bool + Send + Sync>;

/// Names the variant of the resources a node gets (see [`AdsServer::set_variant`]);
/// `None`: the base resources only.
pub type VariantSelector = Arc<dyn Fn(Option<&Node>) -> Option<String> + Send + Sync>;

/// An owner's callback, shown as set or not in `Debug`.
#[derive(Clone)]
struct Hook<F>(Option<F>);

impl<F> Default for Hook<F> {
    fn default() -> Self {
        Self(None)
    }
}

impl<F> std::fmt::Debug for Hook<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "set" } else { "none" })
    }
}

#[derive(Debug, Default)]
struct Inner {
    wildcard_filter: Hook<WildcardFilter>,
    resources: BTreeMap<XdsType, BTreeMap<String, Any>>,
    /// Per variant, resources that replace (or add to) the base ones for the nodes the
    /// selector assigns to it.
    variants: BTreeMap<String, BTreeMap<XdsType, BTreeMap<String, Any>>>,
    selector: Hook<VariantSelector>,
    versions: BTreeMap<XdsType, u64>,
    requests: VecDeque<RecordedRequest>,
    streams: Vec<StreamHandle>,
    delta_requests: VecDeque<RecordedDeltaRequest>,
    /// Requests received so far, of both kinds (the records keep only the latest).
    received: usize,
    delta_streams: Vec<delta::DeltaStream>,
    next_stream: u64,
    next_nonce: u64,
    closed: bool,
    header_timing: HeaderTiming,
    /// Streams opened while set are read but never answered.
    silent: bool,
    /// New calls are refused with this status.
    refusal: Option<tonic::Status>,
}

/// When the server sends an ADS call's response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderTiming {
    /// With the first response, as grpc-go servers (istiod, the Istio agent's xDS proxy,
    /// go-control-plane) and C-core servers (grpcio) do: until the server has something
    /// to say, the client sees nothing, not even headers. The default.
    #[default]
    WithFirstResponse,
    /// As soon as the call arrives, as tonic servers do.
    Immediately,
}

/// State shared by the server handle and the gRPC service.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Bumped whenever a request is recorded.
    recorded: watch::Sender<usize>,
}

impl Shared {
    /// When headers go out, and whether anything is answered at all.
    fn answering(&self) -> (HeaderTiming, bool) {
        let inner = self.lock();
        (inner.header_timing, !inner.silent)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn response(
        &mut self,
        t: XdsType,
        names: &BTreeSet<String>,
        node: Option<&Node>,
    ) -> DiscoveryResponse {
        self.next_nonce += 1;
        let empty = BTreeMap::new();
        let base = self.resources.get(&t).unwrap_or(&empty);
        let variant = self
            .selector
            .0
            .as_ref()
            .and_then(|select| select(node))
            .and_then(|v| self.variants.get(&v))
            .and_then(|v| v.get(&t));
        let merged;
        let resources = match variant {
            Some(overlay) if !overlay.is_empty() => {
                let mut all = base.clone();
                all.extend(overlay.iter().map(|(n, a)| (n.clone(), a.clone())));
                merged = all;
                &merged
            }
            _ => base,
        };
        let resources = if names.contains(WILDCARD) {
            let visible = |name: &str| {
                self.wildcard_filter
                    .0
                    .as_ref()
                    .is_none_or(|f| f(node, t, name))
            };
            resources
                .iter()
                .filter(|(name, _)| visible(name))
                .map(|(_, any)| any.clone())
                .collect()
        } else {
            names
                .iter()
                .filter_map(|n| resources.get(n).cloned())
                .collect()
        };
        DiscoveryResponse {
            version_info: self.versions.get(&t).copied().unwrap_or(0).to_string(),
            resources,
            type_url: t.type_url().to_owned(),
            nonce: self.next_nonce.to_string(),
            ..DiscoveryResponse::default()
        }
    }

    fn push(&mut self, t: XdsType) {
        *self.versions.entry(t).or_default() += 1;
        let mut pending = Vec::new();
        for i in 0..self.streams.len() {
            if let Some(names) = self.streams[i].subscribed.get(&t).cloned() {
                let node = self.streams[i].node.clone();
                pending.push((i, self.response(t, &names, node.as_ref())));
            }
        }
        for (i, response) in pending {
            self.streams[i].send(t, response);
        }
        self.push_delta(t);
    }
}

/// The running server; see the [module docs](self).
#[derive(Debug)]
pub struct AdsServer {
    addr: Option<SocketAddr>,
    xds_server: XdsServer,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl AdsServer {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr` (a restarted server reuses its predecessor's address).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Ok(Self::serve(
            incoming,
            XdsServer::insecure(addr.to_string()),
            Some(addr),
        ))
    }

    /// Starts a TLS server on `addr` (`127.0.0.1:0` for any port) with this rustls
    /// configuration (ALPN `h2` is added). Its [`xds_server`](Self::xds_server) entry has
    /// `tls` channel credentials naming `ca_certificate_file`, for a client to trust it.
    pub async fn start_tls(
        addr: SocketAddr,
        mut config: rustls::ServerConfig,
        ca_certificate_file: &Path,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let incoming = tls::incoming(listener, Arc::new(config));
        let creds = crate::bootstrap::ChannelCreds::Tls {
            config: Some(serde_json::json!({
                "ca_certificate_file": ca_certificate_file,
            })),
        };
        let server =
            XdsServer::insecure(format!("localhost:{}", addr.port())).with_channel_creds(creds);
        Ok(Self::serve(incoming, server, Some(addr)))
    }

    /// Starts a server on a Unix socket at `path` (as the Istio agent's `unix:///etc/istio/XDS`).
    pub async fn start_unix(path: &Path) -> std::io::Result<Self> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let uri = format!("unix://{}", path.display());
        let server = XdsServer::from_uri(&uri)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Self::serve(incoming, server, None))
    }

    fn serve<S, IO>(incoming: S, xds_server: XdsServer, addr: Option<SocketAddr>) -> Self
    where
        S: futures_util::Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
    {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            recorded: watch::channel(0).0,
        });
        let svc = AggregatedDiscoveryServiceServer::new(service::AdsService {
            shared: shared.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Self {
            addr,
            xds_server,
            shared,
            stop: Some(stop),
            task,
        }
    }

    /// Its TCP address (`None` for a Unix socket server).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// A bootstrap server entry pointing at it.
    pub fn xds_server(&self) -> XdsServer {
        self.xds_server.clone()
    }

    /// Limits what wildcard subscriptions get: a resource is sent to a stream subscribed to
    /// every resource of its type only when `filter(node, type, name)` says so. Requests
    /// that name resources get them regardless. A control plane uses this to keep
    /// resources shaped for one kind of client (gRPC's proxyless listeners) from others
    /// (Envoy), as istiod does by the node's `GENERATOR` metadata.
    pub fn set_wildcard_filter(&self, filter: WildcardFilter) {
        self.shared.lock().wildcard_filter = Hook(Some(filter));
    }

    /// Sets when calls opened from now on get their response headers (by default with the
    /// first response, as real control planes do).
    pub fn set_header_timing(&self, timing: HeaderTiming) {
        self.shared.lock().header_timing = timing;
    }

    /// While `true`, streams opened from then on are read (requests recorded) but get no
    /// response, not even headers: a server whose configuration is not ready, as seen
    /// from a client.
    pub fn set_silent(&self, silent: bool) {
        self.shared.lock().silent = silent;
    }

    /// Refuses calls made from now on with `status` (`None`: accept them again), as a
    /// server that does not serve ADS or denies the node does.
    pub fn set_refusal(&self, status: Option<tonic::Status>) {
        self.shared.lock().refusal = status;
    }

    /// Serves variants: `selector(node)` names the variant a stream's node gets, whose
    /// resources ([`AdsServer::put_variant`]) replace or add to the base ones of the same
    /// type and name, as istiod serves one name shaped differently for Envoy sidecars and
    /// proxyless clients. State of the world only (delta streams get the base resources).
    pub fn set_variant(&self, selector: VariantSelector) {
        self.shared.lock().selector = Hook(Some(selector));
    }

    /// Sets the resources of one type in a variant (replacing that type's set) and pushes
    /// the type; with `push: false` they go out with the type's next push (so that one
    /// change of both the base and a variant is one version).
    pub fn put_variant(
        &self,
        variant: &str,
        xds_type: XdsType,
        resources: Vec<(String, Any)>,
        push: bool,
    ) {
        let mut inner = self.shared.lock();
        inner
            .variants
            .entry(variant.to_owned())
            .or_default()
            .insert(xds_type, resources.into_iter().collect());
        if push {
            inner.push(xds_type);
        }
    }

    /// Sets (adds or replaces) one resource and pushes its type to subscribed streams.
    pub fn put(&self, xds_type: XdsType, name: &str, resource: Any) {
        let mut inner = self.shared.lock();
        inner
            .resources
            .entry(xds_type)
            .or_default()
            .insert(name.to_owned(), resource);
        inner.push(xds_type);
    }

    /// Sets several resources of one type at once, in one push.
    pub fn put_all(&self, xds_type: XdsType, resources: Vec<(String, Any)>) {
        let mut inner = self.shared.lock();
        inner
            .resources
            .entry(xds_type)
            .or_default()
            .extend(resources);
        inner.push(xds_type);
    }

    /// Removes one resource and pushes its type.
    pub fn remove(&self, xds_type: XdsType, name: &str) {
        let mut inner = self.shared.lock();
        if let Some(map) = inner.resources.get_mut(&xds_type) {
            map.remove(name);
        }
        inner.push(xds_type);
    }

    /// Ends every open stream with `UNAVAILABLE`.
    pub fn drop_streams(&self) {
        let (streams, delta_streams) = {
            let mut inner = self.shared.lock();
            let delta = std::mem::take(&mut inner.delta_streams);
            (std::mem::take(&mut inner.streams), delta)
        };
        for stream in delta_streams {
            stream.end(tonic::Status::unavailable("stream dropped by the server"));
        }
        for stream in streams {
            let _ = stream.tx.try_send(Err(tonic::Status::unavailable(
                "stream dropped by the server",
            )));
        }
    }

    /// The requests received so far (the latest 10,000), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// How many streams were opened.
    pub fn streams_opened(&self) -> u64 {
        self.shared.lock().next_stream
    }

    /// Waits until a recorded request satisfies `pred` and returns the first that does,
    /// or `None` after `within` (a deadline for a hung test, not a timing assertion). Only
    /// the latest 10,000 requests are kept to be searched.
    pub async fn wait_for_request(
        &self,
        within: Duration,
        mut pred: impl FnMut(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        let mut rx = self.shared.recorded.subscribe();
        let search = async {
            loop {
                if let Some(found) = self.requests().into_iter().find(|r| pred(r)) {
                    return Some(found);
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(within, search).await.ok().flatten()
    }

    /// Stops the server: open streams end with `UNAVAILABLE`, new ones are refused, and the
    /// listening socket closes.
    pub async fn shutdown(mut self) {
        self.shared.lock().closed = true;
        self.drop_streams();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for AdsServer {
    /// As [`AdsServer::shutdown`], without waiting: connections the server task
    /// spawned outlive it, so their streams are ended here too.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.drop_streams();
        self.task.abort();
    }
}
