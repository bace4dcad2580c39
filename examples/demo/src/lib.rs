//! The one-command demo of the mesh: payment-service v1 (two replicas) and v2 (one) and the
//! order-service, all in this process on 127.0.0.1, with the order-service calling
//! `payment-service:8080` through [`mesh_tower::Mesh`]. Every policy change is an
//! Istio-style policy file (the seed guide's `services`, `destinationRules`,
//! `virtualServices`) parsed by `mesh_core::policy_file` and published to the mesh's
//! live policy, as a control plane would push it.
//!
//! The walkthrough tells the seed guide's stories ([`Scenario`]) one after the other,
//! driving real orders over HTTP and judging each story by what it measured:
//! canary, header routing, a failing replica, overload, authorization and tracing; the
//! last story starts the dev control plane (examples/control-plane) and an order-service
//! that takes its whole policy from it over xDS, then stops and restarts it.
//!
//! Everything runs under STRICT mTLS: each service gets a SPIFFE identity issued at start
//! by a test CA ([`identity`]), and the payment service enforces the seed guide's
//! `payment-access` AuthorizationPolicy. When the walkthrough includes the tracing story,
//! spans are exported over OTLP/gRPC to a receiver in this process ([`telemetry`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), demo::DemoError> {
//! use demo::{Options, Reporter, Scenario};
//!
//! let mut out = Reporter::stdout();
//! let summary = demo::run(&Options::default(), &Scenario::ALL, &mut out, std::future::pending()).await?;
//! assert!(summary.all_ok());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod fleet;
pub mod identity;
pub mod load;
pub mod policy;
pub mod report;
pub mod scenario;
pub mod telemetry;

use std::future::Future;

pub use error::DemoError;
pub use report::{Reporter, SharedBuffer};
pub use scenario::{Options, Outcome, Scenario};

use fleet::{Fleet, ReplicaId};
use policy::Policy;
use scenario::Story;
use telemetry::Telemetry;

/// What the walkthrough found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Summary {
    /// Each story run, with its outcome, in order.
    pub outcomes: Vec<(Scenario, Outcome)>,
    /// Ctrl-C (or the given shutdown) ended the walkthrough early.
    pub interrupted: bool,
}

impl Summary {
    /// No story failed (skipped ones are not failures).
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|(_, o)| o.is_ok())
    }

    /// The stories that failed.
    pub fn failed(&self) -> Vec<Scenario> {
        self.outcomes
            .iter()
            .filter(|(_, o)| !o.is_ok())
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Starts the services, runs `scenarios` in order, prints what happens to `out`, and stops
/// every service — also when `shutdown` resolves first (then the summary is marked
/// interrupted).
pub async fn run(
    options: &Options,
    scenarios: &[Scenario],
    out: &mut Reporter,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, DemoError> {
    // The exporter must be the global tracer provider before the services build their
    // layers.
    let telemetry = if scenarios.contains(&Scenario::Tracing) {
        Some(Telemetry::start().await?)
    } else {
        None
    };
    let mut fleet = match Fleet::start_with(&Policy::all_v1(), options.control_plane).await {
        Ok(fleet) => fleet,
        Err(e) => {
            if let Some(t) = telemetry {
                t.stop().await;
            }
            return Err(e);
        }
    };
    out.line(format!(
        "mesh demo: order-service http://{} calls payment-service:8080 through the mesh",
        fleet.order_addr()
    ));
    out.line(format!(
        "  payment-service v1 #1 {}, v1 #2 {}, v2 {} (all in this process; policy: Istio YAML)",
        fleet.addr(ReplicaId::V1First),
        fleet.addr(ReplicaId::V1Second),
        fleet.addr(ReplicaId::V2),
    ));
    out.line(format!(
        "  mTLS: STRICT at payment-service; identities {} and {} issued by a test CA into {}",
        fleet.order_identity().spiffe_id(),
        identity::spiffe_id(identity::PAYMENT_SA),
        fleet.identity_dir().display()
    ));
    out.line(format!(
        "  admin: http://{}/ (the order-service's mesh: /metrics, /config_dump, /clusters)",
        fleet.admin_addr()
    ));
    if let Some(shape) = options.control_plane {
        out.line(format!(
            "  the order-service's policy: over xDS from the dev control plane, istiod's {shape} shape"
        ));
    }
    let mut summary = Summary::default();
    let walked = tokio::select! {
        result = walk(&mut fleet, telemetry.as_ref(), options, scenarios, out, &mut summary) => Some(result),
        () = shutdown => None,
    };
    let walked = walked.unwrap_or_else(|| {
        summary.interrupted = true;
        Ok(())
    });
    if summary.interrupted {
        out.line("interrupted: stopping every service");
    }
    let stopped = fleet.stop().await;
    if let Some(t) = telemetry {
        t.stop().await;
    }
    walked?;
    stopped?;
    if !summary.interrupted {
        print_summary(out, &summary);
    }
    match out.take_error() {
        Some(e) => Err(DemoError::Output(e)),
        None => Ok(summary),
    }
}

async fn walk(
    fleet: &mut Fleet,
    telemetry: Option<&Telemetry>,
    options: &Options,
    scenarios: &[Scenario],
    out: &mut Reporter,
    summary: &mut Summary,
) -> Result<(), DemoError> {
    for &scenario in scenarios {
        out.line("");
        out.line(format!("== {}", scenario.title()));
        let mut story = Story {
            fleet: &mut *fleet,
            out: &mut *out,
            options,
            telemetry,
        };
        let outcome = scenario::run_one(scenario, &mut story).await?;
        out.line(format!("  => {scenario}: {}", outcome.describe()));
        summary.outcomes.push((scenario, outcome));
    }
    Ok(())
}

fn print_summary(out: &mut Reporter, summary: &Summary) {
    out.line("");
    out.line("== summary");
    for (scenario, outcome) in &summary.outcomes {
        out.line(format!("  {:<16} {}", scenario.name(), outcome.describe()));
    }
    if summary.all_ok() {
        out.line("every story ran as expected");
    } else {
        let names: Vec<_> = summary.failed().iter().map(|s| s.name()).collect();
        out.line(format!("NOT AS EXPECTED: {}", names.join(", ")));
    }
}
