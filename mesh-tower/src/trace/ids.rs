//! Trace and span ids, trace flags, and the lower-case hex they travel as.

use std::fmt;

/// A 16-byte trace id; all zeros is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; all zeros is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random, valid trace id.
    pub fn random() -> Self {
        loop {
            // One 128-bit draw, not sixteen byte draws.
            let id = crate::rng::random::<u128>().to_ne_bytes();
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
        loop {
            let id = crate::rng::random::<u64>().to_ne_bytes();
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

/// Each byte's two lower-case hex digits: one load per byte, not two lookups and shifts.
static HEX_PAIRS: [[u8; 2]; 256] = hex_pairs();

const fn hex_pairs() -> [[u8; 2]; 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    table
}

/// Writes `bytes` as lower-case hex into `out` (twice as long) and returns it.
///
/// Not inlined: called with constant lengths (a request id's five groups, a traceparent's
/// three fields), each inlined copy was unrolled for its length, and every request ran
/// them all. One loop is a few more instructions and far fewer lines of code; at moderate
/// rates a request's cost follows the lines of code it runs (see `e2e instructions`).
#[inline(never)]
pub(crate) fn hex_into<'a>(out: &'a mut [u8], bytes: &[u8]) -> &'a [u8] {
    // Pairs of output bytes, so the loop has no bounds checks.
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
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
    let table = if upper {
        &NIBBLE_ANY_CASE
    } else {
        &NIBBLE_LOWER
    };
    let mut out = [0u8; N];
    parse_hex_into(&mut out, s, table).then_some(out)
}

/// Fills `out` from the hex digits in `s` (twice as long); whether all were digits.
/// Not inlined, for the reason given at [`hex_into`]: one loop for every length.
#[inline(never)]
fn parse_hex_into(out: &mut [u8], s: &[u8], table: &[u8; 256]) -> bool {
    // Every digit is looked up; an invalid one sets the high bit of `bad`.
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (table[usize::from(pair[0])], table[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    bad & INVALID == 0
}

/// Marks a byte that is no hex digit in the tables below.
const INVALID: u8 = 0x80;

/// The value of each byte as a lower-case hex digit, or [`INVALID`].
static NIBBLE_LOWER: [u8; 256] = nibble_table(false);
/// The same, upper-case digits allowed.
static NIBBLE_ANY_CASE: [u8; 256] = nibble_table(true);

const fn nibble_table(upper: bool) -> [u8; 256] {
    let mut table = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' if upper => b - b'A' + 10,
            _ => INVALID,
        };
        c += 1;
    }
    table
}

/// A request id in the UUID version 4 form (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
pub fn new_request_id() -> http::HeaderValue {
    let mut b = crate::rng::random::<u128>().to_ne_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Each group's digits written in place between the dashes.
    let mut out = [b'-'; 36];
    hex_into(&mut out[0..8], &b[0..4]);
    hex_into(&mut out[9..13], &b[4..6]);
    hex_into(&mut out[14..18], &b[6..8]);
    hex_into(&mut out[19..23], &b[8..10]);
    hex_into(&mut out[24..36], &b[10..16]);
    unique_value(out).unwrap_or(http::HeaderValue::from_static("-"))
}

/// A header value that differs on every request (a request id, `traceparent`, a B3 span
/// id): shared from the start ([`shared_value`]) and marked sensitive, which HTTP/2
/// writes as an HPACK literal never indexed. Indexed, each such value would go into the
/// connection's dynamic table on both ends, never to be used again, and push out entries
/// that are (Istio's metadata-exchange values, the same on every request): every request
/// would pay the insertion and an eviction on each side, and every few dozen requests the
/// metadata would go out in full again. The value is the same to everything else; only
/// its `Debug` form hides it.
pub(crate) fn unique_value<T: AsRef<[u8]> + Send + 'static>(bytes: T) -> Option<http::HeaderValue> {
    let mut value = shared_value(bytes)?;
    value.set_sensitive(true);
    Some(value)
}

/// The headers whose values the mesh makes anew for each request and sends never indexed
/// ([`unique_value`]; B3's multi-header ids are marked so in `b3`).
const UNIQUE_NAMES: [http::HeaderName; 6] = [
    super::w3c::TRACEPARENT,
    super::context::X_REQUEST_ID,
    super::b3::B3,
    super::b3::X_B3_TRACEID,
    super::b3::X_B3_SPANID,
    super::b3::X_B3_PARENTSPANID,
];

/// Lets this request's [`unique_value`]s be indexed by HTTP/2 (the caller does so once per
/// connection, so that their names enter its HPACK table).
pub(crate) fn index_unique_names(headers: &mut http::HeaderMap) {
    for name in &UNIQUE_NAMES {
        if let Some(value) = headers.get_mut(name) {
            value.set_sensitive(false);
        }
    }
}

/// A header value of the mesh's own fixed-size bytes (ids, `traceparent`), shared from
/// the start. A value copied from a slice is held alone; its first clone allocates a
/// shared form and makes both copies count references. The retry policy's copy of the
/// request head clones every value, so a value made per request would pay that
/// allocation on every call; an array owner costs the same single allocation to make and
/// a count per clone. (A `Vec` owner would be boxed again: no gain.)
pub(crate) fn shared_value<T: AsRef<[u8]> + Send + 'static>(bytes: T) -> Option<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bytes)).ok()
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
        // Lower-case hex around the dashes, version 4 and RFC 4122's variant in place.
        let hex: String = parts.concat();
        let bytes = parse_hex::<16>(hex.as_bytes(), false).unwrap_or_default();
        assert_ne!(bytes, [0; 16], "{s}");
        assert_eq!((bytes[6] >> 4, bytes[8] >> 6), (4, 0b10), "{s}");
        assert_ne!(new_request_id(), id);
        assert!(id.is_sensitive(), "never indexed by HPACK");
    }

    #[test]
    fn hex_round_trips() {
        let id = TraceId::random();
        let text = id.to_string();
        assert_eq!(parse_hex::<16>(text.as_bytes(), false), Some(id.0));
        assert_eq!(parse_hex::<2>(b"aB", false), None);
        assert_eq!(parse_hex::<2>(b"aBcd", true), Some([0xab, 0xcd]));
    }

    #[test]
    fn hex_into_writes_every_byte_as_two_lower_case_digits() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = [0u8; 512];
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_into(&mut out, &all), want.as_bytes());
        // A longer output keeps what is past the hex.
        let mut out = [b'-'; 5];
        assert_eq!(hex_into(&mut out, &[0xa0, 0x0f]), b"a00f");
        assert_eq!(out[4], b'-');
    }

    #[test]
    fn parse_hex_takes_exactly_the_hex_digits() {
        for c in 0..=255u8 {
            for s in [[b'0', c], [c, b'0']] {
                let lower = c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
                let any = lower || (b'A'..=b'F').contains(&c);
                let want = |ok: bool| {
                    ok.then(|| {
                        [
                            u8::from_str_radix(std::str::from_utf8(&s).unwrap_or("x"), 16)
                                .unwrap_or(0),
                        ]
                    })
                };
                assert_eq!(parse_hex::<1>(&s, false), want(lower), "byte {c}");
                assert_eq!(parse_hex::<1>(&s, true), want(any), "byte {c}");
            }
        }
        assert_eq!(parse_hex::<1>(b"0", false), None);
        assert_eq!(parse_hex::<1>(b"000", false), None);
    }
}
