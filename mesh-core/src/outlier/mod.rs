//! Outlier detection: passive health checking that ejects misbehaving hosts from load
//! balancing for a while, with Envoy's semantics (consecutive 5xx, consecutive gateway
//! failures, success rate, failure percentage).
//!
//! [`OutlierConfig`] is the policy; [`OutlierDetector`] is the state machine. Outcomes are
//! recorded per request with [`OutlierDetector::record`] (atomics only); consecutive-failure
//! ejections happen right there. Success-rate and failure-percentage analysis, and the return
//! of hosts whose ejection has expired, happen at [`OutlierDetector::on_interval`], which the
//! caller runs every [`OutlierConfig::interval`].
//!
//! Differences from Envoy, on purpose: local-origin errors (connect failure, reset,
//! timeout) are always folded into the external counters as gateway failures (Envoy's
//! default `split_external_local_origin_errors: false`); there is no ejection-time jitter.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mesh_core::outlier::{OutlierConfig, OutlierDetector, Outcome};
//! let t0 = Instant::now();
//! let detector = OutlierDetector::new(OutlierConfig::default(), vec!["a", "b"], t0);
//! for _ in 0..5 {
//!     detector.record(0, Outcome::Http5xx, t0);
//! }
//! assert!(detector.is_ejected(0, t0));
//! assert!(!detector.is_ejected(0, t0 + Duration::from_secs(30)));
//! ```

mod detector;

pub use detector::{EjectionReason, IntervalReport, OutlierDetector};

use std::time::Duration;

/// What one request did to a host's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Success (including 4xx, which are not the host's fault).
    Success,
    /// A local-origin failure: connect failure, reset, timeout. Counted as a gateway failure.
    LocalOriginFailure,
    /// A 5xx other than 502, 503, 504.
    Http5xx,
    /// 502, 503 or 504 (a 5xx that is also a gateway failure).
    GatewayFailure,
}

impl Outcome {
    /// Whether the outcome counts against the host.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success)
    }
}

/// Envoy's `OutlierDetection`, with Envoy's defaults. Percentages are 0..=100; the
/// `enforcing_*` ones are the chance that a detected outlier is actually ejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Consecutive 5xx (gateway and local-origin failures included) before ejection; 0
    /// disables. Default 5.
    pub consecutive_5xx: u32,
    /// Default 100.
    pub enforcing_consecutive_5xx: u32,
    /// Consecutive gateway failures before ejection; 0 disables. Default 5.
    pub consecutive_gateway_failure: u32,
    /// Default 0, as in Envoy: detected but not enforced unless configured.
    pub enforcing_consecutive_gateway_failure: u32,
    /// Hosts with enough volume needed for success-rate analysis. Default 5.
    pub success_rate_minimum_hosts: u32,
    /// Requests in one interval for a host to take part in success-rate analysis.
    /// Default 100.
    pub success_rate_request_volume: u32,
    /// Outliers are below `mean − stdev × factor / 1000`. Default 1900.
    pub success_rate_stdev_factor: u32,
    /// Default 100.
    pub enforcing_success_rate: u32,
    /// Hosts whose failure percentage is at or above this are outliers. Default 85.
    pub failure_percentage_threshold: u32,
    /// Hosts with enough volume needed for failure-percentage analysis. Default 5.
    pub failure_percentage_minimum_hosts: u32,
    /// Requests in one interval for a host to take part. Default 50.
    pub failure_percentage_request_volume: u32,
    /// Default 0, as in Envoy.
    pub enforcing_failure_percentage: u32,
    /// Time between analysis sweeps. Default 10 s.
    pub interval: Duration,
    /// Ejection time per ejection count. Default 30 s.
    pub base_ejection_time: Duration,
    /// Cap on the ejection time (the cap is never below `base_ejection_time`). Default 300 s.
    pub max_ejection_time: Duration,
    /// Ejections are refused once this share of hosts is ejected. As in Envoy (and
    /// grpc-java), the check is "currently ejected < max", so one host can always be
    /// ejected while the value is above 0, even when 10% of the set rounds to 0 hosts.
    /// Default 10.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

impl OutlierConfig {
    /// Envoy's defaults.
    pub fn new() -> Self {
        OutlierConfig::default()
    }

    /// Sets the consecutive-5xx threshold and its enforcement percentage.
    pub fn with_consecutive_5xx(mut self, threshold: u32, enforcing: u32) -> Self {
        self.consecutive_5xx = threshold;
        self.enforcing_consecutive_5xx = enforcing;
        self
    }

    /// Sets the consecutive-gateway-failure threshold and its enforcement percentage.
    pub fn with_consecutive_gateway_failure(mut self, threshold: u32, enforcing: u32) -> Self {
        self.consecutive_gateway_failure = threshold;
        self.enforcing_consecutive_gateway_failure = enforcing;
        self
    }

    /// Sets the success-rate parameters.
    pub fn with_success_rate(
        mut self,
        minimum_hosts: u32,
        request_volume: u32,
        stdev_factor: u32,
        enforcing: u32,
    ) -> Self {
        self.success_rate_minimum_hosts = minimum_hosts;
        self.success_rate_request_volume = request_volume;
        self.success_rate_stdev_factor = stdev_factor;
        self.enforcing_success_rate = enforcing;
        self
    }

    /// Sets the failure-percentage parameters.
    pub fn with_failure_percentage(
        mut self,
        threshold: u32,
        minimum_hosts: u32,
        request_volume: u32,
        enforcing: u32,
    ) -> Self {
        self.failure_percentage_threshold = threshold;
        self.failure_percentage_minimum_hosts = minimum_hosts;
        self.failure_percentage_request_volume = request_volume;
        self.enforcing_failure_percentage = enforcing;
        self
    }

    /// Sets the sweep interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the base and maximum ejection times.
    pub fn with_ejection_time(mut self, base: Duration, max: Duration) -> Self {
        self.base_ejection_time = base;
        self.max_ejection_time = max;
        self
    }

    /// Sets `max_ejection_percent`.
    pub fn with_max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = percent;
        self
    }

    /// How long the `times`-th ejection lasts: `base × times`, capped at
    /// `max(base, max_ejection_time)`.
    pub fn ejection_time(&self, times: u32) -> Duration {
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(cap)
    }
}

#[cfg(test)]
mod tests;
