//! The checked-by scenario of trace propagation: an order -> payment call (axum -> tonic,
//! both examples in-process, no trace code in their handlers) produces spans with one
//! trace id and the right parent links, received by a real OTLP/gRPC receiver, with the
//! HTTP and RPC semantic conventions' attributes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use example_common::{BackgroundServer, BoxError};
use http::{Method, StatusCode};
use mesh_tower::trace::otel::{self, OtlpProtocol};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use order_service::client::OrderClient;

/// An OTLP/gRPC collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self
            .spans
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_payment_is_one_trace() -> Result<(), BoxError> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let telemetry = otel::build("shop", OtlpProtocol::Grpc, Some(&format!("http://{otlp}")))?;
    opentelemetry::global::set_tracer_provider(telemetry.provider().clone());

    let payment = BackgroundServer::start(|l, stop| {
        payment_service::run(payment_service::Config::default(), l, stop)
    })
    .await?;
    let config = order_service::Config::new(payment.addr().to_string().parse()?);
    let order = BackgroundServer::start(|l, stop| order_service::run(config, l, stop)).await?;
    let client = OrderClient::new(&format!("http://{}", order.addr()))?;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{caller}-01");
    let body = Bytes::from_static(br#"{"item": "book", "amount_cents": 1250}"#);
    let reply = client
        .send(
            Method::POST,
            "/orders",
            &[("traceparent", traceparent.as_str())],
            Some(body),
        )
        .await?;
    assert_eq!(reply.status, StatusCode::CREATED);

    let provider = telemetry.provider().clone();
    tokio::task::spawn_blocking(move || provider.force_flush()).await??;
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = collector.spans.lock().map_err(|_| "poisoned")?.clone();
        if spans.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == trace_id),
        "{spans:#?}"
    );

    let (server, client_kind) = (2, 3);
    let find = |kind: i32, path: &str| {
        spans
            .iter()
            .find(|s| s.kind == kind && attr(s, "url.path").as_deref() == Some(path))
            .ok_or(format!("no span of kind {kind} for {path}: {spans:#?}"))
    };
    let rpc_path = "/payment.v1.PaymentService/Authorize";
    let order_span = find(server, "/orders")?;
    let call = find(client_kind, rpc_path)?;
    let payment_span = find(server, rpc_path)?;
    assert_eq!(hex(&order_span.parent_span_id), caller);
    assert_eq!(call.parent_span_id, order_span.span_id);
    assert_eq!(payment_span.parent_span_id, call.span_id);

    assert_eq!(order_span.name, "POST");
    assert_eq!(
        attr(order_span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attr(order_span, "http.response.status_code").as_deref(),
        Some("201")
    );
    for span in [call, payment_span] {
        assert_eq!(span.name, "payment.v1.PaymentService/Authorize");
        assert_eq!(attr(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attr(span, "rpc.service").as_deref(),
            Some("payment.v1.PaymentService")
        );
        assert_eq!(attr(span, "rpc.method").as_deref(), Some("Authorize"));
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("0"));
    }
    assert_eq!(
        attr(call, "server.port"),
        Some(payment.addr().port().to_string())
    );
    assert!(attr(payment_span, "network.peer.address").is_some());

    order.stop().await?;
    payment.stop().await?;
    Ok(())
}
