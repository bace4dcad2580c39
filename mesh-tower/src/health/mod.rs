//! Whether the workload takes traffic, told to probes and to gRPC clients.
//!
//! - [`Readiness`]: one per mesh ([`Mesh::readiness`](crate::Mesh::readiness)), shared by
//!   the mesh, its listeners and the admin server. Ready once the first policy arrived and
//!   every mesh listener serves (gRFC A36: after its inbound policy arrived, when that
//!   comes from xDS); not ready again from shutdown on. The admin server answers
//!   `/ready` and `/healthz/ready` from it (200, or 503 with the reason), for Kubernetes'
//!   readiness probe; `/healthz` stays 200 while the process runs.
//! - [`Health`]: the `grpc.health.v1.Health` service (`Check` and `Watch`) whose overall
//!   status follows the readiness, with per-service statuses the application sets.
//!
//! A tonic service adds it in one line:
//!
//! ```no_run
//! # async fn demo(greeter: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_tower::health::ServingStatus;
//! use mesh_tower::Mesh;
//!
//! let mesh = Mesh::builder().build()?;
//! let routes = greeter.add_service(mesh.health_service());
//! mesh.health().set_status("helloworld.Greeter", ServingStatus::Serving);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! mesh.listener(listener).serve(routes, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What the admin server answers, as a probe sees it:
//!
//! ```text
//! $ curl -i localhost:15000/healthz/ready
//! HTTP/1.1 503 Service Unavailable
//! not ready: listener 10.0.0.7:8080: waiting for its inbound policy from the control plane (gRFC A36)
//! ```

mod grpc;
mod readiness;

pub use grpc::{Health, HealthService, ServingStatus, WatchStream};
pub use readiness::{Readiness, ReadinessHold, ReadinessStatus, ReadinessWatch};

pub(crate) use readiness::{follow_xds, ListenerReadiness};

/// The generated `grpc.health.v1` types (messages, client, server), from `tonic-health`:
/// `pb::health_client::HealthClient` calls a health service.
pub use tonic_health::pb;

#[cfg(test)]
mod tests;
