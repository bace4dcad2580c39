//! Smoke test of the fuzz targets in `fuzz/`: every committed seed goes through the same
//! harness the fuzzer runs (the files are included from `fuzz/src`), on stable, in
//! seconds. The fuzzing itself is `fuzz/run.sh` (nightly, cargo-fuzz), not part of CI.

use std::path::PathBuf;

#[path = "../../fuzz/src/ads.rs"]
mod ads;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;
#[path = "../../fuzz/src/xds.rs"]
mod xds;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn listener_seeds() {
    seeds::run(&seeds_dir(), "xds_listener", xds::listener);
}

#[test]
fn route_configuration_seeds() {
    seeds::run(
        &seeds_dir(),
        "xds_route_configuration",
        xds::route_configuration,
    );
}

#[test]
fn cluster_seeds() {
    seeds::run(&seeds_dir(), "xds_cluster", xds::cluster);
}

#[test]
fn cluster_load_assignment_seeds() {
    seeds::run(
        &seeds_dir(),
        "xds_cluster_load_assignment",
        xds::cluster_load_assignment,
    );
}

#[test]
fn ads_core_seeds() {
    seeds::run(&seeds_dir(), "ads_core", ads::ads_core);
}

#[test]
fn bootstrap_json_seeds() {
    seeds::run(&seeds_dir(), "bootstrap_json", xds::bootstrap_json);
}
