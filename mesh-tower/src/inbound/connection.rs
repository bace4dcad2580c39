//! One inbound connection: TLS mode, handshake, then HTTP/1.1 or HTTP/2 with the service.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_core::inbound::TlsMode;
use mesh_core::live::LivePolicy;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use super::config::InboundConfig;
use super::preface::Sniffed;
use super::table::{Activity, InFlight, Registered};
use super::until::{Ended, Until};
use super::{effective_mode, set_nodelay, PeerIdentity};
use crate::body::BoxError;
use crate::exec::BoxingExecutor;
use crate::identity::{server_config, CertificateSource, ClientAuth};
use crate::metrics::{Metrics, Reporter, SecurityPolicy};
use crate::outbound::IoStream;

/// The services [`MeshListener`](super::MeshListener) can serve: any cloneable tower
/// service from `http::Request<hyper::body::Incoming>` to `http::Response<B>` (axum's
/// `Router` and tonic's `Routes` are).
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The response bodies it can send.
pub trait ResponseBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

/// The two server configs: STRICT demands a client certificate, PERMISSIVE asks for one.
pub(super) struct Acceptors {
    strict: TlsAcceptor,
    permissive: TlsAcceptor,
}

impl Acceptors {
    pub(super) fn new(source: &CertificateSource) -> io::Result<Self> {
        let build = |auth| {
            server_config(source, auth)
                .map(TlsAcceptor::from)
                .map_err(io::Error::other)
        };
        Ok(Self {
            strict: build(ClientAuth::Required)?,
            permissive: build(ClientAuth::Optional)?,
        })
    }
}

/// What every connection task shares.
pub(super) struct Context {
    pub(super) policy: LivePolicy,
    pub(super) acceptors: Option<Arc<Acceptors>>,
    pub(super) config: InboundConfig,
    pub(super) closing: watch::Receiver<bool>,
    pub(super) metrics: Option<Metrics>,
    /// The HTTP server settings, built once.
    pub(super) http: AutoBuilder,
}

type AutoBuilder = hyper_util::server::conn::auto::Builder<BoxingExecutor>;

/// The HTTP/1.1 and HTTP/2 server with the config's HTTP/2 keepalive and stream limit.
/// HTTP/1.1 gets no timer and no header-read timeout of hyper's (its default would be
/// inert without a timer): the header-read timeout is the connection's own idle check
/// (`serve_http`), which costs nothing per request; hyper's makes and drops a timer for
/// every request head.
pub(super) fn http_builder(config: &InboundConfig) -> AutoBuilder {
    let mut builder = AutoBuilder::new(BoxingExecutor);
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keep_alive_interval)
        .keep_alive_timeout(config.http2_keep_alive_timeout)
        .max_concurrent_streams(config.http2_max_concurrent_streams);
    builder
}

/// Why a connection was closed before HTTP.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{mode:?} port but this listener has no certificates")]
    NoCertificates { mode: TlsMode },
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("reading the first byte: {0}")]
    Peek(io::Error),
    #[error("closed before sending anything")]
    Empty,
    #[error("TLS mode {0:?} is not supported")]
    UnknownMode(TlsMode),
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("no first byte within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("closed to make room for another connection")]
    Evicted,
}

