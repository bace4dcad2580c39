//! Overload: v2 turns slow, the DestinationRule caps requests in flight to it
//! (`connectionPool.http.http2MaxRequests`), and bursts of orders arrive. The circuit
//! breaker answers the excess at once (502 from the order-service, gRPC `UNAVAILABLE`,
//! "circuit open") instead of letting it queue behind the slow calls.

use std::time::Duration;

use crate::fleet::{Behaviour, ReplicaId};
use crate::load::{median, Batch, Flow, OrderResult, Tally};
use crate::policy::{Policy, Pool};
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// What each call to the slow replica costs.
const LATENCY: Duration = Duration::from_millis(300);
/// The connection-pool limits of the demo policy.
const POOL: Pool = Pool {
    max_connections: 10,
    http1_max_pending_requests: 10,
    http2_max_requests: 4,
    max_retries: 3,
};
/// Orders per burst, all sent at once.
const BURST: usize = 32;
/// A burst's orders are all sent within this window (in practice, at once).
const BURST_WINDOW: Duration = Duration::from_secs(5);
/// At most this many bursts.
const MAX_BURSTS: usize = 3;

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let policy = Policy::all_v1()
        .with_v2_weight(100)
        .with_retries(default_retries())
        .with_pool(POOL);
    story.publish(&policy, "overload").await?;
    story
        .fleet
        .restart(
            ReplicaId::V2,
            Behaviour {
                fail_rate: 0.0,
                latency: LATENCY,
            },
        )
        .await?;
    story.out.line(format!(
        "  payment-service v2 now takes {LATENCY:?} per call; policy: all orders to v2, \
         connectionPool http2MaxRequests {}; bursts of {BURST} orders at once",
        POOL.http2_max_requests
    ));
    let result = bursts(story).await;
    story
        .fleet
        .restart(ReplicaId::V2, Behaviour::HEALTHY)
        .await?;
    Ok(result)
}

async fn bursts(story: &mut Story<'_>) -> Outcome {
    let deadline = story.deadline(1.0);
    let mut all = Tally::default();
    let mut problems = Vec::new();
    for n in 1..=MAX_BURSTS {
        // At least one burst; more while the story's time lasts.
        if n > 1 && tokio::time::Instant::now() >= deadline {
            break;
        }
        let key = format!("burst-{n}");
        // A burst is sent whole: its own deadline only guards against a stall.
        let batch = Batch::new(BURST, BURST, tokio::time::Instant::now() + BURST_WINDOW);
        let tally = story
            .drive(batch, &key, |t| row(n, t, "..."), |_| Flow::Continue)
            .await;
        let verdict = judge(&tally);
        let status = if verdict.is_ok() {
            "ok"
        } else {
            "NOT AS EXPECTED"
        };
        story.out.row(&key, row(n, &tally, status));
        if let Err(why) = verdict {
            problems.push(format!("burst {n}: {why}"));
        }
        for answer in tally.answers {
            all.add(answer);
        }
    }
    let example = all.answers.iter().find_map(|a| match &a.result {
        OrderResult::Failed { kind, message } if is_shed(&a.result) => {
            Some(format!("{kind}: {message}"))
        }
        _ => None,
    });
    if let Some(example) = example {
        story
            .out
            .line(format!("  a shed order's answer: {example}"));
    }
    if !problems.is_empty() {
        return Outcome::Failed(problems.join("; "));
    }
    let (served, shed) = split(&all);
    Outcome::Passed(format!(
        "{} orders in bursts of {BURST}: {} served (median {}), {} shed by the circuit breaker \
         as 502 UNAVAILABLE \"circuit open\" (median {})",
        all.total(),
        served.len(),
        ms(median(served)),
        shed.len(),
        ms(median(shed)),
    ))
}

/// Latencies of the served orders and of the orders shed by an open circuit.
fn split(t: &Tally) -> (Vec<Duration>, Vec<Duration>) {
    let mut served = Vec::new();
    let mut shed = Vec::new();
    for a in &t.answers {
        match &a.result {
            OrderResult::Created { .. } => served.push(a.latency),
            OrderResult::Failed { .. } if is_shed(&a.result) => shed.push(a.latency),
            OrderResult::Failed { .. } => {}
        }
    }
    (served, shed)
}

/// A 502 from the order-service whose payment call the breaker refused.
fn is_shed(result: &OrderResult) -> bool {
    matches!(result, OrderResult::Failed { kind, message }
        if kind == "502 UNAVAILABLE" && message.contains("circuit open"))
}

fn judge(t: &Tally) -> Result<(), String> {
    let (served, shed) = split(t);
    let other = t.total() - served.len() - shed.len();
    if other > 0 {
        let sample = t.answers.iter().find_map(|a| match &a.result {
            OrderResult::Failed { kind, message } if !is_shed(&a.result) => {
                Some(format!("{kind}: {message}"))
            }
            _ => None,
        });
        return Err(format!(
            "{other} orders failed otherwise than by the breaker (e.g. {})",
            sample.unwrap_or_default()
        ));
    }
    if served.is_empty() {
        return Err("no order was served".to_owned());
    }
    if shed.is_empty() {
        return Err(format!(
            "nothing was shed although {} orders arrived at once with a limit of {}",
            t.total(),
            POOL.http2_max_requests
        ));
    }
    match (median(served), median(shed)) {
        (Some(s), Some(r)) if r < s => Ok(()),
        (s, r) => Err(format!(
            "shed orders were not faster than served ones ({} vs {})",
            ms(r),
            ms(s)
        )),
    }
}

fn row(n: usize, t: &Tally, status: &str) -> String {
    let (served, shed) = split(t);
    format!(
        "  burst {n}: {:>2}/{BURST} answered: {:>2} served (median {:>6}), {:>2} shed by the breaker (median {:>6})  {status}",
        t.total(),
        served.len(),
        ms(median(served)),
        shed.len(),
        ms(median(shed)),
    )
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0),
    )
}
