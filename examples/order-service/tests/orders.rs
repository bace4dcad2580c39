//! The order service and a payment service, both in-process on 127.0.0.1:0, talking over
//! real sockets.

use bytes::Bytes;
use example_common::{BackgroundServer, BoxError};
use http::{Method, StatusCode};
use order_service::client::{OrderClient, Reply};
use order_service::{Config, Order, PaymentTarget};
use payment_api::{GetPaymentRequest, PaymentServiceClient, PaymentStatus};
use serde_json::Value;

struct Shop {
    /// `None` when the test points the order service somewhere else.
    payment: Option<BackgroundServer<payment_service::Error>>,
    order: BackgroundServer<order_service::Error>,
    client: OrderClient,
}

impl Shop {
    async fn start(payment: payment_service::Config) -> Result<Self, BoxError> {
        let payment =
            BackgroundServer::start(|listener, stop| payment_service::run(payment, listener, stop))
                .await?;
        let mut shop = Self::start_order_service(payment.addr().to_string().parse()?).await?;
        shop.payment = Some(payment);
        Ok(shop)
    }

    /// An order service whose payment target is `target`.
    async fn start_order_service(target: PaymentTarget) -> Result<Self, BoxError> {
        let config = Config::new(target);
        let order =
            BackgroundServer::start(|listener, stop| order_service::run(config, listener, stop))
                .await?;
        let client = OrderClient::new(&format!("http://{}", order.addr()))?;
        Ok(Self {
            payment: None,
            order,
            client,
        })
    }

    fn payment_addr(&self) -> Result<std::net::SocketAddr, BoxError> {
        match &self.payment {
            Some(payment) => Ok(payment.addr()),
            None => Err("this shop has no payment service of its own".into()),
        }
    }

    async fn stop(self) -> Result<(), BoxError> {
        self.order.stop().await?;
        match self.payment {
            Some(payment) => payment.stop().await,
            None => Ok(()),
        }
    }

    async fn post_raw(&self, body: &str) -> Result<Reply, BoxError> {
        let body = Some(Bytes::from(body.to_owned()));
        Ok(self.client.send(Method::POST, "/orders", &[], body).await?)
    }
}

fn error_of(reply: &Reply) -> Result<String, BoxError> {
    let body: Value = reply.json()?;
    match body.get("error").and_then(Value::as_str) {
        Some(error) => Ok(error.to_owned()),
        None => Err(format!("no \"error\" in {body}").into()),
    }
}

#[tokio::test]
async fn order_is_paid_by_v1_and_can_be_read_back() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default()).await?;

    let created = shop.client.create_order("book", 1250, None).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let order: Order = created.json()?;
    assert_eq!(order.item, "book");
    assert_eq!(order.amount_cents, 1250);
    assert_eq!(order.status, "paid");
    assert_eq!(order.payment_version.as_deref(), Some("v1"));
    assert!(!order.payment_id.is_empty());
    let location = created.headers.get(http::header::LOCATION);
    assert_eq!(
        location.and_then(|l| l.to_str().ok()),
        Some(format!("/orders/{}", order.id).as_str())
    );

    let read = shop
        .client
        .send(Method::GET, &format!("/orders/{}", order.id), &[], None)
        .await?;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json::<Order>()?, order);

    shop.stop().await
}

#[tokio::test]
async fn payment_version_v2_is_reported() -> Result<(), BoxError> {
    let config =
        payment_service::Config::default().with_version(payment_service::PaymentVersion::V2);
    let shop = Shop::start(config).await?;
    let order: Order = shop.client.create_order("pen", 300, None).await?.json()?;
    assert_eq!(order.payment_version.as_deref(), Some("v2"));
    shop.stop().await
}

#[tokio::test]
async fn unknown_order_is_404() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default()).await?;
    let reply = shop
        .client
        .send(Method::GET, "/orders/ord-999", &[], None)
        .await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(error_of(&reply)?.contains("ord-999"));
    shop.stop().await
}

#[tokio::test]
async fn bad_input_is_400_with_a_json_error() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default()).await?;
    for (body, says) in [
        ("{not json", ""),
        (r#"{"item": "book"}"#, "amount_cents"),
        (
            r#"{"item": "book", "amount_cents": -5}"#,
            "amount_cents must be positive",
        ),
        (
            r#"{"item": "book", "amount_cents": 0}"#,
            "amount_cents must be positive",
        ),
        (
            r#"{"item": "  ", "amount_cents": 100}"#,
            "item must not be empty",
        ),
        (r#"{"item": "book", "amount_cents": "ten"}"#, "amount_cents"),
    ] {
        let reply = shop.post_raw(body).await?;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = error_of(&reply)?;
        assert!(error.contains(says), "{body}: {error}");
    }
    // Nothing was created by the refused requests.
    let reply = shop
        .client
        .send(Method::GET, "/orders/ord-1", &[], None)
        .await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    shop.stop().await
}

#[tokio::test]
async fn failing_payment_service_gives_502_naming_the_grpc_status() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default().with_fail_rate(1.0)?).await?;
    let reply = shop.client.create_order("book", 1250, None).await?;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body: Value = reply.json()?;
    assert_eq!(body["grpc_status"], "UNAVAILABLE", "{body}");
    assert_eq!(body["payment_version"], "v1", "{body}");
    assert!(error_of(&reply)?.contains("UNAVAILABLE"));
    shop.stop().await
}

#[tokio::test]
async fn unreachable_payment_service_gives_502() -> Result<(), BoxError> {
    // A port that was free a moment ago: nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let shop = Shop::start_order_service(closed.to_string().parse()?).await?;
    let reply = shop.client.create_order("book", 1250, None).await?;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body: Value = reply.json()?;
    assert_eq!(body["grpc_status"], "UNAVAILABLE", "{body}");
    shop.stop().await
}

#[tokio::test]
async fn end_user_header_reaches_the_payment_service() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default()).await?;
    let order: Order = shop
        .client
        .create_order("book", 1250, Some("jason"))
        .await?
        .json()?;

    // Ask the payment service itself what it saw.
    let mut payments =
        PaymentServiceClient::connect(format!("http://{}", shop.payment_addr()?)).await?;
    let payment = payments
        .get_payment(GetPaymentRequest {
            payment_id: order.payment_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(payment.end_user, "jason");
    assert_eq!(payment.order_id, order.id);
    assert_eq!(payment.status(), PaymentStatus::Captured);

    // And without the header, nothing is invented.
    let anonymous: Order = shop.client.create_order("book", 1250, None).await?.json()?;
    let payment = payments
        .get_payment(GetPaymentRequest {
            payment_id: anonymous.payment_id,
        })
        .await?
        .into_inner();
    assert_eq!(payment.end_user, "");
    shop.stop().await
}

#[tokio::test]
async fn healthz_is_ok() -> Result<(), BoxError> {
    let shop = Shop::start(payment_service::Config::default()).await?;
    let reply = shop.client.send(Method::GET, "/healthz", &[], None).await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json::<Value>()?["status"], "ok");
    shop.stop().await
}
