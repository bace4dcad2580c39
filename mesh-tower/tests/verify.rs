//! Outbound server verification: every rejection says why, over a real handshake through
//! `MeshTls` and directly on the chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use mesh_core::cluster::{CertificateInstance, Cluster, UpstreamTls};
use mesh_core::identity::TrustDomain;
use mesh_core::inbound::TlsMode;
use mesh_core::matcher::StringMatcher;
use mesh_tower::identity::testing::{Eku, IssuedCert, SvidSpec, TestCa};
use mesh_tower::identity::{
    verify_server_chain, CertificateSource, MeshTls, SvidProblem, UpstreamTlsError, VerifyError,
};
use mesh_tower::outbound::{TlsProvider, UpstreamTlsConnect};

fn cluster(accepted: Vec<StringMatcher>) -> Cluster {
    let mut c = Cluster::new("outbound|8080||payment.default.svc.cluster.local");
    c.service = Some("payment.default.svc.cluster.local".to_owned());
    c.tls = Some(UpstreamTls {
        sni: None,
        accepted_sans: accepted,
        identity: Some(CertificateInstance::new("default", "default")),
        roots: Some(CertificateInstance::new("default", "ROOTCA")),
    });
    c
}

fn payment_only() -> Vec<StringMatcher> {
    vec![StringMatcher::exact(PAYMENT)]
}

/// Serves `cert` (PERMISSIVE: no client certificate needed) and dials it through a fresh
/// `MeshTls` connector (fresh, so no TLS session is resumed).
async fn dial(
    m: &Mesh,
    cert: &IssuedCert,
    accepted: Vec<StringMatcher>,
) -> Result<bool, UpstreamTlsError> {
    let served = CertificateSource::in_memory(cert.identity().unwrap(), m.ca.bundle().unwrap());
    let server = start(policy(TlsMode::Permissive), Some(served), app()).await;
    let connector: Arc<dyn UpstreamTlsConnect> = MeshTls::new(m.order.clone())
        .connector_for(&cluster(accepted))
        .unwrap()
        .expect("the cluster has TLS");
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    match connector.connect(tcp, &server.addr.to_string()).await {
        Ok(connected) => Ok(connected.h2),
        Err(e) => Err(*e.downcast::<UpstreamTlsError>().expect("a typed TLS error")),
    }
}

async fn rejection(m: &Mesh, cert: &IssuedCert, accepted: Vec<StringMatcher>) -> VerifyError {
    match dial(m, cert, accepted).await {
        Err(UpstreamTlsError::Verify { source, .. }) => source,
        other => panic!("expected a verification error, got {other:?}"),
    }
}

fn direct(m: &Mesh, cert: &IssuedCert, accepted: &[StringMatcher]) -> Result<String, VerifyError> {
    let bundle =
        m.ca.bundle()
            .unwrap()
            .with_trust_domain(Some(TrustDomain::new("cluster.local").unwrap()));
    verify_server_chain(&bundle, std::slice::from_ref(&cert.der), accepted).map(|id| id.to_string())
}

fn issue(m: &Mesh, spec: SvidSpec) -> IssuedCert {
    m.ca.issue(&spec).unwrap()
}

fn payment_spec() -> SvidSpec {
    SvidSpec::istio("cluster.local", "default", "payment-service")
}

#[tokio::test]
async fn a_uri_san_only_svid_is_accepted_and_h2_negotiated() {
    let m = mesh();
    let cert = issue(&m, payment_spec());
    assert!(
        dial(&m, &cert, payment_only()).await.unwrap(),
        "h2 negotiated"
    );
    assert_eq!(direct(&m, &cert, &payment_only()).unwrap(), PAYMENT);
}

#[tokio::test]
async fn expired_is_rejected_as_expired() {
    let m = mesh();
    let cert = issue(&m, payment_spec().expired());
    assert!(matches!(
        rejection(&m, &cert, payment_only()).await,
        VerifyError::Expired { .. }
    ));
    assert!(matches!(
        direct(&m, &cert, &[]),
        Err(VerifyError::Expired { .. })
    ));
}

#[tokio::test]
async fn not_yet_valid_is_rejected_as_such() {
    let m = mesh();
    let cert = issue(&m, payment_spec().not_yet_valid());
    let e = rejection(&m, &cert, payment_only()).await;
    assert!(matches!(e, VerifyError::NotYetValid { .. }), "{e}");
    assert!(e.to_string().contains("not valid yet"));
}

#[tokio::test]
async fn a_client_only_eku_is_the_wrong_key_usage() {
    let m = mesh();
    let cert = issue(&m, payment_spec().with_eku(Eku::ClientOnly));
    let e = rejection(&m, &cert, payment_only()).await;
    assert!(matches!(e, VerifyError::WrongKeyUsage(_)), "{e}");
}

