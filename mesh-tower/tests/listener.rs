//! The inbound listener over real sockets and real handshakes: STRICT, PERMISSIVE,
//! DISABLE, the peer's identity in the handler, and certificate rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use mesh_core::inbound::TlsMode;
use mesh_tower::identity::testing::SvidSpec;
use mesh_tower::identity::{CertificateSource, FileWatcherConfig, SourceEvent};

#[tokio::test]
async fn strict_rejects_plaintext_and_certless_clients() {
    let m = mesh();
    let server = start(policy(TlsMode::Strict), Some(m.payment.clone()), app()).await;

    let plain = get_once(server.addr, None, "/whoami").await;
    assert!(plain.is_err(), "plaintext must be refused: {plain:?}");

    let certless = get_once(server.addr, Some(client_tls(&m.order, None)), "/whoami").await;
    assert!(
        certless.is_err(),
        "a client without a certificate must be refused: {certless:?}"
    );

    let (status, body) = get_once(
        server.addr,
        Some(client_tls(&m.order, Some(&m.order))),
        "/whoami",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!("{ORDER} tls"),
        "the peer's SPIFFE ID reaches the handler"
    );
}

#[tokio::test]
async fn strict_rejects_a_client_certificate_from_another_ca() {
    let m = mesh();
    let server = start(policy(TlsMode::Strict), Some(m.payment.clone()), app()).await;
    let rogue_ca = mesh_tower::identity::testing::TestCa::new().unwrap();
    let rogue = CertificateSource::in_memory(
        rogue_ca
            .svid("default", "order-service")
            .unwrap()
            .identity()
            .unwrap(),
        m.ca.bundle().unwrap(),
    );
    let r = get_once(
        server.addr,
        Some(client_tls(&m.order, Some(&rogue))),
        "/whoami",
    )
    .await;
    assert!(
        r.is_err(),
        "an SVID from an unknown CA must be refused: {r:?}"
    );
}

#[tokio::test]
async fn permissive_serves_mtls_and_plaintext_on_one_port() {
    let m = mesh();
    let server = start(policy(TlsMode::Permissive), Some(m.payment.clone()), app()).await;

    let (status, body) = get_once(server.addr, None, "/whoami").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "none plain"));

    let (status, body) = get_once(
        server.addr,
        Some(client_tls(&m.order, Some(&m.other))),
        "/whoami",
    )
    .await
    .unwrap();
    assert_eq!((status, body), (StatusCode::OK, format!("{OTHER} tls")));

    // TLS without a client certificate is allowed too, without identity.
    let (_, body) = get_once(server.addr, Some(client_tls(&m.order, None)), "/whoami")
        .await
        .unwrap();
    assert_eq!(body, "none tls");
}

#[tokio::test]
async fn disable_serves_plaintext_only() {
    let m = mesh();
    let server = start(policy(TlsMode::Disable), Some(m.payment.clone()), app()).await;
    let (_, body) = get_once(server.addr, None, "/whoami").await.unwrap();
    assert_eq!(body, "none plain");
    let tls = get_once(
        server.addr,
        Some(client_tls(&m.order, Some(&m.order))),
        "/whoami",
    )
    .await;
    assert!(tls.is_err(), "TLS on a DISABLE port fails: {tls:?}");
}

#[tokio::test]
async fn without_policy_or_certificates_the_listener_is_plaintext() {
    let server = start(
        mesh_core::live::LivePolicy::new(mesh_core::snapshot::Snapshot::empty()),
        None,
        app(),
    )
    .await;
    let (_, body) = get_once(server.addr, None, "/whoami").await.unwrap();
    assert_eq!(body, "none plain");
}

#[tokio::test]
async fn strict_without_certificates_fails_closed() {
    let server = start(policy(TlsMode::Strict), None, app()).await;
    assert!(get_once(server.addr, None, "/whoami").await.is_err());
}

#[tokio::test]
async fn a_policy_change_applies_to_new_connections() {
    let m = mesh();
    let live = policy(TlsMode::Permissive);
    let server = start(live.clone(), Some(m.payment.clone()), app()).await;
    let mut kept = connect(server.addr, None).await.unwrap();
    assert_eq!(kept.get("/whoami").await.unwrap().0, StatusCode::OK);

    live.publish(
        mesh_core::snapshot::Snapshot::builder()
            .inbound_default(Some(mesh_core::inbound::InboundPolicy::new(
                TlsMode::Strict,
            )))
            .build(),
    );
    assert!(
        get_once(server.addr, None, "/whoami").await.is_err(),
        "new plaintext refused"
    );
    assert_eq!(
        kept.get("/whoami").await.unwrap().0,
        StatusCode::OK,
        "old connection kept"
    );
}

