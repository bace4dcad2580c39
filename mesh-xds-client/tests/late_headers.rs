//! The client against servers that behave like grpc-go and C-core ones (istiod, the Istio
//! agent, go-control-plane, grpcio): response headers only with the first response. A
//! client that waits for the headers before sending what it was asked to watch meanwhile
//! never gets anything. Every case here failed before the client sent its requests
//! independently of the call's answer.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use mesh_xds_client::ads::{AdsConfig, Protocol, ResourceState};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::{HeaderTiming, TestAdsServer};
use mesh_xds_client::transport::{Backoff, ClientView, FailureKind, XdsClient, XdsClientConfig};

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

fn serve(server: &TestAdsServer, name: &str, endpoint: &str) {
    let route = format!("{name}-route");
    let cluster = format!("{name}-cluster");
    server.put(LDS, name, listener_rds(name, &route));
    server.put(RDS, &route, route_config(&route, &cluster));
    server.put(CDS, &cluster, cluster_eds(&cluster, None));
    server.put(
        EDS,
        &cluster,
        endpoints(&cluster, &[endpoint.parse().unwrap()]),
    );
}

fn start(server: &TestAdsServer, protocol: Protocol) -> XdsClient {
    let mut node = NodeConfig::new("late-headers");
    node.metadata.insert("GENERATOR".into(), "grpc".into());
    XdsClient::start(server.xds_server(), node.to_proto(), config(protocol))
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
            rx.changed().await.unwrap();
        }
    };
    match tokio::time::timeout(PATIENCE, wait).await {
        Ok(view) => view,
        Err(_) => panic!("condition not reached; last view: {:#?}", client.view()),
    }
}

fn acked(view: &ClientView, t: XdsType, name: &str) -> bool {
    view.cache.get(t, name).map(|e| e.state) == Some(ResourceState::Acked)
}

fn resolved(view: &ClientView, name: &str) -> bool {
    let cluster = format!("{name}-cluster");
    acked(view, LDS, name)
        && acked(view, RDS, &format!("{name}-route"))
        && acked(view, CDS, &cluster)
        && acked(view, EDS, &cluster)
}

/// The deadlock as first seen: the stream opens with nothing to ask for, the server (with
/// nothing asked) sends nothing, and the target is added only then.
async fn target_added_after_the_stream_opened(protocol: Protocol) {
    let server = TestAdsServer::start().await.unwrap();
    serve(&server, "svc:80", "10.0.0.1:80");
    let client = start(&server, protocol);
    // The stream is open and the server has said nothing, not even headers.
    let view = wait_view(&client, |v| v.connected).await;
    assert!(!view.answered, "{view:#?}");
    client.add_target("svc:80").await.unwrap();
    let view = wait_view(&client, |v| resolved(v, "svc:80")).await;
    assert!(view.answered);
    assert_eq!(server.streams_opened(), 1, "resolved on the first stream");
    client.shutdown().await;
}

#[tokio::test]
async fn sotw_target_added_after_the_stream_opened() {
    target_added_after_the_stream_opened(Protocol::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_target_added_after_the_stream_opened() {
    target_added_after_the_stream_opened(Protocol::Delta).await;
}

/// Targets keep coming while the server has answered nothing yet.
#[tokio::test]
async fn several_targets_added_before_any_answer() {
    let server = TestAdsServer::start().await.unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i}:80")).collect();
    for (i, name) in names.iter().enumerate() {
        serve(&server, name, &format!("10.0.1.{i}:80"));
    }
    let client = start(&server, Protocol::StateOfTheWorld);
    for name in &names {
        client.add_target(name).await.unwrap();
    }
    wait_view(&client, |v| names.iter().all(|n| resolved(v, n))).await;
    client.shutdown().await;
}

/// A server that answers at once (tonic's behaviour) still works.
#[tokio::test]
async fn eager_headers_still_work() {
    let server = TestAdsServer::start().await.unwrap();
    server.set_header_timing(HeaderTiming::Immediately);
    serve(&server, "svc:80", "10.0.0.1:80");
    let client = start(&server, Protocol::StateOfTheWorld);
    wait_view(&client, |v| v.connected).await;
    client.add_target("svc:80").await.unwrap();
    wait_view(&client, |v| resolved(v, "svc:80")).await;
    client.shutdown().await;
}

/// After a reconnect the client re-sends what it watches and adds what came meanwhile,
/// without waiting for the new stream's headers.
async fn reconnect_then_add(protocol: Protocol) {
    let server = TestAdsServer::start().await.unwrap();
    serve(&server, "a:80", "10.0.0.1:80");
    serve(&server, "b:80", "10.0.0.2:80");
    let client = start(&server, protocol);
    client.add_target("a:80").await.unwrap();
    wait_view(&client, |v| resolved(v, "a:80")).await;

    // The next stream stays silent until the client asks; it asks for `a` on its own
    // and for `b` when told.
    server.drop_streams();
    wait_view(&client, |v| !v.connected || !v.answered).await;
    client.add_target("b:80").await.unwrap();
    let view = wait_view(&client, |v| {
        v.answered && resolved(v, "a:80") && resolved(v, "b:80")
    })
    .await;
    assert!(view.streams_opened >= 2, "{view:#?}");
    client.shutdown().await;
}

#[tokio::test]
async fn sotw_reconnect_then_add_a_target() {
    reconnect_then_add(Protocol::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_reconnect_then_add_a_target() {
    reconnect_then_add(Protocol::Delta).await;
}

/// A server that never answers: the view says the stream is open but unanswered, so a
/// person can tell it from an unreachable server.
#[tokio::test]
async fn a_silent_server_is_connected_but_unanswered() {
    let server = TestAdsServer::start().await.unwrap();
    server.set_silent(true);
    serve(&server, "svc:80", "10.0.0.1:80");
    let client = start(&server, Protocol::StateOfTheWorld);
    client.add_target("svc:80").await.unwrap();
    // The request reached the server although it sent nothing back.
    let seen = server
        .wait_for_request(PATIENCE, |r| {
            r.xds_type() == Some(LDS) && r.request.resource_names == ["svc:80"]
        })
        .await;
    assert!(seen.is_some(), "the subscription never reached the server");
    let view = client.view();
    assert!(view.connected && !view.answered, "{view:#?}");
    assert_eq!(view.last_failure, None);
    client.shutdown().await;
}

/// A server that refuses the call says so, apart from one nobody listens on.
#[tokio::test]
async fn refused_stream_and_refused_connection_are_told_apart() {
    let server = TestAdsServer::start().await.unwrap();
    server.set_refusal(Some(tonic::Status::permission_denied("node not allowed")));
    let client = start(&server, Protocol::StateOfTheWorld);
    client.add_target("svc:80").await.unwrap();
    let view = wait_view(&client, |v| v.last_failure.is_some()).await;
    assert_eq!(
        view.last_failure,
        Some(FailureKind::StreamRefused),
        "{view:#?}"
    );
    let error = view.last_error.as_deref().unwrap();
    assert!(error.contains("PermissionDenied"), "{error}");
    assert!(error.contains("node not allowed"), "{error}");
    client.shutdown().await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let nobody = mesh_xds_client::bootstrap::XdsServer::insecure(addr.to_string());
    let client = XdsClient::start(
        nobody,
        NodeConfig::new("late-headers").to_proto(),
        config(Protocol::StateOfTheWorld),
    );
    let view = wait_view(&client, |v| v.last_failure.is_some()).await;
    assert_eq!(
        view.last_failure,
        Some(FailureKind::ConnectionRefused),
        "{view:#?}"
    );
    assert!(!view.connected);
    client.shutdown().await;
}
