//! The inbound listener's connection settings.

use std::time::Duration;

/// How the inbound listener treats connections: how long a peer may take before it says
/// anything, how long a connection may sit idle, how many may be open (in all, and from
/// one peer address), and HTTP/2's keepalive and stream limits.
///
/// | setting | default | Envoy (Istio's sidecar) | hyper |
/// |---|---|---|---|
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | `transport_socket_connect_timeout`: none | none |
/// | [`first_byte_timeout`](Self::first_byte_timeout) (PERMISSIVE sniff) | 10 s | `listener_filters_timeout`: 15 s | none |
/// | [`header_read_timeout`](Self::header_read_timeout) (HTTP/1.1) | 30 s | `request_headers_timeout`: none | 30 s once a timer is set |
/// | [`idle_timeout`](Self::idle_timeout) | 5 min | HTTP connection manager `idle_timeout`: 1 h | none |
/// | [`max_connections`](Self::max_connections) | 10,000 | overload manager: none | none |
/// | [`max_connections_per_peer`](Self::max_connections_per_peer) | 4,096 | none | none |
/// | [`http2_keep_alive_interval`](Self::http2_keep_alive_interval) | none | `connection_keepalive`: none | none |
/// | [`http2_keep_alive_timeout`](Self::http2_keep_alive_timeout) | 20 s | none | 20 s |
/// | [`http2_max_concurrent_streams`](Self::http2_max_concurrent_streams) | 1,000 | 2^31 - 1 | 200 |
///
/// The header-read timeout runs whenever an HTTP/1.1 connection waits for a request's
/// headers, including between requests: a keep-alive connection with no request for that
/// long is closed (as hyper does), which is also how a slowloris peer is dropped. Until a
/// connection's first bytes say HTTP/2 (its preface), it counts as HTTP/1.1: one that
/// sends nothing is closed at the header-read timeout too. A
/// connection idle means nothing in flight: no request being served and no response body
/// being sent; one idle for [`idle_timeout`](Self::idle_timeout) is closed. When a limit is
/// reached, the connection that has been idle the longest (of the same peer address, for
/// the per-peer limit) is closed to make room; if none is idle, a connection over the
/// per-peer limit is refused, and one over the total limit waits in the accept queue until
/// a connection closes.
///
/// HTTP/2 keepalive pings are off by default, as in Envoy and hyper: with them on, hyper
/// notes the time of every frame a connection receives and re-arms the ping timer, which
/// cost an HTTP/2 request about 1,000 instructions per side in the `e2e` benchmark. An
/// idle connection is still closed at [`idle_timeout`](Self::idle_timeout); turn the
/// pings on ([`with_http2_keep_alive`](Self::with_http2_keep_alive)) to find a peer that
/// vanished while its streams stay open (long gRPC streams).
///
/// A zero timeout is no timeout, as in Envoy (`idle_timeout`, `request_headers_timeout`
/// and `listener_filters_timeout` set to 0 disable them): a connection then waits as long
/// as its peer does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundConfig {
    /// Time a client has to finish its TLS handshake (zero: no limit).
    pub handshake_timeout: Duration,
    /// On a PERMISSIVE port, time a client has to send its first byte (which says TLS or
    /// plaintext; zero: no limit).
    pub first_byte_timeout: Duration,
    /// Time an HTTP/1.1 client has to send a request's headers, from when the connection
    /// starts waiting for them (zero: no limit; the idle timeout still applies).
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// Connections open at once, in all (at least 1).
    pub max_connections: usize,
    /// Connections open at once from one peer IP address (at least 1).
    pub max_connections_per_peer: usize,
    /// HTTP/2 keepalive ping interval (`None`: no pings).
    pub http2_keep_alive_interval: Option<Duration>,
    /// Time to wait for a keepalive ping's answer before closing the connection.
    pub http2_keep_alive_timeout: Duration,
    /// HTTP/2 streams a client may have open on one connection.
    pub http2_max_concurrent_streams: u32,
}

/// Handshake timeout when none is set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection limit when none is set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default per-peer connection limit: four times the outbound client's default
/// `max_connections` (1,024, Envoy's), so that the HTTP/1.1 pools of mesh clients sharing
/// one address (the processes of one pod) never reach it. Below that, this server would
/// close a client's idle pooled connections to make room while the client reuses them, and
/// the failed requests could get the only endpoint of the client's cluster ejected.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 4_096;

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            http2_keep_alive_interval: None,
            http2_keep_alive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 1_000,
        }
    }
}

impl InboundConfig {
    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`first_byte_timeout`](Self::first_byte_timeout).
    pub fn with_first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// Sets [`header_read_timeout`](Self::header_read_timeout).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`max_connections`](Self::max_connections) (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`max_connections_per_peer`](Self::max_connections_per_peer) (at least 1).
    pub fn with_max_connections_per_peer(mut self, max: usize) -> Self {
        self.max_connections_per_peer = max.max(1);
        self
    }

    /// Sets the HTTP/2 keepalive ping interval (`None`: no pings) and answer timeout.
    pub fn with_http2_keep_alive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.http2_keep_alive_interval = interval;
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// Sets [`http2_max_concurrent_streams`](Self::http2_max_concurrent_streams).
    pub fn with_http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = max;
        self
    }
}
