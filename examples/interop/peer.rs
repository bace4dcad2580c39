//! The ADS server that is not ours, for the interop tests of several crates (each includes
//! this file with `#[path]`): `xds_server.py` beside it, on Python grpcio (gRPC C-core)
//! and the Envoy protos of the PyPI package xds-protos. Like istiod and every C-core or
//! grpc-go server it sends response headers only with its first response.
//!
//! Finding the peer, skipping without it (or failing, under `MESH_INTEROP`, as `.ci/run`
//! sets it), starting it on 127.0.0.1 and reading back what the client asked, ACKed and
//! NACKed. Std only, so synchronous and async tests alike can use it.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Set (to anything but empty or `0`) by `.ci/run`: a missing peer fails the test there.
pub const REQUIRED_VAR: &str = "MESH_INTEROP";

/// Long enough never to be hit by a healthy run; only a hung one fails on it.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The four resource types by type URL, with the short names the logs and reports use.
pub const TYPES: [(&str, &str); 4] = [
    (
        "LDS",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "RDS",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
    ("CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
    (
        "EDS",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
];

/// The target the server's canary answers, and its resources' names.
pub const TARGET: &str = "xds:///payment-service.default.svc.cluster.local:8080";
pub const LISTENER: &str = "payment-service.default.svc.cluster.local:8080";
pub const ROUTE: &str = "outbound|8080||payment-service.default.svc.cluster.local";
pub const V1: &str = "outbound|8080|v1|payment-service.default.svc.cluster.local";
pub const V2: &str = "outbound|8080|v2|payment-service.default.svc.cluster.local";

/// Whether a missing peer fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var(REQUIRED_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips (returns `None` after saying why) or, under `MESH_INTEROP`, fails.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(
        !required(),
        "{REQUIRED_VAR} is set but {what}; .ci/run installs it"
    );
    eprintln!("SKIPPED: {what} (set {REQUIRED_VAR}=required to make this a failure)");
    None
}

/// A `python3` (`PYTHON`, else on `PATH`) that imports grpcio and xds-protos.
pub fn python() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned()));
    let imports = Command::new(&bin)
        .args([
            "-c",
            "import grpc, envoy.service.discovery.v3.ads_pb2_grpc, \
             envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        Some(bin)
    } else {
        missing(
            "python3 with grpcio and xds-protos is not installed (pip install grpcio xds-protos)",
        )
    }
}

/// A fresh scratch directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-grpcio-ads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// `xds_server.py`, running until dropped.
#[derive(Debug)]
pub struct PythonAds {
    child: Child,
    /// Held open: the server stops when it closes (`--stop-on-eof`), so it does not outlive
    /// a test process that is killed.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
    stderr: PathBuf,
}

impl PythonAds {
    /// Starts the server on 127.0.0.1 with `v1` and `v2` as the subsets' endpoints, its
    /// files in `dir`.
    pub fn start(python: &Path, dir: &Path, v1: SocketAddr, v2: SocketAddr) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("examples/interop/xds_server.py"))
            .find(|p| p.is_file())
            .expect("examples/interop/xds_server.py above this crate");
        let log = dir.join("xds-server.log");
        let stderr = dir.join("xds-server.stderr");
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--port", "0", "--stop-on-eof"])
            .arg("--v1")
            .arg(v1.to_string())
            .arg("--v2")
            .arg(v2.to_string())
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create the server's stderr file"))
            .spawn()
            .expect("start xds_server.py");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        // The first line says the port; read it off this thread to bound the wait.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(&mut stdout).read_line(&mut line);
            let _ = tx.send(line);
            // Nothing else comes on stdout (the log goes to its file); drain it anyway.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let mut server = Self {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            stderr,
        };
        let line = rx.recv_timeout(PATIENCE).unwrap_or_default();
        let port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        match port {
            Some(port) => server.addr.set_port(port),
            None => panic!(
                "xds_server.py did not say its port (got {line:?}):\n{}",
                server.stderr_text()
            ),
        }
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A gRPC bootstrap naming this server, for a node of istiod's shape; with `delta`,
    /// Envoy's `api_type: DELTA_GRPC` asks the client for the incremental protocol.
    pub fn bootstrap(&self, node_id: &str, delta: bool) -> String {
        let api_type = if delta {
            r#", "api_type": "DELTA_GRPC""#
        } else {
            ""
        };
        format!(
            r#"{{
  "xds_servers": [{{ "server_uri": "{addr}", "channel_creds": [{{ "type": "insecure" }}],
                    "server_features": ["xds_v3"]{api_type} }}],
  "node": {{ "id": "{node_id}", "cluster": "interop", "locality": {{}},
            "metadata": {{ "GENERATOR": "grpc", "NAMESPACE": "default" }} }}
}}"#,
            addr = self.addr
        )
    }

    /// Every line the server logged so far (stream events, requests, responses).
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The requests of the streams whose first request came from `node_id`.
    pub fn requests_of(&self, node_id: &str) -> Vec<Value> {
        let events = self.events();
        let streams: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "request" && e["node"] == node_id)
            .map(|e| &e["stream"])
            .collect();
        events
            .iter()
            .filter(|e| e["event"] == "request" && streams.contains(&&e["stream"]))
            .cloned()
            .collect()
    }

    /// Fails if `node_id`'s streams NACKed anything (or made no request at all).
    pub fn assert_no_nack(&self, node_id: &str) {
        let requests = self.requests_of(node_id);
        assert!(
            !requests.is_empty(),
            "no request from {node_id}: {:#?}",
            self.events()
        );
        let nacks: Vec<&Value> = requests.iter().filter(|r| r["kind"] == "nack").collect();
        assert!(nacks.is_empty(), "{node_id} NACKed: {nacks:#?}");
    }

    /// Waits (bounded) until `node_id`'s streams have ACKed every type, and fails if they
    /// NACKed anything. An ACK goes out just after the response it answers is applied,
    /// so a client that just resolved may not have sent its last one yet.
    pub fn assert_all_acked(&self, node_id: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            self.assert_no_nack(node_id);
            let requests = self.requests_of(node_id);
            let missing: Vec<&str> = TYPES
                .iter()
                .filter(|(_, type_url)| {
                    !requests
                        .iter()
                        .any(|r| r["type_url"] == *type_url && r["kind"] == "ack")
                })
                .map(|(short, _)| *short)
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {missing:?} ACK from {node_id}: {requests:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server wrote on stderr (Python tracebacks, grpcio warnings).
    pub fn stderr_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for PythonAds {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
