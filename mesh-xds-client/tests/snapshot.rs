//! The client publishes one consistent snapshot (gRFC A74) to a live policy, over a real
//! gRPC ADS stream on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use mesh_core::live::LivePolicy;
use mesh_core::route::{ClusterSpecifier, RouteAction};
use mesh_core::Snapshot;
use mesh_xds_client::ads::ResourceState;
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::TestAdsServer;
use mesh_xds_client::transport::{Backoff, ClientView, XdsClient, XdsClientConfig};

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::RouteConfiguration;
const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::ClusterLoadAssignment;
const TARGET: &str = "payment-service:8080";

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn routes(name: &str, split: &[(&str, u32)]) -> envoy_types::pb::google::protobuf::Any {
    mesh_xds_client::resource::to_any(&route_config_with(
        name,
        vec![prefix_route("/", weighted(split))],
    ))
}

fn serve_payment(server: &TestAdsServer) {
    server.put(LDS, TARGET, listener_rds(TARGET, "payment-routes"));
    server.put(
        RDS,
        "payment-routes",
        routes("payment-routes", &[("v1", 90), ("v2", 10)]),
    );
    server.put(CDS, "v1", cluster_eds("v1", Some("v1-eds")));
    server.put(CDS, "v2", cluster_eds("v2", None));
    server.put(
        EDS,
        "v1-eds",
        endpoints("v1-eds", &[addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]),
    );
    server.put(EDS, "v2", endpoints("v2", &[addr("10.0.1.1:8080")]));
}

fn start(server: &TestAdsServer, policy: LivePolicy) -> XdsClient {
    let config = XdsClientConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ));
    XdsClient::start_with_policy(
        server.xds_server(),
        NodeConfig::new("test-node").to_proto(),
        config,
        policy,
    )
}

/// The weighted split of the target's `/` route, if the snapshot has one.
fn split(s: &Snapshot) -> Option<Vec<(String, u32)>> {
    let rc = s.outbound(TARGET)?.route_config()?;
    let (_, route) = rc.route_for(TARGET, "/", &HeaderMap::new(), 0)?;
    let RouteAction::Forward(f) = route.action() else {
        return None;
    };
    let ClusterSpecifier::Weighted(w) = f.clusters() else {
        return None;
    };
    Some(
        w.clusters()
            .iter()
            .map(|c| (c.name().to_owned(), c.weight()))
            .collect(),
    )
}

fn pairs(list: &[(&str, u32)]) -> Option<Vec<(String, u32)>> {
    Some(list.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect())
}

/// Every published snapshot must be whole: its listener has its routes, every routed
/// cluster exists, every EDS cluster has its endpoints.
fn assert_complete(s: &Snapshot) {
    s.validate().unwrap();
    for c in s.clusters() {
        assert!(
            s.endpoints_of(c).is_some(),
            "cluster {} without endpoints",
            c.name()
        );
    }
}

async fn wait_policy(
    policy: &LivePolicy,
    mut pred: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut watch = policy.watch();
    let wait = async {
        let mut current = policy.snapshot();
        loop {
            if policy.generation() > 0 {
                assert_complete(&current);
            }
            if pred(&current) {
                return current;
            }
            current = watch.changed().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "condition not reached; last snapshot: {:#?}",
                policy.snapshot()
            )
        })
}

