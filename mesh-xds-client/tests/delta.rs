//! Incremental (delta) ADS against the test server over real gRPC on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use mesh_core::live::LivePolicy;
use mesh_core::Snapshot;
use mesh_xds_client::ads::{AdsConfig, Protocol, ResourceState};
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource, NodeConfig};
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

fn config(protocol: Protocol) -> XdsClientConfig {
    XdsClientConfig::default()
        .with_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .with_ads(AdsConfig::default().with_protocol(protocol))
}

fn serve_cascade(server: &TestAdsServer, addr: &str) {
    server.put(LDS, "svc", listener_rds("svc", "route"));
    server.put(RDS, "route", route_config("route", "c"));
    server.put(CDS, "c", cluster_eds("c", Some("c-eds")));
    server.put(EDS, "c-eds", endpoints("c-eds", &[addr.parse().unwrap()]));
}

fn start(server: &TestAdsServer, protocol: Protocol, policy: LivePolicy) -> XdsClient {
    XdsClient::start_with_policy(
        server.xds_server(),
        NodeConfig::new("delta-node").to_proto(),
        config(protocol),
        policy,
    )
}

async fn wait_view(client: &XdsClient, pred: impl FnMut(&ClientView) -> bool) -> Arc<ClientView> {
    match wait_for_view(client, PATIENCE, pred).await {
        Some(view) => view,
        None => panic!("condition not reached; last view: {:#?}", client.view()),
    }
}

fn all_acked(view: &ClientView) -> bool {
    view.cache.len() == 4
        && view
            .cache
            .iter()
            .all(|(_, _, e)| e.state == ResourceState::Acked)
}

fn endpoint_addrs(view: &ClientView) -> Vec<String> {
    match view.cache.resource(EDS, "c-eds") {
        Some(Resource::ClusterLoadAssignment(eds)) => eds.assignment.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect(),
        _ => Vec::new(),
    }
}

fn replies(server: &TestAdsServer, t: XdsType) -> usize {
    server
        .delta_requests()
        .iter()
        .filter(|r| r.xds_type() == Some(t) && r.is_reply())
        .count()
}

#[tokio::test]
async fn delta_cascade_update_and_removal() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, Protocol::Delta, policy.clone());
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, |v| all_acked(v) && v.snapshot.is_some()).await;
    assert_eq!(view.protocol, Protocol::Delta);
    assert!(server.requests().is_empty(), "no state-of-the-world stream");
    let first = &server.delta_requests()[0];
    assert_eq!(first.request.node.as_ref().unwrap().id, "delta-node");
    assert_eq!(first.request.resource_names_subscribe, ["svc"]);
    server
        .wait_for_delta_request(PATIENCE, |r| r.xds_type() == Some(EDS) && r.is_reply())
        .await
        .unwrap();
    assert!(server.delta_requests().iter().all(|r| !r.is_nack()));
    assert!(policy.snapshot().outbound("svc").is_some());
    let old_version = view.cache.get(EDS, "c-eds").unwrap().version.clone();

    // Only the changed endpoints travel: no LDS, RDS or CDS response is sent again.
    let before: Vec<usize> = [LDS, RDS, CDS].map(|t| replies(&server, t)).to_vec();
    server.put(
        EDS,
        "c-eds",
        endpoints("c-eds", &["10.0.0.2:80".parse().unwrap()]),
    );
    let view = wait_view(&client, |v| {
        v.cache.get(EDS, "c-eds").unwrap().version != old_version
    })
    .await;
    assert_eq!(
        view.cache.get(EDS, "c-eds").unwrap().state,
        ResourceState::Acked
    );
    assert!(endpoint_addrs(&view)[0].contains("10.0.0.2"));
    server
        .wait_for_delta_request(PATIENCE, |r| {
            r.xds_type() == Some(EDS) && r.is_reply() && r.stream == 1
        })
        .await
        .unwrap();
    let after: Vec<usize> = [LDS, RDS, CDS].map(|t| replies(&server, t)).to_vec();
    assert_eq!(before, after, "unchanged types were not pushed");
    assert!(view.updates[&EDS].accepted >= 2);

    // A removed listener is gone, and its tree is unsubscribed.
    server.remove(LDS, "svc");
    let view = wait_view(&client, |v| {
        v.cache.get(LDS, "svc").map(|e| e.state) == Some(ResourceState::DoesNotExist)
    })
    .await;
    assert!(view.cache.resource(LDS, "svc").is_none());
    let unsub = server
        .wait_for_delta_request(PATIENCE, |r| {
            r.request.resource_names_unsubscribe == ["route"]
        })
        .await;
    assert!(unsub.is_some(), "{:#?}", server.delta_requests());
    client.shutdown().await;
}

