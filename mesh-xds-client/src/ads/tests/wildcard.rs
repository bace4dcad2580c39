//! Sidecar shape: listeners and clusters subscribed by wildcard, as Envoy subscribes them.

use super::*;
use crate::shape::IstioShape;

fn sidecar_core(protocol: Protocol) -> (AdsCore, Instant) {
    let now = Instant::now();
    let config = AdsConfig::default()
        .with_shape(IstioShape::Sidecar)
        .with_protocol(protocol);
    let mut core = AdsCore::new(NodeConfig::new("node-1").to_proto(), config);
    core.add_target("payment-service:8080", now);
    core.on_stream_start(now);
    (core, now)
}

#[test]
fn listeners_and_clusters_are_asked_for_by_wildcard_and_every_one_sent_is_kept() {
    let (mut core, now) = sidecar_core(Protocol::StateOfTheWorld);
    let first = drain(&mut core);
    let types: Vec<Option<XdsType>> = first
        .iter()
        .map(|r| XdsType::from_type_url(&r.type_url))
        .collect();
    assert_eq!(types, [Some(LDS), Some(CDS)], "{first:#?}");
    assert!(first.iter().all(|r| r.resource_names.is_empty()));
    // Clusters nobody named are taken, and their endpoints subscribed by name.
    let out = core
        .handle_response(
            response(
                CDS,
                "1",
                "n1",
                vec![cluster_eds("a", None), cluster_eds("b", None)],
            ),
            now,
        )
        .expect("taken");
    assert!(out.acked);
    assert_eq!(out.accepted, ["a", "b"]);
    assert!(core.cache().has_answered(CDS));
    let eds: Vec<&str> = core.subscriptions(EDS).collect();
    assert_eq!(eds, ["a", "b"]);
    let requests = drain(&mut core);
    let cds_ack = requests
        .iter()
        .find(|r| r.type_url == CDS.type_url())
        .expect("an ACK");
    assert!(cds_ack.resource_names.is_empty(), "still the wildcard");
    // A later response without `b`: deleted, its endpoints unsubscribed.
    let out = core
        .handle_response(response(CDS, "2", "n2", vec![cluster_eds("a", None)]), now)
        .expect("taken");
    assert_eq!(out.removed, ["b"]);
    let eds: Vec<&str> = core.subscriptions(EDS).collect();
    assert_eq!(eds, ["a"]);
}

#[test]
fn delta_subscribes_the_wildcard_name() {
    let (mut core, _) = sidecar_core(Protocol::Delta);
    let first: Vec<_> = std::iter::from_fn(|| core.poll_delta_request()).collect();
    let lds = first
        .iter()
        .find(|r| r.type_url == LDS.type_url())
        .expect("LDS");
    assert_eq!(lds.resource_names_subscribe, ["*"]);
    let cds = first
        .iter()
        .find(|r| r.type_url == CDS.type_url())
        .expect("CDS");
    assert_eq!(cds.resource_names_subscribe, ["*"]);
}
