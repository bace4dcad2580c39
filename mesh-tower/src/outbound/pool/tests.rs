#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::breaker::{CircuitBreaker, Thresholds};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{H1Pool, H2Pool, PoolError};
use crate::body::ReplayBody;
use crate::outbound::connect::{ConnectError, MeshConnector};
use crate::outbound::demand::DialDemands;
use crate::outbound::RequestBody;

/// An HTTP/2 (prior knowledge) server on 127.0.0.1 that numbers its connections from 0 and
/// answers each request with its connection's number (`x-conn`). Sending on the returned
/// channel shuts every open connection down gracefully (GOAWAY, then close).
async fn h2_server() -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<()>) {
    let (listener, addr, accepted) = counting_listener().await;
    let (close, closed) = watch::channel(());
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let mut closed = closed.clone();
            closed.mark_unchanged();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("x-conn", n.to_string())
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    },
                );
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = closed.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    (addr, accepted, close)
}

/// The pools' connector: 10 s connect timeout, default limits, `tls` when given.
fn connector(tls: Option<Arc<dyn crate::outbound::connect::UpstreamTlsConnect>>) -> MeshConnector {
    MeshConnector::new(
        Duration::from_secs(10),
        Arc::new(CircuitBreaker::new(Thresholds::default())),
        tls,
    )
}

/// The response of a pool's answer.
fn response_of(send: super::SendFuture) -> ResponseFuture {
    Box::pin(async move { send.await.map(|answered| answered.resp) })
}

type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Response<hyper::body::Incoming>, PoolError>> + Send,
    >,
>;

fn authority_of(addr: SocketAddr) -> http::uri::Authority {
    http::uri::Authority::try_from(addr.to_string().as_str()).unwrap()
}

/// A listener on 127.0.0.1, its address, and a counter for the server to count accepts in.
async fn counting_listener() -> (TcpListener, SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr, Arc::new(AtomicUsize::new(0)))
}

fn pool(addr: SocketAddr) -> Arc<H2Pool> {
    let connector = connector(None);
    let authority = authority_of(addr);
    Arc::new(H2Pool::new(&authority, connector))
}

fn request(addr: SocketAddr) -> Request<RequestBody> {
    let mut req = Request::new(ReplayBody::empty());
    *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
    *req.version_mut() = Version::HTTP_2;
    req
}

/// The `x-conn` of the answer to a request sent on `pool`.
async fn conn_of(pool: &Arc<H2Pool>, addr: SocketAddr) -> usize {
    let resp = response_of(pool.send(request(addr)))
        .await
        .expect("a response");
    let n = resp.headers()["x-conn"].to_str().unwrap().parse().unwrap();
    let _ = resp.into_body().collect().await;
    n
}

