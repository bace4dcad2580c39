//! `mesh-xds`: what does a control plane tell a service about a target?
//!
//! The command reads a gRPC xDS bootstrap (`--bootstrap FILE`, else `GRPC_XDS_BOOTSTRAP` /
//! `GRPC_XDS_BOOTSTRAP_CONFIG` as gRPC reads them), subscribes to one target's listener
//! over ADS with the mesh's own client, and prints the resolved policy (routes with their
//! matches and weighted clusters, clusters with LB, breakers, outlier detection and TLS,
//! endpoints with health, weight and locality) and the status of every resource it
//! subscribed to (version, ACKed / NACKed, last error, when it was updated), as JSON or
//! YAML: once, or on every change with `--watch`.
//!
//! It does not change anything on the server, and it only speaks what the mesh's client
//! speaks (state-of-the-world ADS, insecure channel credentials).
//!
//! ```
//! use mesh_xds_cli::target::listener_target;
//! assert_eq!(listener_target("xds:///payment-service:8080").unwrap(), "payment-service:8080");
//! ```
#![forbid(unsafe_code)]

pub mod report;
pub mod target;
pub mod time;
