//! Envoy's retry budget: retries in flight are capped at a share of requests in flight.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Envoy's `RetryBudget`: a retry is allowed while the retries in flight are fewer than
/// `max(min_retry_concurrency, budget_percent% × requests in flight)`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryBudgetConfig {
    /// Share of active requests that may be retries, in percent. Envoy default: 20.
    pub budget_percent: f64,
    /// Retries always allowed in flight, whatever the request count. Envoy default: 3.
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        }
    }
}

impl RetryBudgetConfig {
    /// A budget with both values given. A negative or NaN percent is taken as 0.
    pub fn new(budget_percent: f64, min_retry_concurrency: u32) -> Self {
        RetryBudgetConfig {
            budget_percent,
            min_retry_concurrency,
        }
    }

    /// The percent in hundredths of a percent, clamped to 0..=100%, for atomic storage.
    fn basis_points(&self) -> u32 {
        if self.budget_percent.is_nan() {
            return 0;
        }
        (self.budget_percent.clamp(0.0, 100.0) * 100.0).round() as u32
    }
}

/// The budget is spent: the retry is not made (the original failure is returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("retry budget exhausted: {active_retries} retries in flight, {allowed} allowed")]
#[non_exhaustive]
pub struct BudgetExhausted {
    /// Retries in flight when the retry was refused.
    pub active_retries: u64,
    /// What the budget allowed at that moment.
    pub allowed: u64,
}

#[derive(Debug)]
struct Inner {
    basis_points: AtomicU32,
    min_concurrency: AtomicU32,
    active_requests: AtomicU64,
    active_retries: AtomicU64,
}

/// The retry budget of one cluster: atomic counters, cheap to clone, `Send + Sync`.
///
/// Every request holds a [`RequestToken`] for its lifetime (retries included); each retry
/// additionally holds a [`RetryToken`] while it is in flight.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

impl RetryBudget {
    /// An empty budget with this config.
    pub fn new(config: &RetryBudgetConfig) -> Self {
        let budget = RetryBudget {
            inner: Arc::new(Inner {
                basis_points: AtomicU32::new(0),
                min_concurrency: AtomicU32::new(0),
                active_requests: AtomicU64::new(0),
                active_retries: AtomicU64::new(0),
            }),
        };
        budget.set_config(config);
        budget
    }

    /// Replaces the config, keeping the counts.
    pub fn set_config(&self, config: &RetryBudgetConfig) {
        let i = &self.inner;
        i.basis_points
            .store(config.basis_points(), Ordering::Relaxed);
        i.min_concurrency
            .store(config.min_retry_concurrency, Ordering::Relaxed);
    }

    /// Counts one request in flight until the token is dropped.
    pub fn request(&self) -> RequestToken {
        self.inner.active_requests.fetch_add(1, Ordering::AcqRel);
        RequestToken {
            inner: Arc::clone(&self.inner),
        }
    }

    /// How many retries the budget allows in flight right now.
    pub fn allowed(&self) -> u64 {
        let i = &self.inner;
        let requests = i.active_requests.load(Ordering::Acquire);
        let share = requests * u64::from(i.basis_points.load(Ordering::Relaxed)) / 10_000;
        share.max(u64::from(i.min_concurrency.load(Ordering::Relaxed)))
    }

    /// Takes a retry slot if the budget allows one.
    pub fn try_retry(&self) -> Result<RetryToken, BudgetExhausted> {
        let allowed = self.allowed();
        self.inner
            .active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .map_err(|active_retries| BudgetExhausted {
                active_retries,
                allowed,
            })?;
        Ok(RetryToken {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Requests in flight.
    pub fn active_requests(&self) -> u64 {
        self.inner.active_requests.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn active_retries(&self) -> u64 {
        self.inner.active_retries.load(Ordering::Relaxed)
    }
}

/// One request in flight; dropping it stops counting it.
#[derive(Debug)]
#[must_use = "the request stops counting as soon as the token is dropped"]
pub struct RequestToken {
    inner: Arc<Inner>,
}

impl Drop for RequestToken {
    fn drop(&mut self) {
        self.inner.active_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One retry in flight; dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "the retry slot is released as soon as the token is dropped"]
pub struct RetryToken {
    inner: Arc<Inner>,
}

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.inner.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}
