//! Services A and B, each run as its own process (`e2e serve-a` / `e2e serve-b`) on a
//! current-thread runtime. Each prints `LISTEN <addr>` on stdout once it accepts.
//!
//! B answers every request with 1 KiB. A relays each request it gets to B and returns B's
//! answer. Plain: hyper (with `hyper_util`'s pooled client) or tonic. Mesh: the mesh's
//! inbound listener with its inbound stack (`Mesh::layer`: trace, metrics, authorization), and
//! the mesh's outbound client (routing, round-robin LB, breaker, retries, outlier
//! detection) with STRICT mTLS between A and B.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::cluster::{
    CertificateInstance, Cluster, ClusterLoadAssignment, Endpoint, UpstreamProtocol, UpstreamTls,
};
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::matcher::StringMatcher;
use mesh_core::outlier::OutlierConfig;
use mesh_core::rbac::istio::{to_authorization, AuthorizationPolicy, Workload};
use mesh_core::retry::{RetryOn, RetryPolicy};
use mesh_core::route::{ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost};
use mesh_core::Snapshot;
use mesh_tower::identity::CertificateSource;
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::Mesh;
use tokio::net::TcpListener;
use tower::layer::util::{Identity, Stack};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::{BoxError, Protocol, Scenario, BODY, SPIFFE_A, SPIFFE_B};
use crate::proto::echo_client::EchoClient;
use crate::proto::echo_server::{Echo, EchoServer};
use crate::proto::Payload;

/// The name A's mesh routes to B by.
pub const B_AUTHORITY: &str = "service-b:80";

/// The arguments of `e2e serve-b` for `scenario`: on the mesh for `mesh` and `mesh-plain`,
/// with the certificates in `certs` (mTLS) for `mesh`.
pub fn serve_b_args(protocol: Protocol, scenario: Scenario, certs: &Path) -> Vec<String> {
    let mut args = vec![
        "serve-b".into(),
        "--protocol".into(),
        protocol.name().into(),
    ];
    push_mesh_args(&mut args, scenario, certs);
    args
}

/// The arguments of `e2e serve-a` for `scenario`, relaying to `upstream`.
pub fn serve_a_args(
    protocol: Protocol,
    scenario: Scenario,
    upstream: SocketAddr,
    certs: &Path,
) -> Vec<String> {
    let mut args = vec![
        "serve-a".into(),
        "--protocol".into(),
        protocol.name().into(),
        "--upstream".into(),
        upstream.to_string(),
    ];
    push_mesh_args(&mut args, scenario, certs);
    args
}

fn push_mesh_args(args: &mut Vec<String>, scenario: Scenario, certs: &Path) {
    if matches!(scenario, Scenario::Mesh | Scenario::MeshPlain) {
        args.push("--mesh".into());
    }
    if scenario == Scenario::Mesh {
        args.push("--certs".into());
        args.push(certs.display().to_string());
    }
}

/// Runs service B until the process is killed. `mesh` puts it on the mesh, with STRICT
/// mTLS and authorization when `certs` (a directory made by [`write_certificates`]) is
/// given, plaintext otherwise.
pub async fn serve_b(protocol: Protocol, mesh: bool, certs: Option<&Path>) -> Result<(), BoxError> {
    let listener = bind_and_announce().await?;
    match (protocol, mesh) {
        (Protocol::Grpc, false) => {
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(Answer))
                .serve_with_incoming(example_common::incoming_nodelay(listener))
                .await?;
        }
        (Protocol::Grpc, true) => {
            let mesh = b_mesh(certs)?;
            let routes = tonic::service::Routes::new(EchoServer::new(Answer));
            let service = mesh_stack(&mesh).service(routes);
            mesh.listener(listener)
                .serve(service, std::future::pending())
                .await?;
        }
        (_, false) => serve_plain(listener, tower::service_fn(answer)).await,
        (_, true) => {
            let mesh = b_mesh(certs)?;
            let service = mesh_stack(&mesh).service(tower::service_fn(answer));
            mesh.listener(listener)
                .serve(service, std::future::pending())
                .await?;
        }
    }
    Ok(())
}

