//! Tower layers, the inbound listener and the outbound client of the mesh.
//!
//! An application builds one [`Mesh`] (from a policy file, an xDS bootstrap or defaults),
//! takes clients from it ([`Mesh::http_client`], [`Mesh::channel`] for tonic) and serves
//! its own API through the inbound listener ([`inbound::MeshListener`]), which terminates
//! mTLS with SPIFFE identities and puts the peer's identity on each request for the
//! [`inbound::AuthorizationLayer`]. Everything the policy says — routing, load balancing,
//! circuit breaking, outlier detection, retries, timeouts, fault injection, mTLS,
//! authorization — happens inside the application's process.
#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
pub mod body;
pub mod client;
pub mod error;
pub mod health;
pub mod identity;
pub mod inbound;
pub mod mesh;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod server;
pub mod trace;

pub use error::MeshError;
pub use mesh::{Mesh, MeshBuilder, PolicySource};
pub use server::{MeshLayer, MeshService};

/// The crate's README, compiled and run as doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
