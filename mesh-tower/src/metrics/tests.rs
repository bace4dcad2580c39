use std::time::Duration;

use super::*;

fn sample<'a>(reporter: Reporter, code: u16) -> RequestSample<'a> {
    RequestSample {
        reporter,
        peer_principal: Some("spiffe://cluster.local/ns/shop/sa/order"),
        service: "payment.shop.svc.cluster.local",
        grpc: true,
        code,
        grpc_status: Some(0),
        flags: ResponseFlags::None,
        security: SecurityPolicy::MutualTls,
        duration: Duration::from_micros(1500),
        request_bytes: 20,
        response_bytes: 2000,
    }
}

#[test]
fn records_and_renders_istio_metrics() {
    let m = Metrics::new(WorkloadLabels::named("payment").with_namespace("shop"));
    m.record_request(&sample(Reporter::Destination, 200));
    m.record_request(&sample(Reporter::Destination, 200));
    m.record_request(&sample(Reporter::Source, 503));
    m.breaker_rejection(
        "outbound|8080||payment",
        mesh_core::breaker::BreakerLimit::MaxRequests,
    );
    m.xds_update("type.googleapis.com/envoy.config.cluster.v3.Cluster", false);
    let text = m.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
        .unwrap_or_default();
    for label in [
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/order\"",
        "source_workload_namespace=\"shop\"",
        "destination_workload=\"payment\"",
        "destination_service=\"payment.shop.svc.cluster.local\"",
        "destination_service_name=\"payment\"",
        "destination_service_namespace=\"shop\"",
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"0\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }
    assert!(line.ends_with(" 2"), "{line}");
    assert!(text.contains("istio_request_duration_milliseconds_bucket{reporter=\"destination\""));
    assert!(
        text.contains(",le=\"5\"} 2"),
        "1.5 ms falls in the 5 ms bucket"
    );
    assert!(text.contains("mesh_circuit_breaker_rejections_total{cluster=\"outbound|8080||payment\",limit=\"max_requests\"} 1"));
    assert!(text.contains("result=\"nack\"} 1"));
    let totals = m.request_totals();
    assert_eq!(totals.len(), 2);
    assert!(totals
        .iter()
        .any(|t| t.reporter == "source" && t.errors == 1));
}

/// The inbound layer's labels when the workload does not know its service (taken from the
/// request's Host, port dropped) and when it does (its own, whatever the Host says); a
/// plaintext peer is `unknown`.
#[tokio::test]
async fn inbound_destination_service_from_the_host_or_the_workload() {
    use tower::{Layer, ServiceExt};

    async fn ok<B>(
        _req: http::Request<B>,
    ) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
        Ok(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"ok"),
        )))
    }

    async fn run(metrics: &Metrics) -> String {
        let svc = layer::MetricsLayer::new(metrics.clone()).layer(tower::service_fn(ok));
        let peer = crate::exchange::PeerIdentity::plaintext(
            ([10, 0, 0, 1], 40_000).into(),
            ([10, 0, 0, 2], 8080).into(),
        );
        let mut req = http::Request::get("/pay")
            .header("host", "payment.shop.svc.cluster.local:8080")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        req.extensions_mut().insert(peer);
        let resp = svc.oneshot(req).await.expect("response");
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        let text = metrics.render();
        text.lines()
            .find(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
            .unwrap_or_default()
            .to_owned()
    }

    let from_host = run(&Metrics::default()).await;
    for label in [
        "destination_service=\"payment.shop.svc.cluster.local\"",
        "source_principal=\"unknown\"",
    ] {
        assert!(from_host.contains(label), "{label} in {from_host}");
    }
    let own = run(&Metrics::new(
        WorkloadLabels::named("payment").with_service("payments.shop.svc.cluster.local"),
    ))
    .await;
    assert!(
        own.contains("destination_service=\"payments.shop.svc.cluster.local\""),
        "{own}"
    );
}

#[test]
fn a_peer_header_is_taken_and_interned_once_and_non_ascii_is_not_kept() {
    let order = Metrics::new(WorkloadLabels::named("order").with_namespace("shop"));
    let mut announced = http::HeaderMap::new();
    order.announce(None, &mut announced);
    let value = announced
        .get(PEER_METADATA)
        .cloned()
        .expect("order announces");

    let payment = Metrics::new(WorkloadLabels::named("payment"));
    let mut headers = announced.clone();
    let (sent, first) = payment.take_peer(&mut headers);
    assert!(sent);
    let first = first.expect("an ASCII value is kept");
    assert!(
        headers.is_empty(),
        "both headers are taken off: {headers:?}"
    );
    // The same text again: the same id.
    let mut again = announced.clone();
    assert_eq!(payment.take_peer(&mut again), (true, Some(first)));
    // What was kept reads back as the peer's labels.
    let kept = payment.inner.peers.name(first);
    let labels = std::str::from_utf8(&kept)
        .ok()
        .and_then(peer::decode)
        .expect("decodes");
    assert_eq!(labels.workload, "order");
    assert_eq!(labels.namespace, "shop");

    // A value with a byte above ASCII (allowed in a header value as obs-text) is taken off
    // but not kept.
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0xff);
    let mut odd = http::HeaderMap::new();
    odd.insert(
        PEER_METADATA,
        http::HeaderValue::from_bytes(&bytes).expect("obs-text is a valid value"),
    );
    assert_eq!(payment.take_peer(&mut odd), (true, None));
    assert!(odd.is_empty());
    assert_eq!(payment.inner.peers.get(&bytes), None);
}

