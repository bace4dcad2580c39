//! Smoke test of the fuzz targets in `fuzz/`: every committed seed goes through the same
//! harness the fuzzer runs (the files are included from `fuzz/src`), on stable, in
//! seconds. The fuzzing itself is `fuzz/run.sh` (nightly, cargo-fuzz), not part of CI.

use std::path::PathBuf;

#[path = "../../fuzz/src/policy.rs"]
mod policy;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn policy_file_seeds() {
    seeds::run(&seeds_dir(), "policy_file", policy::policy_file);
}

#[test]
fn spiffe_id_seeds() {
    seeds::run(&seeds_dir(), "spiffe_id", policy::spiffe_id);
}
