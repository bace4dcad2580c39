//! The seed guide's stories, one module each, and the hooks for the stories still to come.
//!
//! A story publishes the policy it needs (so each one also runs alone with `--scenario`),
//! drives orders, shows what happens as it happens, and ends with an [`Outcome`] judged
//! from what it measured.

mod authorization;
mod canary;
mod control_plane;
pub(crate) use control_plane::bootstrap_json;
mod failing_replica;
mod header_routing;
mod overload;
mod traces;

use std::time::Duration;

use order_service::client::OrderClient;
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::load::{self, Batch, Flow, Tally};
use crate::policy::{Policy, Retries};
use crate::report::Reporter;
use crate::telemetry::Telemetry;
use crate::DemoError;

/// A story of the walkthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
#[non_exhaustive]
pub enum Scenario {
    /// v2 takes 5% -> 10% -> 25% -> 50% -> 100% of the orders.
    Canary,
    /// `end-user: beta-tester` always reaches v2.
    HeaderRouting,
    /// A v1 replica fails: retries hide it, outlier detection ejects it, it returns.
    FailingReplica,
    /// A slow replica and a burst: the circuit breaker sheds load fast.
    Overload,
    /// Under STRICT mTLS, a caller with another identity is denied by `payment-access`.
    Authorization,
    /// One trace id across order -> payment, spans exported to an OTLP receiver.
    Tracing,
    /// The control plane stops and restarts: traffic continues on the last policy.
    ControlPlane,
}

impl Scenario {
    /// Every story, in walkthrough order.
    pub const ALL: [Self; 7] = [
        Self::Canary,
        Self::HeaderRouting,
        Self::FailingReplica,
        Self::Overload,
        Self::Authorization,
        Self::Tracing,
        Self::ControlPlane,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::HeaderRouting => "header-routing",
            Self::FailingReplica => "failing-replica",
            Self::Overload => "overload",
            Self::Authorization => "authorization",
            Self::Tracing => "tracing",
            Self::ControlPlane => "control-plane",
        }
    }

    /// One line saying what the story shows.
    pub fn title(self) -> &'static str {
        match self {
            Self::Canary => "canary: shift orders from payment v1 to v2 by VirtualService weights",
            Self::HeaderRouting => "header routing: end-user: beta-tester always reaches v2",
            Self::FailingReplica => {
                "failing replica: retries hide it, outlier detection ejects it, it returns"
            }
            Self::Overload => "overload: the circuit breaker sheds load fast instead of queueing",
            Self::Authorization => {
                "authorization: under STRICT mTLS, a caller with another identity is denied"
            }
            Self::Tracing => {
                "tracing: one trace id across order -> payment, and where the spans went"
            }
            Self::ControlPlane => {
                "control plane: traffic continues on the last policy while it is down"
            }
        }
    }

    /// HOOK: the feature a story is waiting for. When the feature lands, implement the
    /// story in its own module, dispatch to it in `run_one`, and return `None` here.
    pub fn needs(self) -> Option<&'static str> {
        match self {
            Self::ControlPlane
            | Self::Canary
            | Self::HeaderRouting
            | Self::FailingReplica
            | Self::Overload
            | Self::Authorization
            | Self::Tracing => None,
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a story ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Everything measured was as expected; the summary says what.
    Passed(String),
    /// Something measured was not as expected; the reason says what.
    Failed(String),
    /// The story cannot run yet; it needs this feature.
    Skipped(String),
}

impl Outcome {
    /// Not a failure (passed, or skipped for a missing feature).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }

    /// `passed: ...`, `FAILED: ...`, `skipped: needs ...`.
    pub fn describe(&self) -> String {
        match self {
            Self::Passed(s) => format!("passed: {s}"),
            Self::Failed(s) => format!("FAILED: {s}"),
            Self::Skipped(s) => format!("skipped: needs {s}"),
        }
    }
}

