#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::classify::{classify, grpc_code, TransportError};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::time::Duration;

fn http(s: u16) -> ResponseClass {
    classify(Some(s), None, None)
}

fn transport(e: TransportError) -> ResponseClass {
    classify(None, None, Some(e))
}

fn grpc(code: i32) -> ResponseClass {
    classify(Some(200), Some(code), None)
}

#[test]
fn parses_envoy_and_istio_strings() {
    let all = "5xx,gateway-error,reset,connect-failure,retriable-4xx,refused-stream,\
               retriable-status-codes,retriable-headers,cancelled,deadline-exceeded,internal,\
               resource-exhausted,unavailable";
    let on = RetryOn::parse(all).unwrap();
    assert_eq!(on.names().count(), RetryOn::KNOWN_NAMES.len());
    assert!(on.retriable_headers());
    let istio: RetryOn = " connect-failure, refused-stream ,unavailable,cancelled,,"
        .parse()
        .unwrap();
    assert_eq!(
        istio.names().collect::<Vec<_>>(),
        [
            "connect-failure",
            "refused-stream",
            "cancelled",
            "unavailable"
        ]
    );
    assert!(RetryOn::parse("").unwrap().is_empty());
}

#[test]
fn unknown_token_is_named() {
    let err = RetryOn::parse("5xx,bogus,reset").unwrap_err();
    assert_eq!(err.token, "bogus");
    assert!(err.to_string().contains("\"bogus\""));
}

#[test]
fn matching() {
    let five = RetryOn::parse("5xx").unwrap();
    assert!(five.matches(&http(500)));
    assert!(five.matches(&http(503)));
    assert!(five.matches(&transport(TransportError::Reset)));
    assert!(five.matches(&transport(TransportError::ConnectFailure)));
    assert!(!five.matches(&http(409)));
    assert!(!five.matches(&http(200)));
    assert!(!five.matches(&grpc(grpc_code::UNAVAILABLE)));

    let gw = RetryOn::parse("gateway-error").unwrap();
    assert!(gw.matches(&http(502)));
    assert!(!gw.matches(&http(500)));

    let cf = RetryOn::parse("connect-failure").unwrap();
    assert!(cf.matches(&transport(TransportError::ConnectFailure)));
    assert!(!cf.matches(&transport(TransportError::Reset)));

    let reset = RetryOn::parse("reset").unwrap();
    assert!(reset.matches(&transport(TransportError::Timeout)));
    assert!(!reset.matches(&transport(TransportError::RefusedStream)));
    assert!(RetryOn::parse("refused-stream")
        .unwrap()
        .matches(&transport(TransportError::RefusedStream)));

    let four = RetryOn::parse("retriable-4xx").unwrap();
    assert!(four.matches(&http(409)));
    assert!(!four.matches(&http(404)));

    let codes = RetryOn::parse("retriable-status-codes")
        .unwrap()
        .with_retriable_status_codes([429, 500]);
    assert!(codes.matches(&http(429)));
    assert!(codes.matches(&http(500)));
    assert!(!codes.matches(&http(503)));
    // The list alone does nothing without the condition.
    let list_only = RetryOn::none().with_retriable_status_codes([429]);
    assert!(!list_only.matches(&http(429)));

    let g = RetryOn::parse("unavailable,cancelled").unwrap();
    assert!(g.matches(&grpc(grpc_code::UNAVAILABLE)));
    assert!(g.matches(&grpc(grpc_code::CANCELLED)));
    assert!(!g.matches(&grpc(grpc_code::INTERNAL)));
    assert!(!g.matches(&grpc(grpc_code::OK)));
}

#[test]
fn retry_state_counts_and_stops() {
    let policy = RetryPolicy::new(1, RetryOn::parse("5xx").unwrap());
    let mut state = RetryState::new();
    assert_eq!(
        state.on_attempt(&policy, &http(404)),
        RetryDecision::Stop(StopReason::NotRetriable)
    );
    assert_eq!(
        state.on_attempt(&policy, &http(500)),
        RetryDecision::Retry { retry: 1 }
    );
    assert_eq!(
        state.on_attempt(&policy, &http(500)),
        RetryDecision::Stop(StopReason::RetriesExhausted)
    );
    assert_eq!(
        state.on_attempt(&policy, &http(200)),
        RetryDecision::Stop(StopReason::Success)
    );
    assert_eq!(state.retries_made(), 1);
}

#[test]
fn backoff_defaults_and_ceilings() {
    let b = BackoffConfig::default();
    assert_eq!(b.base_interval, Duration::from_millis(25));
    assert_eq!(b.max_interval, Duration::from_millis(250));
    assert_eq!(b.ceiling(1), Duration::from_millis(25));
    assert_eq!(b.ceiling(2), Duration::from_millis(75));
    assert_eq!(b.ceiling(3), Duration::from_millis(175));
    assert_eq!(b.ceiling(4), Duration::from_millis(250));
    assert_eq!(b.ceiling(1000), Duration::from_millis(250));
}

#[test]
fn budget_min_concurrency_and_percent() {
    let budget = RetryBudget::new(&RetryBudgetConfig::default());
    // With no requests, min_retry_concurrency (3) still applies.
    let r: Vec<_> = (0..3).map(|_| budget.try_retry().unwrap()).collect();
    let err = budget.try_retry().unwrap_err();
    assert_eq!(err.allowed, 3);
    drop(r);
    // 100 requests in flight at 20% allow 20 retries.
    let reqs: Vec<_> = (0..100).map(|_| budget.request()).collect();
    let r: Vec<_> = (0..20).map(|_| budget.try_retry().unwrap()).collect();
    assert!(budget.try_retry().is_err());
    drop(r);
    drop(reqs);
    assert_eq!(budget.active_requests(), 0);
    assert_eq!(budget.active_retries(), 0);
    budget.set_config(&RetryBudgetConfig::new(50.0, 0));
    assert_eq!(budget.allowed(), 0);
}

proptest! {
    #[test]
    fn backoff_within_bounds(base_ms in 1u64..1000, max_mul in 0u32..50, retry in 0u32..200, seed: u64) {
        let base = Duration::from_millis(base_ms);
        let cfg = BackoffConfig::new(base).with_max_interval(base * max_mul);
        let mut rng = SmallRng::seed_from_u64(seed);
        let d = cfg.delay(retry, &mut rng);
        prop_assert!(d <= cfg.max_interval.max(base));
        prop_assert!(d <= cfg.ceiling(retry));
        prop_assert!(cfg.ceiling(retry) >= base.min(cfg.max_interval.max(base)));
    }

    #[test]
    fn budget_never_exceeded(
        percent in 0.0f64..100.0,
        min in 0u32..10,
        ops in proptest::collection::vec(0u8..4, 1..300),
    ) {
        let budget = RetryBudget::new(&RetryBudgetConfig::new(percent, min));
        let mut requests = Vec::new();
        let mut retries = Vec::new();
        for op in ops {
            match op {
                0 => requests.push(budget.request()),
                1 => { requests.pop(); }
                2 => if let Ok(t) = budget.try_retry() {
                    retries.push(t);
                    let allowed = (requests.len() as f64 * percent / 100.0).round() as u64;
                    // Each granted retry fit the budget at the moment it was granted.
                    prop_assert!(retries.len() as u64 <= allowed.max(u64::from(min)) + 1);
                    prop_assert!(budget.active_retries() <= budget.allowed());
                },
                _ => { retries.pop(); }
            }
        }
    }
}
