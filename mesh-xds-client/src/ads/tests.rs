use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use super::*;
use crate::bootstrap::NodeConfig;
use crate::testing::fixtures::*;

const LDS: XdsType = XdsType::Listener;
const RDS: XdsType = XdsType::RouteConfiguration;
const CDS: XdsType = XdsType::Cluster;
const EDS: XdsType = XdsType::ClusterLoadAssignment;

fn response(t: XdsType, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: nonce.into(),
        ..DiscoveryResponse::default()
    }
}

fn drain(core: &mut AdsCore) -> Vec<DiscoveryRequest> {
    std::iter::from_fn(|| core.poll_request()).collect()
}

fn events(core: &mut AdsCore) -> Vec<XdsEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn connected(targets: &[&str]) -> (AdsCore, Instant) {
    let now = Instant::now();
    let mut core = AdsCore::new(NodeConfig::new("node-1").to_proto(), AdsConfig::default());
    for t in targets {
        core.add_target(t, now);
    }
    core.on_stream_start(now);
    (core, now)
}

/// Feeds the whole cascade for `svc`: listener -> route -> cluster -> endpoints.
fn full_cascade(core: &mut AdsCore, now: Instant) {
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
fn nothing_is_sent_without_a_stream() {
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), AdsConfig::default());
    core.add_target("svc", Instant::now());
    assert!(core.poll_request().is_none());
    assert_eq!(
        core.poll_timeout(),
        None,
        "no does-not-exist timer without a stream"
    );
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
fn a46_valid_resources_are_applied_and_the_response_nacked() {
    let (mut core, now) = connected(&["good", "bad"]);
    drain(&mut core);
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("good", "r1")]),
        now,
    )
    .unwrap();
    drain(&mut core);
    events(&mut core);
    // `bad` has an empty route name; `good` moves to another route configuration.
    let out = core
        .handle_response(
            response(
                LDS,
                "2",
                "n2",
                vec![listener_rds("good", "r2"), listener_rds("bad", "")],
            ),
            now,
        )
        .unwrap();
    assert!(!out.acked);
    assert_eq!(out.accepted, ["good"]);
    let reqs = drain(&mut core);
    let nack = &reqs[0];
    assert_eq!(
        nack.version_info, "1",
        "a NACK carries the previous version"
    );
    assert_eq!(nack.response_nonce, "n2");
    let detail = nack.error_detail.as_ref().unwrap();
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("resource bad"),
        "{}",
        detail.message
    );
    assert!(
        detail
            .message
            .contains("api_listener.api_listener.rds.route_config_name"),
        "{}",
        detail.message
    );
    assert_eq!(
        reqs[1].resource_names,
        ["r2"],
        "the valid listener's change applied"
    );
    assert_eq!(core.version(LDS), "1");
    let bad = core.cache().get(LDS, "bad").unwrap();
    assert_eq!(bad.state, ResourceState::Nacked);
    let failure = bad.last_error.as_ref().unwrap();
    assert_eq!(failure.version, "2");
    assert_eq!(
        failure.error.field(),
        Some("api_listener.api_listener.rds.route_config_name")
    );
    let good = core.cache().get(LDS, "good").unwrap();
    assert_eq!(
        (good.state, good.version.as_deref()),
        (ResourceState::Acked, Some("2"))
    );
    let evs = events(&mut core);
    assert!(evs
        .iter()
        .any(|e| matches!(e, XdsEvent::Rejected { name, .. } if name == "bad")));

    // The next request after the NACK carries no error any more.
    core.add_target("third", now);
    assert!(drain(&mut core)[0].error_detail.is_none());
}

#[test]
fn a_rejected_update_keeps_the_previous_data() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r1")]),
        now,
    )
    .unwrap();
    core.handle_response(response(LDS, "2", "n2", vec![listener_rds("svc", "")]), now)
        .unwrap();
    let entry = core.cache().get(LDS, "svc").unwrap();
    assert_eq!(entry.state, ResourceState::Nacked);
    assert_eq!(entry.version.as_deref(), Some("1"));
    assert!(entry.resource.is_some());
    assert_eq!(core.subscriptions(RDS).collect::<Vec<_>>(), ["r1"]);
}

