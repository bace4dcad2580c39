//! Istio metrics for an inbound (mTLS) and an outbound request, the admin server's pages,
//! and `promtool check metrics` on `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Endpoint, UpstreamProtocol};
use mesh_core::inbound::TlsMode;
use mesh_core::route::{
    ClusterSpecifier, ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
    WeightedCluster, WeightedClusters,
};
use mesh_core::Snapshot;
use mesh_tower::admin::AdminServer;
use mesh_tower::metrics::{
    MetricsLayer, WorkloadLabels, PEER_DIRECT, PEER_METADATA, PEER_METADATA_ID,
};
use mesh_tower::trace::TraceLayer;
use mesh_tower::Mesh;
use tower::ServiceBuilder;

fn backend() -> Router {
    Router::new().route("/pay", get(|| async { "paid" })).route(
        "/fail",
        get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no") }),
    )
}

/// `payment.default.svc.cluster.local:8080` split 90/10 over two clusters, both at `addr`.
fn policy(addr: std::net::SocketAddr) -> Snapshot {
    let target = "payment.default.svc.cluster.local:8080";
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("payment-v1", 90),
        WeightedCluster::new("payment-v2", 10),
    ])
    .unwrap();
    let rc = RouteConfig::new(
        target,
        vec![VirtualHost::new(
            "vh",
            vec!["*".into()],
            vec![Route::new(
                "r",
                RouteMatch::default(),
                RouteAction::Forward(ForwardAction::new(ClusterSpecifier::Weighted(split))),
            )],
        )],
    );
    let mut b = Snapshot::builder()
        .listener(target, target)
        .route_config(rc);
    for name in ["payment-v1", "payment-v2"] {
        b = b
            .cluster(Cluster::new(name))
            .endpoints(ClusterLoadAssignment::from_endpoints(
                name,
                vec![Endpoint::new(addr)],
            ));
    }
    b.build()
}

/// A mesh for the workload `labels` names, with no policy.
fn mesh_of(labels: WorkloadLabels) -> Mesh {
    Mesh::builder().workload(labels).build().unwrap()
}

fn line<'a>(text: &'a str, prefix: &str, must: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix) && must.iter().all(|m| l.contains(m)))
}

/// `app` served in plaintext with `mesh`'s metrics layer.
async fn serve_metered(app: Router, mesh: &Mesh) -> common::Server {
    common::start(
        common::policy(TlsMode::Disable),
        None,
        app.layer(MetricsLayer::new(mesh.metrics().clone())),
    )
    .await
}

