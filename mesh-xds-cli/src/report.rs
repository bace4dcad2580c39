//! The document `mesh-xds` prints: a target's resolved policy (listener -> routes ->
//! clusters -> endpoints) and the status of every resource the client subscribed to.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use mesh_core::cluster::{Cluster, ClusterLoadAssignment, UpstreamTls};
use mesh_core::matcher::{HeaderValueMatch, StringMatch, StringMatcher};
use mesh_core::route::{ClusterSpecifier, PathMatch, Route, RouteAction, RouteConfig};
use mesh_core::Snapshot;
use mesh_xds_client::ads::{ResourceEntry, ResourceState};
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::transport::{ClientView, FailureKind};
use serde::Serialize;
use serde_json::{json, Value};

use crate::time::rfc3339;

/// Everything known about one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The target as given (`xds:///payment-service:8080`).
    pub target: String,
    /// The listener resource it names.
    pub listener: String,
    /// The xDS server's URI from the bootstrap.
    pub server: String,
    /// Whether the ADS stream is open (the call is made; see `answered`).
    pub connected: bool,
    /// Whether the server has sent anything on the open stream.
    pub answered: bool,
    /// The last transport error, while the stream is down.
    pub transport_error: Option<String>,
    /// Its kind: `connection_refused`, `connect_timeout`, `unreachable`, `stream_refused`,
    /// `stream_ended`, `configuration`.
    pub failure: Option<&'static str>,
    /// Whether the target resolved (see [`Report::outcome`]).
    pub resolved: bool,
    /// The resolved policy, once the client's snapshot holds the target.
    pub policy: Option<Policy>,
    /// Every subscribed resource, LDS first.
    pub resources: Vec<ResourceStatus>,
}

/// The target's routing and upstream policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The client snapshot's version.
    pub snapshot_version: String,
    /// The route configuration the listener names.
    pub route_config: String,
    /// Its virtual hosts with their routes.
    pub virtual_hosts: Vec<Value>,
    /// The clusters the routes lead to.
    pub clusters: Vec<Value>,
    /// Their endpoints.
    pub endpoints: Vec<Value>,
}

/// One subscribed resource's status, named as CSDS names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceStatus {
    /// `LDS`, `RDS`, `CDS` or `EDS`.
    #[serde(rename = "type")]
    pub xds_type: &'static str,
    /// The resource name.
    pub name: String,
    /// `REQUESTED`, `DOES_NOT_EXIST`, `ACKED` or `NACKED`.
    pub state: &'static str,
    /// The version of the response that brought the accepted data.
    pub version: Option<String>,
    /// When the accepted data arrived (UTC).
    pub updated_at: Option<String>,
    /// The last rejected update, cleared when a later one is accepted.
    pub last_error: Option<Value>,
    /// `MESH_ISTIO_SHAPE=sidecar`: what of the resource the mesh does not honour.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
}

/// Whether a report is final, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target resolved; every subscribed resource is accepted.
    Resolved,
    /// Still waiting, for the resources listed.
    Pending(Vec<String>),
    /// It cannot resolve as things stand (a NACK, a missing listener).
    Failed(String),
}

impl Report {
    /// Builds the report of `listener` (the resource the target names) from the client's view.
    pub fn new(target: &str, listener: &str, server: &str, view: &ClientView) -> Self {
        let policy = view.snapshot.as_deref().and_then(|s| {
            Policy::of(s, target_of(listener, s)).or_else(|| {
                // Sidecar shape: the snapshot keys the target itself.
                Policy::of(s, target.strip_prefix("xds:///").unwrap_or(target))
            })
        });
        let resources: Vec<ResourceStatus> = view
            .cache
            .iter()
            .map(|(t, name, entry)| ResourceStatus::new(t, name, entry))
            .collect();
        let mut report = Self {
            target: target.to_owned(),
            listener: listener.to_owned(),
            server: server.to_owned(),
            connected: view.connected,
            answered: view.answered,
            transport_error: view.last_error.clone(),
            failure: view.last_failure.map(FailureKind::as_str),
            resolved: false,
            policy,
            resources,
        };
        report.resolved = report.outcome() == Outcome::Resolved;
        report
    }

