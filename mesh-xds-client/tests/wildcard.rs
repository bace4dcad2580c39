//! The test ADS server answers state-of-the-world wildcard subscriptions as Envoy sends
//! them (LDS/CDS with no names on the stream's first request, or `*`), pushes changes to
//! them, honours its wildcard filter, and treats an empty request after named ones as
//! unsubscribing. A raw ADS stream over real gRPC on 127.0.0.1 plays the client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::{fixtures, TestAdsServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const PATIENCE: Duration = Duration::from_secs(10);

struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    /// The call, answered (headers and all) only with the server's first response, as
    /// grpc-go and C-core servers answer; requests go out meanwhile.
    call: Option<tokio::task::JoinHandle<Streaming<DiscoveryResponse>>>,
    rx: Option<Streaming<DiscoveryResponse>>,
}

impl Stream {
    async fn open(server: &TestAdsServer) -> Self {
        let addr = server.addr().unwrap();
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let call = tokio::spawn(async move {
            client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner()
        });
        Self {
            tx,
            call: Some(call),
            rx: None,
        }
    }

    async fn send(&self, node: Option<&str>, t: XdsType, names: &[&str], nonce: &str) {
        let request = DiscoveryRequest {
            node: node.map(|id| Node {
                id: id.to_owned(),
                ..Node::default()
            }),
            type_url: t.type_url().to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..DiscoveryRequest::default()
        };
        self.tx.send(request).await.unwrap();
    }

    async fn next(&mut self) -> DiscoveryResponse {
        let next = async {
            if let Some(call) = self.call.take() {
                self.rx = Some(call.await.unwrap());
            }
            self.rx.as_mut().unwrap().message().await
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("no response")
            .unwrap()
            .expect("stream ended")
    }
}

fn count(r: &DiscoveryResponse) -> usize {
    r.resources.len()
}

#[tokio::test]
async fn wildcard_lds_and_cds_get_everything_and_pushes() {
    let server = TestAdsServer::start().await.unwrap();
    server.put(
        XdsType::Listener,
        "a:80",
        fixtures::listener_rds("a:80", "r"),
    );
    server.put(
        XdsType::Listener,
        "b:80",
        fixtures::listener_rds("b:80", "r"),
    );
    server.put(XdsType::Cluster, "c", fixtures::cluster_eds("c", None));
    let mut envoy = Stream::open(&server).await;

    envoy.send(Some("envoy"), XdsType::Cluster, &[], "").await;
    let cds = envoy.next().await;
    assert_eq!(cds.type_url, XdsType::Cluster.type_url());
    assert_eq!(count(&cds), 1);
    envoy.send(None, XdsType::Cluster, &[], &cds.nonce).await; // ACK
    envoy.send(None, XdsType::Listener, &["*"], "").await;
    let lds = envoy.next().await;
    assert_eq!(count(&lds), 2);
    envoy
        .send(None, XdsType::Listener, &["*"], &lds.nonce)
        .await;

    // A new listener is pushed with the whole set; EDS names stay explicit.
    server.put(
        XdsType::Listener,
        "c:80",
        fixtures::listener_rds("c:80", "r"),
    );
    let lds = envoy.next().await;
    assert_eq!(count(&lds), 3);
    envoy
        .send(None, XdsType::ClusterLoadAssignment, &[], "")
        .await;
    let eds = envoy.next().await;
    assert_eq!(count(&eds), 0, "an empty EDS request is no wildcard");
}

#[tokio::test]
async fn the_filter_hides_resources_from_wildcards_only() {
    let server = TestAdsServer::start().await.unwrap();
    server.put(
        XdsType::Listener,
        "a:80",
        fixtures::listener_rds("a:80", "r"),
    );
    server.set_wildcard_filter(Arc::new(|node, _, _| {
        node.is_some_and(|n| n.id == "proxyless")
    }));
    let mut envoy = Stream::open(&server).await;
    envoy.send(Some("envoy"), XdsType::Listener, &[], "").await;
    assert_eq!(count(&envoy.next().await), 0);

    let mut grpc = Stream::open(&server).await;
    grpc.send(Some("proxyless"), XdsType::Listener, &[], "")
        .await;
    assert_eq!(count(&grpc.next().await), 1);

    let mut named = Stream::open(&server).await;
    named
        .send(Some("envoy"), XdsType::Listener, &["a:80"], "")
        .await;
    assert_eq!(count(&named.next().await), 1, "named requests are answered");
    // Dropping every name after naming some unsubscribes: an empty answer, no wildcard.
    named.send(None, XdsType::Listener, &[], "").await;
    assert_eq!(count(&named.next().await), 0);
}
