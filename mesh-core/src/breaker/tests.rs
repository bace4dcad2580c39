#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

#[test]
fn defaults_are_envoys() {
    let t = Thresholds::default();
    assert_eq!(t, Thresholds::new(1024, 1024, 1024, 3));
}

#[test]
fn each_limit_is_separate_and_named() {
    let breaker = CircuitBreaker::new(Thresholds::new(1, 1, 1, 1));
    let _c = breaker.try_connection().unwrap();
    let _p = breaker.try_pending().unwrap();
    let _r = breaker.try_request().unwrap();
    let _t = breaker.try_retry().unwrap();
    for limit in BreakerLimit::ALL {
        let err = breaker.try_acquire(limit).unwrap_err();
        assert_eq!(err, Overflow { limit, max: 1 });
        assert!(breaker.is_open(limit));
    }
    assert_eq!(
        breaker.try_retry().unwrap_err().to_string(),
        "circuit breaker open: max_retries (1) reached"
    );
}

#[test]
fn guard_releases_on_drop() {
    let breaker = CircuitBreaker::new(Thresholds::default());
    let guards: Vec<_> = (0..3).map(|_| breaker.try_retry().unwrap()).collect();
    assert!(breaker.try_retry().is_err());
    assert_eq!(breaker.in_flight(BreakerLimit::MaxRetries), 3);
    drop(guards);
    assert_eq!(breaker.in_flight(BreakerLimit::MaxRetries), 0);
    assert_eq!(breaker.remaining(BreakerLimit::MaxRetries), 3);
}

#[test]
fn thresholds_swap_keeps_in_flight() {
    let breaker = CircuitBreaker::new(Thresholds::default().with_max_requests(4));
    let held: Vec<_> = (0..3).map(|_| breaker.try_request().unwrap()).collect();
    breaker.set_thresholds(&Thresholds::default().with_max_requests(2));
    assert_eq!(breaker.in_flight(BreakerLimit::MaxRequests), 3);
    assert!(breaker.try_request().is_err());
    drop(held);
    let _a = breaker.try_request().unwrap();
    let _b = breaker.try_request().unwrap();
    assert!(breaker.try_request().is_err());
    assert_eq!(breaker.thresholds().max_requests, 2);
}

#[test]
fn limit_never_exceeded_across_threads() {
    const MAX: u32 = 8;
    let breaker = CircuitBreaker::new(Thresholds::default().with_max_requests(MAX));
    let observed_max = Arc::new(AtomicU32::new(0));
    let live = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let breaker = breaker.clone();
            let observed_max = Arc::clone(&observed_max);
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                let mut granted = 0u32;
                for _ in 0..20_000 {
                    if let Ok(guard) = breaker.try_request() {
                        granted += 1;
                        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                        observed_max.fetch_max(now, Ordering::SeqCst);
                        std::hint::spin_loop();
                        live.fetch_sub(1, Ordering::SeqCst);
                        drop(guard);
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(granted > 0);
    assert!(observed_max.load(Ordering::SeqCst) <= MAX);
    assert_eq!(breaker.in_flight(BreakerLimit::MaxRequests), 0);
}

#[test]
fn breaker_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<CircuitBreaker>();
    check::<BreakerGuard>();
}
