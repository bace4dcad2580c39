//! The request path's random numbers: trace, span and request ids, the route's draw, the
//! endpoint pick, fault decisions, retry back-off. A small generator per thread
//! (xoshiro256++), seeded once from the thread's OS-seeded `rand::rng()`, as
//! OpenTelemetry's SDK makes its ids. `rand::rng()` itself (ChaCha12, reseeded) refills a
//! block every 64 words and counts a reference per use, four to six times per request.
//! None of these draws needs to be unpredictable to an attacker: ids must be unique,
//! picks fair.

use std::cell::RefCell;

use rand::distr::{Distribution, StandardUniform};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Runs `f` with this thread's generator (`f` must not draw through this module itself).
pub(crate) fn with<R>(f: impl FnOnce(&mut SmallRng) -> R) -> R {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// A random value from this thread's generator.
pub(crate) fn random<T>() -> T
where
    StandardUniform: Distribution<T>,
{
    with(|rng| rng.random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_draws_its_own_sequence() {
        let draw = || (0..4).map(|_| random::<u128>()).collect::<Vec<_>>();
        let here = draw();
        let there = std::thread::spawn(draw).join().expect("thread");
        assert_ne!(here, there, "two threads drew the same values");
        let mut all: Vec<u128> = here.into_iter().chain(there).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8, "a value repeated");
    }
}
