//! The end-to-end load benchmark: client -> service A -> service B on 127.0.0.1, with no
//! mesh (`bare`), with the mesh (`mesh`: every layer on, STRICT mTLS between A and B), with
//! an Envoy sidecar pair doing the mTLS (`sidecar`, what Istio does) and with one haproxy
//! hop (`haproxy`); HTTP/1.1, HTTP/2 and gRPC; open loop at fixed rates, latency corrected
//! for coordinated omission, CPU per request and peak RSS of every process under test,
//! closed-loop maximum throughput on one core; then the mesh's memory and update time with
//! 10, 1,000 and 10,000 endpoints.
//!
//! ```text
//! cargo run --release -p mesh-benches --bin e2e -- [--quick] [--duration SECS]
//!     [--rates 500,2000,5000] [--protocols http1,http2,grpc]
//!     [--scenarios bare,mesh,mesh-plain,sidecar,haproxy] [--out benches/results/latest.json]
//! ```
//!
//! `e2e instructions [--protocols ..] [--scenarios bare,mesh,mesh-plain] [--requests N]`
//! counts instead the instructions per request of services A and B under callgrind.
//!
//! Prints a Markdown table and writes it next to the JSON (`latest.md`). Envoy is found
//! through `ENVOY` or `PATH`, haproxy through `HAPROXY` or `PATH`; a missing one is skipped.
//! The services' logs (service A writes why its calls to B failed) are kept when something
//! failed, or always with `E2E_KEEP_LOGS=1`; `E2E_PEER_LIMIT=N` sets the mesh services'
//! per-peer connection limit; `E2E_WITHOUT=metadata,retry,timeout,outlier,attempt-count`
//! leaves those parts out of the mesh services (to measure what each costs).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mesh_benches::e2e::run::{ensure_parent, run, RunConfig};
use mesh_benches::e2e::{instructions, report, scale, serve, BoxError, Protocol, Scenario};

/// End-to-end load benchmark of the mesh against no mesh, an Envoy sidecar pair and haproxy.
#[derive(Debug, Parser)]
#[command(name = "e2e")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Service A (internal: started by the benchmark).
    #[command(hide = true)]
    ServeA {
        #[arg(long)]
        protocol: Protocol,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        mesh: bool,
        #[arg(long)]
        certs: Option<PathBuf>,
    },
    /// Service B (internal: started by the benchmark).
    #[command(hide = true)]
    ServeB {
        #[arg(long)]
        protocol: Protocol,
        #[arg(long)]
        mesh: bool,
        #[arg(long)]
        certs: Option<PathBuf>,
    },
    /// One scale measurement (internal: started by the benchmark).
    #[command(hide = true)]
    ScaleProbe { endpoints: usize },
    /// Instructions per request of services A and B, counted by callgrind (needs
    /// valgrind): requests sent one after another, no load, no timing.
    Instructions(InstructionArgs),
}

