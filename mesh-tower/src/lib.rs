//! Tower layers, the inbound listener and the outbound client of the mesh.
//!
//! An application builds one [`Mesh`] (from a policy file, an xDS bootstrap or defaults),
//! takes clients from it ([`Mesh::http_client`], [`Mesh::channel`] for tonic) and serves
//! its own API through the inbound listener ([`inbound::MeshListener`]), which terminates
//! mTLS with SPIFFE identities and puts the peer's identity on each request for the
//! [`inbound::AuthorizationLayer`]. Everything the policy says — routing, load balancing,
//! circuit breaking, outlier detection, retries, timeouts, fault injection, mTLS,
//! authorization — happens inside the application's process.
//!
//! An axum service in the mesh, calling another one through it:
//!
//! ```no_run
//! use axum::{extract::State, routing::get, Router};
//! use mesh_tower::Mesh;
//!
//! async fn stock(State(mesh): State<Mesh>) -> String {
//!     // Routed, balanced, retried, mTLS'd and traced as the policy says.
//!     match mesh.get("http://inventory:8080/stock/42").send().await {
//!         Ok(response) => response.text().await.unwrap_or_default(),
//!         Err(error) => format!("inventory unavailable: {error}"),
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // GRPC_XDS_BOOTSTRAP or MESH_POLICY say where the policy comes from.
//! let mesh = Mesh::builder().build()?;
//! let app = Router::new().route("/stock", get(stock)).with_state(mesh.clone());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! mesh.serve(listener, app, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A tonic server, with `grpc.health.v1` beside it, and a tonic client on the mesh's
//! channel:
//!
//! ```no_run
//! # async fn run(greeter: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = mesh_tower::Mesh::builder().build()?;
//! let routes = greeter.add_service(mesh.health_service());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//! tokio::spawn({
//!     let mesh = mesh.clone();
//!     async move { mesh.serve(listener, routes, std::future::pending()).await }
//! });
//! // Any tonic client takes the channel: `GreeterClient::new(channel)`.
//! let channel = mesh.channel::<tonic::body::Body>("xds:///greeter.default.svc.cluster.local:50051");
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
pub mod body;
pub mod client;
pub mod error;
mod exchange;
mod exec;
pub mod health;
pub mod identity;
pub mod inbound;
pub mod mesh;
pub mod metrics;
pub mod observe;
pub mod outbound;
mod ring;
mod rng;
pub mod server;
pub mod trace;

pub use error::MeshError;
pub use mesh::{IstioShape, Mesh, MeshBuilder, PolicySource};
pub use server::{MeshLayer, MeshService};

/// The crate's README, compiled and run as doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
