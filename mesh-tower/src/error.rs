//! The ways a call through the mesh can fail before or instead of reaching an endpoint.
//!
//! The outbound client answers these failures itself, so callers see an ordinary response:
//! an HTTP caller gets the status below with an `x-mesh-error` header naming the cause, a
//! gRPC caller (request `content-type: application/grpc`) gets HTTP 200 with the
//! `grpc-status` below. The typed error is also put in the response's extensions:
//! `response.extensions().get::<MeshError>()`.
//!
//! | error | HTTP | gRPC |
//! |---|---|---|
//! | [`MeshError::NoRoute`] | 404 | `UNAVAILABLE` (14) |
//! | [`MeshError::ClusterNotFound`], [`MeshError::NoHealthyEndpoint`] | 503 | `UNAVAILABLE` |
//! | [`MeshError::CircuitOpen`], [`MeshError::RetryBudgetExhausted`] | 503 | `UNAVAILABLE` |
//! | [`MeshError::Timeout`] | 504 | `DEADLINE_EXCEEDED` (4) |
//! | [`MeshError::Connect`] | 503 | `UNAVAILABLE` |
//! | [`MeshError::NonForwardingAction`] | 503 | `UNAVAILABLE` |
//! | [`MeshError::FaultAbort`] | the configured status | the configured code |

use mesh_core::breaker::BreakerLimit;

/// Why the mesh answered a call itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// No virtual host or route matched the request.
    #[error("no route for {authority}{path}")]
    NoRoute {
        /// The request's authority.
        authority: String,
        /// The request's path.
        path: String,
    },
    /// The route names a cluster the policy does not have (yet).
    #[error("cluster {0} is not known")]
    ClusterNotFound(String),
    /// Every endpoint of the cluster is unhealthy, ejected or absent.
    #[error("no healthy endpoint in cluster {0}")]
    NoHealthyEndpoint(String),
    /// A circuit-breaker limit is reached.
    #[error("circuit open for cluster {cluster}: {limit} ({max}) reached")]
    CircuitOpen {
        /// The cluster.
        cluster: String,
        /// Which limit.
        limit: BreakerLimit,
        /// Its value.
        max: u32,
    },
    /// The retry budget is spent (the original failure is returned instead, with this in
    /// the extensions).
    #[error("retry budget exhausted for cluster {0}")]
    RetryBudgetExhausted(String),
    /// The deadline (route timeout, max stream duration, grpc-timeout or per-try timeout)
    /// passed.
    #[error("deadline exceeded after {0:?}")]
    Timeout(std::time::Duration),
    /// Connecting to the endpoint failed.
    #[error("connection to {endpoint} failed: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The route's action is one a client does not forward (gRFC A28).
    #[error("route action is not forwarding")]
    NonForwardingAction,
    /// Fault injection aborted the call.
    #[error("fault injected: abort")]
    FaultAbort,
    /// The upstream failed mid-request.
    #[error("upstream {endpoint} failed: {reason}")]
    Upstream {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

impl MeshError {
    /// The HTTP status an HTTP caller sees.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Self::NoRoute { .. } => http::StatusCode::NOT_FOUND,
            Self::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { .. } => http::StatusCode::BAD_GATEWAY,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code a gRPC caller sees.
    pub fn grpc_code(&self) -> u32 {
        match self {
            Self::Timeout(_) => 4,
            _ => 14,
        }
    }

    /// A short, stable name for the `x-mesh-error` header and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no-route",
            Self::ClusterNotFound(_) => "cluster-not-found",
            Self::NoHealthyEndpoint(_) => "no-healthy-endpoint",
            Self::CircuitOpen { limit, .. } => match limit {
                BreakerLimit::MaxConnections => "circuit-open:max-connections",
                BreakerLimit::MaxPendingRequests => "circuit-open:max-pending-requests",
                BreakerLimit::MaxRequests => "circuit-open:max-requests",
                BreakerLimit::MaxRetries => "circuit-open:max-retries",
                _ => "circuit-open",
            },
            Self::RetryBudgetExhausted(_) => "retry-budget-exhausted",
            Self::Timeout(_) => "timeout",
            Self::Connect { .. } => "connect-failure",
            Self::NonForwardingAction => "non-forwarding-action",
            Self::FaultAbort => "fault-abort",
            Self::Upstream { .. } => "upstream-failure",
        }
    }

    /// True for an open circuit.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. })
    }

    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}
