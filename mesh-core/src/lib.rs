//! The policy model of the mesh and the pure algorithms that run on it.
//!
//! Everything here is plain data and plain functions: no I/O, no async runtime, no protobuf.
//! A [`Snapshot`] holds the whole view a service needs (outbound routes, clusters,
//! endpoints, inbound TLS and authorization); it is built and validated once, then shared
//! read-only by every request through a [`live::LivePolicy`] handle.
//!
//! What this crate does not do: talk to a control plane (that is `mesh-xds-client`), or
//! touch sockets and requests (that is `mesh-tower`).
//!
//! ```
//! use mesh_core::live::LivePolicy;
//! use mesh_core::policy_file::PolicyFile;
//!
//! let text = "services:\n  - name: payment-service\n    ports: [{ port: 8080 }]\n    endpoints: [{ address: '127.0.0.1:50051' }]\n";
//! let snapshot = PolicyFile::parse(text, "policy.yaml")?.to_snapshot("policy.yaml")?;
//! let policy = LivePolicy::new(snapshot);
//! // Readers load the current snapshot without locks; a writer publishes a new one.
//! let now = policy.load();
//! assert!(now.outbound("payment-service:8080").is_some());
//! # Ok::<(), mesh_core::policy_file::PolicyError>(())
//! ```
#![forbid(unsafe_code)]

pub mod breaker;
pub mod classify;
pub mod cluster;
pub mod identity;
pub mod inbound;
pub mod istio;
pub mod lb;
pub mod live;
pub mod matcher;
pub mod outlier;
pub mod policy_file;
pub mod rbac;
pub mod retry;
pub mod route;
pub mod snapshot;

pub use snapshot::Snapshot;

/// The crate's README, compiled and run as doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