async fn fetch(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String, String) {
    let mut conn = common::connect(addr, None).await.unwrap();
    let resp = conn
        .send(
            Request::get(path)
                .header("host", "admin")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (resp.status(), ct, resp.into_body())
}

#[tokio::test]
async fn inbound_and_outbound_labels_admin_pages_and_promtool() {
    let certs = common::mesh();
    // The payment workload: STRICT mTLS, metrics by MetricsLayer.
    let payment_mesh = mesh_of(
        WorkloadLabels::named("payment")
            .with_namespace("default")
            .with_version("v1")
            .with_principal(common::PAYMENT)
            .with_service("payment.default.svc.cluster.local"),
    );
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new(payment_mesh.metrics().clone()));
    let payment_metrics = payment_mesh.metrics().clone();
    let payment = common::start_with(
        common::policy(TlsMode::Strict),
        Some(certs.payment.clone()),
        backend().layer(layers),
        |l| l.with_metrics(payment_metrics),
    )
    .await;
    let tls = common::client_tls(&certs.payment, Some(&certs.order));
    let mut conn = common::connect(payment.addr, Some(tls)).await.unwrap();
    let (status, _) = conn.get("/pay").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let inbound = payment_mesh.metrics().render();
    let l = line(
        &inbound,
        "istio_requests_total{",
        &["reporter=\"destination\""],
    )
    .unwrap_or_default();
    for label in [
        "source_principal=\"spiffe://cluster.local/ns/default/sa/order-service\"",
        "source_workload_namespace=\"default\"",
        "destination_workload=\"payment\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/payment-service\"",
        "destination_version=\"v1\"",
        "destination_service=\"payment.default.svc.cluster.local\"",
        "destination_service_name=\"payment\"",
        "destination_service_namespace=\"default\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(l.contains(label), "{label} not in {l}");
    }
    assert!(l.ends_with(" 1"), "{l}");
    assert!(
        line(
            &inbound,
            "istio_response_bytes_sum{",
            &["reporter=\"destination\""]
        )
        .is_some_and(|l| l.ends_with(" 4")),
        "\"paid\" is 4 bytes"
    );
    // The connection is counted open with the caller's identity, and closed once dropped.
    let tcp = |text: &str, family: &str| {
        line(
            text,
            family,
            &[
                "reporter=\"destination\"",
                "source_principal=\"spiffe://cluster.local/ns/default/sa/order-service\"",
                "connection_security_policy=\"mutual_tls\"",
                "request_protocol=\"tcp\"",
            ],
        )
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(
        tcp(&inbound, "istio_tcp_connections_opened_total{").as_deref(),
        Some("1"),
        "{inbound}"
    );
    drop(conn);
    let mut closed = None;
    for _ in 0..200 {
        closed = tcp(
            &payment_mesh.metrics().render(),
            "istio_tcp_connections_closed_total{",
        );
        if closed.as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        closed.as_deref(),
        Some("1"),
        "the closed connection is counted"
    );

    // The order workload calls a plaintext backend through the mesh client.
    let plain = common::start(common::policy(TlsMode::Disable), None, backend()).await;
    let order_mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order").with_namespace("default"))
        .snapshot(policy(plain.addr))
        .build()
        .unwrap();
    let client = order_mesh.http_client::<Empty<Bytes>>();
    for path in ["/pay", "/fail"] {
        let req = Request::get(format!(
            "http://payment.default.svc.cluster.local:8080{path}"
        ))
        .body(Empty::new())
        .unwrap();
        let resp = tower::ServiceExt::oneshot(client.clone(), req)
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap();
    }
    let ok_line = |text: &str| -> String {
        line(
            text,
            "istio_requests_total{",
            &["reporter=\"source\"", "response_code=\"200\""],
        )
        .unwrap_or_default()
        .to_owned()
    };
    let outbound = order_mesh.metrics().render();
    let ok = ok_line(&outbound);
    for label in [
        "source_workload=\"order\"",
        "source_workload_namespace=\"default\"",
        "source_app=\"order\"",
        "destination_service=\"payment.default.svc.cluster.local\"",
        "destination_service_name=\"payment\"",
        "destination_service_namespace=\"default\"",
        "destination_principal=\"unknown\"",
        "connection_security_policy=\"unknown\"",
        "request_protocol=\"http\"",
    ] {
        assert!(ok.contains(label), "{label} not in {ok}");
    }
    assert!(line(
        &outbound,
        "istio_requests_total{",
        &["reporter=\"source\"", "response_code=\"503\""]
    )
    .is_some());
    // A client bound to the target (a tonic channel) labels its calls the same: one series.
    let channel = order_mesh.channel::<Empty<Bytes>>("payment.default.svc.cluster.local:8080");
    let req = Request::get("http://payment.default.svc.cluster.local:8080/pay")
        .body(Empty::new())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(channel, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let outbound = order_mesh.metrics().render();
    let ok = ok_line(&outbound);
    assert!(
        ok.contains("destination_service=\"payment.default.svc.cluster.local\"")
            && ok.ends_with(" 2"),
        "{outbound}"
    );
    // Both requests went over connections the mesh client opened and counted.
    let opened = line(
        &outbound,
        "istio_tcp_connections_opened_total{",
        &["reporter=\"source\"", "source_workload=\"order\""],
    )
    .and_then(|l| l.rsplit(' ').next())
    .and_then(|n| n.parse::<u64>().ok())
    .unwrap_or(0);
    assert!(opened >= 1, "{outbound}");

    // The admin server.
    let admin = AdminServer::new(order_mesh.clone())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (s, ct, metrics) = fetch(admin.local_addr(), "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/plain"));
    assert!(metrics.contains("istio_requests_total{reporter=\"source\""));
    assert!(metrics.contains("mesh_cluster_endpoints{"));
    let (s, ct, dump) = fetch(admin.local_addr(), "/config_dump").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    for key in [
        "listeners",
        "route_configs",
        "clusters",
        "endpoints",
        "xds",
        "version",
    ] {
        assert!(dump.get(key).is_some(), "config_dump lacks {key}");
    }
    let (s, _, clusters) = fetch(admin.local_addr(), "/clusters").await;
    assert_eq!(s, StatusCode::OK);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let first = &clusters[0];
    assert_eq!(first["name"], "payment-v1", "{clusters}");
    assert_eq!(first["endpoints"][0]["healthy"], true);
    assert!(first["circuit_breakers"]
        .as_array()
        .is_some_and(|a| a.len() == 4));
    let (s, _, ready) = fetch(admin.local_addr(), "/ready").await;
    assert_eq!((s, ready.as_str()), (StatusCode::OK, "ready\n"));
    let (s, ct, page) = fetch(admin.local_addr(), "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/html"));
    assert!(page.contains("<h2>Routes</h2>") && page.contains("<h2>Clusters</h2>"));
    assert!(
        page.contains("payment-v1 (90)") && page.contains("payment-v2 (10)"),
        "{page}"
    );
    assert!(
        page.contains("payment.default.svc.cluster.local"),
        "the request table names the service"
    );
    assert_eq!(
        fetch(admin.local_addr(), "/nope").await.0,
        StatusCode::NOT_FOUND
    );

    promtool_check(&metrics);
    promtool_check(&inbound);
}

