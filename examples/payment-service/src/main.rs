//! `payment-service`: the example gRPC payment service. See `payment-service --help`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use payment_service::Config;

/// Example gRPC payment service (payment.v1.PaymentService) with in-memory storage.
#[derive(Debug, Parser)]
#[command(name = "payment-service", disable_version_flag = true)]
struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    example_common::init_tracing();
    let _telemetry = example_common::init_telemetry("payment-service");
    let listener = match example_common::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("payment-service: {err}");
            return ExitCode::FAILURE;
        }
    };
    match payment_service::run(cli.config, listener, example_common::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("payment-service: {err}");
            ExitCode::FAILURE
        }
    }
}
