//! The order and payment services with STRICT mTLS and SPIFFE identities between them, and
//! the seed guide's `payment-access` policy (for gRPC: the payment methods) on the payment
//! service. Certificates are issued in the test, written in Istio's file layout.

use std::path::{Path, PathBuf};

use example_common::{BackgroundServer, BoxError, MeshArgs};
use http::StatusCode;
use mesh_tower::identity::testing::TestCa;
use order_service::client::OrderClient;
use order_service::Config;
use serde_json::Value;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn certs_yaml(dir: &Path) -> String {
    format!(
        "certificates:\n  certificateFile: {0}/cert-chain.pem\n  privateKeyFile: {0}/key.pem\n  caCertificateFile: {0}/root-cert.pem\n",
        dir.display()
    )
}

fn payment_policy(certs: &Path) -> String {
    format!(
        r#"{certs}workload:
  name: payment-service
  serviceAccount: payment-service
  labels: {{ app: payment-service }}
peerAuthentications:
  - metadata: {{ name: default, namespace: default }}
    spec:
      mtls: {{ mode: STRICT }}
authorizationPolicies:
  - metadata: {{ name: payment-access, namespace: default }}
    spec:
      selector:
        matchLabels: {{ app: payment-service }}
      rules:
        - from:
            - source:
                principals:
                  - cluster.local/ns/default/sa/order-service
                  - cluster.local/ns/default/sa/checkout-service
          to:
            - operation:
                methods: ['POST']
                paths: ['/payment.v1.PaymentService/*']
"#,
        certs = certs_yaml(certs)
    )
}

fn order_policy(certs: &Path, payment: std::net::SocketAddr) -> String {
    format!(
        r#"{certs}services:
  - name: payment-service
    ports: [{{ port: 8080, name: grpc }}]
    serviceAccounts: [payment-service]
    endpoints:
      - {{ address: "{payment}", labels: {{ version: v1 }} }}
"#,
        certs = certs_yaml(certs)
    )
}

async fn order_service(
    root: &Path,
    sa: &str,
    ca: &TestCa,
    payment: std::net::SocketAddr,
) -> Result<(BackgroundServer<order_service::Error>, OrderClient), BoxError> {
    let dir = root.join(sa);
    ca.svid("default", sa)?.write_istio_files(&dir, ca)?;
    let file = root.join(format!("{sa}.yaml"));
    std::fs::write(&file, order_policy(&dir, payment))?;
    let mut mesh = MeshArgs::default();
    mesh.policy = Some(file);
    let config = Config::new("payment-service:8080".parse()?).with_mesh(mesh);
    let server = BackgroundServer::start(|l, stop| order_service::run(config, l, stop)).await?;
    let client = OrderClient::new(&format!("http://{}", server.addr()))?;
    Ok((server, client))
}

#[tokio::test]
async fn strict_mtls_and_payment_access_between_the_services() -> Result<(), BoxError> {
    let root = Dir(std::env::temp_dir().join(format!("mesh-mtls-{}", std::process::id())));
    std::fs::create_dir_all(&root.0)?;
    let ca = TestCa::new()?;

    let pay_dir = root.0.join("payment-service");
    ca.svid("default", "payment-service")?
        .write_istio_files(&pay_dir, &ca)?;
    let pay_file = root.0.join("payment.yaml");
    std::fs::write(&pay_file, payment_policy(&pay_dir))?;
    let mut mesh = MeshArgs::default();
    mesh.policy = Some(pay_file);
    let mut pay_config = payment_service::Config::default();
    pay_config.mesh = mesh;
    let payment =
        BackgroundServer::start(|l, stop| payment_service::run(pay_config, l, stop)).await?;

    // The order service's identity is allowed: orders are paid over mTLS.
    let (order, client) = order_service(&root.0, "order-service", &ca, payment.addr()).await?;
    for _ in 0..5 {
        let reply = client.create_order("book", 100, None).await?;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    // Another identity, same CA, same mesh: denied by payment-access.
    let (intruder, bad_client) = order_service(&root.0, "intruder", &ca, payment.addr()).await?;
    let reply = bad_client.create_order("book", 100, None).await?;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.body);
    let body: Value = reply.json()?;
    assert_eq!(body["grpc_status"], "PERMISSION_DENIED", "{body}");

    // A plaintext caller (no mesh certificates) cannot even connect under STRICT.
    let plain_config = Config::new(payment.addr().to_string().parse()?);
    let plain =
        BackgroundServer::start(|l, stop| order_service::run(plain_config, l, stop)).await?;
    let plain_client = OrderClient::new(&format!("http://{}", plain.addr()))?;
    let reply = plain_client.create_order("book", 100, None).await?;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.body);

    plain.stop().await?;
    intruder.stop().await?;
    order.stop().await?;
    payment.stop().await?;
    Ok(())
}
