//! The delta flavour: incremental subscriptions, per-resource versions, removals, ACK/NACK
//! by nonce, `initial_resource_versions` on a new stream.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as Wrapped,
};

use super::*;

fn delta_connected(targets: &[&str]) -> (AdsCore, Instant) {
    let now = Instant::now();
    let config = AdsConfig::default().with_protocol(Protocol::Delta);
    let mut core = AdsCore::new(NodeConfig::new("node-1").to_proto(), config);
    for t in targets {
        core.add_target(t, now);
    }
    core.on_stream_start(now);
    (core, now)
}

fn wrap(name: &str, version: &str, any: Any) -> Wrapped {
    Wrapped {
        name: name.into(),
        version: version.into(),
        resource: Some(any),
        ..Wrapped::default()
    }
}

fn delta(
    t: XdsType,
    nonce: &str,
    resources: Vec<Wrapped>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: format!("sys-{nonce}"),
        resources,
        type_url: t.type_url().into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.into(),
        ..DeltaDiscoveryResponse::default()
    }
}

fn drain_delta(core: &mut AdsCore) -> Vec<DeltaDiscoveryRequest> {
    std::iter::from_fn(|| core.poll_delta_request()).collect()
}

fn full_delta_cascade(core: &mut AdsCore, now: Instant) {
    let addr = "10.0.0.1:80".parse().unwrap();
    let steps = [
        (LDS, "n1", wrap("svc", "l1", listener_rds("svc", "route"))),
        (RDS, "n2", wrap("route", "r1", route_config("route", "c"))),
        (CDS, "n3", wrap("c", "c1", cluster_eds("c", Some("c-eds")))),
        (EDS, "n4", wrap("c-eds", "e1", endpoints("c-eds", &[addr]))),
    ];
    for (t, nonce, r) in steps {
        let out = core
            .handle_delta_response(delta(t, nonce, vec![r], &[]), now)
            .unwrap();
        assert!(out.acked, "{out:?}");
    }
}

#[test]
fn cascade_subscribes_incrementally_and_acks_by_nonce() {
    let (mut core, now) = delta_connected(&["svc"]);
    assert!(
        core.poll_request().is_none(),
        "no state-of-the-world request in delta"
    );
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].node.as_ref().unwrap().id, "node-1");
    assert_eq!(reqs[0].resource_names_subscribe, ["svc"]);
    assert!(reqs[0].initial_resource_versions.is_empty());
    assert!(reqs[0].response_nonce.is_empty());

    core.handle_delta_response(
        delta(
            LDS,
            "n1",
            vec![wrap("svc", "l1", listener_rds("svc", "route"))],
            &[],
        ),
        now,
    )
    .unwrap();
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        (reqs[0].type_url.as_str(), reqs[0].response_nonce.as_str()),
        (LDS.type_url(), "n1")
    );
    assert!(
        reqs[0].resource_names_subscribe.is_empty(),
        "an ACK repeats no names"
    );
    assert!(reqs[0].error_detail.is_none());
    assert!(reqs[1].node.is_none());
    assert_eq!(reqs[1].type_url, RDS.type_url());
    assert_eq!(reqs[1].resource_names_subscribe, ["route"]);

    full_delta_cascade(&mut core, now);
    drain_delta(&mut core);
    assert_eq!(core.cache().len(), 4);
    let entry = core.cache().get(CDS, "c").unwrap();
    assert_eq!(
        (entry.state, entry.version.as_deref()),
        (ResourceState::Acked, Some("c1"))
    );
    assert_eq!(core.version(CDS), "sys-n3");
    assert_eq!(core.update_counts(LDS).accepted, 2);

    // A new target subscribes only its own name; dropping one unsubscribes its tree.
    core.add_target("other", now);
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].resource_names_subscribe, ["other"]);
    assert!(
        reqs[0].response_nonce.is_empty(),
        "the nonce was ACKed already"
    );
    core.remove_target("svc", now);
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert_eq!(reqs[0].resource_names_unsubscribe, ["svc"]);
    assert_eq!(reqs[3].resource_names_unsubscribe, ["c-eds"]);
}

