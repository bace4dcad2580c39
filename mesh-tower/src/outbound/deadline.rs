//! The effective deadline of a call: the smallest of the route timeout, the max stream
//! duration and the caller's `grpc-timeout` (capped as gRFC A31 says).

use std::time::Duration;

use http::HeaderMap;
use mesh_core::route::ForwardAction;

/// The caller's deadline on a gRPC request.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` header value (`100m`, `5S`, `1H`): at most 8 digits and a unit.
pub(crate) fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time the whole call (all attempts) may take, `None` when unbounded.
pub(crate) fn effective_timeout(
    action: &ForwardAction,
    headers: &HeaderMap,
    grpc: bool,
) -> Option<Duration> {
    let msd = &action.max_stream_duration;
    let mut timeout = action.timeout;
    if let Some(max) = msd.max.filter(|d| !d.is_zero()) {
        timeout = Some(timeout.map_or(max, |t| t.min(max)));
    }
    if grpc {
        if let Some(caller) = headers
            .get(GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
        {
            // gRFC A31: with grpc_timeout_header_max set, the caller's timeout counts,
            // capped by it (zero = no cap).
            let capped = match msd.grpc_timeout_header_max {
                Some(cap) if !cap.is_zero() => Some(caller.min(cap)),
                Some(_) => Some(caller),
                None => Some(caller),
            };
            if let Some(c) = capped {
                timeout = Some(timeout.map_or(c, |t| t.min(c)));
            }
        }
    }
    timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(
                parse_grpc_timeout(bad),
                None,
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn smallest_deadline_wins() {
        let mut action = ForwardAction::to_cluster("c");
        action.timeout = Some(Duration::from_secs(10));
        action.max_stream_duration.max = Some(Duration::from_secs(5));
        let mut h = HeaderMap::new();
        assert_eq!(
            effective_timeout(&action, &h, true),
            Some(Duration::from_secs(5))
        );
        h.insert("grpc-timeout", http::HeaderValue::from_static("2S"));
        assert_eq!(
            effective_timeout(&action, &h, true),
            Some(Duration::from_secs(2))
        );
        // An HTTP caller's grpc-timeout means nothing.
        assert_eq!(
            effective_timeout(&action, &h, false),
            Some(Duration::from_secs(5))
        );
        action.max_stream_duration.grpc_timeout_header_max = Some(Duration::from_secs(1));
        assert_eq!(
            effective_timeout(&action, &h, true),
            Some(Duration::from_secs(1))
        );
    }
}
