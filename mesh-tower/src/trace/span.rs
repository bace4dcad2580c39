//! Server and client spans: an OpenTelemetry span (exported when a provider is installed)
//! whose ids become the ids the mesh propagates, with the HTTP and RPC semantic
//! conventions' attributes.

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState as OtelTraceState,
    Tracer,
};
use opentelemetry::{Context, KeyValue};

use super::context::{Incoming, TraceContext, FLAG_SAMPLED};
use super::ids::{SpanId, TraceId};
use crate::observe::{ExchangeEnd, ExchangeObserver};

/// The instrumentation scope name of the mesh's spans.
pub const TRACER_NAME: &str = "mesh-tower";

/// The mesh's tracer from the global provider (a no-op until one is installed).
pub fn global_tracer() -> BoxedTracer {
    opentelemetry::global::tracer(TRACER_NAME)
}

/// What a span is about, for its name and attributes.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub grpc: bool,
    /// Host and port of the server.
    pub server: Option<&'a str>,
    /// The peer's address (server spans).
    pub peer: Option<std::net::SocketAddr>,
}

/// `package.Service` and `Method` of a gRPC path `/package.Service/Method`.
pub(crate) fn grpc_parts(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

fn span_name(ex: &Exchange<'_>) -> String {
    match (ex.grpc, grpc_parts(ex.path)) {
        (true, Some((s, m))) => format!("{s}/{m}"),
        _ => ex.method.as_str().to_owned(),
    }
}

fn attributes(ex: &Exchange<'_>) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(8);
    attrs.push(KeyValue::new(
        "http.request.method",
        ex.method.as_str().to_owned(),
    ));
    attrs.push(KeyValue::new("url.path", ex.path.to_owned()));
    if let Some(server) = ex.server {
        let (host, port) = split_host_port(server);
        attrs.push(KeyValue::new("server.address", host.to_owned()));
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
    }
    if let Some(peer) = ex.peer {
        attrs.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
        attrs.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
    }
    if ex.grpc {
        attrs.push(KeyValue::new("rpc.system", "grpc"));
        if let Some((s, m)) = grpc_parts(ex.path) {
            attrs.push(KeyValue::new("rpc.service", s.to_owned()));
            attrs.push(KeyValue::new("rpc.method", m.to_owned()));
        }
    }
    attrs
}

fn split_host_port(s: &str) -> (&str, Option<u16>) {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(port) => (h.trim_start_matches('[').trim_end_matches(']'), Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

/// A span in progress; ends (with the status attributes) when the exchange ends.
pub struct SpanGuard {
    span: BoxedSpan,
    grpc: bool,
    server: bool,
    status: Option<u16>,
}

impl std::fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanGuard")
            .field(
                "recording",
                &opentelemetry::trace::Span::is_recording(&self.span),
            )
            .finish()
    }
}

impl SpanGuard {
    /// Records the response status (before the body ends).
    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl ExchangeObserver for SpanGuard {
    fn on_end(mut self, end: ExchangeEnd) {
        use opentelemetry::trace::Span;
        if !self.span.is_recording() {
            return;
        }
        if let Some(code) = self.status {
            self.span
                .set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            // A server span is an error on 5xx; a client span on 4xx too.
            if code >= 500 || (!self.server && code >= 400) {
                self.span.set_status(Status::error(""));
            }
        }
        if self.grpc {
            let code = end.grpc_status.unwrap_or(if end.complete { 0 } else { 2 });
            self.span
                .set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            if code != 0 {
                self.span.set_status(Status::error(""));
            }
        }
        if !end.complete {
            self.span
                .set_status(Status::error("exchange did not complete"));
        }
        self.span.end();
    }
}

fn otel_parent(trace_id: TraceId, span_id: SpanId, flags: u8, remote: bool) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(trace_id.0),
        opentelemetry::trace::SpanId::from_bytes(span_id.0),
        TraceFlags::new(flags & FLAG_SAMPLED),
        remote,
        OtelTraceState::default(),
    ))
}