#[test]
fn an_update_carries_only_the_changed_resource() {
    let (mut core, now) = delta_connected(&["a", "b"]);
    core.handle_delta_response(
        delta(
            LDS,
            "n1",
            vec![
                wrap("a", "1", listener_rds("a", "ra")),
                wrap("b", "1", listener_rds("b", "rb")),
            ],
            &[],
        ),
        now,
    )
    .unwrap();
    events(&mut core);
    let out = core
        .handle_delta_response(
            delta(
                LDS,
                "n2",
                vec![wrap("b", "2", listener_rds("b", "rb2"))],
                &[],
            ),
            now,
        )
        .unwrap();
    assert_eq!(out.accepted, ["b"]);
    assert!(out.removed.is_empty(), "delta deletes only what it names");
    assert_eq!(
        core.cache().get(LDS, "a").unwrap().version.as_deref(),
        Some("1")
    );
    assert_eq!(
        core.cache().get(LDS, "b").unwrap().version.as_deref(),
        Some("2")
    );
    let mut rds: Vec<_> = core.subscriptions(RDS).collect();
    rds.sort();
    assert_eq!(rds, ["ra", "rb2"]);
}

#[test]
fn removed_resources_are_deleted_and_their_tree_unsubscribed() {
    let (mut core, now) = delta_connected(&["svc"]);
    full_delta_cascade(&mut core, now);
    drain_delta(&mut core);
    events(&mut core);
    let out = core
        .handle_delta_response(delta(LDS, "n5", vec![], &["svc", "never-asked"]), now)
        .unwrap();
    assert!(out.acked);
    assert_eq!(out.removed, ["svc"]);
    let entry = core.cache().get(LDS, "svc").unwrap();
    assert_eq!(entry.state, ResourceState::DoesNotExist);
    assert!(entry.resource.is_none());
    assert_eq!(
        events(&mut core)[0],
        XdsEvent::DoesNotExist {
            xds_type: LDS,
            name: "svc".into()
        }
    );
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs[0].response_nonce, "n5");
    assert_eq!(reqs[1].resource_names_unsubscribe, ["route"]);
}

#[test]
fn ignore_resource_deletion_keeps_removed_listeners() {
    let now = Instant::now();
    let config = AdsConfig::default()
        .with_protocol(Protocol::Delta)
        .with_ignore_resource_deletion(true);
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), config);
    core.add_target("svc", now);
    core.on_stream_start(now);
    full_delta_cascade(&mut core, now);
    core.handle_delta_response(delta(LDS, "n5", vec![], &["svc"]), now)
        .unwrap();
    assert!(core.cache().resource(LDS, "svc").is_some());
    // EDS removals are always applied.
    core.handle_delta_response(delta(EDS, "n6", vec![], &["c-eds"]), now)
        .unwrap();
    assert!(core.cache().resource(EDS, "c-eds").is_none());
}

#[test]
fn a46_nack_names_the_resource_and_field_and_keeps_the_previous_data() {
    let (mut core, now) = delta_connected(&["good", "bad"]);
    core.handle_delta_response(
        delta(
            LDS,
            "n1",
            vec![
                wrap("good", "1", listener_rds("good", "r1")),
                wrap("bad", "1", listener_rds("bad", "rb")),
            ],
            &[],
        ),
        now,
    )
    .unwrap();
    drain_delta(&mut core);
    let out = core
        .handle_delta_response(
            delta(
                LDS,
                "n2",
                vec![
                    wrap("good", "2", listener_rds("good", "r2")),
                    wrap("bad", "2", listener_rds("bad", "")),
                ],
                &[],
            ),
            now,
        )
        .unwrap();
    assert!(!out.acked);
    assert_eq!(out.accepted, ["good"]);
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs[0].response_nonce, "n2");
    let detail = reqs[0].error_detail.as_ref().unwrap();
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
    let bad = core.cache().get(LDS, "bad").unwrap();
    assert_eq!(bad.state, ResourceState::Nacked);
    assert_eq!(
        bad.version.as_deref(),
        Some("1"),
        "the previous version stays"
    );
    assert_eq!(bad.last_error.as_ref().unwrap().version, "2");
    assert!(bad.resource.is_some());
    assert_eq!(
        core.cache().get(LDS, "good").unwrap().version.as_deref(),
        Some("2")
    );
    assert_eq!(
        core.update_counts(LDS),
        UpdateCounts {
            accepted: 1,
            rejected: 1
        }
    );
    // The NACK's error goes out once.
    core.add_target("third", now);
    assert!(drain_delta(&mut core)[0].error_detail.is_none());
}

