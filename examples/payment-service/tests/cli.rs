//! Runs the built `payment-service` binary with bad flags.

use std::process::{Command, Output};

fn run(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .args(args)
        // Keep the mesh environment of the machine running the tests out of the picture.
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .env_remove("MESH_POLICY")
        .env_remove("MESH_ADMIN")
        .output()
}

#[test]
fn fail_rate_above_one_is_refused_with_a_clear_message() -> std::io::Result<()> {
    let out = run(&["--fail-rate", "1.5"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        stderr.contains("--fail-rate must be between 0 and 1"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[test]
fn unknown_version_is_refused() -> std::io::Result<()> {
    let out = run(&["--version", "v9"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(stderr.contains("v9"), "stderr: {stderr}");
    Ok(())
}

#[test]
fn help_lists_every_flag() -> std::io::Result<()> {
    let out = run(&["--help"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--listen",
        "--version",
        "--fail-rate",
        "--latency-ms",
        "--bootstrap",
        "--policy",
        "--admin",
        "GRPC_XDS_BOOTSTRAP",
        "MESH_POLICY",
        "MESH_ADMIN",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
    Ok(())
}