/// Runs service A, relaying to B at `upstream`, until the process is killed. With
/// `mesh`, A is on the mesh and reaches B through the mesh's client, with mTLS when
/// `certs` is given.
pub async fn serve_a(
    protocol: Protocol,
    upstream: SocketAddr,
    mesh: bool,
    certs: Option<&Path>,
) -> Result<(), BoxError> {
    let listener = bind_and_announce().await?;
    match (protocol, mesh) {
        (Protocol::Grpc, false) => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream}"))?
                .tcp_nodelay(true)
                .connect_lazy();
            let relay = EchoServer::new(Relay(EchoClient::new(channel)));
            tonic::transport::Server::builder()
                .add_service(relay)
                .serve_with_incoming(example_common::incoming_nodelay(listener))
                .await?;
        }
        (Protocol::Grpc, true) => {
            let mesh = a_mesh(certs, upstream, protocol)?;
            let relay = EchoServer::new(Relay(EchoClient::new(mesh.channel(B_AUTHORITY))));
            let service = mesh_stack(&mesh).service(tonic::service::Routes::new(relay));
            mesh.listener(listener)
                .serve(service, std::future::pending())
                .await?;
        }
        (_, false) => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new())
                .http2_only(protocol.is_h2())
                .build::<_, Full<Bytes>>(connector);
            let uri: Uri = format!("http://{upstream}/echo").parse()?;
            let service =
                tower::service_fn(move |req| relay_http(client.clone(), uri.clone(), req));
            serve_plain(listener, service).await;
        }
        (_, true) => {
            let mesh = a_mesh(certs, upstream, protocol)?;
            let client = mesh.http_client::<Full<Bytes>>();
            let uri: Uri = format!("http://{B_AUTHORITY}/echo").parse()?;
            let app = tower::service_fn(move |req| relay_http(client.clone(), uri.clone(), req));
            let service = mesh_stack(&mesh).service(app);
            mesh.listener(listener)
                .serve(service, std::future::pending())
                .await?;
        }
    }
    Ok(())
}

async fn bind_and_announce() -> Result<TcpListener, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTEN {addr}")?;
    out.flush()?;
    Ok(listener)
}

/// The mesh's inbound layers as users get them from `Mesh::serve` (and `Mesh::layer`):
/// one observed future for the trace context and Istio's metrics, then authorization.
fn mesh_stack(mesh: &Mesh) -> ServiceBuilder<Stack<mesh_tower::MeshLayer, Identity>> {
    ServiceBuilder::new().layer(mesh.layer())
}

/// Serves `service` with hyper on every accepted connection (HTTP/1.1 or h2c, detected).
async fn serve_plain<S, B>(listener: TcpListener, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        example_common::set_nodelay(&tcp);
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// B's HTTP handler: read the request, answer 1 KiB.
async fn answer<B: http_body::Body>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    Ok(Response::new(Full::new(Bytes::from_static(&BODY))))
}

