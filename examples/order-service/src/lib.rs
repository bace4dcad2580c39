//! The example order service: a JSON API over HTTP (axum) that takes orders and pays for
//! them by calling the example payment service over gRPC (Authorize, then Capture).
//!
//! | request | response |
//! |---|---|
//! | `POST /orders` `{"item": "book", "amount_cents": 1250}` | 201 + the order; 400 on bad input; 502 if the payment fails |
//! | `GET /orders/{id}` | 200 + the order, or 404 |
//! | `GET /healthz` | 200 `{"status": "ok"}` |
//!
//! An order is `{"id", "item", "amount_cents", "status", "payment_id", "payment_version"}`;
//! `payment_version` is the `x-payment-version` of the payment instance that authorized it.
//! Errors are `{"error": "..."}`; a 502 adds `grpc_status` (`UNAVAILABLE`...) and the failing
//! instance's `payment_version`. The caller's `end-user` header travels to the payment
//! service as `end-user` metadata. Orders live in memory.
//!
//! The payment client is the mesh's channel ([`payment_client`]): the policy (a static file
//! with `--policy`, or the defaults) decides routing, retries, timeouts and breakers; the
//! handlers only see the type-erased [`PaymentClient`].
//!
//! The package also has the `order-client` binary, which posts orders and tallies the
//! answers by `payment_version`; [`client`] is its library half.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use order_service::Config;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = Config::new("127.0.0.1:8080".parse()?);
//! order_service::run(config, listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod api;
pub mod client;
mod config;
mod payment;

use std::future::Future;

use tokio::net::TcpListener;

pub use api::{router, Order};
pub use config::{Config, InvalidPaymentTarget, PaymentTarget};
pub use payment::{
    boxed_channel, payment_client, BoxError, PaymentChannel, PaymentChannelError, PaymentClient,
};

/// The order service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mesh could not be set up from the flags.
    #[error(transparent)]
    Mesh(#[from] example_common::MeshSetupError),
    /// The listener's address could not be read.
    #[error("cannot read the listen address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves the order service on `listener` until `shutdown` resolves, then waits for the
/// requests in flight to finish.
///
/// Every accepted socket gets `TCP_NODELAY`. The payment service is not contacted until
/// the first order.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let mesh = config.mesh.build_named("order-service")?;
    let _admin = config.mesh.start_admin(&mesh).await?;
    let payments = payment_client(&config.payment_target, &mesh);
    tracing::info!(%addr, payment_target = %config.payment_target, mtls = mesh.certificates().is_some(), "order-service listening");
    // The mesh's inbound side in one call: TLS mode per port and the peer's identity, then
    // trace context (the handlers' payment calls continue the caller's trace with no
    // header copying), metrics and authorization.
    mesh.serve(listener, router(payments), shutdown)
        .await
        .map_err(Error::Serve)?;
    tracing::info!("order-service stopped");
    Ok(())
}
