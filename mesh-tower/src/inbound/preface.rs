//! Which HTTP a connection speaks, told by its first bytes: HTTP/2's client preface or
//! anything else (HTTP/1.1). The header-read timeout applies to HTTP/1.1 connections only,
//! and the connection's own idle check applies it (see `serve_http`), so it must know.
//!
//! hyper's own HTTP/1.1 header-read timer makes, registers and drops a timer for every
//! request head; the connection's idle check needs no per-request work beyond what it
//! already does (the in-flight count and the clock read when a response ends).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::table::Activity;

/// The start of HTTP/2's connection preface (RFC 9113 section 3.4): `PRI * HTTP/2.0`. An
/// HTTP/1.1 request line cannot start this way (no HTTP/1.1 method is `PRI` followed by
/// `* HTTP/2.0`), so these bytes decide.
const PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Bytes of the preface matched so far; `DECIDED` once the connection is known.
const DECIDED: usize = usize::MAX;

pin_project! {
    /// A connection's stream that watches its first bytes for HTTP/2's preface and marks
    /// the connection's [`Activity`] HTTP/2 when they are; after those bytes it only
    /// passes reads and writes through.
    pub(super) struct Sniffed<T> {
        #[pin]
        io: T,
        matched: usize,
        activity: Arc<Activity>,
    }
}

impl<T> Sniffed<T> {
    pub(super) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            matched: 0,
            activity,
        }
    }
}

/// Where `read` leaves the match after `matched` preface bytes: the new count, or
/// `DECIDED` with whether the connection is HTTP/2.
fn advance(matched: usize, read: &[u8]) -> (usize, Option<bool>) {
    let want = &PREFACE[matched..];
    let n = want.len().min(read.len());
    if want[..n] != read[..n] {
        (DECIDED, Some(false))
    } else if n == want.len() {
        (DECIDED, Some(true))
    } else {
        (matched + n, None)
    }
}

impl<T: AsyncRead> AsyncRead for Sniffed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.matched == DECIDED {
            return this.io.poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let (matched, http2) = advance(*this.matched, read);
            *this.matched = matched;
            if http2 == Some(true) {
                this.activity.mark_http2();
            }
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Sniffed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::inbound::table::Admission;
    use crate::inbound::table::ConnectionTable;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn activity() -> (Arc<Activity>, impl Drop) {
        let table = ConnectionTable::new(10, 10);
        match table.admit([127, 0, 0, 1].into()) {
            Admission::Admitted(registered) => (Arc::clone(registered.activity()), registered),
            _ => panic!("an empty table admits"),
        }
    }

    /// Sends `pieces` one write at a time through a `Sniffed` stream and reads them all.
    async fn sniff(pieces: &[&[u8]]) -> (bool, Vec<u8>) {
        let (activity, _registered) = activity();
        let (mut client, server) = tokio::io::duplex(1024);
        let mut sniffed = Sniffed::new(server, Arc::clone(&activity));
        let mut got = Vec::new();
        for piece in pieces {
            client.write_all(piece).await.unwrap();
            let mut buf = vec![0; piece.len()];
            sniffed.read_exact(&mut buf).await.unwrap();
            got.extend_from_slice(&buf);
        }
        (activity.is_http2(), got)
    }

    #[tokio::test]
    async fn the_http2_preface_marks_the_connection_http2_whole_or_in_pieces() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(sniff(&[preface]).await, (true, preface.to_vec()));
        let (http2, got) = sniff(&[b"P", b"RI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"]).await;
        assert!(http2, "the preface split over three reads");
        assert_eq!(got, preface);
    }

    #[tokio::test]
    async fn http1_requests_and_near_misses_are_not_http2() {
        for pieces in [
            &[&b"GET / HTTP/1.1\r\n\r\n"[..]][..],
            &[b"P", b"OST / HTTP/1.1\r\n"],
            &[b"PRI * HTTP/1.1\r\n\r\n"],
            &[b"PRI", b" * HTTP/2.1"],
        ] {
            let (http2, got) = sniff(pieces).await;
            assert!(!http2, "{:?}", String::from_utf8_lossy(&got));
            assert_eq!(got, pieces.concat());
        }
    }

    #[tokio::test]
    async fn after_the_first_bytes_decide_later_ones_are_not_looked_at() {
        // An HTTP/1.1 connection whose body later carries the preface's bytes.
        let (http2, _) =
            sniff(&[b"POST / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).await;
        assert!(!http2);
    }

    #[test]
    fn advance_counts_matched_bytes_until_the_preface_decides() {
        assert_eq!(advance(0, b"PRI"), (3, None));
        assert_eq!(advance(3, b" * HTTP/2.0\r\n"), (DECIDED, Some(true)));
        assert_eq!(advance(3, b" * HTTP/1.1"), (DECIDED, Some(false)));
        assert_eq!(advance(0, b"G"), (DECIDED, Some(false)));
    }
}
