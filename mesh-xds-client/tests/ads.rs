//! The client against a real gRPC ADS server on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use mesh_xds_client::ads::{AdsConfig, ResourceState};
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource, NodeConfig};
use mesh_xds_client::resource::{Resource, XdsType};
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::TestAdsServer;
use mesh_xds_client::transport::{Backoff, ClientView, XdsClient, XdsClientConfig};

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::RouteConfiguration;
const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::ClusterLoadAssignment;

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

fn config() -> XdsClientConfig {
    XdsClientConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ))
}

fn serve_cascade(server: &TestAdsServer) {
    server.put(LDS, "svc", listener_rds("svc", "route"));
    server.put(RDS, "route", route_config("route", "c"));
    server.put(CDS, "c", cluster_eds("c", Some("c-eds")));
    server.put(
        EDS,
        "c-eds",
        endpoints("c-eds", &["10.0.0.1:80".parse().unwrap()]),
    );
}

fn client_for(server: &TestAdsServer) -> XdsClient {
    let mut node = NodeConfig::new("test-node");
    node.metadata.insert("GENERATOR".into(), "grpc".into());
    XdsClient::start(server.xds_server(), node.to_proto(), config())
}

async fn wait_view(
    client: &XdsClient,
    mut pred: impl FnMut(&ClientView) -> bool,
) -> Arc<ClientView> {
    let mut rx = client.watch();
    let wait = async {
        loop {
            let view = rx.borrow_and_update().clone();
            if pred(&view) {
                return view;
            }
            if rx.changed().await.is_err() {
                panic!("client stopped");
            }
        }
    };
    match tokio::time::timeout(PATIENCE, wait).await {
        Ok(view) => view,
        Err(_) => panic!("condition not reached; last view: {:#?}", client.view()),
    }
}

fn state(view: &ClientView, t: XdsType, name: &str) -> Option<ResourceState> {
    view.cache.get(t, name).map(|e| e.state)
}

fn all_acked(view: &ClientView) -> bool {
    view.cache.len() == 4
        && view
            .cache
            .iter()
            .all(|(_, _, e)| e.state == ResourceState::Acked)
}

#[tokio::test]
async fn cascade_lds_rds_cds_eds() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, all_acked).await;
    assert!(view.connected);
    let Some(Resource::ClusterLoadAssignment(eds)) = view.cache.resource(EDS, "c-eds") else {
        panic!("no endpoints: {view:#?}");
    };
    assert_eq!(eds.assignment.endpoints[0].lb_endpoints.len(), 1);

    let eds_ack = server
        .wait_for_request(PATIENCE, |r| r.xds_type() == Some(EDS) && r.is_reply())
        .await
        .unwrap();
    assert!(!eds_ack.is_nack());
    let requests = server.requests();
    let node = requests[0]
        .request
        .node
        .as_ref()
        .expect("node in the first request");
    assert_eq!(node.id, "test-node");
    assert!(node
        .metadata
        .as_ref()
        .unwrap()
        .fields
        .contains_key("GENERATOR"));
    assert!(requests[1..].iter().all(|r| r.request.node.is_none()));
    client.shutdown().await;
}

#[tokio::test]
async fn update_is_applied_and_acked() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;
    let before = server.requests().len();

    let addrs = [
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    ];
    server.put(EDS, "c-eds", endpoints("c-eds", &addrs));
    let view = wait_view(&client, |v| {
        matches!(v.cache.resource(EDS, "c-eds"),
            Some(Resource::ClusterLoadAssignment(e)) if e.assignment.endpoints[0].lb_endpoints.len() == 2)
    })
    .await;
    let entry = view.cache.get(EDS, "c-eds").unwrap();
    assert_eq!(entry.state, ResourceState::Acked);
    let version = entry.version.clone().unwrap();
    let ack = server
        .wait_for_request(PATIENCE, |r| {
            r.xds_type() == Some(EDS) && r.request.version_info == version && r.is_reply()
        })
        .await
        .unwrap();
    assert!(!ack.is_nack());
    assert!(server.requests().len() > before);
    client.shutdown().await;
}

#[tokio::test]
async fn bad_resource_is_nacked_while_valid_ones_are_accepted() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    client.add_target("bad").await.unwrap();
    wait_view(&client, |v| {
        state(v, LDS, "svc") == Some(ResourceState::Acked)
    })
    .await;

    // One push: `svc` moves to a new route configuration, `bad` has an empty route name.
    server.put(RDS, "route-2", route_config("route-2", "c"));
    server.put_all(
        LDS,
        vec![
            ("svc".into(), listener_rds("svc", "route-2")),
            ("bad".into(), listener_rds("bad", "")),
        ],
    );
    let nack = server
        .wait_for_request(PATIENCE, |r| r.xds_type() == Some(LDS) && r.is_nack())
        .await
        .unwrap();
    let detail = nack.request.error_detail.as_ref().unwrap();
    assert_eq!(detail.code, 3, "INVALID_ARGUMENT");
    assert!(
        detail.message.contains("resource bad"),
        "{}",
        detail.message
    );
    assert!(
        detail
            .message
            .contains("api_listener.api_listener.rds.route_config_name"),
        "{}",
        detail.message
    );
    let view = wait_view(&client, |v| {
        state(v, RDS, "route-2") == Some(ResourceState::Acked)
            && state(v, LDS, "bad") == Some(ResourceState::Nacked)
    })
    .await;
    assert!(
        view.cache.get(RDS, "route").is_none(),
        "old route unsubscribed"
    );
    let bad = view.cache.get(LDS, "bad").unwrap();
    assert_eq!(
        bad.last_error.as_ref().unwrap().error.field(),
        Some("api_listener.api_listener.rds.route_config_name")
    );
    client.shutdown().await;
}

