//! One endpoint's HTTP/1.1 connections: one request at a time each, kept warm between
//! requests.
//!
//! The endpoint's state holds the pool, so a request takes an idle connection (the most
//! recently used) under an uncontended lock, with no pool key hashed or looked up. A request
//! that finds none waits in line and starts a dial in its own task; the connector lets the
//! dial go ahead only while the endpoint's requests outnumber its connections
//! ([`demand`](crate::outbound::demand)), so a dial whose request was served by a connection
//! coming free opens nothing. A connection that comes free, or a new one, goes to the first
//! request in line, else back to the idle list. Idle connections are closed after
//! [`IDLE_TIMEOUT`]. A connection whose TLS handshake chose `h2` (a cluster that offers
//! both) is handed to the endpoint's HTTP/2 pool, and the endpoint's requests go there from
//! then on.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::Service;

use super::{Answered, H2Pool, PoolError, SendFuture};
use crate::outbound::connect::{MeshConnector, MeshIo};
use crate::outbound::demand::ClaimHandle;
use crate::outbound::RequestBody;

/// How long a connection stays idle before it is closed (hyper-util's pool default, which
/// the mesh used before).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Handshake = Pin<
    Box<
        dyn Future<
                Output = hyper::Result<(
                    http1::SendRequest<RequestBody>,
                    http1::Connection<MeshIo, RequestBody>,
                )>,
            > + Send,
    >,
>;

/// A connection's sending half, with its place among the endpoint's connections (dial
/// demand), which it gives up when upgraded.
struct Sender {
    tx: http1::SendRequest<RequestBody>,
    claim: Option<ClaimHandle>,
    /// Its end of the metadata exchange (boxed: the sending future holds a `Sender`).
    end: Option<Box<crate::metrics::ClientEnd>>,
}

impl Sender {
    fn is_ready(&self) -> bool {
        self.tx.is_ready()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.tx.poll_ready(cx)
    }

    /// After `resp`'s head: an upgraded connection (a 101, or a CONNECT's 2xx: hyper then
    /// hands the response its `OnUpgrade`) leaves the endpoint's connections in the dial
    /// demand.
    fn note_upgrade(&self, resp: &Response<Incoming>) {
        if let Some(claim) = &self.claim {
            if resp
                .extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_some()
            {
                claim.release();
            }
        }
    }
}

/// One endpoint's HTTP/1.1 connections.
pub(crate) struct H1Pool {
    authority: Authority,
    /// `http://authority/`, what the connector dials.
    uri: Uri,
    /// The Host header a request without one gets: the endpoint's address.
    host: HeaderValue,
    connector: MeshConnector,
    builder: http1::Builder,
    /// Where the endpoint's requests go once it answered ALPN with `h2`.
    http2: Arc<H2Pool>,
    idle_timeout: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Most recently used last.
    idle: Vec<Idle>,
    /// Requests waiting for a connection, first come first served.
    waiting: VecDeque<Waiter>,
    next_waiter: u64,
    /// The endpoint chose `h2` by ALPN: its requests go to its HTTP/2 pool.
    speaks_h2: bool,
    /// A task closes idle connections as they expire.
    sweeping: bool,
}

struct Idle {
    tx: Sender,
    since: Instant,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Got, PoolError>>,
}

/// What a request gets from the pool.
enum Got {
    /// A connection; `reused`: it served a request before.
    Http1 { tx: Sender, reused: bool },
    /// The endpoint speaks HTTP/2 (ALPN): send on its HTTP/2 pool.
    Http2,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("H1Pool")
            .field("authority", &self.authority)
            .field("idle", &inner.idle.len())
            .field("waiting", &inner.waiting.len())
            .field("speaks_h2", &inner.speaks_h2)
            .finish()
    }
}

