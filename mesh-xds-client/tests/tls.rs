//! TLS channel credentials to the control plane (gRPC's `tls` creds with A65's file
//! names), against the test server over real rustls handshakes on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use mesh_xds_client::ads::ResourceState;
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource};
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::*;
use mesh_xds_client::testing::{wait_for_view, TestAdsServer};
use mesh_xds_client::transport::{Backoff, ClientView, XdsClient, XdsClientConfig};

/// Long enough never to be hit by a healthy test; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A CA and a leaf it signed, as PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-xds-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test CA {name}"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Self {
            dir,
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a leaf for `localhost`; writes `{name}.pem` and `{name}.key`.
    fn leaf(&self, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        (
            cert.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(pki: &Pki, client_auth: bool) -> rustls::ServerConfig {
    let (cert, key) = pki.leaf("server");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(vec![cert], key).unwrap()
}

fn serve_cascade(server: &TestAdsServer) {
    server.put(XdsType::Listener, "svc", listener_rds("svc", "route"));
    server.put(
        XdsType::RouteConfiguration,
        "route",
        route_config("route", "c"),
    );
    server.put(XdsType::Cluster, "c", cluster_eds("c", Some("c-eds")));
    server.put(
        XdsType::ClusterLoadAssignment,
        "c-eds",
        endpoints("c-eds", &["10.0.0.1:80".parse().unwrap()]),
    );
}

fn bootstrap(server: &TestAdsServer, tls_config: &str) -> Bootstrap {
    let json = format!(
        r#"{{"xds_servers":[{{"server_uri":"localhost:{}",
            "channel_creds":[{{"type":"tls","config":{tls_config}}}]}}],"node":{{"id":"n"}}}}"#,
        server.addr().unwrap().port()
    );
    Bootstrap::from_json(&json, BootstrapSource::Inline).unwrap()
}

fn files(ca: &Path, leaf: Option<(&Path, &Path)>) -> String {
    match leaf {
        None => format!(r#"{{"ca_certificate_file":"{}"}}"#, ca.display()),
        Some((cert, key)) => format!(
            r#"{{"ca_certificate_file":"{}","certificate_file":"{}","private_key_file":"{}"}}"#,
            ca.display(),
            cert.display(),
            key.display()
        ),
    }
}

fn config() -> XdsClientConfig {
    XdsClientConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ))
}

fn all_acked(view: &ClientView) -> bool {
    view.cache.len() == 4
        && view
            .cache
            .iter()
            .all(|(_, _, e)| e.state == ResourceState::Acked)
}

async fn wait_view(client: &XdsClient, pred: impl FnMut(&ClientView) -> bool) -> Arc<ClientView> {
    match wait_for_view(client, PATIENCE, pred).await {
        Some(view) => view,
        None => panic!("condition not reached; last view: {:#?}", client.view()),
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_gets_the_cascade() {
    let pki = Pki::new("right");
    let server = TestAdsServer::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        server_config(&pki, false),
        &pki.ca_file(),
    )
    .await
    .unwrap();
    serve_cascade(&server);
    let client =
        XdsClient::from_bootstrap(&bootstrap(&server, &files(&pki.ca_file(), None)), config())
            .unwrap();
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, all_acked).await;
    assert!(view.connected);
    assert_eq!(server.streams_opened(), 1);
    client.shutdown().await;

    // The server's own entry (tls creds naming its CA) works as well.
    let client = XdsClient::start(
        server.xds_server(),
        mesh_xds_client::bootstrap::NodeConfig::new("n").to_proto(),
        config(),
    );
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;
    client.shutdown().await;
}

#[tokio::test]
async fn tls_with_the_wrong_ca_fails_with_a_clear_error() {
    let pki = Pki::new("server-side");
    let other = Pki::new("other");
    let server = TestAdsServer::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        server_config(&pki, false),
        &pki.ca_file(),
    )
    .await
    .unwrap();
    serve_cascade(&server);
    let client = XdsClient::from_bootstrap(
        &bootstrap(&server, &files(&other.ca_file(), None)),
        config(),
    )
    .unwrap();
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, |v| v.last_error.is_some()).await;
    let error = view.last_error.clone().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(!view.connected);
    assert!(view.cache.iter().all(|(_, _, e)| e.resource.is_none()));
    assert_eq!(server.streams_opened(), 0);
    client.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new("mtls");
    let server = TestAdsServer::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        server_config(&pki, true),
        &pki.ca_file(),
    )
    .await
    .unwrap();
    serve_cascade(&server);
    pki.leaf("client");
    let (cert, key) = (pki.dir.join("client.pem"), pki.dir.join("client.key"));
    let with_cert = files(&pki.ca_file(), Some((&cert, &key)));
    let client = XdsClient::from_bootstrap(&bootstrap(&server, &with_cert), config()).unwrap();
    client.add_target("svc").await.unwrap();
    wait_view(&client, all_acked).await;
    client.shutdown().await;

    // Without a certificate the server refuses the handshake and no stream opens.
    let client =
        XdsClient::from_bootstrap(&bootstrap(&server, &files(&pki.ca_file(), None)), config())
            .unwrap();
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, |v| v.last_error.is_some()).await;
    assert!(!view.connected, "{view:#?}");
    assert_eq!(server.streams_opened(), 1, "only the first client's stream");
    client.shutdown().await;
}

#[tokio::test]
async fn a_missing_ca_file_is_named_in_the_error() {
    let server = TestAdsServer::start().await.unwrap();
    let client = XdsClient::from_bootstrap(
        &bootstrap(&server, r#"{"ca_certificate_file":"/nonexistent/ca.pem"}"#),
        config(),
    )
    .unwrap();
    client.add_target("svc").await.unwrap();
    let view = wait_view(&client, |v| v.last_error.is_some()).await;
    let error = view.last_error.clone().unwrap();
    assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    client.shutdown().await;
}
