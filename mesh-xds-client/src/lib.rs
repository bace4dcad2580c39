//! The xDS side of the mesh: reads a gRPC-format bootstrap, runs the ADS stream against a
//! control plane (istiod, go-control-plane, ...), and keeps a validated cache of Envoy v3
//! resources with per-resource status.
//!
//! The protocol lives in [`ads::AdsCore`], a state machine without I/O or timers, fed with
//! responses and [`std::time::Instant`]s and tested synchronously; [`transport`] is a thin
//! tokio/tonic driver around it. [`resource`] decodes and validates the four resource types
//! with field paths, and [`translate`] turns them into mesh-core's model as they are
//! accepted (listeners, routes, clusters, endpoints), so an untranslatable resource is NACKed.
//!
//! [`snapshot`] assembles one consistent [`mesh_core::Snapshot`] from the cache once every
//! watched listener's cascade is complete (gRFC A74); the client publishes it to a
//! [`mesh_core::live::LivePolicy`] ([`transport::XdsClient::start_with_policy`]).
//!
//! Both protocol flavours are spoken, state of the world and incremental (delta), chosen per
//! server; several servers fall back as gRFC A71 says; the channel is plaintext, TLS or
//! mutual TLS. What this crate does not do: federation (A47 authorities are parsed, not
//! used) or `google_default` credentials. CSDS (gRFC A40) is served from the client's view:
//! [`csds`].
//!
//! ```no_run
//! use mesh_core::live::LivePolicy;
//! use mesh_core::Snapshot;
//! use mesh_xds_client::bootstrap::Bootstrap;
//! use mesh_xds_client::transport::{XdsClient, XdsClientConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // GRPC_XDS_BOOTSTRAP=/etc/istio/proxy/grpc-bootstrap.json, as the Istio agent sets it.
//! let bootstrap = Bootstrap::from_env()?;
//! // The handle mesh-tower's layers read; the client swaps in every complete snapshot.
//! let policy = LivePolicy::new(Snapshot::empty());
//! let client =
//!     XdsClient::from_bootstrap_with_policy(&bootstrap, XdsClientConfig::default(), policy.clone())?;
//! client.add_target(&bootstrap.client_listener_name("payment-service:8080")).await?;
//! let mut changes = policy.watch();
//! loop {
//!     let snapshot = changes.changed().await;
//!     println!("{}: {:?}", snapshot.version(), snapshot.outbound("payment-service:8080"));
//!     for (xds_type, name, entry) in client.view().cache.iter() {
//!         println!("  {xds_type} {name}: {:?} version {:?}", entry.state, entry.version);
//!     }
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ads;
pub mod bootstrap;
pub mod csds;
pub mod resource;
pub mod server;
pub mod shape;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod translate;
pub mod transport;

/// The crate's README, compiled and run as doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
