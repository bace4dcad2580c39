//! What the listener, the client and the observers (metrics, trace) share about an
//! exchange: who the peer is, and whether a request is gRPC. It lives here so that the
//! observers depend on neither `inbound` nor `outbound`.

use std::net::SocketAddr;
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
}

impl PeerIdentity {
    /// A plaintext peer (for tests and servers that do their own TLS).
    pub fn plaintext(remote_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        Self {
            spiffe_id: None,
            tls: false,
            remote_addr,
            local_addr,
            sni: None,
        }
    }

    /// The same peer with a verified SPIFFE ID over TLS.
    pub fn with_spiffe_id(mut self, id: Option<SpiffeId>) -> Self {
        self.tls = true;
        self.spiffe_id = id;
        self
    }
}

/// Whether a request is gRPC (so failures are answered with a `grpc-status`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
