//! A tonic-generated client on the mesh's channel (`mesh.channel("payment-service:8080")`):
//! unary and server-streaming calls, retries hiding a failing replica, and the circuit
//! breaker answering `UNAVAILABLE`.

use example_common::{BackgroundServer, BoxError};
use mesh_core::policy_file::PolicyFile;
use mesh_tower::Mesh;
use payment_api::{AuthorizeRequest, ListPaymentsRequest, PaymentServiceClient};
use payment_service::Config;

fn policy(endpoints: &[std::net::SocketAddr], extra_route: &str, extra_dr: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("      - {{ address: \"{a}\" }}\n"))
        .collect();
    format!(
        r#"
services:
  - name: payment-service
    ports: [{{ port: 8080, name: grpc }}]
    endpoints:
{eps}destinationRules:
  - spec:
      host: payment-service
{extra_dr}virtualServices:
  - spec:
      hosts: [payment-service]
      http:
        - route: [{{ destination: {{ host: payment-service }} }}]
{extra_route}"#
    )
}

fn mesh(text: &str) -> Result<Mesh, BoxError> {
    let snap = PolicyFile::parse(text, "test.yaml")?.to_snapshot("test.yaml")?;
    Ok(Mesh::builder().snapshot(snap).build()?)
}

fn sale(order: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        order_id: order.into(),
        amount_cents: 100,
        currency: "USD".into(),
        capture: true,
    }
}

#[tokio::test]
async fn unary_and_server_streaming_calls_through_the_channel() -> Result<(), BoxError> {
    let server =
        BackgroundServer::start(|l, stop| payment_service::run(Config::default(), l, stop)).await?;
    let mesh = mesh(&policy(&[server.addr()], "", ""))?;
    let mut client = PaymentServiceClient::new(mesh.channel("xds:///payment-service:8080"));
    for i in 0..3 {
        let paid = client.authorize(sale(&format!("ord-{i}"))).await?;
        assert!(!paid.get_ref().payment_id.is_empty());
    }
    let mut stream = client
        .list_payments(ListPaymentsRequest { limit: 0 })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await? {
        seen.push(p.order_id);
    }
    seen.sort();
    assert_eq!(seen, ["ord-0", "ord-1", "ord-2"]);
    server.stop().await
}

#[tokio::test]
async fn retries_hide_a_replica_that_always_fails() -> Result<(), BoxError> {
    let good =
        BackgroundServer::start(|l, stop| payment_service::run(Config::default(), l, stop)).await?;
    let bad_config = Config::default().with_fail_rate(1.0)?;
    let bad = BackgroundServer::start(|l, stop| payment_service::run(bad_config, l, stop)).await?;
    let retries = "          retries: { attempts: 3, retryOn: unavailable }\n";
    let mesh = mesh(&policy(&[good.addr(), bad.addr()], retries, ""))?;
    let mut client = PaymentServiceClient::new(mesh.channel("payment-service:8080"));
    for i in 0..40 {
        client.authorize(sale(&format!("ord-{i}"))).await?;
    }
    good.stop().await?;
    bad.stop().await
}

#[tokio::test]
async fn breaker_answers_unavailable_at_once() -> Result<(), BoxError> {
    let slow_config = Config::default().with_latency(std::time::Duration::from_millis(200));
    let slow =
        BackgroundServer::start(|l, stop| payment_service::run(slow_config, l, stop)).await?;
    let pool =
        "      trafficPolicy:\n        connectionPool:\n          http: { http2MaxRequests: 1 }\n";
    let mesh = mesh(&policy(&[slow.addr()], "", pool))?;
    // A burst of 8 concurrent calls against a limit of 1: at least one is served, the
    // others are shed by the breaker with UNAVAILABLE rather than queued.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut client = PaymentServiceClient::new(mesh.channel("payment-service:8080"));
            tokio::spawn(async move { client.authorize(sale(&format!("burst-{i}"))).await })
        })
        .collect();
    let (mut served, mut shed) = (0, 0);
    for call in calls {
        match call.await? {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains("circuit open"), "{status:?}");
                shed += 1;
            }
        }
    }
    assert!(served >= 1 && shed >= 1, "served {served}, shed {shed}");
    slow.stop().await
}