impl H1Pool {
    /// The pool of the endpoint at `authority`, dialed with `connector` (which gates the
    /// dials on the endpoint's demand); `http2` is the endpoint's HTTP/2 pool.
    pub(crate) fn new(
        authority: &Authority,
        connector: MeshConnector,
        http2: Arc<H2Pool>,
        idle_timeout: Duration,
    ) -> Self {
        let uri = super::endpoint_uri(authority);
        // As hyper-util wrote it: the port is left out when it is HTTP's default.
        let host = match authority.port_u16() {
            Some(80) => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self {
            authority: authority.clone(),
            uri,
            host,
            connector,
            builder: http1::Builder::new(),
            http2,
            idle_timeout,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` on one of the endpoint's connections. Its URI's path is kept; the pool
    /// writes the origin form (the authority form for CONNECT) and, when the request has
    /// none, the endpoint's address as its Host.
    pub(crate) fn send(self: &Arc<Self>, req: Request<RequestBody>) -> SendFuture {
        Box::pin(Arc::clone(self).send_owned(req))
    }

    async fn send_owned(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<Answered, PoolError> {
        // What hyper's HTTP/1 encoder cannot write is refused here, as hyper-util did.
        let version = req.version();
        if !(version == http::Version::HTTP_11
            || (version == http::Version::HTTP_10 && req.method() != Method::CONNECT))
        {
            return Err(PoolError::Unsupported(version));
        }
        let exchange = self.connector.exchange();
        loop {
            let (mut tx, reused) = match self.checkout().await? {
                Got::Http1 { tx, reused } => (tx, reused),
                // Boxed (`send`): inline, the HTTP/2 pool's future (888 bytes) made this
                // one 1,520, past glibc's per-thread cache of small blocks (1,032), so
                // every HTTP/1.1 call paid malloc's slow path for its box; 952 now.
                Got::Http2 => return self.http2.send(req).await,
            };
            self.shape(&mut req);
            let said = match exchange {
                Some(metrics) => metrics.announce(tx.end.as_deref(), req.headers_mut()),
                None => crate::metrics::Said::Nothing,
            };
            match tx.tx.try_send_request(req).await {
                Ok(mut resp) => {
                    let peer = exchange
                        .map(|m| m.take_server(tx.end.as_deref(), resp.headers_mut(), said));
                    tx.note_upgrade(&resp);
                    self.release(tx);
                    return Ok(Answered { resp, peer });
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the connection closed before it took the request. One
                    // that served before goes again on another connection (as hyper-util's
                    // pool resends); one new for it fails.
                    Some(back) if reused => req = back,
                    _ => return Err(PoolError::Send(e.into_error())),
                },
            }
        }
    }

    /// The request as an HTTP/1.1 connection sends it.
    fn shape(&self, req: &mut Request<RequestBody>) {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, self.host.clone());
        }
        let form = if req.method() == Method::CONNECT {
            Uri::from_parts({
                let mut parts = http::uri::Parts::default();
                parts.authority = Some(self.authority.clone());
                parts
            })
        } else {
            match req.uri().path_and_query() {
                Some(path) if path.as_str() != "/" => Uri::from_parts({
                    let mut parts = http::uri::Parts::default();
                    parts.path_and_query = Some(path.clone());
                    parts
                }),
                _ => Ok(Uri::default()),
            }
        };
        if let Ok(uri) = form {
            *req.uri_mut() = uri;
        }
    }

    /// An idle connection, or the next one that comes free or is dialed.
    async fn checkout(self: &Arc<Self>) -> Result<Got, PoolError> {
        let (id, rx) = {
            let mut inner = self.lock();
            if inner.speaks_h2 {
                if self.http2.is_open() {
                    return Ok(Got::Http2);
                }
                // Its connection closed: dial again and let ALPN choose again (a server
                // may now answer `http/1.1`).
                inner.speaks_h2 = false;
            }
            let now = Instant::now();
            while let Some(idle) = inner.idle.pop() {
                // One that closed or expired is dropped (closing it).
                if idle.tx.is_ready() && now.duration_since(idle.since) < self.idle_timeout {
                    return Ok(Got::Http1 {
                        tx: idle.tx,
                        reused: true,
                    });
                }
            }
            let id = inner.next_waiter;
            inner.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            inner.waiting.push_back(Waiter { id, tx });
            (id, rx)
        };
        tokio::spawn(Arc::clone(self).dial(id));
        InLine {
            pool: Arc::clone(self),
            id,
            rx: Some(rx),
        }
        .await
    }

    /// Dials for the request waiting as `waiter`: the connection goes to `waiter` if it
    /// still waits, else to the first request in line (or idle); a failure goes to `waiter`
    /// if it still waits; a connection ALPN made `h2` sends every waiting request to the
    /// HTTP/2 pool.
    async fn dial(self: Arc<Self>, waiter: u64) {
        match self.open().await {
            Ok(Some(tx)) => self.put(tx, false, Some(waiter)),
            Ok(None) => {
                let waiting = {
                    let mut inner = self.lock();
                    inner.speaks_h2 = true;
                    std::mem::take(&mut inner.waiting)
                };
                for w in waiting {
                    let _ = w.tx.send(Ok(Got::Http2));
                }
            }
            Err(e) => {
                let mut inner = self.lock();
                if let Some(at) = inner.waiting.iter().position(|w| w.id == waiter) {
                    if let Some(w) = inner.waiting.remove(at) {
                        let _ = w.tx.send(Err(e));
                    }
                }
            }
        }
    }

    /// A new HTTP/1.1 connection, or `None` when ALPN chose `h2` (the connection then went
    /// to the endpoint's HTTP/2 pool).
    async fn open(&self) -> Result<Option<Sender>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.uri.clone())
            .await
            .map_err(|e| PoolError::Connect(Arc::new(e)))?;
        if io.negotiated_h2() {
            self.http2.adopt(io).await?;
            return Ok(None);
        }
        let claim = io.claim_handle();
        let end = super::exchange_end(&self.connector, &io).map(Box::new);
        let (tx, conn) = self
            .handshake(io)
            .await
            .map_err(|e| PoolError::Handshake(Arc::new(e)))?;
        let mut tx = Sender { tx, claim, end };
        let authority = self.authority.clone();
        // A combinator, not an async block, for the reason given at `handshake`.
        tokio::spawn(conn.with_upgrades().map(move |ended| {
            if let Err(e) = ended {
                tracing::debug!(endpoint = %authority, error = %e, "HTTP/1.1 connection ended");
            }
        }));
        tx.tx.ready().await.map_err(PoolError::Send)?;
        Ok(Some(tx))
    }

    /// hyper's handshake, boxed in a plain function: an async block that holds it fails the
    /// `Send` check on the body's error conversion (a higher-ranked lifetime rustc cannot
    /// prove), and so would the dial's task.
    fn handshake(&self, io: MeshIo) -> Handshake {
        Box::pin(self.builder.handshake(io))
    }

    /// After a response head: the connection comes back once it can take the next request
    /// (its response body read), unless it closed or was upgraded.
    fn release(self: &Arc<Self>, tx: Sender) {
        if tx.is_ready() {
            self.put(tx, true, None);
        } else if !tx.is_closed() {
            tokio::spawn(ReadyThenPut {
                pool: Arc::clone(self),
                tx: Some(tx),
            });
        }
    }

    /// Gives a connection to a waiting request, or keeps it idle. A new one goes first to
    /// the request its dial was for (`dialed_for`), if that one still waits: each waiting
    /// request then gets its own dial's outcome unless a connection reached it first, so a
    /// failed dial can never leave another request waiting with no dial of its own. A
    /// connection that came free goes to the first request in line.
    fn put(self: &Arc<Self>, mut tx: Sender, reused: bool, dialed_for: Option<u64>) {
        let mut inner = self.lock();
        let own = dialed_for
            .and_then(|id| inner.waiting.iter().position(|w| w.id == id))
            .and_then(|at| inner.waiting.remove(at));
        let mut next = own.or_else(|| inner.waiting.pop_front());
        while let Some(w) = next {
            match w.tx.send(Ok(Got::Http1 { tx, reused })) {
                Ok(()) => return,
                // That request went away: the next one.
                Err(Ok(Got::Http1 { tx: back, .. })) => tx = back,
                // Not reached: what comes back is what was sent.
                Err(_) => return,
            }
            next = inner.waiting.pop_front();
        }
        let since = Instant::now();
        inner.idle.push(Idle { tx, since });
        if !inner.sweeping {
            // One sweep task while any connection is idle: it first wakes when this one
            // would expire (not at once, which under steady traffic would find the idle list
            // empty, end, and be spawned again by the next request).
            inner.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self), since + self.idle_timeout));
        }
    }

    /// Drops the idle connections that expired or closed; the next expiry, if any is left.
    fn sweep_once(&self) -> Option<Instant> {
        let mut inner = self.lock();
        let now = Instant::now();
        let timeout = self.idle_timeout;
        inner
            .idle
            .retain(|i| !i.tx.is_closed() && now.duration_since(i.since) < timeout);
        let next = inner.idle.iter().map(|i| i.since + timeout).min();
        if next.is_none() {
            inner.sweeping = false;
        }
        next
    }

    /// Requests waiting for a connection, for tests.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Idle connections, for tests.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// Whether every idle connection can take a request, for tests.
    #[cfg(test)]
    pub(crate) fn idle_ready(&self) -> bool {
        self.lock().idle.iter().all(|i| i.tx.is_ready())
    }
}

/// A request's place in line. A request that goes away (cancelled, timed out) gives its
/// place up, and a connection already sent to it goes back to the pool, where it serves
/// the next request in line or waits idle: under timeouts, a warm connection (under mTLS,
/// a handshake) is not lost with each request that gave up.
struct InLine {
    pool: Arc<H1Pool>,
    id: u64,
    /// Until the answer is taken.
    rx: Option<oneshot::Receiver<Result<Got, PoolError>>>,
}

impl Future for InLine {
    type Output = Result<Got, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(Err(PoolError::DialDropped));
        };
        let got = ready!(rx.poll_unpin(cx)).unwrap_or(Err(PoolError::DialDropped));
        this.rx = None;
        Poll::Ready(got)
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Nothing is sent after `close`; what was sent before is still there to take.
        rx.close();
        match rx.try_recv() {
            // Back to the pool, which may start its idle sweep: only within a runtime (a
            // future dropped on another thread drops the connection instead).
            Ok(Ok(Got::Http1 { tx, reused })) => {
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.pool.put(tx, reused, None);
                }
            }
            Ok(_) => {}
            Err(_) => {
                let id = self.id;
                self.pool.lock().waiting.retain(|w| w.id != id);
            }
        }
    }
}

/// Waits until a connection can take a request (its response body read), then gives it
/// back to its pool; drops it if it closed or was upgraded. A future of its own, not an
/// async block, for the reason given at `H1Pool::handshake`.
struct ReadyThenPut {
    pool: Arc<H1Pool>,
    tx: Option<Sender>,
}

impl Future for ReadyThenPut {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(tx) = this.tx.as_mut() else {
            return Poll::Ready(());
        };
        let ready = ready!(tx.poll_ready(cx));
        if let (Ok(()), Some(tx)) = (ready, this.tx.take()) {
            this.pool.put(tx, true, None);
        }
        Poll::Ready(())
    }
}

/// Closes `pool`'s idle connections as they expire, from `at` on, while it has any.
async fn sweep(pool: Weak<H1Pool>, mut at: Instant) {
    loop {
        tokio::time::sleep_until(at).await;
        let next = match pool.upgrade() {
            Some(pool) => pool.sweep_once(),
            None => return,
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
}
