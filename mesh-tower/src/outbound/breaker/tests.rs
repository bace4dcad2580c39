#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http::{Request, Response, Version};
use mesh_core::breaker::{BreakerLimit, CircuitBreaker, Thresholds};
use mesh_core::cluster::Cluster;
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::Breaker;
use crate::body::{BoxError, ReplayBody};
use crate::error::MeshError;
use crate::outbound::attempt::Attempt;
use crate::outbound::response::ResponseBody;

fn attempt(version: Version) -> Attempt {
    let mut req = Request::new(ReplayBody::empty());
    *req.version_mut() = version;
    Attempt::new(req, tokio::time::Instant::now())
}

type Mock = mock::Mock<Attempt, Response<ResponseBody>>;
type Handle = mock::Handle<Attempt, Response<ResponseBody>>;

fn breaker(thresholds: Thresholds) -> (Breaker<Mock>, Handle, Arc<CircuitBreaker>) {
    let (inner, handle) = mock::pair();
    let mut cluster = Cluster::new("payments");
    cluster.circuit_breakers = thresholds.clone();
    let cb = Arc::new(CircuitBreaker::new(thresholds));
    (
        Breaker::new(inner, Arc::clone(&cb), Arc::new(cluster)),
        handle,
        cb,
    )
}

/// Waits for `f`; on the paused clock the limit passes only when nothing else can happen,
/// so a test waiting for a request that never comes fails instead of hanging.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(3600), f)
        .await
        .expect("waited for something that never happened")
}

fn open_limit(e: BoxError) -> BreakerLimit {
    match e.downcast_ref::<crate::outbound::attempt::Failed>() {
        Some(f) => match &f.error {
            MeshError::CircuitOpen { limit, cluster, .. } => {
                assert_eq!(cluster, "payments");
                *limit
            }
            other => panic!("not a breaker refusal: {other}"),
        },
        None => panic!("not an attempt's failure: {e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_request_slot_is_taken_when_ready_and_held_by_the_body_until_it_ends() {
    let (mut svc, mut handle, cb) = breaker(Thresholds::default().with_max_requests(1));
    svc.ready().await.unwrap();
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 1);

    // Another caller finds the breaker full at once, before sending anything.
    let mut other = svc.clone();
    let refused = other.ready().await.unwrap_err();
    assert_eq!(open_limit(refused), BreakerLimit::MaxRequests);

    let call = svc.call(attempt(Version::HTTP_11));
    let (_, send) = within(handle.next_request()).await.unwrap();
    send.send_response(Response::new(ResponseBody::full("ok")));
    let resp = call.await.unwrap();
    assert!(resp.body().holds_permit());
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 1);

    drop(resp);
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 0);
    other.ready().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_gives_its_slot_back() {
    let (svc, mut handle, cb) = breaker(Thresholds::default().with_max_requests(1));
    let call = svc.oneshot(attempt(Version::HTTP_11));
    let (served, result) = tokio::join!(
        async {
            let (_, send) = within(handle.next_request()).await.unwrap();
            assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 1);
            send.send_error(std::io::Error::other("reset"));
        },
        call
    );
    let () = served;
    assert!(result.is_err());
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 0);
}

#[tokio::test(start_paused = true)]
async fn an_http1_request_beyond_the_connections_waits_as_pending_and_h2_does_not() {
    let thresholds = Thresholds::default()
        .with_max_connections(1)
        .with_max_pending_requests(0);
    let (mut first, mut handle, cb) = breaker(thresholds);
    first.ready().await.unwrap();
    let _in_flight = first.call(attempt(Version::HTTP_11));
    let _ = within(handle.next_request()).await.unwrap();

    // Two requests on one HTTP/1.1 connection: the second would wait, and no wait is allowed.
    let mut second = first.clone();
    second.ready().await.unwrap();
    let refused = second.call(attempt(Version::HTTP_11)).await.unwrap_err();
    assert_eq!(open_limit(refused), BreakerLimit::MaxPendingRequests);
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 1);

    // HTTP/2 multiplexes: no request waits for a connection.
    let mut third = first.clone();
    third.ready().await.unwrap();
    let h2 = third.call(attempt(Version::HTTP_2));
    let (req, send) = within(handle.next_request()).await.unwrap();
    assert_eq!(req.req.version(), Version::HTTP_2);
    send.send_response(Response::new(ResponseBody::empty()));
    assert!(h2.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_call_without_poll_ready_is_refused_not_sent() {
    let (mut svc, mut handle, cb) = breaker(Thresholds::default());
    let refused = svc.call(attempt(Version::HTTP_11)).await.unwrap_err();
    assert!(
        refused.to_string().contains("without poll_ready"),
        "{refused}"
    );
    assert_eq!(cb.in_flight(BreakerLimit::MaxRequests), 0);
    assert!(handle.poll_request().is_pending());
}
