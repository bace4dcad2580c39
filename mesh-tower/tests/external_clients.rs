//! Peers nobody here wrote: `curl` and `openssl s_client` with SPIFFE client
//! certificates against a STRICT listener, and the mesh's client against `openssl
//! s_server`. Skipped, with a notice, when the binary is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use mesh_core::inbound::TlsMode;
use mesh_tower::identity::testing::SvidSpec;
use mesh_tower::identity::CertificateSource;
use rustls::pki_types::ServerName;
use rustls::CipherSuite;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::TlsConnector;

async fn available(binary: &str, version_arg: &str) -> bool {
    let found = Command::new(binary).arg(version_arg).output().await.is_ok();
    if !found {
        println!("NOTICE: {binary} not found; skipping this test");
    }
    found
}

/// A STRICT server whose SVID also names `localhost` (curl insists on a host name check),
/// and the order service's files (cert, key, root) in `dir`.
async fn strict_server(dir: &Path) -> Server {
    let m = mesh();
    let server_cert =
        m.ca.issue(
            &SvidSpec::istio("cluster.local", "default", "payment-service")
                .with_dns_name("localhost"),
        )
        .unwrap();
    let source =
        CertificateSource::in_memory(server_cert.identity().unwrap(), m.ca.bundle().unwrap());
    let order = m.ca.svid("default", "order-service").unwrap();
    order.write_istio_files(dir, &m.ca).unwrap();
    start(policy(TlsMode::Strict), Some(source), app()).await
}

#[tokio::test]
async fn curl_succeeds_with_a_client_svid_and_fails_without() {
    if !available("curl", "--version").await {
        return;
    }
    let dir = TempDir::new("curl");
    let server = strict_server(&dir.0).await;
    let url = format!("https://localhost:{}/whoami", server.addr.port());
    let f = |name: &str| dir.0.join(name);
    let with_cert = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", server.addr.port()))
        .arg("--cacert")
        .arg(f("root-cert.pem"))
        .arg("--cert")
        .arg(f("cert-chain.pem"))
        .arg("--key")
        .arg(f("key.pem"))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(
        with_cert.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&with_cert.stdout),
        format!("{ORDER} tls")
    );

    let without = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", server.addr.port()))
        .arg("--cacert")
        .arg(f("root-cert.pem"))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(
        !without.status.success(),
        "curl without a client certificate must fail"
    );
    assert!(!String::from_utf8_lossy(&without.stdout).contains("spiffe://"));
}

async fn s_client(addr: std::net::SocketAddr, dir: &Path, with_cert: bool) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(dir.join("root-cert.pem"))
        .args(["-verify_return_error", "-ign_eof", "-quiet"]);
    if with_cert {
        cmd.arg("-cert")
            .arg(dir.join("cert-chain.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET /whoami HTTP/1.1\r\nHost: payment\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn openssl_s_client_gets_through_only_with_a_client_svid() {
    if !available("openssl", "version").await {
        return;
    }
    let dir = TempDir::new("s-client");
    let server = strict_server(&dir.0).await;
    let (_, out) = s_client(server.addr, &dir.0, true).await;
    assert!(out.contains("200 OK"), "s_client output: {out}");
    assert!(
        out.contains(&format!("{ORDER} tls")),
        "s_client output: {out}"
    );

    let (_, out) = s_client(server.addr, &dir.0, false).await;
    assert!(!out.contains("200 OK"), "without a certificate: {out}");
}

/// `openssl s_server` keeps OpenSSL's own suite order (AES-256-GCM first) and, by default,
/// follows the client's. The mesh's client offers AES-128-GCM first, as Envoy's BoringSSL
/// does, so that is what a server that follows the client agrees on; rustls alone would
/// have got AES-256-GCM. s_server's status page says what it agreed to from its side.
#[tokio::test]
async fn the_mesh_client_agrees_aes_128_gcm_with_openssl_s_server() {
    if !available("openssl", "version").await {
        return;
    }
    let dir = TempDir::new("s-server");
    let m = mesh();
    let payment = m.ca.svid("default", "payment-service").unwrap();
    payment.write_istio_files(&dir.0, &m.ca).unwrap();
    let mut server = Command::new("openssl")
        .args(["s_server", "-www", "-naccept", "1"])
        .args(["-accept", "127.0.0.1:0", "-cert"])
        .arg(dir.0.join("cert-chain.pem"))
        .arg("-key")
        .arg(dir.0.join("key.pem"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("s_server exited before it listened");
        if let Some(addr) = line.strip_prefix("ACCEPT ") {
            break addr.trim().parse().unwrap();
        }
    };

    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("payment.default.svc.cluster.local").unwrap();
    let mut tls = TlsConnector::from(client_tls(&m.payment, Some(&m.order)))
        .connect(name, tcp)
        .await
        .unwrap();
    let agreed = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(agreed, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));

    tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut page = Vec::new();
    // s_server may close without close_notify: what came before counts.
    let _ = tls.read_to_end(&mut page).await;
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "s_server's page: {page}"
    );
}
