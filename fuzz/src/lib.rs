//! The harnesses of the fuzz targets, one function per target, each taking the raw input.
//!
//! Every module here depends only on the workspace crates and their own dependencies, so
//! the stable smoke tests of those crates include the same files (`#[path]`) and run the
//! committed seeds through exactly what the fuzzer runs: see `README.md`.
#![forbid(unsafe_code)]

pub mod ads;
pub mod certs;
pub mod istio_yaml;
pub mod policy;
pub mod seeds;
pub mod trace;
pub mod xds;
