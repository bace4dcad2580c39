use super::*;
use crate::route::{ForwardAction, Route, RouteMatch, VirtualHost};

fn rc(name: &str, cluster: &str) -> RouteConfig {
    RouteConfig::new(
        name,
        vec![VirtualHost::new(
            "vh",
            vec!["*".into()],
            vec![Route::new(
                "r",
                RouteMatch::default(),
                RouteAction::Forward(ForwardAction::to_cluster(cluster)),
            )],
        )],
    )
}

#[test]
fn build_links_listeners_to_route_configs() {
    let snap = Snapshot::builder()
        .listener("payment-service:8080", "rc")
        .route_config(rc("rc", "payment"))
        .cluster(Cluster::new("payment"))
        .build();
    let l = snap.outbound("payment-service:8080").expect("listener");
    assert_eq!(l.route_config().map(|r| r.name()), Some("rc"));
    assert_eq!(snap.validate(), Ok(()));
}

#[test]
fn validate_names_dangling_references() {
    let snap = Snapshot::builder()
        .listener("a:1", "missing-rc")
        .listener("b:1", "rc")
        .route_config(rc("rc", "nope"))
        .build();
    let errors = snap.validate().expect_err("dangling");
    assert_eq!(errors.len(), 2);
    assert!(errors[0].to_string().contains("missing-rc"));
    assert!(errors[1].to_string().contains("\"nope\""));
}

#[test]
fn to_builder_keeps_everything() {
    let snap = Snapshot::builder()
        .version("1")
        .listener("a:1", "rc")
        .route_config(rc("rc", "c"))
        .cluster(Cluster::new("c"))
        .endpoints(ClusterLoadAssignment::from_endpoints("c", vec![]))
        .build();
    let again = snap.to_builder().version("2").build();
    assert_eq!(again.version(), "2");
    assert!(again
        .outbound("a:1")
        .and_then(|l| l.route_config())
        .is_some());
    assert!(again.endpoints("c").is_some());
}
