//! A failing replica: v1 #2 is restarted on its port failing half its calls. Retries (to
//! the other replica) keep every order working, outlier detection ejects the replica, and
//! once it is fixed it comes back after the base ejection time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::fleet::{Behaviour, ReplicaId};
use crate::load::{Batch, Flow, Tally};
use crate::policy::{Outlier, Policy, Pool, Retries};
use crate::DemoError;

use super::{Outcome, Story};

/// The replica that breaks.
const VICTIM: ReplicaId = ReplicaId::V1Second;
/// How often the broken replica fails.
const FAIL_RATE: f64 = 0.5;
/// The outlier detection of the demo policy: short, so that the story takes seconds.
const OUTLIER: Outlier = Outlier {
    consecutive_5xx: 3,
    interval: Duration::from_millis(500),
    base_ejection_time: Duration::from_secs(2),
    max_ejection_percent: 50,
};
/// Room for every order in flight to retry at once (Envoy's default `maxRetries` is 3,
/// which would turn some hidden failures into failed orders under concurrency).
const POOL: Pool = Pool {
    max_connections: 1024,
    http1_max_pending_requests: 1024,
    http2_max_requests: 1024,
    max_retries: 64,
};
/// Extra time allowed, beyond the base ejection time, for the replica to return.
const RETURN_SLACK: Duration = Duration::from_secs(8);

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let retries = Retries {
        attempts: 3,
        per_try_timeout: Duration::from_secs(1),
    };
    let policy = Policy::all_v1()
        .with_retries(retries)
        .with_outlier(OUTLIER)
        .with_pool(POOL);
    story.publish(&policy, "failing-replica").await?;
    story.out.line(format!(
        "  policy: all orders to v1 (2 replicas); retries {} on unavailable (maxRetries {}); \
         outlierDetection consecutive5xxErrors {}, interval {:?}, baseEjectionTime {:?}",
        retries.attempts,
        POOL.max_retries,
        OUTLIER.consecutive_5xx,
        OUTLIER.interval,
        OUTLIER.base_ejection_time
    ));
    let addr = story.fleet.addr(VICTIM);
    let result = break_and_heal(story, addr).await;
    // Whatever happened, leave the replica healthy for the stories after this one.
    story.fleet.restart(VICTIM, Behaviour::HEALTHY).await?;
    result
}

async fn break_and_heal(story: &mut Story<'_>, addr: SocketAddr) -> Result<Outcome, DemoError> {
    let name = VICTIM.name();
    story
        .fleet
        .restart(
            VICTIM,
            Behaviour {
                fail_rate: FAIL_RATE,
                latency: Duration::ZERO,
            },
        )
        .await?;
    story.out.line(format!(
        "  payment-service {name} ({addr}) restarted failing {:.0}% of its calls with UNAVAILABLE",
        FAIL_RATE * 100.0
    ));

    // Phase 1: orders until the replica is ejected.
    let mesh = story.fleet.mesh().clone();
    let batch = Batch::new(
        story.options.orders.max(50) * 10,
        story.options.concurrency,
        story.deadline(1.0) + RETURN_SLACK,
    );
    let broken = story
        .drive(
            batch,
            "broken",
            |t| {
                format!(
                    "  while {name} fails: {} orders, {} failed  ...",
                    t.total(),
                    t.failed_total()
                )
            },
            |_| {
                if is_ejected(&mesh, addr) {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        )
        .await;
    let ejected = is_ejected(&mesh, addr);
    story.out.row(
        "broken",
        format!(
            "  while {name} fails: {} orders, {} failed (retries hid its failures)  {}",
            broken.total(),
            broken.failed_total(),
            if broken.failed_total() == 0 {
                "ok"
            } else {
                "NOT AS EXPECTED"
            },
        ),
    );
    story.out.row(
        "ejected",
        if ejected {
            format!(
                "  outlier detection: {name} ejected (mesh.cluster_status(): ejected = true)  ok"
            )
        } else {
            format!("  outlier detection: {name} was never ejected  NOT AS EXPECTED")
        },
    );
    if !ejected {
        return Ok(Outcome::Failed(format!(
            "{name} was not ejected after {} orders (failed: {})",
            broken.total(),
            broken.failures()
        )));
    }

    // Phase 2: the replica is fixed; it stays out until its ejection time is over.
    let ejected_at = Instant::now();
    story.fleet.restart(VICTIM, Behaviour::HEALTHY).await?;
    story.out.line(format!(
        "  {name} fixed (restarted healthy on {addr}); it stays ejected for baseEjectionTime {:?}",
        OUTLIER.base_ejection_time
    ));
    let batch = Batch::new(
        10_000,
        1,
        Instant::now() + OUTLIER.base_ejection_time + RETURN_SLACK,
    )
    .paced(Duration::from_millis(20));
    let waiting = story
        .drive(
            batch,
            "return",
            |t| {
                format!(
                    "  {name} ejected for {:.1}s: {} orders, {} failed  ...",
                    ejected_at.elapsed().as_secs_f64(),
                    t.total(),
                    t.failed_total()
                )
            },
            |_| {
                if is_ejected(&mesh, addr) {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            },
        )
        .await;
    let returned = !is_ejected(&mesh, addr);
    let after = ejected_at.elapsed();
    story.out.row(
        "return",
        if returned {
            format!(
                "  {name} returned to service after {:.1}s (baseEjectionTime {:?}); {} orders meanwhile, {} failed  ok",
                after.as_secs_f64(),
                OUTLIER.base_ejection_time,
                waiting.total(),
                waiting.failed_total()
            )
        } else {
            format!("  {name} still ejected after {:.1}s  NOT AS EXPECTED", after.as_secs_f64())
        },
    );

    // Phase 3: a few orders with both replicas in service.
    let batch = Batch::new(
        story.options.orders.min(50),
        story.options.concurrency,
        story.deadline(0.25),
    );
    let back = story
        .drive(batch, "back", |t| back_row(t, "..."), |_| Flow::Continue)
        .await;
    let back_ok = back.failed_total() == 0;
    story.out.row(
        "back",
        back_row(&back, if back_ok { "ok" } else { "NOT AS EXPECTED" }),
    );

    let failed = broken.failed_total() + waiting.failed_total() + back.failed_total();
    Ok(if returned && failed == 0 {
        Outcome::Passed(format!(
            "0 of {} orders failed; {name} ejected after {} answered orders, back after {:.1}s",
            broken.total() + waiting.total() + back.total(),
            broken.total(),
            after.as_secs_f64()
        ))
    } else if !returned {
        Outcome::Failed(format!(
            "{name} did not return within {:?}",
            OUTLIER.base_ejection_time + RETURN_SLACK
        ))
    } else {
        Outcome::Failed(format!(
            "{failed} orders failed: {}; {}; {}",
            broken.failures(),
            waiting.failures(),
            back.failures()
        ))
    })
}

fn back_row(t: &Tally, status: &str) -> String {
    format!(
        "  both v1 replicas in service: {} orders, {} failed  {status}",
        t.total(),
        t.failed_total()
    )
}

/// Whether the mesh has ejected the endpoint at `addr` in any cluster.
fn is_ejected(mesh: &mesh_tower::Mesh, addr: SocketAddr) -> bool {
    mesh.cluster_status()
        .iter()
        .flat_map(|(_, endpoints)| endpoints)
        .any(|ep| ep.address == addr && ep.ejected)
}