/// The client's end of the once-per-connection exchange: it stops sending its metadata only
/// after a response that carries the server's metadata and names this end's own address
/// (a transparent proxy in between would be named instead); until then, and on a
/// connection whose addresses are unknown, every request carries it. Then it says it
/// remembers, until a response to a request that said so; then nothing.
#[test]
fn a_client_connection_remembers_the_server_only_when_it_names_this_end() {
    let order = Metrics::new(WorkloadLabels::named("order"));
    let payment = Metrics::new(WorkloadLabels::named("payment"));
    let local: std::net::SocketAddr = "[::ffff:10.0.0.1]:40000".parse().expect("an address");
    let server: std::net::SocketAddr = "10.0.0.2:8080".parse().expect("an address");
    let end = ClientEnd::new(local, server, &order).expect("addresses write as a header");
    let mut request = http::HeaderMap::new();
    assert_eq!(order.announce(Some(&end), &mut request), Said::Metadata);
    assert_eq!(
        request.get(PEER_DIRECT).and_then(|v| v.to_str().ok()),
        Some("10.0.0.2:8080")
    );
    assert!(request.contains_key(PEER_METADATA) && request.contains_key(PEER_METADATA_ID));

    // The server's answer, naming `caller` as the address it saw.
    let answer = |caller: &str| {
        let mut h = http::HeaderMap::new();
        payment.announce(None, &mut h);
        h.insert(
            PEER_DIRECT,
            http::HeaderValue::from_str(caller).expect("a value"),
        );
        h
    };
    // Istio's sidecar answers with its metadata and never with `x-mesh-peer-direct`: the
    // answer labels, and nothing is remembered.
    let mut sidecar = http::HeaderMap::new();
    payment.announce(None, &mut sidecar);
    assert!(order
        .take_server(Some(&end), &mut sidecar, Said::Metadata)
        .is_some());
    assert_eq!(end.remembered(), None);
    let mut other = answer("10.0.0.9:40000");
    let id = order.take_server(Some(&end), &mut other, Said::Metadata);
    assert!(id.is_some() && other.is_empty(), "{other:?}");
    assert_eq!(end.remembered(), None);
    let mut again = http::HeaderMap::new();
    assert_eq!(order.announce(Some(&end), &mut again), Said::Metadata);
    assert!(again.contains_key(PEER_METADATA));

    // Its own address (written as IPv4, as the server sees a mapped one).
    let mut own = answer("10.0.0.1:40000");
    assert_eq!(order.take_server(Some(&end), &mut own, Said::Metadata), id);
    assert_eq!(end.remembered(), id);
    // Then only that it remembers the server's.
    let remembers = || {
        let mut after = http::HeaderMap::new();
        assert_eq!(order.announce(Some(&end), &mut after), Said::Remembers);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(
            after.get(PEER_DIRECT).and_then(|v| v.to_str().ok()),
            Some("10.0.0.2:8080")
        );
    };
    remembers();
    // A response without metadata is the remembered server's. One to a request sent with
    // metadata (a server's answer that lacks it, say a hand-made one) says nothing of
    // whether the server took in that this end remembers.
    assert_eq!(
        order.take_server(Some(&end), &mut http::HeaderMap::new(), Said::Metadata),
        id
    );
    remembers();
    // One to a request that said so: the server has it; from then on nothing is said.
    assert_eq!(
        order.take_server(Some(&end), &mut http::HeaderMap::new(), Said::Remembers),
        id
    );
    let mut quiet = http::HeaderMap::new();
    assert_eq!(order.announce(Some(&end), &mut quiet), Said::Nothing);
    assert!(quiet.is_empty(), "{quiet:?}");
    assert_eq!(
        order.take_server(Some(&end), &mut http::HeaderMap::new(), Said::Nothing),
        id
    );

    let mut unknown = http::HeaderMap::new();
    assert_eq!(order.announce(None, &mut unknown), Said::Metadata);
    assert!(unknown.contains_key(PEER_METADATA) && !unknown.contains_key(PEER_DIRECT));
}

