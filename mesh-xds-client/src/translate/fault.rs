//! Envoy's fault filter config (`HTTPFault`) -> [`FaultInjection`] (gRFC A33).
//!
//! Honoured: fixed and header-controlled delays, HTTP, gRPC and header-controlled aborts,
//! their percentages, `max_active_faults` and the header matchers. Ignored, as gRPC does:
//! `upstream_cluster`, `downstream_nodes`, the `*_runtime` keys and the response rate limit.

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent as PbFraction;
use mesh_core::route::{FaultAbort, FaultDelay, FaultInjection, FractionalPercent};

use super::duration;
use super::route::translate_header;
use crate::resource::FieldError;

/// Translates one `HTTPFault`, at the filter level or as a per-route override.
pub(crate) fn http_fault(f: &HttpFault) -> Result<FaultInjection, FieldError> {
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let percentage = fraction(d.percentage.as_ref());
            Some(match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(t)) => FaultDelay {
                    fixed: Some(duration(t, "delay.fixed_delay")?),
                    header_controlled: false,
                    percentage,
                },
                Some(FaultDelaySecifier::HeaderDelay(_)) => FaultDelay {
                    fixed: None,
                    header_controlled: true,
                    percentage,
                },
                None => return Err(FieldError::new("delay.fault_delay_secifier", "missing")),
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let percentage = fraction(a.percentage.as_ref());
            Some(match &a.error_type {
                Some(ErrorType::HttpStatus(status)) => FaultAbort::Http {
                    status: u16::try_from(*status)
                        .ok()
                        .filter(|s| (200..600).contains(s))
                        .ok_or_else(|| {
                            FieldError::new(
                                "abort.http_status",
                                format!("{status} is not in [200, 600)"),
                            )
                        })?,
                    percentage,
                },
                Some(ErrorType::GrpcStatus(code)) => FaultAbort::Grpc {
                    code: *code,
                    percentage,
                },
                Some(ErrorType::HeaderAbort(_)) => FaultAbort::HeaderControlled { percentage },
                None => return Err(FieldError::new("abort.error_type", "missing")),
            })
        }
    };
    let mut headers = Vec::with_capacity(f.headers.len());
    for (i, h) in f.headers.iter().enumerate() {
        headers.push(translate_header(h).map_err(|e| e.under(&format!("headers[{i}]")))?);
    }
    Ok(FaultInjection {
        delay,
        abort,
        max_active_faults: f.max_active_faults.as_ref().map(|m| m.value),
        headers,
    })
}

/// Envoy's `FractionalPercent`; unset is 0%, as the proto default says.
pub(crate) fn fraction(f: Option<&PbFraction>) -> FractionalPercent {
    match f {
        Some(f) => FractionalPercent::new(
            f.numerator,
            match f.denominator {
                1 => 10_000,
                2 => 1_000_000,
                _ => 100,
            },
        ),
        None => FractionalPercent::new(0, 100),
    }
}
