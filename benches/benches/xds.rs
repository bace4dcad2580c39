//! Applying xDS updates at scale: a full state-of-the-world update of 1,000 clusters and
//! 10,000 endpoints (decode, validate, translate every resource in the ADS core, then
//! assemble the consistent snapshot the layers read), and a single endpoint change (a
//! state-of-the-world EDS response re-sends the unchanged assignments too; over delta xDS
//! only the changed one is sent).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use envoy_types::pb::envoy::config::route::v3::route_action;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::ads::{AdsConfig, AdsCore, Protocol};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::{to_any, XdsType};
use mesh_xds_client::snapshot::SnapshotAssembler;
use mesh_xds_client::testing::fixtures::{
    cluster_eds, delta_response, listener_rds, prefix_route, route_config_with, scale_endpoints,
    sotw_response,
};

const CLUSTERS: usize = 1_000;
const ENDPOINTS_PER_CLUSTER: usize = 10;

fn response(t: XdsType, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
    sotw_response(t, version, resources)
}

/// Cluster `i`'s ten endpoints; `shift` moves them (a changed assignment).
fn endpoints_of(i: usize, shift: usize) -> Any {
    scale_endpoints(i, ENDPOINTS_PER_CLUSTER, shift)
}

/// LDS, RDS, CDS and EDS responses for one listener routing to every cluster.
fn full_update() -> [DiscoveryResponse; 4] {
    let routes = (0..CLUSTERS)
        .map(|i| {
            prefix_route(
                &format!("/c{i}/"),
                route_action::ClusterSpecifier::Cluster(format!("c{i}")),
            )
        })
        .collect();
    [
        response(XdsType::Listener, "1", vec![listener_rds("svc", "routes")]),
        response(
            XdsType::RouteConfiguration,
            "1",
            vec![to_any(&route_config_with("routes", routes))],
        ),
        response(
            XdsType::Cluster,
            "1",
            (0..CLUSTERS)
                .map(|i| cluster_eds(&format!("c{i}"), None))
                .collect(),
        ),
        response(
            XdsType::ClusterLoadAssignment,
            "1",
            (0..CLUSTERS).map(|i| endpoints_of(i, 1)).collect(),
        ),
    ]
}

fn subscribed_core() -> AdsCore {
    let now = Instant::now();
    let mut core = AdsCore::new(NodeConfig::new("bench").to_proto(), AdsConfig::default());
    core.add_target("svc", now);
    core.on_stream_start(now);
    while core.poll_request().is_some() {}
    core
}

/// Applies `responses` and takes what the core queued (the ACKs, the watchers' events),
/// as the transport does.
fn apply(core: &mut AdsCore, responses: impl IntoIterator<Item = DiscoveryResponse>) {
    for r in responses {
        match core.handle_response(r, Instant::now()) {
            Ok(outcome) if outcome.acked => {}
            other => panic!("the update was not accepted: {other:?}"),
        }
        while core.poll_request().is_some() {}
        while core.poll_event().is_some() {}
    }
}

fn bench(c: &mut Criterion) {
    let full = full_update();
    let mut group = c.benchmark_group("xds");
    group.sample_size(10);

    group.bench_function(
        "full update, 1,000 clusters + 10,000 endpoints: apply",
        |b| {
            b.iter_batched(
                || (subscribed_core(), full.clone()),
                |(mut core, responses)| {
                    apply(&mut core, responses);
                    core
                },
                BatchSize::PerIteration,
            );
        },
    );

    let mut core = subscribed_core();
    apply(&mut core, full.clone());
    let mut assembler = SnapshotAssembler::new("%s");
    group.bench_function("full update: assemble the snapshot", |b| {
        b.iter(|| {
            let mut fresh = SnapshotAssembler::new("%s");
            black_box(fresh.assemble(core.targets(), core.cache(), "1"))
        });
    });
    if assembler
        .assemble(core.targets(), core.cache(), "1")
        .is_err()
    {
        panic!("the full update does not assemble");
    }

    // One endpoint of one cluster moves, back and forth: every iteration is a change.
    let changed: [Vec<Any>; 2] = [1, 2].map(|shift| {
        (0..CLUSTERS)
            .map(|i| endpoints_of(i, if i == 7 { shift } else { 1 }))
            .collect()
    });
    let mut version = 1u64;
    group.bench_function("single endpoint change: apply + assemble", |b| {
        b.iter_batched(
            || {
                version += 1;
                let v = version.to_string();
                let resources = changed[usize::from(version.is_multiple_of(2))].clone();
                (
                    v.clone(),
                    response(XdsType::ClusterLoadAssignment, &v, resources),
                )
            },
            |(v, eds)| {
                apply(&mut core, [eds]);
                black_box(assembler.assemble(core.targets(), core.cache(), &v))
            },
            BatchSize::PerIteration,
        );
    });

    // The same change over delta xDS: one assignment on the wire instead of 1,000.
    let mut delta_core = AdsCore::new(
        NodeConfig::new("bench").to_proto(),
        AdsConfig::default().with_protocol(Protocol::Delta),
    );
    let now = Instant::now();
    delta_core.add_target("svc", now);
    delta_core.on_stream_start(now);
    for (n, r) in full.iter().enumerate() {
        let named = r
            .resources
            .iter()
            .enumerate()
            .map(|(i, any)| (resource_name(r, i), any.clone()))
            .collect();
        apply_delta(
            &mut delta_core,
            delta(r.type_url.as_str(), &n.to_string(), named),
        );
    }
    let mut delta_assembler = SnapshotAssembler::new("%s");
    let mut nonce = 10u64;
    group.bench_function("single endpoint change over delta: apply + assemble", |b| {
        b.iter_batched(
            || {
                nonce += 1;
                let shift = if nonce.is_multiple_of(2) { 2 } else { 1 };
                let v = nonce.to_string();
                let one = delta(
                    XdsType::ClusterLoadAssignment.type_url(),
                    &v,
                    vec![("c7".to_owned(), endpoints_of(7, shift))],
                );
                (v, one)
            },
            |(v, one)| {
                apply_delta(&mut delta_core, one);
                black_box(delta_assembler.assemble(delta_core.targets(), delta_core.cache(), &v))
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// The name of the `i`th resource of a state-of-the-world response built by this file.
fn resource_name(r: &DiscoveryResponse, i: usize) -> String {
    match XdsType::from_type_url(&r.type_url) {
        Some(XdsType::Listener) => "svc".to_owned(),
        Some(XdsType::RouteConfiguration) => "routes".to_owned(),
        _ => format!("c{i}"),
    }
}

fn delta(type_url: &str, nonce: &str, resources: Vec<(String, Any)>) -> DeltaDiscoveryResponse {
    match XdsType::from_type_url(type_url) {
        Some(t) => delta_response(t, nonce, resources),
        None => panic!("not an xDS type: {type_url}"),
    }
}

fn apply_delta(core: &mut AdsCore, response: DeltaDiscoveryResponse) {
    match core.handle_delta_response(response, Instant::now()) {
        Ok(outcome) if outcome.acked => {}
        other => panic!("the delta update was not accepted: {other:?}"),
    }
    while core.poll_delta_request().is_some() {}
    while core.poll_event().is_some() {}
}

criterion_group!(benches, bench);
criterion_main!(benches);