#[tokio::test]
async fn concurrent_requests_share_one_dial_and_one_connection() {
    let (addr, accepted, _close) = h2_server().await;
    let pool = pool(addr);
    let sends: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn({
                let pool = Arc::clone(&pool);
                async move { conn_of(&pool, addr).await }
            })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap(), 0);
    }
    assert_eq!(
        conn_of(&pool, addr).await,
        0,
        "kept open for the next request"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closed_connection_is_replaced_by_the_next_requests_dial() {
    let (addr, accepted, close) = h2_server().await;
    let pool = pool(addr);
    assert_eq!(conn_of(&pool, addr).await, 0);
    assert!(pool.is_open());
    close.send(()).unwrap();
    // The server's GOAWAY and close reach the client's connection task.
    for _ in 0..500 {
        if !pool.is_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!pool.is_open(), "the client saw the connection close");
    assert_eq!(conn_of(&pool, addr).await, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert!(pool.is_open());
}

#[tokio::test]
async fn a_refused_dial_fails_every_waiting_request_as_a_connect_failure() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let pool = pool(addr);
    let sends: Vec<_> = (0..3)
        .map(|_| response_of(pool.send(request(addr))))
        .collect();
    for send in futures_util::future::join_all(sends).await {
        let err = send.expect_err("nothing listens");
        assert!(
            matches!(err.connect_error(), Some(ConnectError::Tcp { .. })),
            "{err:?}"
        );
    }
    assert!(!pool.is_open());
}

#[tokio::test]
async fn a_connection_closed_at_once_fails_its_waiting_requests_and_is_not_kept() {
    // Accepts and closes at once. hyper's client handshake does not wait for the server's
    // SETTINGS, so the dial succeeds and the requests that waited for it fail on the dead
    // connection: not resent (it was new, as hyper-util's pool), not connect failures.
    let (listener, addr, accepted) = counting_listener().await;
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    let pool = pool(addr);
    let sends: Vec<_> = (0..3)
        .map(|_| response_of(pool.send(request(addr))))
        .collect();
    for send in futures_util::future::join_all(sends).await {
        let err = send.expect_err("the server closes");
        assert!(
            matches!(
                err,
                PoolError::Send(_) | PoolError::Handshake(_) | PoolError::ConnectionFailed(_)
            ),
            "{err:?}"
        );
        assert!(
            err.connect_error().is_none(),
            "a connection was made: {err}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one dial for three requests"
    );
    // The failure is not kept: the next request dials again.
    response_of(pool.send(request(addr)))
        .await
        .expect_err("the server closes");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A server that is no HTTP/2 server (it answers a new connection with an HTTP/1.1 400 and
/// reads on, as an HTTP/1.1-only server answers the preface): the request fails with why the
/// connection failed (the 400's first bytes read as a frame header give a frame far
/// larger than allowed), not hyper's "connection was not ready", which is all a request
/// the dying connection had not taken yet gets.
#[tokio::test]
async fn a_request_on_a_connection_that_failed_gets_the_connections_reason() {
    use tokio::io::AsyncWriteExt;
    let (listener, addr, _) = counting_listener().await;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                // Read on until the client goes, so that it reads the answer.
                let _ = tokio::io::copy(&mut tcp, &mut tokio::io::sink()).await;
            });
        }
    });
    for _ in 0..3 {
        let err = response_of(pool(addr).send(request(addr)))
            .await
            .expect_err("not an HTTP/2 server");
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            chain = format!("{chain}: {e}");
            source = e.source();
        }
        assert!(chain.contains("frame with invalid size"), "{chain}");
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that numbers its connections from 0 and answers each
/// request with its connection's number (`x-conn`), the Host it got (`x-host`) and the
/// request target (`x-target`); `/big` gets a 4 MiB body. Counts the connections that
/// closed.
async fn h1_server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (listener, addr, accepted) = counting_listener().await;
    let closed = Arc::new(AtomicUsize::new(0));
    let (counter, closes) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let closes = Arc::clone(&closes);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .cloned()
                            .unwrap_or_else(|| http::HeaderValue::from_static("none"));
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("x-conn", n.to_string())
                                .header("x-host", host)
                                .header("x-target", req.uri().to_string())
                                .body(Full::new(if req.uri().path() == "/big" {
                                    // More than hyper's client buffers: the connection
                                    // stays busy until the body is read.
                                    Bytes::from(vec![b'x'; 4 << 20])
                                } else {
                                    Bytes::from_static(b"ok")
                                }))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

fn h1_pool(addr: SocketAddr, idle_timeout: Duration) -> Arc<H1Pool> {
    h1_pool_over(addr, connector(None), idle_timeout).0
}

/// The HTTP/1.1 pool of the endpoint at `addr` dialing through `connector`, and the
/// endpoint's HTTP/2 pool it hands connections that ALPN made h2.
fn h1_pool_over(
    addr: SocketAddr,
    connector: MeshConnector,
    idle_timeout: Duration,
) -> (Arc<H1Pool>, Arc<H2Pool>) {
    let authority = authority_of(addr);
    let http2 = Arc::new(H2Pool::new(&authority, connector.clone()));
    let pool = Arc::new(H1Pool::new(
        &authority,
        connector,
        Arc::clone(&http2),
        idle_timeout,
    ));
    (pool, http2)
}

