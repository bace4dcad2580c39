//! Fault injection (Envoy's HTTP fault filter as gRFC A33 describes it): delays and aborts
//! by percentage, only for requests matching the fault's header conditions, with the
//! `x-envoy-fault-*` headers when the fault is header-controlled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::HeaderMap;
use mesh_core::route::{FaultAbort, FaultInjection, FractionalPercent};

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

#[cfg(test)]
mod tests {
    use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};
    use mesh_core::route::FaultDelay;

    use super::*;

    fn abort_all(status: u16) -> FaultInjection {
        FaultInjection {
            abort: Some(FaultAbort::Http {
                status,
                percentage: FractionalPercent::new(100, 100),
            }),
            ..FaultInjection::default()
        }
    }

    #[test]
    fn abort_by_percentage() {
        let active = ActiveFaults::default();
        let mut f = abort_all(503);
        f.abort = Some(FaultAbort::Http {
            status: 503,
            percentage: FractionalPercent::new(30, 100),
        });
        let hits = (0..100u64)
            .filter(|r| {
                decide(&f, &HeaderMap::new(), &active, (0, *r))
                    .0
                    .abort
                    .is_some()
            })
            .count();
        assert_eq!(hits, 30);
    }

    #[test]
    fn header_condition_and_override() {
        let active = ActiveFaults::default();
        let mut f = abort_all(503);
        f.headers = vec![HeaderMatcher::new(
            "x-chaos",
            HeaderValueMatch::String(StringMatcher::exact("on")),
            false,
        )
        .expect("valid")];
        assert_eq!(
            decide(&f, &HeaderMap::new(), &active, (0, 0)).0,
            FaultDecision::default()
        );
        let mut h = HeaderMap::new();
        h.insert("x-chaos", http::HeaderValue::from_static("on"));
        assert_eq!(
            decide(&f, &h, &active, (0, 0)).0.abort,
            Some(Abort::Http(503))
        );
        // The request may lower the percentage to zero.
        h.insert(
            "x-envoy-fault-abort-request-percentage",
            http::HeaderValue::from_static("0"),
        );
        assert_eq!(decide(&f, &h, &active, (0, 0)).0.abort, None);
    }

    #[test]
    fn header_controlled_delay_and_grpc_abort() {
        let active = ActiveFaults::default();
        let f = FaultInjection {
            delay: Some(FaultDelay {
                fixed: None,
                header_controlled: true,
                percentage: FractionalPercent::new(100, 100),
            }),
            abort: Some(FaultAbort::HeaderControlled {
                percentage: FractionalPercent::new(100, 100),
            }),
            ..FaultInjection::default()
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-envoy-fault-delay-request",
            http::HeaderValue::from_static("250"),
        );
        h.insert(
            "x-envoy-fault-abort-grpc-request",
            http::HeaderValue::from_static("14"),
        );
        let (d, _slot) = decide(&f, &h, &active, (0, 0));
        assert_eq!(d.delay, Some(Duration::from_millis(250)));
        assert_eq!(d.abort, Some(Abort::Grpc(14)));
    }

    #[test]
    fn max_active_faults_lets_requests_through() {
        let active = ActiveFaults::default();
        let mut f = abort_all(500);
        f.max_active_faults = Some(1);
        let (first, slot) = decide(&f, &HeaderMap::new(), &active, (0, 0));
        assert!(first.abort.is_some());
        let (second, _) = decide(&f, &HeaderMap::new(), &active, (0, 0));
        assert!(
            second.abort.is_none(),
            "second concurrent fault is over the limit"
        );
        drop(slot);
        let (third, _) = decide(&f, &HeaderMap::new(), &active, (0, 0));
        assert!(third.abort.is_some());
    }
}
