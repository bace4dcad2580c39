//! The control plane, fed the seed guide's Istio YAML, serves resources our own xDS client
//! accepts over a real gRPC ADS stream on 127.0.0.1; file edits are pushed, broken edits
//! leave the last good config in force.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control_plane::{Config, ControlPlane, Status};
use http::{HeaderMap, HeaderValue};
use mesh_core::live::LivePolicy;
use mesh_core::route::{ClusterSpecifier, RouteAction};
use mesh_core::Snapshot;
use mesh_xds_client::bootstrap::{NodeConfig, XdsServer};
use mesh_xds_client::transport::{Backoff, XdsClient, XdsClientConfig};

const TARGET: &str = "reviews:9080";
const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

const ENDPOINTS: &str = r#"
namespace: default
services:
  - name: reviews
    ports: [{ port: 9080, name: http }]
    serviceAccounts: [reviews]
    endpoints:
      - { address: "127.0.0.1:19081", labels: { version: v1 } }
      - { address: "127.0.0.1:19083", labels: { version: v1 } }
      - { address: "127.0.0.1:19082", labels: { version: v2 } }
"#;

/// The seed guide's VirtualService and DestinationRule, as Kubernetes manifests.
fn istio(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-route
  namespace: default
spec:
  hosts:
    - reviews
  http:
    - match:
        - headers:
            end-user:
              exact: beta-tester
      route:
        - destination:
            host: reviews
            subset: v2
          weight: 100
    - route:
        - destination:
            host: reviews
            subset: v1
          weight: {v1}
        - destination:
            host: reviews
            subset: v2
          weight: {v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-destination
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        h2UpgradePolicy: DEFAULT
        http1MaxPendingRequests: 100
        http2MaxRequests: 1000
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 30s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
      trafficPolicy:
        loadBalancer:
          simple: LEAST_REQUEST
"#
    )
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "control-plane-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes atomically (rename), so the poller never reads half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path) -> ControlPlane {
    ControlPlane::start(Config {
        paths: vec![dir.to_path_buf()],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(20),
    })
    .await
    .unwrap()
}

fn client(cp: &ControlPlane, policy: LivePolicy) -> XdsClient {
    let config = XdsClientConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ));
    XdsClient::start_with_policy(
        XdsServer::insecure(cp.addr().unwrap().to_string()),
        NodeConfig::new("control-plane-test")
            .with_metadata("GENERATOR", "grpc")
            .to_proto(),
        config,
        policy,
    )
}

/// The weighted split of `reviews:9080` for a request with these headers.
fn split(s: &Snapshot, headers: &HeaderMap) -> Option<Vec<(String, u32)>> {
    let rc = s.outbound(TARGET)?.route_config()?;
    let (_, route) = rc.route_for(TARGET, "/reviews/1", headers, 0)?;
    let RouteAction::Forward(f) = route.action() else {
        return None;
    };
    match f.clusters() {
        ClusterSpecifier::Weighted(w) => Some(
            w.clusters()
                .iter()
                .map(|c| (c.name().to_owned(), c.weight()))
                .collect(),
        ),
        ClusterSpecifier::Cluster(c) => Some(vec![(c.clone(), 100)]),
        _ => None,
    }
}

fn pairs(list: &[(&str, u32)]) -> Option<Vec<(String, u32)>> {
    Some(list.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect())
}

