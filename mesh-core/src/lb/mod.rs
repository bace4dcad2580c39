//! Load balancing: choosing an endpoint for a request.
//!
//! A [`Picker`] is built once per endpoint set from an [`LbPolicy`] (that is where rings and
//! schedules are computed and allocated) and then picks with `&self`: atomics only, no lock,
//! no allocation. It works on any slice of hosts through the small [`LbHost`] trait and
//! returns the index of the chosen host, or `None` when no host is available.
//!
//! Above the pickers sit priorities and localities: [`priority_load`] spreads load over
//! priority levels by health (Envoy's overprovisioning factor 1.4), [`pick_priority`] draws
//! a level from it, and [`pick_locality`] draws a locality inside a level by weight and
//! health.
//!
//! ```
//! use mesh_core::lb::{LbHost, LbPolicy, Picker};
//! struct Host { addr: &'static str, weight: u32, up: bool }
//! impl LbHost for Host {
//!     fn weight(&self) -> u32 { self.weight }
//!     fn active_requests(&self) -> u64 { 0 }
//!     fn is_available(&self) -> bool { self.up }
//! }
//! let hosts = [
//!     Host { addr: "10.0.0.1:80", weight: 1, up: true },
//!     Host { addr: "10.0.0.2:80", weight: 1, up: false },
//! ];
//! let picker = Picker::build(&LbPolicy::RoundRobin, &hosts, |h| h.addr);
//! let mut rng = rand::rng();
//! for _ in 0..4 {
//!     assert_eq!(picker.pick(&hosts, None, &mut rng), Some(0));
//! }
//! ```

mod least_request;
mod priority;
mod ring_hash;
mod round_robin;
mod weighted;

pub use least_request::LeastRequest;
pub use priority::{pick_locality, pick_priority, priority_load, LocalityHealth};
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use weighted::WeightedRandom;

use rand::Rng;

/// What a picker needs to know about a host.
pub trait LbHost {
    /// The host's load-balancing weight; 0 is treated as 1.
    fn weight(&self) -> u32;
    /// Requests in flight to the host (for least request).
    fn active_requests(&self) -> u64;
    /// Whether the host may be picked: healthy and not ejected by outlier detection.
    fn is_available(&self) -> bool;
}

impl<T: LbHost + ?Sized> LbHost for std::sync::Arc<T> {
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    fn active_requests(&self) -> u64 {
        (**self).active_requests()
    }
    fn is_available(&self) -> bool {
        (**self).is_available()
    }
}

impl<T: LbHost + ?Sized> LbHost for &T {
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    fn active_requests(&self) -> u64 {
        (**self).active_requests()
    }
    fn is_available(&self) -> bool {
        (**self).is_available()
    }
}

/// The largest ring a [`LbPolicy::RingHash`] builds, whatever its `max_ring_size` says.
/// This is gRPC's default `ring_size_cap` (gRFC A42): Envoy's 8M-entry ceiling costs 128 MiB
/// per cluster, which an in-process client should not pay.
pub const RING_SIZE_CAP: u64 = 4096;

/// The load-balancing policy of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LbPolicy {
    /// Weighted round robin, interleaved (the default, as in Envoy and gRPC xDS).
    #[default]
    RoundRobin,
    /// Power of `choice_count` choices: the least busy of that many weighted draws.
    LeastRequest {
        /// Draws per pick; gRPC default 2, and values above 10 are taken as 10.
        choice_count: u32,
    },
    /// Consistent hashing on a ring of xxh64 hashes.
    RingHash {
        /// Minimum ring entries. Default 1024.
        min_ring_size: u64,
        /// Maximum ring entries. Default 8M (Envoy's and gRPC's), though [`RING_SIZE_CAP`]
        /// limits what is built.
        max_ring_size: u64,
    },
    /// Weighted random.
    Random,
}

/// A policy that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LbPolicyError {
    /// `choice_count` below 2.
    #[error("least_request choice_count must be at least 2, got {0}")]
    ChoiceCount(u32),
    /// A ring size of 0, above 8M, or min above max.
    #[error("ring_hash ring sizes must satisfy 1 <= min ({min}) <= max ({max}) <= 8388608")]
    RingSize {
        /// `min_ring_size`.
        min: u64,
        /// `max_ring_size`.
        max: u64,
    },
}

impl LbPolicy {
    /// Least request with gRPC's default of two choices.
    pub fn least_request() -> Self {
        LbPolicy::LeastRequest { choice_count: 2 }
    }

    /// Ring hash with the default sizes (1024 .. 8M, built at most [`RING_SIZE_CAP`]).
    pub fn ring_hash() -> Self {
        LbPolicy::RingHash {
            min_ring_size: 1024,
            max_ring_size: 8 * 1024 * 1024,
        }
    }

    /// Checks the values as gRPC does before accepting a cluster.
    pub fn validate(&self) -> Result<(), LbPolicyError> {
        match *self {
            LbPolicy::LeastRequest { choice_count } if choice_count < 2 => {
                Err(LbPolicyError::ChoiceCount(choice_count))
            }
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            } if min == 0 || min > max || max > 8 * 1024 * 1024 => {
                Err(LbPolicyError::RingSize { min, max })
            }
            _ => Ok(()),
        }
    }
}

/// A picker for one host set, built by [`Picker::build`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Picker {
    /// See [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// See [`LeastRequest`].
    LeastRequest(LeastRequest),
    /// See [`RingHash`].
    RingHash(RingHash),
    /// See [`WeightedRandom`].
    Random(WeightedRandom),
}

impl Picker {
    /// Precomputes what `policy` needs for `hosts`. `key` gives each host's stable hash key
    /// (its address, say); only ring hash uses it. Invalid sizes are clamped, not rejected:
    /// [`LbPolicy::validate`] is where bad config is refused.
    pub fn build<H: LbHost, K: AsRef<[u8]>>(
        policy: &LbPolicy,
        hosts: &[H],
        key: impl Fn(&H) -> K,
    ) -> Self {
        let weights = || hosts.iter().map(LbHost::weight);
        match *policy {
            LbPolicy::RoundRobin => Picker::RoundRobin(RoundRobin::new(weights())),
            LbPolicy::LeastRequest { choice_count } => {
                Picker::LeastRequest(LeastRequest::new(choice_count, weights()))
            }
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            } => Picker::RingHash(RingHash::new(
                min_ring_size,
                max_ring_size,
                hosts.iter().map(|h| (key(h), h.weight())),
            )),
            LbPolicy::Random => Picker::Random(WeightedRandom::new(weights())),
        }
    }

    /// Picks a host of `hosts` (the set the picker was built for). `request_hash` is the
    /// hash of the request's hash policy, for ring hash; without one ring hash uses a random
    /// hash, as gRPC does.
    pub fn pick<H: LbHost>(
        &self,
        hosts: &[H],
        request_hash: Option<u64>,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        match self {
            Picker::RoundRobin(p) => p.pick(hosts),
            Picker::LeastRequest(p) => p.pick(hosts, rng),
            Picker::RingHash(p) => p.pick(hosts, request_hash.unwrap_or_else(|| rng.random())),
            Picker::Random(p) => p.pick(hosts, rng.random()),
        }
    }
}

#[cfg(test)]
mod tests;
