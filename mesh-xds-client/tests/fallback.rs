//! gRFC A71: with several servers, an unreachable primary makes the client use the next
//! one, keeping its cache, and come back to the primary once it is reachable.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::live::LivePolicy;
use mesh_core::Snapshot;
use mesh_xds_client::ads::{AdsConfig, Protocol, ResourceState};
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource, NodeConfig, XdsServer};
use mesh_xds_client::resource::{Resource, XdsType};
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::{wait_for_view, TestAdsServer};
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

fn serve_cascade(server: &TestAdsServer, endpoint: &str) {
    server.put(LDS, "svc", listener_rds("svc", "route"));
    server.put(RDS, "route", route_config("route", "c"));
    server.put(CDS, "c", cluster_eds("c", Some("c-eds")));
    server.put(
        EDS,
        "c-eds",
        endpoints("c-eds", &[endpoint.parse().unwrap()]),
    );
}

/// An address on 127.0.0.1 with nothing listening (yet).
async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn wait_view(client: &XdsClient, pred: impl FnMut(&ClientView) -> bool) -> Arc<ClientView> {
    match wait_for_view(client, PATIENCE, pred).await {
        Some(view) => view,
        None => panic!("condition not reached; last view: {:#?}", client.view()),
    }
}

fn serves_endpoint(view: &ClientView, endpoint: &str) -> bool {
    let Some(Resource::ClusterLoadAssignment(eds)) = view.cache.resource(EDS, "c-eds") else {
        return false;
    };
    view.cache.get(EDS, "c-eds").map(|e| e.state) == Some(ResourceState::Acked)
        && format!("{:?}", eds.assignment).contains(endpoint)
}

fn snapshot_endpoint(policy: &LivePolicy) -> String {
    format!("{:?}", policy.snapshot().endpoints("c-eds"))
}

async fn falls_back_and_returns(protocol: Protocol) {
    let primary_addr = free_addr().await;
    let fallback = TestAdsServer::start().await.unwrap();
    serve_cascade(&fallback, "10.0.0.2:80");
    let policy = LivePolicy::new(Snapshot::empty());
    let client = XdsClient::start_with_servers(
        vec![
            XdsServer::insecure(primary_addr.to_string()),
            fallback.xds_server(),
        ],
        NodeConfig::new("fallback-node").to_proto(),
        config().with_ads(AdsConfig::default().with_protocol(protocol)),
        Some(policy.clone()),
    )
    .unwrap();
    client.add_target("svc").await.unwrap();

    // The primary is down at start: the fallback serves.
    let view = wait_view(&client, |v| {
        v.snapshot.is_some() && serves_endpoint(v, "10.0.0.2")
    })
    .await;
    assert_eq!(
        view.server.as_deref(),
        Some(fallback.xds_server().server_uri.as_str())
    );
    assert!(snapshot_endpoint(&policy).contains("10.0.0.2"));
    assert!(fallback.streams_opened() >= 1);

    // The primary comes up with other endpoints: the client goes back to it, keeping the
    // cache in between, and the snapshot follows the primary.
    let primary = TestAdsServer::start_on(primary_addr).await.unwrap();
    serve_cascade(&primary, "10.0.0.1:80");
    let view = wait_view(&client, |v| {
        v.server.as_deref() == Some(primary.xds_server().server_uri.as_str())
            && serves_endpoint(v, "10.0.0.1")
    })
    .await;
    assert!(view.connected);
    assert_eq!(view.cache.len(), 4);
    assert!(primary.streams_opened() >= 1);
    let resubscribed = match protocol {
        Protocol::Delta => !primary.delta_requests().is_empty(),
        _ => !primary.requests().is_empty(),
    };
    assert!(resubscribed);
    assert!(snapshot_endpoint(&policy).contains("10.0.0.1"));

    // Changes now come from the primary only.
    primary.put(
        EDS,
        "c-eds",
        endpoints("c-eds", &["10.0.0.3:80".parse().unwrap()]),
    );
    wait_view(&client, |v| serves_endpoint(v, "10.0.0.3")).await;
    client.shutdown().await;
}

#[tokio::test]
async fn a71_state_of_the_world_falls_back_and_returns_to_the_primary() {
    falls_back_and_returns(Protocol::StateOfTheWorld).await;
}

#[tokio::test]
async fn a71_delta_falls_back_and_returns_to_the_primary() {
    falls_back_and_returns(Protocol::Delta).await;
}

#[tokio::test]
async fn a71_from_a_bootstrap_with_two_servers() {
    let primary_addr = free_addr().await;
    let fallback = TestAdsServer::start().await.unwrap();
    serve_cascade(&fallback, "10.0.0.2:80");
    let json = format!(
        r#"{{"xds_servers":[
            {{"server_uri":"{primary_addr}","channel_creds":[{{"type":"insecure"}}]}},
            {{"server_uri":"{}","channel_creds":[{{"type":"insecure"}}]}}],
            "node":{{"id":"n"}}}}"#,
        fallback.addr().unwrap()
    );
    let bootstrap = Bootstrap::from_json(&json, BootstrapSource::Inline).unwrap();
    let client = XdsClient::from_bootstrap(&bootstrap, config()).unwrap();
    client.add_target("svc").await.unwrap();
    wait_view(&client, |v| serves_endpoint(v, "10.0.0.2")).await;
    client.shutdown().await;
}
