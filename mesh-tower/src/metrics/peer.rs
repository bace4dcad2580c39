//! Istio's HTTP metadata exchange, so that both sides of a call know who the other
//! workload is: each side sends its identity in `x-envoy-peer-metadata` (standard base64
//! of a serialized `google.protobuf.Struct`, the fields Istio's sidecars send) and a node id
//! in `x-envoy-peer-metadata-id`; the caller on the request, the server on the response.
//! The receiver labels its metrics with the peer's workload, namespace, app, version,
//! canonical service and revision, and cluster, as Istio's sidecars do — so a mesh service
//! and an Envoy sidecar label each other's traffic too.
//!
//! The headers are taken off before the application sees them. Decoding happens only when
//! a new label set is first rendered; recording interns the header's text (a lookup, no
//! allocation, after the first request of a peer).
//!
//! Between two mesh services the exchange goes once per connection. Until then the client
//! adds `x-mesh-peer-direct`, the address it dialed, to its metadata. A server that finds
//! that address is its own remembers the caller's metadata for the connection, and answers
//! with its own metadata and `x-mesh-peer-direct`, the address the caller came from. A
//! client that finds that address is its own (the connection reaches the server directly:
//! no proxy in between that could carry other callers' requests on it) remembers the
//! server's metadata for the connection and then sends `x-mesh-peer-direct` alone. The
//! server labels such a request with what the connection remembers, sends nothing back,
//! and from then on takes every request on the connection for that caller's: only a
//! caller that found its own address in the answer says it remembers. Once the client
//! has the answer to such a request (so the server has taken it in), its requests carry
//! no exchange header at all. A request with neither header on a connection whose caller
//! never said it remembers stays `unknown`, whatever the connection remembers (a proxy
//! that dialed the server's own address may carry other callers on it). Envoy's sidecars
//! never send or answer the header and exchange metadata on every request, as before; so
//! does a connection through a proxy, NAT or a Service's virtual IP (the addresses
//! differ).

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine as _;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;

use super::WorkloadLabels;
use crate::exchange::{addr_text, ConnectionEnd};
use crate::observe::present;

/// The peer's metadata: base64 of a serialized `google.protobuf.Struct`.
pub const PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
/// The peer's node id.
pub const PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// On a request with the caller's metadata: the address the caller dialed, asking the
/// server to remember the metadata for the connection; alone: that the caller remembers the
/// server's. On a response: the address the caller came from, saying the server remembers
/// it.
pub const PEER_DIRECT: HeaderName = HeaderName::from_static("x-mesh-peer-direct");

/// Header values longer than this are ignored (Istio's are a few hundred bytes).
const MAX_LEN: usize = 8 * 1024;

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// This workload's two header values, encoded once.
#[derive(Debug, Clone)]
pub(crate) struct LocalMetadata {
    pub(crate) value: HeaderValue,
    pub(crate) id: HeaderValue,
}

impl LocalMetadata {
    /// Encodes `local`; `None` when there is nothing to say (every label unknown).
    pub(crate) fn new(local: &WorkloadLabels) -> Option<Self> {
        if local.workload == "unknown" {
            return None;
        }
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        let mut labels = HashMap::new();
        labels.insert("app".to_owned(), text(&local.app));
        labels.insert("version".to_owned(), text(&local.version));
        labels.insert(CANONICAL_NAME.to_owned(), text(&local.canonical_service));
        labels.insert(
            CANONICAL_REVISION.to_owned(),
            text(&local.canonical_revision),
        );
        let mut fields = HashMap::new();
        fields.insert("NAME".to_owned(), text(&local.workload));
        fields.insert("WORKLOAD_NAME".to_owned(), text(&local.workload));
        fields.insert("NAMESPACE".to_owned(), text(&local.namespace));
        fields.insert("CLUSTER_ID".to_owned(), text(&local.cluster));
        fields.insert(
            "LABELS".to_owned(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec());
        let id = format!(
            "proxyless~0.0.0.0~{}.{}~{}.svc.cluster.local",
            local.workload, local.namespace, local.namespace
        );
        Some(Self {
            value: HeaderValue::from_str(&encoded).ok()?,
            id: HeaderValue::from_str(&id).ok()?,
        })
    }

    /// Adds both headers to `headers`.
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(PEER_METADATA, self.value.clone());
        headers.insert(PEER_METADATA_ID, self.id.clone());
    }
}

/// What a peer sent of the exchange.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// It sent either header (and so gets ours back).
    pub(crate) sent: bool,
    /// The metadata's text, when it is usable.
    pub(crate) value: Option<HeaderValue>,
    /// `x-mesh-peer-direct`.
    pub(crate) direct: Option<HeaderValue>,
}

/// Takes the exchange's headers off `headers`: the metadata's two and
/// `x-mesh-peer-direct`.
pub(crate) fn take(headers: &mut HeaderMap) -> Taken {
    let [id, value, direct] = present(headers, [&PEER_METADATA_ID, &PEER_METADATA, &PEER_DIRECT]);
    let id = id && headers.remove(PEER_METADATA_ID).is_some();
    let value = if value {
        headers.remove(PEER_METADATA)
    } else {
        None
    };
    Taken {
        sent: id || value.is_some(),
        value: value.filter(|v| !v.is_empty() && v.len() <= MAX_LEN),
        direct: if direct {
            headers.remove(PEER_DIRECT)
        } else {
            None
        },
    }
}

