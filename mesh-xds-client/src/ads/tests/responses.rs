//! Applying responses: A46, deletion, rejection.

use std::time::{Duration, Instant};

use envoy_types::pb::google::protobuf::Any;

use super::*;

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

#[test]
fn an_unchanged_resource_keeps_its_arc_and_raises_no_event() {
    let (mut core, now) = connected(&["svc"]);
    full_cascade(&mut core, now);
    events(&mut core);
    let before = core.cache().resource(CDS, "c").cloned().unwrap();
    let repeat = response(CDS, "2", "n9", vec![cluster_eds("c", Some("c-eds"))]);
    assert!(core.handle_response(repeat, now).unwrap().acked);
    let after = core.cache().resource(CDS, "c").cloned().unwrap();
    use crate::resource::Resource;
    let (Resource::Cluster(a), Resource::Cluster(b)) = (before, after) else {
        panic!("not clusters")
    };
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(events(&mut core).is_empty());
    assert_eq!(
        core.cache().get(CDS, "c").unwrap().version.as_deref(),
        Some("2")
    );
}

#[test]
fn a29_certificate_providers_must_be_in_the_bootstrap() {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateProviderPluginInstance,
        CertificateValidationContext, CommonTlsContext, UpstreamTlsContext,
    };
    let tls_cluster = |instance: &str| {
        let provider = Some(CertificateProviderPluginInstance {
            instance_name: instance.into(),
            certificate_name: "ROOTCA".into(),
        });
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: provider,
                        ..CertificateValidationContext::default()
                    },
                )),
                ..CommonTlsContext::default()
            }),
            ..UpstreamTlsContext::default()
        };
        let mut c = cluster_eds_message("c", None);
        c.transport_socket = Some(TransportSocket {
            name: "tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(
                crate::resource::to_any(&ctx),
            )),
        });
        crate::resource::to_any(&c)
    };
    let now = Instant::now();
    let config = AdsConfig::default()
        .with_certificate_providers(Some(["default".to_owned()].into_iter().collect()));
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), config);
    core.add_target("svc", now);
    core.on_stream_start(now);
    full_cascade(&mut core, now);
    let outcome = core
        .handle_response(response(CDS, "2", "n9", vec![tls_cluster("other")]), now)
        .unwrap();
    assert!(!outcome.acked);
    assert_eq!(
        outcome.rejected[0].field(),
        Some("transport_socket.typed_config.common_tls_context")
    );
    let outcome = core
        .handle_response(response(CDS, "3", "n10", vec![tls_cluster("default")]), now)
        .unwrap();
    assert!(outcome.acked);
}
