//! Metrics with Istio's names and labels, so Istio's Grafana dashboards and Kiali read
//! them unchanged, plus the mesh's own (breaker rejections, retries, retry-budget
//! exhaustion, outlier ejections, xDS updates and NACKs), in the Prometheus text format.
//!
//! | metric | type |
//! |---|---|
//! | `istio_requests_total` | counter |
//! | `istio_request_duration_milliseconds` | histogram (Istio's buckets, 0.5 ms .. 1 h) |
//! | `istio_request_bytes`, `istio_response_bytes` | histogram (1 .. 10^9) |
//! | `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total` | counter |
//! | `mesh_circuit_breaker_rejections_total{cluster,limit}` | counter |
//! | `mesh_retries_total{cluster}`, `mesh_retry_budget_exhausted_total{cluster}` | counter |
//! | `mesh_outlier_ejections_total{cluster}` | counter |
//! | `mesh_xds_updates_total{type_url,result}` (`result` = `ack` / `nack`) | counter |
//!
//! Requests carry Istio's standard label set (`reporter`, `source_*`, `destination_*`,
//! `request_protocol`, `response_code`, `grpc_response_status`, `response_flags`,
//! `connection_security_policy`). The outbound client records with `reporter="source"`;
//! [`MetricsLayer`] records inbound requests with `reporter="destination"`.
//!
//! Recording allocates nothing and formats nothing: label strings are built once per
//! distinct label set and found again through small integer keys in lock-free maps.
//!
//! # The application's own metrics
//!
//! The application registers its metrics (of the [`prometheus_client`] crate, re-exported
//! here so the versions match) into the mesh's registry; the admin server's `/metrics`
//! renders them after the mesh's, in the same Prometheus text format:
//!
//! ```
//! use mesh_tower::metrics::prometheus_client::metrics::counter::Counter;
//! use mesh_tower::metrics::Metrics;
//!
//! let metrics = Metrics::default(); // in a service: `mesh.metrics()`
//! let orders: Counter = Counter::default();
//! metrics.register_app_metrics(|registry| {
//!     registry.register("orders_placed", "Orders placed", orders.clone());
//! });
//! orders.inc();
//! assert!(metrics.render().contains("\norders_placed_total 1\n"));
//! ```
//!
//! Names beginning with `istio_` or `mesh_` are the mesh's: an application metric must not
//! take one (a family rendered twice makes the whole scrape fail).

mod labels;
mod layer;
mod peer;
mod registry;
mod render;

use std::sync::Arc;
use std::time::Duration;

use crate::exchange::PeerIdentity;
use crate::observe::present;

use mesh_core::breaker::BreakerLimit;

pub use labels::WorkloadLabels;
pub use layer::{InboundSample, Metered, MetricsLayer, ResponseFuture};
pub(crate) use peer::{Answer, ClientEnd, Said};
pub use peer::{PEER_DIRECT, PEER_METADATA, PEER_METADATA_ID};
/// The metrics library the application's metrics are made with
/// ([`Metrics::register_app_metrics`]).
pub use prometheus_client;

use registry::{Counter, Histogram, Interner, SeriesMap};

pub(crate) use labels::host_of;
pub(crate) use registry::UNKNOWN;

/// Appends `name="value"` to a label list, escaped for the text format.
#[cfg(feature = "admin")]
pub(crate) fn push_label_pub(out: &mut String, name: &str, value: &str) {
    registry::push_label(out, name, value);
}

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for the request and response size histograms.
pub const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Which side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reporter {
    /// The caller (outbound).
    Source,
    /// The callee (inbound).
    Destination,
}

/// `connection_security_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityPolicy {
    /// mTLS with a verified peer.
    MutualTls,
    /// Plaintext (or TLS without a client certificate).
    None,
    /// Not known (always so for `reporter="source"`, as in Istio).
    Unknown,
}

impl SecurityPolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::MutualTls => "mutual_tls",
            Self::None => "none",
            Self::Unknown => "unknown",
        }
    }
}

/// Envoy's response flags the mesh can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseFlags {
    /// None: `-`.
    None,
    /// `UO`: upstream overflow (circuit breaker).
    UpstreamOverflow,
    /// `NR`: no route.
    NoRoute,
    /// `UH`: no healthy upstream.
    NoHealthyUpstream,
    /// `UT`: upstream request timeout.
    UpstreamTimeout,
    /// `UF`: upstream connection failure.
    UpstreamConnectionFailure,
    /// `UC`: upstream connection termination.
    UpstreamTermination,
    /// `FI`: fault injected abort.
    FaultInjected,
    /// `URX`: retry budget or retry limit exhausted.
    RetryLimitExceeded,
    /// `DC`: the downstream went away before the response was complete.
    DownstreamTermination,
}

