//! Trace propagation through two services in one process, order -> payment, with no trace
//! code in the handlers: the spans reach a real OTLP/gRPC receiver (a tonic server
//! implementing the OTLP TraceService) with one trace id and the right parent links.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use mesh_core::inbound::TlsMode;
use mesh_tower::metrics::MetricsLayer;
use mesh_tower::trace::otel::{self, OtlpProtocol};
use mesh_tower::trace::TraceLayer;
use mesh_tower::Mesh;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tower::{Layer, ServiceBuilder};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Exports what `guard`'s provider holds, then waits (bounded) until `receiver` has at least
/// `want` spans; returns what it has.
async fn flush_and_collect(
    guard: &otel::TelemetryGuard,
    receiver: &Receiver,
    want: usize,
) -> Vec<(String, Span)> {
    let provider = guard.provider().clone();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .unwrap();
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.spans.lock().unwrap().clone();
        if spans.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spans
}

/// The payment side: echoes the trace headers it received.
fn payment_app() -> Router {
    Router::new().route(
        "/pay",
        get(|headers: HeaderMap| async move {
            let pick = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let seen: HashMap<&str, String> = [
                "traceparent",
                "tracestate",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-parentspanid",
                "x-b3-sampled",
                "x-request-id",
            ]
            .into_iter()
            .map(|k| (k, pick(k)))
            .collect();
            serde_json::to_string(&seen).unwrap()
        }),
    )
}

/// The order side: calls payment through the mesh client; no trace code.
fn order_app(mesh: &Mesh, payment: std::net::SocketAddr) -> Router {
    let client = mesh.http_client::<Empty<Bytes>>();
    Router::new().route(
        "/order",
        get(move || {
            let mut client = client.clone();
            async move {
                let req = Request::get(format!("http://{payment}/pay"))
                    .body(Empty::new())
                    .unwrap();
                let resp = tower::ServiceExt::oneshot(&mut client, req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&body).into_owned()
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_payment_spans_reach_an_otlp_receiver() {
    // The receiver.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    // Export to it; one provider for both services of this process.
    let guard = otel::build(
        "mesh-test",
        OtlpProtocol::Grpc,
        Some(&format!("http://{otlp_addr}")),
    )
    .unwrap();
    opentelemetry::global::set_tracer_provider(guard.provider().clone());

    let mesh = Mesh::with_defaults();
    let policy = common::policy(TlsMode::Disable);
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new(mesh.metrics().clone()));
    let payment = common::start(policy.clone(), None, payment_app().layer(layers.clone())).await;
    let order = common::start(policy, None, order_app(&mesh, payment.addr).layer(layers)).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut conn = common::connect(order.addr, None).await.unwrap();
    let req = Request::get("/order")
        .header("host", "order")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("x-request-id", "req-42")
        .body(Empty::new())
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    let (status, body) = (resp.status(), resp.into_body());
    assert_eq!(status, 200, "{body}");
    let seen: HashMap<String, String> = serde_json::from_str(&body).unwrap();

    // What payment saw: the same trace, a new parent, the same request id, W3C and B3.
    let tp = &seen["traceparent"];
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
    assert!(tp.ends_with("-01"), "{tp}");
    let client_span_id = tp[36..52].to_owned();
    assert_ne!(client_span_id, caller_span);
    assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE");
    // The caller sent W3C only: B3 is passed on in the form it came in, so none is added
    // (OTEL_PROPAGATORS unset: tracecontext,baggage).
    // (The payment app echoes a header it did not get as "".)
    for b3 in ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "b3"] {
        assert_eq!(
            seen.get(b3).map_or("", String::as_str),
            "",
            "{b3}: {seen:?}"
        );
    }
    assert_eq!(seen["x-request-id"], "req-42");

    // The spans.
    let spans = flush_and_collect(&guard, &receiver, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let spans: Vec<Span> = spans
        .into_iter()
        .map(|(service, s)| {
            assert_eq!(service, "mesh-test");
            s
        })
        .collect();
    for s in &spans {
        assert_eq!(hex(&s.trace_id), trace_id, "{}", s.name);
    }
    let server_kind = 2; // SPAN_KIND_SERVER
    let client_kind = 3; // SPAN_KIND_CLIENT
    let order_server = spans
        .iter()
        .find(|s| s.kind == server_kind && attr(s, "url.path").as_deref() == Some("/order"))
        .expect("order server span");
    let client = spans
        .iter()
        .find(|s| s.kind == client_kind)
        .expect("client span");
    let payment_server = spans
        .iter()
        .find(|s| s.kind == server_kind && attr(s, "url.path").as_deref() == Some("/pay"))
        .expect("payment server span");
    assert_eq!(hex(&order_server.parent_span_id), caller_span);
    assert_eq!(hex(&client.parent_span_id), hex(&order_server.span_id));
    assert_eq!(hex(&client.span_id), client_span_id);
    assert_eq!(hex(&payment_server.parent_span_id), client_span_id);

    // Semantic conventions.
    assert_eq!(
        attr(order_server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr(order_server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attr(order_server, "network.peer.address").is_some());
    assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        attr(client, "server.port"),
        Some(payment.addr.port().to_string())
    );
    assert_eq!(
        attr(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(payment_server, "url.path").as_deref(), Some("/pay"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_given_a_tracer_exports_its_server_and_client_spans_there() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // Not installed globally: only the mesh holds it.
    let guard = otel::build(
        "own-tracer",
        OtlpProtocol::Grpc,
        Some(&format!("http://{otlp_addr}")),
    )
    .unwrap();
    let tracer = opentelemetry::global::BoxedTracer::new(Box::new(
        opentelemetry::trace::TracerProvider::tracer(guard.provider(), "mesh-test"),
    ));
    let mesh = Mesh::builder().tracer(tracer).build().unwrap();
    let policy = common::policy(TlsMode::Disable);
    let payment = common::start(policy.clone(), None, mesh.layer().layer(payment_app())).await;
    let order = common::start(
        policy,
        None,
        mesh.layer().layer(order_app(&mesh, payment.addr)),
    )
    .await;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut conn = common::connect(order.addr, None).await.unwrap();
    let req = Request::get("/order")
        .header("host", "order")
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .body(Empty::new())
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);

    let spans = flush_and_collect(&guard, &receiver, 3).await;
    // Order's server span, its client span, payment's server span: all through the
    // mesh's tracer, whatever the global provider is.
    let mut kinds: Vec<i32> = spans
        .iter()
        .map(|(service, s)| {
            assert_eq!(service, "own-tracer");
            assert_eq!(hex(&s.trace_id), trace_id, "{}", s.name);
            s.kind
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, [2, 2, 3], "{spans:#?}");
}
