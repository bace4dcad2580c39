//! Opening connections to endpoints: TCP with TCP_NODELAY, a connect timeout, the cluster's
//! `max_connections` limit, and TLS when the cluster asks for it, with at most
//! [`MAX_CONCURRENT_HANDSHAKES`] handshakes at once per cluster (a burst that needs many new
//! connections queues them instead of spending every core on handshakes at once; requests
//! meanwhile take connections that free up); a dial waiting for its handshake slot holds
//! no `max_connections` slot and no socket yet. At `max_connections` a dial waits for a
//! connection to close instead of failing its request, as Envoy keeps such a request
//! pending. One connect timeout covers the whole dial: the waits, the TCP connect and the
//! handshake. A TCP connect that takes longer than [`SLOW_TCP_CONNECT`] (an endpoint that
//! does not answer) gives its handshake slot back and queues again once connected, so an
//! unreachable endpoint holds up the other dials of its cluster for that long at most, not
//! for the connect timeout.
//! Sessions are resumed (TLS 1.3 tickets) from the cluster's client config, so most new
//! connections to a known endpoint skip the certificate exchange.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use mesh_core::breaker::{BreakerGuard, CircuitBreaker, Overflow};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::demand::{ClaimHandle, ConnectionClaim, DialDemands};
use crate::body::BoxError;
use crate::metrics::{Metrics, Reporter, SecurityPolicy};

/// A byte stream a TLS implementation hands back.
pub trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> IoStream for T {}

/// What the outbound client needs from TLS: wrap a fresh TCP connection.
pub trait UpstreamTlsConnect: Send + Sync + 'static {
    /// Runs the client handshake on `tcp`. `authority` is the endpoint dialed.
    fn connect(
        &self,
        tcp: TcpStream,
        authority: &str,
    ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>>;
}

/// A finished client handshake.
pub struct TlsConnected {
    /// The encrypted stream.
    pub stream: Box<dyn IoStream>,
    /// Whether ALPN chose h2.
    pub h2: bool,
}

impl std::fmt::Debug for TlsConnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnected")
            .field("h2", &self.h2)
            .finish()
    }
}

/// The most TLS client handshakes one cluster runs at once (by default).
pub const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// How long a dial keeps its handshake slot through the TCP connect: longer than a connect
/// takes within a region (and than most round trips between regions), far shorter than the
/// connect timeout (Istio's 10 s) that every other dial of the cluster would otherwise wait
/// out behind an endpoint that drops SYNs (a node gone without a reset).
pub const SLOW_TCP_CONNECT: Duration = Duration::from_millis(250);

/// Dials endpoints for one cluster.
#[derive(Clone)]
pub struct MeshConnector {
    connect_timeout: Duration,
    breaker: Arc<CircuitBreaker>,
    tls: Option<Arc<dyn UpstreamTlsConnect>>,
    metrics: Option<Metrics>,
    /// Its connections exchange Istio's peer metadata (in `metrics`).
    exchange: bool,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// For an HTTP/1.1 pool: the endpoints' demand, so a dial goes only while a request
    /// needs it.
    demand: Option<Arc<DialDemands>>,
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The cluster's `max_connections` is reached.
    #[error(transparent)]
    Overflow(#[from] Overflow),
    /// The URI has no host or port.
    #[error("endpoint URI {0} has no host and port")]
    BadUri(String),
    /// TCP connect failed.
    #[error("connect to {authority}: {source}")]
    Tcp {
        /// Where.
        authority: String,
        /// The OS error.
        source: io::Error,
    },
    /// The connect timeout passed.
    #[error("connect to {authority}: timed out after {timeout:?}")]
    Timeout {
        /// Where.
        authority: String,
        /// The timeout.
        timeout: Duration,
    },
    /// No request needed the connection within the connect timeout (a dial the pool
    /// started for a request that a connection coming free then served).
    #[error("connect to {authority}: no request needed a new connection within {timeout:?}")]
    NotNeeded {
        /// Where.
        authority: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {authority}: {source}")]
    Tls {
        /// Where.
        authority: String,
        /// Why.
        source: BoxError,
    },
}

impl MeshConnector {
    /// A connector with these settings.
    pub fn new(
        connect_timeout: Duration,
        breaker: Arc<CircuitBreaker>,
        tls: Option<Arc<dyn UpstreamTlsConnect>>,
    ) -> Self {
        Self {
            connect_timeout,
            breaker,
            tls,
            metrics: None,
            exchange: false,
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES)),
            demand: None,
        }
    }

