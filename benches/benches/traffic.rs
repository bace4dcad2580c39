//! Hot-path costs of the traffic pieces of mesh-core: one pick, one breaker slot, one
//! retry-budget slot, one outlier record.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mesh_core::breaker::{CircuitBreaker, Thresholds};
use mesh_core::lb::{LbHost, LbPolicy, Picker};
use mesh_core::outlier::{Outcome, OutlierConfig, OutlierDetector};
use mesh_core::retry::{RetryBudget, RetryBudgetConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Host {
    addr: String,
    weight: u32,
    active: AtomicU64,
}

impl LbHost for Host {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    fn is_available(&self) -> bool {
        true
    }
}

fn hosts(n: usize) -> Vec<Host> {
    (0..n)
        .map(|i| Host {
            addr: format!("10.0.{}.{}:8080", i / 256, i % 256),
            weight: 1 + (i % 3) as u32,
            active: AtomicU64::new((i % 7) as u64),
        })
        .collect()
}

fn pickers(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb_pick");
    for n in [10, 100] {
        let hs = hosts(n);
        for (name, policy) in [
            ("round_robin", LbPolicy::RoundRobin),
            ("least_request", LbPolicy::least_request()),
            ("ring_hash", LbPolicy::ring_hash()),
            ("random", LbPolicy::Random),
        ] {
            let picker = Picker::build(&policy, &hs, |h| h.addr.clone());
            let mut rng = SmallRng::seed_from_u64(1);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let hash = rng.random::<u64>();
                    black_box(picker.pick(&hs, Some(hash), &mut rng))
                })
            });
        }
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let breaker = CircuitBreaker::new(Thresholds::default());
    c.bench_function("breaker_acquire_release", |b| {
        b.iter(|| black_box(breaker.try_request()))
    });
}

fn retry_budget(c: &mut Criterion) {
    let budget = RetryBudget::new(&RetryBudgetConfig::default());
    c.bench_function("retry_budget_request_and_retry", |b| {
        b.iter(|| {
            let request = budget.request();
            let retry = budget.try_retry();
            black_box((request, retry))
        })
    });
}

fn outlier(c: &mut Criterion) {
    let now = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), (0..100).collect(), now);
    let mut host = 0usize;
    c.bench_function("outlier_record_success", |b| {
        b.iter(|| {
            host = (host + 1) % 100;
            black_box(detector.record(host, Outcome::Success, now))
        })
    });
    c.bench_function("outlier_is_ejected", |b| {
        b.iter(|| {
            host = (host + 1) % 100;
            black_box(detector.is_ejected(host, now))
        })
    });
}

criterion_group!(benches, pickers, breaker, retry_budget, outlier);
criterion_main!(benches);
