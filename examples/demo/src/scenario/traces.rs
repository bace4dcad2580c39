//! Tracing: the demo sends one order with a `traceparent` of its own; the order-service's
//! inbound span continues that trace, its call to the payment service carries it on, and
//! the payment-service's span is a child of that call — all by the mesh's layers, with no
//! trace code in either handler. The spans are exported over OTLP/gRPC to a receiver in
//! this process, and the story shows what arrived there.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mesh_tower::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::load::ORDER_TIMEOUT;
use crate::policy::Policy;
use crate::telemetry::hex;
use crate::DemoError;

use super::{default_retries, Outcome, Story};

/// How many times the receiver is checked for the whole trace (after a flush each time).
const POLLS: usize = 50;
/// The pause between checks.
const POLL_EVERY: Duration = Duration::from_millis(50);

pub(crate) async fn run(story: &mut Story<'_>) -> Result<Outcome, DemoError> {
    let Some(telemetry) = story.telemetry else {
        return Ok(Outcome::Failed(
            "span export was not set up for this walkthrough".to_owned(),
        ));
    };
    story
        .publish(&Policy::all_v1().with_retries(default_retries()), "tracing")
        .await?;
    let trace_id = TraceId::random();
    let caller = SpanId::random();
    telemetry.watch(trace_id.0);
    let traceparent = format!("00-{}-{}-01", hex(&trace_id.0), hex(&caller.0));
    story.out.line(format!(
        "  spans go to an OTLP/gRPC receiver in this process: http://{}",
        telemetry.addr()
    ));
    story
        .out
        .line(format!("  POST /orders with traceparent: {traceparent}"));

    let body = Bytes::from_static(br#"{"item": "book", "amount_cents": 1250}"#);
    let headers = [("traceparent", traceparent.as_str())];
    let sent = story
        .fleet
        .client()
        .send(Method::POST, "/orders", &headers, Some(body));
    let reply = match tokio::time::timeout(ORDER_TIMEOUT, sent).await {
        Err(_) => {
            return Ok(Outcome::Failed(format!(
                "no answer within {ORDER_TIMEOUT:?}"
            )))
        }
        Ok(Err(e)) => return Ok(Outcome::Failed(format!("the order failed: {e}"))),
        Ok(Ok(reply)) => reply,
    };
    let request_id = reply
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(", x-request-id {v}"))
        .unwrap_or_default();
    story
        .out
        .line(format!("  answer: {}{request_id}", reply.status.as_u16()));
    if reply.status != StatusCode::CREATED {
        return Ok(Outcome::Failed(format!(
            "the order came back {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }

    // Export what has ended and look for the whole trace: bounded, no timing judged.
    let mut spans = Vec::new();
    for _ in 0..POLLS {
        telemetry.flush().await;
        spans = telemetry.spans_of(trace_id.0);
        if Trace::of(&spans, &caller.0).is_complete() {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let trace = Trace::of(&spans, &caller.0);
    story.out.line(format!(
        "  trace {} at the receiver: {} spans (service, kind, name, span id <- parent span id)",
        hex(&trace_id.0),
        spans.len()
    ));
    for line in trace.lines() {
        story.out.line(format!("    {line}"));
    }
    Ok(match trace.problems() {
        problems if problems.is_empty() => Outcome::Passed(format!(
            "one trace {}: order-service continued the demo's span, payment-service's {} span(s) \
             are children of order-service's call(s); {} spans exported to the receiver in all",
            hex(&trace_id.0),
            trace.payment.len(),
            telemetry.received()
        )),
        problems => Outcome::Failed(problems.join("; ")),
    })
}

/// The spans of the demo's order, sorted into the three hops.
struct Trace<'a> {
    caller: &'a [u8],
    /// The order-service's inbound span (`POST /orders`).
    order: Option<&'a Span>,
    /// The order-service's calls to the payment service.
    calls: Vec<&'a Span>,
    /// The payment-service's inbound spans.
    payment: Vec<&'a Span>,
    /// Anything else.
    other: Vec<&'a Span>,
}

impl<'a> Trace<'a> {
    fn of(spans: &'a [Span], caller: &'a [u8]) -> Self {
        let mut t = Trace {
            caller,
            order: None,
            calls: Vec::new(),
            payment: Vec::new(),
            other: Vec::new(),
        };
        for span in spans {
            let server = span.kind == SpanKind::Server as i32;
            let client = span.kind == SpanKind::Client as i32;
            match attr(span, "url.path").as_deref() {
                Some("/orders") if server && t.order.is_none() => t.order = Some(span),
                Some(p) if client && p.starts_with("/payment.v1.") => t.calls.push(span),
                Some(p) if server && p.starts_with("/payment.v1.") => t.payment.push(span),
                _ => t.other.push(span),
            }
        }
        t
    }

    /// Every hop is there and linked.
    fn is_complete(&self) -> bool {
        self.problems().is_empty()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(order) = self.order else {
            return vec!["no order-service span for POST /orders reached the receiver".into()];
        };
        if order.parent_span_id != self.caller {
            problems.push(format!(
                "the order-service span's parent is {}, not the demo's {}",
                hex(&order.parent_span_id),
                hex(self.caller)
            ));
        }
        if self.calls.is_empty() {
            problems.push("no order-service call to the payment service was traced".into());
        }
        for call in &self.calls {
            if call.parent_span_id != order.span_id {
                problems.push(format!(
                    "call {} is not a child of the order span",
                    hex(&call.span_id)
                ));
            }
            let children = self
                .payment
                .iter()
                .filter(|p| p.parent_span_id == call.span_id)
                .count();
            if children != 1 {
                problems.push(format!(
                    "call {} has {children} payment-service spans under it (expected 1)",
                    hex(&call.span_id)
                ));
            }
        }
        for p in &self.payment {
            if !self.calls.iter().any(|c| c.span_id == p.parent_span_id) {
                problems.push(format!(
                    "payment-service span {} has parent {}, not an order-service call",
                    hex(&p.span_id),
                    hex(&p.parent_span_id)
                ));
            }
        }
        problems
    }

    /// One line per span: the order span, then each call followed by its payment span.
    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let parent_name = |parent: &[u8]| -> &'static str {
            if parent == self.caller {
                " (the demo's traceparent)"
            } else if self.order.is_some_and(|o| o.span_id == parent) {
                " (order-service POST /orders)"
            } else if self.calls.iter().any(|c| c.span_id == parent) {
                " (order-service's call)"
            } else {
                ""
            }
        };
        let line = |service: &str, span: &Span| {
            let kind = if span.kind == SpanKind::Server as i32 {
                "server"
            } else if span.kind == SpanKind::Client as i32 {
                "client"
            } else {
                "other"
            };
            format!(
                "{service:<15} {kind:<6} {:<38} {} <- {}{}",
                span.name,
                hex(&span.span_id),
                hex(&span.parent_span_id),
                parent_name(&span.parent_span_id)
            )
        };
        if let Some(order) = self.order {
            lines.push(line("order-service", order));
        }
        for call in &self.calls {
            lines.push(line("order-service", call));
            for p in self
                .payment
                .iter()
                .filter(|p| p.parent_span_id == call.span_id)
            {
                lines.push(line("payment-service", p));
            }
        }
        for p in &self.payment {
            if !self.calls.iter().any(|c| c.span_id == p.parent_span_id) {
                lines.push(line("payment-service", p));
            }
        }
        for s in &self.other {
            lines.push(line("?", s));
        }
        lines
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}
