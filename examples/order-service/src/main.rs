//! `order-service`: the example HTTP order service. See `order-service --help`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use order_service::Config;

/// Example HTTP order service; pays through the payment service over gRPC.
#[derive(Debug, Parser)]
#[command(name = "order-service", version)]
struct Cli {
    /// Address to serve HTTP on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    example_common::init_tracing();
    let _telemetry = example_common::init_telemetry("order-service");
    let listener = match example_common::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("order-service: {err}");
            return ExitCode::FAILURE;
        }
    };
    match order_service::run(cli.config, listener, example_common::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("order-service: {err}");
            ExitCode::FAILURE
        }
    }
}