/// An HTTP/1.1 pool gated by its endpoint's dial demand, as the cluster's connector has it,
/// with one request counted in flight (the attempt guard's job in the mesh) until the
/// returned guard drops: one connection is all a dial may open.
fn h1_pool_one_dial(addr: SocketAddr) -> (Arc<H1Pool>, crate::outbound::demand::DemandRequest) {
    let demands = Arc::new(DialDemands::default());
    let demand = demands.register(&addr.to_string());
    let connector = connector(None).with_demand(demands);
    let (pool, _) = h1_pool_over(addr, connector, Duration::from_secs(90));
    let in_flight = demand.request();
    (pool, in_flight)
}

/// The answer's `x-conn`, `x-host` and `x-target`, its body read to the end.
async fn h1_send(pool: &Arc<H1Pool>, req: Request<RequestBody>) -> (usize, String, String) {
    let resp = response_of(pool.send(req)).await.expect("a response");
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
    let seen = (
        header("x-conn").parse().unwrap(),
        header("x-host"),
        header("x-target"),
    );
    let _ = resp.into_body().collect().await;
    seen
}

fn h1_request(uri: &str) -> Request<RequestBody> {
    let mut req = Request::new(ReplayBody::empty());
    *req.uri_mut() = uri.parse().unwrap();
    req
}

