//! Reconnection backoff: exponential with jitter, as gRPC's connection backoff.

use std::time::Duration;

/// Exponential backoff with jitter. A plain value: the caller supplies the randomness.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The factor between successive delays.
    pub multiplier: f64,
    /// The fraction by which a delay is randomly shortened or lengthened (0.2 = ±20%).
    pub jitter: f64,
    /// The longest delay.
    pub max: Duration,
    current: Duration,
}

impl Default for Backoff {
    /// gRPC's: 1 s, ×1.6, ±20%, at most 120 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(120))
    }
}

impl Backoff {
    /// A backoff from `initial` up to `max`, ×1.6, ±20%.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            multiplier: 1.6,
            jitter: 0.2,
            max,
            current: initial,
        }
    }

    /// The next delay; `random` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let base = self.current.min(self.max);
        self.current = base.mul_f64(self.multiplier.max(1.0)).min(self.max);
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(1.0 + spread)
    }

    /// Starts again from `initial` (after a stream that got a response).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_the_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut expected = 1.0_f64;
        for step in 0..20 {
            let r = f64::from(step % 5) / 5.0;
            let d = b.next_delay(r).as_secs_f64();
            assert!(
                d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9,
                "{step}: {d}"
            );
            expected = (expected * 1.6).min(10.0);
        }
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_secs(1));
    }
}
