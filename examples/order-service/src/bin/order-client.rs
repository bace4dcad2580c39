//! `order-client`: posts N orders to an order service and prints how they went, counted by
//! the payment version that served them. Exits non-zero when no order was created.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use order_service::client::{OrderClient, Summary};

/// Posts orders to an order service and summarizes the answers by payment_version.
#[derive(Debug, Parser)]
#[command(name = "order-client", version)]
struct Cli {
    /// Base URL of the order service.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
    url: String,

    /// Number of orders to post, one after another.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,

    /// Item to order.
    #[arg(long, default_value = "book")]
    item: String,

    /// Price of each order, in cents.
    #[arg(long, value_name = "N", default_value_t = 1250)]
    amount_cents: i64,

    /// Sent as the `end-user` header (the order service forwards it to the payment service).
    #[arg(long, value_name = "NAME")]
    end_user: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match OrderClient::new(&cli.url) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("order-client: {err}");
            return ExitCode::from(2);
        }
    };
    let mut summary = Summary::default();
    let mut last_error = None;
    for _ in 0..cli.count {
        let outcome = client
            .create_order(&cli.item, cli.amount_cents, cli.end_user.as_deref())
            .await;
        if let Err(err) = &outcome {
            last_error = Some(err.to_string());
        }
        summary.record(&outcome);
    }
    print!("{summary}");
    if let Some(err) = last_error {
        eprintln!("order-client: last request error: {err}");
    }
    if summary.created_total() == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
