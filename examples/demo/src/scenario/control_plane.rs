//! The control plane goes away and comes back: an order-service whose whole policy comes
//! over xDS from the dev control plane (examples/control-plane, fed the same Istio YAML)
//! keeps serving on the last policy while the control plane is down, and follows edits
//! again once it is back.
//!
//! 1. the control plane serves "all v1"; a new order-service starts from a gRPC xDS
//!    bootstrap (certificates from a `file_watcher` provider, as the Istio agent writes it);
//! 2. the file is edited to "all v2": the edit is pushed and orders follow;
//! 3. the control plane stops: orders go on, still to v2, none fails;
//! 4. the file is edited back to "all v1" and the control plane restarts on the same
//!    port: the client reconnects and orders follow.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use control_plane::{Config, ControlPlane};
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::Mesh;
use tokio::time::Instant;

use crate::identity::{Issued, NAMESPACE, ORDER_SA};
use crate::load::{Batch, Flow, Tally};
use crate::policy::Policy;
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// How long the client may take to see a push or to reconnect; generous, the reconnect
/// backoff starts at one second.
const PATIENCE: Duration = Duration::from_secs(30);
/// The most orders one phase sends while waiting for the client to follow.
const MAX_ORDERS: usize = 20_000;

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let dir = story.fleet.identity_dir().join("control-plane");
    let input = dir.join("payment-service.yaml");
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| DemoError::Files {
            path: path.to_path_buf(),
            source,
        })
    };
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Files {
        path: dir.clone(),
        source,
    })?;
    let endpoints = story.fleet.endpoints();
    let to = |v2: u32| {
        Policy::all_v1()
            .with_v2_weight(v2)
            .with_retries(default_retries())
            .control_plane_yaml(&endpoints)
    };
    write(&input, &to(0))?;
    let config = Config {
        paths: vec![input.clone()],
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        unix: None,
        poll: Duration::from_millis(100),
    };
    let cp = ControlPlane::start(config.clone()).await?;
    let addr = cp.addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    story.out.line(format!(
        "  control plane serving ADS on {addr} from {}",
        input.display()
    ));
    let bootstrap = dir.join("bootstrap.json");
    write(
        &bootstrap,
        &bootstrap_json(addr, story.fleet.order_identity()),
    )?;
    let mesh = Mesh::builder()
        .bootstrap(&bootstrap)
        .workload(WorkloadLabels::from_env(ORDER_SA))
        .build()?;
    let caller = story
        .fleet
        .start_caller_on("order-service (xDS)", mesh.clone())
        .await?;
    story.out.line(format!(
        "  order-service (xDS) started from {}",
        bootstrap.display()
    ));
    let client = caller.client().clone();
    let mut problems = Vec::new();
    let mut total = 0;
    let orders = story.options.orders;
    let concurrency = story.options.concurrency;

    // 1. The control plane's first config: everything to v1.
    let tally = story
        .drive_with(
            &client,
            Batch::new(orders, concurrency, story.deadline(0.25)),
            "cp-1",
            |t| row("serving", "all v1", t),
            |_| Flow::Continue,
        )
        .await;
    check(&tally, "v1", "from the control plane", &mut problems);
    story.out.row("cp-1", row("serving", "all v1", &tally));
    total += tally.total();

    // 2. An edit is pushed and followed.
    write(&input, &to(100))?;
    let (tally, took) = until_version(story, &client, "cp-2", "edited: all v2", "v2").await;
    check_switch(&tally, took, "the pushed edit", &mut problems);
    total += tally.total();

    // 3. The control plane goes away; the last policy stays in force.
    drop(cp);
    let down = wait_disconnected(&mesh).await;
    if !down {
        problems.push("the client never noticed the control plane had stopped".to_owned());
    }
    let tally = story
        .drive_with(
            &client,
            Batch::new(orders, concurrency, story.deadline(0.25)),
            "cp-3",
            |t| row("STOPPED", "last policy", t),
            |_| Flow::Continue,
        )
        .await;
    check(
        &tally,
        "v2",
        "while the control plane is down",
        &mut problems,
    );
    story.out.row("cp-3", row("STOPPED", "last policy", &tally));
    total += tally.total();

    // 4. Edited while down, restarted on the same port: the client comes back and follows.
    write(&input, &to(0))?;
    let restarted = restart(Config {
        listen: Some(addr),
        ..config
    })
    .await?;
    story
        .out
        .line(format!("  control plane restarted on {addr}"));
    let (tally, took) = until_version(story, &client, "cp-4", "restarted: all v1", "v1").await;
    check_switch(&tally, took, "the restarted control plane", &mut problems);
    total += tally.total();

    drop(restarted);
    caller.stop().await?;
    Ok(if problems.is_empty() {
        Outcome::Passed(format!(
            "{total} orders, 0 failed: pushes followed, the last policy served while the control plane was down, updates resumed after its restart"
        ))
    } else {
        Outcome::Failed(problems.join("; "))
    })
}

