//! The whole walkthrough in-process, short: every story must report success (or, for the
//! stories still waiting for their feature, an honest skip). Authorization and tracing
//! must pass: they run now.

use std::time::Duration;

use demo::{Options, Outcome, Reporter, Scenario, SharedBuffer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_story_turns_out_as_expected() -> Result<(), demo::DemoError> {
    let buf = SharedBuffer::default();
    let mut out = Reporter::plain(buf.clone());
    let options = Options::default()
        .with_duration(Duration::from_secs(1))
        .with_orders(60);
    let summary = demo::run(&options, &Scenario::ALL, &mut out, std::future::pending()).await?;
    let output = buf.contents();

    assert!(!summary.interrupted);
    assert_eq!(summary.outcomes.len(), Scenario::ALL.len(), "{output}");
    for (scenario, outcome) in &summary.outcomes {
        match (scenario.needs(), outcome) {
            (None, Outcome::Passed(_)) => {}
            (Some(feature), Outcome::Skipped(needs)) => assert_eq!(feature, needs),
            _ => panic!("{scenario}: {outcome:?}\n{output}"),
        }
        assert!(
            output.contains(&format!("=> {scenario}: {}", outcome.describe())),
            "{output}"
        );
    }
    for scenario in [
        Scenario::Authorization,
        Scenario::Tracing,
        Scenario::ControlPlane,
    ] {
        assert_eq!(scenario.needs(), None);
        let outcome = summary.outcomes.iter().find(|(s, _)| *s == scenario);
        assert!(
            matches!(outcome, Some((_, Outcome::Passed(_)))),
            "{scenario}: {outcome:?}\n{output}"
        );
    }
    assert!(output.contains("PERMISSION_DENIED"), "{output}");
    assert!(output.contains("payment-service server"), "{output}");
    assert!(output.contains("mTLS: STRICT"), "{output}");
    assert!(output.contains("admin: http://127.0.0.1:"), "{output}");
    assert!(summary.all_ok(), "{output}");
    assert!(output.contains("every story ran as expected"), "{output}");
    // Plain output: no terminal escapes.
    assert!(!output.contains('\x1b'), "{output}");
    Ok(())
}

/// The failing-replica and overload stories with the order-service's policy coming from the
/// dev control plane in istiod's sidecar shape (`--control-plane`, `MESH_ISTIO_SHAPE=sidecar`):
/// outlier detection and the connection pool's limits reach it over xDS and are enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_replica_and_overload_pass_with_the_sidecar_shape_from_the_control_plane(
) -> Result<(), demo::DemoError> {
    let buf = SharedBuffer::default();
    let mut out = Reporter::plain(buf.clone());
    let options = Options::default()
        .with_duration(Duration::from_secs(1))
        .with_orders(60)
        .with_control_plane(mesh_tower::IstioShape::Sidecar);
    let scenarios = [Scenario::FailingReplica, Scenario::Overload];
    let summary = demo::run(&options, &scenarios, &mut out, std::future::pending()).await?;
    let output = buf.contents();
    assert!(
        output.contains("over xDS from the dev control plane, istiod's sidecar shape"),
        "{output}"
    );
    assert_eq!(summary.outcomes.len(), 2, "{output}");
    for (scenario, outcome) in &summary.outcomes {
        assert!(
            matches!(outcome, Outcome::Passed(_)),
            "{scenario}: {outcome:?}\n{output}"
        );
    }
    assert!(output.contains("shed by the breaker"), "{output}");
    assert!(output.contains("ejected"), "{output}");
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_walkthrough_and_every_service() -> Result<(), demo::DemoError> {
    let buf = SharedBuffer::default();
    let mut out = Reporter::plain(buf.clone());
    // Far more work than 300 ms allows, so the shutdown always comes first.
    let options = Options::default()
        .with_duration(Duration::from_secs(30))
        .with_orders(100_000);
    let stop = tokio::time::sleep(Duration::from_millis(300));
    let summary = demo::run(&options, &[Scenario::Canary], &mut out, stop).await?;
    assert!(summary.interrupted, "{}", buf.contents());
    assert!(buf
        .contents()
        .contains("interrupted: stopping every service"));
    Ok(())
}