#[test]
fn missing_listener_is_deleted_and_its_route_unsubscribed() {
    let (mut core, now) = connected(&["svc", "other"]);
    full_cascade(&mut core, now);
    core.handle_response(
        response(LDS, "2", "n5", vec![listener_rds("other", "r-other")]),
        now,
    )
    .unwrap();
    let entry = core.cache().get(LDS, "svc").unwrap();
    assert_eq!(entry.state, ResourceState::DoesNotExist);
    assert!(entry.resource.is_none());
    let reqs = drain(&mut core);
    let rds = reqs
        .iter()
        .rev()
        .find(|r| r.type_url == RDS.type_url())
        .unwrap();
    assert_eq!(rds.resource_names, ["r-other"]);
    let cds = reqs
        .iter()
        .rev()
        .find(|r| r.type_url == CDS.type_url())
        .unwrap();
    assert!(
        cds.resource_names.is_empty(),
        "an empty list unsubscribes from everything"
    );
    assert!(core.cache().get(CDS, "c").is_none());
    assert!(core.cache().get(EDS, "c-eds").is_none());
}

#[test]
fn ignore_resource_deletion_keeps_missing_listeners() {
    let now = Instant::now();
    let config = AdsConfig::default().with_ignore_resource_deletion(true);
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), config);
    core.add_target("svc", now);
    core.on_stream_start(now);
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r")]),
        now,
    )
    .unwrap();
    core.handle_response(response(LDS, "2", "n2", vec![]), now)
        .unwrap();
    assert!(core.cache().resource(LDS, "svc").is_some());
}

#[test]
fn rds_and_eds_resources_are_not_deleted_by_omission() {
    let (mut core, now) = connected(&["svc"]);
    full_cascade(&mut core, now);
    core.handle_response(response(RDS, "2", "n5", vec![]), now)
        .unwrap();
    core.handle_response(response(EDS, "2", "n6", vec![]), now)
        .unwrap();
    assert!(core.cache().resource(RDS, "route").is_some());
    assert!(core.cache().resource(EDS, "c-eds").is_some());
}

#[test]
fn undecodable_resource_nacks_without_deleting() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r")]),
        now,
    )
    .unwrap();
    let garbage = Any {
        type_url: LDS.type_url().into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let out = core
        .handle_response(response(LDS, "2", "n2", vec![garbage]), now)
        .unwrap();
    assert!(!out.acked);
    assert!(matches!(
        out.rejected[0],
        ResourceError::Decode { index: 0, .. }
    ));
    assert!(
        core.cache().resource(LDS, "svc").is_some(),
        "name unknown: nothing deleted"
    );
}

#[test]
fn wrong_type_and_duplicates_are_rejected() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    let out = core
        .handle_response(
            response(
                LDS,
                "1",
                "n1",
                vec![route_config("svc", "c"), listener_rds("svc", "r")],
            ),
            now,
        )
        .unwrap();
    assert!(matches!(
        out.rejected[0],
        ResourceError::WrongType { index: 0, .. }
    ));
    assert_eq!(out.accepted, ["svc"]);
    let out = core
        .handle_response(
            response(
                LDS,
                "2",
                "n2",
                vec![listener_rds("svc", "r"), listener_rds("svc", "r2")],
            ),
            now,
        )
        .unwrap();
    assert_eq!(
        out.rejected,
        [ResourceError::Duplicate { name: "svc".into() }]
    );
}

#[test]
fn unsubscribed_resources_are_ignored() {
    let (mut core, now) = connected(&["svc"]);
    drain(&mut core);
    let out = core
        .handle_response(
            response(
                LDS,
                "1",
                "n1",
                vec![listener_rds("stranger", ""), listener_rds("svc", "r")],
            ),
            now,
        )
        .unwrap();
    assert!(out.acked);
    assert!(core.cache().get(LDS, "stranger").is_none());
}