/// A gRPC xDS bootstrap for the order-service: the control plane at `addr`, Istio's node
/// id shape, and its certificates from a `file_watcher` provider named `default`.
pub(crate) fn bootstrap_json(addr: SocketAddr, id: &Issued) -> String {
    let path = |p: PathBuf| serde_json::Value::String(p.display().to_string());
    serde_json::json!({
        "xds_servers": [{
            "server_uri": addr.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": format!("sidecar~127.0.0.1~{ORDER_SA}-xds.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"),
            "cluster": ORDER_SA,
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": NAMESPACE},
        },
        "certificate_providers": {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": path(id.chain()),
                    "private_key_file": path(id.key()),
                    "ca_certificate_file": path(id.roots()),
                    "refresh_interval": "900s",
                },
            },
        },
    })
    .to_string()
}

/// Sends orders until one is answered by `version` and `orders` more after it; returns the
/// tally and how long the switch took.
async fn until_version(
    story: &mut Story<'_>,
    client: &order_service::client::OrderClient,
    key: &str,
    what: &'static str,
    version: &'static str,
) -> (Tally, Option<Duration>) {
    let started = Instant::now();
    let mut switched: Option<(Duration, usize)> = None;
    let after = story.options.orders / 4;
    let batch =
        Batch::new(MAX_ORDERS, 1, Instant::now() + PATIENCE).paced(Duration::from_millis(5));
    let tally = story
        .drive_with(
            client,
            batch,
            key,
            |t| row("serving", what, t),
            |t| {
                if switched.is_none() && t.created_by(version) > 0 {
                    switched = Some((started.elapsed(), t.total()));
                }
                match switched {
                    Some((_, at)) if t.total() >= at + after => Flow::Stop,
                    _ => Flow::Continue,
                }
            },
        )
        .await;
    let took = switched.map(|(d, _)| d);
    let status = match took {
        Some(d) => format!("followed in {} ms", d.as_millis()),
        None => "NOT FOLLOWED".to_owned(),
    };
    story
        .out
        .row(key, format!("{}  {status}", row("serving", what, &tally)));
    (tally, took)
}

fn row(state: &str, what: &str, t: &Tally) -> String {
    format!(
        "  control plane {state:<8} {what:<18} {:>4} orders  v1 {:>4}  v2 {:>4}  failed {}",
        t.total(),
        t.created_by("v1"),
        t.created_by("v2"),
        t.failed_total()
    )
}

fn check(t: &Tally, version: &str, when: &str, problems: &mut Vec<String>) {
    if t.total() == 0 {
        problems.push(format!("no order answered {when}"));
    } else if t.failed_total() > 0 {
        problems.push(format!(
            "{} orders failed {when}: {}",
            t.failed_total(),
            t.failures()
        ));
    } else if t.created_by(version) != t.total() {
        problems.push(format!(
            "{} of {} orders reached {version} {when}",
            t.created_by(version),
            t.total()
        ));
    }
}

fn check_switch(t: &Tally, took: Option<Duration>, what: &str, problems: &mut Vec<String>) {
    if took.is_none() {
        problems.push(format!("orders did not follow {what} within {PATIENCE:?}"));
    }
    if t.failed_total() > 0 {
        problems.push(format!(
            "{} orders failed while following {what}: {}",
            t.failed_total(),
            t.failures()
        ));
    }
}

/// Waits (bounded) until the mesh's xDS client reports its stream down.
async fn wait_disconnected(mesh: &Mesh) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if mesh.xds_view().is_some_and(|v| !v.connected) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Starts the control plane again on its old port, retrying briefly while the port is
/// being released.
async fn restart(config: Config) -> Result<ControlPlane, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ControlPlane::start(config.clone()).await {
            Ok(cp) => return Ok(cp),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "control plane restart: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