    /// Dials for an HTTP/1.1 pool: a dial to an endpoint registered in `demand` goes ahead
    /// only while its requests in flight outnumber its connections (see
    /// [`demand`](super::demand)).
    pub(crate) fn with_demand(mut self, demand: Arc<DialDemands>) -> Self {
        self.demand = Some(demand);
        self
    }

    /// Runs at most `limit` TLS handshakes at once (at least one); the mesh uses
    /// [`MAX_CONCURRENT_HANDSHAKES`].
    #[cfg(test)]
    pub(crate) fn with_handshake_limit(mut self, limit: usize) -> Self {
        self.handshakes = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
        self
    }

    /// Counts the connections it opens in `metrics` (`istio_tcp_connections_opened_total`
    /// and `_closed_total`, `reporter="source"`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Its connections exchange Istio's peer metadata (the metrics of
    /// [`with_metrics`](Self::with_metrics) hold this workload's).
    pub(crate) fn with_exchange(mut self) -> Self {
        self.exchange = true;
        self
    }

    /// The metrics its connections exchange peer metadata with.
    pub(crate) fn exchange(&self) -> Option<&Metrics> {
        self.metrics.as_ref().filter(|_| self.exchange)
    }

    /// A `max_connections` slot: at the limit, waits until a connection closes (or the
    /// limits change) rather than failing, as Envoy keeps the request pending; the breaker's
    /// error when none frees up before `deadline`. Meanwhile the pool may hand the request
    /// a connection another request freed (the breaker layer bounds how many requests wait
    /// beyond the connections: `max_pending_requests`).
    async fn connection_slot(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<BreakerGuard, ConnectError> {
        loop {
            if let Ok(guard) = self.breaker.try_connection() {
                return Ok(guard);
            }
            // Listen, then try again: a slot given back in between is not missed.
            let released = self.breaker.connection_released();
            match self.breaker.try_connection() {
                Ok(guard) => return Ok(guard),
                Err(full) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return self.breaker.try_connection().map_err(|_| full.into());
                    }
                }
            }
        }
    }

    /// With TLS, one of the cluster's handshake slots (within `deadline`).
    async fn handshake_slot(
        &self,
        authority: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ConnectError> {
        if self.tls.is_none() {
            return Ok(None);
        }
        tokio::time::timeout_at(deadline, Arc::clone(&self.handshakes).acquire_owned())
            .await
            .map_err(|_| ConnectError::Tls {
                authority: authority.to_owned(),
                source: format!(
                    "no handshake slot within the connect timeout of {:?} (other handshakes \
                     of this cluster queued)",
                    self.connect_timeout
                )
                .into(),
            })
            // Never closed: `acquire_owned` only fails on a closed semaphore.
            .map(Result::ok)
    }

    async fn dial(self, uri: http::Uri) -> Result<MeshIo, ConnectError> {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let port = uri
            .port_u16()
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        // One budget for the whole dial: waiting for a connection slot, the TCP connect,
        // waiting for a handshake slot and the handshake.
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        // With TLS, the handshake slot comes before the connection slot: a dial queued
        // behind other handshakes holds no connection slot and no socket (the server counts
        // sockets against its per-peer limit), so a burst of queued dials cannot fill
        // either. The slot is kept through the TCP connect and the handshake, unless the
        // connect is slow (see below): such a dial queues again holding its socket.
        let (claim, handshake_slot, guard) = loop {
            // On an HTTP/1.1 pool, first a request that needs a new connection.
            let claim =
                match self.demand.as_ref().and_then(|d| d.find(&authority)) {
                    None => None,
                    Some(demand) => Some(demand.claim(deadline).await.ok_or_else(|| {
                        ConnectError::NotNeeded {
                            authority: authority.clone(),
                            timeout: self.connect_timeout,
                        }
                    })?),
                };
            let handshake_slot = self.handshake_slot(&authority, deadline).await?;
            // A connection that came free while this dial queued for its handshake served
            // the request: wait for another request instead of handshaking for none.
            if handshake_slot.is_some() && claim.as_ref().is_some_and(|c| c.is_surplus()) {
                continue;
            }
            let guard = self.connection_slot(deadline).await?;
            // The same after a wait at `max_connections`: the connection that closed to let
            // this dial through may have been idle, its request served by another.
            if claim.as_ref().is_some_and(|c| c.is_surplus()) {
                continue;
            }
            break (claim, handshake_slot, guard);
        };
        let connect = TcpStream::connect((host.as_str(), port));
        tokio::pin!(connect);
        let tcp_failed = |source| ConnectError::Tcp {
            authority: authority.clone(),
            source,
        };
        // The handshake slot is kept through a quick connect; a slow one gives it back
        // and queues again once connected.
        let quick = deadline.min(tokio::time::Instant::now() + SLOW_TCP_CONNECT);
        let (tcp, handshake_slot) = match tokio::time::timeout_at(quick, &mut connect).await {
            Ok(tcp) => (tcp.map_err(tcp_failed)?, handshake_slot),
            Err(_) => {
                let slow = handshake_slot.is_some();
                drop(handshake_slot);
                let tcp = tokio::time::timeout_at(deadline, &mut connect)
                    .await
                    .map_err(|_| ConnectError::Timeout {
                        authority: authority.clone(),
                        timeout: self.connect_timeout,
                    })?
                    .map_err(tcp_failed)?;
                let slot = if slow {
                    let slot = self.handshake_slot(&authority, deadline).await?;
                    // As above: the request may have been served while this dial queued.
                    if claim.as_ref().is_some_and(|c| c.is_surplus()) {
                        return Err(ConnectError::NotNeeded {
                            authority,
                            timeout: self.connect_timeout,
                        });
                    }
                    slot
                } else {
                    None
                };
                (tcp, slot)
            }
        };
        tcp.set_nodelay(true).map_err(|source| ConnectError::Tcp {
            authority: authority.clone(),
            source,
        })?;
        let addrs = tcp.local_addr().ok().zip(tcp.peer_addr().ok());
        let (stream, h2) = match &self.tls {
            None => (Stream::Plain(tcp), false),
            Some(tls) => {
                let done = tokio::time::timeout_at(deadline, tls.connect(tcp, &authority))
                    .await
                    .map_err(|_| ConnectError::Tls {
                        authority: authority.clone(),
                        source: format!(
                            "no handshake within the connect timeout of {:?}",
                            self.connect_timeout
                        )
                        .into(),
                    })?
                    .map_err(|source| ConnectError::Tls {
                        authority: authority.clone(),
                        source,
                    })?;
                drop(handshake_slot);
                (Stream::Tls(done.stream), done.h2)
            }
        };
        let counted = self.metrics.map(Counted::open);
        Ok(MeshIo {
            io: TokioIo::new(stream),
            h2,
            addrs,
            _guard: guard,
            _claim: claim,
            _counted: counted,
        })
    }
}

