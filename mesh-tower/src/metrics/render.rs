//! Label sets (built once per series) and the Prometheus text exposition.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::labels::{principal_namespace, service_parts};
use super::registry::{push_label, Histogram};
use super::{
    HttpKey, MeshFamily, MeshKey, Registry, Reporter, RequestTotals, TcpKey, WorkloadLabels,
};

const UNKNOWN: &str = "unknown";

fn reporter(r: Reporter) -> &'static str {
    match r {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    }
}

/// The `source_*` and `destination_*` labels, in Istio's order.
fn workload_labels(
    out: &mut String,
    r: &Registry,
    rep: Reporter,
    peer: &str,
    service: &str,
    peer_md: Option<&WorkloadLabels>,
) {
    let l = &r.local;
    let unknown = WorkloadLabels::unknown();
    // What the peer said of itself (metadata exchange), else unknown.
    let p = peer_md.unwrap_or(&unknown);
    let peer_ns = match peer_md {
        Some(md) if md.namespace != UNKNOWN => md.namespace.as_str(),
        _ => principal_namespace(peer),
    };
    let (svc_name, svc_ns) = service_parts(service);
    match rep {
        Reporter::Destination => {
            for (k, v) in [
                ("source_workload", p.workload.as_str()),
                ("source_canonical_service", &p.canonical_service),
                ("source_canonical_revision", canonical_revision(p)),
                ("source_workload_namespace", peer_ns),
                ("source_principal", peer),
                ("source_app", &p.app),
                ("source_version", &p.version),
                ("source_cluster", &p.cluster),
                ("destination_workload", &l.workload),
                ("destination_workload_namespace", &l.namespace),
                ("destination_principal", &l.principal),
                ("destination_app", &l.app),
                ("destination_version", &l.version),
                ("destination_service", service),
                ("destination_service_name", svc_name),
                (
                    "destination_service_namespace",
                    if svc_ns == UNKNOWN {
                        &l.namespace
                    } else {
                        svc_ns
                    },
                ),
                ("destination_canonical_service", &l.canonical_service),
                ("destination_canonical_revision", &l.canonical_revision),
                ("destination_cluster", &l.cluster),
            ] {
                push_label(out, k, v);
            }
        }
        Reporter::Source => {
            for (k, v) in [
                ("source_workload", l.workload.as_str()),
                ("source_canonical_service", &l.canonical_service),
                ("source_canonical_revision", &l.canonical_revision),
                ("source_workload_namespace", &l.namespace),
                ("source_principal", &l.principal),
                ("source_app", &l.app),
                ("source_version", &l.version),
                ("source_cluster", &l.cluster),
                ("destination_workload", p.workload.as_str()),
                (
                    "destination_workload_namespace",
                    if peer_md.is_some() { peer_ns } else { svc_ns },
                ),
                ("destination_principal", peer),
                ("destination_app", &p.app),
                ("destination_version", &p.version),
                ("destination_service", service),
                ("destination_service_name", svc_name),
                ("destination_service_namespace", svc_ns),
                ("destination_canonical_service", &p.canonical_service),
                ("destination_canonical_revision", canonical_revision(p)),
                ("destination_cluster", &p.cluster),
            ] {
                push_label(out, k, v);
            }
        }
    }
}

/// An unknown peer's revision is `unknown` (Istio's default `latest` is for a known one).
fn canonical_revision(p: &WorkloadLabels) -> &str {
    if p.workload == UNKNOWN {
        UNKNOWN
    } else {
        &p.canonical_revision
    }
}

pub(super) fn http_labels(r: &Registry, k: &HttpKey) -> String {
    let mut out = String::with_capacity(900);
    push_label(&mut out, "reporter", reporter(k.reporter));
    let peer = r.strings.name(k.peer);
    let service = r.strings.name(k.service);
    let peer_md = k.peer_meta.and_then(|id| {
        std::str::from_utf8(&r.peers.name(id))
            .ok()
            .and_then(super::peer::decode)
    });
    workload_labels(&mut out, r, k.reporter, &peer, &service, peer_md.as_ref());
    push_label(
        &mut out,
        "request_protocol",
        if k.grpc { "grpc" } else { "http" },
    );
    push_label(&mut out, "response_code", &k.code.to_string());
    let grpc = k.grpc_status.map(|s| s.to_string()).unwrap_or_default();
    push_label(&mut out, "grpc_response_status", &grpc);
    push_label(&mut out, "response_flags", k.flags.as_str());
    push_label(&mut out, "connection_security_policy", k.security.as_str());
    out
}

