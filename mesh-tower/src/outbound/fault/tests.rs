#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};
use mesh_core::route::FaultDelay;
use tokio::time::Instant;
use tower_test::mock;

use super::*;
use crate::body::BoxError;

type Mock = mock::Mock<Request<()>, Response<ResponseBody>>;
type Handle = mock::Handle<Request<()>, Response<ResponseBody>>;

/// The inner service of a fault filter under test: a mock whose failures are the mesh's.
type Inner = tower::util::MapErr<Mock, fn(BoxError) -> MeshError>;

fn inner() -> (Inner, Handle) {
    let (svc, handle): (Mock, Handle) = mock::pair();
    let upstream: fn(BoxError) -> MeshError = |e| MeshError::Upstream {
        endpoint: "mock".into(),
        reason: e.to_string(),
    };
    (svc.map_err(upstream), handle)
}

fn delay_all(delay: Duration) -> FaultInjection {
    FaultInjection {
        delay: Some(FaultDelay {
            fixed: Some(delay),
            header_controlled: false,
            percentage: FractionalPercent::new(100, 100),
        }),
        ..FaultInjection::default()
    }
}

/// Waits for `f`; on the paused clock the limit passes only when nothing else can happen,
/// so a test waiting for a request that never comes fails instead of hanging.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("waited for something that never happened")
}

fn abort_all(status: u16) -> FaultInjection {
    FaultInjection {
        abort: Some(FaultAbort::Http {
            status,
            percentage: FractionalPercent::new(100, 100),
        }),
        ..FaultInjection::default()
    }
}

#[test]
fn abort_by_percentage() {
    let active = ActiveFaults::default();
    let mut f = abort_all(503);
    f.abort = Some(FaultAbort::Http {
        status: 503,
        percentage: FractionalPercent::new(30, 100),
    });
    let hits = (0..100u64)
        .filter(|r| {
            decide(&f, &HeaderMap::new(), &active, (0, *r))
                .0
                .abort
                .is_some()
        })
        .count();
    assert_eq!(hits, 30);
}

#[test]
fn header_condition_and_override() {
    let active = ActiveFaults::default();
    let mut f = abort_all(503);
    f.headers = vec![HeaderMatcher::new(
        "x-chaos",
        HeaderValueMatch::String(StringMatcher::exact("on")),
        false,
    )
    .expect("valid")];
    assert_eq!(
        decide(&f, &HeaderMap::new(), &active, (0, 0)).0,
        FaultDecision::default()
    );
    let mut h = HeaderMap::new();
    h.insert("x-chaos", http::HeaderValue::from_static("on"));
    assert_eq!(
        decide(&f, &h, &active, (0, 0)).0.abort,
        Some(Abort::Http(503))
    );
    // The request may lower the percentage to zero.
    h.insert(
        "x-envoy-fault-abort-request-percentage",
        http::HeaderValue::from_static("0"),
    );
    assert_eq!(decide(&f, &h, &active, (0, 0)).0.abort, None);
}

#[test]
fn header_controlled_delay_and_grpc_abort() {
    let active = ActiveFaults::default();
    let f = FaultInjection {
        delay: Some(FaultDelay {
            fixed: None,
            header_controlled: true,
            percentage: FractionalPercent::new(100, 100),
        }),
        abort: Some(FaultAbort::HeaderControlled {
            percentage: FractionalPercent::new(100, 100),
        }),
        ..FaultInjection::default()
    };
    let mut h = HeaderMap::new();
    h.insert(
        "x-envoy-fault-delay-request",
        http::HeaderValue::from_static("250"),
    );
    h.insert(
        "x-envoy-fault-abort-grpc-request",
        http::HeaderValue::from_static("14"),
    );
    let (d, _slot) = decide(&f, &h, &active, (0, 0));
    assert_eq!(d.delay, Some(Duration::from_millis(250)));
    assert_eq!(d.abort, Some(Abort::Grpc(14)));
}

