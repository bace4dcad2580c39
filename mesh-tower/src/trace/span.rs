//! Server and client spans: an OpenTelemetry span (exported when a provider is installed)
//! whose ids become the ids the mesh propagates, with the HTTP and RPC semantic
//! conventions' attributes.

use std::borrow::Cow;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceState as OtelTraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

use super::baggage;
use super::context::{Incoming, TraceContext, FLAG_RANDOM, FLAG_SAMPLED};
use super::ids::{SpanId, TraceId};
use super::propagation::Propagation;
use crate::observe::{ExchangeEnd, ExchangeObserver};

/// The instrumentation scope name of the mesh's spans.
pub const TRACER_NAME: &str = "mesh-tower";

/// The mesh's tracer from the global provider (a no-op until one is installed).
pub fn global_tracer() -> BoxedTracer {
    opentelemetry::global::tracer(TRACER_NAME)
}

/// The tracer the mesh's spans go to, and whether it makes spans at all. The global
/// provider's tracer before a provider is installed makes none: the mesh then skips the
/// span (an allocation and a few dynamic calls per request and side) and makes the ids it
/// propagates itself, as it does when the no-op tracer hands them back.
pub(crate) struct MeshTracer {
    tracer: BoxedTracer,
    spans: bool,
}

impl MeshTracer {
    pub(crate) fn new(tracer: BoxedTracer) -> Self {
        // Under suppressed telemetry an SDK's tracer starts nothing (an empty span
        // context) and a tracer that ignores suppression starts a span of its own (a new
        // span id); only the no-op tracer hands back its parent's context unchanged.
        let parent = otel_parent(TraceId([7; 16]), SpanId([7; 8]), 0, true);
        let parent = parent.with_telemetry_suppressed();
        let probe = tracer.build_with_context(tracer.span_builder("mesh-tracer-probe"), &parent);
        let spans = probe.span_context() != parent.span().span_context();
        Self { tracer, spans }
    }

    /// Whether spans are made (a tracer other than the no-op one).
    #[cfg(test)]
    pub(crate) fn makes_spans(&self) -> bool {
        self.spans
    }

    /// The same tracer, asked for spans whatever it is (tests of the span path with the
    /// no-op tracer).
    #[cfg(test)]
    pub(crate) fn always_spans(self) -> Self {
        Self {
            spans: true,
            ..self
        }
    }
}

impl std::fmt::Debug for MeshTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTracer")
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

/// What a span is about, for its name and attributes.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    /// The route template that matched (`/orders/{id}`), when the router says.
    pub route: Option<&'a str>,
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

/// The method as a span name: a known method, else `HTTP` (the semantic conventions'
/// `_OTHER`). Static, so naming an unsampled span costs nothing.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// The full span name, when it is not the method alone: `{package.Service}/{Method}` for
/// gRPC, `{method} {route}` for a server that knows its route (OpenTelemetry's HTTP and
/// RPC semantic conventions). Only built for spans that record.
fn full_name(ex: &Exchange<'_>) -> Option<String> {
    match (ex.grpc, grpc_parts(ex.path), ex.route) {
        (true, Some((s, m)), _) => Some(format!("{s}/{m}")),
        (_, _, Some(route)) => Some(format!("{} {route}", method_name(ex.method))),
        _ => None,
    }
}

fn attributes(ex: &Exchange<'_>) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(10);
    attrs.push(KeyValue::new(
        "http.request.method",
        ex.method.as_str().to_owned(),
    ));
    attrs.push(KeyValue::new("url.path", ex.path.to_owned()));
    if let Some(route) = ex.route {
        attrs.push(KeyValue::new("http.route", route.to_owned()));
    }
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

/// The span a guard ends: a client span, or a server span living in the context the
/// handler runs in (so the handler's own spans are its children).
enum Held {
    Span(BoxedSpan),
    Context(Context),
    None,
}

impl Held {
    fn is_recording(&self) -> bool {
        match self {
            Self::Span(s) => s.is_recording(),
            Self::Context(cx) => cx.span().is_recording(),
            Self::None => false,
        }
    }

    fn set_attribute(&mut self, kv: KeyValue) {
        match self {
            Self::Span(s) => s.set_attribute(kv),
            Self::Context(cx) => cx.span().set_attribute(kv),
            Self::None => {}
        }
    }

    fn set_status(&mut self, status: Status) {
        match self {
            Self::Span(s) => s.set_status(status),
            Self::Context(cx) => cx.span().set_status(status),
            Self::None => {}
        }
    }

    fn end(&mut self) {
        match self {
            Self::Span(s) => s.end(),
            Self::Context(cx) => cx.span().end(),
            Self::None => {}
        }
    }
}

/// A span in progress; ends (with the status attributes) when the exchange ends.
pub struct SpanGuard {
    span: Held,
    grpc: bool,
    server: bool,
    status: Option<u16>,
}

impl std::fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanGuard")
            .field("recording", &self.span.is_recording())
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
    Context::new().with_remote_span_context(span_context(trace_id, span_id, flags, remote))
}

