//! Runs a target's committed seeds (`fuzz/seeds/<target>/*`) through its harness: the
//! smoke test each workspace crate runs on stable (`tests/fuzz_seeds.rs`).

use std::path::Path;

/// Feeds every file of `seeds/<target>` to `harness`; returns how many there were.
/// Panics when there are none, so a lost corpus does not pass silently.
pub fn run(seeds: &Path, target: &str, harness: fn(&[u8])) -> usize {
    let dir = seeds.join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("{target}: {}", file.display());
        harness(&data);
    }
    files.len()
}
