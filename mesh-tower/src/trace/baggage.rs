//! W3C Baggage: the `baggage` header, carried from a request to the calls its handler
//! makes, and readable (and changeable) by the handler as OpenTelemetry
//! [`Baggage`] in the current context.
//!
//! The header is passed on as received when the handler leaves the baggage alone (no
//! re-encoding per call). Several `baggage` headers are one list. A list longer than
//! [`MAX_BAGGAGE_LEN`] bytes is dropped, as the spec allows for a list over its limits.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::baggage::Baggage;

/// The header name.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The longest baggage list passed on (the W3C limit).
pub const MAX_BAGGAGE_LEN: usize = 8192;

/// The `baggage` of a request (several headers joined by `,`); `None` when absent, empty
/// or too long.
pub fn baggage_from(headers: &HeaderMap) -> Option<HeaderValue> {
    let values = headers.get_all(BAGGAGE);
    let mut iter = values.iter();
    let first = iter.next()?;
    if iter.next().is_none() {
        let ok = !first.as_bytes().trim_ascii().is_empty() && first.len() <= MAX_BAGGAGE_LEN;
        return ok.then(|| first.clone());
    }
    let parts: Vec<&[u8]> = values
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|v| !v.is_empty())
        .collect();
    let joined = parts.join(&b","[..]);
    if joined.is_empty() || joined.len() > MAX_BAGGAGE_LEN {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// The baggage of a header value as OpenTelemetry `Baggage`; members that do not parse
/// (`key=value`, value percent-encoded, `;`-separated properties) are left out.
pub fn parse(value: &HeaderValue) -> Baggage {
    let mut baggage = Baggage::new();
    let Ok(text) = value.to_str() else {
        return baggage;
    };
    for member in text.split(',') {
        let (pair, properties) = match member.split_once(';') {
            Some((pair, props)) => (pair, props.trim()),
            None => (member, ""),
        };
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(is_token_char) {
            continue;
        }
        let Some(value) = percent_decode(value.trim()) else {
            continue;
        };
        let _ = baggage.insert_with_metadata(key.to_owned(), value, properties.to_owned());
    }
    baggage
}

/// The header for `baggage` (percent-encoding values); `None` when it is empty or does not
/// fit [`MAX_BAGGAGE_LEN`].
pub fn format(baggage: &Baggage) -> Option<HeaderValue> {
    if baggage.is_empty() {
        return None;
    }
    let text = baggage.to_string();
    (text.len() <= MAX_BAGGAGE_LEN)
        .then(|| HeaderValue::from_str(&text).ok())
        .flatten()
}

/// RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(BAGGAGE, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn one_header_is_kept_as_it_came() {
        let h = headers(&["userId=alice, serverNode=DF%2028;prop"]);
        let v = baggage_from(&h).expect("baggage");
        assert_eq!(v, "userId=alice, serverNode=DF%2028;prop");
        let b = parse(&v);
        assert_eq!(b.get("userId").map(|v| v.as_str()), Some("alice"));
        assert_eq!(b.get("serverNode").map(|v| v.as_str()), Some("DF 28"));
        let (_, meta) = b.get_with_metadata("serverNode").expect("member");
        assert_eq!(meta.as_str(), "prop");
    }

    #[test]
    fn several_headers_are_one_list_and_limits_hold() {
        let h = headers(&["a=1", "", "b=2"]);
        assert_eq!(baggage_from(&h).expect("baggage"), "a=1,b=2");
        assert_eq!(baggage_from(&headers(&[""])), None);
        let long = format!("k={}", "v".repeat(MAX_BAGGAGE_LEN));
        assert_eq!(baggage_from(&headers(&[&long])), None);
        // Bad members are skipped when read, not the whole list.
        let b = parse(&HeaderValue::from_static("good=1,bad,=x,v=%zz,ok=2"));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn format_encodes_values() {
        let mut b = Baggage::new();
        let _ = b.insert("k", "a b,c");
        assert_eq!(format(&b).expect("header"), "k=a%20b%2Cc");
        assert_eq!(format(&Baggage::new()), None);
    }
}
