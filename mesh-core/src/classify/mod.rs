//! One answer to "did this call fail, and how?", shared by retries, the circuit breaker,
//! outlier detection and metrics so that they never disagree.
//!
//! [`classify`] takes what is known when an attempt ends — the HTTP status, the gRPC status
//! (from headers or trailers) and the transport error, if any — and returns a
//! [`ResponseClass`]. Precedence:
//!
//! 1. a transport error wins (no complete response was seen);
//! 2. a gRPC status on an HTTP 200 (or with no HTTP status) decides: `0` is success,
//!    anything else is [`FailureKind::GrpcStatus`];
//! 3. otherwise the HTTP status: 502/503/504 are gateway errors, other 5xx are
//!    [`FailureKind::Http5xx`], 4xx are [`FailureKind::Http4xx`] (a failed request, but
//!    not a sign of an unhealthy upstream), everything else succeeds;
//! 4. nothing at all (no status, no error) is [`FailureKind::Other`].
//!
//! ```
//! use mesh_core::classify::{classify, TransportError};
//! assert!(classify(Some(200), Some(0), None).is_success());
//! assert!(classify(Some(200), Some(14), None).is_gateway_failure()); // UNAVAILABLE
//! assert!(classify(None, None, Some(TransportError::ConnectFailure)).is_gateway_failure());
//! assert!(!classify(Some(404), None, None).is_server_failure());
//! ```

use crate::outlier::Outcome;

/// gRPC status codes the mesh gives a meaning to (the numbers of `google.rpc.Code`).
pub mod grpc_code {
    /// `OK`.
    pub const OK: i32 = 0;
    /// `CANCELLED`.
    pub const CANCELLED: i32 = 1;
    /// `UNKNOWN`.
    pub const UNKNOWN: i32 = 2;
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// `INTERNAL`.
    pub const INTERNAL: i32 = 13;
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: i32 = 14;
    /// `DATA_LOSS`.
    pub const DATA_LOSS: i32 = 15;
}

/// Why an attempt ended without a complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be established (refused, unreachable, TLS handshake failed).
    ConnectFailure,
    /// The connection or stream was reset after the request was sent.
    Reset,
    /// HTTP/2 `REFUSED_STREAM`: the server did not process the request at all.
    RefusedStream,
    /// The per-try timeout fired before the response arrived.
    Timeout,
    /// Any other local error.
    Other,
}

/// How a failed attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// A 5xx other than 502, 503 and 504.
    Http5xx(u16),
    /// 502, 503 or 504.
    GatewayError(u16),
    /// A 4xx: the request failed, but the upstream is working as it should.
    Http4xx(u16),
    /// A non-zero gRPC status.
    GrpcStatus(i32),
    /// See [`TransportError::ConnectFailure`].
    ConnectFailure,
    /// See [`TransportError::Reset`].
    Reset,
    /// See [`TransportError::RefusedStream`].
    RefusedStream,
    /// See [`TransportError::Timeout`].
    Timeout,
    /// See [`TransportError::Other`]; also a response with neither status nor error.
    Other,
}

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseClass {
    /// The call succeeded (2xx, 3xx, 1xx, or gRPC `OK`).
    Success,
    /// The call failed.
    Failure(FailureKind),
}

/// Classifies one attempt; see the [module docs](self) for the precedence.
pub fn classify(
    http_status: Option<u16>,
    grpc_status: Option<i32>,
    transport_error: Option<TransportError>,
) -> ResponseClass {
    use FailureKind as F;
    if let Some(err) = transport_error {
        return ResponseClass::Failure(match err {
            TransportError::ConnectFailure => F::ConnectFailure,
            TransportError::Reset => F::Reset,
            TransportError::RefusedStream => F::RefusedStream,
            TransportError::Timeout => F::Timeout,
            TransportError::Other => F::Other,
        });
    }
    if let Some(code) = grpc_status {
        if matches!(http_status, None | Some(200)) {
            return if code == grpc_code::OK {
                ResponseClass::Success
            } else {
                ResponseClass::Failure(F::GrpcStatus(code))
            };
        }
    }
    match http_status {
        Some(s @ (502..=504)) => ResponseClass::Failure(F::GatewayError(s)),
        Some(s @ 500..=599) => ResponseClass::Failure(F::Http5xx(s)),
        Some(s @ 400..=499) => ResponseClass::Failure(F::Http4xx(s)),
        Some(_) => ResponseClass::Success,
        None => ResponseClass::Failure(F::Other),
    }
}

/// The HTTP status Envoy uses in place of a gRPC status for outlier detection
/// (`UNAVAILABLE` → 503, `DEADLINE_EXCEEDED` → 504, server-side errors → 500, the rest → a
/// 4xx or 200, which do not count against the host).
fn grpc_to_http(code: i32) -> u16 {
    match code {
        grpc_code::OK => 200,
        grpc_code::UNAVAILABLE => 503,
        grpc_code::DEADLINE_EXCEEDED => 504,
        grpc_code::UNKNOWN | grpc_code::INTERNAL | grpc_code::DATA_LOSS => 500,
        grpc_code::RESOURCE_EXHAUSTED => 429,
        _ => 400,
    }
}

impl ResponseClass {
    /// Whether the attempt succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, ResponseClass::Success)
    }

    /// Whether the attempt failed for any reason, 4xx included.
    pub fn is_failure(&self) -> bool {
        !self.is_success()
    }

    /// The failure kind, if the attempt failed.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            ResponseClass::Success => None,
            ResponseClass::Failure(kind) => Some(*kind),
        }
    }

    /// Whether the failure points at the upstream or the path to it (5xx, a gRPC status
    /// Envoy maps to 5xx, any transport error) rather than at the request (4xx).
    pub fn is_server_failure(&self) -> bool {
        !matches!(self.outlier_outcome(), Outcome::Success)
    }

    /// A gateway failure as outlier detection counts it: 502, 503, 504, a connect failure,
    /// or a gRPC `UNAVAILABLE` / `DEADLINE_EXCEEDED` (which Envoy maps to 503 / 504).
    pub fn is_gateway_failure(&self) -> bool {
        match self {
            ResponseClass::Success => false,
            ResponseClass::Failure(kind) => match kind {
                FailureKind::GatewayError(_) | FailureKind::ConnectFailure => true,
                FailureKind::GrpcStatus(code) => matches!(grpc_to_http(*code), 502..=504),
                _ => false,
            },
        }
    }

    /// What outlier detection records for this attempt. Transport errors are local-origin
    /// failures (counted as gateway failures, as Envoy does when it does not split local
    /// and external errors); a gRPC status is mapped to the HTTP status Envoy would use.
    pub fn outlier_outcome(&self) -> Outcome {
        let kind = match self {
            ResponseClass::Success => return Outcome::Success,
            ResponseClass::Failure(kind) => kind,
        };
        let status = match kind {
            FailureKind::Http5xx(s) | FailureKind::GatewayError(s) | FailureKind::Http4xx(s) => *s,
            FailureKind::GrpcStatus(code) => grpc_to_http(*code),
            FailureKind::ConnectFailure
            | FailureKind::Reset
            | FailureKind::RefusedStream
            | FailureKind::Timeout
            | FailureKind::Other => return Outcome::LocalOriginFailure,
        };
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::Http5xx,
            _ => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests;
