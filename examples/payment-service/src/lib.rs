//! The example payment service: `payment.v1.PaymentService` over tonic, with payments kept
//! in memory (per process; nothing is shared between instances).
//!
//! Made for mesh demos, it can:
//! - say which version it is (`--version v1|v2`, sent on every response, errors included,
//!   as `x-payment-version` metadata), for weighted and header-based routing;
//! - fail a fraction of calls with `UNAVAILABLE` (`--fail-rate`), for retries, circuit
//!   breaking and outlier detection;
//! - add latency to every call (`--latency-ms`), for timeouts;
//! - remember the `end-user` metadata of an Authorize call in the payment
//!   (`Payment.end_user`), to show header propagation.
//!
//! [`run`] serves on a listener handed to it, so tests run it in-process on `127.0.0.1:0`.
//! The service runs on the mesh's inbound listener: mTLS per the policy's TLS mode and
//! authorization on every call (`--policy FILE`, or the defaults: plaintext, allow all).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use payment_service::{Config, PaymentVersion};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = Config::default().with_version(PaymentVersion::V2).with_fail_rate(0.1)?;
//! payment_service::run(config, listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod service;

use std::future::Future;

use payment_api::PaymentServiceServer;
use tokio::net::TcpListener;

pub use config::{Config, FailRate, InvalidFailRate, PaymentVersion};
pub use service::Payments;

/// Serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener's address could not be read.
    #[error("cannot read the listen address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The mesh could not be set up from the flags.
    #[error(transparent)]
    Mesh(example_common::MeshSetupError),
    /// The mesh listener failed.
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
}

/// Serves the payment service on `listener` until `shutdown` resolves, then waits for the
/// calls in flight to finish.
///
/// Every accepted socket gets `TCP_NODELAY`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let mesh = config
        .mesh
        .build_named("payment-service")
        .map_err(Error::Mesh)?;
    let _admin = config.mesh.start_admin(&mesh).await.map_err(Error::Mesh)?;
    tracing::info!(%addr, version = %config.version, fail_rate = %config.fail_rate, latency_ms = config.latency_ms, mtls = mesh.certificates().is_some(), "payment-service listening");

    // The mesh's inbound side in one call: TLS mode per port (STRICT / PERMISSIVE /
    // DISABLE) and the peer's SPIFFE ID from the listener; trace context, metrics and
    // authorization on every call. grpc.health.v1 beside the payment service: overall
    // status from the mesh's readiness, the payment service's own set here.
    let payments = PaymentServiceServer::new(Payments::new(&config));
    let routes = tonic::service::Routes::new(payments).add_service(mesh.health_service());
    mesh.health().set_status(
        <PaymentServiceServer<Payments> as tonic::server::NamedService>::NAME,
        mesh_tower::health::ServingStatus::Serving,
    );
    mesh.serve(listener, routes, shutdown)
        .await
        .map_err(Error::Listener)?;
    tracing::info!("payment-service stopped");
    Ok(())
}
