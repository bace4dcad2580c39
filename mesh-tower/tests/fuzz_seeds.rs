//! Smoke test of the fuzz targets in `fuzz/`: every committed seed goes through the same
//! harness the fuzzer runs (the files are included from `fuzz/src`), on stable, in
//! seconds. The fuzzing itself is `fuzz/run.sh` (nightly, cargo-fuzz), not part of CI.

use std::path::PathBuf;

#[path = "../../fuzz/src/certs.rs"]
mod certs;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;
#[path = "../../fuzz/src/trace.rs"]
mod trace;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn trace_w3c_seeds() {
    seeds::run(&seeds_dir(), "trace_w3c", trace::trace_w3c);
}

#[test]
fn trace_b3_seeds() {
    seeds::run(&seeds_dir(), "trace_b3", trace::trace_b3);
}

#[test]
fn cert_der_seeds() {
    seeds::run(&seeds_dir(), "cert_der", certs::cert_der);
}

#[test]
fn cert_pem_seeds() {
    seeds::run(&seeds_dir(), "cert_pem", certs::cert_pem);
}
