//! The README's commands, run as written: the block after `<!-- readme-commands -->` in
//! `examples/control-plane/README.md` (mesh-certs, the control plane on the shipped
//! `config/`, three payment replicas and order-service on the shipped bootstraps), then
//! order-client. Each `cargo run -p PKG -- ARGS` runs the package's binary from this
//! build with ARGS exactly as written, `VAR=value` prefixes as its environment, in a
//! scratch directory where `examples/` is the repository's (so the relative paths of the
//! README resolve) and `certs/` is fresh.
//!
//! Checks: every order is created (the shipped example works under STRICT mTLS with auto
//! mTLS on), both versions answer, and a plaintext caller is refused by a payment replica.
//! Uses the README's fixed ports (15010, 8081, 50051-50053); the only test in this binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough never to be hit by a healthy run; only a hung one fails on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// One README line: environment, package, arguments, and whether it runs in the background.
#[derive(Debug)]
struct Line {
    env: Vec<(String, String)>,
    package: String,
    args: Vec<String>,
    background: bool,
}

fn parse(line: &str) -> Line {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let background = words.last() == Some(&"&");
    if background {
        words.pop();
    }
    let mut env = Vec::new();
    while let Some((k, v)) = words.first().and_then(|w| w.split_once('=')) {
        env.push((k.to_owned(), v.to_owned()));
        words.remove(0);
    }
    assert_eq!(&words[..3], ["cargo", "run", "-p"], "{line}");
    assert_eq!(words[4], "--", "{line}");
    Line {
        env,
        package: words[3].to_owned(),
        args: words[5..].iter().map(|w| (*w).to_owned()).collect(),
        background,
    }
}

fn readme_lines(root: &Path) -> Vec<Line> {
    let readme = std::fs::read_to_string(root.join("examples/control-plane/README.md")).unwrap();
    let (_, after) = readme
        .split_once("<!-- readme-commands -->")
        .expect("the README marks its commands");
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a sh block follows the marker");
    let (block, _) = block.split_once("```").expect("the block ends");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse)
        .collect()
}

/// The binary of `package` in this build (the workspace's target directory); built if
/// this test runs alone (`cargo test -p control-plane`).
fn binary(package: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_control-plane"))
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(package);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", package])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p {package}");
    }
    path
}

/// Kills the background processes when the test ends, however it ends.
struct Background(Vec<(String, Child)>);

impl Drop for Background {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-readme-commands-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::os::unix::fs::symlink(
        root.join("examples").canonicalize().unwrap(),
        dir.join("examples"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_commands_work_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lines = readme_lines(&root);
    assert!(lines.len() >= 4, "{lines:?}");
    let dir = scratch();
    let (last, setup) = lines.split_last().unwrap();
    assert!(
        !last.background,
        "the last command is the one that shows the result"
    );

    let mut background = Background(Vec::new());
    for line in setup {
        let mut cmd = Command::new(binary(&line.package));
        cmd.args(&line.args)
            .envs(line.env.iter().cloned())
            .current_dir(&dir);
        if line.background {
            let log = std::fs::File::create(dir.join(format!(
                "{}-{}.log",
                line.package,
                background.0.len()
            )))
            .unwrap();
            cmd.stdout(log.try_clone().unwrap()).stderr(log);
            background
                .0
                .push((line.package.clone(), cmd.spawn().unwrap()));
        } else {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{line:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // The last line, as written, until every order is created (the services come up in
    // the background: each waits for its policy before it serves).
    let started = Instant::now();
    let stdout = loop {
        let out = Command::new(binary(&last.package))
            .args(&last.args)
            .envs(last.env.iter().cloned())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.contains("20 created, 0 failed") {
            break stdout;
        }
        for (name, child) in &mut background.0 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}); logs in {}", dir.display());
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "orders still failing after {PATIENCE:?}: {stdout}{}; logs in {}",
            String::from_utf8_lossy(&out.stderr),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        stdout.contains("orders: 20 sent, 20 created, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("  v1: "), "{stdout}");

    // STRICT: a plaintext HTTP/2 caller gets no HTTP/2 answer from a payment replica.
    let mut plain = tokio::net::TcpStream::connect("127.0.0.1:50051")
        .await
        .unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, plain.read(&mut buf))
        .await
        .expect("the replica answers or closes")
        .unwrap_or(0);
    // An HTTP/2 server would answer with a SETTINGS frame (type 4 in byte 3).
    assert!(n < 9 || buf[3] != 4, "plaintext served: {:?}", &buf[..n]);

    drop(background);
    let _ = std::fs::remove_dir_all(&dir);
}
