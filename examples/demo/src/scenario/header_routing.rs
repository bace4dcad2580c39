//! Header routing: a VirtualService match on `end-user: beta-tester` sends those orders to
//! v2 while everyone else stays on v1.

use crate::load::{Batch, Flow, Tally};
use crate::policy::{Policy, BETA_TESTER};
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// Another user, who must stay on the stable version.
const OTHER_USER: &str = "jason";

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let policy = Policy::all_v1()
        .with_beta_testers_to_v2()
        .with_retries(default_retries());
    story.publish(&policy, "header-routing").await?;
    story.out.line(format!(
        "  policy: match end-user: exact {BETA_TESTER} -> subset v2; everyone else -> subset v1"
    ));
    let mut problems = Vec::new();
    let mut total = 0;
    for (user, expected) in [(BETA_TESTER, "v2"), (OTHER_USER, "v1")] {
        let batch = Batch::new(
            story.options.orders,
            story.options.concurrency,
            story.deadline(0.5),
        )
        .as_user(user);
        let tally = story
            .drive(
                batch,
                user,
                |t| row(user, expected, t, "..."),
                |_| Flow::Continue,
            )
            .await;
        let n = tally.total();
        let hit = tally.created_by(expected);
        let ok = n > 0 && hit == n;
        story.out.row(
            user,
            row(
                user,
                expected,
                &tally,
                if ok { "ok" } else { "NOT AS EXPECTED" },
            ),
        );
        if !ok {
            problems.push(format!(
                "end-user {user}: {hit} of {n} orders reached {expected} (failed: {})",
                tally.failures()
            ));
        }
        total += n;
    }
    Ok(if problems.is_empty() {
        Outcome::Passed(format!(
            "{total} orders; every {BETA_TESTER} order reached v2, every other order v1"
        ))
    } else {
        Outcome::Failed(problems.join("; "))
    })
}

fn row(user: &str, expected: &str, t: &Tally, status: &str) -> String {
    format!(
        "  end-user: {user:<12} -> {expected}: {} of {} orders  (v1 {}, v2 {}, failed {})  {status}",
        t.created_by(expected),
        t.total(),
        t.created_by("v1"),
        t.created_by("v2"),
        t.failed_total(),
    )
}
