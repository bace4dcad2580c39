use super::*;

fn status(t: &'static str, name: &str, state: &'static str) -> ResourceStatus {
    ResourceStatus {
        xds_type: t,
        name: name.to_owned(),
        state,
        version: None,
        updated_at: None,
        last_error: None,
        not_applied: Vec::new(),
    }
}

fn report(resources: Vec<ResourceStatus>, policy: bool) -> Report {
    Report {
        target: "xds:///a:80".to_owned(),
        listener: "a:80".to_owned(),
        server: "127.0.0.1:1".to_owned(),
        connected: true,
        answered: true,
        transport_error: None,
        failure: None,
        resolved: false,
        policy: policy.then(|| Policy {
            snapshot_version: "1".to_owned(),
            route_config: "a:80".to_owned(),
            virtual_hosts: Vec::new(),
            clusters: Vec::new(),
            endpoints: Vec::new(),
        }),
        resources,
    }
}

#[test]
fn resolved_needs_the_policy_and_every_resource_acked() {
    let acked = vec![status("LDS", "a:80", "ACKED"), status("RDS", "r", "ACKED")];
    assert_eq!(report(acked.clone(), true).outcome(), Outcome::Resolved);
    assert!(matches!(
        report(acked, false).outcome(),
        Outcome::Pending(_)
    ));
    let waiting = vec![
        status("LDS", "a:80", "ACKED"),
        status("CDS", "c", "REQUESTED"),
    ];
    assert_eq!(
        report(waiting, true).outcome(),
        Outcome::Pending(vec!["CDS \"c\" (REQUESTED)".to_owned()])
    );
}

#[test]
fn a_missing_listener_or_a_nack_fails() {
    let missing = vec![status("LDS", "a:80", "DOES_NOT_EXIST")];
    assert!(
        matches!(report(missing, false).outcome(), Outcome::Failed(m) if m.contains("does not exist"))
    );
    let mut nacked = status("CDS", "c", "NACKED");
    nacked.last_error = Some(json!({"message": "cluster c: lb_policy: unsupported"}));
    let r = report(vec![status("LDS", "a:80", "ACKED"), nacked], true);
    assert!(matches!(r.outcome(), Outcome::Failed(m) if m.contains("lb_policy: unsupported")));
}

#[test]
fn stalled_says_whether_the_server_was_silent_unreachable_or_refusing() {
    let waiting = vec!["LDS \"a:80\" (REQUESTED)".to_owned()];
    let mut r = report(vec![status("LDS", "a:80", "REQUESTED")], false);
    r.answered = false;
    let why = r.stalled(2.0, &waiting);
    assert!(
        why.contains("opened the ADS stream, but it sent no response within 2s"),
        "{why}"
    );
    assert!(why.contains("LDS \"a:80\""), "{why}");

    r.answered = true;
    let why = r.stalled(2.0, &waiting);
    assert!(
        why.contains("xds:///a:80 did not resolve within 2s"),
        "{why}"
    );

    r.connected = false;
    r.answered = false;
    r.transport_error = Some("127.0.0.1:1: cannot connect: Connection refused".to_owned());
    r.failure = Some("connection_refused");
    let why = r.stalled(2.0, &waiting);
    assert!(
        why.starts_with("cannot reach the xDS server 127.0.0.1:1: connection refused"),
        "{why}"
    );

    r.failure = Some("stream_refused");
    let why = r.stalled(2.0, &waiting);
    assert!(
        why.contains("accepted the connection but refused the ADS stream"),
        "{why}"
    );

    r.failure = None;
    r.transport_error = None;
    let why = r.stalled(2.0, &waiting);
    assert!(why.contains("no connection within 2s"), "{why}");
}
