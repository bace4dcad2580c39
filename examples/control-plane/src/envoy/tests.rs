//! The Envoy resources, read back by mesh-xds-client's translation, give the model they
//! were made from.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment as PbCla;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_core::policy_file::PolicyFile;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::translate;
use prost::Message;

use super::Resources;

fn seed_guide() -> mesh_core::Snapshot {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../mesh-core/tests/data/seed-guide-policy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = PolicyFile::parse(&text, "seed-guide").unwrap();
    file.to_snapshot("seed-guide").unwrap()
}

#[test]
fn seed_guide_round_trips_through_envoy_protos() {
    let model = seed_guide();
    let res = Resources::from_snapshot(&model);
    assert_eq!(
        res.count(XdsType::Listener),
        model.outbound_listeners().count()
    );
    assert!(res.by_type[&XdsType::Listener].contains_key("reviews:9080"));
    assert!(res.by_type[&XdsType::Listener]
        .contains_key("payment-service.default.svc.cluster.local:8080"));

    for (name, any) in &res.by_type[&XdsType::Listener] {
        let l = Listener::decode(any.value.as_slice()).unwrap();
        assert_eq!(&l.name, name);
        assert!(l.api_listener.is_some());
    }
    for rc in model.route_configs() {
        let any = &res.by_type[&XdsType::RouteConfiguration][rc.name()];
        let pb = RouteConfiguration::decode(any.value.as_slice()).unwrap();
        let back = translate::route_config(&pb).unwrap();
        assert_eq!(&back, rc.as_ref(), "route config {}", rc.name());
        // As istiod writes them: upstream requests carry their attempt count.
        assert!(
            back.virtual_hosts()
                .iter()
                .all(|vh| vh.includes_request_attempt_count()),
            "route config {}",
            rc.name()
        );
    }
    for c in model.clusters() {
        let any = &res.by_type[&XdsType::Cluster][c.name()];
        let pb = PbCluster::decode(any.value.as_slice()).unwrap();
        let back = translate::cluster(&pb, Some(c.eds_name())).unwrap();
        assert_eq!(&back, c.as_ref(), "cluster {}", c.name());
        let cla = model.endpoints_of(c).unwrap();
        let any = &res.by_type[&XdsType::ClusterLoadAssignment][&cla.cluster_name];
        let pb = PbCla::decode(any.value.as_slice()).unwrap();
        let back = translate::cluster_load_assignment(&pb).unwrap();
        let flat = |x: &mesh_core::cluster::ClusterLoadAssignment| {
            x.endpoints()
                .map(|(_, e)| (e.address, e.weight, e.health))
                .collect::<Vec<_>>()
        };
        assert_eq!(flat(&back), flat(cla), "endpoints {}", cla.cluster_name);
    }
}

#[test]
fn fault_injection_is_sent_as_the_fault_filters_per_route_config() {
    let text = r#"
services:
  - name: ratings
    ports: [{ port: 9080, name: http }]
    endpoints: [{ address: "127.0.0.1:9080" }]
virtualServices:
  - spec:
      hosts: [ratings]
      http:
        - fault:
            delay: { percentage: { value: 10 }, fixedDelay: 5s }
            abort: { percentage: { value: 0.1 }, httpStatus: 400 }
          route:
            - destination: { host: ratings }
"#;
    let model = PolicyFile::parse(text, "f.yaml")
        .unwrap()
        .to_snapshot("f.yaml")
        .unwrap();
    let rc = model.route_configs().next().unwrap();
    let want = rc.virtual_hosts()[0].routes()[0].fault().unwrap().clone();
    let res = Resources::from_snapshot(&model);
    let any = &res.by_type[&XdsType::RouteConfiguration][rc.name()];
    let pb = RouteConfiguration::decode(any.value.as_slice()).unwrap();
    let (_, overrides) = translate::route_config_parts(&pb).unwrap();
    let got = overrides[0][0][super::FAULT_FILTER].clone().unwrap();
    assert_eq!(got, want);
}