impl ResponseFlags {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::UpstreamOverflow => "UO",
            Self::NoRoute => "NR",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamTimeout => "UT",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamTermination => "UC",
            Self::FaultInjected => "FI",
            Self::RetryLimitExceeded => "URX",
            Self::DownstreamTermination => "DC",
        }
    }

    /// The flag for a mesh failure.
    pub fn for_error(err: &crate::MeshError) -> Self {
        use crate::MeshError as E;
        match err {
            E::NoRoute { .. } | E::NonForwardingAction => Self::NoRoute,
            E::ClusterNotFound(_) | E::NoHealthyEndpoint(_) => Self::NoHealthyUpstream,
            E::CircuitOpen { .. } => Self::UpstreamOverflow,
            E::RetryBudgetExhausted(_) => Self::RetryLimitExceeded,
            E::Timeout(_) => Self::UpstreamTimeout,
            E::Connect { .. } => Self::UpstreamConnectionFailure,
            E::FaultAbort => Self::FaultInjected,
            _ => Self::UpstreamTermination,
        }
    }
}

/// A finished request, as the recorder sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestSample<'a> {
    /// Who reports.
    pub reporter: Reporter,
    /// The other side's SPIFFE ID, if known.
    pub peer_principal: Option<&'a str>,
    /// The destination service host (no port).
    pub service: &'a str,
    /// gRPC (else HTTP).
    pub grpc: bool,
    /// HTTP status.
    pub code: u16,
    /// gRPC status, if any.
    pub grpc_status: Option<i32>,
    /// Response flags.
    pub flags: ResponseFlags,
    /// Connection security.
    pub security: SecurityPolicy,
    /// Time from request to the end of the response.
    pub duration: Duration,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HttpKey {
    pub(crate) reporter: Reporter,
    pub(crate) peer: u32,
    pub(crate) service: u32,
    pub(crate) grpc: bool,
    pub(crate) code: u16,
    pub(crate) grpc_status: Option<i32>,
    pub(crate) flags: ResponseFlags,
    pub(crate) security: SecurityPolicy,
    /// The peer's metadata-exchange header, interned in `Registry::peers`.
    pub(crate) peer_meta: Option<u32>,
}

/// The HTTP series this thread recorded into last: a connection's requests land in the
/// same few series, and a hit here compares the key instead of hashing it and probing the
/// shared map (and takes no reference count). The slots are reused in turn; a series
/// never changes its key, so a remembered one stays right.
mod recent_http {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::{HttpKey, HttpSeries};
    use crate::ring::{self, Ring};

    const SLOTS: usize = 4;

    type Slot = Option<(u64, HttpKey, Arc<HttpSeries>)>;

    thread_local! {
        static RECENT: RefCell<Ring<Slot, SLOTS>> = const {
            RefCell::new(Ring::new([const { None }; SLOTS]))
        };
    }

    /// Runs `record` on the series of `key` in the series map numbered `map`: the one this
    /// thread remembers, else the one `find` gives (then remembered).
    pub(super) fn with(
        map: u64,
        key: HttpKey,
        find: impl FnOnce() -> Arc<HttpSeries>,
        record: impl FnOnce(&HttpSeries),
    ) {
        let mut record = Some(record);
        let hit = ring::find(&RECENT, |slot| match slot {
            Some((m, k, series)) if *m == map && *k == key => {
                (record.take()?)(series);
                Some(())
            }
            _ => None,
        });
        if hit.is_some() {
            return;
        }
        let series = find();
        if let Some(record) = record.take() {
            record(&series);
        }
        ring::fill(&RECENT, |slot| *slot = Some((map, key, series)));
    }
}

