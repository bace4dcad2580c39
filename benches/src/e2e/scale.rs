//! Scale: the mesh's resident memory and update time with 10, 1,000 and 10,000
//! endpoints. Each size is probed in a fresh process (`e2e scale-probe N`), so the memory
//! of one size does not linger into the next.
//!
//! The probe builds a mesh whose one cluster has one endpoint and routes a request through
//! it (the baseline: runtime, client, pools), then publishes a snapshot with N endpoints
//! and routes one request (the cluster's LB state is rebuilt for the N endpoints on the
//! first request that sees them), then publishes an update changing one endpoint (an EDS
//! push) and routes one more. The endpoints are loopback addresses on a closed port: the
//! request is refused at once, no traffic leaves the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Endpoint};
use mesh_core::outlier::OutlierConfig;
use mesh_core::route::{ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost};
use mesh_core::Snapshot;
use mesh_tower::Mesh;
use tower::ServiceExt;

use super::procs::status_kb_of;
use super::BoxError;

/// One size's measurements.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ScaleResult {
    /// Endpoints in the cluster.
    pub endpoints: usize,
    /// Resident memory with one endpoint (the baseline), KiB.
    pub rss_base_kb: u64,
    /// Resident memory with N endpoints, after a request used them, KiB.
    pub rss_kb: u64,
    /// `rss_kb - rss_base_kb`.
    pub rss_growth_kb: u64,
    /// Building the N-endpoint snapshot, microseconds.
    pub build_us: u64,
    /// Building, publishing and routing the first request on it, microseconds.
    pub apply_us: u64,
    /// An update changing one of the N endpoints: build, publish, first request, microseconds.
    pub update_us: u64,
}

/// The `i`-th endpoint: 127.1.0.1 onwards, on a closed port.
fn endpoint(i: usize, port: u16) -> Endpoint {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + i);
    Endpoint::new(SocketAddr::from((ip, port)))
}

fn snapshot(n: usize, changed: Option<usize>) -> Snapshot {
    let mut cluster = Cluster::new("svc");
    cluster.outlier_detection = Some(OutlierConfig::new());
    cluster.connect_timeout = Duration::from_millis(200);
    let mut action = ForwardAction::to_cluster("svc");
    action.timeout = Some(Duration::from_secs(1));
    let routes = RouteConfig::new(
        "svc:80",
        vec![VirtualHost::new(
            "svc",
            vec!["svc:80".into()],
            vec![Route::new(
                "all",
                RouteMatch::default(),
                RouteAction::Forward(action),
            )],
        )],
    );
    let endpoints = (0..n)
        .map(|i| endpoint(i, if Some(i) == changed { 10 } else { 9 }))
        .collect();
    Snapshot::builder()
        .listener("svc:80", "svc:80")
        .route_config(routes)
        .cluster(cluster)
        .endpoints(ClusterLoadAssignment::from_endpoints("svc", endpoints))
        .build()
}

async fn route_one(mesh: &Mesh) {
    let client = mesh.http_client::<Full<Bytes>>();
    if let Ok(req) = http::Request::get("http://svc:80/").body(Full::new(Bytes::new())) {
        // Refused by the closed port: only the routing and the LB state matter here.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.oneshot(req)).await;
    }
}

fn rss_kb() -> u64 {
    status_kb_of("/proc/self/status", "VmRSS:")
}

/// Measures one size in this process.
pub async fn probe(n: usize) -> Result<ScaleResult, BoxError> {
    let mesh = Mesh::builder().snapshot(snapshot(1, None)).build()?;
    route_one(&mesh).await;
    route_one(&mesh).await;
    let rss_base_kb = rss_kb();

    let start = Instant::now();
    let full = snapshot(n, None);
    let build_us = start.elapsed().as_micros() as u64;
    mesh.policy().publish(full);
    route_one(&mesh).await;
    let apply_us = start.elapsed().as_micros() as u64;
    let rss_kb = rss_kb();

    let start = Instant::now();
    mesh.policy().publish(snapshot(n, Some(n / 2)));
    route_one(&mesh).await;
    let update_us = start.elapsed().as_micros() as u64;

    Ok(ScaleResult {
        endpoints: n,
        rss_base_kb,
        rss_kb,
        rss_growth_kb: rss_kb.saturating_sub(rss_base_kb),
        build_us,
        apply_us,
        update_us,
    })
}
