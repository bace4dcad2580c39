//! The whole request path per request, each stack against its bare baseline in the same
//! run (the difference and the ratio are the numbers to read; absolute times depend on
//! the machine):
//!
//! - `inbound/*`: the mesh's inbound stack (`Mesh::layer`: trace context, Istio metrics,
//!   authorization) around an application that answers `ok`, against the application
//!   alone. `direct` calls the tower service in memory with the [`PeerIdentity`] the
//!   listener attaches; `h1`/`h2` serve it with hyper over an in-memory duplex pipe (the
//!   HTTP codec included, no socket). `mesh` is service B of the e2e benchmark: a peer with
//!   A's SPIFFE ID under STRICT and an `AuthorizationPolicy` allowing only A; `mesh-plain`
//!   is the same stack with no authorization rules.
//! - `outbound/*`: the mesh's client (`Mesh::http_client`: route, cluster, breaker,
//!   endpoint pick, pool, retry policy, deadline, trace headers, metrics) with service A's
//!   policy of the e2e benchmark (plaintext), against a plain hyper-util client, both
//!   calling the same hyper server on 127.0.0.1 (the mesh dials TCP itself, so this one
//!   runs over loopback).
//!
//! No OpenTelemetry SDK is installed (span export is not in the numbers). Everything runs
//! on a current-thread runtime (one per group). `cargo bench -p mesh-benches --bench stack`.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_benches::e2e::serve::{a_snapshot, b_snapshot, B_AUTHORITY};
use mesh_benches::e2e::{Protocol, SPIFFE_A};
use mesh_core::identity::SpiffeId;
use mesh_tower::inbound::PeerIdentity;
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::Mesh;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const PEER: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
const LOCAL: ([u8; 4], u16) = ([10, 0, 0, 2], 8080);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Service A as seen by B: its SPIFFE ID over TLS (`mtls`), or a plaintext peer.
fn peer(mtls: bool) -> PeerIdentity {
    let plain = PeerIdentity::plaintext(SocketAddr::from(PEER), SocketAddr::from(LOCAL));
    if mtls {
        plain.with_spiffe_id(Some(SpiffeId::parse(SPIFFE_A).expect("SPIFFE ID")))
    } else {
        plain
    }
}

/// B's mesh (`mtls`: STRICT and A-only authorization), no certificates: the listener,
/// which would do the TLS, is not in the path.
fn b_mesh(mtls: bool) -> Mesh {
    Mesh::builder()
        .snapshot(b_snapshot(mtls).expect("B's policy"))
        .workload(WorkloadLabels::named("service-b"))
        .build()
        .expect("B's mesh")
}

fn request() -> Request<Empty<Bytes>> {
    Request::post("http://service-b/echo")
        .header("host", "service-b")
        .header("content-type", "application/octet-stream")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Empty::new())
        .expect("request")
}

async fn ok<B>(_req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Calls `svc` with the request and reads the response to its end.
async fn call<S, B>(svc: &mut S, req: Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body,
{
    let Ok(svc) = svc.ready().await;
    let Ok(resp) = svc.call(req).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let _ = resp.into_body().collect().await;
}

fn inbound_direct(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("inbound/direct");
    let mut bare = tower::service_fn(ok::<Empty<Bytes>>);
    g.bench_function("bare", |b| {
        b.iter(|| rt.block_on(call(&mut bare, request())))
    });
    for (name, mtls) in [("mesh-plain", false), ("mesh", true)] {
        let mesh = b_mesh(mtls);
        let peer = peer(mtls);
        let mut svc = mesh.layer().layer(tower::service_fn(ok));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut req = request();
                // What the listener does for each request of a connection.
                req.extensions_mut().insert(peer.clone());
                rt.block_on(call(&mut svc, req))
            })
        });
    }
    g.finish();
}

/// A client connection to `svc` served by hyper over an in-memory pipe.
async fn pipe<S, B>(svc: S, h2: bool) -> Pipe
where
    S: Service<Request<hyper::body::Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let service = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::spawn(async move {
        let _ = builder
            .serve_connection(TokioIo::new(server), service)
            .await;
    });
    let io = TokioIo::new(client);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Pipe::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Pipe::H1(send)
    }
}

enum Pipe {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Pipe {
    async fn send(&mut self, mut req: Request<Empty<Bytes>>) {
        let resp = match self {
            Pipe::H1(send) => {
                send.ready().await.expect("h1 ready");
                send.send_request(req).await
            }
            Pipe::H2(send) => {
                *req.version_mut() = http::Version::HTTP_2;
                send.ready().await.expect("h2 ready");
                send.send_request(req).await
            }
        }
        .expect("response");
        assert!(resp.status().is_success(), "{}", resp.status());
        let _ = resp.into_body().collect().await;
    }
}

/// Puts the peer on each request, as the listener does.
fn with_peer<S>(
    peer: PeerIdentity,
    svc: S,
) -> impl Service<
    Request<hyper::body::Incoming>,
    Response = S::Response,
    Error = S::Error,
    Future = S::Future,
> + Clone
where
    S: Service<Request<hyper::body::Incoming>> + Clone,
{
    tower::util::MapRequestLayer::new(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        req
    })
    .layer(svc)
}

fn inbound_pipe(c: &mut Criterion) {
    let rt = runtime();
    for (group, h2) in [("inbound/h1", false), ("inbound/h2", true)] {
        let mut g = c.benchmark_group(group);
        let mut bare = rt.block_on(pipe(tower::service_fn(ok), h2));
        g.bench_function("bare", |b| b.iter(|| rt.block_on(bare.send(request()))));
        for (name, mtls) in [("mesh-plain", false), ("mesh", true)] {
            let mesh = b_mesh(mtls);
            let svc = with_peer(peer(mtls), mesh.layer().layer(tower::service_fn(ok)));
            let mut conn = rt.block_on(pipe(svc, h2));
            g.bench_function(name, |b| b.iter(|| rt.block_on(conn.send(request()))));
        }
        g.finish();
    }
}

/// A hyper server on 127.0.0.1 answering `ok`, HTTP/1.1 and h2c.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(ok))
                    .await;
            });
        }
    });
    addr
}

fn outbound(c: &mut Criterion) {
    let rt = runtime();
    let addr = rt.block_on(backend());
    for (group, protocol) in [
        ("outbound/h1", Protocol::Http1),
        ("outbound/h2", Protocol::Http2),
    ] {
        let h2 = protocol.is_h2();
        let mut g = c.benchmark_group(group);
        let bare: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http();
        let direct: http::Uri = format!("http://{addr}/echo").parse().expect("URI");
        g.bench_function("bare", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = request();
                    *req.uri_mut() = direct.clone();
                    let resp = bare.request(req).await.expect("bare response");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let _ = resp.into_body().collect().await;
                })
            })
        });
        let mesh = rt.block_on(async {
            Mesh::builder()
                .snapshot(a_snapshot(false, addr, protocol).expect("A's policy"))
                .workload(WorkloadLabels::named("service-a"))
                .build()
                .expect("A's mesh")
        });
        let mut client = mesh.http_client::<Empty<Bytes>>();
        let target: http::Uri = format!("http://{B_AUTHORITY}/echo").parse().expect("URI");
        g.bench_function("mesh-plain", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = request();
                    *req.uri_mut() = target.clone();
                    let svc = client.ready().await.expect("ready");
                    let resp = svc.call(req).await.expect("mesh response");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let _ = resp.into_body().collect().await;
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, inbound_direct, inbound_pipe, outbound);
criterion_main!(benches);