#[derive(Debug)]
struct HttpSeries {
    labels: Box<str>,
    requests: std::sync::atomic::AtomicU64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TcpKey {
    reporter: Reporter,
    peer: u32,
    security: SecurityPolicy,
}

#[derive(Debug)]
struct TcpSeries {
    labels: Box<str>,
    opened: std::sync::atomic::AtomicU64,
    closed: std::sync::atomic::AtomicU64,
}

/// The mesh's own counter families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum MeshFamily {
    BreakerRejections,
    Retries,
    RetryBudgetExhausted,
    OutlierEjections,
    XdsUpdates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MeshKey {
    family: MeshFamily,
    a: u32,
    b: u32,
}

#[derive(Debug)]
struct Registry {
    local: WorkloadLabels,
    /// This workload's metadata-exchange headers.
    local_md: Option<peer::LocalMetadata>,
    /// `local.service` interned, when it is known: every inbound request's
    /// `destination_service`, looked up once.
    local_service: Option<u32>,
    strings: Interner,
    /// Peers' metadata-exchange headers as received (bounded like every interner), as
    /// bytes: a value seen before is not checked again.
    peers: Interner<[u8]>,
    http: SeriesMap<HttpKey, HttpSeries>,
    tcp: SeriesMap<TcpKey, TcpSeries>,
    mesh: SeriesMap<MeshKey, (MeshFamily, Counter)>,
    /// The application's metrics, rendered after the mesh's.
    app: std::sync::Mutex<prometheus_client::registry::Registry>,
}

/// The metrics of one mesh: cheap to clone, shared by the outbound client, the inbound
/// layers and the admin server.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(WorkloadLabels::unknown())
    }
}

impl Metrics {
    /// Metrics for the workload `local`.
    pub fn new(local: WorkloadLabels) -> Self {
        let strings = Interner::default();
        let local_service =
            (local.service != "unknown").then(|| strings.intern(local.service.as_str()));
        Self {
            inner: Arc::new(Registry {
                local_md: peer::LocalMetadata::new(&local),
                local,
                local_service,
                strings,
                peers: Interner::default(),
                http: SeriesMap::default(),
                tcp: SeriesMap::default(),
                mesh: SeriesMap::default(),
                app: Default::default(),
            }),
        }
    }

    /// Who this workload is.
    pub fn local(&self) -> &WorkloadLabels {
        &self.inner.local
    }

    /// Records a finished request.
    pub fn record_request(&self, s: &RequestSample<'_>) {
        let r = &self.inner;
        let key = HttpKey {
            reporter: s.reporter,
            peer: r.strings.intern(s.peer_principal.unwrap_or("unknown")),
            service: r.strings.intern(s.service),
            grpc: s.grpc,
            code: s.code,
            grpc_status: s.grpc_status,
            flags: s.flags,
            security: s.security,
            peer_meta: None,
        };
        self.record_key(key, s.duration, s.request_bytes, s.response_bytes);
    }

    /// Takes a peer's metadata-exchange headers off `headers`: whether it sent either, and
    /// the id of what it said when that is usable.
    pub(crate) fn take_peer(&self, headers: &mut http::HeaderMap) -> (bool, Option<u32>) {
        let taken = peer::take(headers);
        (taken.sent, taken.value.and_then(|v| self.peer_id(&v)))
    }

    /// The interned id of a peer's metadata text.
    fn peer_id(&self, value: &http::HeaderValue) -> Option<u32> {
        // A few hundred bytes of base64 on every request and response, the same text from
        // the same peer: one lookup. A new value is checked to be ASCII (as `to_str`
        // requires; a header value holds no control characters) before it is kept, so what
        // is kept reads as text.
        let value = value.as_bytes();
        let peers = &self.inner.peers;
        let id = match peers.get(value) {
            Some(id) => id,
            None if value.is_ascii() => peers.intern(value),
            None => return None,
        };
        // `unknown`: the interner is full (or the peer said nothing usable).
        (id != registry::UNKNOWN).then_some(id)
    }

