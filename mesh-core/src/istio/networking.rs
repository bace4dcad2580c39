//! Istio's `networking.istio.io/v1` `VirtualService` and `DestinationRule`, as users write
//! them. Unknown fields are errors (with their path); fields this mesh reads but does not
//! implement are accepted here and rejected by the translation with a clear message.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Kubernetes object metadata (only what the mesh reads; other fields are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (defaults to the workload's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A whole Istio object: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// e.g. `networking.istio.io/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// e.g. `VirtualService`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: S,
    /// Ignored, as the API server owns it.
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

/// Istio's `StringMatch`: exactly one of exact, prefix, regex.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact.
    pub exact: Option<String>,
    /// Prefix.
    pub prefix: Option<String>,
    /// RE2 regex.
    pub regex: Option<String>,
}

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Hosts the routes apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (only `mesh` applies to a service).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS routes (not supported).
    #[serde(default)]
    pub tls: Option<IgnoredAny>,
    /// TCP routes (not supported).
    #[serde(default)]
    pub tcp: Option<IgnoredAny>,
    /// Visibility (every namespace sees everything here).
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// One HTTP route of a VirtualService.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Matches, ORed; none matches everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Destinations with weights.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect (not supported).
    #[serde(default)]
    pub redirect: Option<IgnoredAny>,
    /// A direct response.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Delegation (not supported).
    #[serde(default)]
    pub delegate: Option<IgnoredAny>,
    /// Rewrite of path or authority.
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    /// Route timeout.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries.
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    /// Mirroring (not supported).
    #[serde(default)]
    pub mirror: Option<IgnoredAny>,
    /// Mirroring (not supported).
    #[serde(default)]
    pub mirrors: Option<IgnoredAny>,
    /// Mirroring (not supported).
    #[serde(default)]
    pub mirror_percentage: Option<IgnoredAny>,
    /// Mirroring (not supported).
    #[serde(default)]
    pub mirror_percent: Option<IgnoredAny>,
    /// CORS (not supported).
    #[serde(default)]
    pub cors_policy: Option<IgnoredAny>,
    /// Header changes.
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// One match condition of a route; every field set must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Path.
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// Scheme (not supported).
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    /// Method.
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// Authority.
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Headers that must match.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port (the listener's; accepted when it is the service's port).
    #[serde(default)]
    pub port: Option<u32>,
    /// Source labels (not supported by a proxyless client).
    #[serde(default)]
    pub source_labels: Option<IgnoredAny>,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameters that must match.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive path match.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Source namespace (not supported).
    #[serde(default)]
    pub source_namespace: Option<IgnoredAny>,
    /// Stat prefix (ignored).
    #[serde(default)]
    pub stat_prefix: Option<String>,
}

/// A destination of a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where.
    pub destination: Destination,
    /// Weight (all destinations of a route sum to 100; one alone may omit it).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Header changes when this destination is picked.
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// A service, optionally a subset and a port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service host (short or fully qualified).
    pub host: String,
    /// Subset from a DestinationRule.
    #[serde(default)]
    pub subset: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<PortSelector>,
}

/// A port number.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The number.
    pub number: u32,
}

/// A direct response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    /// HTTP status.
    pub status: u32,
    /// Body.
    #[serde(default)]
    pub body: Option<DirectResponseBody>,
}

/// A direct response's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponseBody {
    /// Text.
    #[serde(default)]
    pub string: Option<String>,
    /// Base64 bytes (not supported).
    #[serde(default)]
    pub bytes: Option<IgnoredAny>,
}

/// Path and authority rewrite.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or the whole path for exact matches).
    #[serde(default)]
    pub uri: Option<String>,
    /// Replaces the authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Regex rewrite (not supported).
    #[serde(default)]
    pub uri_regex_rewrite: Option<IgnoredAny>,
}

/// Retries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Retries after the first attempt.
    #[serde(default)]
    pub attempts: u32,
    /// Timeout per attempt.
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// Conditions, comma-separated.
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Ignored (a proxyless client has no locality preference for retries).
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    /// Ignored.
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Backoff base interval.
    #[serde(default)]
    pub backoff: Option<String>,
}

/// Fault injection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Abort.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// A percentage, `value` in 0..=100.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    pub value: f64,
}