#[tokio::test]
async fn a_key_usage_without_digital_signature_is_the_wrong_key_usage() {
    let m = mesh();
    let cert = issue(&m, payment_spec().without_digital_signature());
    let e = rejection(&m, &cert, payment_only()).await;
    assert!(
        matches!(&e, VerifyError::WrongKeyUsage(r) if r.contains("digitalSignature")),
        "{e}"
    );
}

#[tokio::test]
async fn another_trust_domain_is_named_as_such() {
    let m = mesh();
    let cert = issue(
        &m,
        SvidSpec::istio("other.domain", "default", "payment-service"),
    );
    let e = rejection(&m, &cert, payment_only()).await;
    match &e {
        VerifyError::WrongTrustDomain { seen, expected, .. } => {
            assert_eq!(
                (seen.as_str(), expected.as_str()),
                ("other.domain", "cluster.local")
            );
        }
        other => panic!("expected a trust domain error, got {other}"),
    }
    // Even with no SAN matchers: only our trust domain is trusted.
    assert!(matches!(
        direct(&m, &cert, &[]),
        Err(VerifyError::WrongTrustDomain { .. })
    ));
}

#[tokio::test]
async fn another_service_account_is_a_san_mismatch_naming_both() {
    let m = mesh();
    let cert = issue(
        &m,
        SvidSpec::istio("cluster.local", "default", "other-service"),
    );
    match rejection(&m, &cert, payment_only()).await {
        VerifyError::SanMismatch { seen, accepted } => {
            assert_eq!(seen, OTHER);
            assert_eq!(accepted, vec![format!("exact:{PAYMENT}")]);
        }
        other => panic!("expected a SAN mismatch, got {other}"),
    }
}

#[tokio::test]
async fn an_unknown_issuer_is_rejected_as_such() {
    let m = mesh();
    let rogue = TestCa::new().unwrap();
    let cert = rogue.issue(&payment_spec()).unwrap();
    // The rogue CA even carries the same name as ours: only its key differs.
    assert_eq!(
        rejection(&m, &cert, payment_only()).await,
        VerifyError::UnknownIssuer
    );
}

#[test]
fn a_certificate_without_spiffe_id_is_not_an_svid() {
    let m = mesh();
    let mut spec = payment_spec().with_dns_name("payment.default.svc.cluster.local");
    spec.uri_sans.clear();
    let cert = issue(&m, spec);
    // It cannot even be loaded as a server identity, so check the chain directly.
    assert!(cert.identity().is_err());
    assert_eq!(
        direct(&m, &cert, &[]),
        Err(VerifyError::NotAnSvid(SvidProblem::NoUriSan))
    );
}

#[test]
fn every_matcher_kind_applies_to_the_uri_san() {
    let m = mesh();
    let cert = issue(&m, payment_spec());
    let accept = |matcher: StringMatcher| direct(&m, &cert, &[matcher]).is_ok();
    assert!(accept(StringMatcher::exact(PAYMENT)));
    assert!(accept(StringMatcher::prefix(
        "spiffe://cluster.local/ns/default/"
    )));
    assert!(accept(StringMatcher::suffix("/sa/payment-service")));
    assert!(accept(StringMatcher::contains("/ns/default/")));
    assert!(accept(
        StringMatcher::regex(r"spiffe://cluster\.local/ns/[a-z]+/sa/payment-.*").unwrap()
    ));
    assert!(!accept(StringMatcher::exact(ORDER)));
    assert!(!accept(StringMatcher::prefix(
        "spiffe://cluster.local/ns/prod/"
    )));
    assert!(!accept(StringMatcher::suffix("/sa/order-service")));
    assert!(!accept(StringMatcher::contains("/ns/prod/")));
    assert!(!accept(StringMatcher::regex(r".*/sa/order-.*").unwrap()));
    // Empty: any SPIFFE ID of the trust domain.
    assert_eq!(direct(&m, &cert, &[]).unwrap(), PAYMENT);
}

#[test]
fn mesh_tls_fails_closed_on_missing_roots_or_instances() {
    let m = mesh();
    let tls = MeshTls::new(m.order.clone());
    let mut no_roots = cluster(payment_only());
    if let Some(t) = no_roots.tls.as_mut() {
        t.roots = None;
    }
    assert!(tls
        .connector_for(&no_roots)
        .err()
        .unwrap()
        .contains("refusing"));
    let mut unknown = cluster(payment_only());
    if let Some(t) = unknown.tls.as_mut() {
        t.identity = Some(CertificateInstance::new("vault", "default"));
    }
    assert!(tls
        .connector_for(&unknown)
        .err()
        .unwrap()
        .contains("\"vault\""));
    assert!(tls
        .connector_for(&Cluster::new("plaintext"))
        .unwrap()
        .is_none());
}