    /// Server end of the exchange: a caller's headers taken off a request that came on
    /// `peer`'s connection. What to say back, and the id of the caller's metadata (what the
    /// connection remembers, when the caller says it remembers ours).
    pub(crate) fn take_caller(
        &self,
        headers: &mut http::HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> (peer::Answer, Option<u32>) {
        let taken = peer::take(headers);
        let registry = self.inner.peers.serial();
        let end = peer.and_then(|p| p.remembered.get());
        let named = |end: &crate::exchange::ConnectionEnd| {
            taken.direct.as_ref().is_some_and(|d| end.is_named(d))
        };
        if !taken.sent {
            let remembered = match (end, &taken.direct) {
                // `x-mesh-peer-direct` alone: a caller that remembers ours, on a connection
                // that remembers it. Only a caller that found its own address in our
                // answer sends it, so nothing stands between us: the connection's later
                // requests are all its own, and come with no exchange header at all.
                (Some(end), Some(_)) if named(end) => {
                    let remembered = end.remembered.get(registry);
                    if remembered.is_some() {
                        end.quieten();
                    }
                    remembered
                }
                // Nothing at all, on a connection whose caller said so before: its own.
                (Some(end), None) if end.is_quiet() => end.remembered.get(registry),
                // Nothing, elsewhere: a caller outside the exchange (a proxy that dialed
                // this address may carry other callers' requests), whatever the
                // connection remembers.
                _ => None,
            };
            return (peer::Answer::Nothing, remembered);
        }
        let id = taken.value.as_ref().and_then(|v| self.peer_id(v));
        let answer = match (peer, end, id) {
            // Remembered only with something of ours to give back: the caller stops
            // sending once it has it.
            (Some(p), Some(end), Some(id)) if self.inner.local_md.is_some() && named(end) => {
                end.remembered.set(registry, id);
                peer::Answer::Remembered(p.remote_addr)
            }
            _ => peer::Answer::Metadata,
        };
        (answer, id)
    }

    /// Server end: what `answer` says, onto a response.
    pub(crate) fn answer(&self, answer: peer::Answer, headers: &mut http::HeaderMap) {
        let Some(md) = &self.inner.local_md else {
            return;
        };
        match answer {
            peer::Answer::Nothing => {}
            peer::Answer::Metadata => md.insert_into(headers),
            peer::Answer::Remembered(caller) => {
                md.insert_into(headers);
                if let Ok(v) = http::HeaderValue::from_str(&crate::exchange::addr_text(caller)) {
                    headers.insert(peer::PEER_DIRECT, v);
                }
            }
        }
    }

    /// Client end: this workload's metadata onto a request (when it has a name) on a
    /// connection with `end` (`None`: its addresses are unknown); only that it remembers
    /// the server's when the server remembers ours; nothing once the server has seen that.
    pub(crate) fn announce(
        &self,
        end: Option<&peer::ClientEnd>,
        headers: &mut http::HeaderMap,
    ) -> peer::Said {
        let Some(md) = &self.inner.local_md else {
            return peer::Said::Nothing;
        };
        match end {
            Some(end) if end.end.is_quiet() => peer::Said::Nothing,
            Some(end) if end.remembered().is_some() => {
                headers.insert(peer::PEER_DIRECT, end.dialed.clone());
                peer::Said::Remembers
            }
            Some(end) => {
                md.insert_into(headers);
                headers.insert(peer::PEER_DIRECT, end.dialed.clone());
                peer::Said::Metadata
            }
            None => {
                md.insert_into(headers);
                peer::Said::Metadata
            }
        }
    }

    /// Client end: the server's headers taken off a response on a connection with `end`,
    /// to a request that `said` what [`announce`](Self::announce) put on it. The id of the
    /// server's metadata (what the connection remembers, when the server sent none).
    pub(crate) fn take_server(
        &self,
        end: Option<&peer::ClientEnd>,
        headers: &mut http::HeaderMap,
        said: peer::Said,
    ) -> Option<u32> {
        let remembered = end.and_then(peer::ClientEnd::remembered);
        // A server that remembers sends nothing, except on responses to requests sent
        // before this end knew (HTTP/2), and those have both headers.
        if let (Some(end), Some(_)) = (end, remembered) {
            if present(headers, [&PEER_METADATA_ID]) == [false] {
                // The server took in that this end remembers before it answered: later
                // requests need say nothing.
                if said == peer::Said::Remembers {
                    end.end.quieten();
                }
                return remembered;
            }
        }
        let taken = peer::take(headers);
        let id = taken.value.as_ref().and_then(|v| self.peer_id(v));
        if let (Some(end), Some(id), Some(direct)) = (end, id, taken.direct) {
            if end.end.is_named(&direct) {
                end.end.remembered.set(end.registry, id);
            }
        }
        id.or(remembered)
    }

    /// The id of a label value (peer principal or service), looked up once per request.
    pub(crate) fn intern(&self, s: &str) -> u32 {
        self.inner.strings.intern(s)
    }

    /// The id of the host of a request's authority or Host (`unknown` without one); a
    /// repeated authority is found by its text, without cutting off the port again.
    pub(crate) fn intern_host(&self, authority: Option<&str>) -> u32 {
        authority.map_or(registry::UNKNOWN, |a| {
            self.inner.strings.intern_derived(a, host_of)
        })
    }

    fn record_key(
        &self,
        key: HttpKey,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let r = &self.inner;
        let find = || {
            r.http.get_or_insert(key, || HttpSeries {
                labels: render::http_labels(r, &key).into_boxed_str(),
                requests: Default::default(),
                duration: Histogram::new(&DURATION_BUCKETS_MS, 1000.0),
                request_bytes: Histogram::new(&BYTES_BUCKETS, 1.0),
                response_bytes: Histogram::new(&BYTES_BUCKETS, 1.0),
            })
        };
        recent_http::with(r.http.serial(), key, find, |series| {
            series
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            series
                .duration
                .observe(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
            series.request_bytes.observe(request_bytes);
            series.response_bytes.observe(response_bytes);
        });
    }

    fn tcp(
        &self,
        reporter: Reporter,
        peer: Option<&str>,
        security: SecurityPolicy,
    ) -> Arc<TcpSeries> {
        let r = &self.inner;
        let key = TcpKey {
            reporter,
            peer: r.strings.intern(peer.unwrap_or("unknown")),
            security,
        };
        r.tcp.get_or_insert(key, || TcpSeries {
            labels: render::tcp_labels(r, &key).into_boxed_str(),
            opened: Default::default(),
            closed: Default::default(),
        })
    }

    /// A connection was opened (accepted for `Destination`, dialed for `Source`).
    pub fn tcp_opened(&self, reporter: Reporter, peer: Option<&str>, security: SecurityPolicy) {
        self.tcp(reporter, peer, security)
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A connection was closed.
    pub fn tcp_closed(&self, reporter: Reporter, peer: Option<&str>, security: SecurityPolicy) {
        self.tcp(reporter, peer, security)
            .closed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn mesh_counter(&self, family: MeshFamily, a: &str, b: &str) {
        let r = &self.inner;
        let key = MeshKey {
            family,
            a: r.strings.intern(a),
            b: r.strings.intern(b),
        };
        r.mesh
            .get_or_insert(key, || (family, Counter::new(render::mesh_labels(r, &key))))
            .1
            .inc();
    }

    /// A call was refused by a circuit-breaker limit.
    pub fn breaker_rejection(&self, cluster: &str, limit: BreakerLimit) {
        self.mesh_counter(MeshFamily::BreakerRejections, cluster, limit.as_str());
    }

    /// A retry was sent.
    pub fn retry(&self, cluster: &str) {
        self.mesh_counter(MeshFamily::Retries, cluster, "");
    }

    /// A retry was wanted but the retry budget (or the breaker's `max_retries`) refused.
    pub fn retry_budget_exhausted(&self, cluster: &str) {
        self.mesh_counter(MeshFamily::RetryBudgetExhausted, cluster, "");
    }

    /// Outlier detection ejected an endpoint.
    pub fn outlier_ejection(&self, cluster: &str) {
        self.mesh_counter(MeshFamily::OutlierEjections, cluster, "");
    }

    /// An xDS response for `type_url` was accepted (ACK) or rejected (NACK).
    pub fn xds_update(&self, type_url: &str, accepted: bool) {
        let result = if accepted { "ack" } else { "nack" };
        self.mesh_counter(MeshFamily::XdsUpdates, type_url, result);
    }

    /// Registers the application's metrics: `register` gets the registry that `/metrics`
    /// renders after the mesh's own (see the [module docs](self)). Register at start-up;
    /// the metrics themselves are updated without going through the mesh.
    pub fn register_app_metrics<R>(
        &self,
        register: impl FnOnce(&mut prometheus_client::registry::Registry) -> R,
    ) -> R {
        let mut registry = self
            .inner
            .app
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        register(&mut registry)
    }

    /// The Prometheus text exposition of everything recorded, then the application's
    /// metrics.
    pub fn render(&self) -> String {
        render::render(&self.inner)
    }

    /// Records a finished request whose label values are interned already.
    pub(crate) fn record(&self, key: HttpKey, duration: Duration, bytes: (u64, u64)) {
        self.record_key(key, duration, bytes.0, bytes.1);
    }

    /// Total requests and error responses (5xx, or a non-OK gRPC status) by reporter and
    /// destination service, for the admin page.
    pub fn request_totals(&self) -> Vec<RequestTotals> {
        render::totals(&self.inner)
    }
}

/// Totals per (reporter, destination service).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestTotals {
    /// `source` or `destination`.
    pub reporter: &'static str,
    /// The destination service.
    pub service: String,
    /// Requests.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
}

#[cfg(test)]
mod tests;
