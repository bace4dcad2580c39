//! `mesh-xds`: resolve a target through the control plane a bootstrap names and print the
//! policy and per-resource status; see the library docs.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mesh_xds_cli::report::{Outcome, Report};
use mesh_xds_cli::target::listener_target;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::shape::IstioShape;
use mesh_xds_client::transport::{XdsClient, XdsClientConfig};

/// Resolve a target (`xds:///payment-service:8080`) through the xDS control plane of a
/// gRPC bootstrap, and print the resolved policy and each resource's status.
///
/// Exit status: 0 resolved (or --watch ended by Ctrl-C), 1 not resolved (timeout, listener
/// missing, a resource NACKed, server unreachable), 2 bad arguments or bootstrap.
#[derive(Debug, Parser)]
#[command(name = "mesh-xds", version)]
struct Args {
    /// The target, as a gRPC channel names it: `xds:///service:port` or `service:port`.
    target: String,
    /// The bootstrap file; default: `GRPC_XDS_BOOTSTRAP`, then `GRPC_XDS_BOOTSTRAP_CONFIG`.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Print a new document on every change, until interrupted (JSON: one per line).
    #[arg(long)]
    watch: bool,
    /// Seconds to wait for the target to resolve (once mode).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bootstrap = match &args.bootstrap {
        Some(path) => Bootstrap::from_file(path),
        None => Bootstrap::from_env(),
    };
    let bootstrap = match bootstrap {
        Ok(b) => b,
        Err(e) => return usage(&format!("bootstrap: {e}")),
    };
    let target = match listener_target(&args.target) {
        Ok(t) => t.to_owned(),
        Err(e) => return usage(&e.to_string()),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return usage("--timeout must be a positive number of seconds");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(run(args, bootstrap, target))
}

fn usage(message: &str) -> ExitCode {
    eprintln!("mesh-xds: {message}");
    ExitCode::from(2)
}

async fn run(args: Args, bootstrap: Bootstrap, target: String) -> ExitCode {
    let shape = match IstioShape::from_env() {
        Ok(s) => s,
        Err(e) => return usage(&e.to_string()),
    };
    // Sidecar shape: the client watches the target itself; the listener is the port's.
    let (watched, listener) = if shape.is_sidecar() {
        match target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        {
            Some(port) => (target.clone(), format!("0.0.0.0_{port}")),
            None => {
                return usage(&format!(
                    "{}=sidecar needs a target with a port (host:port), not {target:?}",
                    mesh_xds_client::shape::ENV
                ))
            }
        }
    } else {
        let name = bootstrap.client_listener_name(&target);
        (name.clone(), name)
    };
    let server = bootstrap
        .xds_servers
        .first()
        .map(|s| s.server_uri.clone())
        .unwrap_or_default();
    let client = match XdsClient::from_bootstrap(&bootstrap, XdsClientConfig::default()) {
        Ok(c) => c,
        Err(e) => return usage(&format!("cannot start the xDS client: {e}")),
    };
    if client.add_target(&watched).await.is_err() {
        eprintln!("mesh-xds: the xDS client stopped");
        return ExitCode::FAILURE;
    }
    let mut views = client.watch();
    let report = |view: &mesh_xds_client::transport::ClientView| {
        Report::new(&args.target, &listener, &server, view)
    };
    if args.watch {
        let mut last = None;
        loop {
            let current = report(&views.borrow_and_update());
            if last.as_ref() != Some(&current) {
                if let Err(e) = print(&current, args.format, true) {
                    eprintln!("mesh-xds: cannot write: {e}");
                    return ExitCode::FAILURE;
                }
                last = Some(current);
            }
            tokio::select! {
                changed = views.changed() => if changed.is_err() {
                    eprintln!("mesh-xds: the xDS client stopped");
                    return ExitCode::FAILURE;
                },
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout);
    loop {
        let current = report(&views.borrow_and_update());
        let failure = match current.outcome() {
            Outcome::Resolved => None,
            Outcome::Failed(why) => Some(why),
            Outcome::Pending(waiting) => {
                match tokio::time::timeout_at(deadline, views.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => Some("the xDS client stopped".to_owned()),
                    Err(_) => Some(current.stalled(args.timeout, &waiting)),
                }
            }
        };
        if let Err(e) = print(&current, args.format, false) {
            eprintln!("mesh-xds: cannot write: {e}");
            return ExitCode::FAILURE;
        }
        return match failure {
            None => ExitCode::SUCCESS,
            Some(why) => {
                eprintln!("mesh-xds: {why}");
                ExitCode::FAILURE
            }
        };
    }
}

fn print(report: &Report, format: Format, watch: bool) -> std::io::Result<()> {
    let text = match (format, watch) {
        (Format::Json, false) => {
            serde_json::to_string_pretty(report).map_err(std::io::Error::other)?
        }
        (Format::Json, true) => serde_json::to_string(report).map_err(std::io::Error::other)?,
        (Format::Yaml, _) => format!(
            "---\n{}",
            serde_norway::to_string(report).map_err(std::io::Error::other)?
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    out.flush()
}