pub(super) async fn handle<S, B>(
    ctx: Arc<Context>,
    stream: TcpStream,
    remote: SocketAddr,
    service: S,
    registered: Registered,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    set_nodelay(&stream);
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::debug!(%error, %remote, "connection gone before it was handled");
            return;
        }
    };
    let mode = effective_mode(&ctx.policy, local, ctx.acceptors.is_some());
    let mut closing = ctx.closing.clone();
    let activity = Arc::clone(registered.activity());
    // A connection still in its handshake (or, on a PERMISSIVE port, that has not sent its
    // first byte) holds no request: on shutdown, or to make room, it is dropped rather
    // than waited for.
    let established = tokio::select! {
        result = establish(&ctx, stream, mode, remote, local) => result,
        () = activity.evicted() => Err(Refused::Evicted),
        _ = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
            tracing::debug!(%remote, %local, "shutting down: handshake abandoned");
            return;
        }
    };
    let (io, peer) = match established {
        Ok(established) => established,
        Err(error) => {
            tracing::debug!(%error, %remote, %local, ?mode, "inbound connection refused");
            return;
        }
    };
    // The header-read timeout runs from here (as hyper's ran from its first read), not
    // from the accept: the handshake had its own limit.
    activity.touch();
    let counted = ctx.metrics.as_ref().map(|metrics| {
        let principal = peer.spiffe_id.as_ref().map(ToString::to_string);
        let security = if peer.spiffe_id.is_some() {
            SecurityPolicy::MutualTls
        } else {
            SecurityPolicy::None
        };
        metrics.tcp_opened(Reporter::Destination, principal.as_deref(), security);
        (metrics, principal, security)
    });
    serve_http(&ctx, io, peer, service, activity).await;
    if let Some((metrics, principal, security)) = counted {
        metrics.tcp_closed(Reporter::Destination, principal.as_deref(), security);
    }
    drop(registered);
}

async fn establish(
    ctx: &Context,
    stream: TcpStream,
    mode: TlsMode,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<(Box<dyn IoStream>, PeerIdentity), Refused> {
    let plain = PeerIdentity {
        remembered: crate::exchange::SharedMemory::new(local),
        ..PeerIdentity::plaintext(remote, local)
    };
    let acceptor = match mode {
        TlsMode::Disable => return Ok((Box::new(stream), plain)),
        TlsMode::Strict => match &ctx.acceptors {
            Some(a) => &a.strict,
            None => return Err(Refused::NoCertificates { mode }),
        },
        TlsMode::Permissive => {
            let mut first = [0u8; 1];
            let limit = ctx.config.first_byte_timeout;
            match within(limit, stream.peek(&mut first)).await {
                None => return Err(Refused::FirstByteTimeout(limit)),
                Some(Ok(0)) => return Err(Refused::Empty),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Refused::Peek(e)),
            }
            // 0x16 is a TLS handshake record: a ClientHello. Anything else is plaintext.
            if first[0] != 0x16 {
                return Ok((Box::new(stream), plain));
            }
            match &ctx.acceptors {
                Some(a) => &a.permissive,
                None => return Err(Refused::NoCertificates { mode }),
            }
        }
        other => return Err(Refused::UnknownMode(other)),
    };
    let limit = ctx.config.handshake_timeout;
    let tls = within(limit, acceptor.accept(stream))
        .await
        .ok_or(Refused::Timeout(limit))?
        .map_err(Refused::Handshake)?;
    let conn = tls.get_ref().1;
    let spiffe_id = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::identity::peer_spiffe_id(leaf));
    let peer = PeerIdentity {
        sni: conn.server_name().map(Arc::from),
        ..plain.with_spiffe_id(spiffe_id)
    };
    Ok((Box::new(tls), peer))
}

/// Puts the connection's [`PeerIdentity`] on each request, then calls the service; counts
/// the request in flight until its response body has been sent.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerIdentity,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Tracked<tower::util::Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        let http1 = req.version() <= Version::HTTP_11;
        Tracked {
            inner: self.inner.clone().oneshot(req),
            in_flight: Some(self.activity.start()),
            http1,
        }
    }
}

pin_project! {
    /// A request's response future, holding its place in flight.
    struct Tracked<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        // Whether the response goes out on an HTTP/1.x connection.
        http1: bool,
    }
}

