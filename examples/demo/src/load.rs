//! Drives orders through the order-service over HTTP and tallies what came back.
//!
//! Every load loop is bounded twice: by a number of orders and by a deadline after which
//! no new order is sent; each order also has its own timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use order_service::client::OrderClient;
use order_service::Order;
use tokio::time::Instant;

/// How long one order may take before it counts as failed.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one order came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderResult {
    /// 201: paid by this payment version (`"none"` when the order has none).
    Created {
        /// The `payment_version` of the order.
        version: String,
    },
    /// Anything else.
    Failed {
        /// `502 UNAVAILABLE`, `timeout`, `no response`...
        kind: String,
        /// The error message of the reply, if it had one.
        message: String,
    },
}

/// One order's result and how long it took.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The result.
    pub result: OrderResult,
    /// From sending to the whole answer.
    pub latency: Duration,
}

/// The results of a batch of orders.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Orders created, by payment version.
    pub created: BTreeMap<String, usize>,
    /// Orders failed, by kind.
    pub failed: BTreeMap<String, usize>,
    /// Every answer, in completion order.
    pub answers: Vec<Answer>,
}

impl Tally {
    /// Counts one answer.
    pub fn add(&mut self, answer: Answer) {
        match &answer.result {
            OrderResult::Created { version } => {
                *self.created.entry(version.clone()).or_default() += 1;
            }
            OrderResult::Failed { kind, .. } => {
                *self.failed.entry(kind.clone()).or_default() += 1;
            }
        }
        self.answers.push(answer);
    }

    /// Orders answered.
    pub fn total(&self) -> usize {
        self.answers.len()
    }

    /// Orders created by `version`.
    pub fn created_by(&self, version: &str) -> usize {
        self.created.get(version).copied().unwrap_or(0)
    }

    /// Orders created.
    pub fn created_total(&self) -> usize {
        self.created.values().sum()
    }

    /// Orders failed.
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }

    /// Failed orders as `kind xN, ...`, or `none`.
    pub fn failures(&self) -> String {
        if self.failed.is_empty() {
            return "none".to_owned();
        }
        self.failed
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A batch of orders to send.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// At most this many orders.
    pub orders: usize,
    /// This many in flight at once.
    pub concurrency: usize,
    /// No order is sent after this instant.
    pub deadline: Instant,
    /// The `end-user` header, if any.
    pub end_user: Option<&'a str>,
    /// A pause before each order (with `concurrency: 1`, the pace of the orders).
    pub pause: Duration,
}

impl<'a> Batch<'a> {
    /// Up to `orders` orders, `concurrency` at a time, none sent after `deadline`.
    pub fn new(orders: usize, concurrency: usize, deadline: Instant) -> Self {
        Self {
            orders,
            concurrency,
            deadline,
            end_user: None,
            pause: Duration::ZERO,
        }
    }

    /// Sends every order as `end_user`.
    #[must_use]
    pub fn as_user(mut self, end_user: &'a str) -> Self {
        self.end_user = Some(end_user);
        self
    }

    /// Waits `pause` before each order.
    #[must_use]
    pub fn paced(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }
}

/// Sends one order and classifies the answer.
pub async fn order(client: &OrderClient, end_user: Option<&str>) -> Answer {
    let started = Instant::now();
    let sent = tokio::time::timeout(ORDER_TIMEOUT, client.create_order("book", 1250, end_user));
    let result = match sent.await {
        Err(_) => OrderResult::Failed {
            kind: "timeout".to_owned(),
            message: format!("no answer within {ORDER_TIMEOUT:?}"),
        },
        Ok(Err(e)) => OrderResult::Failed {
            kind: "no response".to_owned(),
            message: e.to_string(),
        },
        Ok(Ok(reply)) if reply.status == http::StatusCode::CREATED => match reply.json::<Order>() {
            Ok(order) => OrderResult::Created {
                version: order.payment_version.unwrap_or_else(|| "none".to_owned()),
            },
            Err(e) => OrderResult::Failed {
                kind: "bad body".to_owned(),
                message: e.to_string(),
            },
        },
        Ok(Ok(reply)) => {
            let body: serde_json::Value = reply.json().unwrap_or_default();
            let field = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            let kind = match field("grpc_status") {
                Some(code) => format!("{} {code}", reply.status.as_u16()),
                None => reply.status.as_u16().to_string(),
            };
            OrderResult::Failed {
                kind,
                message: field("error").unwrap_or_default(),
            }
        }
    };
    Answer {
        result,
        latency: started.elapsed(),
    }
}

/// Whether a batch goes on after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep sending.
    Continue,
    /// Stop now; orders in flight are abandoned and not counted.
    Stop,
}

/// Sends `batch`, calling `progress` after every answer, and returns the tally.
///
/// The first order is always sent, even past the deadline, so that a batch has an answer
/// to judge.
pub async fn run(
    client: &OrderClient,
    batch: Batch<'_>,
    mut progress: impl FnMut(&Tally) -> Flow,
) -> Tally {
    let deadline = batch.deadline;
    let mut answers = stream::iter(0..batch.orders)
        .take_while(|i| std::future::ready(*i == 0 || Instant::now() < deadline))
        .map(|_| async {
            if !batch.pause.is_zero() {
                tokio::time::sleep(batch.pause).await;
            }
            order(client, batch.end_user).await
        })
        .buffer_unordered(batch.concurrency.max(1));
    let mut tally = Tally::default();
    while let Some(answer) = answers.next().await {
        tally.add(answer);
        if progress(&tally) == Flow::Stop {
            break;
        }
    }
    tally
}

/// The median of `values`, if any.
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_by_version_and_kind() {
        let mut t = Tally::default();
        for result in [
            OrderResult::Created {
                version: "v1".into(),
            },
            OrderResult::Created {
                version: "v2".into(),
            },
            OrderResult::Created {
                version: "v1".into(),
            },
            OrderResult::Failed {
                kind: "502 UNAVAILABLE".into(),
                message: String::new(),
            },
        ] {
            t.add(Answer {
                result,
                latency: Duration::ZERO,
            });
        }
        assert_eq!((t.created_by("v1"), t.created_by("v2")), (2, 1));
        assert_eq!((t.total(), t.failed_total()), (4, 1));
        assert_eq!(t.failures(), "502 UNAVAILABLE x1");
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(Vec::new()), None);
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), Some(ms(2)));
    }
}