#[test]
fn max_active_faults_lets_requests_through() {
    let active = ActiveFaults::default();
    let mut f = abort_all(500);
    f.max_active_faults = Some(1);
    let (first, slot) = decide(&f, &HeaderMap::new(), &active, (0, 0));
    assert!(first.abort.is_some());
    let (second, _) = decide(&f, &HeaderMap::new(), &active, (0, 0));
    assert!(
        second.abort.is_none(),
        "second concurrent fault is over the limit"
    );
    drop(slot);
    let (third, _) = decide(&f, &HeaderMap::new(), &active, (0, 0));
    assert!(third.abort.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_reaches_the_inner_service_after_the_delay_holding_none_of_its_capacity()
{
    let f = delay_all(Duration::from_secs(5));
    let active = ActiveFaults::default();
    let (svc, mut handle) = inner();
    // The inner service has no capacity: the fault filter is ready all the same, and
    // takes the inner service's readiness only once the delay is over.
    handle.allow(0);
    let mut fault = Fault::new(&f, &active, false, svc);
    fault.ready().await.unwrap();
    let start = Instant::now();
    let call = fault.call(Request::new(()));
    let upstream = async {
        let early = tokio::time::timeout(Duration::from_millis(4_900), handle.next_request()).await;
        assert!(early.is_err(), "the request went upstream before its delay");
        handle.allow(1);
        let (_, send) = within(handle.next_request()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(5));
        send.send_response(Response::new(ResponseBody::full("ok")));
    };
    let (resp, ()) = tokio::join!(call, upstream);
    assert_eq!(resp.unwrap().status(), http::StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_http_request_is_answered_without_the_inner_service() {
    let f = abort_all(503);
    let active = ActiveFaults::default();
    let (svc, mut handle) = inner();
    let resp = Fault::new(&f, &active, false, svc)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.extensions().get(), Some(&MeshError::FaultAbort));
    // Every handle to the inner service is gone and it saw nothing.
    assert!(handle.next_request().await.is_none());
    assert_eq!(
        active.0.load(Ordering::Relaxed),
        0,
        "the fault slot is given back"
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_aborts_are_grpc_statuses_and_a_grpc_code_on_http_is_the_mesh_error() {
    let active = ActiveFaults::default();
    // An HTTP status on a gRPC call: the code gRPC maps it to.
    let (svc, _handle) = inner();
    let resp = Fault::new(&abort_all(503), &active, true, svc)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "14");

    let grpc_abort = FaultInjection {
        abort: Some(FaultAbort::Grpc {
            code: 8,
            percentage: FractionalPercent::new(100, 100),
        }),
        ..FaultInjection::default()
    };
    let (svc, _handle) = inner();
    let resp = Fault::new(&grpc_abort, &active, true, svc.clone())
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "8");
    let err = Fault::new(&grpc_abort, &active, false, svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err, MeshError::FaultAbort);
}

#[tokio::test(start_paused = true)]
async fn past_max_active_faults_requests_go_through_at_once_until_a_fault_ends() {
    let mut f = delay_all(Duration::from_secs(10));
    f.max_active_faults = Some(1);
    let active = ActiveFaults::default();
    let (svc, mut handle) = inner();
    let start = Instant::now();
    let first = Fault::new(&f, &active, false, svc.clone()).oneshot(Request::new(()));
    let second = Fault::new(&f, &active, false, svc.clone()).oneshot(Request::new(()));
    let upstream = async {
        // The second request is over the limit: not delayed.
        let (_, send) = within(handle.next_request()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        send.send_response(Response::new(ResponseBody::full("second")));
        let (_, send) = within(handle.next_request()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(10));
        send.send_response(Response::new(ResponseBody::full("first")));
    };
    // `first` is polled (and takes the one fault slot) before `second`.
    let (a, b, ()) = tokio::join!(first, second, upstream);
    a.unwrap();
    b.unwrap();
    assert_eq!(active.0.load(Ordering::Relaxed), 0);

    // With the slot given back, the next request is delayed again.
    let start = Instant::now();
    let third = Fault::new(&f, &active, false, svc).oneshot(Request::new(()));
    let upstream = async {
        let (_, send) = within(handle.next_request()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(10));
        send.send_response(Response::new(ResponseBody::full("third")));
    };
    let (c, ()) = tokio::join!(third, upstream);
    c.unwrap();
}
