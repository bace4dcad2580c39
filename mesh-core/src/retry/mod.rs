//! Retries: which failures to retry ([`RetryOn`]), how many ([`RetryPolicy`],
//! [`RetryState`]), how long to wait ([`BackoffConfig`]) and how many may be in flight at
//! once ([`RetryBudget`]).
//!
//! Everything is plain data; the caller passes the classified outcome of each attempt
//! (see [`crate::classify`]) and a random source for the back-off.
//!
//! ```
//! use mesh_core::classify::classify;
//! use mesh_core::retry::{RetryDecision, RetryOn, RetryPolicy, RetryState};
//! let policy = RetryPolicy::new(2, RetryOn::parse("5xx,unavailable").unwrap());
//! let mut state = RetryState::new();
//! let failed = classify(Some(503), None, None);
//! assert_eq!(state.on_attempt(&policy, &failed), RetryDecision::Retry { retry: 1 });
//! assert_eq!(state.on_attempt(&policy, &failed), RetryDecision::Retry { retry: 2 });
//! assert!(!state.on_attempt(&policy, &failed).is_retry());
//! ```

mod backoff;
mod budget;
mod retry_on;

pub use backoff::BackoffConfig;
pub use budget::{BudgetExhausted, RequestToken, RetryBudget, RetryBudgetConfig, RetryToken};
pub use retry_on::{RetryOn, UnknownRetryOn};

use crate::classify::ResponseClass;

/// A route's retry policy (Envoy `RetryPolicy`, the parts decided per attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries allowed after the first attempt. Envoy default: 1.
    pub num_retries: u32,
    /// The failures that are retried.
    pub retry_on: RetryOn,
    /// The wait between attempts.
    pub backoff: BackoffConfig,
    /// The timeout of each attempt (Envoy `per_try_timeout`); `None` = only the route's.
    pub per_try_timeout: Option<std::time::Duration>,
}

impl Default for RetryPolicy {
    /// Envoy's defaults: one retry, but on no condition (a route must name them).
    fn default() -> Self {
        RetryPolicy::new(1, RetryOn::none())
    }
}

impl RetryPolicy {
    /// A policy with the default back-off.
    pub fn new(num_retries: u32, retry_on: RetryOn) -> Self {
        RetryPolicy {
            num_retries,
            retry_on,
            backoff: BackoffConfig::default(),
            per_try_timeout: None,
        }
    }

    /// Sets the back-off.
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the timeout of each attempt.
    pub fn with_per_try_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.per_try_timeout = timeout;
        self
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDecision {
    /// Make retry number `retry` (1-based), after the back-off for that number, if the
    /// retry budget and the breaker's `max_retries` allow it.
    Retry {
        /// The retry's number, 1 for the first retry.
        retry: u32,
    },
    /// Return this attempt's result.
    Stop(StopReason),
}

impl RetryDecision {
    /// Whether the decision is to retry.
    pub fn is_retry(&self) -> bool {
        matches!(self, RetryDecision::Retry { .. })
    }
}

/// Why no retry is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The attempt succeeded.
    Success,
    /// The failure is not one the policy retries.
    NotRetriable,
    /// `num_retries` retries were already made.
    RetriesExhausted,
}

/// The retry bookkeeping of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    retries_made: u32,
}

impl RetryState {
    /// A request whose first attempt is about to be made.
    pub fn new() -> Self {
        RetryState::default()
    }

    /// Retries made so far.
    pub fn retries_made(&self) -> u32 {
        self.retries_made
    }

    /// Decides after an attempt ended with `class`; a `Retry` decision counts the retry.
    pub fn on_attempt(&mut self, policy: &RetryPolicy, class: &ResponseClass) -> RetryDecision {
        if class.is_success() {
            return RetryDecision::Stop(StopReason::Success);
        }
        if !policy.retry_on.matches(class) {
            return RetryDecision::Stop(StopReason::NotRetriable);
        }
        if self.retries_made >= policy.num_retries {
            return RetryDecision::Stop(StopReason::RetriesExhausted);
        }
        self.retries_made += 1;
        RetryDecision::Retry {
            retry: self.retries_made,
        }
    }
}

#[cfg(test)]
mod tests;
