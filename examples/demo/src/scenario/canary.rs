//! Canary: each step publishes a VirtualService with a larger v2 weight and measures the
//! split of real orders.

use crate::load::{Batch, Flow, Tally};
use crate::policy::Policy;
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// The v2 weights, in percent.
pub(crate) const STEPS: [u32; 5] = [5, 10, 25, 50, 100];

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let mut problems = Vec::new();
    let mut total = 0;
    for weight in STEPS {
        let policy = Policy::all_v1()
            .with_v2_weight(weight)
            .with_retries(default_retries());
        story.publish(&policy, &format!("canary-{weight}")).await?;
        let batch = Batch::new(
            story.options.orders,
            story.options.concurrency,
            story.deadline(1.0 / STEPS.len() as f64),
        );
        let key = weight.to_string();
        let tally = story
            .drive(batch, &key, |t| row(weight, t, "..."), |_| Flow::Continue)
            .await;
        let verdict = judge(weight, &tally);
        let status = if verdict.is_ok() {
            "ok"
        } else {
            "NOT AS EXPECTED"
        };
        story.out.row(&key, row(weight, &tally, status));
        if let Err(why) = verdict {
            problems.push(format!("v2 at {weight}%: {why}"));
        }
        total += tally.total();
    }
    Ok(if problems.is_empty() {
        Outcome::Passed(format!(
            "{} steps, {total} orders, every split as published, 0 failed orders",
            STEPS.len()
        ))
    } else {
        Outcome::Failed(problems.join("; "))
    })
}

fn row(weight: u32, t: &Tally, status: &str) -> String {
    let n = t.total();
    let v2 = t.created_by("v2");
    let share = if n == 0 {
        0.0
    } else {
        100.0 * v2 as f64 / n as f64
    };
    format!(
        "  v2 at {weight:>3}%: {n:>4} orders  v1 {:>4}  v2 {v2:>4} ({share:5.1}% measured)  failed {}  {status}",
        t.created_by("v1"),
        t.failed_total(),
    )
}

/// `Ok` when no order failed and the measured v2 count is where the weight says (within
/// four standard deviations of the binomial, plus one).
fn judge(weight: u32, t: &Tally) -> Result<(), String> {
    let n = t.total();
    if n == 0 {
        return Err("no order was answered".to_owned());
    }
    if t.failed_total() > 0 {
        return Err(format!(
            "{} orders failed: {}",
            t.failed_total(),
            t.failures()
        ));
    }
    let other = t.created_total() - t.created_by("v1") - t.created_by("v2");
    if other > 0 {
        return Err(format!("{other} orders paid by neither v1 nor v2"));
    }
    let p = f64::from(weight) / 100.0;
    let expected = n as f64 * p;
    let slack = 4.0 * (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
    let v2 = t.created_by("v2") as f64;
    if (v2 - expected).abs() > slack {
        return Err(format!(
            "v2 got {v2} of {n} orders, expected {expected:.0} ± {slack:.0}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{Answer, OrderResult};

    fn tally(v1: usize, v2: usize, failed: usize) -> Tally {
        let mut t = Tally::default();
        let mut add = |result: OrderResult, n| {
            for _ in 0..n {
                t.add(Answer {
                    result: result.clone(),
                    latency: Duration::ZERO,
                });
            }
        };
        add(
            OrderResult::Created {
                version: "v1".into(),
            },
            v1,
        );
        add(
            OrderResult::Created {
                version: "v2".into(),
            },
            v2,
        );
        add(
            OrderResult::Failed {
                kind: "502 UNAVAILABLE".into(),
                message: String::new(),
            },
            failed,
        );
        t
    }

    #[test]
    fn a_split_near_the_weight_passes_and_a_far_one_fails() {
        assert!(judge(5, &tally(190, 10, 0)).is_ok());
        assert!(judge(100, &tally(0, 200, 0)).is_ok());
        assert!(judge(100, &tally(3, 197, 0)).is_err());
        assert!(judge(50, &tally(180, 20, 0)).is_err());
        assert!(judge(50, &tally(100, 99, 1)).is_err());
    }
}