/// Starts `kind` span under `parent` (trace, span, flags); returns its ids and flags.
fn start(
    tracer: &BoxedTracer,
    kind: SpanKind,
    parent: Option<(TraceId, SpanId, u8)>,
    ex: &Exchange<'_>,
) -> (BoxedSpan, TraceId, SpanId, u8) {
    use opentelemetry::trace::Span;
    let cx = match parent {
        Some((t, s, f)) => otel_parent(t, s, f, kind == SpanKind::Server),
        None => Context::new(),
    };
    let builder = tracer.span_builder(span_name(ex)).with_kind(kind);
    let mut span = tracer.build_with_context(builder, &cx);
    let sc = span.span_context();
    let own = sc.is_valid() && parent.is_none_or(|(_, s, _)| sc.span_id().to_bytes() != s.0);
    let ids = if own {
        (
            TraceId(sc.trace_id().to_bytes()),
            SpanId(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8() & FLAG_SAMPLED,
        )
    } else {
        // No SDK installed: the ids are ours to make.
        match parent {
            Some((t, _, f)) => (t, SpanId::random(), f),
            None => (TraceId::random(), SpanId::random(), FLAG_SAMPLED),
        }
    };
    if span.is_recording() {
        span.set_attributes(attributes(ex));
    }
    (span, ids.0, ids.1, ids.2)
}

/// Starts the server span of an inbound request and the context its handler runs in.
pub(crate) fn start_server(
    tracer: &BoxedTracer,
    incoming: Incoming,
    ex: &Exchange<'_>,
) -> (TraceContext, SpanGuard) {
    let sampled = incoming.sampled.unwrap_or(true) || incoming.debug;
    let flags = if sampled { FLAG_SAMPLED } else { 0 };
    let parent = incoming.parent.map(|(t, s)| (t, s, flags));
    let (span, trace_id, span_id, flags) = start(tracer, SpanKind::Server, parent, ex);
    let ctx = TraceContext {
        trace_id,
        span_id,
        parent_span_id: incoming.parent.map(|(_, s)| s),
        flags,
        debug: incoming.debug,
        tracestate: incoming.tracestate,
        request_id: incoming.request_id,
    };
    let guard = SpanGuard {
        span,
        grpc: ex.grpc,
        server: true,
        status: None,
    };
    (ctx, guard)
}

/// Starts a client span under `parent` (the current request's context, else the
/// request's own trace headers, else a new trace) and writes its context onto `headers`.
pub(crate) fn start_client(
    tracer: &BoxedTracer,
    parent: Option<TraceContext>,
    headers: &mut http::HeaderMap,
    ex: &Exchange<'_>,
) -> SpanGuard {
    let parent = parent.unwrap_or_else(|| {
        let incoming = super::context::extract(headers);
        match incoming.parent {
            Some((t, s)) => TraceContext {
                trace_id: t,
                span_id: s,
                parent_span_id: None,
                flags: if incoming.sampled.unwrap_or(true) {
                    FLAG_SAMPLED
                } else {
                    0
                },
                debug: incoming.debug,
                tracestate: incoming.tracestate,
                request_id: incoming.request_id,
            },
            None => {
                // A call outside any request: a new trace, with the caller's request id.
                let mut root = TraceContext::new_root();
                root.request_id = incoming.request_id;
                root.span_id = SpanId::default();
                root
            }
        }
    });
    let parent_ids =
        parent
            .span_id
            .is_valid()
            .then_some((parent.trace_id, parent.span_id, parent.flags));
    let (span, trace_id, span_id, flags) = start(tracer, SpanKind::Client, parent_ids, ex);
    let mut ctx = parent.child(span_id);
    ctx.trace_id = trace_id;
    ctx.flags = flags;
    if !parent.span_id.is_valid() {
        ctx.parent_span_id = None;
    }
    ctx.inject(headers);
    SpanGuard {
        span,
        grpc: ex.grpc,
        server: false,
        status: None,
    }
}
