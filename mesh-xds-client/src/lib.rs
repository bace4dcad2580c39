//! The xDS side of the mesh: reads a gRPC-format bootstrap, runs the ADS stream against a
//! control plane (istiod, go-control-plane, ...), and keeps a validated cache of Envoy v3
//! resources with per-resource status.
//!
//! The protocol lives in [`ads::AdsCore`], a state machine without I/O or timers, fed with
//! responses and [`std::time::Instant`]s and tested synchronously; [`transport`] is a thin
//! tokio/tonic driver around it. What this crate does not do yet: translate every resource
//! into a [`mesh_core::Snapshot`] (see [`translate`] for what is there), delta xDS, or
//! server fallback.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ads;
pub mod bootstrap;
pub mod resource;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod translate;
pub mod transport;
