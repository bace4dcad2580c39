//! Exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

/// Envoy's retry back-off (`RetryPolicy.RetryBackOff`).
///
/// The delay before retry `n` (1 for the first retry) is drawn uniformly from
/// `[0, min(max_interval, base_interval × (2ⁿ − 1))]` — Envoy's fully jittered exponential
/// back-off: the first retry waits up to 25 ms, the second up to 75 ms, the third up to
/// 175 ms, ..., never more than `max_interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The base interval. Envoy default: 25 ms.
    pub base_interval: Duration,
    /// The cap. Envoy default: 10 × `base_interval`.
    pub max_interval: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig::new(Duration::from_millis(25))
    }
}

impl BackoffConfig {
    /// A back-off with this base and Envoy's default cap of 10 × base.
    pub fn new(base_interval: Duration) -> Self {
        BackoffConfig {
            base_interval,
            max_interval: base_interval.saturating_mul(10),
        }
    }

    /// Sets the cap. A cap below the base is raised to the base (Envoy rejects such a
    /// config; the xDS layer checks it, this keeps the formula well defined).
    pub fn with_max_interval(mut self, max_interval: Duration) -> Self {
        self.max_interval = max_interval;
        self
    }

    /// The upper bound of the delay before retry `retry` (1-based; 0 is treated as 1).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let max = self.max_interval.max(self.base_interval);
        let exp = retry.clamp(1, 63);
        let factor = (1u64 << exp) - 1;
        let nanos = self
            .base_interval
            .as_nanos()
            .saturating_mul(u128::from(factor));
        let ceiling = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        ceiling.min(max)
    }

    /// The delay before retry `retry` (1-based), drawn from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}
