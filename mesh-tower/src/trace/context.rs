//! The trace context of the request being handled, and how it is read from headers,
//! made current for the handler's work, and written onto outbound calls.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::context::{FutureExt as _, WithContext};

use super::b3::{self, B3Context, B3Headers, Sampling};
use super::baggage;
use super::ids::{new_request_id, SpanId, TraceId};
use super::propagation::{B3Form, Propagation};
use super::w3c::{self, TraceState};

/// The request id header (Envoy's).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` passed on; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 256;

pub use super::w3c::{FLAG_RANDOM, FLAG_SAMPLED};

/// What the caller sent: its trace, its span, whether it samples.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Incoming {
    /// The caller's trace and span, when a valid `traceparent` or B3 context came.
    pub parent: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, if it made one (also from a sampling-only B3
    /// header such as `b3: 0`).
    pub sampled: Option<bool>,
    /// Debug sampling (B3 `d` / `x-b3-flags: 1`).
    pub debug: bool,
    /// The caller's `random` trace flag (W3C Level 2): its trace id is random.
    pub random: bool,
    /// The `tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<TraceState>,
    /// The B3 form the request came with, if it had valid B3 headers.
    pub b3_form: Option<B3Form>,
    /// The `baggage` list, as received.
    pub baggage: Option<HeaderValue>,
    /// The request id (the caller's, or a new one).
    pub request_id: HeaderValue,
    /// Whether the request had an `x-request-id` (valid or not), so that the server span
    /// does not look it up again before setting its own.
    pub(crate) request_id_sent: bool,
}

/// Reads every trace header the mesh understands ([`Propagation::all`]); see
/// [`extract_with`].
pub fn extract(headers: &HeaderMap) -> Incoming {
    extract_with(headers, Propagation::all())
}

/// Reads the trace headers `propagation` enables. W3C `traceparent` wins over B3 (single
/// `b3`, then the multi-header form); an invalid header is ignored, which restarts the
/// trace. A sampling-only B3 header (`b3: 0`, `x-b3-sampled` or `x-b3-flags` alone) keeps
/// its decision for the new trace. Never fails: malformed input only loses the caller's
/// context.
pub fn extract_with(headers: &HeaderMap, propagation: Propagation) -> Incoming {
    let present = Present::of(headers);
    let request_id = present
        .request_id
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(new_request_id);
    let mut incoming = Incoming {
        parent: None,
        sampled: None,
        debug: false,
        random: false,
        tracestate: None,
        b3_form: None,
        baggage: None,
        request_id,
        request_id_sent: present.request_id.is_some(),
    };
    if propagation.baggage() && present.baggage {
        incoming.baggage = baggage::baggage_from(headers);
    }
    if propagation.tracecontext() {
        let traceparent =
            w3c::single_traceparent(present.traceparent, present.traceparent_repeated);
        if let Some(Ok(tp)) = traceparent {
            incoming.parent = Some((tp.trace_id, tp.parent_id));
            incoming.sampled = Some(tp.flags & FLAG_SAMPLED != 0);
            incoming.random = tp.flags & FLAG_RANDOM != 0;
            if present.tracestate {
                incoming.tracestate = w3c::tracestate_from(headers).and_then(Result::ok);
            }
        }
    }
    if !propagation.reads_b3() || !(present.b3 || present.b3_multi) {
        return incoming;
    }
    let single = present.b3.then(|| b3::single_from(headers)).flatten();
    let (b3, form) = match single {
        Some(Ok(b)) => (Some(b), B3Form::Single),
        _ if present.b3_multi => (b3::parse_multi(headers).and_then(Result::ok), B3Form::Multi),
        _ => (None, B3Form::Multi),
    };
    if b3.is_some() {
        incoming.b3_form = Some(form);
    }
    if incoming.parent.is_some() {
        return incoming;
    }
    match b3 {
        Some(B3Headers::Context(c)) => {
            incoming.parent = Some((c.trace_id, c.span_id));
            incoming.sampled = c.sampling.map(Sampling::sampled);
            incoming.debug = c.sampling == Some(Sampling::Debug);
        }
        Some(B3Headers::SamplingOnly(s)) => {
            incoming.sampled = Some(s.sampled());
            incoming.debug = s == Sampling::Debug;
        }
        None => {}
    }
    incoming
}

/// Which of the headers [`extract_with`] reads a request has, from one pass over them:
/// looking up an absent header costs as much as a present one (its name is hashed), and
/// most requests carry few of them. The two every mesh request carries are kept as found,
/// so that they are not looked up again.
#[derive(Debug, Default, Clone, Copy)]
struct Present<'h> {
    /// The first `x-request-id`.
    request_id: Option<&'h HeaderValue>,
    baggage: bool,
    /// The first `traceparent`, and whether another followed.
    traceparent: Option<&'h HeaderValue>,
    traceparent_repeated: bool,
    tracestate: bool,
    b3: bool,
    b3_multi: bool,
}

