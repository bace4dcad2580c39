//! The payment service served in-process on 127.0.0.1:0 and called over real gRPC.

use example_common::{BackgroundServer, BoxError};
use payment_api::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, PaymentServiceClient, PaymentStatus,
    END_USER_METADATA, VERSION_METADATA,
};
use payment_service::{Config, PaymentVersion};
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn start(
    config: Config,
) -> Result<
    (
        BackgroundServer<payment_service::Error>,
        PaymentServiceClient<Channel>,
    ),
    BoxError,
> {
    let server =
        BackgroundServer::start(|listener, stop| payment_service::run(config, listener, stop))
            .await?;
    let client = PaymentServiceClient::connect(format!("http://{}", server.addr())).await?;
    Ok((server, client))
}

fn authorize(amount_cents: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        order_id: "ord-7".into(),
        amount_cents,
        currency: "USD".into(),
        capture: false,
    }
}

fn version<T>(response: &tonic::Response<T>) -> Option<&str> {
    response.metadata().get(VERSION_METADATA)?.to_str().ok()
}

#[tokio::test]
async fn authorize_capture_get_round_trip() -> Result<(), BoxError> {
    let (server, mut client) = start(Config::default()).await?;

    let mut request = Request::new(authorize(1999));
    request
        .metadata_mut()
        .insert(END_USER_METADATA, "jason".parse()?);
    let auth = client.authorize(request).await?;
    assert_eq!(version(&auth), Some("v1"));
    let payment_id = auth.into_inner().payment_id;

    let cap = client
        .capture(CaptureRequest {
            payment_id: payment_id.clone(),
        })
        .await?;
    assert_eq!(cap.get_ref().status(), PaymentStatus::Captured);

    let payment = client
        .get_payment(GetPaymentRequest { payment_id })
        .await?
        .into_inner();
    assert_eq!(payment.order_id, "ord-7");
    assert_eq!(payment.amount_cents, 1999);
    assert_eq!(payment.currency, "USD");
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.end_user, "jason");

    server.stop().await
}

#[tokio::test]
async fn version_v2_is_reported_on_success_and_error() -> Result<(), BoxError> {
    let (server, mut client) = start(Config::default().with_version(PaymentVersion::V2)).await?;

    let ok = client.authorize(authorize(100)).await?;
    assert_eq!(version(&ok), Some("v2"));

    let err = match client.authorize(authorize(-1)).await {
        Ok(r) => panic!("a negative amount was accepted: {r:?}"),
        Err(status) => status,
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.metadata()
            .get(VERSION_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("v2")
    );

    server.stop().await
}

#[tokio::test]
async fn fail_rate_one_fails_every_call_with_unavailable() -> Result<(), BoxError> {
    let (server, mut client) = start(Config::default().with_fail_rate(1.0)?).await?;
    for _ in 0..5 {
        match client.authorize(authorize(100)).await {
            Ok(r) => panic!("fail-rate 1.0 let a call through: {r:?}"),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    server.stop().await
}

#[tokio::test]
async fn unknown_payment_is_not_found() -> Result<(), BoxError> {
    let (server, mut client) = start(Config::default()).await?;
    let status = match client
        .get_payment(GetPaymentRequest {
            payment_id: "pay-nope".into(),
        })
        .await
    {
        Ok(r) => panic!("found a payment that was never made: {r:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await
}

#[tokio::test]
async fn grpc_health_answers_on_the_service_port() -> Result<(), BoxError> {
    use mesh_tower::health::pb::health_check_response::ServingStatus as Wire;
    use mesh_tower::health::pb::health_client::HealthClient;
    use mesh_tower::health::pb::HealthCheckRequest;

    let (server, _client) = start(Config::default()).await?;
    let channel = Channel::from_shared(format!("http://{}", server.addr()))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    // Overall: ready (a static mesh has its policy at start; the listener serves).
    let overall = health.check(check("")).await?.into_inner();
    assert_eq!(overall.status, Wire::Serving as i32);
    let payments = health
        .check(check("payment.v1.PaymentService"))
        .await?
        .into_inner();
    assert_eq!(payments.status, Wire::Serving as i32);
    let unknown = match health.check(check("nope.Nope")).await {
        Ok(answer) => return Err(format!("an unknown service answered {answer:?}").into()),
        Err(status) => status,
    };
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await?;
    Ok(())
}
