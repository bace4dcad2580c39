//! The cost of a full update (1,000 clusters, 10,000 endpoints) and of a single endpoint
//! change, through the core (decode, validate, translate) and the snapshot assembler.
//! Prints its measurements; asserts only what must hold whatever the machine.
//! Run with `cargo test -p mesh-xds-client --test scale -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::route::v3::route_action;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::ads::{AdsConfig, AdsCore};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::{to_any, XdsType};
use mesh_xds_client::snapshot::SnapshotAssembler;
use mesh_xds_client::testing::fixtures::*;

const CLUSTERS: usize = 1_000;
const ENDPOINTS_PER_CLUSTER: usize = 10;

fn response(t: XdsType, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: version.into(),
        ..DiscoveryResponse::default()
    }
}

fn endpoints_of(i: usize, shift: usize) -> Any {
    let addrs: Vec<SocketAddr> = (0..ENDPOINTS_PER_CLUSTER)
        .map(|e| {
            SocketAddr::from((
                [10, (i / 250) as u8, (i % 250) as u8, (e + shift) as u8],
                8080,
            ))
        })
        .collect();
    endpoints(&format!("c{i}"), &addrs)
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