#[tokio::test]
async fn removed_listener_is_reported_and_its_tree_unsubscribed() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;

    server.remove(LDS, "svc");
    let view = wait_view(&client, |v| {
        state(v, LDS, "svc") == Some(ResourceState::DoesNotExist) && v.cache.len() == 1
    })
    .await;
    assert!(view.cache.resource(LDS, "svc").is_none());
    server
        .wait_for_request(PATIENCE, |r| {
            r.xds_type() == Some(EDS) && r.request.resource_names.is_empty()
        })
        .await
        .expect("EDS unsubscribed");
    client.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_a_restart_keeping_the_cache() {
    let server = TestAdsServer::start().await.unwrap();
    let addr = server.addr().unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;

    server.shutdown().await;
    let down = wait_view(&client, |v| !v.connected).await;
    assert!(
        all_acked(&down),
        "the last good data stays while the server is gone"
    );

    let server = TestAdsServer::start_on(addr).await.unwrap();
    serve_cascade(&server);
    // Every type is asked for again, with the versions accepted before.
    for t in XdsType::ALL {
        let req = server
            .wait_for_request(PATIENCE, |r| r.xds_type() == Some(t) && !r.is_reply())
            .await
            .unwrap_or_else(|| panic!("{t} not resubscribed: {:#?}", server.requests()));
        assert_eq!(req.request.version_info, "1", "{t}");
    }
    assert!(server.requests()[0].request.node.is_some());
    let view = wait_view(&client, |v| {
        v.connected && v.streams_opened >= 2 && all_acked(v)
    })
    .await;
    assert!(view.last_error.is_none());
    client.shutdown().await;
}

#[tokio::test]
async fn a_dropped_stream_is_reopened() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;
    server.drop_streams();
    server
        .wait_for_request(PATIENCE, |r| r.stream == 2 && r.request.node.is_some())
        .await
        .expect("a second stream");
    wait_view(&client, |v| {
        v.streams_opened >= 2 && v.connected && all_acked(v)
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn connects_over_a_unix_socket_as_istio_agent_writes() {
    let dir = std::env::temp_dir().join(format!("mesh-xds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("XDS");
    let _ = std::fs::remove_file(&path);
    let server = TestAdsServer::start_unix(&path).await.unwrap();
    serve_cascade(&server);
    let json = format!(
        r#"{{"xds_servers":[{{"server_uri":"unix://{}","channel_creds":[{{"type":"insecure"}}],
            "server_features":["xds_v3"]}}],"node":{{"id":"n","metadata":{{"GENERATOR":"grpc"}}}}}}"#,
        path.display()
    );
    let bootstrap = Bootstrap::from_json(&json, BootstrapSource::Inline).unwrap();
    let client = XdsClient::from_bootstrap(&bootstrap, config()).unwrap();
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;
    client.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_resource_the_server_never_sends_is_reported_missing() {
    let server = TestAdsServer::start().await.unwrap();
    let ads = AdsConfig::default().with_does_not_exist_timeout(Duration::from_millis(50));
    let client = XdsClient::start(
        server.xds_server(),
        NodeConfig::new("n").to_proto(),
        config().with_ads(ads),
    );
    client.add_target("nowhere").await.unwrap();
    let view = wait_view(&client, |v| {
        state(v, LDS, "nowhere") == Some(ResourceState::DoesNotExist)
    })
    .await;
    assert!(view.connected);
    // It still counts when it shows up later.
    server.put(LDS, "nowhere", listener_rds("nowhere", "r"));
    wait_view(&client, |v| {
        state(v, LDS, "nowhere") == Some(ResourceState::Acked)
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_nacked_update_keeps_the_previous_config_in_force() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server);
    let client = client_for(&server);
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;

    let mut bad = cluster_eds_message("c", Some("c-eds"));
    bad.eds_cluster_config = None;
    server.put(CDS, "c", mesh_xds_client::resource::to_any(&bad));
    let nack = server
        .wait_for_request(PATIENCE, |r| r.xds_type() == Some(CDS) && r.is_nack())
        .await
        .unwrap();
    assert_eq!(
        nack.request.version_info, "1",
        "the NACK names the version still in use"
    );
    let message = &nack.request.error_detail.as_ref().unwrap().message;
    assert!(
        message.contains("resource c: eds_cluster_config: missing"),
        "{message}"
    );
    let view = wait_view(&client, |v| {
        state(v, CDS, "c") == Some(ResourceState::Nacked)
    })
    .await;
    let entry = view.cache.get(CDS, "c").unwrap();
    let Some(Resource::Cluster(kept)) = &entry.resource else {
        panic!("previous cluster dropped: {entry:?}");
    };
    assert_eq!(kept.eds_service_name.as_deref(), Some("c-eds"));
    assert_eq!(entry.version.as_deref(), Some("1"));
    assert_eq!(entry.last_error.as_ref().unwrap().version, "2");
    assert_eq!(
        state(&view, EDS, "c-eds"),
        Some(ResourceState::Acked),
        "endpoints stay subscribed"
    );
    client.shutdown().await;
}