/// `promtool check metrics` must parse the exposition; its only lint complaints may be
/// the ones Istio's own names cause (`_milliseconds` is not a base unit).
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!(
            "NOTICE: promtool not installed (Debian package `prometheus`); skipping the check"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("istio_request_duration_milliseconds"))
        .collect();
    assert!(unexpected.is_empty(), "promtool: {report}");
    if !out.status.success() {
        assert!(
            report.contains("_milliseconds"),
            "promtool failed: {report}"
        );
    }
}

/// Istio's metadata exchange between two meshes: the caller's outbound metrics name the
/// destination workload, the server's inbound metrics name the source workload, and the
/// application sees neither header.
#[tokio::test]
async fn metadata_exchange_labels_both_sides_with_the_peer_workload() {
    let payment_mesh = mesh_of(
        WorkloadLabels::named("payment")
            .with_namespace("shop")
            .with_version("v2"),
    );
    let app = Router::new().route(
        "/pay",
        get(|headers: http::HeaderMap| async move {
            if headers.contains_key("x-envoy-peer-metadata")
                || headers.contains_key("x-envoy-peer-metadata-id")
            {
                "leaked"
            } else {
                "clean"
            }
        }),
    );
    let payment = serve_metered(app, &payment_mesh).await;
    let order_mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order").with_namespace("web"))
        .snapshot(policy(payment.addr))
        .build()
        .unwrap();
    let client = order_mesh.http_client::<Empty<Bytes>>();
    let req = Request::get("http://payment.default.svc.cluster.local:8080/pay")
        .body(Empty::new())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(client, req).await.unwrap();
    assert!(!resp.headers().contains_key("x-envoy-peer-metadata"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        b"clean",
        "the application saw the exchange headers"
    );

    let inbound = payment_mesh.metrics().render();
    let l = line(
        &inbound,
        "istio_requests_total{",
        &["reporter=\"destination\""],
    )
    .unwrap_or_default();
    for label in [
        "source_workload=\"order\"",
        "source_workload_namespace=\"web\"",
        "source_app=\"order\"",
        "source_canonical_service=\"order\"",
        "destination_workload=\"payment\"",
    ] {
        assert!(l.contains(label), "{label} not in {l}");
    }
    let outbound = order_mesh.metrics().render();
    let l = line(&outbound, "istio_requests_total{", &["reporter=\"source\""]).unwrap_or_default();
    for label in [
        "source_workload=\"order\"",
        "destination_workload=\"payment\"",
        "destination_workload_namespace=\"shop\"",
        "destination_app=\"payment\"",
        "destination_version=\"v2\"",
        "destination_canonical_service=\"payment\"",
    ] {
        assert!(l.contains(label), "{label} not in {l}");
    }
    promtool_check(&inbound);
    promtool_check(&outbound);
}

/// The server answers with its metadata only a caller that sent either exchange header
/// (as Istio's sidecars do): a plain caller gets none, one that sent only the node id
/// gets it.
#[tokio::test]
async fn metadata_exchange_answers_only_a_caller_that_took_part() {
    let payment_mesh = mesh_of(WorkloadLabels::named("payment"));
    let app = Router::new().route("/pay", get(|| async { "ok" }));
    let payment = serve_metered(app, &payment_mesh).await;
    for (sent, answered) in [(None, false), (Some("x-envoy-peer-metadata-id"), true)] {
        let mut conn = common::connect(payment.addr, None).await.unwrap();
        let mut req = Request::get("/pay").header("host", "payment");
        if let Some(name) = sent {
            req = req.header(name, "sidecar~10.0.0.1~order-1.web~web.svc.cluster.local");
        }
        let resp = conn
            .send(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().contains_key("x-envoy-peer-metadata"),
            answered,
            "sent {sent:?}"
        );
    }
}

/// What a server's edge saw of the metadata exchange, before its metrics layer: requests
/// that carried the caller's metadata, responses that carried the server's, and requests
/// that carried no exchange header at all.
#[derive(Default)]
struct Carried {
    requests: std::sync::atomic::AtomicUsize,
    responses: std::sync::atomic::AtomicUsize,
    silent: std::sync::atomic::AtomicUsize,
}

/// `payment` with its metrics layer, behind an edge that counts what carried metadata.
async fn serve_counting(mesh: &Mesh) -> (common::Server, std::sync::Arc<Carried>) {
    use std::sync::atomic::Ordering::Relaxed;
    let carried = std::sync::Arc::new(Carried::default());
    let app = Router::new()
        .route(
            "/pay",
            get(|headers: http::HeaderMap| async move {
                let leaked = [PEER_METADATA, PEER_METADATA_ID, PEER_DIRECT]
                    .iter()
                    .any(|name| headers.contains_key(name));
                if leaked {
                    "leaked"
                } else {
                    "paid"
                }
            }),
        )
        .layer(MetricsLayer::new(mesh.metrics().clone()))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::clone(&carried),
            |axum::extract::State(carried): axum::extract::State<std::sync::Arc<Carried>>,
             req: axum::extract::Request,
             next: axum::middleware::Next| async move {
                if req.headers().contains_key(PEER_METADATA) {
                    carried.requests.fetch_add(1, Relaxed);
                }
                if [PEER_METADATA, PEER_METADATA_ID, PEER_DIRECT]
                    .iter()
                    .all(|name| !req.headers().contains_key(name))
                {
                    carried.silent.fetch_add(1, Relaxed);
                }
                let resp = next.run(req).await;
                if resp.headers().contains_key(PEER_METADATA) {
                    carried.responses.fetch_add(1, Relaxed);
                }
                resp
            },
        ));
    let server = common::start(common::policy(TlsMode::Disable), None, app).await;
    (server, carried)
}

