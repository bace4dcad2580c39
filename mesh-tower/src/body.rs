//! Request bodies the outbound client can send more than once.
//!
//! A retry needs the request body again. [`ReplayBody::buffer`] reads the frames that are
//! ready right now, up to a limit: a unary gRPC message or an ordinary HTTP body is all
//! there at once and becomes replayable; a body still being produced (a client stream) or
//! one over the limit is sent through as it comes, and the request is not retried.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The boxed error type of bodies and services in this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body that is either held in memory (and can be replayed) or streamed.
    #[project = ReplayProj]
    #[derive(Debug)]
    pub enum ReplayBody<B> {
        /// The whole body, in memory.
        Buffered {
            data: Option<Bytes>,
            // Boxed: a request body with trailers is rare, and the body is moved with each
            // attempt (and held twice while a retry can follow); inline, the map would
            // make every request 72 bytes bigger.
            trailers: Option<Box<HeaderMap>>,
        },
        /// What was read already, then the rest of the original body.
        Streaming {
            prefix: Option<Bytes>,
            #[pin]
            rest: B,
        },
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    /// Reads the frames that are ready now, keeping at most `limit` bytes. A body that is
    /// one frame (the common case) is kept as it came, without a copy.
    pub fn buffer(mut body: B, limit: usize) -> Self {
        let mut buf = Held::default();
        loop {
            if body.is_end_stream() {
                return Self::Buffered {
                    data: Some(buf.freeze()),
                    trailers: None,
                };
            }
            match body.frame().now_or_never() {
                // End of the body: all of it is here.
                Some(None) => {
                    return Self::Buffered {
                        data: Some(buf.freeze()),
                        trailers: None,
                    }
                }
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        buf.push(data.copy_to_bytes(data.remaining()));
                        if buf.len() > limit {
                            return Self::Streaming {
                                prefix: Some(buf.freeze()),
                                rest: body,
                            };
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok().map(Box::new);
                        return Self::Buffered {
                            data: Some(buf.freeze()),
                            trailers,
                        };
                    }
                },
                // An error, or a frame not ready yet: stream the rest; the error (if any)
                // surfaces when the body is polled again.
                Some(Some(Err(_))) | None => {
                    return Self::Streaming {
                        prefix: (buf.len() > 0).then(|| buf.freeze()),
                        rest: body,
                    }
                }
            }
        }
    }
}

/// The data read so far: one chunk as it came, or several copied together.
#[derive(Default)]
enum Held {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Held {
    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(chunk),
            Self::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + chunk.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&chunk);
                Self::Many(all)
            }
            Self::Many(mut all) => {
                all.extend_from_slice(&chunk);
                Self::Many(all)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(b) => b.len(),
            Self::Many(b) => b.len(),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(b) => b,
            Self::Many(b) => b.freeze(),
        }
    }
}

impl<B> ReplayBody<B> {
    /// An empty, replayable body.
    pub fn empty() -> Self {
        Self::Buffered {
            data: None,
            trailers: None,
        }
    }

    /// A copy to send again, when the body is held in memory.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Buffered { data, trailers } => Some(Self::Buffered {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            Self::Streaming { .. } => None,
        }
    }

    /// Whether a retry can send this body again.
    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Buffered { .. })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ReplayProj::Buffered { data, trailers } => {
                if let Some(d) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            ReplayProj::Streaming { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                rest.poll_frame(cx).map(|f| {
                    f.map(|r| {
                        r.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                            .map_err(Into::into)
                    })
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Buffered { data, trailers } => {
                data.as_ref().is_none_or(|d| d.is_empty()) && trailers.is_none()
            }
            Self::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Streaming { prefix, rest } => {
                let p = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn full_body_is_buffered_and_replays() {
        let body = ReplayBody::buffer(Full::new(Bytes::from_static(b"hello")), 1024);
        assert!(body.is_replayable());
        let copy = body.try_clone().expect("replayable");
        let a = body.collect().await.expect("body").to_bytes();
        let b = copy.collect().await.expect("body").to_bytes();
        assert_eq!(a, b);
        assert_eq!(&a[..], b"hello");
    }

    #[tokio::test]
    async fn one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from(vec![3u8; 1024]);
        let body = ReplayBody::buffer(Full::new(chunk.clone()), 64 * 1024);
        let copy = body.try_clone().expect("replayable");
        let sent = body.collect().await.expect("body").to_bytes();
        assert_eq!(
            sent.as_ptr(),
            chunk.as_ptr(),
            "the caller's bytes, not a copy"
        );
        assert_eq!(copy.collect().await.expect("body").to_bytes(), chunk);
    }

    #[tokio::test]
    async fn chunks_ready_at_once_are_joined_in_order() {
        let frames = ["ab", "cd", "ef"]
            .map(|s| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(s.as_bytes()))));
        let body = ReplayBody::buffer(StreamBody::new(futures_util::stream::iter(frames)), 6);
        assert!(body.is_replayable(), "six bytes fit a limit of six");
        let copy = body.try_clone().expect("replayable");
        assert_eq!(
            &body.collect().await.expect("body").to_bytes()[..],
            b"abcdef"
        );
        assert_eq!(
            &copy.collect().await.expect("body").to_bytes()[..],
            b"abcdef"
        );
        let frames = ["ab", "cd", "ef"]
            .map(|s| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(s.as_bytes()))));
        let body = ReplayBody::buffer(StreamBody::new(futures_util::stream::iter(frames)), 5);
        assert!(!body.is_replayable(), "over the limit");
        assert_eq!(
            &body.collect().await.expect("body").to_bytes()[..],
            b"abcdef"
        );
    }

    #[tokio::test]
    async fn body_over_the_limit_streams_whole() {
        let body = ReplayBody::buffer(Full::new(Bytes::from(vec![7u8; 100])), 10);
        assert!(!body.is_replayable());
        let all = body.collect().await.expect("body").to_bytes();
        assert_eq!(all.len(), 100);
    }

    #[tokio::test]
    async fn pending_stream_is_not_awaited() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .expect("send");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let body = ReplayBody::buffer(StreamBody::new(stream), 1024);
        assert!(!body.is_replayable(), "a stream still open is not buffered");
        tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .await
            .expect("send");
        drop(tx);
        let all = body.collect().await.expect("body").to_bytes();
        assert_eq!(&all[..], b"ab");
    }

    #[tokio::test]
    async fn trailers_are_kept() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let frames = vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = ReplayBody::buffer(StreamBody::new(futures_util::stream::iter(frames)), 1024);
        assert!(body.is_replayable());
        let collected = body
            .try_clone()
            .expect("replay")
            .collect()
            .await
            .expect("body");
        assert_eq!(
            collected
                .trailers()
                .and_then(|t| t.get("x-t"))
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
