//! The order-service binary, as an attacker or a careless client would treat it: thousands
//! of idle connections, slowloris peers that trickle header bytes, PERMISSIVE connections
//! that send one byte, STRICT peers that handshake and fall silent. Fresh requests are still
//! served, the offenders are closed (the longest-idle first when a limit is reached; the
//! rest by the header-read and idle timeouts), and the service's memory stays bounded.
//!
//! The service runs in its own process so the connections' two ends do not share one
//! process's file descriptor limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mesh_tower::identity::testing::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(60);
const IDLE_TIMEOUT_SECS: u64 = 3;
const HEADER_TIMEOUT_SECS: u64 = 2;

struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Service {
    async fn start(extra: &[&str]) -> Self {
        Self::start_with(IDLE_TIMEOUT_SECS, HEADER_TIMEOUT_SECS, extra).await
    }

    async fn start_with(idle_timeout: u64, header_timeout: u64, extra: &[&str]) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut args = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--idle-timeout".to_owned(),
            idle_timeout.to_string(),
            "--header-read-timeout".to_owned(),
            header_timeout.to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let child = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args(&args)
            .env_remove("GRPC_XDS_BOOTSTRAP")
            .env_remove("MESH_POLICY")
            .env_remove("MESH_ADMIN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let service = Self { child, addr };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        service
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// A fresh HTTP/1.1 request on a new connection from 127.0.0.1: its status code.
async fn fresh_request(addr: SocketAddr) -> u16 {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: order\r\nconnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        let text = String::from_utf8_lossy(&reply);
        Ok::<u16, std::io::Error>(
            text.split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0),
        )
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .expect("a fresh request hung")
        .unwrap_or(0)
}

/// The soft limit on open files for this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

/// Connects from `source` (a loopback address of its own, so the per-peer limit applies
/// per source).
async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    {
        Ok(()) => true,
        Err(_) => false,
    }
}

/// How many of `streams` the server closes within `within` (checked concurrently).
async fn count_closed(streams: Vec<TcpStream>, within: Duration) -> usize {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed_within(&mut s, within).await }))
        .collect();
    let mut closed = 0;
    for t in tasks {
        if t.await.unwrap() {
            closed += 1;
        }
    }
    closed
}

/// Opens `count` idle connections from ten source addresses, checking every thousand that a
/// fresh request is still served.
async fn open_idle(service: &Service, count: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        let source = IpAddr::from([127, 0, 0, 2 + (i % 10) as u8]);
        match connect_from(source, service.addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {i} failed: {e}"),
        }
        if i % 1_000 == 999 {
            assert_eq!(
                fresh_request(service.addr).await,
                200,
                "after {} idle connections",
                i + 1
            );
        }
    }
    idle
}

