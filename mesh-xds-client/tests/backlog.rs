//! The ADS server keeps a client that stopped reading up to date: when a stream's buffer is
//! full, a push is not lost; the current state goes out once the client reads again and
//! acknowledges. State of the world (the latest version arrives) and delta (the latest
//! version, then a removal, arrive). A raw ADS stream over real gRPC on 127.0.0.1 plays
//! the client: it reads one response, stops reading while hundreds of changes are pushed,
//! then reads and ACKs as a real client does. The test's runtime has one thread and the
//! pushes do not yield, so nothing drains the server's 256-response buffer meanwhile: the
//! pushes past it find it full (`read < PUSHES` checks that they did).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::server::AdsServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A deadline for a hung test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// Changes pushed while the client does not read: more than the server's 256-response
/// buffer (and, should the pushes ever yield, than HTTP/2 would carry meanwhile).
const PUSHES: usize = 400;

/// A resource of 16 KiB whose bytes say which version it is.
fn cluster(version: usize) -> Any {
    Any {
        type_url: XdsType::Cluster.type_url().to_owned(),
        value: format!("{version:016}").repeat(1024).into_bytes(),
    }
}

fn version_of(any: &Any) -> usize {
    std::str::from_utf8(&any.value[..16])
        .unwrap()
        .parse()
        .unwrap()
}

async fn client(server: &AdsServer) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let addr = server.addr().unwrap();
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn next<T: prost::Message + Default>(rx: &mut Streaming<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.message())
        .await
        .expect("no response in time: a push was lost")
        .unwrap()
        .expect("stream ended")
}

async fn send<T>(tx: &mpsc::Sender<T>, request: T) {
    tokio::time::timeout(PATIENCE, tx.send(request))
        .await
        .expect("the request was not taken in time")
        .unwrap();
}

fn sotw_request(version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: XdsType::Cluster.type_url().to_owned(),
        resource_names: vec!["big".to_owned()],
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        ..DiscoveryRequest::default()
    }
}

fn ack(r: &DiscoveryResponse) -> DiscoveryRequest {
    sotw_request(&r.version_info, &r.nonce)
}

#[tokio::test]
async fn a_client_that_stopped_reading_gets_the_latest_state_of_the_world() {
    let server = AdsServer::start().await.unwrap();
    server.put(XdsType::Cluster, "big", cluster(0));
    let mut client = client(&server).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(sotw_request("", "")).await.unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut responses).await;
    assert_eq!(version_of(&first.resources[0]), 0);
    send(&tx, ack(&first)).await;

    // The client reads nothing while the resource changes PUSHES times.
    for v in 1..=PUSHES {
        server.put(XdsType::Cluster, "big", cluster(v));
    }

    // It reads again, acknowledging each response, until it has the latest version.
    read_backlog(&mut responses, &tx, ack, |r| version_of(&r.resources[0])).await;
}

/// Reads responses, ACKing each, until one holds version [`PUSHES`]; checks that fewer
/// than `PUSHES` arrived (the buffer did fill, else the test proves nothing).
async fn read_backlog<T: prost::Message + Default, R>(
    responses: &mut Streaming<T>,
    tx: &mpsc::Sender<R>,
    ack: fn(&T) -> R,
    version: impl Fn(&T) -> usize,
) {
    let mut read = 0;
    loop {
        let r = next(responses).await;
        read += 1;
        send(tx, ack(&r)).await;
        if version(&r) == PUSHES {
            break;
        }
        assert!(read <= PUSHES + 1, "read {read} responses, none current");
    }
    assert!(
        read < PUSHES,
        "every push was delivered: the buffer never filled"
    );
}

fn delta_ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: XdsType::Cluster.type_url().to_owned(),
        response_nonce: r.nonce.clone(),
        ..DeltaDiscoveryRequest::default()
    }
}

#[tokio::test]
async fn a_delta_client_that_stopped_reading_gets_the_latest_version_and_the_removal() {
    let server = AdsServer::start().await.unwrap();
    server.put(XdsType::Cluster, "big", cluster(0));
    let mut client = client(&server).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        type_url: XdsType::Cluster.type_url().to_owned(),
        resource_names_subscribe: vec!["big".to_owned()],
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut responses).await;
    assert_eq!(version_of(first.resources[0].resource.as_ref().unwrap()), 0);
    send(&tx, delta_ack(&first)).await;

    for v in 1..=PUSHES {
        server.put(XdsType::Cluster, "big", cluster(v));
    }

    // The latest version arrives.
    read_backlog(&mut responses, &tx, delta_ack, |r| {
        assert!(r.removed_resources.is_empty(), "{:?}", r.removed_resources);
        version_of(r.resources[0].resource.as_ref().unwrap())
    })
    .await;

    // Again with a removal as the last change: it arrives, whatever came before it.
    for v in PUSHES + 1..=2 * PUSHES {
        server.put(XdsType::Cluster, "big", cluster(v));
    }
    server.remove(XdsType::Cluster, "big");
    loop {
        let r = next(&mut responses).await;
        send(&tx, delta_ack(&r)).await;
        if r.removed_resources == ["big"] {
            assert!(r.resources.is_empty());
            break;
        }
    }
}
