//! Streams opening and closing, and the does-not-exist timer.

use std::time::{Duration, Instant};

use super::*;

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
fn a71_uncached_means_neither_data_nor_a_verdict() {
    let (mut core, start) = connected(&["svc"]);
    assert!(core.has_uncached(), "nothing received yet");
    core.handle_timeout(start + Duration::from_secs(15));
    assert!(!core.has_uncached(), "does-not-exist counts as cached");
    core.add_target("other", start);
    assert!(core.has_uncached());
    full_cascade(&mut core, start);
    core.remove_target("other", start);
    assert!(!core.has_uncached());
}