impl<'h> Present<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let mut present = Self::default();
        for (name, value) in headers {
            match name.as_str() {
                "x-request-id" => {
                    present.request_id = present.request_id.or(Some(value));
                }
                "baggage" => present.baggage = true,
                "traceparent" => {
                    present.traceparent_repeated |= present.traceparent.is_some();
                    present.traceparent = present.traceparent.or(Some(value));
                }
                "tracestate" => present.tracestate = true,
                "b3" => present.b3 = true,
                n if n.starts_with("x-b3-") => present.b3_multi = true,
                _ => {}
            }
        }
        present
    }
}

/// The context of a span: what outbound calls made under it continue.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The span this one is a child of.
    pub parent_span_id: Option<SpanId>,
    /// Trace flags ([`FLAG_SAMPLED`], [`FLAG_RANDOM`]).
    pub flags: u8,
    /// Debug sampling, carried on in B3.
    pub debug: bool,
    /// The `tracestate` passed on.
    pub tracestate: Option<TraceState>,
    /// The `baggage` passed on.
    pub baggage: Option<HeaderValue>,
    /// The request id passed on.
    pub request_id: HeaderValue,
    /// Which headers are written.
    pub propagation: Propagation,
    /// The B3 form the request came with (passed on in that form).
    pub b3_form: Option<B3Form>,
    /// The OpenTelemetry context of this span, current while the handler runs.
    pub(crate) otel: opentelemetry::Context,
}

impl TraceContext {
    /// A new root context (a new random trace, sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_span_id: None,
            flags: FLAG_SAMPLED | FLAG_RANDOM,
            debug: false,
            tracestate: None,
            baggage: None,
            request_id: new_request_id(),
            propagation: Propagation::from_env(),
            b3_form: None,
            otel: opentelemetry::Context::new(),
        }
    }

    /// Whether the trace is sampled.
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The OpenTelemetry context of this span (the one current while the handler runs).
    pub fn otel_context(&self) -> &opentelemetry::Context {
        &self.otel
    }

    /// A child span's context: same trace, flags, state and request id, a new span id.
    pub fn child(&self, span_id: SpanId) -> Self {
        Self {
            span_id,
            parent_span_id: Some(self.span_id),
            ..self.clone()
        }
    }

    /// Writes this context onto an outbound request, replacing what was there: per
    /// [`Propagation`], `traceparent` (+ `tracestate`), `baggage`, B3 (in the form the
    /// request came with, else the configured one), and always `x-request-id`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        // What a request carries is looked for in one pass over its names, and only when
        // this context might have to remove something: removing an absent header hashes
        // its name all the same, and most requests have neither.
        let removes = (self.propagation.tracecontext() && self.tracestate.is_none())
            || (self.propagation.baggage() && self.baggage.is_none());
        let [has_tracestate, has_baggage] = if removes {
            crate::observe::present(headers, [&w3c::TRACESTATE, &baggage::BAGGAGE])
        } else {
            [false; 2]
        };
        if self.propagation.tracecontext() {
            headers.insert(
                w3c::TRACEPARENT,
                w3c::format_traceparent(&self.trace_id, &self.span_id, self.flags),
            );
            match &self.tracestate {
                Some(ts) => {
                    headers.insert(w3c::TRACESTATE, ts.header_value().clone());
                }
                None if has_tracestate => {
                    headers.remove(w3c::TRACESTATE);
                }
                None => {}
            }
        }
        if self.propagation.baggage() {
            match &self.baggage {
                Some(b) => {
                    headers.insert(baggage::BAGGAGE, b.clone());
                }
                None if has_baggage => {
                    headers.remove(baggage::BAGGAGE);
                }
                None => {}
            }
        }
        let (single, multi) = self.propagation.b3_forms(self.b3_form);
        if single || multi {
            let sampling = match (self.debug, self.is_sampled()) {
                (true, _) => Sampling::Debug,
                (false, true) => Sampling::Accept,
                (false, false) => Sampling::Deny,
            };
            let ctx = B3Context {
                trace_id: self.trace_id,
                span_id: self.span_id,
                parent_span_id: self.parent_span_id,
                sampling: Some(sampling),
            };
            if single {
                headers.insert(b3::B3, b3::format_single(&ctx));
            } else {
                headers.remove(b3::B3);
            }
            if multi {
                b3::insert_multi(headers, &ctx);
            }
        }
        headers.insert(X_REQUEST_ID, self.request_id.clone());
    }
}

