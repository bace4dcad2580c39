#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};

const S: fn(u64) -> Duration = Duration::from_secs;

fn detector(config: OutlierConfig, n: usize) -> (OutlierDetector<usize>, Instant) {
    let t0 = Instant::now();
    (OutlierDetector::new(config, (0..n).collect(), t0), t0)
}

fn fail(d: &OutlierDetector<usize>, host: usize, times: usize, now: Instant) {
    for _ in 0..times {
        d.record(host, Outcome::Http5xx, now);
    }
}

#[test]
fn defaults_are_envoys() {
    let c = OutlierConfig::default();
    assert_eq!(c.consecutive_5xx, 5);
    assert_eq!(c.enforcing_consecutive_gateway_failure, 0);
    assert_eq!(c.success_rate_stdev_factor, 1900);
    assert_eq!(c.enforcing_failure_percentage, 0);
    assert_eq!(c.max_ejection_percent, 10);
    assert_eq!(c.ejection_time(1), S(30));
    assert_eq!(c.ejection_time(3), S(90));
    assert_eq!(c.ejection_time(100), S(300));
}

#[test]
fn five_consecutive_5xx_eject_and_return_after_30s() {
    let (d, t0) = detector(OutlierConfig::default(), 10);
    fail(&d, 3, 4, t0);
    assert!(!d.is_ejected(3, t0));
    assert_eq!(
        d.record(3, Outcome::Http5xx, t0),
        Some(EjectionReason::Consecutive5xx)
    );
    assert!(d.is_ejected(3, t0 + S(29)));
    assert!(!d.is_ejected(3, t0 + S(30)));
    let mut rng = SmallRng::seed_from_u64(1);
    let report = d.on_interval(t0 + S(30), &mut rng);
    assert_eq!(report.returned, [3]);
    assert_eq!(d.ejected_count(), 0);
}

#[test]
fn success_resets_the_streak() {
    let (d, t0) = detector(OutlierConfig::default(), 10);
    fail(&d, 0, 4, t0);
    d.record(0, Outcome::Success, t0);
    fail(&d, 0, 4, t0);
    assert!(!d.is_ejected(0, t0));
}

#[test]
fn second_ejection_doubles_and_is_capped() {
    let cfg = OutlierConfig::default().with_ejection_time(S(30), S(75));
    let (d, t0) = detector(cfg, 10);
    let mut rng = SmallRng::seed_from_u64(1);
    fail(&d, 0, 5, t0);
    assert_eq!(d.ejected_for(0, t0), Some(S(30)));
    let t1 = t0 + S(30);
    d.on_interval(t1, &mut rng);
    fail(&d, 0, 5, t1);
    assert_eq!(d.ejected_for(0, t1), Some(S(60)));
    let t2 = t1 + S(60);
    d.on_interval(t2, &mut rng);
    fail(&d, 0, 5, t2);
    // 90 s capped at max_ejection_time 75 s.
    assert_eq!(d.ejected_for(0, t2), Some(S(75)));
}

#[test]
fn healthy_intervals_forgive_ejections() {
    let (d, t0) = detector(OutlierConfig::default(), 10);
    let mut rng = SmallRng::seed_from_u64(1);
    fail(&d, 0, 5, t0);
    d.on_interval(t0 + S(30), &mut rng); // returned, not yet forgiven
    assert_eq!(d.ejection_multiplier(0), 1);
    d.on_interval(t0 + S(40), &mut rng);
    assert_eq!(d.ejection_multiplier(0), 0);
    fail(&d, 0, 5, t0 + S(40));
    assert_eq!(d.ejected_for(0, t0 + S(40)), Some(S(30)));
}

#[test]
fn max_ejection_percent_respected() {
    // 20 hosts at 10%: two may be ejected, the third is refused.
    let (d, t0) = detector(OutlierConfig::default(), 20);
    for h in 0..3 {
        fail(&d, h, 5, t0);
    }
    assert!(d.is_ejected(0, t0) && d.is_ejected(1, t0));
    assert!(!d.is_ejected(2, t0));
    assert_eq!(d.ejected_count(), 2);
    // 5 hosts at 10%: still one, as in Envoy.
    let (d, t0) = detector(OutlierConfig::default(), 5);
    fail(&d, 0, 5, t0);
    fail(&d, 1, 5, t0);
    assert_eq!(d.ejected_count(), 1);
    // 0% means never.
    let (d, t0) = detector(OutlierConfig::default().with_max_ejection_percent(0), 5);
    fail(&d, 0, 5, t0);
    assert_eq!(d.ejected_count(), 0);
}