/// `payment.shop:8080` to one cluster of one endpoint at `addr`.
fn one_endpoint(addr: std::net::SocketAddr, protocol: UpstreamProtocol) -> Snapshot {
    let mut cluster = Cluster::new("payment");
    cluster.protocol = protocol;
    support::route(
        Snapshot::builder(),
        "payment.shop:8080",
        ForwardAction::to_cluster("payment"),
    )
    .cluster(cluster)
    .endpoints(ClusterLoadAssignment::from_endpoints(
        "payment",
        vec![Endpoint::new(addr)],
    ))
    .build()
}

/// A TCP relay to `to`, as an L4 proxy in between is: the server sees the relay's address
/// and the client dialed the relay's.
async fn relay(to: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// One call to `serve_counting`'s `/pay`: answered, and no exchange header reached either
/// application.
async fn pay(client: &mesh_tower::outbound::HttpClient<Empty<Bytes>>, uri: &str) {
    let req = Request::get(uri).body(Empty::new()).unwrap();
    let resp = tower::ServiceExt::oneshot(client.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for name in [PEER_METADATA, PEER_METADATA_ID, PEER_DIRECT] {
        assert!(
            !resp.headers().contains_key(&name),
            "{name} reached the caller"
        );
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"paid", "the application saw an exchange header");
}

/// What [`calls`] found: requests and responses that carried metadata at payment's edge,
/// requests that carried no exchange header, and both sides' request counts labelled with
/// the peer's workload.
struct Called {
    requests: usize,
    responses: usize,
    silent: usize,
    inbound: String,
    outbound: String,
}

/// Calls from `order` to `payment` (through a relay when asked): `together` at once, then
/// `after` one by one.
async fn calls(
    protocol: UpstreamProtocol,
    through_relay: bool,
    together: usize,
    after: usize,
) -> Called {
    use std::sync::atomic::Ordering::Relaxed;
    let payment_mesh = mesh_of(WorkloadLabels::named("payment").with_namespace("shop"));
    let (payment, carried) = serve_counting(&payment_mesh).await;
    let dialed = if through_relay {
        relay(payment.addr).await
    } else {
        payment.addr
    };
    let order_mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order").with_namespace("web"))
        .snapshot(one_endpoint(dialed, protocol))
        .build()
        .unwrap();
    let client = order_mesh.http_client::<Empty<Bytes>>();
    let uri = "http://payment.shop:8080/pay";
    futures_util::future::join_all((0..together).map(|_| pay(&client, uri))).await;
    for _ in 0..after {
        pay(&client, uri).await;
    }
    let inbound = payment_mesh.metrics().render();
    let outbound = order_mesh.metrics().render();
    let labelled = |text: &str, reporter: &str, label: &str| {
        line(text, "istio_requests_total{", &[reporter, label])
            .unwrap_or_default()
            .to_owned()
    };
    Called {
        requests: carried.requests.load(Relaxed),
        responses: carried.responses.load(Relaxed),
        silent: carried.silent.load(Relaxed),
        inbound: labelled(
            &inbound,
            "reporter=\"destination\"",
            "source_workload=\"order\"",
        ),
        outbound: labelled(
            &outbound,
            "reporter=\"source\"",
            "destination_workload=\"payment\"",
        ),
    }
}

/// Between two mesh services the metadata exchange goes once per connection: the first
/// request and its response carry it, the second request says only that the caller
/// remembers, the rest carry no exchange header at all, and every request on the
/// connection is labelled with the peer's workload on both sides all the same. HTTP/1.1
/// and HTTP/2.
#[tokio::test]
async fn metadata_exchange_goes_once_per_connection_between_mesh_services() {
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::Http2] {
        let c = calls(protocol, false, 0, 6).await;
        assert_eq!((c.requests, c.responses), (1, 1), "{protocol:?}");
        assert_eq!(c.silent, 4, "{protocol:?}");
        assert!(c.inbound.ends_with(" 6"), "{protocol:?}: {}", c.inbound);
        assert!(c.outbound.ends_with(" 6"), "{protocol:?}: {}", c.outbound);
        assert!(
            c.inbound.contains("source_workload_namespace=\"web\""),
            "{}",
            c.inbound
        );
        assert!(
            c.outbound
                .contains("destination_workload_namespace=\"shop\""),
            "{}",
            c.outbound
        );
    }
}

/// HTTP/2 calls made at once before the connection settles each carry metadata (none yet
/// knows the server remembers), and every call is labelled on both sides, those before and
/// after the settle alike (the last two, at least, with no exchange header).
#[tokio::test]
async fn concurrent_first_calls_on_http2_are_all_labelled() {
    let c = calls(UpstreamProtocol::Http2, false, 5, 3).await;
    assert!(
        (1..=5).contains(&c.requests),
        "{} requests carried metadata",
        c.requests
    );
    assert_eq!(c.requests, c.responses);
    assert!((2..=7).contains(&c.silent), "{} carried nothing", c.silent);
    assert!(c.inbound.ends_with(" 8"), "{}", c.inbound);
    assert!(c.outbound.ends_with(" 8"), "{}", c.outbound);
}

/// A target outside the policy (dialed by DNS) does not take part: the caller sends it
/// none of its metadata, on any request.
#[tokio::test]
async fn a_target_outside_the_policy_gets_no_metadata() {
    use std::sync::atomic::Ordering::Relaxed;
    let payment_mesh = mesh_of(WorkloadLabels::named("payment"));
    let (payment, carried) = serve_counting(&payment_mesh).await;
    let order_mesh = mesh_of(WorkloadLabels::named("order"));
    let client = order_mesh.http_client::<Empty<Bytes>>();
    let uri = format!("http://localhost:{}/pay", payment.addr.port());
    for _ in 0..3 {
        pay(&client, &uri).await;
    }
    assert_eq!(carried.requests.load(Relaxed), 0);
    assert_eq!(carried.responses.load(Relaxed), 0);
}

/// Through a proxy in between (here an L4 relay: the addresses each end sees differ from
/// those the other says), the exchange goes on every request, as with Envoy's sidecars.
#[tokio::test]
async fn metadata_exchange_goes_on_every_request_through_a_proxy() {
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::Http2] {
        let c = calls(protocol, true, 0, 6).await;
        assert_eq!(
            (c.requests, c.responses, c.silent),
            (6, 6, 0),
            "{protocol:?}"
        );
        assert!(c.inbound.ends_with(" 6"), "{protocol:?}: {}", c.inbound);
        assert!(c.outbound.ends_with(" 6"), "{protocol:?}: {}", c.outbound);
    }
}

