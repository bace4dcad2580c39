//! A careless operator against the control plane: a truncated or comment-only file is
//! refused (the last good config stays served), a deleted file is a deliberate removal
//! that is pushed and said, an edit that removes mTLS or authorization is pushed and said,
//! a CUSTOM AuthorizationPolicy is served as deny-all; and a mesh that receives an update
//! removing protection logs it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane::{Config, ControlPlane, Status};
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::live::LivePolicy;
use mesh_core::rbac::Request;
use mesh_core::Snapshot;
use mesh_xds_client::bootstrap::{NodeConfig, XdsServer};
use mesh_xds_client::transport::{XdsClient, XdsClientConfig};

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);
const V1: &str = "127.0.0.1:19181";
const V2: &str = "127.0.0.1:19182";
const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

fn endpoints(v1: &str, v2: &str) -> String {
    format!(
        "namespace: default\nservices:\n  - name: reviews\n    ports: [{{ port: 9080, name: http }}]\n    \
         serviceAccounts: [reviews]\n    endpoints:\n      - {{ address: \"{v1}\", labels: {{ version: v1 }} }}\n      \
         - {{ address: \"{v2}\", labels: {{ version: v2 }} }}\n"
    )
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: default, namespace: default }}\n\
         spec:\n  mtls: {{ mode: {mode} }}\n"
    )
}

const ACCESS: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
metadata: { name: reviews-access, namespace: default }\nspec:\n  selector: { matchLabels: { version: v1 } }\n  \
rules:\n    - from: [{ source: { principals: [cluster.local/ns/default/sa/productpage] } }]\n";