pub(super) fn tcp_labels(r: &Registry, k: &TcpKey) -> String {
    let mut out = String::with_capacity(800);
    push_label(&mut out, "reporter", reporter(k.reporter));
    let peer = r.strings.name(k.peer);
    let service = match k.reporter {
        Reporter::Destination => r.local.service.clone(),
        Reporter::Source => UNKNOWN.to_owned(),
    };
    workload_labels(&mut out, r, k.reporter, &peer, &service, None);
    push_label(&mut out, "request_protocol", "tcp");
    push_label(&mut out, "response_flags", "-");
    push_label(&mut out, "connection_security_policy", k.security.as_str());
    out
}

pub(super) fn mesh_labels(r: &Registry, k: &MeshKey) -> String {
    let mut out = String::new();
    let a = r.strings.name(k.a);
    let b = r.strings.name(k.b);
    match k.family {
        MeshFamily::XdsUpdates => {
            push_label(&mut out, "type_url", &a);
            push_label(&mut out, "result", &b);
        }
        MeshFamily::BreakerRejections => {
            push_label(&mut out, "cluster", &a);
            push_label(&mut out, "limit", &b);
        }
        _ => push_label(&mut out, "cluster", &a),
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c.load(Ordering::Relaxed);
        match h.bounds.get(i) {
            Some(b) => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = h.sum.load(Ordering::Relaxed) as f64 / h.sum_scale;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

pub(super) fn render(r: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut http = r.http.all();
    http.sort_by(|a, b| a.labels.cmp(&b.labels));
    family(
        &mut out,
        "istio_requests_total",
        "counter",
        "Requests, by Istio's standard labels.",
    );
    for s in &http {
        let _ = writeln!(
            out,
            "istio_requests_total{{{}}} {}",
            s.labels,
            s.requests.load(Ordering::Relaxed)
        );
    }
    type Pick = fn(&super::HttpSeries) -> &Histogram;
    let hists: [(&str, &str, Pick); 3] = [
        (
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            |s| &s.duration,
        ),
        ("istio_request_bytes", "Request body sizes in bytes.", |s| {
            &s.request_bytes
        }),
        (
            "istio_response_bytes",
            "Response body sizes in bytes.",
            |s| &s.response_bytes,
        ),
    ];
    for (name, help, get) in hists {
        family(&mut out, name, "histogram", help);
        for s in &http {
            histogram(&mut out, name, &s.labels, get(s));
        }
    }
    let mut tcp = r.tcp.all();
    tcp.sort_by(|a, b| a.labels.cmp(&b.labels));
    for (name, help, opened) in [
        (
            "istio_tcp_connections_opened_total",
            "TCP connections opened.",
            true,
        ),
        (
            "istio_tcp_connections_closed_total",
            "TCP connections closed.",
            false,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for s in &tcp {
            let v = if opened { &s.opened } else { &s.closed };
            let _ = writeln!(out, "{name}{{{}}} {}", s.labels, v.load(Ordering::Relaxed));
        }
    }
    let mut mesh = r.mesh.all();
    mesh.sort_by(|a, b| (a.0, &a.1.labels).cmp(&(b.0, &b.1.labels)));
    for (fam, name, help) in [
        (
            MeshFamily::BreakerRejections,
            "mesh_circuit_breaker_rejections_total",
            "Calls refused by a circuit-breaker limit.",
        ),
        (MeshFamily::Retries, "mesh_retries_total", "Retries sent."),
        (
            MeshFamily::RetryBudgetExhausted,
            "mesh_retry_budget_exhausted_total",
            "Retries refused by the retry budget or max_retries.",
        ),
        (
            MeshFamily::OutlierEjections,
            "mesh_outlier_ejections_total",
            "Endpoints ejected by outlier detection.",
        ),
        (
            MeshFamily::XdsUpdates,
            "mesh_xds_updates_total",
            "xDS responses accepted (ack) or rejected (nack).",
        ),
    ] {
        family(&mut out, name, "counter", help);
        for s in mesh.iter().filter(|s| s.0 == fam) {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                s.1.labels,
                s.1.value.load(Ordering::Relaxed)
            );
        }
    }
    app(&mut out, r);
    out
}

/// The application's registry, in the Prometheus text format (0.0.4) like the rest.
fn app(out: &mut String, r: &Registry) {
    let registry = r
        .app
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, &registry);
}

pub(super) fn totals(r: &Registry) -> Vec<RequestTotals> {
    let mut map: std::collections::BTreeMap<(&'static str, String), (u64, u64)> =
        Default::default();
    for (key, s) in r.http.entries() {
        let n = s.requests.load(Ordering::Relaxed);
        let error = key.code >= 500 || key.grpc_status.is_some_and(|g| g != 0);
        let e = map
            .entry((
                reporter(key.reporter),
                r.strings.name(key.service).to_string(),
            ))
            .or_default();
        e.0 += n;
        if error {
            e.1 += n;
        }
    }
    map.into_iter()
        .map(|((reporter, service), (requests, errors))| RequestTotals {
            reporter,
            service,
            requests,
            errors,
        })
        .collect()
}
