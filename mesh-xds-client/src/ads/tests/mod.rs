use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use super::*;

mod delta;
mod lifecycle;
mod responses;
mod wildcard;
use crate::bootstrap::NodeConfig;
use crate::testing::fixtures::*;

pub(super) const LDS: XdsType = XdsType::Listener;
pub(super) const RDS: XdsType = XdsType::RouteConfiguration;
pub(super) const CDS: XdsType = XdsType::Cluster;
pub(super) const EDS: XdsType = XdsType::ClusterLoadAssignment;

pub(super) fn response(
    t: XdsType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: nonce.into(),
        ..DiscoveryResponse::default()
    }
}

pub(super) fn drain(core: &mut AdsCore) -> Vec<DiscoveryRequest> {
    std::iter::from_fn(|| core.poll_request()).collect()
}

pub(super) fn events(core: &mut AdsCore) -> Vec<XdsEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

pub(super) fn connected(targets: &[&str]) -> (AdsCore, Instant) {
    let now = Instant::now();
    let mut core = AdsCore::new(NodeConfig::new("node-1").to_proto(), AdsConfig::default());
    for t in targets {
        core.add_target(t, now);
    }
    core.on_stream_start(now);
    (core, now)
}

/// Feeds the whole cascade for `svc`: listener -> route -> cluster -> endpoints.
pub(super) fn full_cascade(core: &mut AdsCore, now: Instant) {
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "route")]),
        now,
    )
    .unwrap();
    core.handle_response(
        response(RDS, "1", "n2", vec![route_config("route", "c")]),
        now,
    )
    .unwrap();
    core.handle_response(
        response(CDS, "1", "n3", vec![cluster_eds("c", Some("c-eds"))]),
        now,
    )
    .unwrap();
    let addr = "10.0.0.1:80".parse().unwrap();
    core.handle_response(
        response(EDS, "1", "n4", vec![endpoints("c-eds", &[addr])]),
        now,
    )
    .unwrap();
}

#[test]
fn first_request_carries_the_node_and_the_targets() {
    let (mut core, _) = connected(&["b", "a"]);
    let reqs = drain(&mut core);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].node.as_ref().unwrap().id, "node-1");
    assert_eq!(reqs[0].type_url, LDS.type_url());
    assert_eq!(reqs[0].resource_names, ["a", "b"]);
    assert_eq!(
        (
            reqs[0].version_info.as_str(),
            reqs[0].response_nonce.as_str()
        ),
        ("", "")
    );
    core.add_target("c", Instant::now());
    let reqs = drain(&mut core);
    assert!(
        reqs[0].node.is_none(),
        "the node goes in the first request only"
    );
    assert_eq!(reqs[0].resource_names, ["a", "b", "c"]);
}

#[test]
fn cascade_acks_each_type_and_subscribes_to_the_next() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    let out = core
        .handle_response(
            response(LDS, "1", "n1", vec![listener_rds("svc", "route")]),
            now,
        )
        .unwrap();
    assert!(out.acked);
    let reqs = drain(&mut core);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].type_url, LDS.type_url());
    assert_eq!(
        (
            reqs[0].version_info.as_str(),
            reqs[0].response_nonce.as_str()
        ),
        ("1", "n1")
    );
    assert!(reqs[0].error_detail.is_none());
    assert_eq!(reqs[1].type_url, RDS.type_url());
    assert_eq!(reqs[1].resource_names, ["route"]);

    core.handle_response(
        response(RDS, "7", "n2", vec![route_config("route", "c")]),
        now,
    )
    .unwrap();
    let reqs = drain(&mut core);
    assert_eq!(reqs[1].type_url, CDS.type_url());
    assert_eq!(reqs[1].resource_names, ["c"]);

    core.handle_response(
        response(CDS, "3", "n3", vec![cluster_eds("c", Some("c-eds"))]),
        now,
    )
    .unwrap();
    let reqs = drain(&mut core);
    assert_eq!(reqs[1].type_url, EDS.type_url());
    assert_eq!(reqs[1].resource_names, ["c-eds"]);

    let addr = "10.0.0.1:80".parse().unwrap();
    core.handle_response(
        response(EDS, "9", "n4", vec![endpoints("c-eds", &[addr])]),
        now,
    )
    .unwrap();
    let reqs = drain(&mut core);
    assert_eq!(reqs.len(), 1, "only the EDS ACK");
    assert_eq!(core.version(EDS), "9");
    assert_eq!(core.cache().len(), 4);
    assert!(core
        .cache()
        .iter()
        .all(|(_, _, e)| e.state == ResourceState::Acked));
    let entry = core.cache().get(RDS, "route").unwrap();
    assert_eq!(entry.version.as_deref(), Some("7"));
    assert_eq!(entry.last_updated, Some(now));
    assert_eq!(events(&mut core).len(), 4);
}

#[test]
fn inline_routes_subscribe_clusters_directly() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    let routes = route_config_with(
        "inline",
        vec![prefix_route("/", weighted(&[("a", 1), ("b", 3)]))],
    );
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_inline("svc", routes)]),
        now,
    )
    .unwrap();
    let reqs = drain(&mut core);
    assert_eq!(reqs[1].type_url, CDS.type_url());
    assert_eq!(reqs[1].resource_names, ["a", "b"]);
    assert_eq!(core.subscriptions(RDS).count(), 0);
}

#[test]
fn removing_a_target_unsubscribes_its_tree() {
    let (mut core, now) = connected(&["svc"]);
    full_cascade(&mut core, now);
    drain(&mut core);
    core.remove_target("svc", now);
    let reqs = drain(&mut core);
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.resource_names.is_empty()));
    assert!(core.cache().is_empty());
}

#[test]
fn shared_clusters_stay_while_still_referenced() {
    let (mut core, now) = connected(&["a", "b"]);
    core.handle_response(
        response(
            LDS,
            "1",
            "n1",
            vec![listener_rds("a", "ra"), listener_rds("b", "rb")],
        ),
        now,
    )
    .unwrap();
    core.handle_response(
        response(
            RDS,
            "1",
            "n2",
            vec![route_config("ra", "c"), route_config("rb", "c")],
        ),
        now,
    )
    .unwrap();
    drain(&mut core);
    core.remove_target("a", now);
    let reqs = drain(&mut core);
    assert_eq!(reqs.len(), 2, "LDS and RDS change, CDS does not: {reqs:?}");
    assert_eq!(core.subscriptions(CDS).collect::<Vec<_>>(), ["c"]);
}
