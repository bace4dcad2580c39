#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use mesh_core::breaker::{BreakerLimit, CircuitBreaker, Thresholds};
use mesh_core::classify::TransportError;
use mesh_core::cluster::Cluster;
use mesh_core::retry::{RetryBudget, RetryBudgetConfig, RetryOn, RetryPolicy};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_test::mock;

use super::{Retries, ATTEMPT_COUNT};
use crate::body::{BoxError, ReplayBody};
use crate::error::MeshError;
use crate::metrics::Metrics;
use crate::outbound::attempt::{Attempt, Failed};
use crate::outbound::response::ResponseBody;

type Handle = mock::Handle<Attempt, Response<ResponseBody>>;

fn policy(retries: u32) -> RetryPolicy {
    RetryPolicy::new(retries, RetryOn::parse("5xx,reset").unwrap())
}

fn retries(policy: &RetryPolicy, deadline: Option<Instant>, breaker: Thresholds) -> Retries<'_> {
    Retries::new(
        policy,
        deadline,
        Arc::new(CircuitBreaker::new(breaker)),
        None,
        Metrics::default(),
        Arc::new(Cluster::new("payments")),
    )
    .counting_attempts(true)
}

/// Sends `attempt` through `retries` over a mock; the mock's side runs `serve`.
async fn call<F: std::future::Future<Output = ()>>(
    retries: Retries<'_>,
    mut attempt: Attempt,
    serve: impl FnOnce(Handle) -> F,
) -> Result<Response<ResponseBody>, Failed> {
    let (inner, handle) = mock::pair::<Attempt, Response<ResponseBody>>();
    let inner = inner.map_err(|e: BoxError| match e.downcast::<Failed>() {
        Ok(f) => *f,
        Err(other) => panic!("the mock failed: {other}"),
    });
    retries.first(&mut attempt);
    let svc = tower::retry::Retry::new(retries, inner);
    // On the paused clock this fires only if the call waits for an attempt nobody answers.
    let joined = tokio::time::timeout(Duration::from_secs(3600), async {
        tokio::join!(svc.oneshot(attempt), serve(handle))
    })
    .await;
    match joined {
        Ok((result, ())) => result,
        Err(_) => panic!("the call is still waiting: it made an attempt the test did not expect"),
    }
}

fn buffered() -> Attempt {
    Attempt::new(Request::new(ReplayBody::empty()), Instant::now())
}

fn status(code: u16) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

