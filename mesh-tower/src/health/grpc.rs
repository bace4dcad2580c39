//! `grpc.health.v1.Health` with statuses that follow the mesh's readiness.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_server::{Health as HealthRpc, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Readiness, ReadinessStatus, ReadinessWatch};

/// A status the application sets for one of its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServingStatus {
    /// `SERVING`.
    Serving,
    /// `NOT_SERVING`.
    NotServing,
}

/// The health statuses of a workload, as `grpc.health.v1.Health` reports them: cheap to
/// clone, one per [`Mesh`](crate::Mesh) ([`Mesh::health`](crate::Mesh::health)).
///
/// - The overall status (service `""`) is `SERVING` while the mesh's [`Readiness`] says
///   ready, `NOT_SERVING` otherwise (before the first policy, before every listener
///   serves, from shutdown on).
/// - A service the application named with [`set_status`](Self::set_status) reports the
///   status it set while the mesh is ready, `NOT_SERVING` otherwise.
/// - Any other name is unknown: `Check` fails with `NOT_FOUND`, `Watch` sends
///   `SERVICE_UNKNOWN` and keeps watching.
/// - From shutdown on, every `Watch` sends `NOT_SERVING` and then ends with `UNAVAILABLE`,
///   so that open watches do not hold the listener's graceful shutdown.
///
/// ```
/// use mesh_tower::health::{Health, Readiness, ServingStatus};
///
/// let health = Health::new(Readiness::new());
/// health.set_status("payment.v1.PaymentService", ServingStatus::Serving);
/// assert_eq!(health.status(""), Some(ServingStatus::Serving));
/// health.readiness().shut_down();
/// assert_eq!(health.status("payment.v1.PaymentService"), Some(ServingStatus::NotServing));
/// assert_eq!(health.status("nope"), None);
/// // The gRPC service, for `Routes::add_service` or `Server::add_service`:
/// let _service = health.service();
/// ```
#[derive(Debug, Clone)]
pub struct Health {
    readiness: Readiness,
    services: Arc<watch::Sender<BTreeMap<String, ServingStatus>>>,
}

impl Health {
    /// Statuses that follow `readiness`; no service named yet.
    pub fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            services: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }

    /// The readiness the statuses follow.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Sets the status of `service` (its full name, `package.Service`; `""` sets the
    /// application's part of the overall status). Watchers see the change.
    pub fn set_status(&self, service: impl Into<String>, status: ServingStatus) {
        let service = service.into();
        self.services
            .send_if_modified(|m| m.insert(service, status) != Some(status));
    }

    /// Sets the status of the tonic service `S` (its generated server type) by its name.
    pub fn set_status_of<S: NamedService>(&self, status: ServingStatus) {
        self.set_status(S::NAME, status);
    }

    /// Forgets `service`: it is unknown again.
    pub fn clear(&self, service: &str) {
        self.services
            .send_if_modified(|m| m.remove(service).is_some());
    }

    /// What `Check` answers for `service` now; `None` for an unknown service.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let services = self.services.borrow();
        match effective(&self.readiness.status(), &services, service) {
            WireStatus::Serving => Some(ServingStatus::Serving),
            WireStatus::NotServing => Some(ServingStatus::NotServing),
            WireStatus::ServiceUnknown | WireStatus::Unknown => None,
        }
    }

    /// The `grpc.health.v1.Health` service, for tonic's `Routes::add_service` or
    /// `Server::add_service`.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            health: self.clone(),
        })
    }
}

/// The status to report for `name`.
fn effective(
    readiness: &ReadinessStatus,
    services: &BTreeMap<String, ServingStatus>,
    name: &str,
) -> WireStatus {
    let set = services.get(name).copied();
    if !name.is_empty() && set.is_none() {
        return WireStatus::ServiceUnknown;
    }
    if !readiness.is_ready() {
        return WireStatus::NotServing;
    }
    match set.unwrap_or(ServingStatus::Serving) {
        ServingStatus::Serving => WireStatus::Serving,
        ServingStatus::NotServing => WireStatus::NotServing,
    }
}

/// The `grpc.health.v1.Health` implementation behind [`Health::service`].
///
/// Made here rather than taken from `tonic-health`'s `HealthService` (whose generated
/// types it uses): its statuses derive from the mesh's readiness instead of being stored
/// apart, and `Watch` of an unknown service sends `SERVICE_UNKNOWN` and goes on watching,
/// as the protocol says, where `tonic-health` fails the call.
#[derive(Debug)]
pub struct HealthService {
    pub(super) health: Health,
}

/// The stream of a `Watch` call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn response(status: WireStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl HealthRpc for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        let services = self.health.services.borrow();
        match effective(&self.health.readiness.status(), &services, name) {
            WireStatus::ServiceUnknown => {
                Err(Status::not_found(format!("unknown service {name:?}")))
            }
            status => Ok(Response::new(response(status))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let state = Watching {
            name: request.into_inner().service,
            readiness: self.health.readiness.watch(),
            services: self.health.services.subscribe(),
            last: None,
            ended: false,
        };
        let stream = futures_util::stream::unfold(state, Watching::next);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One `Watch` call.
struct Watching {
    name: String,
    readiness: ReadinessWatch,
    services: watch::Receiver<BTreeMap<String, ServingStatus>>,
    last: Option<WireStatus>,
    ended: bool,
}

impl Watching {
    /// The next message: the status when it differs from the last one sent; after
    /// shutdown, `UNAVAILABLE` once the last status is out.
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let readiness = self.readiness.status();
            let now = effective(&readiness, &self.services.borrow_and_update(), &self.name);
            if self.last != Some(now) {
                self.last = Some(now);
                return Some((Ok(response(now)), self));
            }
            if readiness == ReadinessStatus::ShuttingDown {
                self.ended = true;
                return Some((
                    Err(Status::unavailable("the server is shutting down")),
                    self,
                ));
            }
            tokio::select! {
                () = self.readiness.changed() => {}
                changed = self.services.changed() => if changed.is_err() {
                    return None;
                },
            }
        }
    }
}
