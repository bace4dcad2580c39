//! The cost of a full update (1,000 clusters, 10,000 endpoints) and of a single endpoint
//! change, through the core (decode, validate, translate) and the snapshot assembler.
//! Prints its measurements; asserts only what must hold whatever the machine.
//! Run with `cargo test -p mesh-xds-client --test scale -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::route::v3::route_action;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::ads::{AdsConfig, AdsCore, Protocol};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::{to_any, XdsType};
use mesh_xds_client::snapshot::SnapshotAssembler;
use mesh_xds_client::testing::fixtures::*;
use prost::Message;

const CLUSTERS: usize = 1_000;
const ENDPOINTS_PER_CLUSTER: usize = 10;

fn response(t: XdsType, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
    sotw_response(t, version, resources)
}

fn endpoints_of(i: usize, shift: usize) -> Any {
    scale_endpoints(i, ENDPOINTS_PER_CLUSTER, shift)
}

#[test]
#[ignore = "a measurement, not a check; run it on purpose"]
fn full_update_and_single_endpoint_change() {
    let now = Instant::now();
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), AdsConfig::default());
    core.add_target("svc", now);
    core.on_stream_start(now);
    let routes = (0..CLUSTERS)
        .map(|i| {
            prefix_route(
                &format!("/c{i}/"),
                route_action::ClusterSpecifier::Cluster(format!("c{i}")),
            )
        })
        .collect();
    let lds = response(XdsType::Listener, "1", vec![listener_rds("svc", "routes")]);
    let rds = response(
        XdsType::RouteConfiguration,
        "1",
        vec![to_any(&route_config_with("routes", routes))],
    );
    let cds = response(
        XdsType::Cluster,
        "1",
        (0..CLUSTERS)
            .map(|i| cluster_eds(&format!("c{i}"), None))
            .collect(),
    );
    let eds = response(
        XdsType::ClusterLoadAssignment,
        "1",
        (0..CLUSTERS).map(|i| endpoints_of(i, 1)).collect(),
    );

    let t = Instant::now();
    for r in [lds, rds, cds, eds] {
        assert!(core.handle_response(r, Instant::now()).unwrap().acked);
    }
    let apply = t.elapsed();
    let mut assembler = SnapshotAssembler::new("%s");
    let t = Instant::now();
    let first = assembler
        .assemble(core.targets(), core.cache(), "1")
        .unwrap();
    let assemble = t.elapsed();
    assert_eq!(first.clusters().count(), CLUSTERS);

    // One endpoint of one cluster changes: a state-of-the-world EDS response carries the
    // unchanged ones too, so that is what is measured.
    let mut changed: Vec<Any> = (0..CLUSTERS).map(|i| endpoints_of(i, 1)).collect();
    changed[7] = endpoints_of(7, 2);
    let t = Instant::now();
    assert!(
        core.handle_response(
            response(XdsType::ClusterLoadAssignment, "2", changed),
            Instant::now()
        )
        .unwrap()
        .acked
    );
    let apply_one = t.elapsed();
    let t = Instant::now();
    let second = assembler
        .assemble(core.targets(), core.cache(), "2")
        .unwrap();
    let assemble_one = t.elapsed();
    assert!(Arc::ptr_eq(
        first.cluster("c3").unwrap(),
        second.cluster("c3").unwrap()
    ));
    assert_ne!(first.endpoints("c7"), second.endpoints("c7"));

    eprintln!(
        "{CLUSTERS} clusters, {} endpoints: full update applied in {apply:?}, snapshot assembled in {assemble:?}; \
         one endpoint changed: applied in {apply_one:?}, snapshot assembled in {assemble_one:?}",
        CLUSTERS * ENDPOINTS_PER_CLUSTER
    );
}

fn delta(t: XdsType, nonce: &str, resources: Vec<(String, Any)>) -> DeltaDiscoveryResponse {
    delta_response(t, nonce, resources)
}

#[test]
#[ignore = "a measurement, not a check; run it on purpose"]
fn single_endpoint_change_state_of_the_world_vs_delta() {
    let routes: Vec<_> = (0..CLUSTERS)
        .map(|i| {
            prefix_route(
                &format!("/c{i}/"),
                route_action::ClusterSpecifier::Cluster(format!("c{i}")),
            )
        })
        .collect();
    let named = |f: &dyn Fn(usize) -> Any| -> Vec<(String, Any)> {
        (0..CLUSTERS).map(|i| (format!("c{i}"), f(i))).collect()
    };
    let now = Instant::now();
    let config = AdsConfig::default().with_protocol(Protocol::Delta);
    let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), config);
    core.add_target("svc", now);
    core.on_stream_start(now);
    let steps = [
        delta(
            XdsType::Listener,
            "1",
            vec![("svc".into(), listener_rds("svc", "routes"))],
        ),
        delta(
            XdsType::RouteConfiguration,
            "2",
            vec![(
                "routes".into(),
                to_any(&route_config_with("routes", routes)),
            )],
        ),
        delta(
            XdsType::Cluster,
            "3",
            named(&|i| cluster_eds(&format!("c{i}"), None)),
        ),
        delta(
            XdsType::ClusterLoadAssignment,
            "4",
            named(&|i| endpoints_of(i, 1)),
        ),
    ];
    for r in steps {
        assert!(core.handle_delta_response(r, Instant::now()).unwrap().acked);
    }

    let sotw_bytes = {
        let mut all: Vec<Any> = (0..CLUSTERS).map(|i| endpoints_of(i, 1)).collect();
        all[7] = endpoints_of(7, 2);
        response(XdsType::ClusterLoadAssignment, "2", all).encoded_len()
    };
    let one = delta(
        XdsType::ClusterLoadAssignment,
        "5",
        vec![("c7".into(), endpoints_of(7, 2))],
    );
    let delta_bytes = one.encoded_len();
    let t = Instant::now();
    let outcome = core.handle_delta_response(one, Instant::now()).unwrap();
    let apply_one = t.elapsed();
    assert!(outcome.acked);
    assert_eq!(outcome.accepted, ["c7"]);
    assert!(delta_bytes * 100 < sotw_bytes);
    eprintln!(
        "{CLUSTERS} clusters: one endpoint changed: state-of-the-world EDS response {sotw_bytes} bytes, \
         delta response {delta_bytes} bytes, applied in {apply_one:?}"
    );
}