/// Headers an HTTP/1.x response's map has room for when it is sent.
///
/// hyper keeps a sent response's header map and parses the connection's next request into
/// it, reserving only as many entries as that request has. The server span's `x-request-id`
/// (and any header a layer adds) then grew the map on every request: a rehash, an allocation
/// and a free. A map with room for six is allocated once per response instead: the map
/// hyper itself makes for a request of up to six headers (eight slots, a 672-byte block that
/// glibc serves from its per-thread cache), so a request of up to five gains the id without
/// growing, and a mesh caller's (six headers, the id among them) fits as it did. Room for a
/// dozen took a 1,344-byte block, malloc's slow path, on every response (about 300
/// instructions on a server whose callers send the id and need no room). Every HTTP/1.x
/// response gets it: asking first whether the request will need it (full, and no
/// `x-request-id` of its own) cost a mesh server as many instructions as the room does.
const REQUEST_HEADER_ROOM: usize = 6;

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if *this.http1 {
            let headers = response.headers_mut();
            if let Some(room) = REQUEST_HEADER_ROOM.checked_sub(headers.len()) {
                // At the map's size limit: left as it is.
                let _ = headers.try_reserve(room);
            }
        }
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it is sent (or dropped).
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `fut`'s output if it comes within `limit`; a zero `limit` is no limit (as Envoy's
/// timeouts: zero disables them).
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    if limit.is_zero() {
        Some(fut.await)
    } else {
        tokio::time::timeout(limit, fut).await.ok()
    }
}

/// The shortest wait between two idle checks.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(1);

/// How long a connection may have nothing in flight before it is closed, and why it then
/// is; `None`: it is never closed for that. An HTTP/2 connection: the idle timeout. Any
/// other (HTTP/1.1, or one that has not yet sent the bytes that say which): the
/// header-read timeout too, which runs from the connection's establishment (TLS handshake
/// done) or its last response's end until the next request's headers have been read, as
/// hyper's does (a keep-alive connection without a request for that long is closed, and so
/// is a slowloris peer). A zero timeout is none (as Envoy's `idle_timeout` and
/// `request_headers_timeout`).
fn idle_limit(config: &InboundConfig, http2: bool) -> Option<(Duration, &'static str)> {
    let idle = (!config.idle_timeout.is_zero()).then_some((config.idle_timeout, "idle timeout"));
    let header_read = config.header_read_timeout;
    if http2 || header_read.is_zero() {
        return idle;
    }
    match idle {
        Some((limit, _)) if limit <= header_read => idle,
        _ => Some((
            header_read,
            "no request headers within the header-read timeout",
        )),
    }
}

