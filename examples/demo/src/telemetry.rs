//! Where the spans go: an OTLP/gRPC receiver in this process (the `TraceService` of
//! `opentelemetry-proto`, the one a collector serves on 4317) and the mesh's exporter
//! pointed at it. Both services take their tracer from the global provider installed
//! here, so it must be started before the services; their handlers have no trace code.
//!
//! The receiver keeps only the spans of the traces it is asked to watch (and a bounded
//! number of those), so the other stories' traffic costs no memory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use mesh_tower::trace::otel::{self, OtlpProtocol, TelemetryGuard};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::DemoError;

/// At most this many spans are kept (of the watched traces).
const MAX_KEPT: usize = 1000;

/// The `service.name` the exporter reports (one provider for the whole process).
pub const SERVICE_NAME: &str = "mesh-demo";

#[derive(Debug, Default)]
struct State {
    watched: HashSet<Vec<u8>>,
    kept: Vec<Span>,
    received: u64,
}

/// The receiver's service.
#[derive(Debug, Clone, Default)]
struct Receiver {
    state: Arc<Mutex<State>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    state.received += 1;
                    if state.kept.len() < MAX_KEPT && state.watched.contains(&span.trace_id) {
                        state.kept.push(span);
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver and the exporter pointed at it, installed as the global provider.
#[derive(Debug)]
pub struct Telemetry {
    receiver: Receiver,
    addr: SocketAddr,
    guard: Option<TelemetryGuard>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Telemetry {
    /// Starts the receiver on 127.0.0.1 and installs an OTLP/gRPC exporter to it as the
    /// global tracer provider (call before starting the services).
    pub async fn start() -> Result<Self, DemoError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = tokio::net::TcpListener::bind(any)
            .await
            .map_err(|source| DemoError::Bind { addr: any, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DemoError::Bind { addr: any, source })?;
        let receiver = Receiver::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        let guard = otel::build(
            SERVICE_NAME,
            OtlpProtocol::Grpc,
            Some(&format!("http://{addr}")),
        )?;
        opentelemetry::global::set_tracer_provider(guard.provider().clone());
        Ok(Self {
            receiver,
            addr,
            guard: Some(guard),
            stop: Some(stop),
            task,
        })
    }

    /// Where the receiver listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps the spans of trace `trace_id` from now on.
    pub fn watch(&self, trace_id: [u8; 16]) {
        self.state().watched.insert(trace_id.to_vec());
    }

    /// The spans of trace `trace_id` received so far.
    pub fn spans_of(&self, trace_id: [u8; 16]) -> Vec<Span> {
        self.state()
            .kept
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Spans received in all (watched or not).
    pub fn received(&self) -> u64 {
        self.state().received
    }

    /// Exports every span ended so far, and waits until the receiver has them.
    pub async fn flush(&self) {
        let Some(guard) = &self.guard else { return };
        let provider = guard.provider().clone();
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "flushing spans failed");
        }
    }

    /// Puts the no-op provider back, shuts the exporter down and stops the receiver.
    pub async fn stop(mut self) {
        opentelemetry::global::set_tracer_provider(
            opentelemetry::trace::noop::NoopTracerProvider::new(),
        );
        if let Some(guard) = self.guard.take() {
            // Shutting down exports what is queued and blocks until done.
            let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task);
        if stopped.await.is_err() {
            self.task.abort();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.receiver
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
