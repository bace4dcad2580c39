//! Generates the payment.v1 code. The .proto is compiled by `protox` (pure Rust), so
//! building needs no `protoc` binary.

use std::error::Error;

const PROTO: &str = "proto/payment/v1/payment.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