/// A's HTTP handler: forward the body to B, return B's body.
async fn relay_http<C, RB, B>(
    client: C,
    uri: Uri,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: http_body::Body<Data = Bytes>,
    C: Service<Request<Full<Bytes>>, Response = Response<RB>>,
    C::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes>,
{
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let Ok(upstream) = Request::post(uri).body(Full::new(body)) else {
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let resp = match client.oneshot(upstream).await {
        Ok(resp) if resp.status().is_success() => resp,
        Ok(resp) => {
            let why = resp.headers().get("x-mesh-error").cloned();
            log_failure(format_args!("B answered {} ({why:?})", resp.status()));
            return Ok(status(StatusCode::BAD_GATEWAY));
        }
        Err(err) => {
            log_failure(format_args!("no answer from B: {}", err.into()));
            return Ok(status(StatusCode::BAD_GATEWAY));
        }
    };
    match resp.into_body().collect().await {
        Ok(body) => Ok(Response::new(Full::new(body.to_bytes()))),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

/// Writes why a relayed request failed to stderr (the run's service log): each distinct
/// reason the first time, then at its 10th, 100th, 1,000th ... time (with the count).
fn log_failure(why: std::fmt::Arguments<'_>) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> =
        std::sync::Mutex::new(None);
    let why = why.to_string();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let n = seen
        .get_or_insert_with(Default::default)
        .entry(why.clone())
        .or_insert(0);
    *n += 1;
    let mut power_of_ten = 1;
    while power_of_ten < *n {
        power_of_ten *= 10;
    }
    if power_of_ten == *n {
        eprintln!("service-a: relay failed x{n}: {why}");
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

/// B's gRPC service: answers 1 KiB.
#[derive(Debug, Clone, Copy)]
struct Answer;

#[tonic::async_trait]
impl Echo for Answer {
    async fn exchange(
        &self,
        request: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        drop(request);
        Ok(tonic::Response::new(Payload {
            data: Bytes::from_static(&BODY),
        }))
    }
}

/// A's gRPC service: relays each call to B.
#[derive(Debug, Clone)]
struct Relay<T>(EchoClient<T>);

#[tonic::async_trait]
impl<T> Echo for Relay<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    T::Future: Send,
{
    async fn exchange(
        &self,
        request: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let mut client = self.0.clone();
        let answer = client.exchange(request.into_inner()).await?;
        Ok(tonic::Response::new(answer.into_inner()))
    }
}

/// Issues SVIDs for A and B from a fresh test CA into `dir/service-a` and
/// `dir/service-b` (`cert-chain.pem`, `key.pem`, `root-cert.pem`, as Istio names them).
pub fn write_certificates(dir: &Path) -> Result<(), BoxError> {
    let ca = mesh_tower::identity::testing::TestCa::new()?;
    for sa in ["service-a", "service-b"] {
        ca.svid("default", sa)?
            .write_istio_files(&dir.join(sa), &ca)?;
    }
    Ok(())
}

fn certificates(dir: &Path, service: &str) -> Result<CertificateSource, BoxError> {
    let dir = dir.join(service);
    Ok(CertificateSource::from_pem_files(
        &dir.join("cert-chain.pem"),
        &dir.join("key.pem"),
        &dir.join("root-cert.pem"),
    )?)
}

/// A's policy: plaintext inbound from the load generator (the edge), and a route
/// `service-b:80` -> cluster `service-b` at `upstream` with a timeout, retries, round
/// robin, the default breaker thresholds, outlier detection, and (with `mtls`) mTLS that
/// accepts only B's SPIFFE ID.
pub fn a_snapshot(
    mtls: bool,
    upstream: SocketAddr,
    protocol: Protocol,
) -> Result<Snapshot, BoxError> {
    a_snapshot_without(mtls, upstream, protocol, Without::default())
}

/// [`a_snapshot`] less the policies `without` names.
fn a_snapshot_without(
    mtls: bool,
    upstream: SocketAddr,
    protocol: Protocol,
    without: Without,
) -> Result<Snapshot, BoxError> {
    let mut cluster = Cluster::new("service-b");
    cluster.protocol = if protocol.is_h2() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    cluster.service = Some("service-b.default.svc.cluster.local".into());
    cluster.tls = mtls.then(|| UpstreamTls {
        sni: None,
        accepted_sans: vec![StringMatcher::exact(SPIFFE_B)],
        identity: Some(CertificateInstance::new("default", "default")),
        roots: Some(CertificateInstance::new("default", "ROOTCA")),
    });
    cluster.outlier_detection = (!without.outlier).then(OutlierConfig::new);
    let mut action = ForwardAction::to_cluster("service-b");
    action.timeout = (!without.timeout).then_some(Duration::from_secs(5));
    let retry_on = if protocol == Protocol::Grpc {
        "unavailable,reset,connect-failure"
    } else {
        "5xx,reset,connect-failure"
    };
    if !without.retry {
        action.retry_policy = Some(RetryPolicy::new(2, RetryOn::parse(retry_on)?));
    }
    let routes = RouteConfig::new(
        B_AUTHORITY,
        // As istiod writes a sidecar's (and a proxyless client's) virtual host: each
        // upstream request carries its attempt count.
        vec![VirtualHost::new(
            "service-b",
            vec![B_AUTHORITY.into(), "service-b".into()],
            vec![Route::new(
                "all",
                RouteMatch::default(),
                RouteAction::Forward(action),
            )],
        )
        .with_request_attempt_count(!without.attempt_count)],
    );
    let snapshot = Snapshot::builder()
        .listener(B_AUTHORITY, B_AUTHORITY)
        .route_config(routes)
        .cluster(cluster)
        .endpoints(ClusterLoadAssignment::from_endpoints(
            "service-b",
            vec![Endpoint::new(upstream)],
        ))
        .inbound_default(Some(InboundPolicy::new(TlsMode::Disable)))
        .build();
    Ok(snapshot)
}

/// A's mesh: [`a_snapshot`], with A's certificates from `certs` (none: no mTLS).
fn a_mesh(
    certs: Option<&Path>,
    upstream: SocketAddr,
    protocol: Protocol,
) -> Result<Mesh, BoxError> {
    let without = Without::from_env()?;
    let mut builder = Mesh::builder()
        .inbound_config(peer_limit())
        .snapshot(a_snapshot_without(
            certs.is_some(),
            upstream,
            protocol,
            without,
        )?)
        .workload(without.workload("service-a"));
    if let Some(dir) = certs {
        builder = builder.identity(certificates(dir, "service-a")?);
    }
    Ok(builder.build()?)
}

/// B's policy: STRICT mTLS inbound and an Istio `AuthorizationPolicy` allowing only A;
/// without `mtls`, plaintext inbound and no authorization rules (a principal needs mTLS).
pub fn b_snapshot(mtls: bool) -> Result<Snapshot, BoxError> {
    if !mtls {
        return Ok(Snapshot::builder()
            .inbound_default(Some(InboundPolicy::new(TlsMode::Disable)))
            .build());
    }
    let spec = serde_json::from_value(serde_json::json!({
        "selector": { "matchLabels": { "app": "service-b" } },
        "rules": [{
            "from": [{ "source": { "principals": [
                SPIFFE_A.trim_start_matches("spiffe://")
            ] } }],
        }]
    }))?;
    let policies = [AuthorizationPolicy::new(
        "service-b-access",
        "default",
        spec,
    )];
    let workload = Workload::new("default", [("app", "service-b")]);
    let authorization = to_authorization(&policies, &workload)?;
    Ok(Snapshot::builder()
        .inbound_default(Some(
            InboundPolicy::new(TlsMode::Strict).with_authorization(authorization),
        ))
        .build())
}

/// B's mesh: [`b_snapshot`], with B's certificates from `certs` (none: no mTLS).
fn b_mesh(certs: Option<&Path>) -> Result<Mesh, BoxError> {
    let mut builder = Mesh::builder()
        .inbound_config(peer_limit())
        .workload(Without::from_env()?.workload("service-b"))
        .snapshot(b_snapshot(certs.is_some())?);
    if let Some(dir) = certs {
        builder = builder.identity(certificates(dir, "service-b")?);
    }
    Ok(builder.build()?)
}

/// The inbound settings of the mesh services: the defaults, with the per-peer connection
/// limit from `E2E_PEER_LIMIT` when set (`E2E_PEER_LIMIT=1000`, below the client's 1,024
/// connections, shows the collapse the default of 4,096 avoids).
fn peer_limit() -> mesh_tower::inbound::InboundConfig {
    let c = mesh_tower::inbound::InboundConfig::default();
    match std::env::var("E2E_PEER_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => c.with_max_connections_per_peer(n),
        None => c,
    }
}

/// What a run of the mesh services leaves out, to measure what each part costs:
/// `E2E_WITHOUT`, a comma-separated list of `metadata` (Istio's metadata exchange: both
/// workloads unnamed), `retry`, `timeout`, `outlier` and `attempt-count` (A's route to B).
/// Unset or empty: nothing is left out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Without {
    /// No metadata-exchange headers (the workloads have no name).
    pub metadata: bool,
    /// No retry policy on A's route.
    pub retry: bool,
    /// No route timeout.
    pub timeout: bool,
    /// No outlier detection on B's cluster.
    pub outlier: bool,
    /// No `x-envoy-attempt-count` header.
    pub attempt_count: bool,
}

impl Without {
    /// From `E2E_WITHOUT`.
    pub fn from_env() -> Result<Self, BoxError> {
        Ok(Self::parse(
            &std::env::var("E2E_WITHOUT").unwrap_or_default(),
        )?)
    }

    /// From a comma-separated list; an unknown name is an error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut w = Self::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "metadata" => w.metadata = true,
                "retry" => w.retry = true,
                "timeout" => w.timeout = true,
                "outlier" => w.outlier = true,
                "attempt-count" => w.attempt_count = true,
                other => {
                    return Err(format!(
                        "E2E_WITHOUT: unknown part {other:?} (metadata, retry, timeout, outlier, attempt-count)"
                    ))
                }
            }
        }
        Ok(w)
    }

    /// The workload's labels: from the environment, or none without metadata.
    fn workload(self, name: &str) -> WorkloadLabels {
        if self.metadata {
            WorkloadLabels::unknown()
        } else {
            WorkloadLabels::from_env(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_reads_a_list_and_rejects_unknown_parts() {
        assert_eq!(Without::parse("").expect("empty"), Without::default());
        assert_eq!(
            Without::parse("metadata, retry,attempt-count").expect("three parts"),
            Without {
                metadata: true,
                retry: true,
                attempt_count: true,
                ..Without::default()
            }
        );
        let err = Without::parse("retry,tracing").expect_err("tracing is not a part");
        assert!(err.contains("\"tracing\""), "{err}");
    }
}
