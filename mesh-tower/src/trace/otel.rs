//! Span export with OpenTelemetry, configured the way OpenTelemetry users expect: from
//! the standard environment variables.
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | where spans go; export is off when neither is set (and `OTEL_TRACES_EXPORTER` is not `otlp`) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (`..._TRACES_PROTOCOL`) | `grpc` or `http/protobuf` (the default, as the spec says) |
//! | `OTEL_SERVICE_NAME` | `service.name` (else the name the service passes) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | e.g. `parentbased_traceidratio` and `0.1` (default: parent-based, always on) |
//! | `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, ... | the batch processor |
//!
//! Export runs in a batch processor with a bounded queue (2048 spans by default): when
//! it is full, spans are dropped, never waited for, so exporting cannot slow requests.
//! Call [`init_from_env`] inside the tokio runtime (the gRPC exporter needs it), before
//! building the mesh (it holds the tracer installed then; or hand it one with
//! [`MeshBuilder::tracer`](crate::MeshBuilder::tracer)), and keep the guard until shutdown
//! (dropping it flushes).

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp-http")]
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
use opentelemetry_sdk::Resource;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

/// Why span export could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol this build does not speak.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported (use grpc or http/protobuf)")]
    Protocol(String),
    /// The protocol asked for is not in this build (mesh-tower's `otlp-grpc` or
    /// `otlp-http` feature is off).
    #[error("OTLP over {protocol} is not in this build: enable mesh-tower's `{feature}` feature")]
    NotBuilt {
        /// `grpc` or `http/protobuf`.
        protocol: &'static str,
        /// The feature that brings it.
        feature: &'static str,
    },
    /// The exporter could not be built (a bad endpoint, for example).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps the tracer provider alive; flushes and shuts it down when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// The provider (for building tracers or a `tracing-opentelemetry` layer).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports what is queued now. Blocks: call it from a blocking context.
    pub fn force_flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "flushing spans failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::debug!(%error, "tracer provider shutdown");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The protocol the environment asks for.
pub fn protocol_from_env() -> Result<OtlpProtocol, OtelError> {
    let p =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match p.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(OtlpProtocol::HttpProtobuf),
        Some("grpc") => Ok(OtlpProtocol::Grpc),
        Some(other) => Err(OtelError::Protocol(other.to_owned())),
    }
}

/// Whether the environment turns span export on.
pub fn export_configured() -> bool {
    env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_TRACES_EXPORTER").as_deref() == Some("otlp")
}

/// Sets up OTLP span export from the environment and installs it as the global tracer
/// provider; `Ok(None)` when the environment configures no export. `service_name` is used
/// when `OTEL_SERVICE_NAME` is unset.
pub fn init_from_env(service_name: &str) -> Result<Option<TelemetryGuard>, OtelError> {
    if !export_configured() || env("OTEL_TRACES_EXPORTER").as_deref() == Some("none") {
        return Ok(None);
    }
    let guard = build(service_name, protocol_from_env()?, None)?;
    opentelemetry::global::set_tracer_provider(guard.provider.clone());
    Ok(Some(guard))
}

/// Builds an OTLP exporting provider (not installed globally) for `endpoint` (else the
/// endpoint from the environment). Sampling still comes from `OTEL_TRACES_SAMPLER`.
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
pub fn build(
    service_name: &str,
    protocol: OtlpProtocol,
    endpoint: Option<&str>,
) -> Result<TelemetryGuard, OtelError> {
    let exporter: opentelemetry_otlp::SpanExporter = match protocol {
        #[cfg(not(feature = "otlp-grpc"))]
        OtlpProtocol::Grpc => {
            return Err(OtelError::NotBuilt {
                protocol: "grpc",
                feature: "otlp-grpc",
            })
        }
        #[cfg(not(feature = "otlp-http"))]
        OtlpProtocol::HttpProtobuf => {
            return Err(OtelError::NotBuilt {
                protocol: "http/protobuf",
                feature: "otlp-http",
            })
        }
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match endpoint {
                Some(e) => b.with_endpoint(e).build()?,
                None => b.build()?,
            }
        }
        #[cfg(feature = "otlp-http")]
        OtlpProtocol::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            match endpoint {
                Some(e) => b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/'))),
                None => b,
            }
            .with_headers(Default::default())
            .build()?
        }
    };
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(TelemetryGuard { provider })
}

/// Builds an OTLP exporting provider: in this build (no `otlp-grpc`, no `otlp-http`
/// feature), always [`OtelError::NotBuilt`].
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
pub fn build(
    _service_name: &str,
    protocol: OtlpProtocol,
    _endpoint: Option<&str>,
) -> Result<TelemetryGuard, OtelError> {
    Err(match protocol {
        OtlpProtocol::Grpc => OtelError::NotBuilt {
            protocol: "grpc",
            feature: "otlp-grpc",
        },
        OtlpProtocol::HttpProtobuf => OtelError::NotBuilt {
            protocol: "http/protobuf",
            feature: "otlp-http",
        },
    })
}