#[derive(Debug, Args)]
struct InstructionArgs {
    /// Protocols to count.
    #[arg(long, value_delimiter = ',', default_value = "http1,http2,grpc")]
    protocols: Vec<Protocol>,
    /// Scenarios to count (bare, mesh, mesh-plain).
    #[arg(long, value_delimiter = ',', default_value = "bare,mesh,mesh-plain")]
    scenarios: Vec<Scenario>,
    /// Requests sent before counting.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    warmup: u64,
    /// Requests counted.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    requests: u64,
    /// Requests in flight at once (each of that many tasks sends its share in turn).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A run of well under a minute: 0.5 s per rate, rates 500 and 2000, scale 10 and 1000.
    #[arg(long)]
    quick: bool,
    /// Seconds measured per rate (default 8; 0.5 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Open-loop rates in requests per second.
    #[arg(long, value_delimiter = ',', value_name = "RATES", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rates: Option<Vec<u64>>,
    /// Protocols to run.
    #[arg(long, value_delimiter = ',', default_value = "http1,http2,grpc")]
    protocols: Vec<Protocol>,
    /// Scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bare,mesh,mesh-plain,sidecar,haproxy"
    )]
    scenarios: Vec<Scenario>,
    /// Closed-loop concurrency for the maximum throughput.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Seconds of the closed loop (default 4; 0.5 with --quick).
    #[arg(long, value_name = "SECS")]
    max_duration: Option<f64>,
    /// Endpoint counts for the scale probes (default 10,1000,10000; 10,1000 with --quick).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=100_000))]
    scale_endpoints: Option<Vec<u64>>,
    /// Skip the scale probes.
    #[arg(long)]
    no_scale: bool,
    /// Do not pin the processes under test and the generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Where to write the JSON (the Markdown goes next to it, as .md).
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.json"))]
    out: PathBuf,
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {value} is out of range ({range})")]
struct BadArg {
    flag: &'static str,
    value: f64,
    range: &'static str,
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, BadArg> {
    if value.is_finite() && (0.05..=600.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(BadArg {
            flag,
            value,
            range: "0.05 to 600 seconds",
        })
    }
}

fn config(args: &RunArgs) -> Result<RunConfig, BadArg> {
    let quick = args.quick;
    let default = |full: f64, short: f64| if quick { short } else { full };
    let mut c = RunConfig::new();
    c.duration = seconds("duration", args.duration.unwrap_or(default(8.0, 0.5)))?;
    c.max_duration = seconds(
        "max-duration",
        args.max_duration.unwrap_or(default(4.0, 0.5)),
    )?;
    c.warmup = Duration::from_secs_f64(default(1.0, 0.3));
    c.rates = args.rates.clone().unwrap_or_else(|| {
        if quick {
            vec![500, 2000]
        } else {
            vec![500, 2000, 5000]
        }
    });
    c.protocols = args.protocols.clone();
    c.scenarios = args.scenarios.clone();
    c.concurrency = usize::try_from(args.concurrency).unwrap_or(64);
    c.scale_endpoints = if args.no_scale {
        Vec::new()
    } else {
        args.scale_endpoints
            .as_ref()
            .map(|v| v.iter().map(|n| usize::try_from(*n).unwrap_or(1)).collect())
            .unwrap_or_else(|| {
                if quick {
                    vec![10, 1000]
                } else {
                    vec![10, 1000, 10_000]
                }
            })
    };
    c.pin = !args.no_pin;
    c.command = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(c)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::ServeA {
            protocol,
            upstream,
            mesh,
            certs,
        }) => runtime()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(serve::serve_a(protocol, upstream, mesh, certs.as_deref()))),
        Some(Command::ServeB {
            protocol,
            mesh,
            certs,
        }) => runtime()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(serve::serve_b(protocol, mesh, certs.as_deref()))),
        Some(Command::ScaleProbe { endpoints }) => runtime()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(scale::probe(endpoints)))
            .and_then(|r| {
                println!("{}", serde_json::to_string(&r)?);
                Ok(())
            }),
        Some(Command::Instructions(args)) => instructions(&args),
        None => bench(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("e2e: {err}");
            ExitCode::FAILURE
        }
    }
}

fn instructions(args: &InstructionArgs) -> Result<(), BoxError> {
    let config = instructions::Config {
        protocols: args.protocols.clone(),
        scenarios: args.scenarios.clone(),
        warmup: args.warmup,
        requests: args.requests,
        concurrency: args.concurrency,
    };
    let exe = std::env::current_exe()?;
    let counts = runtime()?.block_on(instructions::count(&exe, &config))?;
    println!("{}", instructions::markdown(&counts, &config));
    Ok(())
}

fn bench(args: &RunArgs) -> Result<(), BoxError> {
    let config = config(args)?;
    let report = runtime()?.block_on(run(&config))?;
    let markdown = report::markdown(&report);
    println!("{markdown}");
    ensure_parent(&args.out)?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(args.out.with_extension("md"), markdown)?;
    eprintln!(
        "e2e: wrote {} and {}",
        args.out.display(),
        args.out.with_extension("md").display()
    );
    Ok(())
}
