//! Accepted Envoy resources -> mesh-core's model, following gRPC's rules for what is
//! honoured and what is ignored (gRFC A28 for routes).
//!
//! Translation runs when a resource is validated, so a resource that cannot be translated
//! is NACKed with the field path, and the cache holds the translated model behind `Arc`s
//! that [`crate::snapshot`] reuses from one snapshot to the next.
//!
//! - [`route`]: route configurations (gRFC A28, A31, A42, A44; Envoy's HTTP retry
//!   conditions, `per_try_timeout`, header mutations, rewrites);
//! - [`filters`]: HTTP filters (A39), fault injection (A33) and RBAC (A41, fail closed);
//! - [`listener`]: client listeners and server listeners (A36: TLS mode, authorization);
//! - [`mod@cluster`]: clusters (A27, A29 TLS, A32/Envoy circuit breakers, A42, A50, A52);
//! - [`endpoints`]: endpoint assignments (A27).
//!
//! What is honoured, ignored and rejected, in short (each module says more):
//!
//! | area | honoured | ignored (as gRPC does) | rejected |
//! |---|---|---|---|
//! | routes | matches, weighted clusters, `timeout`, `max_stream_duration`, retry (gRPC codes and Envoy's HTTP conditions, backoff, `per_try_timeout`), hash policies (header, source IP, channel id), header mutations, prefix and literal host rewrites, fault overrides | unknown `retry_on` tokens, cookie/query hashing, `cluster_header`, other rewrites | zero or oversized weight sums, bad regexes, bad backoff, pseudo-header mutations, unknown non-optional filter overrides, per-route RBAC |
//! | HTTP filters | router (last), fault (client), RBAC (server) | unknown filters marked `is_optional` | unknown non-optional filters, `TypedStruct`, ECDS, a filter on the wrong side |
//! | RBAC | every rule the model evaluates; metadata, filter state, CEL, extensions become rules that never grant access | `LOG` action, shadow rules | malformed CIDRs, ports, matchers |
//! | server listeners | TLS mode from the filter chains, one authorization per address | chains needing SNI or ALPN | TLS without client certificates, chains with different RBAC, address-picked chains with different TLS |
//! | clusters | EDS, LOGICAL_DNS, round robin, least request, ring hash, `load_balancing_policy` (incl. `wrr_locality`), all four thresholds and the retry budget (DEFAULT priority), outlier detection, HTTP/1/2, TLS from provider instances (current and deprecated fields), URI SAN matchers | other priorities, `transport_socket_matches` | other discovery types and LB policies, percentages above 100, inline/SDS certificates, pinning, CRLs, non-URI SANs, HTTP/3 |
//! | endpoints | localities, priorities, weights, health status, overprovisioning factor, `envoy.lb` labels | `drop_overloads` | non-IP addresses, ports out of range, zero overprovisioning |
//!
//! ```
//! use mesh_xds_client::testing::fixtures::route_config_message;
//! use mesh_xds_client::translate::route_config;
//!
//! let rc = route_config(&route_config_message("routes", "payments"))?;
//! let (_, route) = rc
//!     .route_for("payment-service:8080", "/pay", &http::HeaderMap::new(), 0)
//!     .expect("a route");
//! # let _ = route;
//! # Ok::<(), mesh_xds_client::resource::FieldError>(())
//! ```

pub mod cluster;
pub mod endpoints;
mod fault;
pub mod filters;
pub mod listener;
mod rbac;
pub mod route;
mod route_policy;
pub mod sidecar;
mod tls;

pub use cluster::cluster;
pub use endpoints::cluster_load_assignment;
pub use filters::{FaultOverrides, HttpFilterChain};
pub use listener::{ClientListener, ClientRoutes, ServerListener};
pub use route::{route_config, route_config_parts, RouteFaultOverrides};

use envoy_types::pb::google::protobuf::Duration as PbDuration;
use mesh_core::route::RouteConfig;

use crate::resource::{FieldError, ListenerResource, ListenerRoute};

/// Where a client listener's routes are.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ListenerRoutes {
    /// In the RDS resource of this name.
    Rds(String),
    /// Inline, translated.
    Inline(RouteConfig),
}

/// A client listener's routes; an error for server-side listeners, whose translation is
/// not written yet.
pub fn listener_routes(listener: &ListenerResource) -> Result<ListenerRoutes, FieldError> {
    match &listener.route {
        ListenerRoute::Rds(name) => Ok(ListenerRoutes::Rds(name.clone())),
        ListenerRoute::Inline(rc) => route_config(rc)
            .map(ListenerRoutes::Inline)
            .map_err(|e| e.under("api_listener.api_listener.route_config")),
        ListenerRoute::Server => Err(FieldError::new(
            "api_listener",
            "a server-side listener has no outbound routes",
        )),
    }
}

/// A protobuf duration; negative or out-of-range values are errors at `field`.
pub(crate) fn duration(d: &PbDuration, field: &str) -> Result<std::time::Duration, FieldError> {
    let secs = u64::try_from(d.seconds)
        .map_err(|_| FieldError::new(field, format!("negative duration {}s", d.seconds)))?;
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| FieldError::new(field, format!("invalid nanos {}", d.nanos)))?;
    Ok(std::time::Duration::new(secs, nanos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
