//! Readiness as Kubernetes and gRPC clients see it: the admin server's `/healthz/ready`
//! (probed as the kubelet does, an HTTP/1.1 GET on the admin port) and
//! `grpc.health.v1.Health` say not ready while a real ADS server has not sent the
//! listener's policy (gRFC A36), ready once it has, and not ready again from shutdown on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use mesh_tower::admin::AdminServer;
use mesh_tower::health::pb::health_check_response::ServingStatus as Wire;
use mesh_tower::health::pb::health_client::HealthClient;
use mesh_tower::health::pb::HealthCheckRequest;
use mesh_tower::health::ServingStatus;
use mesh_tower::Mesh;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::inbound_listener_plaintext;
use mesh_xds_client::testing::TestAdsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// What the kubelet does for an `httpGet` probe: one HTTP/1.1 request on a new connection,
/// its own user agent, `Connection: close`; success is a status in 200..400.
async fn kube_probe(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, body.to_owned())
}

fn bootstrap(server: &TestAdsServer, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-ready-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = server.addr().unwrap();
    let path = dir.join("bootstrap.json");
    std::fs::write(
        &path,
        format!(
            r#"{{
  "xds_servers": [{{ "server_uri": "{addr}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"] }}],
  "node": {{ "id": "sidecar~127.0.0.1~pay.default~default.svc.cluster.local", "metadata": {{ "GENERATOR": "grpc" }} }},
  "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
}}"#
        ),
    )
    .unwrap();
    path
}

async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

async fn next_status(
    watch: &mut tonic::Streaming<mesh_tower::health::pb::HealthCheckResponse>,
) -> i32 {
    watch.message().await.unwrap().expect("a status").status
}

#[tokio::test]
async fn not_ready_until_the_control_plane_sends_the_listener_then_not_ready_on_shutdown() {
    let server = TestAdsServer::start().await.unwrap();
    let bootstrap_path = bootstrap(&server, "a36");
    let mesh = Mesh::builder().bootstrap(&bootstrap_path).build().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = tcp.local_addr().unwrap();

    // A tonic application serving the health service next to its own.
    mesh.health()
        .set_status("shop.Payments", ServingStatus::Serving);
    let routes = tonic::service::Routes::new(mesh.health_service());
    let listener = mesh.listener(tcp);
    let admin = AdminServer::new(mesh.clone())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listener.serve(routes, async {
        let _ = stopped.await;
    }));

    // The control plane is up but has not sent the listener: not ready, and saying why.
    let (status, body) = kube_probe(admin.local_addr(), "/healthz/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    assert!(
        body.contains(&format!("listener {local}: waiting for its inbound policy")),
        "{body}"
    );
    assert!(body.contains("waiting for the first policy"), "{body}");
    assert_eq!(kube_probe(admin.local_addr(), "/ready").await.0, 503);
    // Liveness is not readiness: the process is alive.
    assert_eq!(
        kube_probe(admin.local_addr(), "/healthz").await,
        (200, "live\n".to_owned())
    );
    // gRPC health on the admin port (the application's port holds connections back).
    let mut admin_health = health_client(admin.local_addr()).await;
    let overall = admin_health.check(check("")).await.unwrap().into_inner();
    assert_eq!(overall.status, Wire::NotServing as i32);
    let app = admin_health
        .check(check("shop.Payments"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.status, Wire::NotServing as i32);
    let mut watch = admin_health.watch(check("")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut watch).await, Wire::NotServing as i32);

    // The listener's policy arrives: the listener serves, the workload is ready.
    server.put(
        XdsType::Listener,
        &format!("xds.istio.io/grpc/lds/inbound/{local}"),
        inbound_listener_plaintext(local),
    );
    assert_eq!(next_status(&mut watch).await, Wire::Serving as i32);
    assert_eq!(
        kube_probe(admin.local_addr(), "/healthz/ready").await,
        (200, "ready\n".to_owned())
    );
    assert_eq!(kube_probe(admin.local_addr(), "/ready").await.0, 200);
    // The application's port now serves the health service too.
    let mut app_health = health_client(local).await;
    let overall = app_health.check(check("")).await.unwrap().into_inner();
    assert_eq!(overall.status, Wire::Serving as i32);
    let app = app_health
        .check(check("shop.Payments"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.status, Wire::Serving as i32);
    let unknown = app_health.check(check("shop.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut app_watch = app_health
        .watch(check("shop.Payments"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut app_watch).await, Wire::Serving as i32);

    // Shutdown: NOT_SERVING to every watcher, the watch on the application's port ends
    // (so it does not hold the graceful shutdown), the probe fails, the listener returns.
    stop.send(()).unwrap();
    assert_eq!(next_status(&mut app_watch).await, Wire::NotServing as i32);
    let end = app_watch.message().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert_eq!(next_status(&mut watch).await, Wire::NotServing as i32);
    drop(app_health);
    serving.await.unwrap().unwrap();
    assert_eq!(
        kube_probe(admin.local_addr(), "/healthz/ready").await,
        (503, "not ready: shutting down\n".to_owned())
    );
    assert_eq!(kube_probe(admin.local_addr(), "/healthz").await.0, 200);
    if let Some(dir) = bootstrap_path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// With a static policy the policy is in at once; a listener counts from when it is made
/// until its accept loop runs.
#[tokio::test]
async fn a_listener_made_but_not_serving_holds_readiness() {
    let mesh = Mesh::builder().build().unwrap();
    let admin = AdminServer::new(mesh.clone())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        kube_probe(admin.local_addr(), "/healthz/ready").await.0,
        200
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = tcp.local_addr().unwrap();
    let listener = mesh.listener(tcp);
    let (status, body) = kube_probe(admin.local_addr(), "/healthz/ready").await;
    assert_eq!(
        (status, body),
        (
            503,
            format!("not ready: listener {local}: not serving yet\n")
        )
    );
    let mut readiness = mesh.readiness().watch();
    let serving = tokio::spawn(listener.serve(
        tonic::service::Routes::new(mesh.health_service()),
        std::future::pending(),
    ));
    while !readiness.status().is_ready() {
        readiness.changed().await;
    }
    assert_eq!(
        kube_probe(admin.local_addr(), "/healthz/ready").await,
        (200, "ready\n".to_owned())
    );
    // The application holds readiness back while it warms up.
    let hold = mesh.readiness().hold("cache", "loading prices");
    let (status, body) = kube_probe(admin.local_addr(), "/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: cache: loading prices\n")
    );
    hold.release();
    assert_eq!(kube_probe(admin.local_addr(), "/ready").await.0, 200);
    serving.abort();
}
