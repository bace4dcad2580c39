//! The xDS side of the mesh: reads a gRPC-format bootstrap, runs the ADS stream against a
//! control plane (istiod, go-control-plane, ...), and keeps a validated cache of Envoy v3
//! resources with per-resource status.
//!
//! The protocol lives in [`ads::AdsCore`], a state machine without I/O or timers, fed with
//! responses and [`std::time::Instant`]s and tested synchronously; [`transport`] is a thin
//! tokio/tonic driver around it. [`resource`] decodes and validates the four resource types
//! with field paths, and [`translate`] turns accepted routes into mesh-core's model.
//!
//! [`snapshot`] assembles one consistent [`mesh_core::Snapshot`] from the cache once every
//! watched listener's cascade is complete (gRFC A74); the client publishes it to a
//! [`mesh_core::live::LivePolicy`] ([`transport::XdsClient::start_with_policy`]).
//!
//! What this crate does not do yet: delta xDS, TLS to the control plane, or fall back to
//! a second server (gRFC A71).
//!
//! ```no_run
//! use mesh_xds_client::bootstrap::Bootstrap;
//! use mesh_xds_client::transport::{XdsClient, XdsClientConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // GRPC_XDS_BOOTSTRAP=/etc/istio/proxy/grpc-bootstrap.json, as the Istio agent sets it.
//! let bootstrap = Bootstrap::from_env()?;
//! let client = XdsClient::from_bootstrap(&bootstrap, XdsClientConfig::default())?;
//! client.add_target(&bootstrap.client_listener_name("payment-service:8080")).await?;
//! let mut updates = client.watch();
//! while updates.changed().await.is_ok() {
//!     for (xds_type, name, entry) in updates.borrow().cache.iter() {
//!         println!("{xds_type} {name}: {:?} version {:?}", entry.state, entry.version);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ads;
pub mod bootstrap;
pub mod resource;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod translate;
pub mod transport;