/// How much load the stories drive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Bound on each story's load phase (a multi-step story splits it between its steps).
    pub duration: Duration,
    /// Orders per step.
    pub orders: usize,
    /// Orders in flight at once.
    pub concurrency: usize,
    /// Print every policy file as it is published.
    pub show_policy: bool,
    /// `Some(shape)`: the order-service takes its policy from the dev control plane over
    /// xDS, in istiod's `shape` (every policy the stories publish is written to the control
    /// plane's input file); `None`: policies are published to the mesh directly.
    pub control_plane: Option<mesh_tower::IstioShape>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(4),
            orders: 200,
            concurrency: 8,
            show_policy: false,
            control_plane: None,
        }
    }
}

impl Options {
    /// Sets the bound on each story's load phase.
    #[must_use]
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Sets the orders per step.
    #[must_use]
    pub fn with_orders(mut self, orders: usize) -> Self {
        self.orders = orders.max(1);
        self
    }

    /// Takes the order-service's policy from the dev control plane in istiod's `shape`.
    #[must_use]
    pub fn with_control_plane(mut self, shape: mesh_tower::IstioShape) -> Self {
        self.control_plane = Some(shape);
        self
    }

    /// Prints every policy file as it is published.
    #[must_use]
    pub fn with_show_policy(mut self, show: bool) -> Self {
        self.show_policy = show;
        self
    }
}

/// What a story works with.
#[derive(Debug)]
pub(crate) struct Story<'a> {
    pub fleet: &'a mut Fleet,
    pub out: &'a mut Reporter,
    pub options: &'a Options,
    /// The OTLP receiver, when the walkthrough includes the tracing story.
    pub telemetry: Option<&'a Telemetry>,
}

impl Story<'_> {
    /// Publishes `policy` to the mesh, saying so (and printing it with `--show-policy`).
    pub async fn publish(&mut self, policy: &Policy, origin: &str) -> Result<(), DemoError> {
        let generation = self.fleet.publish(policy, origin).await?;
        if self.options.show_policy {
            self.out.line(format!("  --- policy {origin} ---"));
            for line in self.fleet.yaml(policy).lines() {
                self.out.line(format!("  | {line}"));
            }
        }
        tracing::debug!(origin, generation, "policy published");
        Ok(())
    }

    /// Sends `batch`, showing a progress row `key` drawn by `show`; `until` may end it early.
    pub async fn drive(
        &mut self,
        batch: Batch<'_>,
        key: &str,
        show: impl Fn(&Tally) -> String,
        until: impl FnMut(&Tally) -> Flow,
    ) -> Tally {
        let client = self.fleet.client().clone();
        self.drive_with(&client, batch, key, show, until).await
    }

    /// As [`Story::drive`], through another order-service client.
    pub async fn drive_with(
        &mut self,
        client: &OrderClient,
        batch: Batch<'_>,
        key: &str,
        show: impl Fn(&Tally) -> String,
        mut until: impl FnMut(&Tally) -> Flow,
    ) -> Tally {
        let out = &mut *self.out;
        load::run(client, batch, |tally| {
            out.progress(key, show(tally));
            until(tally)
        })
        .await
    }

    /// A deadline `fraction` of the story's duration from now.
    pub fn deadline(&self, fraction: f64) -> Instant {
        Instant::now() + self.options.duration.mul_f64(fraction.max(0.0))
    }
}

/// The retries every story's routes carry unless it says otherwise.
pub(crate) fn default_retries() -> Retries {
    Retries {
        attempts: 2,
        per_try_timeout: Duration::from_secs(2),
    }
}

/// Runs one story and returns its outcome; a story that cannot run yet is skipped.
pub(crate) async fn run_one(
    scenario: Scenario,
    story: &mut Story<'_>,
) -> Result<Outcome, DemoError> {
    if let Some(feature) = scenario.needs() {
        return Ok(Outcome::Skipped(feature.to_owned()));
    }
    match scenario {
        Scenario::Canary => canary::run(story).await,
        Scenario::HeaderRouting => header_routing::run(story).await,
        Scenario::FailingReplica => failing_replica::run(story).await,
        Scenario::Overload => overload::run(story).await,
        Scenario::Authorization => authorization::run(story).await,
        Scenario::Tracing => traces::run(story).await,
        Scenario::ControlPlane => control_plane::run(story).await,
    }
}
