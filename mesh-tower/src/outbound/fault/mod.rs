//! Fault injection (Envoy's HTTP fault filter as gRFC A33 describes it): delays and aborts
//! by percentage, only for requests matching the fault's header conditions, with the
//! `x-envoy-fault-*` headers when the fault is header-controlled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use mesh_core::route::{FaultAbort, FaultInjection, FractionalPercent};
use tower::{Service, ServiceExt};

use super::response::{grpc_status_response, ResponseBody};
use crate::error::MeshError;

/// What the fault filter decided for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FaultDecision {
    pub(crate) delay: Option<Duration>,
    /// Abort with an HTTP status, or with a gRPC code.
    pub(crate) abort: Option<Abort>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Abort {
    Http(u16),
    Grpc(u32),
}

/// Counts requests being faulted, for `max_active_faults`.
#[derive(Debug, Default)]
pub(crate) struct ActiveFaults(AtomicU32);

/// Held while a request is faulted.
#[derive(Debug)]
pub(crate) struct FaultSlot<'a>(&'a ActiveFaults);

impl Drop for FaultSlot<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A percentage with the request's override header applied: the header can only lower it
/// (A33: "the smaller of the two").
fn percentage(
    configured: FractionalPercent,
    headers: &HeaderMap,
    header: &str,
) -> FractionalPercent {
    match header_u64(headers, header) {
        Some(n) => {
            let den = configured.denominator();
            let n = u32::try_from(n)
                .unwrap_or(u32::MAX)
                .min(configured.numerator());
            FractionalPercent::new(n, den)
        }
        None => configured,
    }
}

/// Decides the fault for a request. `draws` are two independent uniform random numbers.
pub(crate) fn decide<'a>(
    fault: &FaultInjection,
    headers: &HeaderMap,
    active: &'a ActiveFaults,
    draws: (u64, u64),
) -> (FaultDecision, Option<FaultSlot<'a>>) {
    let mut decision = FaultDecision::default();
    let header_ok = fault.headers.iter().all(|m| {
        let v = headers.get(m.name()).and_then(|v| v.to_str().ok());
        m.matches(v)
    });
    if !header_ok {
        return (decision, None);
    }
    if let Some(d) = &fault.delay {
        let pct = percentage(
            d.percentage,
            headers,
            "x-envoy-fault-delay-request-percentage",
        );
        if pct.hits(draws.0) {
            decision.delay = if d.header_controlled {
                header_u64(headers, "x-envoy-fault-delay-request").map(Duration::from_millis)
            } else {
                d.fixed
            };
        }
    }
    if let Some(a) = &fault.abort {
        decision.abort = match a {
            FaultAbort::Http {
                status,
                percentage: p,
            } => {
                let pct = percentage(*p, headers, "x-envoy-fault-abort-request-percentage");
                pct.hits(draws.1).then_some(Abort::Http(*status))
            }
            FaultAbort::Grpc {
                code,
                percentage: p,
            } => {
                let pct = percentage(*p, headers, "x-envoy-fault-abort-request-percentage");
                pct.hits(draws.1).then_some(Abort::Grpc(*code))
            }
            FaultAbort::HeaderControlled { percentage: p } => {
                let pct = percentage(*p, headers, "x-envoy-fault-abort-request-percentage");
                if pct.hits(draws.1) {
                    header_u64(headers, "x-envoy-fault-abort-grpc-request")
                        .and_then(|c| u32::try_from(c).ok())
                        .map(Abort::Grpc)
                        .or_else(|| {
                            header_u64(headers, "x-envoy-fault-abort-request")
                                .and_then(|s| u16::try_from(s).ok())
                                .filter(|s| (200..600).contains(s))
                                .map(Abort::Http)
                        })
                } else {
                    None
                }
            }
            _ => None,
        };
    }
    if decision.delay.is_none() && decision.abort.is_none() {
        return (decision, None);
    }
    // Over max_active_faults: the request goes through unfaulted.
    let now = active.0.fetch_add(1, Ordering::Relaxed);
    let slot = FaultSlot(active);
    if fault.max_active_faults.is_some_and(|max| now >= max) {
        return (FaultDecision::default(), None);
    }
    (decision, Some(slot))
}

/// gRPC code for an HTTP abort status, as gRPC maps HTTP statuses.
pub(crate) fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// The route's fault filter as a service in front of the rest of the route's path (its
/// header changes and the cluster's stack): decided on the request as it arrived, it
/// delays the request before `inner` is called or answers in its place. `inner` is made
/// ready only after the delay, so an injected delay holds no breaker slot (Envoy's fault
/// filter runs before its router).
#[derive(Debug)]
pub(crate) struct Fault<'a, S> {
    fault: &'a FaultInjection,
    active: &'a ActiveFaults,
    grpc: bool,
    inner: S,
}

impl<'a, S> Fault<'a, S> {
    /// `grpc`: aborts are answered as gRPC statuses.
    pub(crate) fn new(
        fault: &'a FaultInjection,
        active: &'a ActiveFaults,
        grpc: bool,
        inner: S,
    ) -> Self {
        Self {
            fault,
            active,
            grpc,
            inner,
        }
    }
}

impl<'a, S, B> Service<Request<B>> for Fault<'a, S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = MeshError>
        + Clone
        + Send
        + 'a,
    S::Future: Send + 'a,
    B: Send + 'a,
{
    type Response = Response<ResponseBody>;
    type Error = MeshError;
    type Future = BoxFuture<'a, Result<Self::Response, MeshError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        // The inner service is made ready when the request goes to it (after a delay).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let (decision, slot) = decide(
            self.fault,
            req.headers(),
            self.active,
            (crate::rng::random(), crate::rng::random()),
        );
        let grpc = self.grpc;
        // A boxed future of a known type: a future generic over `S::Future` held across
        // an await in the caller's async fn trips rustc's higher-ranked Send check.
        Box::pin(async move {
            // Held until the response (or the abort) is there, for max_active_faults.
            let _slot = slot;
            if let Some(delay) = decision.delay {
                tokio::time::sleep(delay).await;
            }
            match decision.abort {
                Some(abort) => aborted(abort, grpc),
                None => inner.oneshot(req).await,
            }
        })
    }
}

/// The answer to an aborted request.
fn aborted(abort: Abort, grpc: bool) -> Result<Response<ResponseBody>, MeshError> {
    match abort {
        Abort::Grpc(code) if grpc => Ok(grpc_status_response(code, "fault injected")),
        Abort::Http(status) if grpc => {
            Ok(grpc_status_response(http_to_grpc(status), "fault injected"))
        }
        Abort::Http(status) => {
            let mut resp = Response::new(ResponseBody::full("fault filter abort\n"));
            *resp.status_mut() =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
            resp.extensions_mut().insert(MeshError::FaultAbort);
            Ok(resp)
        }
        // A gRPC code for a request that is not gRPC: the mesh's own fault error.
        Abort::Grpc(_) => Err(MeshError::FaultAbort),
    }
}

#[cfg(test)]
mod tests;
