//! Weighted random choice over a precomputed cumulative-weight table.

use super::LbHost;

/// Cumulative weights of one host set; host `i` owns `[cum[i-1], cum[i])`.
#[derive(Clone, Debug, Default)]
pub(crate) struct WeightTable {
    cumulative: Vec<u64>,
}

/// SplitMix64 step: a second independent-looking draw from one `u64`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl WeightTable {
    pub(crate) fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w.max(1));
                total
            })
            .collect();
        WeightTable { cumulative }
    }

    pub(crate) fn weight(&self, i: usize) -> u64 {
        let prev = if i == 0 { 0 } else { self.cumulative[i - 1] };
        self.cumulative[i] - prev
    }

    /// A weighted draw among the available hosts, or `None` if none is. Exact: the fast path
    /// draws over all hosts and the fallback, taken when that host is unavailable, draws
    /// over the available ones, which together give each available host `w / W_available`.
    pub(crate) fn pick<H: LbHost>(&self, hosts: &[H], draw: u64) -> Option<usize> {
        let n = self.cumulative.len().min(hosts.len());
        let total = *self.cumulative.get(n.checked_sub(1)?)?;
        let r = draw % total;
        let i = self.cumulative[..n].partition_point(|&c| c <= r);
        if hosts[i].is_available() {
            return Some(i);
        }
        let available: u64 = (0..n)
            .filter(|&j| hosts[j].is_available())
            .map(|j| self.weight(j))
            .sum();
        if available == 0 {
            return None;
        }
        let mut r = mix(draw) % available;
        for (j, host) in hosts[..n].iter().enumerate() {
            if host.is_available() {
                let w = self.weight(j);
                if r < w {
                    return Some(j);
                }
                r -= w;
            }
        }
        None
    }
}

/// Weighted random: each available host is picked with probability proportional to its
/// weight.
#[derive(Clone, Debug)]
pub struct WeightedRandom {
    table: WeightTable,
}

impl WeightedRandom {
    /// Precomputes the weights of a host set.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        WeightedRandom {
            table: WeightTable::new(weights),
        }
    }

    /// Picks with a caller-drawn random `u64`.
    pub fn pick<H: LbHost>(&self, hosts: &[H], draw: u64) -> Option<usize> {
        self.table.pick(hosts, draw)
    }
}
