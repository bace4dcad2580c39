//! `demo`: the mesh walkthrough in one process. See the package docs (`src/lib.rs`).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use demo::{Options, Reporter, Scenario};

/// The proxyless mesh demo: payment-service v1/v2 and the order-service in this process on
/// 127.0.0.1, walking through canary, header routing, a failing replica and overload, each
/// driven by Istio-style policy YAML published to the mesh.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Cli {
    /// Run only this story (default: all of them, in order).
    #[arg(long, value_enum, value_name = "NAME")]
    scenario: Option<Scenario>,

    /// Bound, in seconds, on each story's load phase (a multi-step story splits it).
    #[arg(long, value_name = "SECS", default_value_t = 4.0, value_parser = parse_secs)]
    duration: f64,

    /// Orders per step (fewer when --duration runs out first).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    orders: u64,

    /// Print every policy file as it is published.
    #[arg(long)]
    show_policy: bool,

    /// The order-service takes its policy over xDS from the dev control plane (fed each
    /// story's Istio YAML), in the shape `MESH_ISTIO_SHAPE` names (`proxyless`, the
    /// default, or `sidecar`), instead of having it published to its mesh directly.
    #[arg(long)]
    control_plane: bool,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "expected a number of seconds between 0 and 3600, got {s:?}"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet by default: the services' own logs (one warning per failed payment) would
    // drown the walkthrough. RUST_LOG turns them on.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut options = Options::default()
        .with_duration(Duration::from_secs_f64(cli.duration))
        .with_orders(usize::try_from(cli.orders).unwrap_or(usize::MAX))
        .with_show_policy(cli.show_policy);
    if cli.control_plane {
        match mesh_tower::IstioShape::from_env() {
            Ok(shape) => options = options.with_control_plane(shape),
            Err(e) => {
                eprintln!("demo: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let scenarios: Vec<Scenario> = match cli.scenario {
        Some(s) => vec![s],
        None => Scenario::ALL.to_vec(),
    };
    let mut out = Reporter::stdout();
    let result = runtime.block_on(demo::run(
        &options,
        &scenarios,
        &mut out,
        example_common::shutdown_signal(),
    ));
    match result {
        Ok(summary) if summary.interrupted => {
            eprintln!("demo: interrupted; every service stopped");
            ExitCode::SUCCESS
        }
        Ok(summary) if summary.all_ok() => ExitCode::SUCCESS,
        Ok(summary) => {
            let names: Vec<_> = summary.failed().iter().map(|s| s.name()).collect();
            eprintln!(
                "demo: these stories did not turn out as expected: {} (see the output above)",
                names.join(", ")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}
