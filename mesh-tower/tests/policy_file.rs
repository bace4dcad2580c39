//! A payment service on a static policy file (STRICT mTLS, the seed guide's
//! `payment-access`) while a careless operator edits the file: a truncated, blank or
//! deleted file is refused and the service stays closed; an edit that opens it is applied
//! and logged at WARN with what went away; a CUSTOM AuthorizationPolicy denies every call,
//! at start and when added at runtime, with a log line saying why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::StatusCode;
use mesh_tower::Mesh;
use tower::Layer;
use tracing::field::{Field, Visit};
use tracing::span;

/// Every log event of the test's thread, as `LEVEL message key=value...` lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits (bounded) until `n` lines contain `needle`, and returns the last.
    async fn wait_count(&self, needle: &str, n: usize) -> String {
        for _ in 0..2000 {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "fewer than {n} log lines with {needle:?}:\n{}",
            self.lines().join("\n")
        );
    }

    /// Waits (bounded) until a line contains every needle, and returns it.
    async fn wait_for(&self, needles: &[&str]) -> String {
        for _ in 0..2000 {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no log line with {needles:?}:\n{}", self.lines().join("\n"));
    }
}

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Line(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

const ACCESS: &str = r#"
  - metadata: { name: payment-access }
    spec:
      selector: { matchLabels: { app: payment-service } }
      rules:
        - from: [{ source: { principals: [cluster.local/ns/default/sa/order-service] } }]
"#;

const CUSTOM: &str = r#"
  - metadata: { name: ext-authz }
    spec:
      selector: { matchLabels: { app: payment-service } }
      action: CUSTOM
      provider: { name: opa }
      rules: [{ to: [{ operation: { paths: ["/admin/*"] } }] }]
"#;

/// The payment service's policy file: its workload, a namespace-wide PeerAuthentication
/// and these AuthorizationPolicies.
fn policy_text(mode: &str, authorization: &[&str]) -> String {
    let mut text = format!(
        "namespace: default\nworkload: {{ name: payment-service, labels: {{ app: payment-service }} }}\n\
         peerAuthentications:\n  - metadata: {{ name: default }}\n    spec: {{ mtls: {{ mode: {mode} }} }}\n"
    );
    if !authorization.is_empty() {
        text.push_str("authorizationPolicies:");
        text.extend(authorization.iter().copied());
    }
    text
}

/// Replaces the file at once (as editors do), so the watcher never reads half of it.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The payment service on `mesh`'s listener, behind its authorization layer.
async fn serve(mesh: &Mesh) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = mesh.authorization_layer().layer(app());
    tokio::spawn(
        mesh.listener(listener)
            .serve(service, std::future::pending()),
    );
    addr
}

/// What a caller gets for `GET /api/v1/payments/1`: the status, or `None` when the
/// connection or handshake fails.
async fn call(
    addr: std::net::SocketAddr,
    m: &common::Mesh,
    caller: Option<&str>,
) -> Option<StatusCode> {
    let tls = caller.map(|who| {
        let source = match who {
            "order" => &m.order,
            _ => &m.other,
        };
        client_tls(source, Some(source))
    });
    get_once(addr, tls, "/api/v1/payments/1")
        .await
        .ok()
        .map(|(status, _)| status)
}

