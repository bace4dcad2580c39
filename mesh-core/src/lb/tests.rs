#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

#[derive(Clone, Debug)]
struct H {
    key: String,
    weight: u32,
    active: u64,
    up: bool,
}

impl LbHost for H {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        self.active
    }
    fn is_available(&self) -> bool {
        self.up
    }
}

fn hosts(weights: &[u32]) -> Vec<H> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| H {
            key: format!("10.0.{}.{}:8080", i / 256, i % 256),
            weight,
            active: 0,
            up: true,
        })
        .collect()
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(42)
}

fn counts(picker: &Picker, hs: &[H], n: usize, hash: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
    let mut rng = rng();
    let mut c = vec![0; hs.len()];
    for i in 0..n {
        c[picker.pick(hs, hash(i), &mut rng).unwrap()] += 1;
    }
    c
}

#[test]
fn round_robin_follows_weights_and_interleaves() {
    let hs = hosts(&[3, 1, 1]);
    let p = Picker::build(&LbPolicy::RoundRobin, &hs, |h| h.key.clone());
    let mut r = rng();
    let seq: Vec<usize> = (0..10)
        .map(|_| p.pick(&hs, None, &mut r).unwrap())
        .collect();
    assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 6);
    // Never three of host 0 in a row: the heavy host is spread out.
    assert!(seq.windows(3).all(|w| w != [0, 0, 0]));
    assert_eq!(counts(&p, &hs, 500, |_| None), [300, 100, 100]);
}

#[test]
fn round_robin_equal_weights_cycle() {
    let hs = hosts(&[5, 5, 5, 5]);
    let rr = RoundRobin::new(hs.iter().map(|h| h.weight));
    assert_eq!(rr.schedule_len(), 4);
    let seq: Vec<_> = (0..8).map(|_| rr.pick(&hs).unwrap()).collect();
    assert_eq!(seq, [0, 1, 2, 3, 0, 1, 2, 3]);
}

