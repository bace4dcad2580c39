//! A development xDS management server: Istio YAML in, Envoy v3 resources out over ADS.
//!
//! The input is what users already write for a cluster — `VirtualService` and
//! `DestinationRule` (networking.istio.io/v1), `PeerAuthentication` and
//! `AuthorizationPolicy` (security.istio.io/v1) — plus an endpoints document in the mesh's
//! policy-file format (`services:` with ports, service accounts and labelled endpoints),
//! standing in for what Kubernetes would provide. mesh-core translates them into its model
//! ([`mesh_core::policy_file::PolicyFile::to_snapshot`]); [`envoy`] turns the model into
//! Listener / RouteConfiguration / Cluster / ClusterLoadAssignment resources named as
//! istiod names them for proxyless gRPC; [`server`] serves them over ADS
//! (state-of-the-world and delta) and pushes changes when the files change, keeping the last good
//! config when an edit is invalid.
#![forbid(unsafe_code)]

pub mod envoy;
pub mod input;
pub mod server;

pub use server::{Config, ControlPlane, StartError, Status};
