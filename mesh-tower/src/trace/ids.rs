//! Trace and span ids, trace flags, and the lower-case hex they travel as.

use std::fmt;

use rand::Rng;

/// A 16-byte trace id; all zeros is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; all zeros is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random, valid trace id.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        loop {
            let id: [u8; 16] = rng.random();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }

    /// Whether the id is not all zeros.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// Whether the upper 8 bytes are zero (a 64-bit B3 trace id).
    pub fn is_64_bit(&self) -> bool {
        self.0[..8] == [0; 8]
    }
}

impl SpanId {
    /// A random, valid span id.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        loop {
            let id: [u8; 8] = rng.random();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }

    /// Whether the id is not all zeros.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex_str(&mut [0; 32], &self.0))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex_str(&mut [0; 16], &self.0))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lower-case hex into `out` (twice as long) and returns it.
pub(crate) fn hex_into<'a>(out: &'a mut [u8], bytes: &[u8]) -> &'a [u8] {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    &out[..bytes.len() * 2]
}

fn hex_str<'a>(out: &'a mut [u8], bytes: &[u8]) -> &'a str {
    // Only ASCII hex digits were written.
    std::str::from_utf8(hex_into(out, bytes)).unwrap_or_default()
}

/// Parses exactly `2 * N` hex digits; `upper` allows upper-case digits too.
pub(crate) fn parse_hex<const N: usize>(s: &[u8], upper: bool) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0], upper)? << 4) | nibble(pair[1], upper)?;
    }
    Some(out)
}

fn nibble(c: u8, upper: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if upper => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A request id in the UUID version 4 form (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
pub fn new_request_id() -> http::HeaderValue {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut hex = [0u8; 32];
    hex_into(&mut hex, &b);
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, c) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = *c;
        o += 1;
    }
    http::HeaderValue::from_bytes(&out).unwrap_or(http::HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap_or_default();
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn hex_round_trips() {
        let id = TraceId::random();
        let text = id.to_string();
        assert_eq!(parse_hex::<16>(text.as_bytes(), false), Some(id.0));
        assert_eq!(parse_hex::<2>(b"aB", false), None);
        assert_eq!(parse_hex::<2>(b"aBcd", true), Some([0xab, 0xcd]));
    }
}