#[test]
fn unavailable_hosts_are_never_picked() {
    let mut hs = hosts(&[1, 4, 2, 1]);
    hs[1].up = false;
    hs[3].up = false;
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::least_request(),
        LbPolicy::ring_hash(),
        LbPolicy::Random,
    ] {
        let p = Picker::build(&policy, &hs, |h| h.key.clone());
        let c = counts(&p, &hs, 2000, |i| {
            Some((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        });
        assert_eq!((c[1], c[3]), (0, 0), "{policy:?}");
        assert!(c[0] > 0 && c[2] > 0, "{policy:?}");
        hs.iter_mut().for_each(|h| h.up = false);
        assert_eq!(p.pick(&hs, Some(1), &mut rng()), None, "{policy:?}");
        hs.iter_mut()
            .enumerate()
            .for_each(|(i, h)| h.up = i % 2 == 0);
    }
}

#[test]
fn least_request_never_picks_the_busier_of_two() {
    let mut hs = hosts(&[1, 1]);
    hs[0].active = 10;
    hs[1].active = 3;
    let lr = LeastRequest::new(2, [1, 1]);
    let mut r = rng();
    let c = (0..1000)
        .filter(|_| lr.pick(&hs, &mut r) == Some(0))
        .count();
    // Host 0 only wins when both draws land on it (~1/4), never against host 1.
    assert!(c < 320, "{c}");
    let mut hs = hosts(&[1, 1, 1, 1, 1]);
    for (i, h) in hs.iter_mut().enumerate() {
        h.active = 10 * i as u64;
    }
    hs[0].active = 1000;
    let mut r = rng();
    for _ in 0..1000 {
        let i = lr.pick(&hs, &mut r).unwrap();
        // With two distinct draws the busier is never chosen; with two equal draws
        // the pick is that host. So the busiest (0) appears only on double draws.
        assert!(i < 5);
    }
}

#[test]
fn least_request_ties_go_to_higher_weight() {
    let hs = hosts(&[1, 100]);
    let lr = LeastRequest::new(10, hs.iter().map(|h| h.weight));
    let mut r = rng();
    assert!((0..200).all(|_| lr.pick(&hs, &mut r) == Some(1)));
}

#[test]
fn ring_hash_is_stable_and_moves_few_keys() {
    let hs = hosts(&[1; 10]);
    let p = Picker::build(&LbPolicy::ring_hash(), &hs, |h| h.key.clone());
    let mut r = rng();
    let keys: Vec<u64> = (0..10_000u64)
        .map(|k| xxhash_rust::xxh64::xxh64(&k.to_le_bytes(), 1))
        .collect();
    let before: Vec<usize> = keys
        .iter()
        .map(|&k| p.pick(&hs, Some(k), &mut r).unwrap())
        .collect();
    let again: Vec<usize> = keys
        .iter()
        .map(|&k| p.pick(&hs, Some(k), &mut r).unwrap())
        .collect();
    assert_eq!(before, again);
    let hs11 = hosts(&[1; 11]);
    let p11 = Picker::build(&LbPolicy::ring_hash(), &hs11, |h| h.key.clone());
    let moved = keys
        .iter()
        .zip(&before)
        .filter(|(&k, &b)| p11.pick(&hs11, Some(k), &mut r).unwrap() != b)
        .count();
    // The new host takes ~1/11 of the keys. As in Envoy, the ring keeps its size, so every
    // old host also gives up a few entries (103 -> 94 each) and their keys move among the
    // old hosts: in total up to ~2/n move, against ~10/11 for modulo hashing.
    let to_new = keys
        .iter()
        .filter(|&&k| p11.pick(&hs11, Some(k), &mut r).unwrap() == 10)
        .count();
    assert!(
        to_new > 700 && to_new < 1150,
        "{to_new} of 10000 went to the new host"
    );
    assert!(moved < 2 * 10_000 / 11, "{moved} of 10000 moved");
}

#[test]
fn ring_hash_walks_past_unavailable_and_respects_cap() {
    let mut hs = hosts(&[1, 1, 1]);
    let ring = RingHash::new(1024, 8 << 20, hs.iter().map(|h| (h.key.clone(), h.weight)));
    assert!(ring.len() >= 1024 && ring.len() <= RING_SIZE_CAP as usize + 3);
    let small = RingHash::new(1, 1, hs.iter().map(|h| (h.key.clone(), h.weight)));
    assert_eq!(small.len(), 3, "every host keeps one entry");
    let h = 12345;
    let first = ring.pick(&hs, h).unwrap();
    hs[first].up = false;
    let second = ring.pick(&hs, h).unwrap();
    assert_ne!(first, second);
    hs[first].up = true;
    assert_eq!(ring.pick(&hs, h), Some(first));
    assert_eq!(RingHash::new::<&str>(10, 100, []).pick(&hs, 1), None);
}

#[test]
fn policy_validation() {
    assert!(LbPolicy::default().validate().is_ok());
    assert_eq!(
        LbPolicy::LeastRequest { choice_count: 1 }.validate(),
        Err(LbPolicyError::ChoiceCount(1))
    );
    let bad = LbPolicy::RingHash {
        min_ring_size: 10,
        max_ring_size: 5,
    };
    assert!(bad.validate().unwrap_err().to_string().contains("min (10)"));
}

#[test]
fn priority_load_and_failover() {
    assert_eq!(priority_load(&[(10, 10), (10, 10)]), [100, 0]);
    // 8/10 healthy × 1.4 = 112% -> still all of the load.
    assert_eq!(priority_load(&[(8, 10), (10, 10)]), [100, 0]);
    // 5/10 × 1.4 = 70%: the rest spills to P1.
    assert_eq!(priority_load(&[(5, 10), (10, 10)]), [70, 30]);
    // P0 down: everything fails over.
    assert_eq!(priority_load(&[(0, 10), (10, 10)]), [0, 100]);
    // All degraded: normalized.
    assert_eq!(priority_load(&[(2, 10), (2, 10)]), [50, 50]);
    assert_eq!(priority_load(&[(0, 10), (0, 10)]), [100, 0]);
    assert_eq!(priority_load(&[]), Vec::<u32>::new());
    let load = priority_load(&[(0, 10), (10, 10)]);
    assert!((0..1000).all(|d| pick_priority(&load, d) == Some(1)));
    let load = priority_load(&[(5, 10), (10, 10)]);
    let p1 = (0..1000)
        .filter(|&d| pick_priority(&load, d) == Some(1))
        .count();
    assert_eq!(p1, 300);
    assert_eq!(pick_priority(&[], 3), None);
}

#[test]
fn locality_pick_by_weight_and_health() {
    let locs = [
        LocalityHealth::new(1, 10, 10),
        LocalityHealth::new(1, 0, 10),
        LocalityHealth::new(3, 10, 10),
    ];
    let mut c = [0; 3];
    for d in 0..400 {
        c[pick_locality(&locs, d).unwrap()] += 1;
    }
    assert_eq!(c, [100, 0, 300]);
    assert_eq!(pick_locality(&[LocalityHealth::new(1, 0, 5)], 1), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn weighted_picks_converge(weights in proptest::collection::vec(1u32..20, 1..8), seed: u64) {
        let hs = hosts(&weights);
        let total: u32 = weights.iter().sum();
        let n = 20_000usize;
        // Least request is left out: with equal load its ties go to the heavier host, so
        // it is load-driven, not weight-proportional.
        for policy in [LbPolicy::RoundRobin, LbPolicy::Random] {
            let p = Picker::build(&policy, &hs, |h| h.key.clone());
            let mut r = SmallRng::seed_from_u64(seed);
            let mut c = vec![0usize; hs.len()];
            for _ in 0..n {
                c[p.pick(&hs, None, &mut r).unwrap()] += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                let expected = f64::from(w) / f64::from(total);
                let got = c[i] as f64 / n as f64;
                prop_assert!((got - expected).abs() < 0.025, "{policy:?} host {i}: {got} vs {expected}");
            }
        }
    }

    #[test]
    fn ring_shares_follow_weights(weights in proptest::collection::vec(1u32..5, 2..6)) {
        let hs = hosts(&weights);
        let ring = RingHash::new(1024, 4096, hs.iter().map(|h| (h.key.clone(), h.weight)));
        let total: u32 = weights.iter().sum();
        let n = 20_000u64;
        let mut c = vec![0u64; hs.len()];
        for k in 0..n {
            c[ring.pick(&hs, xxhash_rust::xxh64::xxh64(&k.to_le_bytes(), 7)).unwrap()] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = f64::from(w) / f64::from(total);
            let got = c[i] as f64 / n as f64;
            // Ring hash is only statistically even: allow a wide band.
            prop_assert!((got - expected).abs() < 0.1, "host {i}: {got} vs {expected}");
        }
    }
}

#[test]
fn least_request_draws_by_weight_under_distinct_load() {
    // Distinct loads, so no ties: the pick is the less busy of two weighted draws.
    let mut hs = hosts(&[1, 3]);
    hs[0].active = 1;
    hs[1].active = 2;
    let lr = LeastRequest::new(2, hs.iter().map(|h| h.weight));
    let mut r = rng();
    let n = 20_000;
    let c = (0..n).filter(|_| lr.pick(&hs, &mut r) == Some(1)).count();
    // Host 1 wins only when both draws are host 1: (3/4)^2.
    let got = c as f64 / n as f64;
    assert!((got - 0.5625).abs() < 0.02, "{got}");
}