/// The server's side of the once-per-connection exchange, driven by a plain hyper client:
/// it remembers the caller only when `x-mesh-peer-direct` names its own address, says so
/// with the caller's address, and labels a later request that carries that header alone
/// with what the connection remembers, answering nothing. A request with neither header
/// stays `unknown` (a proxy that dialed the server may carry other callers' requests)
/// until the caller has said it remembers, and is the caller's after. A new connection
/// remembers nothing.
#[tokio::test]
async fn the_server_remembers_a_caller_only_on_a_direct_connection() {
    use base64::Engine as _;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
    use prost::Message as _;
    let payment_mesh = mesh_of(WorkloadLabels::named("payment"));
    let (payment, _) = serve_counting(&payment_mesh).await;
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let metadata = base64::engine::general_purpose::STANDARD.encode(
        Struct {
            fields: [
                ("NAME".to_owned(), text("order")),
                ("NAMESPACE".to_owned(), text("web")),
            ]
            .into_iter()
            .collect(),
        }
        .encode_to_vec(),
    );
    let get = |direct: Option<String>, with_metadata: bool| {
        let mut req = Request::get("/pay").header("host", "payment");
        if with_metadata {
            req = req.header(PEER_METADATA, metadata.as_str()).header(
                PEER_METADATA_ID,
                "proxyless~0.0.0.0~order.web~web.svc.cluster.local",
            );
        }
        if let Some(direct) = direct {
            req = req.header(PEER_DIRECT, direct);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    let said = |resp: &http::Response<String>| {
        (
            resp.headers().contains_key(PEER_METADATA),
            resp.headers()
                .get(PEER_DIRECT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )
    };

    // Another address than the server's: answered, not remembered.
    let mut conn = common::connect(payment.addr, None).await.unwrap();
    let resp = conn
        .send(get(Some("10.1.2.3:8080".into()), true))
        .await
        .unwrap();
    assert_eq!(said(&resp), (true, None));
    let resp = conn.send(get(None, false)).await.unwrap();
    assert_eq!(said(&resp), (false, None));

    // The server's own: remembered, and the caller's address said back.
    let mut conn = common::connect(payment.addr, None).await.unwrap();
    let resp = conn
        .send(get(Some(payment.addr.to_string()), true))
        .await
        .unwrap();
    assert_eq!(said(&resp), (true, Some(conn.local.to_string())));
    // Neither header: another caller's, for all the server knows yet.
    let resp = conn.send(get(None, false)).await.unwrap();
    assert_eq!(said(&resp), (false, None));
    // A caller that says it remembers ours (the header alone) gets nothing back.
    for _ in 0..2 {
        let resp = conn
            .send(get(Some(payment.addr.to_string()), false))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(said(&resp), (false, None));
    }
    // Neither header, now: the caller's (it found its own address in the answer, so
    // nothing stands between the two).
    let resp = conn.send(get(None, false)).await.unwrap();
    assert_eq!(said(&resp), (false, None));

    // A new connection remembers nothing, and saying it remembers there changes nothing.
    let mut fresh = common::connect(payment.addr, None).await.unwrap();
    let resp = fresh
        .send(get(Some(payment.addr.to_string()), false))
        .await
        .unwrap();
    assert_eq!(said(&resp), (false, None));
    let resp = fresh.send(get(None, false)).await.unwrap();
    assert_eq!(said(&resp), (false, None));

    // Labelled `order`: the two requests with metadata, the two that said they remember
    // and the one after them; `unknown`: the four others.
    let inbound = payment_mesh.metrics().render();
    let order = line(
        &inbound,
        "istio_requests_total{",
        &["source_workload=\"order\""],
    )
    .unwrap_or_default();
    assert!(order.ends_with(" 5"), "{inbound}");
    let unknown = line(
        &inbound,
        "istio_requests_total{",
        &["source_workload=\"unknown\""],
    )
    .unwrap_or_default();
    assert!(unknown.ends_with(" 4"), "{inbound}");
}

/// A request body without a length (as every gRPC and streaming request has) is counted as
/// it is sent and read: both sides record its size.
#[tokio::test]
async fn request_bytes_of_a_body_without_length_are_counted() {
    let server_mesh = mesh_of(WorkloadLabels::named("payment"));
    let app = Router::new().route(
        "/pay",
        axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
    );
    let payment = serve_metered(app, &server_mesh).await;
    let client_mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order"))
        .snapshot(policy(payment.addr))
        .build()
        .unwrap();
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..3)
        .map(|_| Ok(http_body::Frame::data(Bytes::from_static(&[b'x'; 700]))))
        .collect();
    let body = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
    assert_eq!(http_body::Body::size_hint(&body).exact(), None);
    let req = Request::post("http://payment.default.svc.cluster.local:8080/pay")
        .body(body)
        .unwrap();
    let client = client_mesh.http_client();
    let resp = tower::ServiceExt::oneshot(client, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], b"2100");
    for (side, text) in [
        ("destination", server_mesh.metrics().render()),
        ("source", client_mesh.metrics().render()),
    ] {
        let sum = line(
            &text,
            "istio_request_bytes_sum{",
            &[&format!("reporter=\"{side}\"")],
        )
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
        assert_eq!(sum, Some(2100.0), "{side}: {text}");
    }
}

/// The application's own metrics, registered into the mesh's registry, are on the admin
/// server's `/metrics` (and on `/stats/prometheus`, Envoy's path for the same text) after
/// the mesh's, and the whole exposition still passes `promtool check metrics`.
#[tokio::test]
async fn application_metrics_join_the_admin_metrics() {
    use mesh_tower::metrics::prometheus_client::encoding::EncodeLabelSet;
    use mesh_tower::metrics::prometheus_client::metrics::counter::Counter;
    use mesh_tower::metrics::prometheus_client::metrics::family::Family;
    use mesh_tower::metrics::prometheus_client::metrics::gauge::Gauge;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Outcome {
        outcome: String,
    }

    let plain = common::start(common::policy(TlsMode::Disable), None, backend()).await;
    let mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order").with_namespace("default"))
        .snapshot(policy(plain.addr))
        .build()
        .unwrap();
    let placed: Counter = Counter::default();
    let by_outcome = Family::<Outcome, Counter>::default();
    let queue: Gauge = Gauge::default();
    mesh.metrics().register_app_metrics(|registry| {
        registry.register("orders_placed", "Orders placed", placed.clone());
        registry.register(
            "orders_by_outcome",
            "Orders by how they ended",
            by_outcome.clone(),
        );
        registry.register("order_queue_depth", "Orders waiting", queue.clone());
    });

    // The mesh records a call; the application counts its own things.
    let client = mesh.http_client::<Empty<Bytes>>();
    let req = Request::get("http://payment.default.svc.cluster.local:8080/pay")
        .body(Empty::new())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(client, req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    for _ in 0..3 {
        placed.inc();
    }
    by_outcome
        .get_or_create(&Outcome {
            outcome: "paid".into(),
        })
        .inc();
    queue.set(7);

    let admin = AdminServer::new(mesh.clone())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (s, ct, metrics) = fetch(admin.local_addr(), "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    for sample in [
        "\norders_placed_total 3\n",
        "\norders_by_outcome_total{outcome=\"paid\"} 1\n",
        "\norder_queue_depth 7\n",
        "\n# TYPE orders_placed_total counter\n",
    ] {
        assert!(metrics.contains(sample), "{sample:?} not in {metrics}");
    }
    // After the mesh's own families.
    let mesh_at = metrics.find("istio_requests_total{").unwrap();
    let app_at = metrics.find("orders_placed_total 3").unwrap();
    assert!(mesh_at < app_at);

    let (s, ct, stats) = fetch(admin.local_addr(), "/stats/prometheus").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let families = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(families(&stats), families(&metrics));
    assert!(stats.contains("\norders_placed_total 3\n"));
    promtool_check(&metrics);
}

/// The metric names and label names a PromQL query uses: `istio_*` names, the label
/// names of its `{...}` selectors, and of its `by (...)` clauses (`le` included). With
/// the fixed `reporter="..."` value of each selector.
fn query_parts(expr: &str) -> Vec<(String, Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("istio_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        let mut reporter = None;
        if let Some(sel) = tail[end..].strip_prefix('{') {
            let sel = &sel[..sel.find('}').unwrap()];
            for matcher in sel.split(',') {
                let matcher = matcher.trim();
                let at = matcher.find(['=', '!']).unwrap();
                let label = matcher[..at].trim().to_owned();
                if label == "reporter" {
                    reporter = Some(
                        matcher[at..]
                            .trim_start_matches('=')
                            .trim_matches('"')
                            .to_owned(),
                    );
                }
                labels.push(label);
            }
        }
        out.push((name, labels, reporter));
        rest = &tail[end..];
    }
    // `by (a, b)` applies to the metrics of the aggregation; checked against each.
    let mut by = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let tail = &rest[i + 4..];
        let list = &tail[..tail.find(')').unwrap()];
        by.extend(list.split(',').map(|l| l.trim().to_owned()));
        rest = tail;
    }
    for (_, labels, _) in &mut out {
        labels.extend(by.iter().cloned());
    }
    out
}

/// Every query of `examples/grafana/mesh-dashboard.json` against a real scrape of both
/// sides of a call: each metric it names is exported, with every label it selects or
/// groups by, under the reporter it asks for.
#[tokio::test]
async fn the_grafana_dashboard_queries_match_a_real_scrape() {
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/grafana/mesh-dashboard.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 4, "{exprs:?}");

    // payment, served by the mesh (listener + MeshLayer), called by order's mesh client.
    let payment_mesh = mesh_of(WorkloadLabels::named("payment").with_namespace("shop"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/pay", get(|| async { "paid" }));
    let serving = payment_mesh.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(listener, app, std::future::pending())
            .await
            .unwrap();
    });
    let order_mesh = Mesh::builder()
        .workload(WorkloadLabels::named("order").with_namespace("web"))
        .snapshot(policy(addr))
        .build()
        .unwrap();
    for _ in 0..3 {
        let req = Request::get("http://payment.default.svc.cluster.local:8080/pay")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(order_mesh.http_client::<Empty<Bytes>>(), req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    // Both sides' series are in their registries once the response is read.
    let scrape = format!(
        "{}{}",
        payment_mesh.metrics().render(),
        order_mesh.metrics().render()
    );

    for expr in &exprs {
        for (metric, labels, reporter) in query_parts(expr) {
            let series: Vec<&str> = scrape
                .lines()
                .filter(|l| l.starts_with(&format!("{metric}{{")))
                .filter(|l| {
                    reporter
                        .as_deref()
                        .is_none_or(|r| l.contains(&format!("reporter=\"{r}\"")))
                })
                .collect();
            assert!(
                !series.is_empty(),
                "{metric} (reporter {reporter:?}) is not exported; query: {expr}"
            );
            for label in labels {
                assert!(
                    series.iter().any(|l| l.contains(&format!("{label}=\""))),
                    "{metric} has no label {label}; query: {expr}"
                );
            }
        }
    }
    server.abort();
}