impl tower::Service<http::Uri> for MeshConnector {
    type Response = MeshIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial(uri))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<dyn IoStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An open connection to an endpoint; holds its `max_connections` slot until closed.
pub struct MeshIo {
    io: TokioIo<Stream>,
    h2: bool,
    /// The TCP connection's local and peer addresses.
    addrs: Option<(SocketAddr, SocketAddr)>,
    _guard: BreakerGuard,
    /// Its place in its endpoint's connections (HTTP/1.1 pools).
    _claim: Option<ConnectionClaim>,
    _counted: Option<Counted>,
}

impl MeshIo {
    /// Its place among its endpoint's connections (HTTP/1.1 pools), for the pool to give
    /// up if the connection is upgraded.
    pub(crate) fn claim_handle(&self) -> Option<ClaimHandle> {
        self._claim.as_ref().map(ConnectionClaim::handle)
    }
}

/// An open connection in the TCP metrics: counted open when made, closed when dropped.
struct Counted(Metrics);

impl Counted {
    fn open(metrics: Metrics) -> Self {
        // Istio's source reporter labels connections `unknown` for the security policy.
        metrics.tcp_opened(Reporter::Source, None, SecurityPolicy::Unknown);
        Self(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .tcp_closed(Reporter::Source, None, SecurityPolicy::Unknown);
    }
}

impl MeshIo {
    /// Whether the TLS handshake chose HTTP/2 by ALPN.
    pub(crate) fn negotiated_h2(&self) -> bool {
        self.h2
    }

