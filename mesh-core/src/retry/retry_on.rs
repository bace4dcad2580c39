//! The `retry_on` condition set.

use crate::classify::{grpc_code, FailureKind, ResponseClass};

/// An unknown `retry_on` token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown retry_on condition {token:?} (known: {known})", known = RetryOn::KNOWN_NAMES.join(", "))]
#[non_exhaustive]
pub struct UnknownRetryOn {
    /// The token as written.
    pub token: String,
}

/// The conditions under which a failed attempt is retried, as Envoy's and Istio's
/// `retry_on` strings name them, plus the status list for `retriable-status-codes`.
///
/// What each condition matches (on a [`ResponseClass`]):
///
/// | name | matches |
/// |---|---|
/// | `5xx` | any 5xx, and every transport error (connect failure, reset, refused stream, timeout) |
/// | `gateway-error` | 502, 503, 504, and every transport error (as Envoy retries resets under it) |
/// | `reset` | reset, timeout, other transport errors |
/// | `connect-failure` | connect failure |
/// | `refused-stream` | HTTP/2 `REFUSED_STREAM` |
/// | `retriable-4xx` | 409 |
/// | `retriable-status-codes` | an HTTP status in [`RetryOn::retriable_status_codes`] |
/// | `retriable-headers` | nothing here: headers are matched by the caller, see [`RetryOn::retriable_headers`] |
/// | `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` | that gRPC status |
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryOn {
    bits: u32,
    /// The statuses `retriable-status-codes` retries on.
    pub retriable_status_codes: Vec<u16>,
}

macro_rules! conditions {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl RetryOn {
            $($(#[$doc])* pub const $name: u32 = 1 << $bit;)*
            const TABLE: &'static [(&'static str, u32)] = &[$(($text, 1 << $bit)),*];
            /// Every condition name this parser knows.
            pub const KNOWN_NAMES: &'static [&'static str] = &[$($text),*];
        }
    };
}

conditions! {
    /// `5xx`.
    FIVE_XX = 0, "5xx";
    /// `gateway-error`.
    GATEWAY_ERROR = 1, "gateway-error";
    /// `reset`.
    RESET = 2, "reset";
    /// `connect-failure`.
    CONNECT_FAILURE = 3, "connect-failure";
    /// `retriable-4xx`.
    RETRIABLE_4XX = 4, "retriable-4xx";
    /// `refused-stream`.
    REFUSED_STREAM = 5, "refused-stream";
    /// `retriable-status-codes`.
    RETRIABLE_STATUS_CODES = 6, "retriable-status-codes";
    /// `retriable-headers`.
    RETRIABLE_HEADERS = 7, "retriable-headers";
    /// gRPC `cancelled`.
    GRPC_CANCELLED = 8, "cancelled";
    /// gRPC `deadline-exceeded`.
    GRPC_DEADLINE_EXCEEDED = 9, "deadline-exceeded";
    /// gRPC `internal`.
    GRPC_INTERNAL = 10, "internal";
    /// gRPC `resource-exhausted`.
    GRPC_RESOURCE_EXHAUSTED = 11, "resource-exhausted";
    /// gRPC `unavailable`.
    GRPC_UNAVAILABLE = 12, "unavailable";
}

impl RetryOn {
    /// The empty set: never retry.
    pub fn none() -> Self {
        RetryOn::default()
    }

    /// Parses a comma-separated list such as `"5xx,reset,unavailable"`. Whitespace around
    /// tokens and empty tokens are ignored; an unknown token is an error naming it.
    pub fn parse(s: &str) -> Result<Self, UnknownRetryOn> {
        let mut bits = 0;
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bit = Self::TABLE
                .iter()
                .find(|(name, _)| *name == token)
                .map(|(_, bit)| *bit)
                .ok_or_else(|| UnknownRetryOn {
                    token: token.to_owned(),
                })?;
            bits |= bit;
        }
        Ok(RetryOn {
            bits,
            retriable_status_codes: Vec::new(),
        })
    }

    /// Adds the statuses for `retriable-status-codes` (the condition itself must be set
    /// for them to count, as in Envoy).
    pub fn with_retriable_status_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.retriable_status_codes.extend(codes);
        self
    }

    /// Adds conditions by bit (`RetryOn::FIVE_XX | RetryOn::RESET`).
    pub fn with(mut self, bits: u32) -> Self {
        self.bits |= bits;
        self
    }

    /// Whether every condition in `bits` is set.
    pub fn contains(&self, bits: u32) -> bool {
        self.bits & bits == bits
    }

    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Whether `retriable-headers` is set; matching the response headers is the caller's
    /// job, since this crate does not see them.
    pub fn retriable_headers(&self) -> bool {
        self.contains(Self::RETRIABLE_HEADERS)
    }

    /// The names of the set conditions, in canonical order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        Self::TABLE
            .iter()
            .filter(|(_, bit)| self.bits & bit != 0)
            .map(|(name, _)| *name)
    }

    /// Whether an attempt with this outcome should be retried under these conditions.
    pub fn matches(&self, class: &ResponseClass) -> bool {
        let kind = match class {
            ResponseClass::Success => return false,
            ResponseClass::Failure(kind) => *kind,
        };
        let has = |bit| self.bits & bit != 0;
        let transport = Self::FIVE_XX | Self::GATEWAY_ERROR;
        match kind {
            FailureKind::Http5xx(s) => has(Self::FIVE_XX) || self.status_listed(s),
            FailureKind::GatewayError(s) => has(transport) || self.status_listed(s),
            FailureKind::Http4xx(s) => {
                (s == 409 && has(Self::RETRIABLE_4XX)) || self.status_listed(s)
            }
            FailureKind::GrpcStatus(code) => match code {
                grpc_code::CANCELLED => has(Self::GRPC_CANCELLED),
                grpc_code::DEADLINE_EXCEEDED => has(Self::GRPC_DEADLINE_EXCEEDED),
                grpc_code::INTERNAL => has(Self::GRPC_INTERNAL),
                grpc_code::RESOURCE_EXHAUSTED => has(Self::GRPC_RESOURCE_EXHAUSTED),
                grpc_code::UNAVAILABLE => has(Self::GRPC_UNAVAILABLE),
                _ => false,
            },
            FailureKind::ConnectFailure => has(transport | Self::CONNECT_FAILURE),
            FailureKind::RefusedStream => has(transport | Self::REFUSED_STREAM),
            FailureKind::Reset | FailureKind::Timeout | FailureKind::Other => {
                has(transport | Self::RESET)
            }
        }
    }

    fn status_listed(&self, status: u16) -> bool {
        self.contains(Self::RETRIABLE_STATUS_CODES) && self.retriable_status_codes.contains(&status)
    }
}

impl std::str::FromStr for RetryOn {
    type Err = UnknownRetryOn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetryOn::parse(s)
    }
}