/// Injected delay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// The delay.
    #[serde(default)]
    pub fixed_delay: Option<String>,
    /// Exponential delay (not supported).
    #[serde(default)]
    pub exponential_delay: Option<IgnoredAny>,
    /// How many requests.
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage.
    #[serde(default)]
    pub percent: Option<u32>,
}

/// Injected abort.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status.
    #[serde(default)]
    pub http_status: Option<u32>,
    /// gRPC status name (`UNAVAILABLE`).
    #[serde(default)]
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported).
    #[serde(default)]
    pub http2_error: Option<IgnoredAny>,
    /// How many requests.
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// Header changes for requests and responses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Request headers.
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    /// Response headers.
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// Set, add and remove.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Replace.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service.
    #[serde(default)]
    pub host: String,
    /// Policy for the whole service.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets by labels.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Visibility (ignored).
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workload selector (not supported).
    #[serde(default)]
    pub workload_selector: Option<IgnoredAny>,
}

/// A subset of a service's endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Name (`v1`).
    pub name: String,
    /// Labels an endpoint must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides for this subset.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Traffic policy of a DestinationRule or subset.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits (circuit breaking).
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel (not supported).
    #[serde(default)]
    pub tunnel: Option<IgnoredAny>,
    /// PROXY protocol (not supported).
    #[serde(default)]
    pub proxy_protocol: Option<IgnoredAny>,
}

/// Per-port traffic policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port.
    #[serde(default)]
    pub port: Option<PortSelector>,
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

/// Load balancer settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `UNSPECIFIED`.
    #[serde(default)]
    pub simple: Option<String>,
    /// Consistent hashing.
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    /// Locality settings (accepted, not applied).
    #[serde(default)]
    pub locality_lb_setting: Option<IgnoredAny>,
    /// Warm-up (not supported; ignored).
    #[serde(default)]
    pub warmup_duration_secs: Option<IgnoredAny>,
}

/// Consistent hashing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// Hash this header.
    #[serde(default)]
    pub http_header_name: Option<String>,
    /// Hash a cookie (not supported).
    #[serde(default)]
    pub http_cookie: Option<IgnoredAny>,
    /// Hash the source IP.
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    /// Hash a query parameter (not supported).
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash settings.
    #[serde(default)]
    pub ring_hash: Option<RingHashSettings>,
    /// Maglev (not supported).
    #[serde(default)]
    pub maglev: Option<IgnoredAny>,
    /// Deprecated ring size.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// Ring hash settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHashSettings {
    /// Minimum ring size.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// Connection pool settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP settings.
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    /// HTTP settings.
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

/// TCP connection pool settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Max connections.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Connect timeout.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Keepalive (accepted, not applied).
    #[serde(default)]
    pub tcp_keepalive: Option<IgnoredAny>,
    /// Max connection duration (not supported; ignored).
    #[serde(default)]
    pub max_connection_duration: Option<IgnoredAny>,
    /// Idle timeout (accepted, not applied).
    #[serde(default)]
    pub idle_timeout: Option<IgnoredAny>,
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Max pending requests.
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    /// Max concurrent requests.
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection.
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    /// Max concurrent retries.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Idle timeout (accepted, not applied).
    #[serde(default)]
    pub idle_timeout: Option<IgnoredAny>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    #[serde(default)]
    pub h2_upgrade_policy: Option<String>,
    /// Speak the caller's protocol.
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    /// Max streams per HTTP/2 connection (accepted, not applied).
    #[serde(default)]
    pub max_concurrent_streams: Option<IgnoredAny>,
}

/// Outlier detection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Split local-origin failures (accepted, not applied).
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures (accepted, not applied).
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 in a row.
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx in a row.
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated alias of consecutive gateway errors.
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    /// Sweep interval.
    #[serde(default)]
    pub interval: Option<String>,
    /// Base ejection time.
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    /// Max percent ejected.
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    /// Below this healthy percent, no ejection (Envoy's panic threshold).
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

/// Upstream TLS settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Client certificate file (MUTUAL).
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// Key file (MUTUAL).
    #[serde(default)]
    pub private_key: Option<String>,
    /// CA file.
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Credential name (not supported).
    #[serde(default)]
    pub credential_name: Option<String>,
    /// SANs to accept.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI.
    #[serde(default)]
    pub sni: Option<String>,
    /// Skip verification (refused: the mesh never skips verification).
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}
