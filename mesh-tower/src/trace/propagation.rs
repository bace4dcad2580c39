//! Which trace headers are read from requests and written onto calls: the standard
//! `OTEL_PROPAGATORS` variable.
//!
//! | `OTEL_PROPAGATORS` entry | read from inbound requests | written onto outbound calls |
//! |---|---|---|
//! | `tracecontext` | `traceparent`, `tracestate` | `traceparent`, `tracestate` |
//! | `baggage` | `baggage` | `baggage` (as received, or as the handler changed it) |
//! | `b3` | `b3` and `x-b3-*` | the B3 form the request came with, else single `b3` |
//! | `b3multi` | `b3` and `x-b3-*` | the B3 form the request came with, else `x-b3-*` |
//! | `none` | nothing | nothing |
//!
//! Unset (or empty), the mesh uses OpenTelemetry's default, `tracecontext,baggage`, and
//! still reads B3 when a request has no valid `traceparent` — callers behind Envoy or
//! Zipkin-instrumented services send only B3 — and then passes B3 on in the form it came
//! in, beside `traceparent`. Set explicitly, the list is followed as written: B3 is read
//! only when `b3` or `b3multi` is listed. `traceparent` wins over B3 when both are read.
//! Unknown entries (`jaeger`, `xray`, ...) are logged once and ignored. `x-request-id` is
//! not a propagator: it is always read and written.

use std::sync::OnceLock;

/// The propagators in force (a set of flags; copied freely).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Propagation {
    bits: u8,
}

const TRACECONTEXT: u8 = 0x01;
const BAGGAGE: u8 = 0x02;
const B3_SINGLE: u8 = 0x04;
const B3_MULTI: u8 = 0x08;
/// Set when `OTEL_PROPAGATORS` was not given: B3 is read as a fallback.
const IMPLICIT: u8 = 0x80;

/// The B3 header form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum B3Form {
    /// The single `b3` header.
    Single,
    /// The `x-b3-*` headers.
    Multi,
}

impl std::fmt::Debug for Propagation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (bit, name) in [
            (TRACECONTEXT, "tracecontext"),
            (BAGGAGE, "baggage"),
            (B3_SINGLE, "b3"),
            (B3_MULTI, "b3multi"),
            (IMPLICIT, "(default)"),
        ] {
            if self.bits & bit != 0 {
                list.entry(&name);
            }
        }
        list.finish()
    }
}

impl Default for Propagation {
    /// OpenTelemetry's default, `tracecontext,baggage`, reading B3 as a fallback.
    fn default() -> Self {
        Self {
            bits: TRACECONTEXT | BAGGAGE | IMPLICIT,
        }
    }
}

impl Propagation {
    /// No propagation (`OTEL_PROPAGATORS=none`).
    pub const fn none() -> Self {
        Self { bits: 0 }
    }

    /// Everything the mesh understands: W3C trace context, baggage, and both B3 forms.
    pub const fn all() -> Self {
        Self {
            bits: TRACECONTEXT | BAGGAGE | B3_SINGLE | B3_MULTI,
        }
    }

    /// Parses an `OTEL_PROPAGATORS` value; also returns the entries it did not know.
    /// An empty list is the default.
    pub fn parse(list: &str) -> (Self, Vec<String>) {
        let mut bits = 0;
        let mut unknown = Vec::new();
        let mut none = false;
        let mut any = false;
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            any = true;
            match entry.to_ascii_lowercase().as_str() {
                "tracecontext" => bits |= TRACECONTEXT,
                "baggage" => bits |= BAGGAGE,
                "b3" => bits |= B3_SINGLE,
                "b3multi" => bits |= B3_MULTI,
                "none" => none = true,
                _ => unknown.push(entry.to_owned()),
            }
        }
        let propagation = match (any, none) {
            (false, _) => Self::default(),
            (true, true) => Self::none(),
            (true, false) => Self { bits },
        };
        (propagation, unknown)
    }

    /// The propagators `OTEL_PROPAGATORS` names (read once per process; unknown entries are
    /// logged once).
    pub fn from_env() -> Self {
        static FROM_ENV: OnceLock<Propagation> = OnceLock::new();
        *FROM_ENV.get_or_init(|| {
            let value = std::env::var("OTEL_PROPAGATORS").unwrap_or_default();
            let (propagation, unknown) = Self::parse(&value);
            if !unknown.is_empty() {
                tracing::warn!(
                    ?unknown,
                    "OTEL_PROPAGATORS: ignoring propagators the mesh does not support"
                );
            }
            propagation
        })
    }

    /// Whether `traceparent`/`tracestate` are read and written.
    pub fn tracecontext(self) -> bool {
        self.bits & TRACECONTEXT != 0
    }

    /// Whether `baggage` is read and written.
    pub fn baggage(self) -> bool {
        self.bits & BAGGAGE != 0
    }

    /// Whether B3 headers (either form) are read.
    pub fn reads_b3(self) -> bool {
        self.bits & (B3_SINGLE | B3_MULTI | IMPLICIT) != 0
    }

    /// The B3 forms written onto a call, given the form the request came with.
    pub(crate) fn b3_forms(self, received: Option<B3Form>) -> (bool, bool) {
        match received {
            Some(_) if !self.reads_b3() => (false, false),
            Some(B3Form::Single) => (true, false),
            Some(B3Form::Multi) => (false, true),
            None => (self.bits & B3_SINGLE != 0, self.bits & B3_MULTI != 0),
        }
    }
}
