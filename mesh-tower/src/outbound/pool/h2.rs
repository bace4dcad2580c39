//! One endpoint's HTTP/2 connection, shared by all its requests.
//!
//! The endpoint's state holds the pool, so a request takes the open connection under an
//! uncontended lock, with no pool key hashed or looked up. When none is open, the first
//! request that needs one starts a dial in its own task and later requests wait for the
//! same dial (one connection per endpoint, as Envoy and hyper-util keep for HTTP/2). A
//! connection that closes is replaced by the next request's dial. The connection goes
//! when the endpoint does, once its streams end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use http::{Request, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::TokioTimer;
use tokio::sync::{oneshot, watch};
use tower::Service;

use super::{Answered, PoolError, SendFuture};
use crate::exec::BoxingExecutor;
use crate::outbound::connect::{ConnectError, MeshConnector, MeshIo};
use crate::outbound::RequestBody;

type Sender = http2::SendRequest<RequestBody>;

type Handshake = Pin<
    Box<
        dyn Future<
                Output = hyper::Result<(
                    Sender,
                    http2::Connection<MeshIo, RequestBody, BoxingExecutor>,
                )>,
            > + Send,
    >,
>;

/// One endpoint's HTTP/2 connection.
pub(crate) struct H2Pool {
    authority: http::uri::Authority,
    /// `http://authority`, what the connector dials.
    uri: Uri,
    connector: MeshConnector,
    builder: http2::Builder<BoxingExecutor>,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// One past the id of the newest connection whose first request let the mesh's
    /// per-request header names into its HPACK table (see [`H2Pool::name_unique_headers`]).
    named: AtomicU64,
}

enum State {
    None,
    /// A dial in flight, and the requests waiting for it.
    Dialing(Vec<oneshot::Sender<Result<Open, DialError>>>),
    Open(Open),
}

/// An open connection, numbered so that a request can drop the one it found closed and
/// not a newer one.
#[derive(Clone)]
struct Open {
    tx: Sender,
    id: u64,
    /// What its requests share of it, in one `Arc` (one clone per request).
    conn: Arc<Conn>,
}

/// What a connection's requests share besides its sender.
struct Conn {
    /// Its end of the metadata exchange.
    end: Option<crate::metrics::ClientEnd>,
    /// Why its task ended: its error, once it failed (closed without a value when the
    /// connection ended cleanly).
    ///
    /// hyper fails the requests a dead connection had not taken yet as canceled
    /// ("connection closed", "connection was not ready") and leaves why it died to the
    /// connection's task; a request that failed so reports the task's error instead.
    ended: watch::Receiver<Option<Arc<hyper::Error>>>,
}

impl Conn {
    /// Why the connection died, when `error` says only that it went (canceled): its task's
    /// error, once the task has it.
    async fn reason(&self, error: &hyper::Error) -> Option<Arc<hyper::Error>> {
        if !error.is_canceled() {
            return None;
        }
        let mut ended = self.ended.clone();
        let why = tokio::time::timeout(REASON_WAIT, ended.wait_for(Option::is_some)).await;
        match why {
            Ok(Ok(why)) => (*why).clone(),
            _ => None,
        }
    }
}

/// How long a failed request waits for its connection's task to say why it ended. The
/// task ends as the request fails; this only bounds the wait.
const REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A failed dial, as every request that waited for it gets it.
#[derive(Clone)]
enum DialError {
    Connect(Arc<ConnectError>),
    Handshake(Arc<hyper::Error>),
}

impl From<DialError> for PoolError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Connect(e) => Self::Connect(e),
            DialError::Handshake(e) => Self::Handshake(e),
        }
    }
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            State::None => "none",
            State::Dialing(_) => "dialing",
            State::Open(_) => "open",
        };
        f.debug_struct("H2Pool")
            .field("uri", &self.uri)
            .field("state", &state)
            .finish()
    }
}