    /// Why a target still pending after `timeout` seconds did not resolve: the server
    /// unreachable, refusing the stream, silent on an open stream, or the resources still
    /// waited for.
    pub fn stalled(&self, timeout: f64, waiting: &[String]) -> String {
        let server = &self.server;
        let error = self.transport_error.as_deref().unwrap_or("");
        let asked = if waiting.is_empty() {
            String::new()
        } else {
            format!("; asked for: {}", waiting.join(", "))
        };
        if self.connected && !self.answered {
            return format!(
                "connected to the xDS server {server} and opened the ADS stream, but it sent no response within {timeout}s{asked}"
            );
        }
        if self.connected {
            return format!(
                "{} did not resolve within {timeout}s; still waiting for: {}",
                self.target,
                waiting.join(", ")
            );
        }
        match self.failure {
            Some("connection_refused") => format!(
                "cannot reach the xDS server {server}: connection refused (nothing listens there): {error}"
            ),
            Some("connect_timeout") => format!(
                "cannot reach the xDS server {server}: the connection attempt timed out: {error}"
            ),
            Some("stream_refused") => {
                format!("the xDS server {server} accepted the connection but refused the ADS stream: {error}")
            }
            Some("stream_ended") => {
                format!("the ADS stream to {server} ended before the target resolved: {error}")
            }
            Some(_) => format!("cannot reach the xDS server {server}: {error}"),
            None => format!(
                "cannot reach the xDS server {server}: no connection within {timeout}s"
            ),
        }
    }

    /// Resolved when the policy is known and every resource is ACKed; failed when the
    /// listener does not exist or any resource was NACKed.
    pub fn outcome(&self) -> Outcome {
        let listener = self
            .resources
            .iter()
            .find(|r| r.xds_type == "LDS" && r.name == self.listener);
        if listener.is_some_and(|l| l.state == "DOES_NOT_EXIST") {
            return Outcome::Failed(format!(
                "listener {:?} does not exist on the server",
                self.listener
            ));
        }
        if let Some(nacked) = self.resources.iter().find(|r| r.state == "NACKED") {
            let why = nacked
                .last_error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Outcome::Failed(format!(
                "{} {:?} was NACKed: {why}",
                nacked.xds_type, nacked.name
            ));
        }
        let waiting: Vec<String> = self
            .resources
            .iter()
            .filter(|r| r.state != "ACKED")
            .map(|r| format!("{} {:?} ({})", r.xds_type, r.name, r.state))
            .collect();
        if self.policy.is_some() && listener.is_some() && waiting.is_empty() {
            Outcome::Resolved
        } else if waiting.is_empty() {
            Outcome::Pending(vec![format!("LDS {:?}", self.listener)])
        } else {
            Outcome::Pending(waiting)
        }
    }
}

/// The snapshot keys listeners by target (the name with the template removed); find the
/// one whose listener resource is `listener`, falling back to the name itself.
fn target_of<'a>(listener: &'a str, snapshot: &'a Snapshot) -> &'a str {
    snapshot
        .outbound_listeners()
        .map(|l| l.target())
        .find(|t| listener == *t || listener.ends_with(&format!("/{t}")))
        .unwrap_or(listener)
}

impl Policy {
    fn of(snapshot: &Snapshot, target: &str) -> Option<Self> {
        let listener = snapshot
            .outbound_listeners()
            .find(|l| l.target() == target)?;
        let rc = snapshot.route_config(listener.route_config_name())?;
        let mut names = BTreeSet::new();
        for vh in rc.virtual_hosts() {
            for r in vh.routes() {
                if let RouteAction::Forward(f) = r.action() {
                    match f.clusters() {
                        ClusterSpecifier::Cluster(c) => {
                            names.insert(c.clone());
                        }
                        ClusterSpecifier::Weighted(w) => {
                            names.extend(w.clusters().iter().map(|c| c.name().to_owned()));
                        }
                        _ => {}
                    }
                }
            }
        }
        let clusters: Vec<&Cluster> = names
            .iter()
            .filter_map(|n| snapshot.cluster(n).map(|c| &**c))
            .collect();
        Some(Self {
            snapshot_version: snapshot.version().to_owned(),
            route_config: rc.name().to_owned(),
            virtual_hosts: virtual_hosts(rc),
            endpoints: clusters
                .iter()
                .filter_map(|c| snapshot.endpoints_of(c))
                .map(|cla| endpoints(cla))
                .collect(),
            clusters: clusters.into_iter().map(cluster).collect(),
        })
    }
}

