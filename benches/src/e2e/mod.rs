//! The end-to-end load benchmark: a client calls service A, which calls service B, on
//! 127.0.0.1, with and without the mesh and with the proxies a sidecar mesh would add.
//!
//! - [`serve`]: services A and B as separate processes (plain hyper/tonic, or the mesh);
//! - [`proxies`]: the Envoy sidecar pair and the single haproxy hop;
//! - [`load`]: the open-loop generator (latency timed from each request's scheduled send
//!   time, so a stall is not hidden: no coordinated omission) and the closed loop;
//! - [`procs`]: child processes pinned to a core, their CPU time and peak RSS;
//! - [`run`]: one scenario after another; [`report`]: the Markdown table and the JSON;
//! - [`scale`]: the mesh's memory and update time with many endpoints;
//! - [`instructions`]: A's and B's instructions per request, counted by callgrind.

pub mod instructions;
pub mod load;
pub mod procs;
pub mod proxies;
pub mod report;
pub mod run;
pub mod scale;
pub mod serve;

use std::fmt;

/// Errors of the benchmark's plumbing, boxed: they end the scenario with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request and response body: 1 KiB.
pub const BODY: [u8; 1024] = [b'x'; 1024];

/// The SPIFFE ID service A presents.
pub const SPIFFE_A: &str = "spiffe://cluster.local/ns/default/sa/service-a";
/// The SPIFFE ID service B presents.
pub const SPIFFE_B: &str = "spiffe://cluster.local/ns/default/sa/service-b";

/// The protocol spoken on every hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, a pool of keep-alive connections.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), one multiplexed connection.
    Http2,
    /// gRPC unary calls (tonic), over HTTP/2.
    Grpc,
}

impl Protocol {
    /// Every protocol, in report order.
    pub const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::Http2, Protocol::Grpc];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether the hop speaks HTTP/2.
    pub fn is_h2(self) -> bool {
        !matches!(self, Protocol::Http1)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What sits between the client and service B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Plain hyper/tonic services, no mesh.
    Bare,
    /// Both services on the mesh: routing, LB, breaker, retries, outlier detection, tracing,
    /// metrics, authorization, STRICT mTLS between A and B.
    Mesh,
    /// The same mesh without mTLS (plaintext between A and B, no principal-based
    /// authorization): what the mesh's layers cost apart from the encryption.
    #[serde(rename = "mesh-plain")]
    MeshPlain,
    /// Plain services with an Envoy sidecar pair doing the mTLS between A and B (Istio's shape).
    Sidecar,
    /// Plain services with one plaintext haproxy hop between A and B.
    Haproxy,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Bare,
        Scenario::Mesh,
        Scenario::MeshPlain,
        Scenario::Sidecar,
        Scenario::Haproxy,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bare => "bare",
            Scenario::Mesh => "mesh",
            Scenario::MeshPlain => "mesh-plain",
            Scenario::Sidecar => "sidecar",
            Scenario::Haproxy => "haproxy",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
