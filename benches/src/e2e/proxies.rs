//! The proxies a sidecar mesh puts between A and B: an Envoy pair doing the mTLS
//! (Istio's shape), or a single plaintext haproxy hop. Configs are generated into the
//! run's temporary directory.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::Proc;
use super::{BoxError, Protocol, SPIFFE_A, SPIFFE_B};

/// Finds a proxy binary: `$VAR` when set, else `name` on `PATH`.
pub fn find_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The first line a binary prints for `args` (its version), or `unknown`.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A free loopback port (bound, then released for the proxy to take).
fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts Envoy-B (mTLS in, requiring A's certificate; plaintext to B at `b`) and Envoy-A
/// (plaintext in from A; mTLS out to Envoy-B with A's certificate, accepting only B's
/// SPIFFE ID), each with one worker thread pinned to `cpu`. Returns them and the address
/// A sends to.
pub fn start_envoy_pair(
    envoy: &Path,
    dir: &Path,
    certs: &Path,
    protocol: Protocol,
    b: SocketAddr,
    cpu: Option<usize>,
) -> Result<(Vec<Proc>, SocketAddr), BoxError> {
    let port_b = free_port()?;
    let port_a = free_port()?;
    let inbound = envoy_config(
        port_b,
        b,
        protocol,
        Some(downstream_tls(&certs.join("service-b"), SPIFFE_A)),
        None,
    );
    let outbound = envoy_config(
        port_a,
        SocketAddr::from(([127, 0, 0, 1], port_b)),
        protocol,
        None,
        Some(upstream_tls(&certs.join("service-a"), SPIFFE_B)),
    );
    let mut procs = Vec::new();
    for (name, config, port) in [("envoy-b", inbound, port_b), ("envoy-a", outbound, port_a)] {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config)?;
        let args = [
            "-c".to_string(),
            path.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--log-level".into(),
            "error".into(),
            "--disable-hot-restart".into(),
        ];
        let log = dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, envoy, &args, cpu, Some(&log))?;
        proc.wait_listening(SocketAddr::from(([127, 0, 0, 1], port)))?;
        procs.push(proc);
    }
    Ok((procs, SocketAddr::from(([127, 0, 0, 1], port_a))))
}

/// Starts one haproxy (one thread, pinned to `cpu`) forwarding plaintext to `b`, speaking
/// `protocol` on both sides. Returns it and the address A sends to.
pub fn start_haproxy(
    haproxy: &Path,
    dir: &Path,
    protocol: Protocol,
    b: SocketAddr,
    cpu: Option<usize>,
) -> Result<(Vec<Proc>, SocketAddr), BoxError> {
    let port = free_port()?;
    let proto = if protocol.is_h2() { " proto h2" } else { "" };
    let config = format!(
        "global\n    nbthread 1\n    maxconn 4000\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    http-reuse always\n\n\
         frontend fe\n    bind 127.0.0.1:{port}{proto}\n    default_backend be\n\n\
         backend be\n    server b {b}{proto}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let args = ["-f".to_string(), path.display().to_string(), "-db".into()];
    let log = dir.join("haproxy.log");
    let mut proc = Proc::spawn("haproxy", haproxy, &args, cpu, Some(&log))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    proc.wait_listening(addr)?;
    Ok((vec![proc], addr))
}

fn protocol_options(protocol: Protocol) -> &'static str {
    if protocol.is_h2() {
        "http2_protocol_options: {}"
    } else {
        "http_protocol_options: {}"
    }
}

/// A static Envoy bootstrap: one listener on `port` routing everything to one upstream.
fn envoy_config(
    port: u16,
    upstream: SocketAddr,
    protocol: Protocol,
    listener_tls: Option<String>,
    cluster_tls: Option<String>,
) -> String {
    let listener_tls = listener_tls.unwrap_or_default();
    let cluster_tls = cluster_tls.unwrap_or_default();
    let options = protocol_options(protocol);
    format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream, timeout: 5s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{listener_tls}  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          {options}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: {ip}, port_value: {uport} }} }}
{cluster_tls}"#,
        ip = upstream.ip(),
        uport = upstream.port(),
    )
}

fn tls_files(dir: &Path) -> String {
    format!(
        r#"        tls_certificates:
        - certificate_chain: {{ filename: "{chain}" }}
          private_key: {{ filename: "{key}" }}
        validation_context:
          trusted_ca: {{ filename: "{root}" }}
"#,
        chain = dir.join("cert-chain.pem").display(),
        key = dir.join("key.pem").display(),
        root = dir.join("root-cert.pem").display(),
    )
}

/// The listener's TLS: the workload's SVID, the peer's certificate required and its URI
/// SAN matched (what Istio's inbound listener does in STRICT mode).
fn downstream_tls(dir: &Path, peer: &str) -> String {
    format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
{files}              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ exact: "{peer}" }}
"#,
        files = indent(&tls_files(dir), 4),
    )
}

/// The cluster's TLS: the workload's SVID as client certificate, the server's URI SAN
/// matched (Istio's `ISTIO_MUTUAL`).
fn upstream_tls(dir: &Path, peer: &str) -> String {
    format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
{files}            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{ exact: "{peer}" }}
"#,
        files = indent(&tls_files(dir), 2),
    )
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}