fn debug(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn virtual_hosts(rc: &RouteConfig) -> Vec<Value> {
    rc.virtual_hosts()
        .iter()
        .map(|vh| {
            json!({
                "name": vh.name(),
                "domains": vh.domains(),
                "retry_policy": vh.retry_policy().map(debug),
                "include_request_attempt_count": vh.includes_request_attempt_count(),
                "routes": vh.routes().iter().map(route).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn string_matcher(m: &StringMatcher) -> Value {
    let (kind, value) = match m.kind() {
        StringMatch::Exact(s) => ("exact", s.clone()),
        StringMatch::Prefix(s) => ("prefix", s.clone()),
        StringMatch::Suffix(s) => ("suffix", s.clone()),
        StringMatch::Contains(s) => ("contains", s.clone()),
        StringMatch::Regex(r) => ("regex", r.as_str().to_owned()),
        other => ("other", debug(other)),
    };
    let mut v = json!({ kind: value });
    if m.ignore_case() {
        v["ignore_case"] = Value::Bool(true);
    }
    v
}

fn route(r: &Route) -> Value {
    let m = r.matcher();
    let path = match m.path_match() {
        PathMatch::Prefix(p) => json!({ "prefix": p }),
        PathMatch::Exact(p) => json!({ "path": p }),
        PathMatch::Regex(re) => json!({ "regex": re.as_str() }),
        PathMatch::SeparatedPrefix(p) => json!({ "path_separated_prefix": p }),
        other => json!({ "other": debug(other) }),
    };
    let headers: Vec<Value> = m
        .headers()
        .iter()
        .map(|h| {
            let value = match h.value() {
                HeaderValueMatch::String(s) => string_matcher(s),
                HeaderValueMatch::Range { start, end } => json!({"range": [start, end]}),
                HeaderValueMatch::Present(p) => json!({ "present": p }),
                other => json!({ "other": debug(other) }),
            };
            json!({"name": h.name(), "match": value, "invert": h.invert()})
        })
        .collect();
    let query: Vec<Value> = m
        .query_params()
        .iter()
        .map(|q| json!({"name": q.name(), "match": q.value().map(string_matcher)}))
        .collect();
    let action = match r.action() {
        RouteAction::Forward(f) => {
            let clusters: Vec<Value> = match f.clusters() {
                ClusterSpecifier::Cluster(c) => vec![json!({"name": c, "weight": 100})],
                ClusterSpecifier::Weighted(w) => w
                    .clusters()
                    .iter()
                    .map(|c| json!({"name": c.name(), "weight": c.weight()}))
                    .collect(),
                other => vec![json!({ "other": debug(other) })],
            };
            json!({
                "forward": {
                    "clusters": clusters,
                    "timeout_seconds": f.timeout.map(seconds),
                    "max_stream_duration_seconds": f.max_stream_duration.max.map(seconds),
                    "retry_policy": f.retry_policy.as_ref().map(|p| json!({
                        "num_retries": p.num_retries,
                        "retry_on": p.retry_on.names().collect::<Vec<_>>().join(","),
                        "per_try_timeout_seconds": p.per_try_timeout.map(seconds),
                        "backoff_base_seconds": seconds(p.backoff.base_interval),
                        "backoff_max_seconds": seconds(p.backoff.max_interval),
                    })),
                    "hash_policies": f.hash_policies.iter().map(debug).collect::<Vec<_>>(),
                    "prefix_rewrite": f.prefix_rewrite,
                    "host_rewrite": f.host_rewrite,
                }
            })
        }
        RouteAction::Direct { status, body } => {
            json!({"direct_response": {"status": status, "body": body}})
        }
        RouteAction::NonForwarding => json!("non_forwarding"),
        other => json!({ "other": debug(other) }),
    };
    json!({
        "name": r.name(),
        "match": {
            "path": path,
            "case_sensitive": m.is_case_sensitive(),
            "headers": headers,
            "query_parameters": query,
            "runtime_fraction_percent": m.runtime_fraction().map(|f| {
                f64::from(f.numerator()) * 100.0 / f64::from(f.denominator().max(1))
            }),
        },
        "action": action,
        "fault": r.fault().map(debug),
    })
}

fn tls(t: &UpstreamTls) -> Value {
    let instance = |i: &mesh_core::cluster::CertificateInstance| json!({"instance_name": i.instance_name, "certificate_name": i.certificate_name});
    json!({
        "sni": t.sni,
        "accepted_sans": t.accepted_sans.iter().map(string_matcher).collect::<Vec<_>>(),
        "identity": t.identity.as_ref().map(instance),
        "roots": t.roots.as_ref().map(instance),
    })
}

fn cluster(c: &Cluster) -> Value {
    let b = &c.circuit_breakers;
    json!({
        "name": c.name(),
        "eds_service_name": c.eds_name(),
        "service": c.service,
        "subset": c.subset,
        "discovery": debug(&c.discovery),
        "protocol": debug(&c.protocol),
        "connect_timeout_seconds": seconds(c.connect_timeout),
        "max_requests_per_connection": c.max_requests_per_connection,
        "lb_policy": debug(&c.lb),
        "circuit_breakers": {
            "max_connections": b.max_connections,
            "max_pending_requests": b.max_pending_requests,
            "max_requests": b.max_requests,
            "max_retries": b.max_retries,
        },
        "retry_budget": c.retry_budget.as_ref().map(debug),
        "outlier_detection": c.outlier_detection.as_ref().map(|o| json!({
            "consecutive_5xx": o.consecutive_5xx,
            "consecutive_gateway_failure": o.consecutive_gateway_failure,
            "interval_seconds": seconds(o.interval),
            "base_ejection_time_seconds": seconds(o.base_ejection_time),
            "max_ejection_time_seconds": seconds(o.max_ejection_time),
            "max_ejection_percent": o.max_ejection_percent,
            "enforcing_consecutive_5xx": o.enforcing_consecutive_5xx,
            "enforcing_success_rate": o.enforcing_success_rate,
            "enforcing_failure_percentage": o.enforcing_failure_percentage,
        })),
        "tls": c.tls.as_ref().map(tls),
    })
}

fn endpoints(cla: &ClusterLoadAssignment) -> Value {
    let eps: Vec<Value> = cla
        .endpoints()
        .map(|(loc, ep)| {
            json!({
                "address": ep.address.to_string(),
                "weight": ep.weight,
                "health": debug(&ep.health).to_uppercase(),
                "priority": loc.priority,
                "locality": {
                    "region": loc.locality.region,
                    "zone": loc.locality.zone,
                    "sub_zone": loc.locality.sub_zone,
                },
                "locality_weight": loc.weight,
                "labels": ep.labels,
            })
        })
        .collect();
    json!({"cluster_name": cla.cluster_name, "endpoints": eps})
}

impl ResourceStatus {
    fn new(t: XdsType, name: &str, e: &ResourceEntry) -> Self {
        let state = match e.state {
            ResourceState::Requested => "REQUESTED",
            ResourceState::DoesNotExist => "DOES_NOT_EXIST",
            ResourceState::Acked => "ACKED",
            ResourceState::Nacked => "NACKED",
            _ => "UNKNOWN",
        };
        Self {
            xds_type: t.short_name(),
            name: name.to_owned(),
            state,
            version: e.version.clone(),
            updated_at: e.last_updated.map(wall_clock),
            last_error: e.last_error.as_ref().map(|f| {
                json!({
                    "version": f.version,
                    "message": f.error.to_string(),
                    "at": wall_clock(f.at),
                })
            }),
            not_applied: e
                .resource
                .as_ref()
                .map(|r| r.not_applied())
                .unwrap_or_default(),
        }
    }
}

/// An `Instant` as UTC wall-clock time, through the distance from now.
fn wall_clock(at: Instant) -> String {
    let ago = Instant::now().saturating_duration_since(at);
    let when = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    rfc3339(when)
}

#[cfg(test)]
mod tests;
