//! Authorization: every call to the payment service is mutual TLS (STRICT), so the
//! service knows each caller's SPIFFE identity, and the seed guide's `payment-access`
//! AuthorizationPolicy lets only `sa/order-service` call the payment methods. A second
//! order-service, same code and same CA but running as `sa/intruder`, is refused.

use crate::fleet::ReplicaId;
use crate::identity::{spiffe_id, INTRUDER_SA, ORDER_SA};
use crate::load::{Batch, Flow, Tally};
use crate::policy::{Policy, PAYMENT_ACCESS_PRINCIPAL};
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// What a refused order comes back as.
const DENIED: &str = "502 PERMISSION_DENIED";

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let policy = Policy::all_v1().with_retries(default_retries());
    story.publish(&policy, "authorization").await?;
    story.out.line(format!(
        "  payment-service: PeerAuthentication STRICT; AuthorizationPolicy payment-access allows \
         {PAYMENT_ACCESS_PRINCIPAL} to POST /payment.v1.PaymentService/*"
    ));
    if story.options.show_policy {
        let path = story.fleet.payment_policy(ReplicaId::V1First).to_path_buf();
        story.out.line(format!(
            "  --- payment-service policy {} ---",
            path.display()
        ));
        let text = std::fs::read_to_string(&path).map_err(|source| DemoError::Files {
            path: path.clone(),
            source,
        })?;
        for line in text.lines() {
            story.out.line(format!("  | {line}"));
        }
    }
    let intruder = story.fleet.start_caller(INTRUDER_SA, &policy).await?;
    story.out.line(format!(
        "  callers: order-service as {}, a second order-service as {} (same CA)",
        spiffe_id(ORDER_SA),
        intruder.identity().spiffe_id()
    ));
    let orders = story.options.orders;
    let concurrency = story.options.concurrency;

    let batch = Batch::new(orders, concurrency, story.deadline(0.5));
    let client = story.fleet.client().clone();
    let allowed = story
        .drive_with(
            &client,
            batch,
            ORDER_SA,
            |t| allowed_row(t, "..."),
            |_| Flow::Continue,
        )
        .await;
    let allowed_ok = allowed.total() > 0 && allowed.created_total() == allowed.total();
    story.out.row(
        ORDER_SA,
        allowed_row(&allowed, if allowed_ok { "ok" } else { "NOT AS EXPECTED" }),
    );

    let batch = Batch::new(orders, concurrency, story.deadline(0.5));
    let client = intruder.client().clone();
    let denied = story
        .drive_with(
            &client,
            batch,
            INTRUDER_SA,
            |t| denied_row(t, "..."),
            |_| Flow::Continue,
        )
        .await;
    let denied_n = denied.failed.get(DENIED).copied().unwrap_or(0);
    let denied_ok = denied.total() > 0 && denied_n == denied.total();
    story.out.row(
        INTRUDER_SA,
        denied_row(&denied, if denied_ok { "ok" } else { "NOT AS EXPECTED" }),
    );
    if let Some(message) = denied.answers.iter().find_map(|a| match &a.result {
        crate::load::OrderResult::Failed { kind, message } if kind == DENIED => {
            Some(message.clone())
        }
        _ => None,
    }) {
        story
            .out
            .line(format!("  the intruder's orders say: {message}"));
    }
    intruder.stop().await?;

    let mut problems = Vec::new();
    if !allowed_ok {
        problems.push(format!(
            "sa/{ORDER_SA}: {} of {} orders paid (failed: {})",
            allowed.created_total(),
            allowed.total(),
            allowed.failures()
        ));
    }
    if !denied_ok {
        problems.push(format!(
            "sa/{INTRUDER_SA}: {denied_n} of {} orders denied (paid {}, failed: {})",
            denied.total(),
            denied.created_total(),
            denied.failures()
        ));
    }
    Ok(if problems.is_empty() {
        Outcome::Passed(format!(
            "{n} of {n} orders from sa/{ORDER_SA} paid over mTLS; {m} of {m} from sa/{INTRUDER_SA} \
             denied (PERMISSION_DENIED)",
            n = allowed.total(),
            m = denied.total()
        ))
    } else {
        Outcome::Failed(problems.join("; "))
    })
}

fn allowed_row(t: &Tally, status: &str) -> String {
    format!(
        "  sa/{ORDER_SA:<14} -> payment: {} of {} orders paid  (failed: {})  {status}",
        t.created_total(),
        t.total(),
        t.failures(),
    )
}

fn denied_row(t: &Tally, status: &str) -> String {
    format!(
        "  sa/{INTRUDER_SA:<14} -> payment: {} of {} orders denied  (paid {}, failed: {})  {status}",
        t.failed.get(DENIED).copied().unwrap_or(0),
        t.total(),
        t.created_total(),
        t.failures(),
    )
}