#[test]
fn gateway_failures_not_enforced_by_default() {
    let cfg = OutlierConfig::default().with_consecutive_5xx(0, 100);
    let (d, t0) = detector(cfg.clone(), 10);
    for _ in 0..10 {
        d.record(0, Outcome::GatewayFailure, t0);
    }
    assert!(!d.is_ejected(0, t0));
    let (d, t0) = detector(cfg.with_consecutive_gateway_failure(3, 100), 10);
    for _ in 0..3 {
        d.record(0, Outcome::LocalOriginFailure, t0);
    }
    assert!(d.is_ejected(0, t0));
}

fn traffic(d: &OutlierDetector<usize>, host: usize, ok: usize, failed: usize, now: Instant) {
    for _ in 0..ok {
        d.record(host, Outcome::Success, now);
    }
    for i in 0..failed {
        // Interleave so the consecutive detectors never fire.
        d.record(host, Outcome::Http5xx, now);
        if i % 2 == 0 {
            d.record(host, Outcome::Success, now);
        }
    }
}

#[test]
fn success_rate_outlier_detected() {
    let (d, t0) = detector(OutlierConfig::default().with_max_ejection_percent(50), 10);
    for h in 0..9 {
        traffic(&d, h, 200, 0, t0);
    }
    traffic(&d, 9, 100, 100, t0); // ~67% success against 100% elsewhere
    let mut rng = SmallRng::seed_from_u64(7);
    let report = d.on_interval(t0 + S(10), &mut rng);
    assert_eq!(report.ejected, [(9, EjectionReason::SuccessRate)]);
    assert!(d.is_ejected(9, t0 + S(10)));
    // Too few hosts with enough volume: no analysis.
    let (d, t0) = detector(OutlierConfig::default(), 10);
    for h in 0..3 {
        traffic(&d, h, 200, 0, t0);
    }
    traffic(&d, 9, 100, 100, t0);
    assert!(d.on_interval(t0 + S(10), &mut rng).ejected.is_empty());
}

#[test]
fn failure_percentage_outlier_detected() {
    let cfg = OutlierConfig::default()
        .with_failure_percentage(85, 5, 50, 100)
        .with_success_rate(5, 100, 1900, 0)
        .with_consecutive_5xx(0, 100)
        .with_max_ejection_percent(50);
    let (d, t0) = detector(cfg, 10);
    for h in 0..5 {
        traffic(&d, h, 60, 0, t0);
    }
    // 90 failures, 45 successes: 67% failed, below the threshold.
    traffic(&d, 5, 0, 90, t0);
    // Host 6: 90 of 100 failed.
    fail(&d, 6, 90, t0);
    traffic(&d, 6, 10, 0, t0);
    assert_eq!(d.ejected_count(), 0);
    let mut rng = SmallRng::seed_from_u64(7);
    let report = d.on_interval(t0 + S(10), &mut rng);
    assert_eq!(report.ejected, [(6, EjectionReason::FailurePercentage)]);
}

#[test]
fn state_carries_across_host_set_change() {
    let t0 = Instant::now();
    let d = OutlierDetector::new(OutlierConfig::default(), vec!["a", "b", "c"], t0);
    fail_str(&d, 1, t0);
    assert!(d.is_ejected(1, t0));
    let next = d.rebuild(OutlierConfig::default(), vec!["c", "b", "d"]);
    assert_eq!(next.index_of(&"b"), Some(1));
    assert!(next.is_ejected(1, t0));
    assert!(!next.is_ejected(0, t0));
    assert_eq!(next.ejected_count(), 1);
    let moved = next.rebuild(OutlierConfig::default(), vec!["b"]);
    assert!(moved.is_ejected(0, t0 + S(29)));
}

fn fail_str(d: &OutlierDetector<&str>, host: usize, now: Instant) {
    for _ in 0..5 {
        d.record(host, Outcome::Http5xx, now);
    }
}
