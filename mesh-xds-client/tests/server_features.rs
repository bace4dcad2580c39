//! Per-server features from the bootstrap, over real gRPC on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use mesh_xds_client::ads::ResourceState;
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource};
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::{wait_for_view, TestAdsServer};
use mesh_xds_client::transport::{Backoff, XdsClient, XdsClientConfig};

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether a listener the server stops sending is kept, with these server features.
async fn listener_kept_after_removal(features: &str) -> bool {
    let server = TestAdsServer::start().await.unwrap();
    server.put(XdsType::Listener, "svc", listener_rds("svc", "route"));
    server.put(XdsType::Listener, "other", listener_rds("other", "route"));
    server.put(
        XdsType::RouteConfiguration,
        "route",
        route_config("route", "c"),
    );
    let json = format!(
        r#"{{"xds_servers":[{{"server_uri":"{}","channel_creds":[{{"type":"insecure"}}],
            "server_features":[{features}]}}],"node":{{"id":"n"}}}}"#,
        server.addr().unwrap()
    );
    let bootstrap = Bootstrap::from_json(&json, BootstrapSource::Inline).unwrap();
    let config = XdsClientConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ));
    let client = XdsClient::from_bootstrap(&bootstrap, config).unwrap();
    client.add_target("svc").await.unwrap();
    client.add_target("other").await.unwrap();
    let view = wait_for_view(&client, PATIENCE, |v| {
        v.cache.get(XdsType::Listener, "svc").map(|e| e.state) == Some(ResourceState::Acked)
            && v.cache.get(XdsType::Listener, "other").map(|e| e.state)
                == Some(ResourceState::Acked)
    })
    .await
    .unwrap();
    let accepted = view.updates[&XdsType::Listener].accepted;
    server.remove(XdsType::Listener, "svc");
    // Wait until the push without `svc` has been applied.
    let view = wait_for_view(&client, PATIENCE, |v| {
        v.updates[&XdsType::Listener].accepted > accepted
    })
    .await
    .unwrap();
    client.shutdown().await;
    view.cache.resource(XdsType::Listener, "svc").is_some()
}

#[tokio::test]
async fn a53_ignore_resource_deletion_is_honoured_per_server() {
    assert!(listener_kept_after_removal(r#""xds_v3","ignore_resource_deletion""#).await);
    assert!(!listener_kept_after_removal(r#""xds_v3""#).await);
}