/// Serves HTTP on an established connection until the peer closes it, the listener shuts
/// down (graceful), the table evicts it, or it has been idle for its limit
/// ([`idle_limit`]).
async fn serve_http<S, B>(
    ctx: &Context,
    io: Box<dyn IoStream>,
    peer: PeerIdentity,
    service: S,
    activity: Arc<Activity>,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let remote = peer.remote_addr;
    let mut closing = ctx.closing.clone();
    let conn = ctx.http.serve_connection_with_upgrades(
        TokioIo::new(Sniffed::new(io, Arc::clone(&activity))),
        WithPeer {
            inner: service,
            peer,
            activity: Arc::clone(&activity),
        },
    );
    tokio::pin!(conn);
    let idle = async {
        loop {
            // Without a limit now, none later: a connection only ever turns out HTTP/2,
            // which has no header-read timeout.
            let Some((limit, why)) = idle_limit(&ctx.config, activity.is_http2()) else {
                return std::future::pending().await;
            };
            let idle_for = activity.idle_for();
            if activity.is_idle() && idle_for >= limit {
                return why;
            }
            // Check again when the limit would be up if nothing happens meanwhile (and
            // not in a loop, should the limit be zero).
            let wait = if activity.is_idle() {
                limit - idle_for
            } else {
                limit
            };
            tokio::time::sleep(wait.max(MIN_IDLE_CHECK)).await;
        }
    };
    let stop = async {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => "shutting down",
            () = activity.evicted() => "closed to make room for another connection",
            why = idle => why,
        }
    };
    // The close signals are polled when they fire, not on each of the connection's wake-ups.
    let why = match Until::new(conn.as_mut(), stop).await {
        Ended::Done(result) => {
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "inbound connection ended with an error");
            }
            return;
        }
        Ended::Stopped(why) => why,
    };
    tracing::debug!(%remote, why, "closing inbound connection");
    conn.as_mut().graceful_shutdown();
    // An evicted or idle connection has nothing in flight: a short grace is enough for
    // HTTP/2's GOAWAY; on shutdown, requests in flight are waited for.
    let grace = if why == "shutting down" {
        None
    } else {
        Some(Duration::from_secs(1))
    };
    let result = match grace {
        Some(grace) => match tokio::time::timeout(grace, conn.as_mut()).await {
            Ok(result) => result,
            Err(_) => return,
        },
        None => conn.await,
    };
    if let Err(error) = result {
        tracing::debug!(%error, %remote, "inbound connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_response_leaves_its_map_room_for_the_next_request() {
        use futures_util::FutureExt;
        let respond = |http1, headers: &[&'static str]| {
            let mut resp = Response::new(());
            for name in headers {
                resp.headers_mut()
                    .insert(*name, http::HeaderValue::from_static("x"));
            }
            Tracked {
                inner: std::future::ready(Ok::<_, std::convert::Infallible>(resp)),
                in_flight: None,
                http1,
            }
            .now_or_never()
            .and_then(Result::ok)
            .map(|resp| (resp.headers().capacity(), resp.headers().len()))
        };
        // Room for six however many the response has (hyper clears them).
        let room = REQUEST_HEADER_ROOM;
        assert!(matches!(respond(true, &[]), Some((cap, 0)) if cap >= room));
        assert!(matches!(respond(true, &["content-type"]), Some((cap, 1)) if cap >= room));
        // HTTP/2 makes a new map for each request: the response's is left as it is.
        assert_eq!(respond(false, &[]), Some((0, 0)));
    }

    #[test]
    fn http1_connections_get_the_header_read_timeout_http2_ones_the_idle_timeout() {
        let config = InboundConfig::default()
            .with_header_read_timeout(Duration::from_secs(30))
            .with_idle_timeout(Duration::from_secs(300));
        assert_eq!(
            idle_limit(&config, false),
            Some((
                Duration::from_secs(30),
                "no request headers within the header-read timeout"
            ))
        );
        assert_eq!(
            idle_limit(&config, true),
            Some((Duration::from_secs(300), "idle timeout"))
        );
        // An idle timeout shorter than the header-read timeout comes first for both.
        let short = config.clone().with_idle_timeout(Duration::from_secs(5));
        assert_eq!(
            idle_limit(&short, false),
            Some((Duration::from_secs(5), "idle timeout"))
        );
        // Zero is no timeout, as in Envoy: the other one applies, or none.
        let no_header_read = config.clone().with_header_read_timeout(Duration::ZERO);
        assert_eq!(
            idle_limit(&no_header_read, false),
            Some((Duration::from_secs(300), "idle timeout"))
        );
        let no_idle = config.with_idle_timeout(Duration::ZERO);
        assert_eq!(
            idle_limit(&no_idle, false),
            Some((
                Duration::from_secs(30),
                "no request headers within the header-read timeout"
            ))
        );
        assert_eq!(idle_limit(&no_idle, true), None);
        let neither = no_idle.with_header_read_timeout(Duration::ZERO);
        assert_eq!(idle_limit(&neither, false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_waits_as_long_as_it_takes() {
        let later = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            7
        };
        assert_eq!(within(Duration::ZERO, later).await, Some(7));
        let pending = std::future::pending::<()>();
        assert_eq!(within(Duration::from_secs(10), pending).await, None);
        assert_eq!(
            within(Duration::from_secs(10), std::future::ready(1)).await,
            Some(1)
        );
    }
}
