//! Open-loop load at a fixed rate through the mesh's outbound client and through a plain
//! hyper client, to the same backend on 127.0.0.1, in one run: added latency (p50, p99,
//! p99.9, corrected for coordinated omission: each request is timed from when it was
//! scheduled) and added CPU per request.
//!
//! ```text
//! cargo run --release -p mesh-benches --bin outbound-load -- [RATE] [SECONDS]
//! ```
//!
//! Everything runs on one current-thread runtime (one core), so the CPU time of the process
//! is the cost of the client stack plus the backend; the backend's share is the same in both
//! runs, and the difference is what the mesh adds.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Endpoint};
use mesh_core::outlier::OutlierConfig;
use mesh_core::retry::{RetryOn, RetryPolicy};
use mesh_core::route::{ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost};
use mesh_core::Snapshot;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BODY: [u8; 1024] = [b'x'; 1024];

async fn backend() -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            &BODY,
                        ))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The same backend behind the mesh's inbound listener, STRICT mTLS with an SVID.
async fn mtls_backend(ca: &mesh_tower::identity::testing::TestCa) -> Result<SocketAddr, BoxError> {
    use mesh_core::inbound::{InboundPolicy, TlsMode};
    let svid = ca.svid("default", "backend")?;
    let source = mesh_tower::identity::CertificateSource::in_memory(svid.identity()?, ca.bundle()?);
    let policy = mesh_core::live::LivePolicy::new(
        Snapshot::builder()
            .inbound_default(Some(InboundPolicy::new(TlsMode::Strict)))
            .build(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = tower::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(&BODY))))
    });
    let server = mesh_tower::inbound::MeshListener::new(listener, policy, Some(source));
    tokio::spawn(server.serve(svc, std::future::pending::<()>()));
    Ok(addr)
}

fn mesh_snapshot(backend: SocketAddr, tls: bool) -> Snapshot {
    let mut cluster = Cluster::new("bench");
    if tls {
        cluster.tls = Some(mesh_core::cluster::UpstreamTls {
            sni: None,
            accepted_sans: vec![mesh_core::matcher::StringMatcher::exact(
                "spiffe://cluster.local/ns/default/sa/backend",
            )],
            identity: Some(mesh_core::cluster::CertificateInstance::new(
                "default", "default",
            )),
            roots: Some(mesh_core::cluster::CertificateInstance::new(
                "default", "ROOTCA",
            )),
        });
    }
    cluster.outlier_detection = Some(OutlierConfig::new());
    let mut action = ForwardAction::to_cluster("bench");
    action.timeout = Some(Duration::from_secs(5));
    action.retry_policy = RetryOn::parse("5xx,reset,connect-failure")
        .ok()
        .map(|on| RetryPolicy::new(2, on));
    let rc = RouteConfig::new(
        "bench:80",
        // As istiod writes a virtual host: attempts carry their count.
        vec![VirtualHost::new(
            "bench",
            vec!["bench:80".into(), "bench".into()],
            vec![Route::new(
                "all",
                RouteMatch::default(),
                RouteAction::Forward(action),
            )],
        )
        .with_request_attempt_count(true)],
    );
    Snapshot::builder()
        .listener("bench:80", "bench:80")
        .route_config(rc)
        .cluster(cluster)
        .endpoints(ClusterLoadAssignment::from_endpoints(
            "bench",
            vec![Endpoint::new(backend)],
        ))
        .build()
}

/// Process CPU time (user + system) from /proc, in microseconds.
fn cpu_micros() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) end with ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    (ticks(11) + ticks(12)) * 10_000
}

struct Run {
    name: &'static str,
    p50: u64,
    p99: u64,
    p999: u64,
    cpu_per_req: f64,
    errors: usize,
    n: usize,
}

async fn run<S>(name: &'static str, client: S, uri: &str, rate: u64, secs: u64) -> Run
where
    S: Service<http::Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Response: Send,
    S::Error: Send,
    S::Future: Send,
{
    let n = (rate * secs) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let cpu0 = cpu_micros();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let mut c = client.clone();
        let req = http::Request::get(uri)
            .body(Full::new(Bytes::from_static(&BODY)))
            .unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let ok = match c.ready().await {
                Ok(svc) => svc.call(req).await.is_ok(),
                Err(_) => false,
            };
            (scheduled.elapsed().as_micros() as u64, ok)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((us, ok)) => {
                lat.push(us);
                if !ok {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    let cpu = cpu_micros().saturating_sub(cpu0);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Run {
        name,
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        cpu_per_req: cpu as f64 / n.max(1) as f64,
        errors,
        n,
    }
}

/// The response body is read to the end, as an application would.
#[derive(Clone)]
struct Drain<S>(S);

impl<S, B> Service<http::Request<Full<Bytes>>> for Drain<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Full<Bytes>>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await.map_err(Into::into)?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()).into());
            }
            resp.into_body().collect().await.map_err(Into::into)?;
            Ok(())
        })
    }
}

