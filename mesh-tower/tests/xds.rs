//! The mesh on a control plane: a real ADS stream from the in-process test server, a
//! bootstrap file as the Istio agent writes one, and requests routed by what it sends.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use mesh_tower::Mesh;
use mesh_xds_client::resource::{to_any, XdsType};
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::TestAdsServer;
use support::{get, Backend, Script};

fn bootstrap(server: &TestAdsServer, dir: &std::path::Path) -> std::path::PathBuf {
    let addr = server.addr().unwrap();
    let json = format!(
        r#"{{
  "xds_servers": [{{ "server_uri": "{addr}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"] }}],
  "node": {{ "id": "sidecar~127.0.0.1~order.default~default.svc.cluster.local", "metadata": {{ "GENERATOR": "grpc" }} }}
}}"#
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn split(server: &TestAdsServer, v1: u32, v2: u32) {
    server.put(
        XdsType::RouteConfiguration,
        "pay-routes",
        to_any(&route_config_with(
            "pay-routes",
            vec![prefix_route("/", weighted(&[("v1", v1), ("v2", v2)]))],
        )),
    );
}

#[tokio::test]
async fn requests_follow_the_control_plane() {
    let b1 = Backend::start("v1", Script::Ok).await;
    let b2 = Backend::start("v2", Script::Ok).await;
    let server = TestAdsServer::start().await.unwrap();
    server.put(
        XdsType::Listener,
        "pay:80",
        listener_rds("pay:80", "pay-routes"),
    );
    split(&server, 100, 0);
    server.put(XdsType::Cluster, "v1", cluster_eds("v1", None));
    server.put(XdsType::Cluster, "v2", cluster_eds("v2", None));
    server.put(
        XdsType::ClusterLoadAssignment,
        "v1",
        endpoints("v1", &[b1.addr]),
    );
    server.put(
        XdsType::ClusterLoadAssignment,
        "v2",
        endpoints("v2", &[b2.addr]),
    );

    let dir = std::env::temp_dir().join(format!("mesh-xds-{}", std::process::id()));
    let mesh = Mesh::builder()
        .bootstrap(bootstrap(&server, &dir))
        .build()
        .unwrap();
    // The first call waits for the target's policy instead of dialing DNS.
    let mut client = mesh.http_client();
    let (status, backend, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, backend.as_str()), (200, "v1"), "{err}");

    // The control plane moves everything to v2: requests follow, none fails.
    split(&server, 0, 100);
    let mut moved = false;
    for _ in 0..2000 {
        let (status, backend, err) = get(&mut client, "http://pay:80/").await;
        assert_eq!(status, 200, "{err}");
        if backend == "v2" {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(moved, "the new split never took effect");

    // The control plane goes away: the last policy stays in force.
    server.shutdown().await;
    for _ in 0..20 {
        let (status, backend, _) = get(&mut client, "http://pay:80/").await;
        assert_eq!((status, backend.as_str()), (200, "v2"));
    }
    let view = mesh.xds_view().unwrap();
    assert!(!view.cache.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin server answers CSDS (gRFC A40) over HTTP/2: every resource the control plane
/// sent, ACKED with its version and contents; a rejected update NACKED with the error,
/// the previous version still reported as the one in force.
#[tokio::test]
async fn csds_on_the_admin_port_reports_each_resource() {
    use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;

    let b1 = Backend::start("v1", Script::Ok).await;
    let server = TestAdsServer::start().await.unwrap();
    server.put(
        XdsType::Listener,
        "pay:80",
        listener_rds("pay:80", "pay-routes"),
    );
    split(&server, 100, 0);
    for name in ["v1", "v2"] {
        server.put(XdsType::Cluster, name, cluster_eds(name, None));
        server.put(
            XdsType::ClusterLoadAssignment,
            name,
            endpoints(name, &[b1.addr]),
        );
    }
    let dir = std::env::temp_dir().join(format!("mesh-csds-{}", std::process::id()));
    let mesh = Mesh::builder()
        .bootstrap(bootstrap(&server, &dir))
        .build()
        .unwrap();
    let mut client = mesh.http_client();
    let (status, _, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!(status, 200, "{err}");
    let admin = mesh_tower::admin::AdminServer::new(mesh.clone())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{}", admin.local_addr()))
            .await
            .unwrap();
    let fetch = |csds: &mut ClientStatusDiscoveryServiceClient<tonic::transport::Channel>| {
        let mut csds = csds.clone();
        async move {
            csds.fetch_client_status(ClientStatusRequest::default())
                .await
                .unwrap()
                .into_inner()
        }
    };
    let resp = fetch(&mut csds).await;
    assert_eq!(resp.config.len(), 1);
    let config = &resp.config[0];
    assert_eq!(
        config.node.as_ref().unwrap().id,
        "sidecar~127.0.0.1~order.default~default.svc.cluster.local"
    );
    let find = |configs: &[envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig],
                t: XdsType,
                name: &str| {
        configs
            .iter()
            .find(|c| c.type_url == t.type_url() && c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not reported: {configs:?}"))
    };
    for (t, name) in [
        (XdsType::Listener, "pay:80"),
        (XdsType::RouteConfiguration, "pay-routes"),
        (XdsType::Cluster, "v1"),
        (XdsType::ClusterLoadAssignment, "v1"),
    ] {
        let c = find(&config.generic_xds_configs, t, name);
        assert_eq!(c.client_status, ClientResourceStatus::Acked as i32, "{c:?}");
        assert!(!c.version_info.is_empty());
        assert!(c.last_updated.is_some());
        let any = c.xds_config.as_ref().expect("contents included");
        assert_eq!(any.type_url, t.type_url());
        assert!(!any.value.is_empty());
    }

    // A bad update of the cluster: NACKED, with the error; the old version still in force.
    let acked_version = find(&config.generic_xds_configs, XdsType::Cluster, "v1").version_info;
    let mut bad = cluster_eds_message("v1", None);
    bad.eds_cluster_config = None;
    server.put(
        XdsType::Cluster,
        "v1",
        mesh_xds_client::resource::to_any(&bad),
    );
    let mut nacked = None;
    for _ in 0..400 {
        let resp = fetch(&mut csds).await;
        let c = find(&resp.config[0].generic_xds_configs, XdsType::Cluster, "v1");
        if c.client_status == ClientResourceStatus::Nacked as i32 {
            nacked = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = nacked.expect("the bad cluster is reported NACKED");
    assert_eq!(c.version_info, acked_version, "the accepted version stays");
    let error = c.error_state.expect("the rejection is reported");
    assert!(!error.details.is_empty());
    assert_ne!(error.version_info, acked_version, "the rejected version");
    let (status, backend, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, backend.as_str()), (200, "v1"), "{err}");

    // The metrics count the accepted resources and the rejection.
    let cds = XdsType::Cluster.type_url();
    let counted = |result: &str| {
        let prefix = format!("mesh_xds_updates_total{{type_url=\"{cds}\",result=\"{result}\"}} ");
        mesh.metrics()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    let mut nacks = None;
    for _ in 0..200 {
        nacks = counted("nack");
        if nacks.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nacks.as_deref(), Some("1"), "{}", mesh.metrics().render());
    assert!(
        counted("ack").is_some_and(|n| n.parse::<u64>().unwrap() >= 2),
        "{}",
        mesh.metrics().render()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// gRFC A36 with a control plane that answers (headers and all) only with its first
/// response, as istiod and the Istio agent do: the server's listener is subscribed when
/// the mesh listener is made, and it serves once the policy for its address arrives.
#[tokio::test]
async fn a36_inbound_listener_serves_once_its_policy_arrives() {
    let server = TestAdsServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-xds-a36-{}", std::process::id()));
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
    let mesh = Mesh::builder().bootstrap(&path).build().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = tcp.local_addr().unwrap();
    // The control plane has the listener from the start; the client asks for it only
    // when the mesh listener is made, on a stream the server has not answered yet.
    server.put(
        XdsType::Listener,
        &format!("xds.istio.io/grpc/lds/inbound/{local}"),
        inbound_listener_plaintext(local),
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { ([("x-backend", "served")], "ok") }),
    );
    let listener = mesh.listener(tcp);
    let serving = tokio::spawn(listener.serve(app, std::future::pending()));

    let mut client = mesh_tower::Mesh::builder().build().unwrap().http_client();
    let (status, body, err) = get(&mut client, &format!("http://{local}/")).await;
    assert_eq!((status, body.as_str()), (200, "served"), "{err}");
    let view = mesh.xds_view().unwrap();
    assert!(view.answered);
    serving.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