/// 10,000 idle connections (fewer only if this process may not open that many files).
/// One test, so the two phases do not share the open-files limit with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_take_the_service_down() {
    let wanted = 10_000usize.min(open_files_limit().saturating_sub(1_000));
    assert!(wanted >= 8_000, "open-files limit too low: {wanted}");

    // The limit: a service that keeps at most 2,000, with timeouts too long to matter.
    let max_connections = 2_000;
    let service = Service::start_with(
        120,
        120,
        &["--max-connections", &max_connections.to_string()],
    )
    .await;
    assert_eq!(fresh_request(service.addr).await, 200);
    let rss_before = service.rss_kib();
    let mut idle = open_idle(&service, wanted).await;
    assert_eq!(fresh_request(service.addr).await, 200);
    let rss_after = service.rss_kib();
    // The longest-idle ones made room: all but the last 2,000 are closed, those are not.
    let kept = idle.split_off(wanted - max_connections + 1);
    let evicted = idle.len();
    assert_eq!(
        count_closed(idle, Duration::from_secs(10)).await,
        evicted,
        "the oldest idle connections were not closed"
    );
    let mut open = 0;
    let mut kept = kept;
    for s in kept.iter_mut().skip(10) {
        if !closed_within(s, Duration::from_millis(1)).await {
            open += 1;
        }
    }
    assert!(
        open >= kept.len() - 20,
        "only {open} of the newest {} kept",
        kept.len()
    );
    // Memory grows with the connections kept, not with those attempted.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 64 * max_connections as u64,
        "RSS grew by {growth} KiB for {wanted} idle connections"
    );
    eprintln!(
        "limit {max_connections}: {wanted} idle connections, {evicted} closed to make room; RSS {rss_before} -> {rss_after} KiB (+{growth})"
    );
    drop(kept);
    drop(service);

    // The timeouts, with the default limits: every idle connection is closed.
    let service = Service::start(&[]).await;
    let rss_before = service.rss_kib();
    let idle = open_idle(&service, wanted).await;
    assert_eq!(fresh_request(service.addr).await, 200);
    let rss_after = service.rss_kib();
    let left = idle.len();
    let closed = count_closed(idle, Duration::from_secs(IDLE_TIMEOUT_SECS + 20)).await;
    assert_eq!(
        closed, left,
        "idle connections left open after the timeouts"
    );
    assert_eq!(fresh_request(service.addr).await, 200);
    eprintln!(
        "default limits: {wanted} idle connections all closed by the timeouts; RSS {rss_before} -> {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_limit_loses_its_own_idle_connections_only() {
    // Timeouts long enough that only the limit closes connections here.
    let service = Service::start_with(120, 120, &["--max-connections-per-peer", "100"]).await;
    let greedy = IpAddr::from([127, 0, 0, 50]);
    let other = IpAddr::from([127, 0, 0, 51]);
    let mut theirs = Vec::new();
    for _ in 0..20 {
        theirs.push(connect_from(other, service.addr).await.unwrap());
    }
    let mut greedy_conns = Vec::new();
    for _ in 0..300 {
        greedy_conns.push(connect_from(greedy, service.addr).await.unwrap());
    }
    assert_eq!(fresh_request(service.addr).await, 200);
    // 200 of the greedy peer's connections were closed to make room for its later ones,
    // 100 (its limit) stay. Which ones is the longest idle at each admission: connections
    // accepted a moment apart can register in either order, so the count is what is fixed.
    assert_eq!(
        count_closed(greedy_conns, Duration::from_secs(5)).await,
        200
    );
    // The other peer's idle connections were not touched (they go only at the idle timeout).
    let mut untouched = 0;
    for s in &mut theirs {
        if !closed_within(s, Duration::from_millis(50)).await {
            untouched += 1;
        }
    }
    assert_eq!(untouched, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_peers_are_closed_by_the_header_read_timeout() {
    let service = Service::start(&[]).await;
    let rss_before = service.rss_kib();
    let peers = 500;
    let mut slow = Vec::with_capacity(peers);
    for _ in 0..peers {
        let mut s = TcpStream::connect(service.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(s);
    }
    // Trickle a header byte per second each; the service closes them all anyway.
    let trickle = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(HEADER_TIMEOUT_SECS + 20);
        let mut open = slow;
        while !open.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::with_capacity(open.len());
            for mut s in open {
                if s.write_all(b"x").await.is_ok() {
                    still.push(s);
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        open.len()
    });
    assert_eq!(fresh_request(service.addr).await, 200);
    let still_open = trickle.await.unwrap();
    assert_eq!(
        still_open, 0,
        "slowloris connections survived the header-read timeout"
    );
    let growth = service.rss_kib().saturating_sub(rss_before);
    eprintln!("slowloris x{peers}: RSS +{growth} KiB; all closed");
}

/// Reads one HTTP/1.1 response with a `content-length` body off a keep-alive connection.
async fn read_one_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// The header-read timeout is HTTP/1.1's: a keep-alive connection with no next request is
/// closed at it, while an HTTP/2 connection (told by its preface, before any request) is
/// held until the idle timeout. hyper's own HTTP/1.1 timer is not used; the connection's
/// idle check applies the header-read timeout to HTTP/1.1 connections only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_closes_idle_http1_connections_but_not_http2_ones() {
    let idle_timeout = 12;
    let service = Service::start_with(idle_timeout, HEADER_TIMEOUT_SECS, &[]).await;
    // h2c with prior knowledge: the preface and an empty SETTINGS frame; the server's
    // SETTINGS is read and acknowledged. No request is sent.
    let mut h2 = TcpStream::connect(service.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    h2.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is its SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    h2.read_exact(&mut payload).await.unwrap();
    h2.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
    let h2_started = tokio::time::Instant::now();

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let mut h1 = TcpStream::connect(service.addr).await.unwrap();
    h1.write_all(b"GET /healthz HTTP/1.1\r\nhost: order\r\n\r\n")
        .await
        .unwrap();
    let response = read_one_response(&mut h1).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Closed by the header-read timeout (2 s), well before the idle timeout (12 s) would.
    assert!(
        closed_within(&mut h1, Duration::from_secs(idle_timeout - 2)).await,
        "an idle HTTP/1.1 keep-alive connection outlived the header-read timeout"
    );

    // The HTTP/2 connection has now been idle past the header-read timeout too; it is
    // still open (checked until a second before its idle timeout) and closed after it.
    let idle = Duration::from_secs(idle_timeout);
    let elapsed = h2_started.elapsed();
    assert!(elapsed > Duration::from_secs(HEADER_TIMEOUT_SECS));
    if let Some(window) = idle.checked_sub(elapsed + Duration::from_secs(1)) {
        assert!(
            !closed_within(&mut h2, window.min(Duration::from_secs(3))).await,
            "an idle HTTP/2 connection was closed before its idle timeout"
        );
    }
    assert!(
        closed_within(&mut h2, idle + Duration::from_secs(20)).await,
        "an idle HTTP/2 connection outlived the idle timeout"
    );
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn permissive_policy(dir: &Path) -> String {
    format!(
        "certificates:\n  certificateFile: {0}/cert-chain.pem\n  privateKeyFile: {0}/key.pem\n  caCertificateFile: {0}/root-cert.pem\nworkload:\n  name: order-service\n  serviceAccount: order-service\npeerAuthentications:\n  - metadata: {{ name: default, namespace: default }}\n    spec:\n      mtls: {{ mode: PERMISSIVE }}\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_one_byte_and_strict_silent_peers_are_closed() {
    let dir = Dir(std::env::temp_dir().join(format!("hygiene-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let ca = TestCa::new().unwrap();
    ca.svid("default", "order-service")
        .unwrap()
        .write_istio_files(&dir.0, &ca)
        .unwrap();
    let policy = dir.0.join("policy.yaml");
    std::fs::write(&policy, permissive_policy(&dir.0)).unwrap();
    let service = Service::start(&["--policy", policy.to_str().unwrap()]).await;
    assert_eq!(
        fresh_request(service.addr).await,
        200,
        "plaintext on PERMISSIVE"
    );

    // One plaintext byte each: no longer enough to hold a connection.
    let mut one_byte = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(service.addr).await.unwrap();
        s.write_all(b"G").await.unwrap();
        one_byte.push(s);
    }
    // Nothing at all: the first-byte timeout (10 s by default) ends these.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(service.addr).await.unwrap());
    }
    // Handshaken mTLS connections that then say nothing: the idle timeout ends them.
    let client = mesh_tower::identity::client_config(
        &cert_source(&ca, "frontend"),
        Some(&cert_source(&ca, "frontend")),
        Vec::new(),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client));
    let mut tls_silent = Vec::new();
    for _ in 0..20 {
        let tcp = TcpStream::connect(service.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("order-service").unwrap();
        tls_silent.push(connector.connect(name, tcp).await.unwrap());
    }
    assert_eq!(fresh_request(service.addr).await, 200);

    let within = Duration::from_secs(HEADER_TIMEOUT_SECS + 20);
    assert_eq!(count_closed(one_byte, within).await, 200);
    assert_eq!(count_closed(silent, Duration::from_secs(30)).await, 50);
    let mut closed = 0;
    for mut s in tls_silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            Duration::from_secs(IDLE_TIMEOUT_SECS + 20),
            s.read(&mut buf),
        )
        .await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 20,
        "silent mTLS peers were held past the idle timeout"
    );
}

fn cert_source(ca: &TestCa, sa: &str) -> mesh_tower::identity::CertificateSource {
    let issued = ca.svid("default", sa).unwrap();
    mesh_tower::identity::CertificateSource::in_memory(
        issued.identity().unwrap(),
        ca.bundle().unwrap(),
    )
}
