use std::time::Duration;

use crate::matcher::HeaderMatcher;

/// A fraction as Envoy writes it: a numerator over 100, 10 000 or 1 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FractionalPercent {
    numerator: u32,
    denominator: u32,
}

impl FractionalPercent {
    /// `numerator / denominator`; the numerator is capped at the denominator, and a zero
    /// denominator is taken as 100 (Envoy's default `HUNDRED`).
    pub fn new(numerator: u32, denominator: u32) -> Self {
        let denominator = if denominator == 0 { 100 } else { denominator };
        Self {
            numerator: numerator.min(denominator),
            denominator,
        }
    }

    /// A percentage such as Istio's `percentage.value: 12.5`, kept to a millionth.
    pub fn from_percent(percent: f64) -> Self {
        let clamped = if percent.is_finite() {
            percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        Self::new((clamped * 10_000.0).round() as u32, 1_000_000)
    }

    /// The numerator.
    pub fn numerator(&self) -> u32 {
        self.numerator
    }

    /// The denominator.
    pub fn denominator(&self) -> u32 {
        self.denominator
    }

    /// True for the fraction of uniformly random draws that falls under it.
    pub fn hits(&self, random: u64) -> bool {
        random % u64::from(self.denominator) < u64::from(self.numerator)
    }
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    /// The delay; with `header_controlled`, taken from `x-envoy-fault-delay-request` instead.
    pub fixed: Option<Duration>,
    /// Taken from the request's headers (gRFC A33).
    pub header_controlled: bool,
    /// How many requests get it.
    pub percentage: FractionalPercent,
}

/// An injected abort.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FaultAbort {
    /// Answer with this HTTP status.
    Http {
        /// The status code.
        status: u16,
        /// How many requests get it.
        percentage: FractionalPercent,
    },
    /// Answer with this gRPC status code.
    Grpc {
        /// The gRPC code.
        code: u32,
        /// How many requests get it.
        percentage: FractionalPercent,
    },
    /// Taken from `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`.
    HeaderControlled {
        /// How many requests get it.
        percentage: FractionalPercent,
    },
}

/// Fault injection for a route (Envoy's `HTTPFault`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultInjection {
    /// Delay, if any.
    pub delay: Option<FaultDelay>,
    /// Abort, if any.
    pub abort: Option<FaultAbort>,
    /// At most this many requests faulted at once.
    pub max_active_faults: Option<u32>,
    /// Only requests matching all of these are faulted.
    pub headers: Vec<HeaderMatcher>,
}