#[test]
fn unchanged_data_raises_no_event() {
    let (mut core, now) = connected(&["svc"]);
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r")]),
        now,
    )
    .unwrap();
    events(&mut core);
    let later = now + Duration::from_secs(5);
    core.handle_response(
        response(LDS, "2", "n2", vec![listener_rds("svc", "r")]),
        later,
    )
    .unwrap();
    assert!(events(&mut core).is_empty());
    let entry = core.cache().get(LDS, "svc").unwrap();
    assert_eq!(entry.version.as_deref(), Some("2"));
    assert_eq!(entry.last_updated, Some(now));
}

#[test]
fn a57_does_not_exist_after_the_timeout() {
    let (mut core, start) = connected(&["svc"]);
    let deadline = start + Duration::from_secs(15);
    assert_eq!(core.poll_timeout(), Some(deadline));
    core.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut core).is_empty());
    core.handle_timeout(deadline);
    assert_eq!(
        events(&mut core),
        [XdsEvent::DoesNotExist {
            xds_type: LDS,
            name: "svc".into()
        }]
    );
    assert_eq!(
        core.cache().get(LDS, "svc").unwrap().state,
        ResourceState::DoesNotExist
    );
    assert_eq!(core.poll_timeout(), None);
    // Data arriving later still counts.
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r")]),
        deadline,
    )
    .unwrap();
    assert_eq!(
        core.cache().get(LDS, "svc").unwrap().state,
        ResourceState::Acked
    );
}

#[test]
fn a57_timer_stops_with_the_stream_and_data_cancels_it() {
    let (mut core, start) = connected(&["svc"]);
    core.on_stream_closed();
    assert_eq!(core.poll_timeout(), None);
    let later = start + Duration::from_secs(60);
    core.on_stream_start(later);
    assert_eq!(core.poll_timeout(), Some(later + Duration::from_secs(15)));
    core.handle_response(
        response(LDS, "1", "n1", vec![listener_rds("svc", "r")]),
        later,
    )
    .unwrap();
    // The new RDS subscription has its own timer.
    assert_eq!(core.poll_timeout(), Some(later + Duration::from_secs(15)));
    assert!(core
        .cache()
        .get(LDS, "svc")
        .unwrap()
        .does_not_exist_at
        .is_none());
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

#[test]
fn a_new_stream_resubscribes_with_the_last_versions_and_keeps_the_cache() {
    let (mut core, now) = connected(&["svc"]);
    full_cascade(&mut core, now);
    drain(&mut core);
    core.on_stream_closed();
    assert!(core.poll_request().is_none());
    assert_eq!(core.cache().len(), 4);
    core.on_stream_start(now);
    let reqs = drain(&mut core);
    let types: Vec<_> = reqs.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, XdsType::ALL.map(XdsType::type_url));
    assert!(reqs[0].node.is_some());
    assert!(reqs[1..].iter().all(|r| r.node.is_none()));
    assert!(reqs
        .iter()
        .all(|r| r.version_info == "1" && r.response_nonce.is_empty()));
    assert_eq!(reqs[3].resource_names, ["c-eds"]);
    assert_eq!(core.poll_timeout(), None, "everything has data: no timers");
}

#[test]
fn responses_need_a_stream_and_a_known_type() {
    let (mut core, now) = connected(&["svc"]);
    let mut bad = response(LDS, "1", "n1", vec![]);
    bad.type_url = "type.googleapis.com/envoy.config.core.v3.Node".into();
    assert!(matches!(
        core.handle_response(bad, now),
        Err(ProtocolError::UnknownType(_))
    ));
    core.on_stream_closed();
    let err = core
        .handle_response(response(LDS, "1", "n1", vec![]), now)
        .unwrap_err();
    assert_eq!(err, ProtocolError::NotConnected);
}