fn span_context(trace_id: TraceId, span_id: SpanId, flags: u8, remote: bool) -> SpanContext {
    SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(trace_id.0),
        opentelemetry::trace::SpanId::from_bytes(span_id.0),
        TraceFlags::new(flags & (FLAG_SAMPLED | FLAG_RANDOM)),
        remote,
        OtelTraceState::default(),
    )
}

/// A started span and the ids it propagates.
struct Started {
    /// None when the tracer makes no spans.
    span: Option<BoxedSpan>,
    trace_id: TraceId,
    span_id: SpanId,
    /// The sampled bit.
    sampled: u8,
    /// Whether an SDK made the span (else the ids are ours and the span a no-op).
    own: bool,
}

/// Starts a `kind` span under `parent_cx`, whose span (if valid) has `parent_span`.
fn start(
    tracer: &MeshTracer,
    kind: SpanKind,
    parent_cx: &Context,
    parent: Option<(TraceId, SpanId, u8)>,
    ex: &Exchange<'_>,
) -> Started {
    let mut span = tracer.spans.then(|| {
        let builder = tracer
            .tracer
            .span_builder(Cow::Borrowed(method_name(ex.method)))
            .with_kind(kind);
        tracer.tracer.build_with_context(builder, parent_cx)
    });
    let own = span.as_ref().map(|s| s.span_context()).filter(|sc| {
        sc.is_valid() && parent.is_none_or(|(_, s, _)| sc.span_id().to_bytes() != s.0)
    });
    let (trace_id, span_id, sampled) = match own {
        Some(sc) => (
            TraceId(sc.trace_id().to_bytes()),
            SpanId(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8() & FLAG_SAMPLED,
        ),
        // No SDK installed: the ids are ours to make.
        None => match parent {
            Some((t, _, f)) => (t, SpanId::random(), f & FLAG_SAMPLED),
            None => (TraceId::random(), SpanId::random(), FLAG_SAMPLED),
        },
    };
    let own = own.is_some();
    if let Some(span) = span.as_mut().filter(|s| s.is_recording()) {
        if let Some(name) = full_name(ex) {
            span.update_name(name);
        }
        span.set_attributes(attributes(ex));
    }
    Started {
        span,
        trace_id,
        span_id,
        sampled,
        own,
    }
}

/// Starts the server span of an inbound request and the context its handler runs in: the
/// trace context the mesh's clients continue, and the OpenTelemetry context (the server
/// span, the request's baggage) that is made current for the handler, so that spans the
/// application starts — with the OpenTelemetry API or `tracing-opentelemetry` — are its
/// children.
pub(crate) fn start_server(
    tracer: &MeshTracer,
    incoming: Incoming,
    ex: &Exchange<'_>,
    propagation: Propagation,
) -> (TraceContext, SpanGuard) {
    let sampled = incoming.sampled.unwrap_or(true) || incoming.debug;
    let (trace_id, span_id, flags, held, mut otel) = match incoming.parent {
        None if !sampled => {
            // The caller said "do not sample" and sent no trace: a new trace, unsampled.
            // No span is started (it would not be recorded); children see the decision.
            let (t, s) = (TraceId::random(), SpanId::random());
            let cx = otel_parent(t, s, FLAG_RANDOM, false);
            (t, s, FLAG_RANDOM, Held::None, cx)
        }
        parent => {
            let caller_flags = if sampled { FLAG_SAMPLED } else { 0 };
            let parent = parent.map(|(t, s)| (t, s, caller_flags));
            // The span's parent context, only for a tracer that makes spans.
            let parent_cx = match parent {
                Some((t, s, f)) if tracer.spans => otel_parent(t, s, f, true),
                _ => Context::new(),
            };
            let started = start(tracer, SpanKind::Server, &parent_cx, parent, ex);
            // Level 2: a continued trace keeps the caller's `random` flag; a trace we start
            // has random ids (ours, or the SDK's default generator).
            let random = match parent {
                Some(_) if incoming.random => FLAG_RANDOM,
                Some(_) => 0,
                None => FLAG_RANDOM,
            };
            let flags = started.sampled | random;
            let (held, cx) = if let Some(span) = started.span.filter(|_| started.own) {
                let cx = Context::new().with_span(span);
                (Held::Context(cx.clone()), cx)
            } else {
                // Without a span of its own the handler still runs in a context carrying
                // the server span's ids, so spans it starts through another tracer (say,
                // a provider installed after the mesh was built) continue the trace.
                let cx = otel_parent(started.trace_id, started.span_id, flags, false);
                (Held::None, cx)
            };
            (started.trace_id, started.span_id, flags, held, cx)
        }
    };
    if let Some(b) = &incoming.baggage {
        otel = otel.with_baggage(baggage::parse(b));
    }
    let ctx = TraceContext {
        trace_id,
        span_id,
        parent_span_id: incoming.parent.map(|(_, s)| s),
        flags,
        debug: incoming.debug,
        tracestate: incoming.tracestate,
        baggage: incoming.baggage,
        request_id: incoming.request_id,
        propagation,
        b3_form: incoming.b3_form,
        otel,
    };
    let guard = SpanGuard {
        span: held,
        grpc: ex.grpc,
        server: true,
        status: None,
    };
    (ctx, guard)
}

/// Starts a client span and writes its context onto `headers`. The parent is the
/// application's current OpenTelemetry span when there is one (a span it started inside
/// the handler), else the request being handled (`request`), else the trace headers the
/// request already carries, else none (a new trace).
pub(crate) fn start_client(
    tracer: &MeshTracer,
    request: Option<TraceContext>,
    headers: &mut http::HeaderMap,
    ex: &Exchange<'_>,
) -> SpanGuard {
    let current = Context::current();
    let base = request.unwrap_or_else(|| {
        let propagation = Propagation::from_env();
        let incoming = super::context::extract_with(headers, propagation);
        let mut root = TraceContext::new_root();
        root.request_id = incoming.request_id;
        root.propagation = propagation;
        root.b3_form = incoming.b3_form;
        root.baggage = incoming.baggage;
        match incoming.parent {
            Some((t, s)) => {
                root.trace_id = t;
                root.span_id = s;
                let sampled = incoming.sampled.unwrap_or(true) || incoming.debug;
                root.flags = if sampled { FLAG_SAMPLED } else { 0 }
                    | if incoming.random { FLAG_RANDOM } else { 0 };
                root.debug = incoming.debug;
                root.tracestate = incoming.tracestate;
            }
            None => {
                // A call outside any request: a new trace, with the caller's request id.
                root.span_id = SpanId::default();
            }
        }
        root
    });
    let app_span = current.span();
    let app_sc = app_span.span_context();
    let app = app_sc.is_valid();
    let parent = if app {
        let t = TraceId(app_sc.trace_id().to_bytes());
        let s = SpanId(app_sc.span_id().to_bytes());
        // The random flag belongs to the trace: the request's when it is the same trace.
        let random = if t == base.trace_id {
            base.flags & FLAG_RANDOM
        } else {
            app_sc.trace_flags().to_u8() & FLAG_RANDOM
        };
        let flags = (app_sc.trace_flags().to_u8() & FLAG_SAMPLED) | random;
        Some((t, s, flags))
    } else if base.span_id.is_valid() {
        Some((base.trace_id, base.span_id, base.flags))
    } else {
        None
    };
    // The span's parent context, only for a tracer that makes spans.
    let parent_cx = match parent {
        _ if !tracer.spans => Context::new(),
        Some(_) if app => current.clone(),
        Some((t, s, f)) => otel_parent(t, s, f, false),
        None => Context::new(),
    };
    let started = start(tracer, SpanKind::Client, &parent_cx, parent, ex);
    let random = match parent {
        Some((_, _, f)) => f & FLAG_RANDOM,
        None => FLAG_RANDOM,
    };
    let same_trace = started.trace_id == base.trace_id;
    let baggage = outbound_baggage(&current, &base);
    let ctx = TraceContext {
        trace_id: started.trace_id,
        span_id: started.span_id,
        parent_span_id: parent.map(|(_, s, _)| s),
        flags: started.sampled | random,
        debug: base.debug && same_trace,
        tracestate: if same_trace { base.tracestate } else { None },
        baggage,
        request_id: base.request_id,
        propagation: base.propagation,
        b3_form: base.b3_form,
        otel: Context::new(),
    };
    ctx.inject(headers);
    SpanGuard {
        span: started.span.map_or(Held::None, Held::Span),
        grpc: ex.grpc,
        server: false,
        status: None,
    }
}

/// The `baggage` for a call: the request's header as received while the handler has not
/// changed the baggage (no re-encoding per call), else the current context's baggage.
fn outbound_baggage(current: &Context, base: &TraceContext) -> Option<http::HeaderValue> {
    if !base.propagation.baggage() {
        return None;
    }
    let now = current.baggage();
    // Unchanged: the very baggage the request's context holds, or none set at all (a
    // context that does not come from the request's, e.g. no context attached).
    let none_set = Context::new();
    if std::ptr::eq(now, base.otel.baggage()) || std::ptr::eq(now, none_set.baggage()) {
        return base.baggage.clone();
    }
    baggage::format(now)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Span, SpanData, SpanProcessor};

    use super::*;

    /// Counts the spans an SDK starts and ends.
    #[derive(Debug, Default)]
    struct Counted {
        started: AtomicUsize,
        ended: AtomicUsize,
    }

    #[derive(Debug)]
    struct Counter(Arc<Counted>);

    impl SpanProcessor for Counter {
        fn on_start(&self, _: &mut Span, _: &Context) {
            self.0.started.fetch_add(1, Ordering::SeqCst);
        }
        fn on_end(&self, _: SpanData) {
            self.0.ended.fetch_add(1, Ordering::SeqCst);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn sdk(sampler: Sampler) -> (MeshTracer, Arc<Counted>) {
        let counted = Arc::new(Counted::default());
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_span_processor(Counter(Arc::clone(&counted)))
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer(TRACER_NAME)));
        (MeshTracer::new(tracer), counted)
    }

    fn exchange(method: &http::Method) -> Exchange<'_> {
        Exchange {
            method,
            path: "/",
            route: None,
            grpc: false,
            server: None,
            peer: None,
        }
    }

    #[test]
    fn the_no_op_tracer_is_told_apart_from_an_sdk_s_whatever_it_samples() {
        assert!(
            !MeshTracer::new(global_tracer()).makes_spans(),
            "no provider installed"
        );
        for sampler in [Sampler::AlwaysOn, Sampler::AlwaysOff] {
            let (tracer, counted) = sdk(sampler);
            assert!(tracer.makes_spans());
            // The probe is neither started nor exported.
            assert_eq!(counted.started.load(Ordering::SeqCst), 0);
            assert_eq!(counted.ended.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn an_sdk_s_spans_are_the_ids_propagated() {
        let (tracer, counted) = sdk(Sampler::AlwaysOn);
        let method = http::Method::GET;
        let incoming =
            super::super::context::extract_with(&http::HeaderMap::new(), Propagation::default());
        let (ctx, server) = start_server(
            &tracer,
            incoming,
            &exchange(&method),
            Propagation::default(),
        );
        let mut out = http::HeaderMap::new();
        let client = start_client(&tracer, Some(ctx.clone()), &mut out, &exchange(&method));
        assert_eq!(
            counted.started.load(Ordering::SeqCst),
            2,
            "a server and a client span"
        );
        let Held::Context(cx) = &server.span else {
            panic!("the server span is held in its context");
        };
        assert_eq!(cx.span().span_context().span_id().to_bytes(), ctx.span_id.0);
        let Held::Span(span) = &client.span else {
            panic!("the client span is held");
        };
        let tp = out["traceparent"].to_str().expect("ascii").to_owned();
        let own = span.span_context();
        assert!(
            tp.contains(&own.span_id().to_string()),
            "{tp} carries the client span"
        );
        assert!(
            tp.contains(&own.trace_id().to_string()),
            "{tp} carries the trace"
        );
        server.on_end(ExchangeEnd {
            bytes: 0,
            grpc_status: None,
            complete: true,
        });
        client.on_end(ExchangeEnd {
            bytes: 0,
            grpc_status: None,
            complete: true,
        });
        assert_eq!(counted.ended.load(Ordering::SeqCst), 2);
    }
}
