//! The built `demo` binary, as a user runs it.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    match Command::new(env!("CARGO_BIN_EXE_demo")).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run the demo binary: {e}"),
    }
}

#[test]
fn canary_alone_names_every_step_and_exits_0() {
    let out = demo(&["--scenario", "canary", "--duration", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for step in ["5%", "10%", "25%", "50%", "100%"] {
        assert!(
            stdout.contains(&format!("v2 at {step:>4}:")),
            "step {step} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("=> canary: passed"), "{stdout}");
    // Only the story asked for runs.
    assert!(!stdout.contains("header routing"), "{stdout}");
    // stdout is a pipe here: plain lines, no escapes.
    assert!(!stdout.contains('\x1b'), "{stdout}");
}

#[test]
fn the_control_plane_story_stops_and_restarts_the_control_plane() {
    let out = demo(&[
        "--scenario",
        "control-plane",
        "--duration",
        "1",
        "--orders",
        "40",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for seen in [
        "control plane serving ADS on 127.0.0.1:",
        "order-service (xDS) started from",
        "control plane STOPPED",
        "control plane restarted on 127.0.0.1:",
        "=> control-plane: passed",
    ] {
        assert!(stdout.contains(seen), "{seen} missing:\n{stdout}");
    }
    assert_eq!(
        stdout.matches("followed in").count(),
        2,
        "the push and the restart are both followed:\n{stdout}"
    );
}

#[test]
fn authorization_alone_runs_under_strict_mtls_and_prints_the_admin_page() {
    let out = demo(&[
        "--scenario",
        "authorization",
        "--duration",
        "1",
        "--orders",
        "10",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("mTLS: STRICT"), "{stdout}");
    assert!(stdout.contains("admin: http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("=> authorization: passed"), "{stdout}");
    assert!(stdout.contains("PERMISSION_DENIED"), "{stdout}");
}

#[test]
fn bad_flags_are_refused_with_the_flag_name() {
    for (args, flag) in [
        (&["--scenario", "chaos"][..], "--scenario"),
        (&["--duration", "0"][..], "--duration"),
        (&["--orders", "0"][..], "--orders"),
    ] {
        let out = demo(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
