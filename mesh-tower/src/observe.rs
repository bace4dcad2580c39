//! Watching a response body to its end: how many bytes it carried and the `grpc-status`
//! it ended with (from the headers of a trailers-only response, or from the trailers).
//! The trace and metrics layers end their spans and record their samples here, when the
//! exchange is really over rather than when the headers are out.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeEnd {
    /// Body bytes sent.
    pub bytes: u64,
    /// The gRPC status, if the response carried one.
    pub grpc_status: Option<i32>,
    /// False when the body failed or was dropped before its end.
    pub complete: bool,
}

/// Told once when a watched body ends (or is dropped).
pub trait ExchangeObserver: Send + 'static {
    /// The exchange is over.
    fn on_end(self, end: ExchangeEnd);
}

impl<A: ExchangeObserver, B: ExchangeObserver> ExchangeObserver for (A, B) {
    fn on_end(self, end: ExchangeEnd) {
        self.0.on_end(end);
        self.1.on_end(end);
    }
}

impl<A: ExchangeObserver> ExchangeObserver for Option<A> {
    fn on_end(self, end: ExchangeEnd) {
        if let Some(a) = self {
            a.on_end(end);
        }
    }
}

/// The name of gRPC's status header and trailer.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` in these headers or trailers.
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    // Most heads that pass (an HTTP service's) have no `grpc-status`: a pass over their
    // names says so for less than looking the name up would.
    if present(headers, [&GRPC_STATUS]) == [false] {
        return None;
    }
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Which of `names` `headers` has, found in one pass over its names. Looking up an absent
/// name hashes it all the same (about a hundred instructions for a long custom name);
/// comparing names costs next to nothing, as a standard name differs from a custom one at
/// once and custom names of different lengths by their lengths.
pub(crate) fn present<const N: usize>(headers: &HeaderMap, names: [&HeaderName; N]) -> [bool; N] {
    let mut found = [false; N];
    for name in headers.keys() {
        for (found, wanted) in found.iter_mut().zip(names) {
            *found |= name == wanted;
        }
    }
    found
}

/// The bookkeeping of a watched body, for bodies that embed it.
pub(crate) struct Watch<O: ExchangeObserver> {
    observer: Option<O>,
    end: ExchangeEnd,
}

impl<O: ExchangeObserver> Watch<O> {
    pub(crate) fn new(observer: O, headers: &HeaderMap) -> Self {
        Self::with_grpc_status(observer, grpc_status(headers))
    }

    /// Watching a response whose head's `grpc-status` was already read.
    pub(crate) fn with_grpc_status(observer: O, grpc_status: Option<i32>) -> Self {
        Self {
            observer: Some(observer),
            end: ExchangeEnd {
                bytes: 0,
                grpc_status,
                complete: false,
            },
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(o) = self.observer.take() {
            self.end.complete = complete;
            o.on_end(self.end);
        }
    }

    /// Notes what a poll of the body returned; `end_stream` is the body's state after it.
    pub(crate) fn on_poll<D: Buf, E>(
        &mut self,
        polled: &Poll<Option<Result<Frame<D>, E>>>,
        end_stream: bool,
    ) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.end.bytes += data.remaining() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(s) = grpc_status(trailers) {
                        self.end.grpc_status = Some(s);
                    }
                }
                // hyper stops polling once the body says it is done.
                if end_stream {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
    }

    /// The body was already at its end when watching began.
    pub(crate) fn ended_early(&mut self) {
        self.finish(true);
    }
}

impl<O: ExchangeObserver> Drop for Watch<O> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pin_project_lite::pin_project! {
    /// A response body that tells an [`ExchangeObserver`] when it ends.
    pub struct ObservedBody<B, O: ExchangeObserver> {
        #[pin]
        inner: B,
        pending: Watch<O>,
    }
}

impl<B, O: ExchangeObserver> std::fmt::Debug for ObservedBody<B, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("bytes", &self.pending.end.bytes)
            .finish()
    }
}

impl<B: Body, O: ExchangeObserver> ObservedBody<B, O> {
    /// Watches `inner`; `headers` are the response's (a trailers-only gRPC status is there).
    pub fn new(inner: B, headers: &HeaderMap, observer: O) -> Self {
        let mut pending = Watch::new(observer, headers);
        if inner.is_end_stream() {
            pending.ended_early();
        }
        Self { inner, pending }
    }
}

impl<B: Body, O: ExchangeObserver> Body for ObservedBody<B, O> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let end_stream = this.inner.is_end_stream();
        this.pending.on_poll(&polled, end_stream);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How many bytes a request body carried: known up front (`content-length`), or counted as
/// the body is read (a streaming or gRPC request, which has no length).
#[derive(Debug, Clone)]
pub(crate) enum RequestSize {
    /// The exact size.
    Exact(u64),
    /// Counted by a [`CountedBody`] so far.
    Counted(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl RequestSize {
    /// The bytes now.
    pub(crate) fn get(&self) -> u64 {
        match self {
            Self::Exact(n) => *n,
            Self::Counted(c) => c.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the bytes read from it when its size is not known.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    }
}

impl<B> std::fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedBody")
            .field("counted", &self.counter.is_some())
            .finish()
    }
}

impl<B: Body> CountedBody<B> {
    /// Wraps `inner`; counts only when its size hint is not exact (no allocation otherwise).
    pub(crate) fn new(inner: B) -> (Self, RequestSize) {
        match inner.size_hint().exact() {
            Some(n) => (
                Self {
                    inner,
                    counter: None,
                },
                RequestSize::Exact(n),
            ),
            None => {
                let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                (
                    Self {
                        inner,
                        counter: Some(std::sync::Arc::clone(&counter)),
                    },
                    RequestSize::Counted(counter),
                )
            }
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, this.counter.as_ref()) {
            if let Some(data) = frame.data_ref() {
                counter.fetch_add(
                    u64::try_from(data.remaining()).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn present_finds_standard_and_custom_names_and_only_those() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert("x-envoy-peer-metadata-id", HeaderValue::from_static("id"));
        headers.append("grpc-status", HeaderValue::from_static("0"));
        headers.append("grpc-status", HeaderValue::from_static("1"));
        // Same length as `grpc-status`, another name.
        let grpc_state = HeaderName::from_static("grpc-statux");
        assert_eq!(
            present(
                &headers,
                [&GRPC_STATUS, &CONTENT_TYPE, &CONTENT_LENGTH, &grpc_state]
            ),
            [true, false, true, false]
        );
        assert_eq!(present(&HeaderMap::new(), [&GRPC_STATUS]), [false]);
        assert_eq!(grpc_status(&headers), Some(0));
        headers.remove(GRPC_STATUS);
        assert_eq!(grpc_status(&headers), None);
    }
}
