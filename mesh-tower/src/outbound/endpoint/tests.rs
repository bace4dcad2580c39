#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use mesh_core::classify::TransportError;
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Endpoint};
use mesh_core::outlier::OutlierConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::Endpoints;
use crate::body::ReplayBody;
use crate::error::MeshError;
use crate::metrics::Metrics;
use crate::outbound::attempt::Attempt;
use crate::outbound::cluster::ClusterState;

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `status` and the Host
/// header it got (as `x-host`); with `status` 0 it reads and never answers.
async fn server(status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if status == 0 {
                    let _ = conn.read(&mut buf).await;
                    return;
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("host: "))
                    .unwrap_or("")
                    .to_owned();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nx-host: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

fn cluster(endpoints: &[SocketAddr], outlier: Option<OutlierConfig>) -> Arc<ClusterState> {
    let mut config = Cluster::new("payments");
    config.outlier_detection = outlier;
    let cla = ClusterLoadAssignment::from_endpoints(
        "payments",
        endpoints.iter().map(|a| Endpoint::new(*a)).collect(),
    );
    Arc::new(ClusterState::build(
        Arc::new(config),
        Some(Arc::new(cla)),
        None,
        None,
        &Metrics::default(),
        std::time::Instant::now(),
    ))
}

fn attempt(path: &str) -> Attempt {
    let mut req = Request::new(ReplayBody::empty());
    *req.uri_mut() = path.parse().unwrap();
    Attempt::new(req, tokio::time::Instant::now())
}

#[tokio::test]
async fn an_attempt_goes_to_the_endpoint_with_the_target_s_host() {
    let addr = server(200).await;
    let svc = Endpoints::new(
        cluster(&[addr], None),
        Some(HeaderValue::from_static("payment-service:8080")),
    );
    let resp = svc.oneshot(attempt("/pay?x=1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-host"], "payment-service:8080");
    assert_eq!(resp.body().endpoint(), Some(addr));
}

#[tokio::test]
async fn the_previous_endpoint_is_avoided_when_another_is_there() {
    let (a, b) = (server(200).await, server(200).await);
    let state = cluster(&[a, b], None);
    for _ in 0..20 {
        let mut try_again = attempt("/");
        try_again.avoid = Some(a);
        let resp = Endpoints::new(Arc::clone(&state), None)
            .oneshot(try_again)
            .await
            .unwrap();
        assert_eq!(resp.body().endpoint(), Some(b));
    }
}

#[tokio::test]
async fn a_5xx_counts_toward_the_endpoint_s_ejection() {
    let addr = server(503).await;
    let mut outlier = OutlierConfig::default().with_max_ejection_percent(100);
    outlier.consecutive_5xx = 2;
    let state = cluster(&[addr], Some(outlier));
    let svc = Endpoints::new(Arc::clone(&state), None);
    let first = svc.clone().oneshot(attempt("/")).await.unwrap();
    assert_eq!(first.status(), 503);
    assert!(!state.endpoint_status()[0].ejected);
    let second = svc.oneshot(attempt("/")).await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(state.endpoint_status()[0].ejected);
}

#[tokio::test]
async fn an_attempt_past_its_deadline_is_the_endpoint_s_timeout() {
    let addr = server(0).await;
    let svc = Endpoints::new(cluster(&[addr], None), None);
    let mut slow = attempt("/");
    slow.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(200));
    // A guard against a hang if the deadline were ignored (the server never answers).
    let failed = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(slow))
        .await
        .expect("the attempt outlived its deadline")
        .unwrap_err();
    assert_eq!(failed.transport, Some(TransportError::Timeout));
    assert_eq!(failed.endpoint, Some(addr));
    assert!(matches!(failed.error, MeshError::Timeout(_)));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure_of_that_endpoint() {
    // A port with no listener: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let svc = Endpoints::new(cluster(&[addr], None), None);
    let failed = svc.oneshot(attempt("/")).await.unwrap_err();
    assert_eq!(failed.transport, Some(TransportError::ConnectFailure));
    assert_eq!(failed.endpoint, Some(addr));
}

#[tokio::test]
async fn a_cluster_without_endpoints_refuses_without_a_transport_failure() {
    let svc = Endpoints::new(cluster(&[], None), None);
    let failed = svc.oneshot(attempt("/")).await.unwrap_err();
    assert_eq!(failed.transport, None);
    assert!(matches!(failed.error, MeshError::NoHealthyEndpoint(ref c) if c == "payments"));
}

#[tokio::test]
async fn an_attempt_in_flight_across_an_update_is_counted_down_on_the_new_state() {
    let addr = server(0).await;
    let before = cluster(&[addr], None);
    let stuck = tokio::spawn(Endpoints::new(Arc::clone(&before), None).oneshot(attempt("/")));
    // Bounded: the attempt is counted as soon as it is sent.
    for _ in 0..1_000 {
        if before.endpoint_status()[0].active_requests == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(before.endpoint_status()[0].active_requests, 1);

    // An update that keeps the endpoint (the control plane re-sent its assignment).
    let cla = ClusterLoadAssignment::from_endpoints("payments", vec![Endpoint::new(addr)]);
    let after = ClusterState::build(
        Arc::clone(&before.config),
        Some(Arc::new(cla)),
        Some(&before),
        None,
        &Metrics::default(),
        std::time::Instant::now(),
    );
    assert_eq!(after.endpoint_status()[0].active_requests, 1);
    // The attempt ends (cancelled here): the new state counts it down too, so least
    // request does not see it in flight for ever.
    stuck.abort();
    let _ = stuck.await;
    assert_eq!(after.endpoint_status()[0].active_requests, 0);
}