const CUSTOM: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
metadata: { name: ext-authz, namespace: default }\nspec:\n  selector: { matchLabels: { version: v1 } }\n  \
action: CUSTOM\n  provider: { name: opa }\n  rules: [{ to: [{ operation: { paths: [\"/admin/*\"] } }] }]\n";

fn security(mode: &str, extra: &[&str]) -> String {
    let mut docs = vec![peer_authentication(mode), ACCESS.to_owned()];
    docs.extend(extra.iter().map(|d| (*d).to_owned()));
    docs.join("---\n")
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "control-plane-hardening-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes atomically (rename), so the poller never reads half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(dir: &Path) -> Config {
    Config {
        paths: vec![dir.to_path_buf()],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(20),
    }
}

async fn wait_status(cp: &ControlPlane, mut pred: impl FnMut(&Status) -> bool) -> Status {
    let mut rx = cp.status();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status never matched: {:?}", cp.status().borrow()))
}

/// A proxyless client of the control plane subscribed to both workloads' inbound
/// listeners, as their servers would be.
async fn server_side(cp: &ControlPlane) -> (XdsClient, LivePolicy) {
    let policy = LivePolicy::new(Snapshot::empty());
    let client = XdsClient::start_with_policy(
        XdsServer::insecure(cp.addr().unwrap().to_string()),
        NodeConfig::new("reviews-server")
            .with_metadata("GENERATOR", "grpc")
            .to_proto(),
        XdsClientConfig::default(),
        policy.clone(),
    );
    for addr in [V1, V2] {
        client
            .add_target(&format!("xds.istio.io/grpc/lds/inbound/{addr}"))
            .await
            .unwrap();
    }
    (client, policy)
}

/// Waits until the served inbound policy of `addr` satisfies `pred`.
async fn wait_inbound(
    policy: &LivePolicy,
    addr: &str,
    pred: impl Fn(&InboundPolicy) -> bool,
) -> Arc<InboundPolicy> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut watch = policy.watch();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(p) = policy.load().inbound_for(addr) {
                if pred(p) {
                    return Arc::clone(p);
                }
            }
            watch.changed().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the inbound policy of {addr} never matched"))
}

fn allows(policy: &InboundPolicy, peer: &str) -> bool {
    policy
        .authorization
        .evaluate(&Request::new("GET", "/reviews/1").with_peer_principal(Some(peer)))
        .is_allowed()
}

#[tokio::test]
async fn an_empty_file_is_refused_at_start_and_on_every_edit() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), &endpoints(V1, V2));
    write(&dir.join("security.yaml"), "# truncated\n---\n");
    let err = ControlPlane::start(config(&dir))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("security.yaml: the file is empty") && err.contains("delete the file"),
        "{err}"
    );

    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let (client, policy) = server_side(&cp).await;
    wait_inbound(&policy, V1, |p| p.default_mode == TlsMode::Strict).await;
    for (i, text) in ["", "\n  \n", "# all gone\n---\n---\n"]
        .into_iter()
        .enumerate()
    {
        write(&dir.join("security.yaml"), text);
        let status = wait_status(&cp, |s| s.rejected == i as u64 + 1).await;
        let error = status.last_error.unwrap_or_default();
        assert!(
            error.contains("security.yaml: the file is empty"),
            "{text:?}: {error}"
        );
        assert_eq!(status.version, 1, "nothing pushed");
    }
    // The last good config is what a server still gets.
    let served = wait_inbound(&policy, V1, |_| true).await;
    assert_eq!(served.default_mode, TlsMode::Strict);
    assert!(allows(&served, PRODUCTPAGE));
    assert!(!allows(
        &served,
        "spiffe://cluster.local/ns/default/sa/other"
    ));
    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_deleted_file_is_removed_deliberately_and_what_went_away_is_said() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), &endpoints(V1, V2));
    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let (client, policy) = server_side(&cp).await;
    wait_inbound(&policy, V1, |p| p.default_mode == TlsMode::Strict).await;
    assert!(cp.status().borrow().warnings.is_empty());

    std::fs::remove_file(dir.join("security.yaml")).unwrap();
    let status = wait_status(&cp, |s| s.version == 2).await;
    let file = dir.join("security.yaml").display().to_string();
    let said = status.warnings.join("\n");
    assert!(
        said.contains(&format!(
            "{file} was deleted: removing PeerAuthentication default/default, AuthorizationPolicy default/reviews-access"
        )),
        "{said}"
    );
    for expected in [
        format!("reviews {V1} {{version=v1}}: mTLS STRICT -> PERMISSIVE on every port"),
        format!("reviews {V2} {{version=v2}}: mTLS STRICT -> PERMISSIVE on every port"),
        format!(
            "reviews {V1} {{version=v1}}: ALLOW policy removed (ns[default]-policy[reviews-access]-rule[0])"
        ),
    ] {
        assert!(said.contains(&expected), "{expected}\n---\n{said}");
    }
    let served = wait_inbound(&policy, V1, |p| p.default_mode == TlsMode::Permissive).await;
    assert!(allows(
        &served,
        "spiffe://cluster.local/ns/default/sa/other"
    ));
    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_edit_that_weakens_mtls_is_pushed_and_said() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), &endpoints(V1, V2));
    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    write(&dir.join("security.yaml"), &security("DISABLE", &[]));
    let status = wait_status(&cp, |s| s.version == 2).await;
    let said = status.warnings.join("\n");
    assert!(
        said.contains(&format!(
            "policy change removes protection: reviews {V2} {{version=v2}}: mTLS STRICT -> DISABLE on every port"
        )),
        "{said}"
    );
    assert!(!said.contains("ALLOW policy removed"), "{said}");
    // Back to STRICT: stricter, nothing to say.
    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    let status = wait_status(&cp, |s| s.version == 3).await;
    assert!(status.warnings.is_empty(), "{:?}", status.warnings);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_custom_policy_is_served_as_deny_all_for_the_workloads_it_selects() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), &endpoints(V1, V2));
    write(&dir.join("security.yaml"), &security("STRICT", &[CUSTOM]));
    // Accepted at start (not refused), and said.
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let said = cp.status().borrow().warnings.join("\n");
    assert!(
        said.contains(&format!("authorization fails closed: reviews {V1} {{version=v1}}: policy default/ext-authz: action CUSTOM (provider \"opa\")")),
        "{said}"
    );
    assert!(!said.contains(V2), "v2 is not selected: {said}");
    let (client, policy) = server_side(&cp).await;
    // What a server receives over xDS denies everyone, even the caller payment-access
    // lets in; v2, not selected, keeps its policy.
    let v1 = wait_inbound(&policy, V1, |_| true).await;
    assert!(!allows(&v1, PRODUCTPAGE));
    let v2 = wait_inbound(&policy, V2, |_| true).await;
    assert!(allows(&v2, "spiffe://cluster.local/ns/default/sa/other"));

    // Removed and added again while running: each edit is pushed, not refused.
    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    wait_status(&cp, |s| s.version == 2).await;
    wait_inbound(&policy, V1, |p| allows(p, PRODUCTPAGE)).await;
    write(&dir.join("security.yaml"), &security("STRICT", &[CUSTOM]));
    let status = wait_status(&cp, |s| s.version == 3).await;
    assert_eq!(status.rejected, 0);
    assert!(
        status.warnings.iter().any(|w| w.contains("action CUSTOM")),
        "{:?}",
        status.warnings
    );
    wait_inbound(&policy, V1, |p| !allows(p, PRODUCTPAGE)).await;
    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything logged on the test's thread, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_mesh_logs_an_xds_update_that_removes_protection() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The server's own listener, and the control plane's view of it as an endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let dir = temp_dir();
    write(
        &dir.join("endpoints.yaml"),
        &endpoints(&local.to_string(), V2),
    );
    write(&dir.join("security.yaml"), &security("STRICT", &[]));
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    // The STRICT listener names the certificate provider `default`: the server has one.
    let ca = mesh_tower::identity::testing::TestCa::new().unwrap();
    // Not in the control plane's directory: it would read the bootstrap as input.
    let own = temp_dir();
    let certs = own.join("certs");
    ca.svid("default", "reviews")
        .unwrap()
        .write_istio_files(&certs, &ca)
        .unwrap();
    let bootstrap = own.join("bootstrap.json");
    let file = |name: &str| certs.join(name).display().to_string();
    let json = serde_json::json!({
        "xds_servers": [{
            "server_uri": cp.addr().unwrap().to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc"},
        },
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": file("cert-chain.pem"),
            "private_key_file": file("key.pem"),
            "ca_certificate_file": file("root-cert.pem"),
        }}},
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    });
    std::fs::write(&bootstrap, json.to_string()).unwrap();
    let mesh = mesh_tower::Mesh::builder()
        .bootstrap(&bootstrap)
        .build()
        .unwrap();
    let _listener = mesh.listener(listener); // subscribes to its inbound listener
    wait_inbound(mesh.policy(), &local.to_string(), |p| {
        p.default_mode == TlsMode::Strict
    })
    .await;

    std::fs::remove_file(dir.join("security.yaml")).unwrap();
    wait_inbound(mesh.policy(), &local.to_string(), |p| {
        p.default_mode == TlsMode::Permissive
    })
    .await;
    // The audit runs on the published snapshot; give it its turn.
    let mut text = logs.text();
    for _ in 0..2000 {
        if text.contains("ALLOW policy removed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        text = logs.text();
    }
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("policy change removes protection") && l.contains("source=\"xds\""))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && l.contains(&format!("scope=listener {local}"))
            && l.contains("mTLS STRICT -> PERMISSIVE on every port")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("ALLOW policy removed")),
        "{text}"
    );
    drop(mesh);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&own);
}
