//! Retries as a `tower::retry::Policy`: the route's retry policy (`RetryState` counts the
//! attempts), a back-off between them, each retry admitted by the deadline, the breaker's
//! `max_retries` and the cluster's retry budget. A request is copied only while a retry can
//! still follow and only when its body is held in memory (`ReplayBody`); without a retry
//! policy this layer is not in the stack at all.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Response};
use mesh_core::breaker::{BreakerGuard, CircuitBreaker};
use mesh_core::classify::{classify, ResponseClass};
use mesh_core::cluster::Cluster;
use mesh_core::retry::{RetryBudget, RetryDecision, RetryPolicy, RetryState, RetryToken};
use tokio::time::Instant;

use super::attempt::{self, Attempt, Failed};
use super::response::ResponseBody;
use crate::metrics::Metrics;

/// Upstreams can tell retries apart (Envoy's `include_request_attempt_count`).
pub(crate) static ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");

/// One call's retries.
#[derive(Clone)]
pub(crate) struct Retries<'p> {
    policy: &'p RetryPolicy,
    state: RetryState,
    /// The call's deadline: no retry starts after it.
    deadline: Option<Instant>,
    breaker: Arc<CircuitBreaker>,
    budget: Option<Arc<RetryBudget>>,
    metrics: Metrics,
    cluster: Arc<Cluster>,
    /// The slots of the retry in flight (Envoy counts retries in flight).
    slots: Option<Arc<(BreakerGuard, Option<RetryToken>)>>,
    /// Each attempt carries its number in `x-envoy-attempt-count`.
    count_attempts: bool,
}

impl std::fmt::Debug for Retries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries")
            .field("policy", self.policy)
            .field("state", &self.state)
            .finish()
    }
}

impl<'p> Retries<'p> {
    pub(crate) fn new(
        policy: &'p RetryPolicy,
        deadline: Option<Instant>,
        breaker: Arc<CircuitBreaker>,
        budget: Option<Arc<RetryBudget>>,
        metrics: Metrics,
        cluster: Arc<Cluster>,
    ) -> Self {
        Self {
            policy,
            state: RetryState::new(),
            deadline,
            breaker,
            budget,
            metrics,
            cluster,
            slots: None,
            count_attempts: false,
        }
    }

    /// Numbers each attempt in `x-envoy-attempt-count` (the virtual host's
    /// `include_request_attempt_count`).
    pub(crate) fn counting_attempts(mut self, count: bool) -> Self {
        self.count_attempts = count;
        self
    }

    /// The first attempt's deadline (its per-try timeout from when the call began) and,
    /// when counted, its attempt number.
    pub(crate) fn first(&self, attempt: &mut Attempt) {
        attempt.deadline = self.attempt_deadline(attempt.started);
        if self.count_attempts {
            attempt
                .req
                .headers_mut()
                .insert(ATTEMPT_COUNT.clone(), attempt_count(1));
        }
    }

    /// The per-try timeout from `start`, within the call's deadline.
    fn attempt_deadline(&self, start: Instant) -> Option<Instant> {
        match (self.deadline, self.policy.per_try_timeout) {
            (Some(d), Some(p)) => Some(d.min(start + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(start + p),
            (None, None) => None,
        }
    }

    /// Whether the breaker and the budget admit one more retry: their slots, or `None`.
    fn admit(&self) -> Option<(BreakerGuard, Option<RetryToken>)> {
        let breaker = self.breaker.try_retry().ok()?;
        let budget = match &self.budget {
            Some(b) => Some(b.try_retry().ok()?),
            None => None,
        };
        Some((breaker, budget))
    }
}

/// The `x-envoy-attempt-count` value of attempt `n`: the usual counts are static values,
/// not built (two allocations each) per request.
pub(crate) fn attempt_count(n: u32) -> HeaderValue {
    match n {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        4 => HeaderValue::from_static("4"),
        n => HeaderValue::from(n),
    }
}

/// How an attempt ended, for the retry policy.
fn class_of(result: &Result<Response<ResponseBody>, Failed>) -> Option<ResponseClass> {
    match result {
        Ok(resp) => Some(attempt::class_of(resp)),
        // A refusal (breaker, no endpoint) ends the call.
        Err(failed) => failed.transport.map(|t| classify(None, None, Some(t))),
    }
}

impl tower::retry::Policy<Attempt, Response<ResponseBody>, Failed> for Retries<'_> {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        next: &mut Attempt,
        result: &mut Result<Response<ResponseBody>, Failed>,
    ) -> Option<Self::Future> {
        let class = class_of(result)?;
        let RetryDecision::Retry { retry: n } = self.state.on_attempt(self.policy, &class) else {
            return None;
        };
        let backoff: Duration = crate::rng::with(|rng| self.policy.backoff.delay(n, rng));
        let start = Instant::now() + backoff;
        if self.deadline.is_some_and(|d| start >= d) {
            tracing::debug!(cluster = self.cluster.name(), "no time left for a retry");
            return None;
        }
        let Some(slots) = self.admit() else {
            self.metrics.retry_budget_exhausted(self.cluster.name());
            tracing::debug!(
                cluster = self.cluster.name(),
                "retry not allowed by the breaker or the budget"
            );
            return None;
        };
        // Held through the next attempt; the previous retry's are released.
        self.slots = Some(Arc::new(slots));
        self.metrics.retry(self.cluster.name());
        next.avoid = match result {
            Ok(resp) => resp.body().endpoint(),
            Err(failed) => failed.endpoint,
        };
        next.deadline = self.attempt_deadline(start);
        if self.count_attempts {
            next.req
                .headers_mut()
                .insert(ATTEMPT_COUNT.clone(), attempt_count(n + 1));
        }
        Some(tokio::time::sleep_until(start))
    }

    fn clone_request(&mut self, attempt: &Attempt) -> Option<Attempt> {
        // The last attempt allowed needs no copy.
        if self.state.retries_made() >= self.policy.num_retries {
            return None;
        }
        attempt.try_clone()
    }
}
