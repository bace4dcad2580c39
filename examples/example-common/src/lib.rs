//! Pieces shared by the example services (`payment-service`, `order-service`).
//!
//! - [`MeshArgs`]: the mesh flags every example accepts (`--bootstrap`, `--policy`,
//!   `--admin`), flattened into each service's own clap parser.
//! - [`init_tracing`]: log set-up driven by `RUST_LOG`; [`init_telemetry`]: span export
//!   driven by the `OTEL_*` variables; [`MeshArgs::start_admin`]: the admin server on
//!   `--admin`. (The inbound stack is the library's: `Mesh::serve`, `Mesh::layer`.)
//! - [`bind`], [`set_nodelay`] and [`incoming_nodelay`]: a listener whose accepted
//!   sockets all get `TCP_NODELAY` (axum 0.8's `serve` and tonic's `serve_with_incoming`
//!   leave it off, which costs HTTP/2 requests tens of milliseconds).
//! - [`shutdown_signal`]: resolves on Ctrl-C (and SIGTERM on Unix).
//! - [`BackgroundServer`]: a service's `run` spawned on `127.0.0.1:0`, for tests.
//!
//! [`MeshArgs::build`] turns the flags into a [`mesh_tower::Mesh`].
//!
//! ```
//! use clap::Parser;
//! use example_common::MeshArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     mesh: MeshArgs,
//! }
//!
//! let cli = Cli::parse_from(["svc", "--policy", "mesh.yaml", "--admin", "127.0.0.1:9901"]);
//! assert_eq!(cli.mesh.policy.as_deref(), Some(std::path::Path::new("mesh.yaml")));
//! assert!(!cli.mesh.is_empty());
//! ```
#![forbid(unsafe_code)]

mod background;
mod mesh;
mod net;

pub use background::{BackgroundServer, BoxError, StopSignal};
pub use mesh::{MeshArgs, MeshSetupError};
pub use net::{bind, incoming_nodelay, set_nodelay, shutdown_signal, BindError};

/// Sets up span export from the standard OpenTelemetry variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`,
/// `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`); call it inside the runtime, before
/// building the mesh (which holds the tracer installed then), and keep the guard. `None` when no export is configured (trace
/// context is still propagated) or when the variables are invalid (logged).
pub fn init_telemetry(service_name: &str) -> Option<mesh_tower::trace::otel::TelemetryGuard> {
    match mesh_tower::trace::otel::init_from_env(service_name) {
        Ok(Some(guard)) => {
            tracing::info!(
                endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
                "exporting spans with OTLP"
            );
            Some(guard)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "span export disabled");
            None
        }
    }
}

/// Installs a `tracing` subscriber that writes to stderr, filtered by `RUST_LOG`
/// (`info` when unset or unparsable).
///
/// Calling it twice is harmless: the second call leaves the first subscriber in place.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // An error only means a subscriber is already installed, which is what we want.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
