//! Least request by power of choices.

use rand::Rng;

use super::weighted::WeightTable;
use super::LbHost;

/// Least request: draw `choice_count` available hosts by weight and take the one with the
/// fewest requests in flight; on a tie the higher weight wins, then the earlier draw.
///
/// Weights are honoured through the draws (a host of weight 2 is drawn twice as often), as
/// gRPC's weighted least request does, rather than Envoy's active-request-scaled weights.
#[derive(Clone, Debug)]
pub struct LeastRequest {
    choice_count: u32,
    table: WeightTable,
}

impl LeastRequest {
    /// Precomputes the weights; `choice_count` is clamped to 2..=10 as gRPC does.
    pub fn new(choice_count: u32, weights: impl IntoIterator<Item = u32>) -> Self {
        LeastRequest {
            choice_count: choice_count.clamp(2, 10),
            table: WeightTable::new(weights),
        }
    }

    /// Picks a host, or `None` if none is available.
    pub fn pick<H: LbHost>(&self, hosts: &[H], rng: &mut impl Rng) -> Option<usize> {
        let mut best: Option<(usize, u64, u32)> = None;
        for _ in 0..self.choice_count {
            let i = self.table.pick(hosts, rng.random())?;
            let (active, weight) = (hosts[i].active_requests(), hosts[i].weight());
            let better = match best {
                None => true,
                Some((_, a, w)) => active < a || (active == a && weight > w),
            };
            if better {
                best = Some((i, active, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}
