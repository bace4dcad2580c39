//! The Client Status Discovery Service (gRFC A40): what this client has been told, per
//! resource, served over gRPC so that operator tools (`istioctl x proxy-status`-like
//! tools, `grpcdebug`, or any CSDS client) can ask a running service.
//!
//! Each subscribed resource becomes one `GenericXdsConfig`: its type URL and name, the
//! version of the response that brought it, the resource itself (unless the request sets
//! `exclude_resource_contents`), when it was last updated, its status (`REQUESTED`,
//! `DOES_NOT_EXIST`, `ACKED`, `NACKED`) and, after a rejected update, the error and the
//! version that was rejected.
//!
//! ```no_run
//! # fn demo(client: &mesh_xds_client::transport::XdsClient, node: envoy_types::pb::envoy::config::core::v3::Node) {
//! use mesh_xds_client::csds::CsdsService;
//! let csds = CsdsService::new(node, client.watch());
//! // Serve `csds.into_server()` with tonic next to the application's services.
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse,
};
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use prost::Message;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};

use crate::ads::{ResourceEntry, ResourceState};
use crate::resource::{Resource, XdsType};
use crate::transport::ClientView;

/// The CSDS gRPC service of one xDS client.
#[derive(Debug, Clone)]
pub struct CsdsService {
    node: Arc<Node>,
    view: watch::Receiver<Arc<ClientView>>,
}

impl CsdsService {
    /// Serves the status `view` shows (from [`XdsClient::watch`](crate::transport::XdsClient::watch))
    /// for the client identified by `node`.
    pub fn new(node: Node, view: watch::Receiver<Arc<ClientView>>) -> Self {
        Self {
            node: Arc::new(node),
            view,
        }
    }

    /// The tonic service, to add to a server's routes.
    pub fn into_server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The answer to `request` now.
    pub fn status(&self, request: &ClientStatusRequest) -> ClientStatusResponse {
        let view = Arc::clone(&self.view.borrow());
        ClientStatusResponse {
            config: vec![client_config(
                &self.node,
                &view,
                !request.exclude_resource_contents,
            )],
        }
    }
}

/// The `ClientConfig` of a client identified by `node` whose state is `view`; with
/// `contents`, each resource is included as it was received.
pub fn client_config(node: &Node, view: &ClientView, contents: bool) -> ClientConfig {
    let now = (Instant::now(), SystemTime::now());
    let generic_xds_configs = view
        .cache
        .iter()
        .map(|(xds_type, name, entry)| generic(xds_type, name, entry, contents, now))
        .collect();
    ClientConfig {
        node: Some(node.clone()),
        generic_xds_configs,
        ..Default::default()
    }
}

fn generic(
    xds_type: XdsType,
    name: &str,
    entry: &ResourceEntry,
    contents: bool,
    now: (Instant, SystemTime),
) -> GenericXdsConfig {
    let client_status = match entry.state {
        ResourceState::Requested => ClientResourceStatus::Requested,
        ResourceState::DoesNotExist => ClientResourceStatus::DoesNotExist,
        ResourceState::Acked => ClientResourceStatus::Acked,
        ResourceState::Nacked => ClientResourceStatus::Nacked,
    };
    let error_state = entry.last_error.as_ref().map(|failure| UpdateFailureState {
        last_update_attempt: Some(timestamp(failure.at, now)),
        details: failure.error.to_string(),
        version_info: failure.version.clone(),
        failed_configuration: None,
    });
    GenericXdsConfig {
        type_url: xds_type.type_url().to_owned(),
        name: name.to_owned(),
        version_info: entry.version.clone().unwrap_or_default(),
        xds_config: entry
            .resource
            .as_ref()
            .filter(|_| contents)
            .map(|r| to_any(xds_type, r)),
        last_updated: entry.last_updated.map(|at| timestamp(at, now)),
        client_status: client_status as i32,
        error_state,
        ..Default::default()
    }
}

/// The resource as it arrived, re-encoded.
fn to_any(xds_type: XdsType, resource: &Resource) -> Any {
    let value = match resource {
        Resource::Listener(r) => r.listener.encode_to_vec(),
        Resource::RouteConfiguration(r) => r.route_configuration.encode_to_vec(),
        Resource::Cluster(r) => r.cluster.encode_to_vec(),
        Resource::ClusterLoadAssignment(r) => r.assignment.encode_to_vec(),
    };
    Any {
        type_url: xds_type.type_url().to_owned(),
        value,
    }
}

/// `at` on the wall clock, placed by its distance from `now`.
fn timestamp(at: Instant, now: (Instant, SystemTime)) -> Timestamp {
    let wall = match now.0.checked_duration_since(at) {
        Some(ago) => now.1.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
        None => now.1 + at.duration_since(now.0),
    };
    let since = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

type StatusStream =
    Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: tonic::Request<tonic::Streaming<ClientStatusRequest>>,
    ) -> Result<tonic::Response<Self::StreamClientStatusStream>, tonic::Status> {
        let this = self.clone();
        let answers = request
            .into_inner()
            .map(move |req| req.map(|req| this.status(&req)));
        Ok(tonic::Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: tonic::Request<ClientStatusRequest>,
    ) -> Result<tonic::Response<ClientStatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.status(request.get_ref())))
    }
}