async fn wait_policy(
    policy: &LivePolicy,
    mut pred: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut watch = policy.watch();
    let wait = async {
        let mut current = policy.snapshot();
        loop {
            if pred(&current) {
                return current;
            }
            current = watch.changed().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("not reached; last snapshot: {:#?}", policy.snapshot()))
}

async fn wait_status(cp: &ControlPlane, mut pred: impl FnMut(&Status) -> bool) -> Status {
    let mut rx = cp.status();
    let wait = async {
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("control plane status not reached")
}

fn addrs(s: &Snapshot, cluster: &str) -> Vec<String> {
    let c = s.cluster(cluster).unwrap();
    let mut out: Vec<String> = s
        .endpoints_of(c)
        .unwrap()
        .endpoints()
        .map(|(_, e)| e.address.to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn seed_guide_yaml_is_served_and_edits_are_pushed() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), ENDPOINTS);
    write(&dir.join("reviews.yaml"), &istio(90, 10));
    let cp = start(&dir).await;
    let policy = LivePolicy::new(Snapshot::empty());
    let client = client(&cp, policy.clone());
    client.add_target(TARGET).await.unwrap();

    let none = HeaderMap::new();
    let first = wait_policy(&policy, |s| split(s, &none).is_some()).await;
    assert_eq!(split(&first, &none), pairs(&[(V1, 90), (V2, 10)]));
    let mut beta = HeaderMap::new();
    beta.insert("end-user", HeaderValue::from_static("beta-tester"));
    assert_eq!(split(&first, &beta), pairs(&[(V2, 100)]));
    assert_eq!(addrs(&first, V1), ["127.0.0.1:19081", "127.0.0.1:19083"]);
    assert_eq!(addrs(&first, V2), ["127.0.0.1:19082"]);
    // The DestinationRule's traffic policy made it through Envoy's protos.
    let v1 = first.cluster(V1).unwrap();
    assert_eq!(v1.circuit_breakers.max_connections, 100);
    assert_eq!(v1.circuit_breakers.max_pending_requests, 100);
    assert_eq!(v1.circuit_breakers.max_requests, 1000);
    let od = v1.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx, 5);
    assert_eq!(od.max_ejection_percent, 50);
    assert_eq!(od.interval, Duration::from_secs(30));
    assert!(matches!(
        first.cluster(V2).unwrap().lb,
        mesh_core::lb::LbPolicy::LeastRequest { .. }
    ));

    // The canary moves on: 50/50.
    write(&dir.join("reviews.yaml"), &istio(50, 50));
    let second = wait_policy(&policy, |s| split(s, &none) == pairs(&[(V1, 50), (V2, 50)])).await;
    assert_eq!(split(&second, &beta), pairs(&[(V2, 100)]));
    let status = wait_status(&cp, |s| s.version == 2).await;
    assert_eq!(status.rejected, 0);

    // A broken edit (a subset no DestinationRule defines) is rejected with its location;
    // the client keeps the last good config.
    let broken = istio(50, 50).replace(
        "subset: v2\n          weight: 50",
        "subset: v3\n          weight: 50",
    );
    assert_ne!(broken, istio(50, 50));
    write(&dir.join("reviews.yaml"), &broken);
    let status = wait_status(&cp, |s| s.rejected == 1).await;
    let error = status.last_error.unwrap();
    assert!(error.contains("reviews.yaml"), "{error}");
    assert!(error.contains("VirtualService reviews-route"), "{error}");
    assert!(error.contains("v3"), "{error}");
    assert_eq!(status.version, 2);

    // A YAML error names the file, the line and the field path.
    write(
        &dir.join("reviews.yaml"),
        &istio(50, 50).replace("maxConnections: 100", "maxConnectionz: 100"),
    );
    let status = wait_status(&cp, |s| s.rejected == 2).await;
    let error = status.last_error.unwrap();
    assert!(error.contains("reviews.yaml:39:9:"), "{error}");
    assert!(
        error.contains("spec.trafficPolicy.connectionPool.tcp"),
        "{error}"
    );
    assert_eq!(
        split(&policy.snapshot(), &none),
        pairs(&[(V1, 50), (V2, 50)])
    );

    // Fixed again: pushed.
    write(&dir.join("reviews.yaml"), &istio(0, 100));
    wait_policy(&policy, |s| split(s, &none) == pairs(&[(V1, 0), (V2, 100)])).await;
    let status = wait_status(&cp, |s| s.version == 3).await;
    assert_eq!(status.last_error, None);

    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn invalid_initial_config_fails_to_start_with_its_location() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), ENDPOINTS);
    write(
        &dir.join("reviews.yaml"),
        &istio(90, 10).replace(
            "host: reviews\n  trafficPolicy",
            "host: ratings\n  trafficPolicy",
        ),
    );
    let err = ControlPlane::start(Config {
        paths: vec![dir.clone()],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        unix: None,
        poll: Duration::from_millis(20),
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("reviews.yaml"), "{err}");
    assert!(err.contains("DestinationRule reviews-destination"), "{err}");
    assert!(err.contains("ratings"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

const SECURITY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews-access
  namespace: default
spec:
  selector:
    matchLabels:
      version: v1
  rules:
    - from:
        - source:
            principals:
              - cluster.local/ns/default/sa/productpage
      to:
        - operation:
            methods: ["GET"]
            paths: ["/reviews/*"]
"#;

#[tokio::test]
async fn inbound_listeners_carry_peer_authentication_and_authorization() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), ENDPOINTS);
    write(&dir.join("reviews.yaml"), &istio(90, 10));
    write(&dir.join("security.yaml"), SECURITY);
    let cp = start(&dir).await;
    let policy = LivePolicy::new(Snapshot::empty());
    let client = client(&cp, policy.clone());
    let v1: std::net::SocketAddr = "127.0.0.1:19081".parse().unwrap();
    let v2: std::net::SocketAddr = "127.0.0.1:19082".parse().unwrap();
    for addr in [v1, v2] {
        client
            .add_target(&format!("xds.istio.io/grpc/lds/inbound/{addr}"))
            .await
            .unwrap();
    }
    let s = wait_policy(&policy, |s| {
        s.inbound_for(v1).is_some() && s.inbound_for(v2).is_some()
    })
    .await;

    // What mesh-core computes for each workload from the same YAML, without xDS.
    let expected = |version: &str| {
        let text = format!(
            "namespace: default\nworkload: {{ labels: {{ version: {version} }} }}\n\
             peerAuthentications:\n{}\nauthorizationPolicies:\n{}",
            indent(SECURITY.split("---").next().unwrap()),
            indent(SECURITY.split("---").nth(1).unwrap()),
        );
        mesh_core::policy_file::PolicyFile::parse(&text, "expected")
            .unwrap()
            .inbound_policy()
            .unwrap()
            .unwrap()
    };
    let got_v1 = s.inbound_for(v1).unwrap();
    assert_eq!(got_v1.default_mode, mesh_core::inbound::TlsMode::Strict);
    assert_eq!(**got_v1, expected("v1"));
    assert!(!got_v1.authorization.engines.is_empty());
    // The AuthorizationPolicy selects v1 only.
    let got_v2 = s.inbound_for(v2).unwrap();
    assert_eq!(**got_v2, expected("v2"));
    assert!(got_v2.authorization.engines.is_empty());

    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A YAML document as one item of a list.
fn indent(doc: &str) -> String {
    let mut out = String::new();
    for (i, line) in doc.trim().lines().enumerate() {
        out.push_str(if i == 0 { "  - " } else { "    " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), ENDPOINTS);
    write(&dir.join("reviews.yaml"), &istio(90, 10));
    let socket = dir.join("xds.sock");
    let cp = ControlPlane::start(Config {
        paths: vec![dir.clone()],
        listen: None,
        unix: Some(socket.clone()),
        poll: Duration::from_millis(20),
    })
    .await
    .unwrap();
    assert_eq!(cp.addr(), None);
    let policy = LivePolicy::new(Snapshot::empty());
    let client = XdsClient::start_with_policy(
        XdsServer::from_uri(&format!("unix://{}", socket.display())).unwrap(),
        NodeConfig::new("control-plane-test")
            .with_metadata("GENERATOR", "grpc")
            .to_proto(),
        XdsClientConfig::default(),
        policy.clone(),
    );
    client.add_target(TARGET).await.unwrap();
    let none = HeaderMap::new();
    let s = wait_policy(&policy, |s| split(s, &none).is_some()).await;
    assert_eq!(split(&s, &none), pairs(&[(V1, 90), (V2, 10)]));
    client.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_delta_client_gets_the_same_config_and_edits() {
    use mesh_xds_client::ads::{AdsConfig, Protocol};

    let dir = temp_dir();
    write(&dir.join("endpoints.yaml"), ENDPOINTS);
    write(&dir.join("reviews.yaml"), &istio(90, 10));
    let cp = start(&dir).await;
    let sotw_policy = LivePolicy::new(Snapshot::empty());
    let sotw = client(&cp, sotw_policy.clone());
    let delta_policy = LivePolicy::new(Snapshot::empty());
    let config = XdsClientConfig::default()
        .with_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .with_ads(AdsConfig::default().with_protocol(Protocol::Delta));
    let delta = XdsClient::start_with_policy(
        XdsServer::insecure(cp.addr().unwrap().to_string()),
        NodeConfig::new("control-plane-delta")
            .with_metadata("GENERATOR", "grpc")
            .to_proto(),
        config,
        delta_policy.clone(),
    );
    sotw.add_target(TARGET).await.unwrap();
    delta.add_target(TARGET).await.unwrap();

    let none = HeaderMap::new();
    let by_delta = wait_policy(&delta_policy, |s| split(s, &none).is_some()).await;
    assert_eq!(delta.view().protocol, Protocol::Delta);
    assert_eq!(split(&by_delta, &none), pairs(&[(V1, 90), (V2, 10)]));
    assert_eq!(addrs(&by_delta, V1), ["127.0.0.1:19081", "127.0.0.1:19083"]);
    let by_sotw = wait_policy(&sotw_policy, |s| split(s, &none).is_some()).await;
    for name in [V1, V2] {
        assert_eq!(by_delta.cluster(name), by_sotw.cluster(name), "{name}");
        assert_eq!(addrs(&by_delta, name), addrs(&by_sotw, name), "{name}");
    }

    // An edit reaches the delta client as well.
    write(&dir.join("reviews.yaml"), &istio(50, 50));
    wait_policy(&delta_policy, |s| {
        split(s, &none) == pairs(&[(V1, 50), (V2, 50)])
    })
    .await;
    sotw.shutdown().await;
    delta.shutdown().await;
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