    /// Its end of Istio's metadata exchange with `metrics`.
    pub(crate) fn exchange_end(&self, metrics: &Metrics) -> Option<crate::metrics::ClientEnd> {
        let (local, peer) = self.addrs?;
        crate::metrics::ClientEnd::new(local, peer, metrics)
    }
}

impl std::fmt::Debug for MeshIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIo").field("h2", &self.h2).finish()
    }
}

impl Read for MeshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for MeshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;

    /// A "handshake" that stays in flight for many scheduler rounds and records how many
    /// run at once.
    struct SlowHandshake {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl UpstreamTlsConnect for SlowHandshake {
        fn connect(
            &self,
            tcp: TcpStream,
            _authority: &str,
        ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let in_flight = Arc::clone(&self.in_flight);
            Box::pin(async move {
                for _ in 0..200 {
                    tokio::task::yield_now().await;
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(TlsConnected {
                    stream: Box::new(tcp),
                    h2: false,
                })
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_the_limit_of_handshakes_run_at_once() {
        let addr = sink().await;
        let most = Arc::new(AtomicUsize::new(0));
        let tls = Arc::new(SlowHandshake {
            in_flight: Arc::new(AtomicUsize::new(0)),
            most: Arc::clone(&most),
        });
        let dyn_tls: Arc<dyn UpstreamTlsConnect> = tls.clone();
        let connector = connector_with_default_limits(Duration::from_secs(30), Some(dyn_tls))
            .with_handshake_limit(2);
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
        let dials: Vec<_> = (0..6)
            .map(|_| tokio::spawn(connector.clone().oneshot(uri.clone())))
            .collect();
        for dial in dials {
            dial.await.expect("task").expect("connected");
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} handshakes ran at once");
    }

    /// A connector whose breaker has the default limits.
    fn connector_with_default_limits(
        connect_timeout: Duration,
        tls: Option<Arc<dyn UpstreamTlsConnect>>,
    ) -> MeshConnector {
        MeshConnector::new(
            connect_timeout,
            Arc::new(CircuitBreaker::new(
                mesh_core::breaker::Thresholds::default(),
            )),
            tls,
        )
    }

    /// An address on 127.0.0.1 whose connects hang, as to a host that drops SYNs: a
    /// listener with a backlog of one that never accepts, its queue filled. Kept open while
    /// the returned connection and listener live.
    async fn black_hole() -> (std::net::SocketAddr, tokio::net::TcpListener, TcpStream) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let queued = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("the first connect is queued at once")
            .expect("fills the queue");
        (addr, listener, queued)
    }

    /// A TLS "handshake" that completes at once.
    struct InstantHandshake;

    impl UpstreamTlsConnect for InstantHandshake {
        fn connect(
            &self,
            tcp: TcpStream,
            _authority: &str,
        ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>> {
            Box::pin(async move {
                Ok(TlsConnected {
                    stream: Box::new(tcp),
                    h2: false,
                })
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dial_to_an_endpoint_that_drops_syns_holds_up_no_other_dial() {
        let (hole, _listener, _queued) = black_hole().await;
        let healthy = sink().await;
        let tls: Arc<dyn UpstreamTlsConnect> = Arc::new(InstantHandshake);
        // One handshake at a time, and a connect timeout long past the test's own.
        let connector = connector_with_default_limits(Duration::from_secs(120), Some(tls))
            .with_handshake_limit(1);
        let stuck = tokio::spawn(
            connector
                .clone()
                .oneshot(format!("http://{hole}").parse().expect("uri")),
        );
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        // The dial to the healthy endpoint gets the one handshake slot once the stuck
        // dial's connect is slow (before, it waited the stuck dial's whole connect timeout).
        let uri: http::Uri = format!("http://{healthy}").parse().expect("uri");
        let dial = tokio::time::timeout(Duration::from_secs(60), connector.oneshot(uri));
        dial.await
            .expect("the healthy dial waited for the stuck one")
            .expect("connected");
        assert!(!stuck.is_finished(), "the stuck dial is still connecting");
        stuck.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dial_whose_request_went_while_it_waited_at_max_connections_opens_no_socket() {
        let (addr, accepted) = counting_sink().await;
        let demands = Arc::new(DialDemands::default());
        let demand = demands.register(&addr.to_string());
        let connector = MeshConnector::new(
            Duration::from_millis(300),
            Arc::new(CircuitBreaker::new(
                mesh_core::breaker::Thresholds::default().with_max_connections(1),
            )),
            None,
        )
        .with_demand(Arc::clone(&demands));
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
        let first_request = demand.request();
        let first = connector.clone().oneshot(uri.clone()).await.expect("first");
        // A second request needs a second connection: its dial waits at max_connections.
        let second_request = demand.request();
        let second = tokio::spawn(connector.clone().oneshot(uri.clone()));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished(), "the second dial waits for a slot");
        // Both requests end (the second given up by its caller), then the idle connection
        // closes: the slot comes free for a dial no request needs any more.
        drop((first_request, second_request));
        drop(first);
        let second = second.await.expect("task");
        assert!(
            matches!(second, Err(ConnectError::NotNeeded { .. })),
            "the dial went on with no request: {second:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(demand.counts(), (0, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_connect_whose_request_went_meanwhile_skips_its_handshake() {
        let (addr, listener, _queued) = black_hole().await;
        let demands = Arc::new(DialDemands::default());
        let demand = demands.register(&addr.to_string());
        let tls: Arc<dyn UpstreamTlsConnect> = Arc::new(InstantHandshake);
        let connector = connector_with_default_limits(Duration::from_secs(60), Some(tls))
            .with_demand(Arc::clone(&demands))
            .with_handshake_limit(1);
        let request = demand.request();
        let dial = tokio::spawn(
            connector
                .clone()
                .oneshot(format!("http://{addr}").parse().expect("uri")),
        );
        // The dial takes the handshake slot; its connect is slow, so it gives it back.
        let gave_back = async {
            while connector.handshakes.available_permits() == 1 {
                tokio::task::yield_now().await;
            }
            while connector.handshakes.available_permits() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), gave_back)
            .await
            .expect("the slow dial kept its handshake slot");
        // Its request goes; then the listener's queue makes room, and the dial's next SYN
        // connects. Queued again for the slot, it finds no request to handshake for.
        drop(request);
        let (_accepted, _) = listener.accept().await.expect("accept");
        let result = tokio::time::timeout(Duration::from_secs(30), dial)
            .await
            .expect("the dial connected after a SYN retry")
            .expect("task");
        assert!(
            matches!(result, Err(ConnectError::NotNeeded { .. })),
            "the dial handshook for no request: {result:?}"
        );
    }

    /// Records how many connection slots are taken whenever a handshake starts.
    struct CountingHandshake {
        breaker: Arc<CircuitBreaker>,
        most: Arc<AtomicUsize>,
    }

    impl UpstreamTlsConnect for CountingHandshake {
        fn connect(
            &self,
            tcp: TcpStream,
            _authority: &str,
        ) -> Pin<Box<dyn Future<Output = Result<TlsConnected, BoxError>> + Send>> {
            let taken = self
                .breaker
                .in_flight(mesh_core::breaker::BreakerLimit::MaxConnections);
            self.most.fetch_max(taken as usize, Ordering::SeqCst);
            Box::pin(async move {
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                Ok(TlsConnected {
                    stream: Box::new(tcp),
                    h2: false,
                })
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dials_queued_for_a_handshake_hold_no_connection_slot() {
        let addr = sink().await;
        let breaker = Arc::new(CircuitBreaker::new(
            mesh_core::breaker::Thresholds::default(),
        ));
        let most = Arc::new(AtomicUsize::new(0));
        let tls: Arc<dyn UpstreamTlsConnect> = Arc::new(CountingHandshake {
            breaker: Arc::clone(&breaker),
            most: Arc::clone(&most),
        });
        // One handshake at a time, five dials at once, each connection closed as soon as
        // it is made: while four dials wait for the handshake slot, the one handshaking
        // holds the only connection slot taken (and the only socket).
        five_dials_one_handshake_at_a_time(addr, &breaker, tls).await;
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    /// Five dials at once to `addr`, one handshake at a time, each connection closed as
    /// soon as it is made; every dial must connect.
    async fn five_dials_one_handshake_at_a_time(
        addr: std::net::SocketAddr,
        breaker: &Arc<CircuitBreaker>,
        tls: Arc<dyn UpstreamTlsConnect>,
    ) {
        let connector = MeshConnector::new(Duration::from_secs(30), Arc::clone(breaker), Some(tls))
            .with_handshake_limit(1);
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
        let dials: Vec<_> = (0..5)
            .map(|_| {
                let dial = connector.clone().oneshot(uri.clone());
                tokio::spawn(async move { dial.await.map(drop) })
            })
            .collect();
        for dial in dials {
            dial.await.expect("task").expect("connected");
        }
    }

    /// A plaintext connector allowing `max_connections`, with a 30 s connect timeout, its
    /// breaker, and the URI of a listener that keeps what it accepts.
    async fn plain_connector(
        max_connections: u32,
    ) -> (Arc<CircuitBreaker>, MeshConnector, http::Uri) {
        let addr = sink().await;
        let breaker = Arc::new(CircuitBreaker::new(
            mesh_core::breaker::Thresholds::default().with_max_connections(max_connections),
        ));
        let connector = MeshConnector::new(Duration::from_secs(30), Arc::clone(&breaker), None);
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
        (breaker, connector, uri)
    }

    async fn sink() -> std::net::SocketAddr {
        counting_sink().await.0
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_dials_beyond_max_connections_waits_instead_of_failing() {
        let addr = sink().await;
        let breaker = Arc::new(CircuitBreaker::new(
            mesh_core::breaker::Thresholds::default().with_max_connections(2),
        ));
        let tls: Arc<dyn UpstreamTlsConnect> = Arc::new(SlowHandshake {
            in_flight: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
        });
        // Two connections allowed, one handshake at a time, five dials at once, each
        // connection closed as soon as it is made: the dials over the limit wait for a
        // slot (they failed with the breaker's error before).
        five_dials_one_handshake_at_a_time(addr, &breaker, tls).await;
        assert_eq!(
            breaker.in_flight(mesh_core::breaker::BreakerLimit::MaxConnections),
            0
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn two_connections_closing_together_let_two_waiting_dials_through() {
        let (_breaker, connector, uri) = plain_connector(2).await;
        let first = connector.clone().oneshot(uri.clone()).await.expect("first");
        let second = connector
            .clone()
            .oneshot(uri.clone())
            .await
            .expect("second");
        let waiting: Vec<_> = (0..2)
            .map(|_| tokio::spawn(connector.clone().oneshot(uri.clone())))
            .collect();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(waiting.iter().all(|w| !w.is_finished()), "both dials wait");
        // Both slots come back before either waiting dial runs again.
        drop((first, second));
        // Each kept open, so that no later close wakes the other: without a wake-up per
        // slot given back, the second would fail after the connect timeout.
        let mut connected = Vec::new();
        for w in waiting {
            connected.push(w.await.expect("task").expect("connected"));
        }
        assert_eq!(connected.len(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_max_connections_a_dial_waits_for_a_connection_to_close() {
        let (breaker, connector, uri) = plain_connector(1).await;
        let first = connector.clone().oneshot(uri.clone()).await.expect("first");
        let second = tokio::spawn(connector.clone().oneshot(uri.clone()));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !second.is_finished(),
            "the second dial waits, it does not fail"
        );
        drop(first);
        let second = second
            .await
            .expect("task")
            .expect("connected once the first closed");
        drop(second);

        // Nothing closes within the connect timeout: the breaker's error, as before.
        let short = MeshConnector::new(Duration::from_millis(50), Arc::clone(&breaker), None);
        let _held = short.clone().oneshot(uri.clone()).await.expect("held");
        let refused = short.oneshot(uri).await.expect_err("no slot");
        assert!(matches!(refused, ConnectError::Overflow(_)), "{refused}");
    }

    /// A listener that counts the connections it accepts (and keeps them).
    async fn counting_sink() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        (addr, accepted)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_http1_dial_no_request_needs_opens_no_socket_and_gives_up_at_the_timeout() {
        let (addr, accepted) = counting_sink().await;
        let demands = Arc::new(DialDemands::default());
        let authority = addr.to_string();
        let demand = demands.register(&authority);
        let connector = connector_with_default_limits(Duration::from_millis(300), None)
            .with_demand(Arc::clone(&demands));
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");

        // No request in flight: the dial waits, then fails without touching the network.
        let err = connector
            .clone()
            .oneshot(uri.clone())
            .await
            .expect_err("not needed");
        assert!(matches!(err, ConnectError::NotNeeded { .. }), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);

        // One request: one connection, counted until it closes.
        let request = demand.request();
        let conn = connector
            .clone()
            .oneshot(uri.clone())
            .await
            .expect("needed");
        assert_eq!(demand.counts(), (1, 1));
        // A second dial for the same single request is not needed.
        let second = connector.clone().oneshot(uri.clone()).await;
        assert!(matches!(second, Err(ConnectError::NotNeeded { .. })));
        // The request waits on; its connection closes: a new dial replaces it.
        drop(conn);
        assert_eq!(demand.counts(), (1, 0));
        let again = connector
            .clone()
            .oneshot(uri.clone())
            .await
            .expect("replaced");
        drop(request);
        drop(again);
        assert_eq!(demand.counts(), (0, 0));
        // Let the listener task take what is queued, then count.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // An authority nobody registered is dialed at once.
        let (other, other_accepted) = counting_sink().await;
        let uri: http::Uri = format!("http://{other}").parse().expect("uri");
        connector
            .oneshot(uri)
            .await
            .expect("unregistered: no waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(other_accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tls_dial_whose_request_was_served_meanwhile_skips_its_handshake() {
        let (addr, accepted) = counting_sink().await;
        let demands = Arc::new(DialDemands::default());
        let demand = demands.register(&addr.to_string());
        let tls: Arc<dyn UpstreamTlsConnect> = Arc::new(SlowHandshake {
            in_flight: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
        });
        let connector = connector_with_default_limits(Duration::from_millis(500), Some(tls))
            .with_demand(Arc::clone(&demands))
            .with_handshake_limit(1);
        let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
        // Two requests, two dials; the second queues behind the first's handshake.
        let first_request = demand.request();
        let second_request = demand.request();
        let first = tokio::spawn(connector.clone().oneshot(uri.clone()));
        let second = tokio::spawn(connector.clone().oneshot(uri.clone()));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // While the first dial handshakes, one request ends (a connection came free for
        // the other), so when the second dial gets the handshake slot it is not needed.
        drop(first_request);
        let first = first.await.expect("task").expect("first connected");
        let second = second.await.expect("task");
        assert!(
            matches!(second, Err(ConnectError::NotNeeded { .. })),
            "the surplus dial handshook: {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        drop((first, second_request));
        assert_eq!(demand.counts(), (0, 0));
    }
}
