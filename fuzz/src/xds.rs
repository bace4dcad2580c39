//! Harnesses for the xDS resources and the bootstrap: bytes in, through the same public
//! entry points the ADS client uses, and the rule checked is the one of DESIGN.md: a
//! resource is accepted or rejected with a field path, never a panic. Accepted clusters
//! and endpoints also go through the load balancers the outbound side builds from them.
//!
//! Shared by the fuzz targets (`fuzz_targets/xds_*.rs`, `bootstrap_json.rs`) and by the
//! stable smoke test `mesh-xds-client/tests/fuzz_seeds.rs`, which includes this file.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_core::lb::{priority_load, LbHost, LbPolicy, Picker};
use mesh_xds_client::bootstrap::{Bootstrap, BootstrapSource};
use mesh_xds_client::resource::{
    ClusterResource, EndpointsResource, ListenerResource, ResourceType, RouteConfigurationResource,
};
use mesh_xds_client::translate;
use prost::Message;
use rand::rngs::SmallRng;
use rand::SeedableRng;

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

/// A host for the load balancers, as the outbound side keeps one per endpoint.
struct Host {
    key: String,
    weight: u32,
    available: bool,
}

impl LbHost for Host {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        u64::from(self.weight % 7)
    }
    fn is_available(&self) -> bool {
        self.available
    }
}

/// Builds the picker the outbound side builds for `hosts` under `policy`, and picks.
fn pick_over(policy: &LbPolicy, hosts: &[Host]) {
    let picker = Picker::build(policy, hosts, |h| h.key.clone());
    let mut rng = SmallRng::seed_from_u64(hosts.len() as u64);
    for hash in [None, Some(0), Some(u64::MAX), Some(0x9e37_79b9_7f4a_7c15)] {
        if let Some(i) = picker.pick(hosts, hash, &mut rng) {
            assert!(i < hosts.len(), "picked host {i} of {}", hosts.len());
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
    if let Some(c) = validate::<ClusterResource>(data) {
        // An accepted policy must be one the pickers can be built from.
        let lb = &c.model.lb;
        assert_eq!(
            lb.validate(),
            Ok(()),
            "accepted cluster with a bad LB policy"
        );
        let hosts: Vec<Host> = [1, 5, u32::MAX, 0]
            .into_iter()
            .enumerate()
            .map(|(i, weight)| Host {
                key: format!("10.0.0.{i}:80"),
                weight,
                available: i != 1,
            })
            .collect();
        pick_over(lb, &hosts);
    }
    // The translation alone, also on what validation would have stopped earlier.
    if let Ok(c) = Cluster::decode(data) {
        if let Err(e) = translate::cluster(&c, Some("eds")) {
            assert!(!e.field.is_empty(), "rejection without a field path: {e}");
        }
    }
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment` bytes.
pub fn cluster_load_assignment(data: &[u8]) {
    if let Some(e) = validate::<EndpointsResource>(data) {
        let cla = &e.model;
        let mut levels: BTreeMap<u32, Vec<Host>> = BTreeMap::new();
        for (locality, endpoint) in cla.endpoints() {
            levels.entry(locality.priority).or_default().push(Host {
                key: endpoint.address.to_string(),
                weight: endpoint.weight,
                available: endpoint.health.is_usable(),
            });
        }
        let health: Vec<(u32, u32)> = levels
            .values()
            .map(|hosts| {
                let up = hosts.iter().filter(|h| h.available).count();
                (count(up), count(hosts.len()))
            })
            .collect();
        let load = priority_load(&health);
        assert!(
            load.is_empty() || load.iter().sum::<u32>() == 100,
            "{load:?}"
        );
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::least_request(),
            LbPolicy::ring_hash(),
            LbPolicy::Random,
        ];
        for hosts in levels.values() {
            for policy in &policies {
                pick_over(policy, hosts);
            }
        }
    }
    if let Ok(cla) = ClusterLoadAssignment::decode(data) {
        if let Err(e) = translate::cluster_load_assignment(&cla) {
            assert!(!e.field.is_empty(), "rejection without a field path: {e}");
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
