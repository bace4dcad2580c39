//! The built `mesh-xds` binary against real ADS servers on 127.0.0.1: the dev control plane
//! fed Istio YAML, and the test ADS server serving a resource the client rejects.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use control_plane::{Config, ControlPlane};
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::{fixtures, TestAdsServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-xds");

const POLICY: &str = r#"namespace: default
services:
  - name: payment-service
    ports: [{ port: 8080, name: grpc }]
    endpoints:
      - { address: "127.0.0.1:50051", labels: { version: v1 } }
      - { address: "127.0.0.1:50052", labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: payment-service }
spec:
  hosts: [payment-service]
  http:
    - match:
        - headers: { end-user: { exact: beta-tester } }
      route:
        - destination: { host: payment-service, subset: v2 }
    - route:
        - destination: { host: payment-service, subset: v1 }
          weight: 80
        - destination: { host: payment-service, subset: v2 }
          weight: 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: payment-service }
spec:
  host: payment-service
  trafficPolicy:
    connectionPool:
      http: { http2MaxRequests: 100 }
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-xds-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bootstrap(dir: &Path, server_uri: &str) -> PathBuf {
    let path = dir.join("bootstrap.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"xds_servers": [{{"server_uri": "{server_uri}", "channel_creds": [{{"type": "insecure"}}],
                 "server_features": ["xds_v3"]}}],
                "node": {{"id": "mesh-xds-test", "metadata": {{"GENERATOR": "grpc"}}}}}}"#
        ),
    )
    .unwrap();
    path
}

async fn control_plane(dir: &Path) -> ControlPlane {
    std::fs::write(dir.join("payment.yaml"), POLICY).unwrap();
    ControlPlane::start(Config {
        paths: vec![dir.join("payment.yaml")],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(50),
    })
    .await
    .unwrap()
}

/// Runs the binary off the runtime's threads (the server under test runs on them).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(args).output().unwrap())
        .await
        .unwrap()
}

fn args(bootstrap: &Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--bootstrap".to_owned(), bootstrap.display().to_string()];
    v.extend(rest.iter().map(|s| (*s).to_owned()));
    v
}

