//! Weighted round robin over a precomputed, interleaved schedule.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::LbHost;

/// Longest schedule built; larger weight sums are scaled down to fit (each host keeps at
/// least one slot), so the proportions are approximate beyond this.
const MAX_SCHEDULE: u64 = 16_384;

/// Weighted round robin. The schedule is computed once per host set with smooth weighted
/// round robin, so a host of weight 3 among weight-1 hosts comes up spread out
/// (`a b a c a`), not in a burst; each pick advances an atomic cursor. An unavailable host's
/// slots are skipped, moving on to the next slot in the schedule.
#[derive(Debug)]
pub struct RoundRobin {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

/// Smooth weighted round robin: `total` slots, each to the host whose running credit is
/// highest (first on ties). O(total × hosts).
fn smooth_schedule(weights: &[u64], total: u64) -> Vec<u32> {
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    let total_i = total as i64;
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_i;
        schedule.push(best as u32);
    }
    schedule
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl RoundRobin {
    /// Precomputes the schedule for these weights (0 counts as 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut weights: Vec<u64> = weights.into_iter().map(|w| u64::from(w.max(1))).collect();
        let g = weights.iter().copied().fold(0, gcd).max(1);
        weights.iter_mut().for_each(|w| *w /= g);
        let mut total: u64 = weights.iter().sum();
        if total > MAX_SCHEDULE {
            weights
                .iter_mut()
                .for_each(|w| *w = (*w * MAX_SCHEDULE / total).max(1));
            total = weights.iter().sum();
        }
        // Equal weights (all 1 after the gcd) give 0, 1, 2... in smooth weighted round
        // robin; building it directly keeps a 10,000-host update linear, not quadratic.
        let schedule = if weights.iter().all(|w| *w == 1) {
            (0..weights.len()).map(|i| i as u32).collect()
        } else {
            smooth_schedule(&weights, total)
        };
        RoundRobin {
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Starts the cursor elsewhere (gRPC starts each new picker at a random position so
    /// that many clients do not all hit the first host together).
    pub fn with_start(self, start: usize) -> Self {
        self.cursor.store(start, Ordering::Relaxed);
        self
    }

    /// The schedule's length (one full rotation).
    pub fn schedule_len(&self) -> usize {
        self.schedule.len()
    }

    /// Picks the next available host in the schedule, or `None` if none is available.
    pub fn pick<H: LbHost>(&self, hosts: &[H]) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
        for k in 0..len {
            let i = self.schedule[(start + k) % len] as usize;
            if hosts.get(i).is_some_and(LbHost::is_available) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_take_the_same_schedule_as_smooth_round_robin() {
        for n in [1usize, 2, 3, 7, 64, 300] {
            let fast = RoundRobin::new(vec![5; n]).schedule;
            let smooth = smooth_schedule(&vec![1; n], n as u64);
            assert_eq!(fast, smooth, "{n} hosts");
        }
    }

    #[test]
    fn unequal_weights_are_interleaved() {
        assert_eq!(RoundRobin::new([3, 1, 1]).schedule, vec![0, 1, 0, 2, 0]);
    }
}