/// What a server says back to a caller of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing: the caller sent nothing, or remembers ours.
    Nothing,
    /// Our metadata.
    Metadata,
    /// Our metadata, and that the connection remembers the caller's: the caller's address
    /// as this end sees it.
    Remembered(SocketAddr),
}

/// What a client's request said of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// Nothing: this workload has no metadata, or the exchange on the connection is quiet.
    Nothing,
    /// Its metadata.
    Metadata,
    /// That it remembers the server's (`x-mesh-peer-direct` alone).
    Remembers,
}

/// A client connection's end of the exchange.
#[derive(Debug)]
pub(crate) struct ClientEnd {
    /// The server's address as dialed: `x-mesh-peer-direct` on its requests.
    pub(super) dialed: HeaderValue,
    /// This end: the server's metadata once the server remembers ours (interned by the
    /// registry `registry`).
    pub(super) end: ConnectionEnd,
    pub(super) registry: u64,
}

impl ClientEnd {
    /// The end of a connection from `local` to `peer`, whose pool exchanges metadata with
    /// `metrics`.
    pub(crate) fn new(
        local: SocketAddr,
        peer: SocketAddr,
        metrics: &super::Metrics,
    ) -> Option<Self> {
        Some(Self {
            dialed: HeaderValue::from_str(&addr_text(peer)).ok()?,
            end: ConnectionEnd::new(local),
            registry: metrics.inner.peers.serial(),
        })
    }

    /// The server's metadata id, once it remembers ours.
    pub(crate) fn remembered(&self) -> Option<u32> {
        self.end.remembered.get(self.registry)
    }
}

/// The peer workload a metadata header describes; `None` when it does not decode. Fields
/// it lacks stay `unknown`.
pub(crate) fn decode(value: &str) -> Option<WorkloadLabels> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value.trim()))
        .ok()?;
    let md = Struct::decode(bytes.as_slice()).ok()?;
    let text = |s: &Struct, k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) if !v.is_empty() => Some(v.clone()),
        _ => None,
    };
    let labels = match md.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(s)) => s.clone(),
        _ => Struct::default(),
    };
    let mut l = WorkloadLabels::unknown();
    if let Some(w) = text(&md, "WORKLOAD_NAME").or_else(|| text(&md, "NAME")) {
        l.workload = w;
    }
    if let Some(ns) = text(&md, "NAMESPACE") {
        l.namespace = ns;
    }
    if let Some(c) = text(&md, "CLUSTER_ID") {
        l.cluster = c;
    }
    let canonical = text(&labels, CANONICAL_NAME);
    if let Some(app) = text(&labels, "app").or_else(|| canonical.clone()) {
        l.app = app;
    }
    if let Some(v) = text(&labels, "version") {
        l.version = v;
    }
    if let Some(c) = canonical.or_else(|| Some(l.workload.clone()).filter(|w| w != "unknown")) {
        l.canonical_service = c;
    }
    if let Some(r) = text(&labels, CANONICAL_REVISION) {
        l.canonical_revision = r;
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let local = WorkloadLabels::named("payment")
            .with_namespace("shop")
            .with_version("v2");
        let md = LocalMetadata::new(&local).expect("encodes");
        let back = decode(md.value.to_str().expect("ascii")).expect("decodes");
        assert_eq!(back.workload, "payment");
        assert_eq!(back.namespace, "shop");
        assert_eq!(back.app, "payment");
        assert_eq!(back.version, "v2");
        assert_eq!(back.canonical_service, "payment");
        assert_eq!(
            md.id.to_str().ok(),
            Some("proxyless~0.0.0.0~payment.shop~shop.svc.cluster.local")
        );
    }

    #[test]
    fn an_unknown_workload_sends_nothing() {
        assert!(LocalMetadata::new(&WorkloadLabels::unknown()).is_none());
    }

    #[test]
    fn junk_does_not_decode() {
        for junk in ["", "!!!", "aGVsbG8=", "////"] {
            if let Some(l) = decode(junk) {
                // Bytes that happen to parse as an empty Struct say nothing.
                assert_eq!(l, WorkloadLabels::unknown(), "{junk}");
            }
        }
    }

    #[test]
    fn headers_are_taken_off() {
        let md = LocalMetadata::new(&WorkloadLabels::named("order")).expect("encodes");
        let mut h = HeaderMap::new();
        md.insert_into(&mut h);
        let taken = take(&mut h);
        assert!(taken.sent);
        assert_eq!(taken.value, Some(md.value.clone()));
        assert!(h.is_empty());
        // The id alone still asks for ours back; nothing to label with.
        h.insert(PEER_METADATA_ID, md.id.clone());
        let taken = take(&mut h);
        assert!(taken.sent && taken.value.is_none());
        assert!(!take(&mut h).sent);
        // Among other headers (a look-alike name of the same length included), only the
        // two go, every value of them.
        h.insert(http::header::HOST, HeaderValue::from_static("payment"));
        h.insert("x-envoy-peer-metadatz", HeaderValue::from_static("kept"));
        md.insert_into(&mut h);
        h.append(PEER_METADATA, md.value.clone());
        h.insert("traceparent", HeaderValue::from_static("kept too"));
        let taken = take(&mut h);
        assert!(taken.sent);
        assert_eq!(taken.value, Some(md.value.clone()));
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!h.contains_key(PEER_METADATA) && !h.contains_key(PEER_METADATA_ID));
        assert!(!take(&mut h).sent);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_safe(s in ".{0,200}") {
            let _ = decode(&s);
        }
    }
}
