//! Envoy-style circuit breaking: caps on concurrent connections, pending requests,
//! requests and retries towards one cluster.
//!
//! A [`CircuitBreaker`] is a set of atomic counters. Each `try_*` call either takes a slot
//! and returns a [`BreakerGuard`] that gives it back on drop, or returns an [`Overflow`]
//! naming the limit that was hit. There is no lock and no allocation on this path; a guard
//! holds an `Arc` to the counters so it can travel with a response future.
//!
//! Thresholds live in atomics too: [`CircuitBreaker::set_thresholds`] swaps them on a config
//! change without losing the in-flight counts (a lowered limit only stops new requests).
//!
//! An [`Overflow`] maps to HTTP 503 with `x-envoy-overloaded: true`, or gRPC `UNAVAILABLE`,
//! with the error's message as the body / status message.
//!
//! ```
//! use mesh_core::breaker::{BreakerLimit, CircuitBreaker, Thresholds};
//! let breaker = CircuitBreaker::new(Thresholds::default().with_max_requests(1));
//! let first = breaker.try_request().unwrap();
//! let overflow = breaker.try_request().unwrap_err();
//! assert_eq!(overflow.limit, BreakerLimit::MaxRequests);
//! drop(first);
//! assert!(breaker.try_request().is_ok());
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The limits of one cluster (Envoy's `CircuitBreakers.Thresholds`, default priority).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Maximum open connections. Envoy default: 1024.
    pub max_connections: u32,
    /// Maximum requests waiting for a connection. Envoy default: 1024.
    pub max_pending_requests: u32,
    /// Maximum requests in flight. Envoy default: 1024.
    pub max_requests: u32,
    /// Maximum retries in flight. Envoy default: 3.
    pub max_retries: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

impl Thresholds {
    /// All four limits given explicitly.
    pub fn new(
        max_connections: u32,
        max_pending_requests: u32,
        max_requests: u32,
        max_retries: u32,
    ) -> Self {
        Thresholds {
            max_connections,
            max_pending_requests,
            max_requests,
            max_retries,
        }
    }

    /// Sets `max_connections`.
    pub fn with_max_connections(mut self, value: u32) -> Self {
        self.max_connections = value;
        self
    }

    /// Sets `max_pending_requests`.
    pub fn with_max_pending_requests(mut self, value: u32) -> Self {
        self.max_pending_requests = value;
        self
    }

    /// Sets `max_requests`.
    pub fn with_max_requests(mut self, value: u32) -> Self {
        self.max_requests = value;
        self
    }

    /// Sets `max_retries`.
    pub fn with_max_retries(mut self, value: u32) -> Self {
        self.max_retries = value;
        self
    }

    /// The value of one limit.
    pub fn get(&self, limit: BreakerLimit) -> u32 {
        match limit {
            BreakerLimit::MaxConnections => self.max_connections,
            BreakerLimit::MaxPendingRequests => self.max_pending_requests,
            BreakerLimit::MaxRequests => self.max_requests,
            BreakerLimit::MaxRetries => self.max_retries,
        }
    }
}

/// Which of the four limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerLimit {
    /// [`Thresholds::max_connections`].
    MaxConnections,
    /// [`Thresholds::max_pending_requests`].
    MaxPendingRequests,
    /// [`Thresholds::max_requests`].
    MaxRequests,
    /// [`Thresholds::max_retries`].
    MaxRetries,
}

impl BreakerLimit {
    const ALL: [BreakerLimit; 4] = [
        BreakerLimit::MaxConnections,
        BreakerLimit::MaxPendingRequests,
        BreakerLimit::MaxRequests,
        BreakerLimit::MaxRetries,
    ];

    fn index(self) -> usize {
        match self {
            BreakerLimit::MaxConnections => 0,
            BreakerLimit::MaxPendingRequests => 1,
            BreakerLimit::MaxRequests => 2,
            BreakerLimit::MaxRetries => 3,
        }
    }

    /// The Envoy field name (`max_requests`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerLimit::MaxConnections => "max_connections",
            BreakerLimit::MaxPendingRequests => "max_pending_requests",
            BreakerLimit::MaxRequests => "max_requests",
            BreakerLimit::MaxRetries => "max_retries",
        }
    }
}

