//! The inbound trace + metrics layers against none, in the same run: the difference is
//! the CPU they add per request (extract, server span ids, task-local scope, label-set
//! lookup, atomic cells, body watch). No OpenTelemetry SDK is installed, so span export
//! is not in the number; the `tracing` span is disabled (no subscriber).

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_executor::block_on;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use mesh_tower::metrics::{Metrics, MetricsLayer, WorkloadLabels};
use mesh_tower::trace::TraceLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

fn request(traceparent: bool) -> Request<Empty<Bytes>> {
    let mut b = Request::get("http://payment:8080/pay").header("host", "payment:8080");
    if traceparent {
        b = b
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("x-request-id", "8d1f4b52-3c9a-4b7e-9f55-2f6b1d8e0c11");
    }
    b.body(Empty::new()).unwrap_or_default()
}

fn run<S, B>(svc: &mut S, req: Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body,
{
    block_on(async {
        let Ok(svc) = svc.ready().await;
        let Ok(resp) = svc.call(req).await;
        let _ = resp.into_body().collect().await;
    });
}

fn inbound(c: &mut Criterion) {
    let mut bare = tower::service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    // Behind MetricsLayer the application reads its body through a CountedBody.
    let app = tower::service_fn(
        |_req: Request<mesh_tower::observe::CountedBody<Empty<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    );
    let metrics = Metrics::new(WorkloadLabels::named("payment"));
    let mut layered = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new(metrics))
        .service(app);

    let mut g = c.benchmark_group("inbound");
    g.bench_function("no layers", |b| b.iter(|| run(&mut bare, request(false))));
    g.bench_function("no layers, trace headers", |b| {
        b.iter(|| run(&mut bare, request(true)))
    });
    g.bench_function("trace + metrics, new trace", |b| {
        b.iter(|| run(&mut layered, request(false)))
    });
    g.bench_function("trace + metrics, traceparent", |b| {
        b.iter(|| run(&mut layered, request(true)))
    });
    g.finish();
}

criterion_group!(benches, inbound);
criterion_main!(benches);