/// Full mTLS handshakes per second against the STRICT listener, one after another.
async fn handshakes(
    ca: &mesh_tower::identity::testing::TestCa,
    addr: SocketAddr,
) -> Result<(), BoxError> {
    use mesh_tower::outbound::UpstreamTlsConnect;
    let client = mesh_tower::identity::CertificateSource::in_memory(
        ca.svid("default", "client")?.identity()?,
        ca.bundle()?,
    );
    let accepted = vec![mesh_core::matcher::StringMatcher::exact(
        "spiffe://cluster.local/ns/default/sa/backend",
    )];
    let n = 300u32;
    let cpu0 = cpu_micros();
    let start = Instant::now();
    for _ in 0..n {
        // A fresh config each time: no session resumption, a full handshake.
        let config = mesh_tower::identity::client_config(&client, Some(&client), accepted.clone())?;
        let connector = mesh_tower::identity::MeshTlsConnector::new(
            config,
            rustls_pki_types::ServerName::try_from("backend.mesh.invalid")?.to_owned(),
        );
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _tls = connector.connect(tcp, &addr.to_string()).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_micros().saturating_sub(cpu0);
    println!(
        "full mTLS handshakes (client and server in this process, one core): {:.0}/s, {:.0} µs CPU each",
        f64::from(n) / secs,
        cpu as f64 / f64::from(n)
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let secs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .min(60);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = backend().await?;
        let plain = Drain(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
        let mesh = mesh_tower::Mesh::builder().snapshot(mesh_snapshot(addr, false)).build()?;
        let meshed = Drain(mesh.http_client::<Full<Bytes>>());
        let ca = mesh_tower::identity::testing::TestCa::new()?;
        let tls_addr = mtls_backend(&ca).await?;
        let client_svid = ca.svid("default", "client")?;
        let client_source =
            mesh_tower::identity::CertificateSource::in_memory(client_svid.identity()?, ca.bundle()?);
        let mtls_mesh = mesh_tower::Mesh::builder()
            .snapshot(mesh_snapshot(tls_addr, true))
            .identity(client_source)
            .build()?;
        let mtls = Drain(mtls_mesh.http_client::<Full<Bytes>>());
        let plain_uri = format!("http://{addr}/pay");
        // Warm both (connections, cluster state), then alternate runs.
        let _ = run("warm", plain.clone(), &plain_uri, 500, 1).await;
        let _ = run("warm", meshed.clone(), "http://bench:80/pay", 500, 1).await;
        let _ = run("warm", mtls.clone(), "http://bench:80/pay", 500, 1).await;
        let mut runs = Vec::new();
        for _ in 0..2 {
            runs.push(run("plain hyper", plain.clone(), &plain_uri, rate, secs).await);
            runs.push(run("mesh", meshed.clone(), "http://bench:80/pay", rate, secs).await);
            runs.push(run("mesh + mTLS", mtls.clone(), "http://bench:80/pay", rate, secs).await);
        }
        println!("rate {rate}/s for {secs}s per run, 1 KiB bodies, HTTP/1.1, one current-thread runtime\n");
        println!("| client | requests | errors | p50 µs | p99 µs | p99.9 µs | CPU µs/req (client+backend) |");
        println!("|---|---|---|---|---|---|---|");
        for r in &runs {
            println!("| {} | {} | {} | {} | {} | {} | {:.1} |", r.name, r.n, r.errors, r.p50, r.p99, r.p999, r.cpu_per_req);
        }
        let avg = |name: &str, f: &dyn Fn(&Run) -> f64| {
            let v: Vec<f64> = runs.iter().filter(|r| r.name == name).map(f).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        for (name, base) in [("mesh", "plain hyper"), ("mesh + mTLS", "plain hyper"), ("mesh + mTLS", "mesh")] {
            let added = |f: &dyn Fn(&Run) -> f64| avg(name, f) - avg(base, f);
            println!(
                "{name} over {base} (mean of runs): p50 {:+.0} µs, p99 {:+.0} µs, CPU {:+.1} µs/request",
                added(&|r| r.p50 as f64),
                added(&|r| r.p99 as f64),
                added(&|r| r.cpu_per_req)
            );
        }
        handshakes(&ca, tls_addr).await?;
        Ok::<_, BoxError>(())
    })
}
