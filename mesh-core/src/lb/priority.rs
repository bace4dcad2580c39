//! Priority levels and localities (Envoy's priority load and locality weighting).

/// Envoy's overprovisioning factor, in percent: a level at 1/1.4 ≈ 71.4% healthy hosts
/// still takes all of its load.
const OVERPROVISIONING: u64 = 140;

/// A level's or locality's health in percent: `min(100, 1.4 × healthy / total)`.
fn health(healthy: u32, total: u32) -> u64 {
    if total == 0 {
        return 0;
    }
    (u64::from(healthy.min(total)) * OVERPROVISIONING / u64::from(total)).min(100)
}

/// The share of traffic, in percent, each priority level gets, from each level's
/// `(healthy, total)` host counts. The result sums to 100 (or is empty for no levels).
///
/// Each level's health is `min(100, 1.4 × healthy / total)` percent. Levels are filled in
/// order: level 0 takes its health, level 1 up to its health of what is left, and so on.
/// When the levels together are under 100% healthy, the healths are normalized so that
/// all traffic still goes somewhere; when no host is healthy anywhere, level 0 takes all
/// (Envoy's panic mode then balances over all its hosts).
pub fn priority_load(levels: &[(u32, u32)]) -> Vec<u32> {
    let mut load = vec![0u32; levels.len()];
    if levels.is_empty() {
        return load;
    }
    let healths: Vec<u64> = levels.iter().map(|&(h, t)| health(h, t)).collect();
    let normalized_total = healths.iter().sum::<u64>().min(100);
    if normalized_total == 0 {
        load[0] = 100;
        return load;
    }
    let mut remaining = 100u64;
    for (slot, h) in load.iter_mut().zip(&healths) {
        let share = (h * 100 / normalized_total).min(remaining);
        *slot = share as u32;
        remaining -= share;
    }
    if remaining > 0 {
        // Rounding leftovers go to the first level that has healthy hosts.
        if let Some(i) = healths.iter().position(|&h| h > 0) {
            load[i] += remaining as u32;
        }
    }
    load
}

/// Picks a priority level from a [`priority_load`] with a caller-drawn random `u64`.
/// `None` if the load is empty or all zero.
pub fn pick_priority(load: &[u32], draw: u64) -> Option<usize> {
    let total: u64 = load.iter().map(|&l| u64::from(l)).sum();
    if total == 0 {
        return None;
    }
    let mut r = draw % total;
    for (i, &l) in load.iter().enumerate() {
        if r < u64::from(l) {
            return Some(i);
        }
        r -= u64::from(l);
    }
    None
}

/// One locality of a priority level, for [`pick_locality`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalityHealth {
    /// The locality's load-balancing weight (from EDS).
    pub weight: u32,
    /// Hosts available in it.
    pub healthy: u32,
    /// Hosts in it.
    pub total: u32,
}

impl LocalityHealth {
    /// A locality's weight and host counts.
    pub fn new(weight: u32, healthy: u32, total: u32) -> Self {
        LocalityHealth {
            weight,
            healthy,
            total,
        }
    }

    /// `weight × health`, the weight Envoy balances localities by.
    pub fn effective_weight(&self) -> u64 {
        u64::from(self.weight) * health(self.healthy, self.total)
    }
}

/// Picks a locality by effective weight (its weight scaled by its health) with a
/// caller-drawn random `u64`; `None` if every effective weight is 0. No allocation.
pub fn pick_locality(localities: &[LocalityHealth], draw: u64) -> Option<usize> {
    let total: u64 = localities
        .iter()
        .map(LocalityHealth::effective_weight)
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = draw % total;
    for (i, l) in localities.iter().enumerate() {
        let w = l.effective_weight();
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}