impl fmt::Display for BreakerLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit was reached: the call is shed (HTTP 503 + `x-envoy-overloaded`, gRPC
/// `UNAVAILABLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open: {limit} ({max}) reached")]
#[non_exhaustive]
pub struct Overflow {
    /// The limit that was hit.
    pub limit: BreakerLimit,
    /// Its value at the time.
    pub max: u32,
}

#[derive(Debug, Default)]
struct Counter {
    max: AtomicU32,
    in_flight: AtomicU32,
}

#[derive(Debug)]
struct Inner {
    counters: [Counter; 4],
    /// Notified (one listener) each time a connection slot is given back.
    connection_released: event_listener::Event,
}

/// The circuit breaker of one cluster: cheap to clone (an `Arc`), `Send + Sync`.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl CircuitBreaker {
    /// A breaker with the given limits and nothing in flight.
    pub fn new(thresholds: Thresholds) -> Self {
        let breaker = CircuitBreaker {
            inner: Arc::new(Inner {
                counters: Default::default(),
                connection_released: event_listener::Event::new(),
            }),
        };
        breaker.set_thresholds(&thresholds);
        breaker
    }

    /// Replaces the limits; in-flight counts are kept. If a limit drops below what is in
    /// flight, new calls are refused until enough guards are dropped.
    pub fn set_thresholds(&self, thresholds: &Thresholds) {
        for limit in BreakerLimit::ALL {
            self.counter(limit)
                .max
                .store(thresholds.get(limit), Ordering::Relaxed);
        }
        // A raised limit may have room for every waiting dial.
        self.inner.connection_released.notify(usize::MAX);
    }

    /// The limits in force.
    pub fn thresholds(&self) -> Thresholds {
        let get = |l| self.counter(l).max.load(Ordering::Relaxed);
        Thresholds::new(
            get(BreakerLimit::MaxConnections),
            get(BreakerLimit::MaxPendingRequests),
            get(BreakerLimit::MaxRequests),
            get(BreakerLimit::MaxRetries),
        )
    }

    fn counter(&self, limit: BreakerLimit) -> &Counter {
        &self.inner.counters[limit.index()]
    }

    /// Takes one slot of `limit`, or says which limit is full.
    pub fn try_acquire(&self, limit: BreakerLimit) -> Result<BreakerGuard, Overflow> {
        let counter = self.counter(limit);
        let max = counter.max.load(Ordering::Relaxed);
        counter
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Overflow { limit, max })?;
        Ok(BreakerGuard {
            inner: Arc::clone(&self.inner),
            limit,
        })
    }

    /// A slot for one request in flight.
    pub fn try_request(&self) -> Result<BreakerGuard, Overflow> {
        self.try_acquire(BreakerLimit::MaxRequests)
    }

    /// A slot for one request waiting for a connection.
    pub fn try_pending(&self) -> Result<BreakerGuard, Overflow> {
        self.try_acquire(BreakerLimit::MaxPendingRequests)
    }

    /// A slot for one open connection.
    pub fn try_connection(&self) -> Result<BreakerGuard, Overflow> {
        self.try_acquire(BreakerLimit::MaxConnections)
    }

    /// Resolves after a connection slot is given back (one more waiter per release) or the
    /// limits change: take it, then try [`try_connection`](Self::try_connection) again, and
    /// await it only if that failed too; a dial waits for a slot that way instead of
    /// failing, as Envoy keeps a request pending at `max_connections` rather than refusing it.
    pub fn connection_released(&self) -> event_listener::EventListener {
        self.inner.connection_released.listen()
    }

    /// A slot for one retry in flight.
    pub fn try_retry(&self) -> Result<BreakerGuard, Overflow> {
        self.try_acquire(BreakerLimit::MaxRetries)
    }

    /// How many slots of `limit` are taken.
    pub fn in_flight(&self, limit: BreakerLimit) -> u32 {
        self.counter(limit).in_flight.load(Ordering::Relaxed)
    }

    /// How many slots of `limit` are free (Envoy's `remaining_*` gauges).
    pub fn remaining(&self, limit: BreakerLimit) -> u32 {
        let c = self.counter(limit);
        c.max
            .load(Ordering::Relaxed)
            .saturating_sub(c.in_flight.load(Ordering::Relaxed))
    }

    /// Whether `limit` is full right now (Envoy's `cx_open`, `rq_open`, ... gauges).
    pub fn is_open(&self, limit: BreakerLimit) -> bool {
        self.remaining(limit) == 0
    }
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the guard is dropped"]
pub struct BreakerGuard {
    inner: Arc<Inner>,
    limit: BreakerLimit,
}

impl BreakerGuard {
    /// Which limit this slot counts against.
    pub fn limit(&self) -> BreakerLimit {
        self.limit
    }
}

impl Drop for BreakerGuard {
    fn drop(&mut self) {
        self.inner.counters[self.limit.index()]
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        if self.limit == BreakerLimit::MaxConnections {
            // One more waiter per slot given back (a plain `notify(1)` would do nothing
            // while an earlier notified waiter has not run yet).
            use event_listener::IntoNotification as _;
            self.inner.connection_released.notify(1.additional());
        }
    }
}

#[cfg(test)]
mod tests;
