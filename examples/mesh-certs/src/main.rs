//! `mesh-certs`: issues a throw-away CA and SPIFFE SVIDs for local meshes and tests, so
//! nobody needs openssl recipes.
//!
//! ```text
//! mesh-certs --out certs --svid default/order-service --svid default/payment-service
//! ```
//!
//! writes `certs/root-cert.pem` and, per SVID, `certs/<sa>/{cert-chain.pem,key.pem,
//! root-cert.pem}` — the layout Istio's agent writes and the policy file's `certificates`
//! and the bootstrap's `file_watcher` provider read. Each SVID carries only the URI SAN
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, with serverAuth and clientAuth usages.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_tower::identity::testing::TestCa;

/// Issue a test CA and SPIFFE SVIDs in Istio's file layout.
#[derive(Debug, Parser)]
#[command(name = "mesh-certs", version)]
struct Cli {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// An identity to issue, as NAMESPACE/SERVICE_ACCOUNT (repeatable).
    #[arg(long = "svid", value_name = "NS/SA", required = true)]
    svids: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    // Check every argument before writing anything.
    let mut ids = Vec::with_capacity(cli.svids.len());
    for svid in &cli.svids {
        let (ns, sa) = svid
            .split_once('/')
            .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
            .ok_or_else(|| format!("--svid {svid:?}: expected NAMESPACE/SERVICE_ACCOUNT"))?;
        ids.push((svid, ns, sa));
    }
    let ca = TestCa::for_trust_domain(&cli.trust_domain).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cli.out)
        .map_err(|e| format!("cannot create {}: {e}", cli.out.display()))?;
    let root = cli.out.join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).map_err(|e| format!("{}: {e}", root.display()))?;
    for (svid, ns, sa) in ids {
        let cert = ca.svid(ns, sa).map_err(|e| format!("--svid {svid}: {e}"))?;
        let dir = cli.out.join(sa);
        cert.write_istio_files(&dir, &ca)
            .map_err(|e| format!("--svid {svid}: {e}"))?;
        println!(
            "spiffe://{}/ns/{ns}/sa/{sa} -> {}",
            cli.trust_domain,
            dir.display()
        );
    }
    Ok(())
}