#[tokio::test]
async fn a_truncated_or_deleted_policy_file_is_refused_and_an_opening_edit_is_logged() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let m = &mesh();
    let dir = TempDir::new("policy-truncated");
    let path = dir.0.join("payment.yaml");
    write(&path, &policy_text("STRICT", &[ACCESS]));
    let mesh = Mesh::builder()
        .policy_file(&path)
        .identity(m.payment.clone())
        .watch_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let addr = serve(&mesh).await;
    let version = mesh.policy().snapshot().version().to_owned();
    let closed = |what: &'static str| async move {
        assert_eq!(
            call(addr, m, Some("order")).await,
            Some(StatusCode::OK),
            "{what}: order"
        );
        assert_eq!(
            call(addr, m, Some("other")).await,
            Some(StatusCode::FORBIDDEN),
            "{what}: another identity"
        );
        assert_eq!(call(addr, m, None).await, None, "{what}: plaintext");
    };
    closed("at start").await;

    // Truncated, then blank, then comments only: each refused, naming the file.
    let file = path.display().to_string();
    for (i, text) in ["", "  \n\n", "# nothing here\n---\n"]
        .into_iter()
        .enumerate()
    {
        write(&path, text);
        let line = logs.wait_count("policy file rejected", i + 1).await;
        assert!(
            line.starts_with("ERROR") && line.contains(&file) && line.contains("is empty"),
            "{line}"
        );
        assert_eq!(
            logs.count("policy file rejected"),
            i + 1,
            "one line per edit"
        );
        assert_eq!(mesh.policy().snapshot().version(), version);
        assert_eq!(mesh.policy().generation(), 0, "nothing was published");
        closed("after a blank file").await;
    }

    // Deleted: said once, the policy stays.
    std::fs::remove_file(&path).unwrap();
    let line = logs.wait_for(&["policy file unreadable"]).await;
    assert!(line.starts_with("WARN") && line.contains(&file), "{line}");
    closed("after deletion").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        logs.count("policy file unreadable"),
        1,
        "{:?}",
        logs.lines()
    );

    // A real edit that opens the service: applied, and logged with what went away.
    write(&path, &policy_text("PERMISSIVE", &[]));
    let mtls = logs
        .wait_for(&[
            "policy change removes protection",
            "mTLS STRICT -> PERMISSIVE",
        ])
        .await;
    let authz = logs
        .wait_for(&["policy change removes protection", "ALLOW policy removed"])
        .await;
    for line in [&mtls, &authz] {
        assert!(line.starts_with("WARN") && line.contains(&file), "{line}");
    }
    assert!(
        authz.contains("ns[default]-policy[payment-access]-rule[0]"),
        "{authz}"
    );
    logs.wait_for(&["policy file reloaded"]).await;
    assert_ne!(mesh.policy().snapshot().version(), version);
    assert_eq!(call(addr, m, Some("other")).await, Some(StatusCode::OK));
    assert_eq!(call(addr, m, None).await, Some(StatusCode::OK));
}

#[tokio::test]
async fn a_custom_policy_denies_every_call_at_start_and_when_added() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let m = &mesh();
    let dir = TempDir::new("policy-custom");
    let path = dir.0.join("payment.yaml");
    write(&path, &policy_text("STRICT", &[ACCESS, CUSTOM]));
    let mesh = Mesh::builder()
        .policy_file(&path)
        .identity(m.payment.clone())
        .watch_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let line = logs
        .wait_for(&["authorization fails closed", "CUSTOM"])
        .await;
    assert!(
        line.starts_with("WARN") && line.contains("default/ext-authz") && line.contains("opa"),
        "{line}"
    );
    let addr = serve(&mesh).await;
    // Even the caller payment-access allows: the external check cannot run.
    assert_eq!(
        call(addr, m, Some("order")).await,
        Some(StatusCode::FORBIDDEN)
    );

    write(&path, &policy_text("STRICT", &[ACCESS]));
    logs.wait_count("policy file reloaded", 1).await;
    assert_eq!(call(addr, m, Some("order")).await, Some(StatusCode::OK));

    // Added while running: applied (not refused, which would keep the open policy).
    let before = logs.count("authorization fails closed");
    let reloads = logs.count("policy file reloaded");
    write(&path, &policy_text("STRICT", &[ACCESS, CUSTOM]));
    let line = logs
        .wait_count("authorization fails closed", before + 1)
        .await;
    assert!(line.contains("CUSTOM"), "{line}");
    logs.wait_count("policy file reloaded", reloads + 1).await;
    assert_eq!(
        call(addr, m, Some("order")).await,
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        call(addr, m, Some("other")).await,
        Some(StatusCode::FORBIDDEN)
    );
}

/// A file that is empty, not UTF-8, or missing when the mesh is built is an error naming
/// the file, not a mesh without policy.
#[test]
fn a_bad_policy_file_at_build_is_an_error_naming_the_file() {
    let dir = TempDir::new("policy-at-build");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "empty.yaml",
            b"  \n# nothing\n---\n",
            "the policy file is empty",
        ),
        ("binary.yaml", b"\xff\xfe", "not UTF-8 text"),
        ("missing.yaml", b"", "No such file"),
    ];
    for (name, contents, expect) in cases {
        let path = dir.0.join(name);
        if name != "missing.yaml" {
            std::fs::write(&path, contents).unwrap();
        }
        let err = Mesh::builder()
            .policy_file(&path)
            .build()
            .expect_err(name)
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(expect), "{name}: {err}");
    }
    let path = dir.0.join("good.yaml");
    std::fs::write(&path, "namespace: shop\n").unwrap();
    let file = mesh_tower::mesh::read_policy_file(&path).unwrap();
    assert_eq!(file.namespace(), "shop");
}