impl H2Pool {
    /// The pool of the endpoint at `authority`, dialed with `connector`.
    pub(crate) fn new(authority: &http::uri::Authority, connector: MeshConnector) -> Self {
        let uri = super::endpoint_uri(authority);
        let mut builder = http2::Builder::new(BoxingExecutor);
        builder.timer(TokioTimer::new());
        Self {
            authority: authority.clone(),
            uri,
            connector,
            builder,
            state: Mutex::new(State::None),
            next_id: AtomicU64::new(0),
            named: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` on the endpoint's connection, addressed to the endpoint.
    pub(crate) fn send(self: &Arc<Self>, req: Request<RequestBody>) -> SendFuture {
        Box::pin(Arc::clone(self).send_owned(req))
    }

    pub(crate) async fn send_owned(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<Answered, PoolError> {
        self.address(&mut req);
        let exchange = self.connector.exchange();
        loop {
            let (open, reused) = self.checkout().await?;
            let Open { mut tx, id, conn } = open;
            let end = conn.end.as_ref();
            self.name_unique_headers(id, &mut req);
            let said = match exchange {
                Some(metrics) => metrics.announce(end, req.headers_mut()),
                None => crate::metrics::Said::Nothing,
            };
            match tx.try_send_request(req).await {
                Ok(mut resp) => {
                    let peer = exchange.map(|m| m.take_server(end, resp.headers_mut(), said));
                    return Ok(Answered { resp, peer });
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the connection closed before it took the request. One
                    // found open goes again on a new connection (as hyper-util's pool
                    // resends); one that waited for a fresh dial fails.
                    Some(back) if reused => {
                        self.forget(id);
                        req = back;
                    }
                    _ => {
                        let error = e.into_error();
                        return Err(match conn.reason(&error).await {
                            Some(why) => PoolError::ConnectionFailed(why),
                            None => PoolError::Send(error),
                        });
                    }
                },
            }
        }
    }

    /// On a connection's first request, lets the values the mesh makes anew for each
    /// request (trace context, request id; sent never-indexed, see
    /// [`unique_value`](crate::trace::ids::unique_value)) be indexed, once: their names
    /// then stay in the connection's HPACK table on both ends, and every later value
    /// refers to its name by index instead of spelling it out, Huffman-coded by this end
    /// and decoded by the other on every request. (If the table ever evicts them, the
    /// names go out spelled again; nothing else changes.)
    fn name_unique_headers(&self, id: u64, req: &mut Request<RequestBody>) {
        let conn = id + 1;
        if self.named.load(Ordering::Relaxed) < conn
            && self.named.fetch_max(conn, Ordering::Relaxed) < conn
        {
            crate::trace::index_unique_names(req.headers_mut());
        }
    }

    /// The request as an HTTP/2 connection sends it: version HTTP/2, the endpoint's
    /// address as authority, the path kept (`/` when it has none).
    fn address(&self, req: &mut Request<RequestBody>) {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_2;
    }

    /// The open connection (`true`: it was open already), or a new one.
    async fn checkout(self: &Arc<Self>) -> Result<(Open, bool), PoolError> {
        let waiting = {
            let mut state = self.lock();
            match &mut *state {
                State::Open(open) if !open.tx.is_closed() => return Ok((open.clone(), true)),
                State::Dialing(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    rx
                }
                other => {
                    let (tx, rx) = oneshot::channel();
                    *other = State::Dialing(vec![tx]);
                    tokio::spawn(Arc::clone(self).dial());
                    rx
                }
            }
        };
        match waiting.await {
            Ok(Ok(open)) => Ok((open, false)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PoolError::DialDropped),
        }
    }

    /// Whether a connection is open and not seen closed.
    pub(crate) fn is_open(&self) -> bool {
        matches!(&*self.lock(), State::Open(open) if !open.tx.is_closed())
    }

    /// Drops connection `id` if it is still the open one.
    fn forget(&self, id: u64) {
        let mut state = self.lock();
        if matches!(&*state, State::Open(open) if open.id == id) {
            *state = State::None;
        }
    }

    /// Dials, and hands the outcome to every request waiting.
    async fn dial(self: Arc<Self>) {
        let result = self.open().await;
        let waiters = {
            let mut state = self.lock();
            match &mut *state {
                State::Dialing(waiters) => {
                    let waiters = std::mem::take(waiters);
                    *state = match &result {
                        Ok(open) => State::Open(open.clone()),
                        Err(_) => State::None,
                    };
                    waiters
                }
                // A connection adopted meanwhile took the waiters and stays.
                _ => Vec::new(),
            }
        };
        for waiter in waiters {
            // A request that went away meanwhile does not need it.
            let _ = waiter.send(result.clone());
        }
    }

    /// hyper's handshake, boxed in a plain function: an async block that holds it fails the
    /// `Send` check on the body's error conversion (a higher-ranked lifetime rustc cannot
    /// prove), and so would the dial's task.
    fn handshake(&self, io: MeshIo) -> Handshake {
        Box::pin(self.builder.handshake(io))
    }

    /// Takes `io`, a connection the endpoint's HTTP/1.1 pool dialed on which ALPN chose
    /// `h2`, as the open connection (unless one is open already).
    pub(crate) async fn adopt(&self, io: MeshIo) -> Result<(), PoolError> {
        let open = self.start(io).await.map_err(PoolError::from)?;
        let waiters = {
            let mut state = self.lock();
            match &mut *state {
                State::Open(current) if !current.tx.is_closed() => return Ok(()),
                State::Dialing(waiters) => {
                    let waiters = std::mem::take(waiters);
                    *state = State::Open(open.clone());
                    waiters
                }
                other => {
                    *other = State::Open(open.clone());
                    Vec::new()
                }
            }
        };
        for waiter in waiters {
            let _ = waiter.send(Ok(open.clone()));
        }
        Ok(())
    }

    async fn open(&self) -> Result<Open, DialError> {
        let io = self
            .connector
            .clone()
            .call(self.uri.clone())
            .await
            .map_err(|e| DialError::Connect(Arc::new(e)))?;
        self.start(io).await
    }

    /// The HTTP/2 handshake on a new connection, its task spawned.
    async fn start(&self, io: MeshIo) -> Result<Open, DialError> {
        let end = super::exchange_end(&self.connector, &io);
        let (mut tx, conn) = self
            .handshake(io)
            .await
            .map_err(|e| DialError::Handshake(Arc::new(e)))?;
        // A combinator, not an async block, for the same reason as `handshake`.
        let uri = self.uri.clone();
        let (why, ended) = watch::channel(None);
        tokio::spawn(conn.map(move |result| {
            if let Err(e) = result {
                tracing::debug!(endpoint = %uri, error = %e, "HTTP/2 connection ended");
                why.send_replace(Some(Arc::new(e)));
            }
        }));
        let conn = Arc::new(Conn { end, ended });
        if let Err(e) = tx.ready().await {
            let why = conn.reason(&e).await.unwrap_or_else(|| Arc::new(e));
            return Err(DialError::Handshake(why));
        }
        Ok(Open {
            tx,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            conn,
        })
    }
}
