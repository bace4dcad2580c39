//! `w3c-trace-context`: serves the W3C trace-context test suite's `POST /test` contract
//! with the mesh. See `w3c-trace-context --help`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// The W3C trace-context test suite's service, with propagation done by the mesh.
#[derive(Debug, Parser)]
#[command(name = "w3c-trace-context", version)]
struct Cli {
    /// Address to serve HTTP on (the suite's SERVICE_ENDPOINT is http://IP:PORT/test).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    example_common::init_tracing();
    let _telemetry = example_common::init_telemetry("w3c-trace-context");
    let listener = match example_common::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("w3c-trace-context: {err}");
            return ExitCode::FAILURE;
        }
    };
    match w3c_trace_context::run(listener, example_common::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("w3c-trace-context: {err}");
            ExitCode::FAILURE
        }
    }
}
