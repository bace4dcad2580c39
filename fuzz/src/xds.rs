//! Harnesses for the xDS resources and the bootstrap: bytes in, through the same public
//! entry points the ADS client uses, and the rule checked is the one of DESIGN.md: a
//! resource is accepted or rejected with a field path, never a panic.
//!
//! Shared by the fuzz targets (`fuzz_targets/xds_*.rs`, `bootstrap_json.rs`) and by the
//! stable smoke test `mesh-xds-client/tests/fuzz_seeds.rs`, which includes this file.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource};
use mesh_xds_client::resource::{
    ClusterResource, EndpointsResource, ListenerResource, ResourceType, RouteConfigurationResource,
};
use mesh_xds_client::translate;
use prost::Message;

/// Decodes `data` as `T`'s proto and validates it (validation translates it into the
/// model). An accepted resource is returned; a rejection must name a field.
fn validate<T: ResourceType>(data: &[u8]) -> Option<T> {
    let message = T::Message::decode(data).ok()?;
    match T::validate(message) {
        Ok(valid) => {
            let _ = valid.references();
            Some(valid)
        }
        Err(e) => {
            assert!(!e.field.is_empty(), "rejection without a field path: {e}");
            None
        }
    }
}

/// A few requests to match against an accepted route configuration.
fn match_requests(rc: &mesh_core::route::RouteConfig) {
    let mut headers = http::HeaderMap::new();
    headers.insert("end-user", http::HeaderValue::from_static("beta-tester"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    for authority in ["payment-service:8080", "a.b.example.com", ""] {
        for path in ["/", "/pay?x=1", "/pkg.Service/Method"] {
            let _ = rc.route_for(authority, path, &headers, 0);
            let _ = rc.route_for(authority, path, &http::HeaderMap::new(), u64::MAX);
        }
    }
}

/// `envoy.config.listener.v3.Listener` bytes.
pub fn listener(data: &[u8]) {
    let _ = Listener::decode(data).map(|l| <ListenerResource as ResourceType>::name(&l).len());
    if let Some(l) = validate::<ListenerResource>(data) {
        if let Ok(translate::ListenerRoutes::Inline(rc)) = translate::listener_routes(&l) {
            match_requests(&rc);
        }
    }
}

/// `envoy.config.route.v3.RouteConfiguration` bytes.
pub fn route_configuration(data: &[u8]) {
    if let Some(rc) = validate::<RouteConfigurationResource>(data) {
        match_requests(&rc.model);
        // The standalone translation agrees with what validation kept.
        let again = translate::route_config(&rc.route_configuration)
            .unwrap_or_else(|e| panic!("validated, then rejected by route_config: {e}"));
        assert_eq!(again, *rc.model, "two translations of one message differ");
    }
    let _ = RouteConfiguration::decode(data).map(|rc| translate::route_config(&rc));
}

/// `envoy.config.cluster.v3.Cluster` bytes.
pub fn cluster(data: &[u8]) {
    let _ = validate::<ClusterResource>(data);
    // The translation alone, also on what validation would have stopped earlier.
    if let Ok(c) = Cluster::decode(data) {
        if let Err(e) = translate::cluster(&c, Some("eds")) {
            assert!(!e.field.is_empty(), "rejection without a field path: {e}");
        }
    }
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment` bytes.
pub fn cluster_load_assignment(data: &[u8]) {
    let _ = validate::<EndpointsResource>(data);
    if let Ok(cla) = ClusterLoadAssignment::decode(data) {
        if let Err(e) = translate::cluster_load_assignment(&cla) {
            assert!(!e.field.is_empty(), "rejection without a field path: {e}");
        }
    }
}

/// gRPC xDS bootstrap JSON (text; invalid UTF-8 is passed on lossily, as a file would
/// not be read at all).
pub fn bootstrap_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = BootstrapSource::Inline;
    if let Ok(b) = Bootstrap::from_json(&text, source) {
        let _ = b.client_listener_name("payment-service:8080");
        let _ = b.node.to_proto();
        let _ = format!("{b:?}");
    }
}