async fn wait_view(client: &XdsClient, mut pred: impl FnMut(&ClientView) -> bool) {
    let mut rx = client.watch();
    let wait = async {
        loop {
            if pred(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("condition not reached; last view: {:#?}", client.view()));
}

fn state(view: &ClientView, t: XdsType, name: &str) -> Option<ResourceState> {
    view.cache.get(t, name).map(|e| e.state)
}

#[tokio::test]
async fn weighted_split_is_published_then_updated() {
    let server = TestAdsServer::start().await.unwrap();
    serve_payment(&server);
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, policy.clone());
    client.add_target(TARGET).await.unwrap();

    let first = wait_policy(&policy, |s| split(s).is_some()).await;
    assert_eq!(split(&first), pairs(&[("v1", 90), ("v2", 10)]));
    let v1 = first.cluster("v1").unwrap();
    assert_eq!(v1.eds_name(), "v1-eds");
    assert_eq!(first.endpoints_of(v1).unwrap().endpoints().count(), 2);
    assert_eq!(first.endpoints("v2").unwrap().endpoints().count(), 1);
    assert!(first.version().contains("RDS="), "{}", first.version());

    server.put(
        RDS,
        "payment-routes",
        routes("payment-routes", &[("v1", 50), ("v2", 50)]),
    );
    let second = wait_policy(&policy, |s| split(s) == pairs(&[("v1", 50), ("v2", 50)])).await;
    // Only the route configuration changed: the clusters and endpoints are the same Arcs.
    assert!(Arc::ptr_eq(
        first.cluster("v1").unwrap(),
        second.cluster("v1").unwrap()
    ));
    assert!(Arc::ptr_eq(
        first.endpoints("v2").unwrap(),
        second.endpoints("v2").unwrap()
    ));
    assert_eq!(
        client.view().snapshot.as_ref().map(|s| s.version()),
        Some(second.version())
    );
    client.shutdown().await;
}

#[tokio::test]
async fn nacked_update_leaves_the_previous_snapshot_in_force() {
    let server = TestAdsServer::start().await.unwrap();
    serve_payment(&server);
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, policy.clone());
    client.add_target(TARGET).await.unwrap();
    wait_policy(&policy, |s| split(s).is_some()).await;
    wait_view(&client, |v| {
        v.cache
            .iter()
            .all(|(_, _, e)| e.state == ResourceState::Acked)
    })
    .await;
    let generation = policy.generation();

    // Weights summing to zero: gRFC A28 rejects the route configuration.
    server.put(
        RDS,
        "payment-routes",
        routes("payment-routes", &[("v1", 0), ("v2", 0)]),
    );
    let nack = server
        .wait_for_request(PATIENCE, |r| r.xds_type() == Some(RDS) && r.is_nack())
        .await
        .unwrap();
    let message = &nack.request.error_detail.as_ref().unwrap().message;
    assert!(
        message.contains("virtual_hosts[0].routes[0].route.weighted_clusters"),
        "{message}"
    );
    wait_view(&client, |v| {
        state(v, RDS, "payment-routes") == Some(ResourceState::Nacked)
    })
    .await;

    assert_eq!(
        policy.generation(),
        generation,
        "nothing published for a NACK"
    );
    assert_eq!(split(&policy.snapshot()), pairs(&[("v1", 90), ("v2", 10)]));
    client.shutdown().await;
}

#[tokio::test]
async fn no_torn_view_while_a_new_cluster_has_no_endpoints_yet() {
    let server = TestAdsServer::start().await.unwrap();
    serve_payment(&server);
    let policy = LivePolicy::new(Snapshot::empty());
    let client = start(&server, policy.clone());
    client.add_target(TARGET).await.unwrap();
    wait_policy(&policy, |s| split(s).is_some()).await;

    // The routes move to a cluster whose endpoints the server does not have yet.
    server.put(CDS, "v3", cluster_eds("v3", None));
    server.put(
        RDS,
        "payment-routes",
        routes("payment-routes", &[("v1", 50), ("v3", 50)]),
    );
    wait_view(&client, |v| {
        state(v, CDS, "v3") == Some(ResourceState::Acked)
            && state(v, EDS, "v3") == Some(ResourceState::Requested)
    })
    .await;
    let held = policy.snapshot();
    assert_eq!(
        split(&held),
        pairs(&[("v1", 90), ("v2", 10)]),
        "the old view stays whole"
    );
    assert_complete(&held);

    server.put(EDS, "v3", endpoints("v3", &[addr("10.0.3.1:8080")]));
    let next = wait_policy(&policy, |s| split(s) == pairs(&[("v1", 50), ("v3", 50)])).await;
    assert_eq!(next.endpoints("v3").unwrap().endpoints().count(), 1);
    client.shutdown().await;
}