/// A context as a future holds it to make it current: boxed, so that making it current
/// and taking it back, around each poll, swaps a pointer rather than moving the context
/// (184 bytes) several times.
pub(crate) type Held = Option<Box<TraceContext>>;

thread_local! {
    /// The context of the request whose future this thread is polling: put in place by
    /// [`Scope`] (and the inbound layer's future) for each poll, and taken back after it,
    /// as a task-local is.
    static CURRENT: RefCell<Held> = const { RefCell::new(None) };
}

/// The context of the request being handled by this task, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|c| c.as_deref().cloned()))
        .ok()
        .flatten()
}

/// A context made current until dropped; then it goes back to its owner, and the one it
/// replaced is current again.
pub(crate) struct Entered<'a> {
    owner: &'a mut Held,
    replaced: Held,
    /// The thread's slot could not be reached (its thread is shutting down): nothing was
    /// swapped.
    swapped: bool,
}

/// Swaps `slot` with the thread's current context; false when the thread's slot cannot be
/// reached (its thread is shutting down), and nothing moved.
fn swap_current(slot: &mut Held) -> bool {
    CURRENT
        .try_with(|c| {
            c.try_borrow_mut()
                .map(|mut current| std::mem::swap(&mut *current, slot))
                .is_ok()
        })
        .unwrap_or(false)
}

/// Makes `owner`'s context current (when it has one) until the guard drops.
pub(crate) fn enter(owner: &mut Held) -> Entered<'_> {
    let mut slot = owner.take();
    let swapped = swap_current(&mut slot);
    if swapped {
        Entered {
            owner,
            replaced: slot,
            swapped,
        }
    } else {
        // Not current, but not lost either.
        *owner = slot;
        Entered {
            owner,
            replaced: None,
            swapped,
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if !self.swapped {
            return;
        }
        let mut slot = self.replaced.take();
        // Only what was swapped out goes back to the owner (never the context it replaced).
        if swap_current(&mut slot) {
            *self.owner = slot;
        }
    }
}

/// Runs `fut` with `ctx` as the current trace context.
pub fn scope<F: Future>(ctx: TraceContext, fut: F) -> Scope<F> {
    Scope {
        fut: Some(fut),
        ctx: Some(Box::new(ctx)),
    }
}

pin_project_lite::pin_project! {
    /// A future with a trace context current while it is polled (and dropped): see
    /// [`scope`].
    pub struct Scope<F> {
        #[pin]
        fut: Option<F>,
        ctx: Held,
    }

    impl<F> PinnedDrop for Scope<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The future's own drop sees the context, as it did while polled.
            if this.fut.is_some() {
                let _entered = enter(this.ctx);
                this.fut.set(None);
            }
        }
    }
}

impl<F> std::fmt::Debug for Scope<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let _entered = enter(this.ctx);
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            // Polled after completion: a contract breach by the caller; pending rather
            // than a panic.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.poll(cx));
        // Done: dropped here, with the context still current, not later when the wrapper
        // is (which would enter it once more for nothing).
        this.fut.set(None);
        Poll::Ready(out)
    }
}

/// Carries the current trace context into a future that runs elsewhere.
pub trait InCurrentTrace: Future + Sized {
    /// The future, with the context of the request being handled now (if any), and the
    /// current OpenTelemetry context (so spans started in it keep their parent).
    fn in_current_trace(self) -> WithTrace<Self> {
        match current() {
            Some(ctx) => WithTrace::Scoped {
                fut: scope(ctx, self.with_current_context()),
            },
            None => WithTrace::Plain { fut: self },
        }
    }
}

impl<F: Future> InCurrentTrace for F {}

pin_project_lite::pin_project! {
    /// A future carrying a trace context: see [`InCurrentTrace`].
    #[project = WithTraceProj]
    #[allow(missing_docs)]
    pub enum WithTrace<F: Future> {
        /// With a context.
        Scoped { #[pin] fut: Scope<WithContext<F>> },
        /// There was none.
        Plain { #[pin] fut: F },
    }
}

impl<F: Future> std::fmt::Debug for WithTrace<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Scoped { .. } => "WithTrace::Scoped",
            Self::Plain { .. } => "WithTrace::Plain",
        })
    }
}

impl<F: Future> Future for WithTrace<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        match self.project() {
            WithTraceProj::Scoped { fut } => fut.poll(cx),
            WithTraceProj::Plain { fut } => fut.poll(cx),
        }
    }
}

/// `tokio::spawn` with the current trace context carried into the task, so its outbound
/// calls join the request's trace.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.in_current_trace())
}
