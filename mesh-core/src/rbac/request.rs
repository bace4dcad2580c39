//! What authorization reads from a request, borrowed rather than copied.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The attributes of a request that RBAC rules look at.
///
/// Implement it on whatever the server already has (an `http::Request` plus the
/// connection's TLS info) so that evaluation borrows and never allocates.
pub trait RequestAttributes {
    /// The HTTP method (`:method`), such as `POST`.
    fn method(&self) -> &str;
    /// The request path with its query string (`:path`).
    fn path(&self) -> &str;
    /// The authority (`:authority`, or `Host` in HTTP/1.1).
    fn authority(&self) -> &str;
    /// The value of header `name` (lower-case); several values joined with `,`.
    fn header(&self, name: &str) -> Option<&str>;
    /// The peer's address (the direct remote address of the connection).
    fn source(&self) -> SocketAddr;
    /// The local address the connection arrived on.
    fn destination(&self) -> SocketAddr;
    /// The peer's authenticated principal (its URI SAN, a SPIFFE ID), `None` without mTLS.
    fn peer_principal(&self) -> Option<&str>;
    /// The server name the client sent in its TLS ClientHello, if any.
    fn sni(&self) -> Option<&str>;
}

/// A plain borrowed [`RequestAttributes`], for tests, benchmarks and simple servers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    headers: &'a [(&'a str, &'a str)],
    source: SocketAddr,
    destination: SocketAddr,
    peer_principal: Option<&'a str>,
    sni: Option<&'a str>,
}

const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl<'a> Request<'a> {
    /// A request with this method and path, no headers, no peer identity, and
    /// `0.0.0.0:0` for both addresses.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            authority: "",
            headers: &[],
            source: UNSPECIFIED,
            destination: UNSPECIFIED,
            peer_principal: None,
            sni: None,
        }
    }

    /// Sets the authority.
    pub fn with_authority(mut self, authority: &'a str) -> Self {
        self.authority = authority;
        self
    }

    /// Sets the headers as `(lower-case name, value)` pairs.
    pub fn with_headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the peer's address.
    pub fn with_source(mut self, source: SocketAddr) -> Self {
        self.source = source;
        self
    }

    /// Sets the local address.
    pub fn with_destination(mut self, destination: SocketAddr) -> Self {
        self.destination = destination;
        self
    }

    /// Sets the peer's authenticated principal.
    pub fn with_peer_principal(mut self, principal: Option<&'a str>) -> Self {
        self.peer_principal = principal;
        self
    }

    /// Sets the TLS server name.
    pub fn with_sni(mut self, sni: Option<&'a str>) -> Self {
        self.sni = sni;
        self
    }
}

impl RequestAttributes for Request<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn authority(&self) -> &str {
        self.authority
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn source(&self) -> SocketAddr {
        self.source
    }

    fn destination(&self) -> SocketAddr {
        self.destination
    }

    fn peer_principal(&self) -> Option<&str> {
        self.peer_principal
    }

    fn sni(&self) -> Option<&str> {
        self.sni
    }
}
