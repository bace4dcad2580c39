//! Generates the bench.v1 gRPC code with `protox` (no `protoc` needed), and records the
//! versions the end-to-end benchmark reports: rustc, and the HTTP/TLS crates from Cargo.lock.

use std::error::Error;

const PROTO: &str = "proto/bench/v1/echo.proto";

/// The crates whose versions the report names.
const CRATES: [&str; 6] = ["hyper", "hyper-util", "tonic", "tokio", "rustls", "axum"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=E2E_RUSTC_VERSION={version}");

    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    let mut found = Vec::new();
    for name in CRATES {
        let needle = format!("name = \"{name}\"\nversion = \"");
        if let Some(start) = lock.find(&needle) {
            let rest = &lock[start + needle.len()..];
            if let Some(end) = rest.find('"') {
                found.push(format!("{name} {}", &rest[..end]));
            }
        }
    }
    println!("cargo:rustc-env=E2E_CRATE_VERSIONS={}", found.join(", "));
    Ok(())
}