#[tokio::test]
async fn an_http1_connection_serves_the_next_request_with_the_origin_form_and_a_host() {
    let (addr, accepted, _) = h1_server().await;
    let pool = h1_pool(addr, Duration::from_secs(90));
    // No Host: the endpoint's address, as hyper-util's pool wrote it.
    let (conn, host, target) = h1_send(&pool, h1_request("http://payments/pay?x=1")).await;
    assert_eq!(
        (conn, host.as_str(), target.as_str()),
        (0, addr.to_string().as_str(), "/pay?x=1")
    );
    // A Host the request has is kept; a path-less URI goes as `/`.
    let mut req = h1_request("http://payments");
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("payments.internal"));
    let (conn, host, target) = h1_send(&pool, req).await;
    assert_eq!(
        (conn, host.as_str(), target.as_str()),
        (0, "payments.internal", "/")
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn concurrent_http1_requests_each_get_a_connection_and_leave_them_warm() {
    let (addr, accepted, _) = h1_server().await;
    let pool = h1_pool(addr, Duration::from_secs(90));
    // Five requests at once, each holding its response until all have one.
    let resps = futures_util::future::join_all(
        (0..5).map(|_| response_of(pool.send(h1_request("http://payments/")))),
    )
    .await;
    let mut conns: Vec<_> = resps
        .iter()
        .map(|r| r.as_ref().expect("a response").headers()["x-conn"].clone())
        .collect();
    conns.sort();
    conns.dedup();
    assert_eq!(conns.len(), 5, "one connection per request in flight");
    for resp in resps {
        let _ = resp.unwrap().into_body().collect().await;
    }
    // Their bodies read, all five come back and serve the next five, one after another.
    for _ in 0..50 {
        if pool.idle() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.idle(), 5);
    for _ in 0..5 {
        h1_send(&pool, h1_request("http://payments/")).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_request_waiting_for_a_connection_gets_the_one_that_comes_free() {
    let (addr, accepted, _) = h1_server().await;
    let (pool, _in_flight) = h1_pool_one_dial(addr);
    let first = response_of(pool.send(h1_request("http://payments/big")))
        .await
        .unwrap();
    // The first response's body is unread: its connection is busy. The second request's
    // dial waits for demand; the request gets the first connection once it comes free.
    let second = tokio::spawn(h1_send_owned(Arc::clone(&pool)));
    for _ in 0..500 {
        if pool.waiting() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.waiting(), 1, "the second request waits");
    let _ = first.into_body().collect().await;
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the freed connection reached the waiting request")
        .unwrap();
    assert_eq!(second, 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

async fn h1_send_owned(pool: Arc<H1Pool>) -> usize {
    h1_send(&pool, h1_request("http://payments/")).await.0
}

#[tokio::test]
async fn idle_http1_connections_close_after_the_idle_timeout() {
    let (addr, accepted, closed) = h1_server().await;
    let pool = h1_pool(addr, Duration::from_millis(50));
    h1_send(&pool, h1_request("http://payments/")).await;
    // Closed by the pool's sweep, seen by the server (bounded wait, no timing assertion).
    for _ in 0..500 {
        if closed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        1,
        "the idle connection was closed"
    );
    assert_eq!(pool.idle(), 0);
    // The next request dials again.
    assert_eq!(h1_send(&pool, h1_request("http://payments/")).await.0, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_http1_connection_the_server_closed_is_not_used() {
    // Answers one request per connection and closes it without saying so.
    let (listener, addr, accepted) = counting_listener().await;
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nx-conn: {n}\r\nx-host: h\r\nx-target: t\r\ncontent-length: 0\r\n\r\n"
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    let pool = h1_pool(addr, Duration::from_secs(90));
    assert_eq!(h1_send(&pool, h1_request("http://payments/")).await.0, 0);
    // The server's close reaches the idle connection; the next request dials a new one and
    // gets its answer, with no error.
    for _ in 0..500 {
        if pool.idle() == 0 || !pool.idle_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        pool.idle() == 0 || !pool.idle_ready(),
        "the pool saw the close"
    );
    assert_eq!(h1_send(&pool, h1_request("http://payments/")).await.0, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_http1_dial_fails_its_request_as_a_connect_failure() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let pool = h1_pool(addr, Duration::from_secs(90));
    let err = response_of(pool.send(h1_request("http://payments/")))
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err.connect_error(), Some(ConnectError::Tcp { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_version_hyper_cannot_write_on_http1_is_refused_before_any_dial() {
    let (addr, accepted, _) = h1_server().await;
    let pool = h1_pool(addr, Duration::from_secs(90));
    let mut req = h1_request("http://payments/");
    *req.version_mut() = Version::HTTP_3;
    let err = response_of(pool.send(req))
        .await
        .expect_err("HTTP/3 over HTTP/1.1");
    assert!(
        matches!(err, PoolError::Unsupported(Version::HTTP_3)),
        "{err:?}"
    );
    let mut req = h1_request("http://payments:443");
    *req.method_mut() = http::Method::CONNECT;
    *req.version_mut() = Version::HTTP_10;
    let err = response_of(pool.send(req))
        .await
        .expect_err("an HTTP/1.0 CONNECT");
    assert!(
        matches!(err, PoolError::Unsupported(Version::HTTP_10)),
        "{err:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // The pool still serves what it can write.
    assert_eq!(h1_send(&pool, h1_request("http://payments/")).await.0, 0);
}

/// A "TLS" connector that hands the TCP stream back as is, saying whether ALPN chose `h2`.
/// With `first_fails`, its first handshake waits for that notification and then fails.
/// Counts its handshakes.
#[derive(Default)]
struct FakeTls {
    h2: bool,
    first_fails: Option<Arc<tokio::sync::Notify>>,
    calls: Arc<AtomicUsize>,
}

impl crate::outbound::connect::UpstreamTlsConnect for FakeTls {
    fn connect(
        &self,
        tcp: tokio::net::TcpStream,
        _authority: &str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<crate::outbound::connect::TlsConnected, crate::body::BoxError>,
                > + Send,
        >,
    > {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let fails = self.first_fails.clone().filter(|_| first);
        let h2 = self.h2;
        Box::pin(async move {
            if let Some(release) = fails {
                release.notified().await;
                return Err("handshake refused".into());
            }
            Ok(crate::outbound::connect::TlsConnected {
                stream: Box::new(tcp),
                h2,
            })
        })
    }
}

#[tokio::test]
async fn an_http1_dial_that_alpn_made_h2_serves_the_endpoints_requests_over_http2() {
    let (addr, accepted, _close) = h2_server().await;
    let connector = connector(Some(Arc::new(FakeTls {
        h2: true,
        ..FakeTls::default()
    })));
    let (pool, http2) = h1_pool_over(addr, connector, Duration::from_secs(90));
    // The HTTP/1.1 request's dial comes back h2: the connection goes to the HTTP/2 pool and
    // the request is sent there (the server speaks only HTTP/2).
    for _ in 0..3 {
        let resp = response_of(pool.send(h1_request("http://payments/")))
            .await
            .expect("a response");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.headers()["x-conn"], "0");
        let _ = resp.into_body().collect().await;
    }
    assert!(http2.is_open());
    assert_eq!(pool.idle(), 0);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection, adopted"
    );
}

#[tokio::test]
async fn an_http1_connect_request_goes_in_authority_form_to_the_endpoint() {
    let (addr, _, _) = h1_server().await;
    let pool = h1_pool(addr, Duration::from_secs(90));
    let mut req = h1_request("http://payments.example:443/ignored");
    *req.method_mut() = http::Method::CONNECT;
    let (_, host, target) = h1_send(&pool, req).await;
    // As hyper-util wrote it: the endpoint's address as the target and the Host.
    assert_eq!(target, addr.to_string());
    assert_eq!(host, addr.to_string());
}

/// A request that waits in line (its dial held back by demand) and has been sent the
/// connection that came free, not yet taken: `(pool, its demand guard, the request)`.
async fn a_request_sent_a_connection(
    addr: SocketAddr,
) -> (
    Arc<H1Pool>,
    crate::outbound::demand::DemandRequest,
    ResponseFuture,
) {
    let (pool, in_flight) = h1_pool_one_dial(addr);
    let first = response_of(pool.send(h1_request("http://payments/big")))
        .await
        .unwrap();
    let mut second = response_of(pool.send(h1_request("http://payments/")));
    assert!(futures_util::poll!(second.as_mut()).is_pending());
    assert_eq!(pool.waiting(), 1, "the second request waits in line");
    let _ = first.into_body().collect().await;
    for _ in 0..500 {
        if pool.waiting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        pool.waiting(),
        0,
        "the connection was sent to the second request"
    );
    (pool, in_flight, second)
}

#[tokio::test]
async fn a_connection_sent_to_a_request_that_gave_up_goes_back_to_the_pool() {
    let (addr, accepted, _) = h1_server().await;
    // The request gives up before it takes the connection (a timeout, a cancelled call).
    let (pool, _in_flight, second) = a_request_sent_a_connection(addr).await;
    drop(second);
    assert_eq!(pool.idle(), 1, "the connection came back to the pool");
    assert_eq!(h1_send_owned(Arc::clone(&pool)).await, 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "no second connection");
}

#[tokio::test]
async fn a_request_that_gave_up_leaves_the_line() {
    let (addr, _, _) = h1_server().await;
    let (pool, _in_flight) = h1_pool_one_dial(addr);
    let _first = response_of(pool.send(h1_request("http://payments/big")))
        .await
        .unwrap();
    let mut waiting: Vec<_> = (0..3)
        .map(|_| response_of(pool.send(h1_request("http://payments/"))))
        .collect();
    for w in &mut waiting {
        assert!(futures_util::poll!(w.as_mut()).is_pending());
    }
    assert_eq!(pool.waiting(), 3);
    drop(waiting);
    assert_eq!(
        pool.waiting(),
        0,
        "no place kept for requests that went away"
    );
}

#[tokio::test]
async fn each_waiting_request_gets_its_own_dials_outcome() {
    let (addr, accepted, _) = h1_server().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let connector = connector(Some(Arc::new(FakeTls {
        first_fails: Some(Arc::clone(&release)),
        calls: Arc::clone(&calls),
        ..FakeTls::default()
    })));
    let (pool, _) = h1_pool_over(addr, connector, Duration::from_secs(90));
    // The first request's dial hangs in its handshake; the second request's dial succeeds.
    let first = tokio::spawn(response_of(pool.send(h1_request("http://payments/big"))));
    for _ in 0..500 {
        if calls.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the first dial is in its handshake"
    );
    // Both requests ask for /big and keep their bodies unread: a connection that reached
    // one stays busy and cannot come free for the other.
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        response_of(pool.send(h1_request("http://payments/big"))),
    )
    .await
    .expect("the second request got its own dial's connection, not stranded")
    .expect("a response");
    release.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the first request got its own dial's failure")
        .unwrap();
    let err = first.expect_err("its dial failed");
    assert!(
        matches!(err.connect_error(), Some(ConnectError::Tls { .. })),
        "{err:?}"
    );
    assert_eq!(second.status(), 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "two dials, one failed in its handshake"
    );
}

#[tokio::test]
async fn a_request_that_gave_up_may_be_dropped_outside_the_runtime() {
    let (addr, _, _) = h1_server().await;
    let (pool, _in_flight, second) = a_request_sent_a_connection(addr).await;
    // Dropped on a thread with no runtime: the connection cannot go back to a pool whose
    // sweep would need one; it is dropped, and nothing panics.
    std::thread::spawn(move || drop(second))
        .join()
        .expect("dropped without a panic");
    assert_eq!(pool.idle(), 0);
}

/// A proxy on 127.0.0.1 in front of `upstream` that keeps every byte its client sends.
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&sent);
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    (addr, sent)
}

/// How an HPACK header field is represented (RFC 7541 section 6), and the index of its name
/// (0: the name is spelled out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hpack {
    Indexed,
    Incremental(usize),
    WithoutIndexing(usize),
    NeverIndexed(usize),
}

/// The representations in the HEADERS frames of an HTTP/2 client's bytes, frame by frame.
fn hpack_representations(bytes: &[u8]) -> Vec<Vec<Hpack>> {
    fn int(b: &[u8], pos: &mut usize, prefix: u32) -> usize {
        let max = (1usize << prefix) - 1;
        let mut v = usize::from(b[*pos]) & max;
        *pos += 1;
        if v == max {
            let mut shift = 0;
            loop {
                let byte = b[*pos];
                *pos += 1;
                v += usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        v
    }
    fn skip_string(b: &[u8], pos: &mut usize) {
        let len = int(b, pos, 7);
        *pos += len;
    }
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert!(bytes.starts_with(preface), "an HTTP/2 client preface");
    let mut frames = Vec::new();
    let mut at = preface.len();
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let payload = &bytes[at + 9..at + 9 + len];
        at += 9 + len;
        if kind != 0x1 {
            continue;
        }
        assert!(
            flags & 0x4 != 0,
            "one HEADERS frame per request (END_HEADERS)"
        );
        let mut block = payload;
        if flags & 0x8 != 0 {
            let pad = usize::from(block[0]);
            block = &block[1..block.len() - pad];
        }
        if flags & 0x20 != 0 {
            block = &block[5..];
        }
        let mut reps = Vec::new();
        let mut pos = 0;
        while pos < block.len() {
            let first = block[pos];
            if first & 0x80 != 0 {
                int(block, &mut pos, 7);
                reps.push(Hpack::Indexed);
            } else if first & 0xc0 == 0x40 {
                let name = int(block, &mut pos, 6);
                if name == 0 {
                    skip_string(block, &mut pos);
                }
                skip_string(block, &mut pos);
                reps.push(Hpack::Incremental(name));
            } else if first & 0xe0 == 0x20 {
                int(block, &mut pos, 5);
            } else {
                let never = first & 0x10 != 0;
                let name = int(block, &mut pos, 4);
                if name == 0 {
                    skip_string(block, &mut pos);
                }
                skip_string(block, &mut pos);
                reps.push(if never {
                    Hpack::NeverIndexed(name)
                } else {
                    Hpack::WithoutIndexing(name)
                });
            }
        }
        frames.push(reps);
    }
    frames
}

#[tokio::test]
async fn the_per_request_header_names_are_spelled_out_once_per_http2_connection() {
    let (upstream, _accepted, _close) = h2_server().await;
    let (addr, sent) = recording_proxy(upstream).await;
    let pool = pool(addr);
    for _ in 0..3 {
        let mut req = request(addr);
        // A new trace context each time, as the mesh writes it on each call.
        crate::trace::TraceContext::new_root().inject(req.headers_mut());
        assert!(req.headers()[crate::trace::X_REQUEST_ID].is_sensitive());
        assert!(req.headers()[crate::trace::w3c::TRACEPARENT].is_sensitive());
        let resp = response_of(pool.send(req)).await.expect("a response");
        let _ = resp.into_body().collect().await;
    }
    let frames = hpack_representations(&sent.lock().unwrap());
    assert_eq!(frames.len(), 3, "{frames:?}");
    let never = |reps: &[Hpack]| -> Vec<usize> {
        reps.iter()
            .filter_map(|r| match r {
                Hpack::NeverIndexed(name) => Some(*name),
                _ => None,
            })
            .collect()
    };
    // The first request's trace context and request id go into the table, names spelled.
    assert_eq!(never(&frames[0]), Vec::<usize>::new(), "{frames:?}");
    assert!(
        frames[0]
            .iter()
            .filter(|r| **r == Hpack::Incremental(0))
            .count()
            >= 2,
        "{frames:?}"
    );
    // The later ones are never indexed, and name their headers by the table's index.
    for reps in &frames[1..] {
        let names = never(reps);
        // traceparent and x-request-id (B3's too, when the environment asks for them).
        assert!(names.len() >= 2, "{frames:?}");
        assert!(
            names.iter().all(|&n| n > 61),
            "dynamic-table names: {frames:?}"
        );
    }
}

/// An upgraded connection (here a 101 to an echo protocol) is the caller's: it leaves its
/// endpoint's connections in the dial demand at once, its request ends as any other, and
/// closing it later uncounts nothing twice. (Kept counted, each upgrade used to leave one
/// request counted for good, letting the pool dial one connection more than needed.)
#[tokio::test]
async fn an_upgraded_connection_leaves_the_dial_demand_and_nothing_stays_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the request's head");
            head.extend_from_slice(&chunk[..n]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            s.write_all(&chunk[..n]).await.unwrap();
        }
    });
    let demands = Arc::new(DialDemands::default());
    let demand = demands.register(&addr.to_string());
    let connector = connector(None).with_demand(demands);
    let (pool, _) = h1_pool_over(addr, connector, Duration::from_secs(90));

    let in_flight = demand.request();
    let mut req = h1_request(&format!("http://{addr}/"));
    req.headers_mut()
        .insert("connection", http::HeaderValue::from_static("upgrade"));
    req.headers_mut()
        .insert("upgrade", http::HeaderValue::from_static("echo"));
    let resp = response_of(pool.send(req)).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    assert_eq!(
        demand.counts(),
        (1, 0),
        "the upgraded connection still counted among the endpoint's connections"
    );
    drop(in_flight);
    assert_eq!(
        demand.counts(),
        (0, 0),
        "the upgrade's request stayed counted"
    );

    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    io.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping", "the upgraded stream is the caller's");
    drop(io);
    assert_eq!(demand.counts(), (0, 0), "closing it uncounted it again");
}
