use std::time::Duration;

use super::weighted::WeightedClusters;
pub use crate::retry::RetryPolicy;

/// What a route does with the requests it matches.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Routes live in the snapshot and are only borrowed per request: the size never moves.
#[allow(clippy::large_enum_variant)]
pub enum RouteAction {
    /// Forward to a cluster.
    Forward(ForwardAction),
    /// Answer directly, without sending the request anywhere.
    Direct {
        /// The HTTP status.
        status: u16,
        /// The body, if any.
        body: Option<String>,
    },
    /// An action gRPC does not forward (redirect, filter action): the call fails with
    /// `UNAVAILABLE`, as gRFC A28 says.
    NonForwarding,
}

/// Which cluster or clusters a forwarded request goes to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClusterSpecifier {
    /// One cluster.
    Cluster(String),
    /// A weighted split.
    Weighted(WeightedClusters),
}

/// Envoy's `max_stream_duration` for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxStreamDuration {
    /// The longest a stream may last.
    pub max: Option<Duration>,
    /// Cap on the `grpc-timeout` header; `Some(ZERO)` means uncapped (gRFC A31).
    pub grpc_timeout_header_max: Option<Duration>,
}

/// What a hash policy hashes (gRFC A42).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HashPolicyKind {
    /// A request header's value.
    Header {
        /// The header name, lower-case.
        name: String,
    },
    /// The source IP.
    SourceIp,
    /// A value fixed per channel (gRPC's `io.grpc.channel_id`).
    ChannelId,
}

/// One hash policy; `terminal` stops at the first that yields a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct HashPolicy {
    /// What is hashed.
    pub kind: HashPolicyKind,
    /// Stop here when this policy produced a hash.
    pub terminal: bool,
}

/// Forwarding to one or several clusters, with the per-route traffic policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAction {
    clusters: ClusterSpecifier,
    /// Route timeout (Envoy `timeout`, Istio `timeout`); `None` = no timeout.
    pub timeout: Option<Duration>,
    /// Max stream duration and the `grpc-timeout` cap.
    pub max_stream_duration: MaxStreamDuration,
    /// The retry policy; `None` falls back to the virtual host's.
    pub retry_policy: Option<RetryPolicy>,
    /// Hash policies for ring hash.
    pub hash_policies: Vec<HashPolicy>,
    /// Replaces the matched path prefix (Istio `rewrite.uri`).
    pub prefix_rewrite: Option<String>,
    /// Replaces the authority (Istio `rewrite.authority`).
    pub host_rewrite: Option<String>,
}

impl ForwardAction {
    /// Forwarding to `clusters` with no timeouts, retries or hashing.
    pub fn new(clusters: ClusterSpecifier) -> Self {
        Self {
            clusters,
            timeout: None,
            max_stream_duration: MaxStreamDuration::default(),
            retry_policy: None,
            hash_policies: Vec::new(),
            prefix_rewrite: None,
            host_rewrite: None,
        }
    }

    /// Forwarding to one cluster.
    pub fn to_cluster(name: impl Into<String>) -> Self {
        Self::new(ClusterSpecifier::Cluster(name.into()))
    }

    /// Where requests go.
    pub fn clusters(&self) -> &ClusterSpecifier {
        &self.clusters
    }

    /// Every cluster this action can send to.
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match &self.clusters {
            ClusterSpecifier::Cluster(c) => (Some(c.as_str()), None),
            ClusterSpecifier::Weighted(w) => (None, Some(w.clusters().iter().map(|c| c.name()))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}
