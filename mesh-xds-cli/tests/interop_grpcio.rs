//! The built `mesh-xds` binary against an ADS server none of whose code is ours:
//! `examples/interop/xds_server.py`, Python grpcio (C-core) with the Envoy protos of
//! xds-protos, serving the canary istiod would for payment-service (a header route to v2,
//! 90/10 v1/v2 for everyone else). Like istiod it sends no response headers before its
//! first response, and answers only what it is asked: a client that waits for the headers
//! before it asks never resolves anything.
//!
//! Skipped (with a message) when python3, grpcio or xds-protos is missing, unless
//! `MESH_INTEROP` is set, as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../examples/interop/peer.rs"]
mod peer;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use peer::{PythonAds, PATIENCE, TARGET, V1, V2};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-xds");

/// Nothing listens on these: the CLI only reports the endpoints, it never dials them.
const V1_ADDR: &str = "127.0.0.1:50071";
const V2_ADDR: &str = "127.0.0.1:50072";

/// Kills the child when dropped, whatever the test did.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `mesh-xds` to the end, killing it if it outlives [`PATIENCE`].
fn run(bootstrap: &Path, rest: &[&str]) -> Output {
    let mut child = Killed(
        Command::new(BIN)
            .arg("--bootstrap")
            .arg(bootstrap)
            .args(rest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = reader(Box::new(child.0.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mesh-xds {rest:?} hung");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The canary's routing and endpoints, as the CLI prints a resolved target.
fn assert_canary(doc: &Value) {
    assert_eq!(doc["resolved"], true, "{doc:#}");
    assert_eq!(doc["listener"], peer::LISTENER, "{doc:#}");
    let policy = &doc["policy"];
    assert_eq!(policy["route_config"], peer::ROUTE, "{policy:#}");
    let vhost = &policy["virtual_hosts"][0];
    assert_eq!(vhost["include_request_attempt_count"], true, "{policy:#}");
    let routes = vhost["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{policy:#}");
    assert_eq!(
        routes[0]["match"]["headers"][0],
        json!({"name": "end-user", "match": {"exact": "beta-tester"}, "invert": false}),
        "{policy:#}"
    );
    assert_eq!(
        routes[0]["action"]["forward"]["clusters"],
        json!([{"name": V2, "weight": 100}]),
        "{policy:#}"
    );
    assert_eq!(
        routes[1]["action"]["forward"]["clusters"],
        json!([{"name": V1, "weight": 90}, {"name": V2, "weight": 10}]),
        "{policy:#}"
    );
    let mut clusters: Vec<&str> = policy["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    clusters.sort_unstable();
    assert_eq!(clusters, [V1, V2], "{policy:#}");
    for (cluster, addr) in [(V1, V1_ADDR), (V2, V2_ADDR)] {
        let eds = policy["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["cluster_name"] == cluster)
            .unwrap_or_else(|| panic!("no endpoints for {cluster}: {policy:#}"));
        assert_eq!(eds["endpoints"][0]["address"], addr, "{eds:#}");
    }
    let resources = doc["resources"].as_array().unwrap();
    for (short, _) in peer::TYPES {
        assert!(
            resources.iter().any(|r| r["type"] == short),
            "no {short} in {resources:#?}"
        );
    }
    for r in resources {
        assert_eq!(r["state"], "ACKED", "{r}");
    }
}

fn start(name: &str) -> Option<(PythonAds, std::path::PathBuf)> {
    let python = peer::python()?;
    let dir = peer::temp_dir(name);
    let v1: SocketAddr = V1_ADDR.parse().unwrap();
    let v2: SocketAddr = V2_ADDR.parse().unwrap();
    Some((PythonAds::start(&python, &dir, v1, v2), dir))
}

fn write_bootstrap(ads: &PythonAds, dir: &Path, node: &str, delta: bool) -> std::path::PathBuf {
    let path = dir.join(format!("{node}.json"));
    std::fs::write(&path, ads.bootstrap(node, delta)).unwrap();
    path
}

#[test]
fn resolves_the_istiod_shaped_canary_from_a_grpcio_server() {
    let Some((ads, dir)) = start("once") else {
        return;
    };
    // State of the world, then incremental, each on its own stream (node).
    for (node, delta) in [("mesh-xds-sotw", false), ("mesh-xds-delta", true)] {
        let boot = write_bootstrap(&ads, &dir, node, delta);
        let out = run(&boot, &[TARGET, "--timeout", "30"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{node}: {:?}\n{stderr}\nstdout: {}\nserver: {:#?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            ads.events(),
            ads.stderr_text()
        );
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{node}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_canary(&doc);
        // Once resolved the binary exits at once, maybe before its last ACK is out: the
        // server saw no NACK, and the client's own report (above) has every type ACKED.
        // The ACKs on the wire are checked where the client stays (`--watch`).
        ads.assert_no_nack(node);
        let protocols: Vec<Value> = ads
            .events()
            .into_iter()
            .filter(|e| e["event"] == "stream_open")
            .map(|e| e["protocol"].clone())
            .collect();
        let expected = if delta { "delta" } else { "sotw" };
        assert!(protocols.contains(&json!(expected)), "{protocols:?}");
    }
    drop(ads);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_prints_a_resolved_document_from_a_grpcio_server() {
    let Some((ads, dir)) = start("watch") else {
        return;
    };
    let node = "mesh-xds-watch";
    let boot = write_bootstrap(&ads, &dir, node, false);
    let mut child = Killed(
        Command::new(BIN)
            .arg("--bootstrap")
            .arg(&boot)
            .args([TARGET, "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Documents come as the cascade fills in; read them until one resolves.
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let resolved = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no resolved document from --watch; got {seen:#?}\nserver: {:#?}",
                ads.events()
            )
        });
        let doc: Value = serde_json::from_str(&line).unwrap();
        if doc["resolved"] == true {
            break doc;
        }
        seen.push(doc);
    };
    assert_canary(&resolved);
    ads.assert_all_acked(node);
    drop(child);
    drop(ads);
    let _ = std::fs::remove_dir_all(&dir);
}