#[test]
fn broken_or_empty_entries_are_rejected_under_their_wrapper_name() {
    let (mut core, now) = delta_connected(&["svc", "other"]);
    let broken = Any {
        type_url: LDS.type_url().into(),
        value: vec![0xff, 0xff],
    };
    let empty = Wrapped {
        name: "other".into(),
        version: "1".into(),
        ..Wrapped::default()
    };
    let out = core
        .handle_delta_response(
            delta(LDS, "n1", vec![wrap("svc", "1", broken), empty], &[]),
            now,
        )
        .unwrap();
    assert!(!out.acked);
    assert_eq!(out.rejected.len(), 2);
    assert_eq!(
        core.cache().get(LDS, "svc").unwrap().state,
        ResourceState::Nacked
    );
    assert_eq!(
        core.cache().get(LDS, "other").unwrap().state,
        ResourceState::Nacked
    );
    assert_eq!(out.rejected[1].field(), Some("resource"));
}

#[test]
fn a_wrapper_name_that_disagrees_with_the_resource_is_rejected() {
    let (mut core, now) = delta_connected(&["svc"]);
    let out = core
        .handle_delta_response(
            delta(
                LDS,
                "n1",
                vec![wrap("svc", "1", listener_rds("impostor", "r"))],
                &[],
            ),
            now,
        )
        .unwrap();
    assert!(!out.acked);
    assert_eq!(out.rejected[0].field(), Some("name"));
}

#[test]
fn a_new_stream_resubscribes_with_initial_resource_versions() {
    let (mut core, now) = delta_connected(&["svc"]);
    full_delta_cascade(&mut core, now);
    drain_delta(&mut core);
    core.on_stream_closed();
    assert!(core.poll_delta_request().is_none());
    core.on_stream_start(now);
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 4);
    assert!(reqs[0].node.is_some());
    for (req, (name, version)) in
        reqs.iter()
            .zip([("svc", "l1"), ("route", "r1"), ("c", "c1"), ("c-eds", "e1")])
    {
        assert_eq!(req.resource_names_subscribe, [name]);
        assert_eq!(
            req.initial_resource_versions.get(name).map(String::as_str),
            Some(version)
        );
        assert!(req.response_nonce.is_empty());
    }
    // The cache served meanwhile, and the server may now send nothing.
    assert_eq!(
        core.cache().get(EDS, "c-eds").unwrap().state,
        ResourceState::Acked
    );
}

#[test]
fn a57_timer_runs_in_delta_too() {
    let (mut core, start) = delta_connected(&["svc"]);
    let deadline = start + Duration::from_secs(15);
    assert_eq!(core.poll_timeout(), Some(deadline));
    core.handle_timeout(deadline);
    assert_eq!(
        core.cache().get(LDS, "svc").unwrap().state,
        ResourceState::DoesNotExist
    );
}

#[test]
fn responses_of_the_other_flavour_are_refused() {
    let (mut core, now) = delta_connected(&["svc"]);
    assert_eq!(
        core.handle_response(response(LDS, "1", "n1", vec![]), now),
        Err(ProtocolError::WrongProtocol(Protocol::StateOfTheWorld))
    );
    let (mut sotw, now) = connected(&["svc"]);
    assert!(sotw.poll_delta_request().is_none());
    assert_eq!(
        sotw.handle_delta_response(delta(LDS, "n1", vec![], &[]), now),
        Err(ProtocolError::WrongProtocol(Protocol::Delta))
    );
}

#[test]
fn both_flavours_cache_the_same_resources() {
    let (mut d, now) = delta_connected(&["svc"]);
    full_delta_cascade(&mut d, now);
    let (mut s, now) = connected(&["svc"]);
    full_cascade(&mut s, now);
    for t in XdsType::ALL {
        let a: Vec<_> = d
            .cache()
            .entries(t)
            .map(|(n, e)| (n.to_owned(), e.resource.clone(), e.state))
            .collect();
        let b: Vec<_> = s
            .cache()
            .entries(t)
            .map(|(n, e)| (n.to_owned(), e.resource.clone(), e.state))
            .collect();
        assert_eq!(a, b);
    }
}

#[test]
fn switching_flavour_keeps_the_cache_but_not_foreign_versions() {
    let (mut core, now) = connected(&["svc"]);
    full_cascade(&mut core, now);
    core.on_stream_closed();
    core.set_protocol(Protocol::Delta);
    core.on_stream_start(now);
    let reqs = drain_delta(&mut core);
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.initial_resource_versions.is_empty()));
    assert_eq!(core.cache().len(), 4);
}
