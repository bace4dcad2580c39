//! Why the demo could not run (as opposed to a story whose outcome was not as expected,
//! which is a [`crate::Outcome`]).

use std::net::SocketAddr;

/// The demo could not set up or drive its services.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A listener could not be bound on 127.0.0.1.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for (port 0 for an ephemeral one).
        addr: SocketAddr,
        /// Why the OS refused.
        #[source]
        source: std::io::Error,
    },
    /// A payment-service config was refused (a fail rate outside 0..=1).
    #[error("payment-service config: {0}")]
    PaymentConfig(#[from] payment_service::InvalidFailRate),
    /// The order-service's payment target did not parse.
    #[error(transparent)]
    PaymentTarget(#[from] order_service::InvalidPaymentTarget),
    /// The demo's own policy YAML was rejected (the message names the field path).
    #[error("demo policy {origin}: {source}")]
    Policy {
        /// Which policy (story and step).
        origin: String,
        /// What the parser or translator said.
        #[source]
        source: mesh_core::policy_file::PolicyError,
    },
    /// The mesh could not be built.
    #[error("mesh: {0}")]
    Mesh(#[from] mesh_tower::mesh::MeshBuildError),
    /// The order client could not be built.
    #[error("order client: {0}")]
    Client(#[from] order_service::client::ClientError),
    /// A server stopped with an error, or did not stop in time.
    #[error("{name} on {addr}: {reason}")]
    Server {
        /// Which server (`payment-service v1 #2`).
        name: String,
        /// Where it listened.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// A certificate could not be issued or written.
    #[error("issuing an identity: {0}")]
    Issue(#[from] mesh_tower::identity::testing::IssueError),
    /// Issued certificate files could not be loaded.
    #[error("loading an identity: {0}")]
    Certificates(#[from] mesh_tower::identity::CertificateError),
    /// A file of the demo (a policy file, the identities' directory) could not be written.
    #[error("{}: {source}", path.display())]
    Files {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The span exporter could not be set up.
    #[error("span export: {0}")]
    Telemetry(#[from] mesh_tower::trace::otel::OtelError),
    /// The dev control plane could not start.
    #[error("control plane: {0}")]
    ControlPlane(#[from] control_plane::StartError),
    /// The in-process OTLP receiver could not start.
    #[error("OTLP receiver: {0}")]
    Receiver(String),
    /// Writing the output failed (a closed pipe, for instance).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}
