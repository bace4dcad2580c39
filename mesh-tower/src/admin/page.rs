//! The admin home page: the service's view of the mesh at a glance.

use std::fmt::Write as _;

use crate::Mesh;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML page: routes with weights, clusters with endpoint health, request and error
/// totals (the page reloads every 5 s; rates are the difference between two looks).
pub(crate) fn render(mesh: &Mesh) -> String {
    let snap = mesh.policy().snapshot();
    let mut h = String::with_capacity(8 * 1024);
    h.push_str(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"5\"><title>mesh admin</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.bad{color:#b00}.ok{color:#070}</style>",
        "</head><body><h1>mesh admin</h1>"
    ));
    let readiness = mesh.readiness().status();
    let _ = write!(
        h,
        "<p>policy version <b>{}</b> from {} &middot; <a href=\"/metrics\">/metrics</a> \
         <a href=\"/config_dump\">/config_dump</a> <a href=\"/clusters\">/clusters</a> \
         <a href=\"/healthz/ready\">/healthz/ready</a></p><p class=\"{}\">{}</p>",
        esc(snap.version()),
        esc(&format!("{:?}", mesh.source())),
        if readiness.is_ready() { "ok" } else { "bad" },
        esc(&readiness.to_string())
    );

    h.push_str("<h2>Routes</h2><table><tr><th>target</th><th>virtual host</th><th>route</th><th>match</th><th>clusters (weight)</th></tr>");
    for l in snap.outbound_listeners() {
        let Some(rc) = l.route_config() else { continue };
        for vh in rc.virtual_hosts() {
            for r in vh.routes() {
                let targets: Vec<String> = super::dump::route_targets(r.action())
                    .into_iter()
                    .map(|(c, w)| format!("{} ({w})", esc(&c)))
                    .collect();
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    esc(l.target()),
                    esc(vh.name()),
                    esc(r.name()),
                    esc(&format!("{:?}", r.matcher().path_match())),
                    targets.join(", ")
                );
            }
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Clusters</h2><table><tr><th>cluster</th><th>endpoint</th><th>health</th><th>in flight</th></tr>");
    for (name, eps) in mesh.cluster_status() {
        for e in eps {
            let (class, state) = match (e.healthy, e.ejected) {
                (_, true) => ("bad", "ejected"),
                (false, _) => ("bad", "unhealthy"),
                (true, false) => ("ok", "healthy"),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td><td>{}</td></tr>",
                esc(&name),
                e.address,
                e.active_requests
            );
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Requests</h2><table><tr><th>reporter</th><th>destination service</th><th>requests</th><th>errors</th><th>error rate</th></tr>");
    for t in mesh.metrics().request_totals() {
        let rate = if t.requests == 0 {
            0.0
        } else {
            100.0 * t.errors as f64 / t.requests as f64
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{rate:.1}%</td></tr>",
            t.reporter,
            esc(&t.service),
            t.requests,
            t.errors
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