const V1: &str = "outbound|8080|v1|payment-service.default.svc.cluster.local";
const V2: &str = "outbound|8080|v2|payment-service.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_the_resolved_policy_and_every_resource_acked() {
    let dir = temp_dir("resolve");
    let cp = control_plane(&dir).await;
    let boot = bootstrap(&dir, &cp.addr().unwrap().to_string());
    let out = run(args(
        &boot,
        &["xds:///payment-service:8080", "--timeout", "20"],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resolved"], true, "{doc:#}");
    assert_eq!(doc["listener"], "payment-service:8080");
    let policy = &doc["policy"];
    // istiod's virtual hosts ask for the attempt count; so do the control plane's.
    assert_eq!(
        policy["virtual_hosts"][0]["include_request_attempt_count"], true,
        "{policy:#}"
    );
    let routes = policy["virtual_hosts"][0]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{policy:#}");
    assert_eq!(
        routes[0]["match"]["headers"][0],
        serde_json::json!({"name": "end-user", "match": {"exact": "beta-tester"}, "invert": false})
    );
    let split = &routes[1]["action"]["forward"]["clusters"];
    assert_eq!(
        split,
        &serde_json::json!([{"name": V1, "weight": 80}, {"name": V2, "weight": 20}])
    );
    let clusters = policy["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(clusters[0]["circuit_breakers"]["max_requests"], 100);
    assert_eq!(clusters[0]["outlier_detection"]["consecutive_5xx"], 5);
    let endpoints = policy["endpoints"].as_array().unwrap();
    let v2 = endpoints.iter().find(|e| e["cluster_name"] == V2).unwrap();
    assert_eq!(v2["endpoints"][0]["address"], "127.0.0.1:50052");
    // Every resource of the cascade, one per type at least, all ACKed with a version.
    let resources = doc["resources"].as_array().unwrap();
    for t in XdsType::ALL {
        assert!(
            resources.iter().any(|r| r["type"] == t.short_name()),
            "no {t:?} in {resources:#?}"
        );
    }
    for r in resources {
        assert_eq!(r["state"], "ACKED", "{r}");
        assert_eq!(r["version"], "1", "{r}");
        assert!(r["updated_at"].as_str().unwrap().ends_with('Z'), "{r}");
    }

    // The same as YAML.
    let out = run(args(&boot, &["payment-service:8080", "--format", "yaml"])).await;
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.starts_with("---\n"), "{yaml}");
    assert!(yaml.contains("resolved: true"), "{yaml}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `--watch` documents (one JSON per line) until the split gives v2 `v2`.
async fn next_weights(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, v2: u32) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no document from --watch")
            .expect("mesh-xds exited");
        let doc: Value = serde_json::from_str(&line).unwrap();
        let w = &doc["policy"]["virtual_hosts"][0]["routes"][1]["action"]["forward"]["clusters"][1]
            ["weight"];
        if doc["resolved"] == true && *w == v2 {
            return doc;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_document_per_change() {
    let dir = temp_dir("watch");
    let cp = control_plane(&dir).await;
    let boot = bootstrap(&dir, &cp.addr().unwrap().to_string());
    let mut child = Command::new(BIN)
        .args(args(&boot, &["xds:///payment-service:8080", "--watch"]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    next_weights(&mut rx, 20).await;
    let edited = POLICY
        .replace("weight: 80", "weight: 50")
        .replace("weight: 20", "weight: 50");
    let tmp = dir.join("payment.tmp");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, dir.join("payment.yaml")).unwrap();
    let doc = next_weights(&mut rx, 50).await;
    let rds = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "RDS")
        .unwrap()
        .clone();
    assert_eq!(rds["version"], "2", "{rds}");
    let _ = child.kill();
    let _ = child.wait();
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_rejected_target_or_no_server_fails_with_a_message() {
    let dir = temp_dir("fail");
    let cp = control_plane(&dir).await;
    let boot = bootstrap(&dir, &cp.addr().unwrap().to_string());

    // The control plane has no such listener: it never comes (gRFC A57 declares it
    // missing only after 15 s), so the timeout ends the wait, naming what is missing.
    let out = run(args(&boot, &["xds:///nope:9999", "--timeout", "1"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("still waiting for: LDS \"nope:9999\" (REQUESTED)"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resolved"], false);
    assert_eq!(doc["connected"], true);
    assert_eq!(doc["resources"][0]["state"], "REQUESTED");
    drop(cp);

    // A listener the client rejects: an RDS listener naming no route configuration.
    let ads = TestAdsServer::start().await.unwrap();
    ads.put(
        XdsType::Listener,
        "bad:80",
        fixtures::listener_rds("bad:80", ""),
    );
    let boot = bootstrap(&dir, &ads.addr().unwrap().to_string());
    let out = run(args(&boot, &["xds:///bad:80", "--timeout", "20"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("LDS \"bad:80\" was NACKed"), "{stderr}");
    assert!(stderr.contains("route_config_name"), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resources"][0]["state"], "NACKED");
    let nack = ads
        .wait_for_request(Duration::from_secs(5), |r| r.is_nack())
        .await;
    assert!(nack.is_some(), "the server saw no NACK");
    ads.shutdown().await;

    // Nobody listening: the timeout ends it, naming the server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let boot = bootstrap(&dir, &addr.to_string());
    let out = run(args(
        &boot,
        &["xds:///payment-service:8080", "--timeout", "1"],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the xDS server {addr}")),
        "{stderr}"
    );

    // A bootstrap that is not one: exit 2 with the loader's message.
    std::fs::write(dir.join("bad.json"), "{").unwrap();
    let out = run(args(&dir.join("bad.json"), &["xds:///a:1"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("mesh-xds: bootstrap:"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_shape_resolves_through_the_port_listener_and_reports_what_it_skips() {
    let dir = temp_dir("sidecar");
    let cp = control_plane(&dir).await;
    let boot = bootstrap(&dir, &cp.addr().unwrap().to_string());
    let args = args(&boot, &["payment-service:8080", "--timeout", "20"]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env("MESH_ISTIO_SHAPE", "sidecar")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resolved"], true, "{doc:#}");
    assert_eq!(doc["listener"], "0.0.0.0_8080");
    let policy = &doc["policy"];
    assert_eq!(policy["route_config"], "8080", "{policy:#}");
    let clusters = policy["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2, "{policy:#}");
    assert_eq!(clusters[0]["circuit_breakers"]["max_requests"], 100);
    assert_eq!(clusters[0]["outlier_detection"]["consecutive_5xx"], 5);
    let resources = doc["resources"].as_array().unwrap();
    let named = |name: &str| resources.iter().find(|r| r["name"] == name).cloned();
    assert!(named("virtualInbound").is_some(), "{resources:#?}");
    assert!(
        named("payment-service:8080").is_none(),
        "a proxyless listener: {resources:#?}"
    );
    let passthrough = named("PassthroughCluster").expect("PassthroughCluster");
    assert_eq!(passthrough["state"], "ACKED");
    assert!(
        passthrough["not_applied"][0]
            .as_str()
            .is_some_and(|s| s.contains("ORIGINAL_DST")),
        "{passthrough}"
    );

    // An unknown shape is a usage error that names the variable.
    let args = self::args(&boot, &["payment-service:8080", "--timeout", "5"]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env("MESH_ISTIO_SHAPE", "envoy")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MESH_ISTIO_SHAPE=\"envoy\""));
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
