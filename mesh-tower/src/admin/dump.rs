//! The JSON documents of `/config_dump` and `/clusters`.

use mesh_core::route::{ClusterSpecifier, RouteAction};
use mesh_core::Snapshot;
use serde_json::{json, Value};

use crate::Mesh;

fn debug(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// `(cluster, weight)` of a route's action; a direct response has none.
pub(crate) fn route_targets(action: &RouteAction) -> Vec<(String, u32)> {
    match action {
        RouteAction::Forward(f) => match f.clusters() {
            ClusterSpecifier::Cluster(c) => vec![(c.clone(), 100)],
            ClusterSpecifier::Weighted(w) => w
                .clusters()
                .iter()
                .map(|c| (c.name().to_owned(), c.weight()))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn route_configs(snap: &Snapshot) -> Value {
    let rcs: Vec<Value> = snap
        .route_configs()
        .map(|rc| {
            let vhs: Vec<Value> = rc
                .virtual_hosts()
                .iter()
                .map(|vh| {
                    let routes: Vec<Value> = vh
                        .routes()
                        .iter()
                        .map(|r| {
                            let clusters: Vec<Value> = route_targets(r.action())
                                .into_iter()
                                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                                .collect();
                            let (timeout, retry) = match r.action() {
                                RouteAction::Forward(f) => (
                                    f.timeout.map(|t| t.as_secs_f64()),
                                    f.retry_policy.as_ref().map(debug),
                                ),
                                _ => (None, None),
                            };
                            json!({
                                "name": r.name(),
                                "match": debug(r.matcher()),
                                "clusters": clusters,
                                "timeout_seconds": timeout,
                                "retry_policy": retry,
                                "fault": r.fault().map(debug),
                                "direct_response": matches!(r.action(), RouteAction::Direct { .. }),
                            })
                        })
                        .collect();
                    json!({
                        "name": vh.name(),
                        "domains": vh.domains(),
                        "retry_policy": vh.retry_policy().map(debug),
                        "routes": routes,
                    })
                })
                .collect();
            json!({"name": rc.name(), "virtual_hosts": vhs})
        })
        .collect();
    Value::Array(rcs)
}

fn clusters(snap: &Snapshot) -> Value {
    Value::Array(
        snap.clusters()
            .map(|c| {
                json!({
                    "name": c.name(),
                    "eds_name": c.eds_name(),
                    "service": c.service,
                    "subset": c.subset,
                    "discovery": debug(&c.discovery),
                    "protocol": debug(&c.protocol),
                    "connect_timeout_seconds": c.connect_timeout.as_secs_f64(),
                    "lb_policy": debug(&c.lb),
                    "circuit_breakers": debug(&c.circuit_breakers),
                    "outlier_detection": c.outlier_detection.as_ref().map(debug),
                    "retry_budget": c.retry_budget.as_ref().map(debug),
                    "tls": c.tls.as_ref().map(|t| json!({
                        "sni": t.sni,
                        "accepted_sans": t.accepted_sans.iter().map(debug).collect::<Vec<_>>(),
                    })),
                })
            })
            .collect(),
    )
}

fn endpoints(snap: &Snapshot) -> Value {
    Value::Array(
        snap.clusters()
            .filter_map(|c| snap.endpoints_of(c))
            .map(|cla| {
                let eps: Vec<Value> = cla
                    .endpoints()
                    .map(|(loc, ep)| {
                        json!({
                            "address": ep.address.to_string(),
                            "weight": ep.weight,
                            "health": debug(&ep.health),
                            "priority": loc.priority,
                            "locality": debug(&loc.locality),
                            "labels": ep.labels,
                        })
                    })
                    .collect();
                json!({"cluster_name": cla.cluster_name, "endpoints": eps})
            })
            .collect(),
    )
}

/// The live snapshot (and the xDS status, if a client reports one) as JSON.
pub(crate) fn config_dump(mesh: &Mesh, xds: Option<Value>) -> Value {
    let snap = mesh.policy().snapshot();
    let listeners: Vec<Value> = snap
        .outbound_listeners()
        .map(|l| json!({"target": l.target(), "route_config": l.route_config_name()}))
        .collect();
    let inbound: Vec<Value> = snap
        .inbound_listeners()
        .map(|(addr, p)| json!({"address": addr.to_string(), "policy": debug(p)}))
        .collect();
    json!({
        "version": snap.version(),
        "source": debug(mesh.source()),
        "listeners": listeners,
        "inbound_listeners": inbound,
        "inbound_default": snap.inbound_default().map(debug),
        "route_configs": route_configs(&snap),
        "clusters": clusters(&snap),
        "endpoints": endpoints(&snap),
        "xds": xds.or_else(|| xds_status(mesh)).unwrap_or(Value::Null),
    })
}

/// The xDS client's resources, each with its state and, in the sidecar shape, what of it
/// the mesh does not honour (`not_applied`), when the policy comes from a control plane.
fn xds_status(mesh: &Mesh) -> Option<Value> {
    let view = mesh.xds_view()?;
    let resources: Vec<Value> = view
        .cache
        .iter()
        .map(|(t, name, entry)| {
            let not_applied = entry
                .resource
                .as_ref()
                .map(|r| r.not_applied())
                .unwrap_or_default();
            json!({
                "type": t.short_name(),
                "name": name,
                "state": debug(&entry.state),
                "version": entry.version,
                "last_error": entry.last_error.as_ref().map(|e| e.error.to_string()),
                "not_applied": not_applied,
            })
        })
        .collect();
    Some(json!({
        "connected": view.connected,
        "server": view.server,
        "resources": resources,
    }))
}

/// Every cluster in use: its endpoints with health, ejection and load, and its breaker.
pub(crate) fn clusters_status(mesh: &Mesh) -> Value {
    let breakers = mesh.breaker_status();
    Value::Array(
        mesh.cluster_status()
            .into_iter()
            .map(|(name, eps)| {
                let breaker: Vec<Value> = breakers
                    .iter()
                    .filter(|b| b.0 == name)
                    .flat_map(|b| b.1.iter())
                    .map(|b| {
                        json!({"limit": b.limit.as_str(), "in_flight": b.in_flight,
                               "max": b.max, "open": b.in_flight >= b.max})
                    })
                    .collect();
                let eps: Vec<Value> = eps
                    .iter()
                    .map(|e| {
                        json!({
                            "address": e.address.to_string(),
                            "priority": e.priority,
                            "weight": e.weight,
                            "healthy": e.healthy,
                            "ejected": e.ejected,
                            "active_requests": e.active_requests,
                        })
                    })
                    .collect();
                json!({"name": name, "endpoints": eps, "circuit_breakers": breaker})
            })
            .collect(),
    )
}
