//! The order service calling two payment-service versions by the logical name
//! `payment-service:8080`, routed by a static mesh policy file (Istio VirtualService and
//! DestinationRule inside): a header route for beta testers and a weighted split.

use std::collections::BTreeMap;

use example_common::{BackgroundServer, BoxError, MeshArgs};
use http::StatusCode;
use order_service::client::OrderClient;
use order_service::{Config, Order};
use payment_service::PaymentVersion;

async fn payment(
    version: PaymentVersion,
) -> Result<BackgroundServer<payment_service::Error>, BoxError> {
    let config = payment_service::Config::default().with_version(version);
    Ok(BackgroundServer::start(|l, stop| payment_service::run(config, l, stop)).await?)
}

fn policy(v1: std::net::SocketAddr, v2: std::net::SocketAddr, v2_weight: u32) -> String {
    format!(
        r#"
services:
  - name: payment-service
    ports: [{{ port: 8080, name: grpc }}]
    endpoints:
      - {{ address: "{v1}", labels: {{ version: v1 }} }}
      - {{ address: "{v2}", labels: {{ version: v2 }} }}
destinationRules:
  - metadata: {{ name: payment }}
    spec:
      host: payment-service
      subsets:
        - {{ name: v1, labels: {{ version: v1 }} }}
        - {{ name: v2, labels: {{ version: v2 }} }}
virtualServices:
  - metadata: {{ name: payment }}
    spec:
      hosts: [payment-service]
      http:
        - match:
            - headers:
                end-user: {{ exact: beta-tester }}
          route:
            - destination: {{ host: payment-service, subset: v2 }}
        - route:
            - destination: {{ host: payment-service, subset: v1 }}
              weight: {w1}
            - destination: {{ host: payment-service, subset: v2 }}
              weight: {v2_weight}
"#,
        w1 = 100 - v2_weight
    )
}

#[tokio::test]
async fn orders_follow_the_policy_file() -> Result<(), BoxError> {
    let v1 = payment(PaymentVersion::V1).await?;
    let v2 = payment(PaymentVersion::V2).await?;
    let dir = std::env::temp_dir().join(format!("mesh-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy(v1.addr(), v2.addr(), 50))?;

    let mut mesh = MeshArgs::default();
    mesh.policy = Some(file.clone());
    let config = Config::new("payment-service:8080".parse()?).with_mesh(mesh);
    let order = BackgroundServer::start(|l, stop| order_service::run(config, l, stop)).await?;
    let client = OrderClient::new(&format!("http://{}", order.addr()))?;

    // Beta testers always reach v2.
    for _ in 0..20 {
        let reply = client
            .create_order("book", 100, Some("beta-tester"))
            .await?;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let o: Order = reply.json()?;
        assert_eq!(o.payment_version.as_deref(), Some("v2"));
    }
    // Everyone else is split about 50/50.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..200 {
        let reply = client.create_order("book", 100, Some("jason")).await?;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let o: Order = reply.json()?;
        *seen
            .entry(o.payment_version.unwrap_or_default())
            .or_default() += 1;
    }
    let v2_share = seen.get("v2").copied().unwrap_or(0);
    assert!(
        (60..=140).contains(&v2_share),
        "v2 got {v2_share} of 200: {seen:?}"
    );

    order.stop().await?;
    v1.stop().await?;
    v2.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
