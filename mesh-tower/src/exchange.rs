//! What the listener, the client and the observers (metrics, trace) share about an
//! exchange: who the peer is, and whether a request is gRPC. It lives here so that the
//! observers depend on neither `inbound` nor `outbound`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::HeaderMap;
use mesh_core::identity::SpiffeId;

/// Who is on the other end of a request's connection; in every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The SPIFFE ID of the peer's verified client certificate; `None` without mTLS.
    pub spiffe_id: Option<SpiffeId>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Our address the connection arrived on.
    pub local_addr: SocketAddr,
    /// The server name the client asked for in its ClientHello.
    pub sni: Option<Arc<str>>,
    /// What the connection remembers of its peer's metadata (Istio's metadata exchange,
    /// once per connection between mesh services).
    pub(crate) remembered: SharedMemory,
}

impl PeerIdentity {
    /// A plaintext peer (for tests and servers that do their own TLS). Its connection does
    /// not remember a mesh caller's metadata: the exchange goes on every request.
    pub fn plaintext(remote_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        Self {
            spiffe_id: None,
            tls: false,
            remote_addr,
            local_addr,
            sni: None,
            remembered: SharedMemory::default(),
        }
    }

    /// The same peer with a verified SPIFFE ID over TLS.
    pub fn with_spiffe_id(mut self, id: Option<SpiffeId>) -> Self {
        self.tls = true;
        self.spiffe_id = id;
        self
    }
}

/// What one connection remembers of its peer for Istio's metadata exchange: the interned
/// id of the metadata the peer sent, once both ends found that the connection runs between
/// them with nothing in between (see `metrics::peer`). Zero: nothing (the interner's id of
/// `unknown`, never remembered).
#[derive(Debug, Default)]
pub(crate) struct Remembered(AtomicU32);

impl Remembered {
    pub(crate) fn get(&self) -> Option<u32> {
        Some(self.0.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    pub(crate) fn set(&self, id: u32) {
        self.0.store(id, Ordering::Relaxed);
    }
}

/// A connection's [`Remembered`], shared by its requests; only the mesh's listener gives a
/// connection one (an identity built elsewhere may be made anew per request). Not part of
/// who the peer is: two are always equal.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedMemory(pub(crate) Option<Arc<Remembered>>);

impl SharedMemory {
    /// A connection's own.
    pub(crate) fn new() -> Self {
        Self(Some(Arc::default()))
    }

    pub(crate) fn get(&self) -> Option<&Remembered> {
        self.0.as_deref()
    }
}

impl PartialEq for SharedMemory {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedMemory {}

/// Whether a request is gRPC (so failures are answered with a `grpc-status`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