/// The server's end remembers a caller only on a connection of the mesh's listener (an
/// identity built elsewhere may be made anew per request) and only when the caller named
/// this end's address; it labels with what it remembers a request that says it remembers
/// the server, and after one such, a request with neither header (before, that may be
/// another caller's, carried by a proxy that dialed this address).
#[test]
fn a_server_connection_remembers_only_its_own_listeners_direct_callers() {
    let order = Metrics::new(WorkloadLabels::named("order"));
    let payment = Metrics::new(WorkloadLabels::named("payment"));
    let local: std::net::SocketAddr = "10.0.0.2:8080".parse().expect("an address");
    let caller: std::net::SocketAddr = "10.0.0.1:40000".parse().expect("an address");
    let request = |direct: &str| {
        let mut h = http::HeaderMap::new();
        order.announce(None, &mut h);
        h.insert(
            PEER_DIRECT,
            http::HeaderValue::from_str(direct).expect("a value"),
        );
        h
    };
    // What a request without metadata is labelled with: `x-mesh-peer-direct` naming
    // `direct` alone, or (`None`) neither header. Such a request gets nothing back.
    let label = |m: &Metrics, direct: Option<&str>, peer: &PeerIdentity| {
        let mut h = http::HeaderMap::new();
        if let Some(direct) = direct {
            h.insert(
                PEER_DIRECT,
                http::HeaderValue::from_str(direct).expect("a value"),
            );
        }
        let (answer, id) = m.take_caller(&mut h, Some(peer));
        assert_eq!(answer, Answer::Nothing);
        id
    };
    let here = Some("10.0.0.2:8080");
    let elsewhere = Some("10.0.0.3:8080");

    let built = PeerIdentity::plaintext(caller, local);
    let (answer, id) = payment.take_caller(&mut request("10.0.0.2:8080"), Some(&built));
    assert_eq!(answer, Answer::Metadata);
    assert!(id.is_some());
    assert_eq!(label(&payment, None, &built), None);

    let listened = PeerIdentity {
        remembered: crate::exchange::SharedMemory::new(local),
        ..PeerIdentity::plaintext(caller, local)
    };
    let (answer, _) = payment.take_caller(&mut request("10.0.0.3:8080"), Some(&listened));
    assert_eq!(answer, Answer::Metadata);
    assert_eq!(label(&payment, None, &listened), None);
    // Saying it remembers, on a connection that remembers nothing: nothing to label with,
    // and no reason to take later requests for the caller's.
    assert_eq!(label(&payment, here, &listened), None);
    let (answer, _) = payment.take_caller(&mut request("10.0.0.2:8080"), Some(&listened));
    assert_eq!(answer, Answer::Remembered(caller));
    // Its clones (the connection's later requests) remember it, for a caller that says so
    // (naming this end; another address says nothing); a request with neither header
    // before that is not the caller's.
    let later = listened.clone();
    assert_eq!(label(&payment, None, &later), None);
    assert_eq!(label(&payment, elsewhere, &later), None);
    assert_eq!(label(&payment, None, &later), None);
    assert_eq!(label(&payment, here, &later), id);
    // After it, one with neither header is the caller's.
    assert_eq!(label(&payment, None, &listened), id);
    // Another registry's id means nothing here.
    let other = Metrics::new(WorkloadLabels::named("payment"));
    assert_eq!(label(&other, here, &later), None);
    assert_eq!(label(&other, None, &later), None);
    // A built identity says nothing for a caller that says it remembers.
    assert_eq!(label(&payment, here, &built), None);
}

/// Two workloads' metrics on one thread with the same labels: each counts only its own
/// requests (the thread's memory of recent series and label ids is per registry).
#[test]
fn two_registries_on_one_thread_count_apart() {
    let requests = |m: &Metrics| {
        let text = m.render();
        text.lines()
            .find(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let a = Metrics::new(WorkloadLabels::named("payment").with_namespace("shop"));
    let b = Metrics::new(WorkloadLabels::named("payment").with_namespace("shop"));
    // Different ids for the same text in each (b has seen another string first).
    let _ = b.intern("spiffe://cluster.local/ns/shop/sa/other");
    for round in 1..=3u64 {
        a.record_request(&sample(Reporter::Destination, 200));
        a.record_request(&sample(Reporter::Destination, 200));
        b.record_request(&sample(Reporter::Destination, 200));
        assert_eq!(requests(&a), 2 * round);
        assert_eq!(requests(&b), round);
    }
    // A registry made after another was dropped starts from nothing.
    drop(a);
    let c = Metrics::new(WorkloadLabels::named("payment").with_namespace("shop"));
    c.record_request(&sample(Reporter::Destination, 200));
    assert_eq!(requests(&c), 1);
    assert!(c
        .render()
        .contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/order\""));
}
