//! Every resource inside Istio's config dumps (`../shared/testdata/istio/*.json`) goes
//! through validation and translation: accepted, or rejected with a field path; no panic.
//!
//! The dumps are proto3 JSON with resources as `google.protobuf.Any`. envoy-types has no
//! serde support, so the test compiles the Envoy protos that envoy-types ships (in pure
//! Rust, with protox: no `protoc`), reads the JSON with prost-reflect, and transcodes to
//! the envoy-types messages. `Any`s whose type no public proto defines (Istio's private
//! extensions) are kept as an `Any` with their type URL and no bytes, which is what the
//! client would see from a control plane using them.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod istio_json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use istio_json::{decode, pool, resources};
use mesh_xds_client::resource::{
    ClusterResource, EndpointsResource, FieldError, ListenerResource, ResourceType,
    RouteConfigurationResource,
};
use serde_json::Value as Json;

fn outcome<T: ResourceType>(message: T::Message) -> Result<String, FieldError> {
    let name = T::name(&message).to_owned();
    T::validate(message).map(|_| name)
}

#[test]
fn every_resource_of_the_istio_dumps_is_accepted_or_rejected_with_a_field() {
    let pool = pool();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/istio");
    let dir = if dir.is_dir() {
        dir
    } else {
        PathBuf::from("/work/shared/testdata/istio")
    };
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut rejections = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Json = serde_json::from_str(&text).unwrap();
        if json.get("configs").is_none() {
            continue; // a bootstrap, not a dump
        }
        files += 1;
        let mut found = Vec::new();
        resources(&json, &mut found);
        for (type_name, resource) in found {
            let result = match type_name.as_str() {
                "envoy.config.listener.v3.Listener" => {
                    outcome::<ListenerResource>(decode::<Listener>(&pool, &type_name, resource))
                }
                "envoy.config.route.v3.RouteConfiguration" => {
                    outcome::<RouteConfigurationResource>(decode::<RouteConfiguration>(
                        &pool, &type_name, resource,
                    ))
                }
                "envoy.config.cluster.v3.Cluster" => {
                    outcome::<ClusterResource>(decode::<Cluster>(&pool, &type_name, resource))
                }
                _ => outcome::<EndpointsResource>(decode::<ClusterLoadAssignment>(
                    &pool, &type_name, resource,
                )),
            };
            let counts = tally.entry(type_name.clone()).or_default();
            match result {
                Ok(_) => counts.0 += 1,
                Err(e) => {
                    assert!(
                        !e.field.is_empty(),
                        "{type_name}: rejection without a field: {e}"
                    );
                    counts.1 += 1;
                    rejections.push(format!("{type_name}: {e}"));
                }
            }
        }
    }
    eprintln!("(accepted, rejected) by type: {tally:#?}");
    eprintln!("rejections:\n{}", rejections.join("\n"));
    assert_eq!(files, 3);
    let total: usize = tally.values().map(|(a, r)| a + r).sum();
    assert!(total >= 45, "found only {total} resources");
    // Endpoint assignments are accepted unless an endpoint is not an IP socket address
    // (Istio's internal addresses and the agent's Unix pipes, which gRPC cannot dial).
    let (eds_ok, _) = tally["envoy.config.endpoint.v3.ClusterLoadAssignment"];
    assert!(eds_ok >= 36, "{tally:#?}");
    for r in rejections
        .iter()
        .filter(|r| r.contains("ClusterLoadAssignment"))
    {
        assert!(
            r.contains("endpoint.address.socket_address: missing"),
            "{r}"
        );
    }
    // The routes with retry policies and the clusters with circuit breakers are accepted.
    assert_eq!(
        tally["envoy.config.route.v3.RouteConfiguration"].1, 0,
        "{rejections:#?}"
    );
    assert!(
        tally["envoy.config.cluster.v3.Cluster"].0 >= 1,
        "{tally:#?}"
    );
    // Sidecar listeners carry filters a proxyless client does not run: rejected by name.
    for r in rejections.iter().filter(|r| r.contains("Listener")) {
        assert!(r.contains("http_filters[") || r.contains("filters"), "{r}");
    }
}
