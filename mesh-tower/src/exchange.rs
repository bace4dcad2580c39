//! What the listener, the client and the observers (metrics, trace) share about an
//! exchange: who the peer is, and whether a request is gRPC. It lives here so that the
//! observers depend on neither `inbound` nor `outbound`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What one connection remembers of its peer for Istio's metadata exchange (see
/// `metrics::peer`): the interned id of the metadata the peer sent, with the serial of the
/// registry that interned it (an id means nothing in another registry). Zero: nothing.
#[derive(Debug, Default)]
pub(crate) struct Remembered(AtomicU64);

impl Remembered {
    /// The id, when `registry` interned it.
    pub(crate) fn get(&self, registry: u64) -> Option<u32> {
        let v = self.0.load(Ordering::Relaxed);
        let id = v as u32;
        (id != 0 && (v >> 32) as u32 == registry as u32).then_some(id)
    }

    pub(crate) fn set(&self, registry: u64, id: u32) {
        self.0.store(
            u64::from(registry as u32) << 32 | u64::from(id),
            Ordering::Relaxed,
        );
    }
}

/// An address as `x-mesh-peer-direct` carries it (an IPv4-mapped IPv6 address as IPv4, as
/// the other end may see it).
pub(crate) fn addr_text(addr: SocketAddr) -> String {
    SocketAddr::new(addr.ip().to_canonical(), addr.port()).to_string()
}

/// One end of a connection in the metadata exchange: its own address, as the other end
/// names it when the connection runs directly between them, what it remembers of the
/// other end, and whether the exchange has gone quiet.
#[derive(Debug)]
pub(crate) struct ConnectionEnd {
    local: Box<str>,
    pub(crate) remembered: Remembered,
    /// Set once both ends know that both remember: requests then carry no exchange
    /// header at all (see `metrics::peer`).
    quiet: AtomicBool,
}

impl ConnectionEnd {
    /// The end at `local`, remembering nothing yet.
    pub(crate) fn new(local: SocketAddr) -> Self {
        Self {
            local: addr_text(local).into(),
            remembered: Remembered::default(),
            quiet: AtomicBool::new(false),
        }
    }

    /// Whether `named` (the other end's `x-mesh-peer-direct`) is this end's address.
    pub(crate) fn is_named(&self, named: &http::HeaderValue) -> bool {
        named.as_bytes() == self.local.as_bytes()
    }

    /// Whether the exchange on this connection has gone quiet.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// The exchange goes quiet from now on (written once, not on every request: the flag
    /// is read by every request on the connection).
    pub(crate) fn quieten(&self) {
        if !self.is_quiet() {
            self.quiet.store(true, Ordering::Relaxed);
        }
    }
}

/// A server connection's [`ConnectionEnd`], shared by its requests; only the mesh's listener gives a
/// connection one (an identity built elsewhere may be made anew per request). Not part of
/// who the peer is: two are always equal.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedMemory(Option<Arc<ConnectionEnd>>);

impl SharedMemory {
    /// The end of a connection that arrived on `local`.
    pub(crate) fn new(local: SocketAddr) -> Self {
        Self(Some(Arc::new(ConnectionEnd::new(local))))
    }

    pub(crate) fn get(&self) -> Option<&ConnectionEnd> {
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
