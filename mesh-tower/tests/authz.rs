//! AuthorizationLayer with the seed guide's `payment-access` policy, over STRICT mTLS:
//! only the order service may GET/POST /api/v1/payments/*.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Empty;
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::live::LivePolicy;
use mesh_core::rbac::istio::{to_authorization, AuthorizationPolicy, Workload};
use mesh_core::snapshot::Snapshot;
use mesh_tower::inbound::AuthorizationLayer;
use tower::Layer;

fn payment_access() -> LivePolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "selector": { "matchLabels": { "app": "payment-service" } },
        "rules": [{
            "from": [{ "source": { "principals": [
                "cluster.local/ns/default/sa/order-service",
                "cluster.local/ns/default/sa/checkout-service"
            ] } }],
            "to": [{ "operation": {
                "methods": ["POST", "GET"],
                "paths": ["/api/v1/payments/*"]
            } }]
        }]
    }))
    .unwrap();
    let policies = [AuthorizationPolicy::new("payment-access", "default", spec)];
    let workload = Workload::new("default", [("app", "payment-service")]);
    let authz = to_authorization(&policies, &workload).unwrap();
    LivePolicy::new(
        Snapshot::builder()
            .inbound_default(Some(
                InboundPolicy::new(TlsMode::Strict).with_authorization(authz),
            ))
            .build(),
    )
}

fn grpc(path: &str) -> Request<Empty<Bytes>> {
    Request::post(path)
        .header("host", "payment")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn payment_access_allows_the_order_service_only() {
    let m = mesh();
    let live = payment_access();
    let service = AuthorizationLayer::new(live.clone()).layer(app());
    let server = start(live, Some(m.payment.clone()), service).await;

    let mut order = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(
        order.get("/api/v1/payments/42").await.unwrap(),
        (StatusCode::OK, "paid".to_owned())
    );
    let post = Request::post("/api/v1/payments/42")
        .header("host", "payment")
        .body(Empty::new())
        .unwrap();
    assert_eq!(order.send(post).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        order.get("/whoami").await.unwrap().0,
        StatusCode::FORBIDDEN,
        "path outside the rule"
    );
    let delete = Request::delete("/api/v1/payments/42")
        .header("host", "payment")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        order.send(delete).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "method outside the rule"
    );

    let mut other = connect(server.addr, Some(client_tls(&m.order, Some(&m.other))))
        .await
        .unwrap();
    let (status, body) = other.get("/api/v1/payments/42").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, ""),
        "never reaches the handler"
    );

    // gRPC callers get PERMISSION_DENIED, trailers-only.
    let denied = other.send(grpc("/api/v1/payments/42")).await.unwrap();
    assert_eq!(denied.status(), StatusCode::OK);
    assert_eq!(denied.headers()["grpc-status"], "7");
    assert_eq!(denied.headers()["content-type"], "application/grpc");
}

#[tokio::test]
async fn a_policy_update_applies_to_the_next_request() {
    let m = mesh();
    let live = payment_access();
    let service = AuthorizationLayer::new(live.clone()).layer(app());
    let server = start(live.clone(), Some(m.payment.clone()), service).await;
    let mut other = connect(server.addr, Some(client_tls(&m.order, Some(&m.other))))
        .await
        .unwrap();
    assert_eq!(
        other.get("/api/v1/payments/1").await.unwrap().0,
        StatusCode::FORBIDDEN
    );
    live.publish(
        Snapshot::builder()
            .inbound_default(Some(InboundPolicy::new(TlsMode::Strict)))
            .build(),
    );
    assert_eq!(
        other.get("/api/v1/payments/1").await.unwrap().0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deny_all_denies_even_the_order_service() {
    let m = mesh();
    let spec = serde_json::from_value(serde_json::json!({})).unwrap();
    let policies = [AuthorizationPolicy::new("deny-all", "default", spec)];
    let authz = to_authorization(
        &policies,
        &Workload::new("default", [("app", "payment-service")]),
    )
    .unwrap();
    let service = AuthorizationLayer::fixed(authz).layer(app());
    let server = start(policy(TlsMode::Strict), Some(m.payment.clone()), service).await;
    let mut order = connect(server.addr, Some(client_tls(&m.order, Some(&m.order))))
        .await
        .unwrap();
    assert_eq!(
        order.get("/api/v1/payments/1").await.unwrap().0,
        StatusCode::FORBIDDEN
    );
}