fn count(a: &Attempt) -> &str {
    a.req.headers()[&ATTEMPT_COUNT].to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_and_the_attempts_are_numbered() {
    let p = policy(2);
    let resp = call(
        retries(&p, None, Thresholds::default()),
        buffered(),
        |mut h| async move {
            let (first, send) = h.next_request().await.unwrap();
            assert_eq!(count(&first), "1");
            send.send_response(status(503));
            let (second, send) = h.next_request().await.unwrap();
            assert_eq!(count(&second), "2");
            send.send_response(status(200));
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_not_numbered_unless_the_virtual_host_asks() {
    let p = policy(2);
    let resp = call(
        retries(&p, None, Thresholds::default()).counting_attempts(false),
        buffered(),
        |mut h| async move {
            let (first, send) = h.next_request().await.unwrap();
            assert!(!first.req.headers().contains_key(&ATTEMPT_COUNT));
            send.send_response(status(503));
            let (second, send) = h.next_request().await.unwrap();
            assert!(!second.req.headers().contains_key(&ATTEMPT_COUNT));
            send.send_response(status(200));
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200, "retried all the same");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_policy_s_number_and_the_last_answer_is_returned() {
    let p = policy(1);
    let resp = call(
        retries(&p, None, Thresholds::default()),
        buffered(),
        |mut h| async move {
            for _ in 0..2 {
                let (_, send) = h.next_request().await.unwrap();
                send.send_response(status(503));
            }
            // No third attempt: the mock sees no more requests once the call is over.
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_reset_is_retried_on_another_endpoint_within_the_per_try_timeout() {
    let p = policy(1).with_per_try_timeout(Some(Duration::from_millis(300)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed_at: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let resp = call(
        retries(&p, Some(deadline), Thresholds::default()),
        buffered(),
        |mut h| async move {
            let (first, send) = h.next_request().await.unwrap();
            assert!(first.deadline.unwrap() <= Instant::now() + Duration::from_millis(300));
            assert_eq!(first.avoid, None);
            send.send_error(Failed {
                error: MeshError::Upstream {
                    endpoint: failed_at.to_string(),
                    reason: "reset".into(),
                },
                transport: Some(TransportError::Reset),
                endpoint: Some(failed_at),
            });
            let (second, send) = h.next_request().await.unwrap();
            assert_eq!(second.avoid, Some(failed_at));
            let d = second.deadline.unwrap();
            assert!(d <= Instant::now() + Duration::from_millis(300) && d <= deadline);
            send.send_response(status(200));
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Sends `attempt` through `retries`; the first attempt gets `answer`, and any other
/// attempt fails the test.
async fn answered_once(
    retries: Retries<'_>,
    attempt: Attempt,
    answer: Result<Response<ResponseBody>, Failed>,
) -> Result<Response<ResponseBody>, Failed> {
    call(retries, attempt, |mut h| async move {
        let (_, send) = h.next_request().await.unwrap();
        match answer {
            Ok(resp) => send.send_response(resp),
            Err(failed) => send.send_error(failed),
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_not_retried() {
    let p = policy(3);
    let refusal = Failed::refused(MeshError::NoHealthyEndpoint("payments".into()));
    let r = retries(&p, None, Thresholds::default());
    let failed = answered_once(r, buffered(), Err(refusal))
        .await
        .unwrap_err();
    assert!(matches!(failed.error, MeshError::NoHealthyEndpoint(_)));
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_the_deadline() {
    let p = policy(3);
    let r = retries(&p, Some(Instant::now()), Thresholds::default());
    let resp = answered_once(r, buffered(), Ok(status(503))).await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_s_max_retries_refuses_a_retry() {
    let p = policy(3);
    let r = retries(&p, None, Thresholds::default().with_max_retries(0));
    // A second attempt would fail the test (`answered_once`).
    let resp = answered_once(r, buffered(), Ok(status(503))).await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn an_empty_retry_budget_refuses_a_retry() {
    let p = policy(3);
    let budget = RetryBudget::new(&RetryBudgetConfig::new(0.0, 0));
    let r = Retries::new(
        &p,
        None,
        Arc::new(CircuitBreaker::new(Thresholds::default())),
        Some(Arc::new(budget)),
        Metrics::default(),
        Arc::new(Cluster::new("payments")),
    );
    let resp = answered_once(r, buffered(), Ok(status(503))).await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_retry_holds_its_breaker_slot_through_its_attempt() {
    let p = policy(1);
    let r = retries(&p, None, Thresholds::default());
    let breaker = Arc::clone(&r.breaker);
    let seen = Arc::clone(&breaker);
    let resp = call(r, buffered(), |mut h| async move {
        let (_, send) = h.next_request().await.unwrap();
        assert_eq!(seen.in_flight(BreakerLimit::MaxRetries), 0);
        send.send_response(status(503));
        let (_, send) = h.next_request().await.unwrap();
        assert_eq!(seen.in_flight(BreakerLimit::MaxRetries), 1);
        send.send_response(status(200));
    })
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // The call is over: the retry's slot is given back.
    assert_eq!(breaker.in_flight(BreakerLimit::MaxRetries), 0);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_sent_once_and_never_copied() {
    let p = policy(3);
    let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        futures_util::stream::pending::<Result<http_body::Frame<bytes::Bytes>, BoxError>>(),
    ));
    let streaming = Attempt::new(
        Request::new(ReplayBody::Streaming {
            prefix: None,
            rest: body,
        }),
        Instant::now(),
    );
    let r = retries(&p, None, Thresholds::default());
    let resp = answered_once(r, streaming, Ok(status(503))).await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[test]
fn attempt_counts_are_the_decimal_numbers() {
    for n in 1..=12u32 {
        assert_eq!(super::attempt_count(n).to_str().unwrap(), n.to_string());
    }
}
