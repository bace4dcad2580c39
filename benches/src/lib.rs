//! Shared helpers for the benchmarks, and the end-to-end load benchmark ([`e2e`]) behind
//! the `e2e` binary.
#![forbid(unsafe_code)]

pub mod e2e;

/// The `bench.v1` gRPC service the end-to-end benchmark calls (generated without protoc).
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("bench.v1");
}
