//! `control-plane --config DIR_OR_FILE [--config ...] [--listen ADDR] [--unix PATH]`
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use control_plane::{Config, ControlPlane};

/// A development xDS control plane serving Istio YAML over ADS.
#[derive(Debug, Parser)]
#[command(name = "control-plane", version)]
struct Args {
    /// A YAML file or a directory of them (repeatable): VirtualService, DestinationRule,
    /// PeerAuthentication, AuthorizationPolicy documents and the endpoints document.
    #[arg(long = "config", short = 'c', required = true)]
    config: Vec<PathBuf>,
    /// TCP address for ADS (loopback by default).
    #[arg(long, default_value = "127.0.0.1:15010")]
    listen: SocketAddr,
    /// Also serve ADS on this unix socket (as the Istio agent's `unix:///etc/istio/XDS`).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// How often to check the files for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Pushes and rejected edits are logged; RUST_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .init();
    let config = Config {
        paths: args.config,
        listen: Some(args.listen),
        unix: args.unix.clone(),
        poll: Duration::from_millis(args.poll_ms),
    };
    let cp = match ControlPlane::start(config).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("control-plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = cp.addr() {
        println!("serving ADS on {addr}");
    }
    if let Some(path) = &args.unix {
        println!("serving ADS on unix://{}", path.display());
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("control-plane: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    println!("stopping");
    drop(cp);
    if let Some(path) = &args.unix {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}