#[tokio::test]
async fn a_silent_client_does_not_stall_others() {
    let m = mesh();
    let server = start(policy(TlsMode::Permissive), Some(m.payment.clone()), app()).await;
    // Connects and says nothing: its handshake waits in its own task.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (_, body) = get_once(
        server.addr,
        Some(client_tls(&m.order, Some(&m.order))),
        "/whoami",
    )
    .await
    .unwrap();
    assert_eq!(body, format!("{ORDER} tls"));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_never_spoke() {
    let m = mesh();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // An hour to finish a handshake: only shutdown can end the silent client's wait.
    let serving = tokio::spawn(
        mesh_tower::inbound::MeshListener::new(
            listener,
            policy(TlsMode::Permissive),
            Some(m.payment.clone()),
        )
        .with_handshake_timeout(Duration::from_secs(3600))
        .serve(app(), async move {
            let _ = stopped.await;
        }),
    );
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A real request first, so the silent connection has surely been accepted.
    let (_, body) = get_once(addr, None, "/whoami").await.unwrap();
    assert!(body.ends_with("plain"), "{body}");
    stop.send(()).unwrap();
    // Hang guard only: without the fix this waits for the hour-long handshake timeout.
    tokio::time::timeout(Duration::from_secs(60), serving)
        .await
        .expect("serve returned after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn rotation_swaps_the_certificate_without_failing_a_request() {
    let m = mesh();
    let server = start(policy(TlsMode::Strict), Some(m.payment.clone()), app()).await;
    let tls = client_tls(&m.order, Some(&m.order));
    let mut existing = connect(server.addr, Some(tls.clone())).await.unwrap();
    let old_serial = m.payment.identity().serial().to_owned();
    assert_eq!(existing.server_serial.as_deref(), Some(old_serial.as_str()));

    let mut watch = m.payment.watch();
    let new = m
        .ca
        .issue(&SvidSpec::istio("cluster.local", "default", "payment-service").with_serial(77_777))
        .unwrap();
    m.payment.update(new.identity().unwrap(), None);
    match watch.changed().await {
        SourceEvent::Reloaded(id) => assert_eq!(id.serial(), new.serial),
        other => panic!("expected a reload, got {other:?}"),
    }
    for _ in 0..5 {
        let (status, _) = existing.get("/whoami").await.unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "the existing connection keeps serving"
        );
    }
    // A new client config: the old one would resume its TLS session, certificate and all.
    let fresh = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(fresh.server_serial.as_deref(), Some(new.serial.as_str()));
    drop(tls);
}

#[tokio::test]
async fn file_watcher_reloads_changed_files_and_keeps_the_last_good_on_corruption() {
    let m = mesh();
    let dir = TempDir::new("file-watcher");
    let first = m.ca.svid("default", "payment-service").unwrap();
    first.write_istio_files(&dir.0, &m.ca).unwrap();
    let source = CertificateSource::file_watcher(
        FileWatcherConfig::istio(&dir.0).with_refresh_interval(Duration::from_millis(20)),
    )
    .unwrap();
    assert_eq!(source.identity().serial(), first.serial);
    assert_eq!(source.identity().spiffe_id().as_str(), PAYMENT);
    let server = start(policy(TlsMode::Strict), Some(source.clone()), app()).await;
    let mut existing = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(
        existing.server_serial.as_deref(),
        Some(first.serial.as_str())
    );

    // A rotation on disk is picked up without restart.
    let mut watch = source.watch();
    let second = m.ca.svid("default", "payment-service").unwrap();
    second.write_istio_files(&dir.0, &m.ca).unwrap();
    match watch.changed().await {
        SourceEvent::Reloaded(id) => assert_eq!(id.serial(), second.serial),
        other => panic!("expected a reload, got {other:?}"),
    }
    assert_eq!(existing.get("/whoami").await.unwrap().0, StatusCode::OK);
    // New client configs below: a reused one would resume its TLS session.
    let fresh = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(fresh.server_serial.as_deref(), Some(second.serial.as_str()));

    // A corrupt new chain is reported and the last good certificate stays in service.
    mesh_tower::identity::testing::write_atomically(
        &dir.0.join(mesh_tower::identity::ISTIO_CERT_CHAIN),
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    match watch.changed().await {
        SourceEvent::Failed(e) => assert!(e.to_string().contains("cert-chain.pem"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(source.last_error().is_some());
    assert_eq!(source.identity().serial(), second.serial);
    let after = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(after.server_serial.as_deref(), Some(second.serial.as_str()));
    assert_eq!(existing.get("/whoami").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_key_that_does_not_match_the_chain_is_rejected() {
    let m = mesh();
    let dir = TempDir::new("mismatch");
    let a = m.ca.svid("default", "payment-service").unwrap();
    let b = m.ca.svid("default", "payment-service").unwrap();
    a.write_istio_files(&dir.0, &m.ca).unwrap();
    std::fs::write(dir.0.join("key.pem"), &b.key_pem).unwrap();
    let err = CertificateSource::file_watcher(FileWatcherConfig::istio(&dir.0)).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let missing = CertificateSource::file_watcher(FileWatcherConfig::istio(&dir.0.join("nope")));
    assert!(missing.unwrap_err().to_string().contains("cert-chain.pem"));
}
