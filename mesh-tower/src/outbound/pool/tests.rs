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

use super::{H2Pool, PoolError};
use crate::body::ReplayBody;
use crate::outbound::connect::{ConnectError, MeshConnector};
use crate::outbound::RequestBody;

/// An HTTP/2 (prior knowledge) server on 127.0.0.1 that numbers its connections from 0 and
/// answers each request with its connection's number (`x-conn`). Sending on the returned
/// channel shuts every open connection down gracefully (GOAWAY, then close).
async fn h2_server() -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
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

fn pool(addr: SocketAddr) -> Arc<H2Pool> {
    let connector = MeshConnector::new(
        Duration::from_secs(10),
        Arc::new(CircuitBreaker::new(Thresholds::default())),
        None,
    );
    let authority = http::uri::Authority::try_from(addr.to_string().as_str()).unwrap();
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
    let resp = pool.send(request(addr)).await.expect("a response");
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
    let sends: Vec<_> = (0..3).map(|_| pool.send(request(addr))).collect();
    for send in sends {
        let err = send.await.expect_err("nothing listens");
        assert!(err.is_connect(), "{err}");
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    let pool = pool(addr);
    let sends: Vec<_> = (0..3).map(|_| pool.send(request(addr))).collect();
    for send in futures_util::future::join_all(sends).await {
        let err = send.expect_err("the server closes");
        assert!(
            matches!(err, PoolError::Send(_) | PoolError::Handshake(_)),
            "{err:?}"
        );
        assert!(!err.is_connect(), "a connection was made: {err}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one dial for three requests"
    );
    // The failure is not kept: the next request dials again.
    pool.send(request(addr))
        .await
        .expect_err("the server closes");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
