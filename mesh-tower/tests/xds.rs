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