#[tokio::test]
async fn delta_nack_names_resource_and_field_and_keeps_the_previous_config() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    server.put(LDS, "other", listener_rds("other", "route"));
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, Protocol::Delta, policy.clone());
    client.add_target("svc").await.unwrap();
    client.add_target("other").await.unwrap();
    wait_view(&client, |v| v.snapshot.is_some() && v.cache.len() == 5).await;
    let good = policy.snapshot();

    // A46: `svc` breaks (empty route name) while `other` moves to a new route in the same push.
    server.put(RDS, "route2", route_config("route2", "c"));
    server.put_all(
        LDS,
        vec![
            ("svc".into(), listener_rds("svc", "")),
            ("other".into(), listener_rds("other", "route2")),
        ],
    );
    let nack = server
        .wait_for_delta_request(PATIENCE, |r| r.is_nack())
        .await
        .unwrap();
    let detail = nack.request.error_detail.unwrap();
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("resource svc"),
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
        v.cache.get(RDS, "route2").map(|e| e.state) == Some(ResourceState::Acked)
    })
    .await;
    let svc = view.cache.get(LDS, "svc").unwrap();
    assert_eq!(svc.state, ResourceState::Nacked);
    assert!(svc.resource.is_some(), "the previous listener stays");
    assert_eq!(
        svc.last_error.as_ref().unwrap().error.field(),
        Some("api_listener.api_listener.rds.route_config_name")
    );
    assert_eq!(
        view.cache.get(LDS, "other").unwrap().state,
        ResourceState::Acked
    );
    assert!(view.updates[&LDS].rejected >= 1);
    let now = policy.snapshot();
    assert_eq!(
        now.outbound("svc").unwrap().route_config_name(),
        good.outbound("svc").unwrap().route_config_name()
    );
    assert_eq!(now.outbound("other").unwrap().route_config_name(), "route2");
    client.shutdown().await;
}

#[tokio::test]
async fn delta_reconnect_sends_initial_resource_versions_and_keeps_serving() {
    let server = TestAdsServer::start().await.unwrap();
    let addr = server.addr().unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, Protocol::Delta, policy.clone());
    client.add_target("svc").await.unwrap();
    let up = wait_view(&client, |v| all_acked(v) && v.snapshot.is_some()).await;
    let served = policy.snapshot();

    server.shutdown().await;
    let down = wait_view(&client, |v| !v.connected).await;
    assert!(all_acked(&down), "the cache stays while the server is gone");
    assert!(
        Arc::ptr_eq(&policy.snapshot(), &served),
        "the old policy keeps serving"
    );

    let server = TestAdsServer::start_on(addr).await.unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    for (t, name) in [(LDS, "svc"), (RDS, "route"), (CDS, "c"), (EDS, "c-eds")] {
        let req = server
            .wait_for_delta_request(PATIENCE, |r| r.xds_type() == Some(t) && !r.is_reply())
            .await
            .unwrap_or_else(|| panic!("{t} not resubscribed: {:#?}", server.delta_requests()));
        assert_eq!(req.request.resource_names_subscribe, [name]);
        let version = up.cache.get(t, name).unwrap().version.clone().unwrap();
        assert_eq!(
            req.request.initial_resource_versions.get(name),
            Some(&version),
            "{t}"
        );
    }
    let view = wait_view(&client, |v| v.connected && v.streams_opened >= 2).await;
    assert!(all_acked(&view));
    // Same content, same versions: the server had nothing to resend.
    let update = serve_and_wait_eds_change(&server, &client).await;
    assert!(update, "the new stream still delivers changes");
    client.shutdown().await;
}

async fn serve_and_wait_eds_change(server: &TestAdsServer, client: &XdsClient) -> bool {
    server.put(
        EDS,
        "c-eds",
        endpoints("c-eds", &["10.0.0.9:80".parse().unwrap()]),
    );
    wait_for_view(client, PATIENCE, |v| {
        endpoint_addrs(v)
            .first()
            .is_some_and(|a| a.contains("10.0.0.9"))
    })
    .await
    .is_some()
}

#[tokio::test]
async fn both_flavours_build_the_same_snapshot() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    let sotw_policy = LivePolicy::new(Snapshot::empty());
    let delta_policy = LivePolicy::new(Snapshot::empty());
    let sotw = start(&server, Protocol::StateOfTheWorld, sotw_policy.clone());
    let delta = start(&server, Protocol::Delta, delta_policy.clone());
    for client in [&sotw, &delta] {
        client.add_target("svc").await.unwrap();
        wait_view(client, |v| all_acked(v) && v.snapshot.is_some()).await;
    }
    assert_eq!(sotw.view().protocol, Protocol::StateOfTheWorld);
    assert_eq!(delta.view().protocol, Protocol::Delta);
    let (a, b) = (sotw_policy.snapshot(), delta_policy.snapshot());
    assert_eq!(
        format!("{:?}", a.outbound("svc")),
        format!("{:?}", b.outbound("svc"))
    );
    assert_eq!(a.cluster("c"), b.cluster("c"));
    assert_eq!(a.endpoints("c-eds"), b.endpoints("c-eds"));
    assert!(a.cluster("c").is_some());
    sotw.shutdown().await;
    delta.shutdown().await;
}

#[tokio::test]
async fn the_bootstrap_chooses_delta_per_server() {
    let server = TestAdsServer::start().await.unwrap();
    serve_cascade(&server, "10.0.0.1:80");
    let json = format!(
        r#"{{"xds_servers":[{{"server_uri":"{}","channel_creds":[{{"type":"insecure"}}],
            "server_features":["xds_v3"],"api_type":"DELTA_GRPC"}}],"node":{{"id":"n"}}}}"#,
        server.addr().unwrap()
    );
    let bootstrap = Bootstrap::from_json(&json, BootstrapSource::Inline).unwrap();
    let client = XdsClient::from_bootstrap(&bootstrap, config(Protocol::StateOfTheWorld)).unwrap();
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, all_acked).await;
    assert_eq!(view.protocol, Protocol::Delta);
    assert!(server.requests().is_empty());
    assert!(!server.delta_requests().is_empty());
    client.shutdown().await;
}
