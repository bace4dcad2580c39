//! The services of the demo, all in this process on 127.0.0.1: payment-service v1 (two
//! replicas) and v2 (one), and the order-service calling `payment-service:8080` through
//! the mesh. Replicas can be restarted on the same port with other behaviour (failing,
//! slow), the way an operator would roll a bad build.
//!
//! Every service has a SPIFFE identity issued at start by a test CA
//! ([`crate::identity`]): the payment replicas take a policy file with their certificates,
//! STRICT mTLS and the `payment-access` AuthorizationPolicy; the order-service's mesh
//! presents `sa/order-service` and sends mTLS to the payment service (auto mTLS, from the
//! service's `serviceAccounts`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use control_plane::ControlPlane;
use example_common::MeshArgs;
use mesh_tower::admin::{AdminHandle, AdminServer};
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::{IstioShape, Mesh};
use order_service::client::OrderClient;
use payment_service::PaymentVersion;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::identity::{Identities, Issued, ORDER_SA, PAYMENT_SA};
use crate::policy::{payment_yaml, Endpoint, Policy, PAYMENT_TARGET};
use crate::DemoError;

/// How long a server gets to finish its calls in flight when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a restarted replica keeps trying to take its old port back.
const REBIND_FOR: Duration = Duration::from_secs(2);

/// What a payment replica does with each call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Fraction of calls failing with `UNAVAILABLE`.
    pub fail_rate: f64,
    /// Delay added to every call.
    pub latency: Duration,
}

impl Behaviour {
    /// Answers every call at once.
    pub const HEALTHY: Self = Self {
        fail_rate: 0.0,
        latency: Duration::ZERO,
    };
}

/// Which payment replica: the two v1 replicas, then v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaId {
    /// payment-service v1, replica 1.
    V1First,
    /// payment-service v1, replica 2.
    V1Second,
    /// payment-service v2.
    V2,
}

impl ReplicaId {
    const ALL: [Self; 3] = [Self::V1First, Self::V1Second, Self::V2];

    fn index(self) -> usize {
        match self {
            Self::V1First => 0,
            Self::V1Second => 1,
            Self::V2 => 2,
        }
    }

    /// The replica's version.
    pub fn version(self) -> PaymentVersion {
        match self {
            Self::V1First | Self::V1Second => PaymentVersion::V1,
            Self::V2 => PaymentVersion::V2,
        }
    }

    /// `v1 #2`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1First => "v1 #1",
            Self::V1Second => "v1 #2",
            Self::V2 => "v2",
        }
    }
}

/// A server task and the way to stop it.
#[derive(Debug)]
struct Running<E> {
    name: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Display> Running<E> {
    fn spawn<F>(name: String, listener: TcpListener, addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> JoinHandle<Result<(), E>>,
    {
        let (stop, stopped) = oneshot::channel();
        let task = serve(listener, stopped);
        Self {
            name,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Asks the server to stop and waits (a bounded time) until it has.
    async fn stop(mut self) -> Result<(), DemoError> {
        if let Some(stop) = self.stop.take() {
            // An error means it already ended; its result is read below.
            let _ = stop.send(());
        }
        let failed = |reason: String| DemoError::Server {
            name: self.name.clone(),
            addr: self.addr,
            reason,
        };
        match tokio::time::timeout(STOP_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(failed(e.to_string())),
            Ok(Err(join)) => Err(failed(format!("task failed: {join}"))),
            Err(_) => {
                self.task.abort();
                Err(failed(format!("did not stop within {STOP_GRACE:?}")))
            }
        }
    }
}

/// A payment replica and how it behaves.
#[derive(Debug)]
struct Replica {
    behaviour: Behaviour,
    server: Running<payment_service::Error>,
}

/// Every service of the demo.
#[derive(Debug)]
pub struct Fleet {
    /// Where each replica listens, in [`ReplicaId`] order; a restart keeps the port.
    addrs: Vec<SocketAddr>,
    /// The replicas, in the same order (`None` only between a stop and a restart).
    replicas: Vec<Option<Replica>>,
    order: Running<order_service::Error>,
    mesh: Mesh,
    client: OrderClient,
    /// The order-service's identity.
    order_id: Issued,
    /// The payment-service's policy file for each version (v1, v2).
    payment_policies: [PathBuf; 2],
    /// The order-service mesh's admin server.
    admin: AdminHandle,
    /// With [`Fleet::start_with`] and a shape: the dev control plane the order-service
    /// takes its policy from, and its input file.
    xds: Option<(ControlPlane, PathBuf)>,
    /// Last: the certificate directory is removed once everything else has stopped.
    identities: Identities,
}

/// Another order-service instance, with its own identity and mesh (see
/// [`Fleet::start_caller`]).
#[derive(Debug)]
pub struct Caller {
    server: Running<order_service::Error>,
    client: OrderClient,
    identity: Issued,
}

impl Caller {
    /// A client of this instance.
    pub fn client(&self) -> &OrderClient {
        &self.client
    }

    /// Its identity.
    pub fn identity(&self) -> &Issued {
        &self.identity
    }

    /// Stops it.
    pub async fn stop(self) -> Result<(), DemoError> {
        self.server.stop().await
    }
}

/// A shutdown future for a `run` function, resolving when the stop sender fires or drops.
async fn signal(stopped: oneshot::Receiver<()>) {
    // A dropped sender means the owner went away: that is a stop request too.
    let _ = stopped.await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind { addr, source })
}

async fn start_replica(
    id: ReplicaId,
    behaviour: Behaviour,
    listener: TcpListener,
    policy: &Path,
) -> Result<Replica, DemoError> {
    let addr = listener.local_addr().map_err(|source| DemoError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    let config = payment_service::Config::default()
        .with_version(id.version())
        .with_fail_rate(behaviour.fail_rate)?
        .with_latency(behaviour.latency)
        .with_mesh(payment_mesh_args(policy));
    let server = Running::spawn(
        format!("payment-service {}", id.name()),
        listener,
        addr,
        |listener, stopped| tokio::spawn(payment_service::run(config, listener, signal(stopped))),
    );
    Ok(Replica { behaviour, server })
}

/// The payment-service's mesh flags: `--policy FILE`.
fn payment_mesh_args(policy: &Path) -> MeshArgs {
    let mut args = MeshArgs::default();
    args.policy = Some(policy.to_path_buf());
    args
}

/// An order-service mesh for `identity` whose first policy is `policy`.
fn order_mesh(
    policy: &Policy,
    endpoints: &[Endpoint],
    identity: &Issued,
    origin: &str,
) -> Result<Mesh, DemoError> {
    Ok(Mesh::builder()
        .snapshot(policy.snapshot(endpoints, Some(identity), origin)?)
        .identity(identity.source()?)
        .workload(WorkloadLabels::from_env(ORDER_SA))
        .build()?)
}

/// Whether `got` routes the payment service as `want` does (the routes of its virtual host)
/// and has its clusters with the same limits, outlier detection and balancing.
fn same_payment_policy(want: &mesh_core::Snapshot, got: &mesh_core::Snapshot) -> bool {
    let routes = |s: &mesh_core::Snapshot| {
        let l = s.outbound(PAYMENT_TARGET)?;
        let rc = s.route_config(l.route_config_name())?;
        rc.virtual_host_for(PAYMENT_TARGET)
            .map(|vh| vh.routes().to_vec())
    };
    let Some(want_routes) = routes(want) else {
        return false;
    };
    if Some(&want_routes) != routes(got).as_ref() {
        return false;
    }
    // The clusters its routes lead to.
    let same = want_routes
        .iter()
        .filter_map(|r| match r.action() {
            mesh_core::route::RouteAction::Forward(f) => Some(f.cluster_names()),
            _ => None,
        })
        .flatten()
        .all(|name| match (want.cluster(name), got.cluster(name)) {
            (Some(c), Some(g)) => {
                g.circuit_breakers == c.circuit_breakers
                    && g.outlier_detection == c.outlier_detection
                    && g.retry_budget == c.retry_budget
                    && g.lb == c.lb
            }
            (None, None) => true,
            _ => false,
        });
    same
}

/// How long a control plane's push may take to reach the order-service.
const XDS_PATIENCE: Duration = Duration::from_secs(30);

fn write_atomically(path: &Path, text: &str) -> Result<(), DemoError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| DemoError::Files {
            path: path.to_path_buf(),
            source,
        })
}

/// The order-service's mesh on a dev control plane serving `policy` in `shape`, with the
/// control plane and its input file.
async fn xds_order_mesh(
    policy: &Policy,
    endpoints: &[Endpoint],
    identity: &Issued,
    root: &Path,
    shape: IstioShape,
) -> Result<(Mesh, ControlPlane, PathBuf), DemoError> {
    let dir = root.join("fleet-control-plane");
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Files {
        path: dir.clone(),
        source,
    })?;
    let input = dir.join("payment-service.yaml");
    write_atomically(&input, &policy.control_plane_yaml(endpoints))?;
    let cp = ControlPlane::start(control_plane::Config {
        paths: vec![input.clone()],
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        unix: None,
        poll: Duration::from_millis(20),
    })
    .await?;
    let addr = cp.addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    // Outside the control plane's input (it would read it as input).
    let bootstrap = root.join("fleet-bootstrap.json");
    write_atomically(&bootstrap, &crate::scenario::bootstrap_json(addr, identity))?;
    let mesh = Mesh::builder()
        .bootstrap(&bootstrap)
        .istio_shape(shape)
        .workload(WorkloadLabels::from_env(ORDER_SA))
        .build()?;
    Ok((mesh, cp, input))
}

/// Starts an order-service on `mesh` on an ephemeral port.
async fn start_order(
    name: String,
    mesh: Mesh,
) -> Result<(Running<order_service::Error>, OrderClient), DemoError> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = order_service::Config::new(PAYMENT_TARGET.parse()?)
        .with_mesh(MeshArgs::default().with_mesh(mesh));
    let listener = bind(any).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| DemoError::Bind { addr: any, source })?;
    let order = Running::spawn(name, listener, addr, |listener, stopped| {
        tokio::spawn(order_service::run(config, listener, signal(stopped)))
    });
    let client = OrderClient::new(&format!("http://{addr}"))?;
    Ok((order, client))
}

impl Fleet {
    /// Issues the identities, starts the three payment replicas on ephemeral ports (STRICT
    /// mTLS, `payment-access`), then the order-service on a mesh whose first policy is
    /// `initial`, and its admin server.
    pub async fn start(initial: &Policy) -> Result<Self, DemoError> {
        Self::start_with(initial, None).await
    }

    /// As [`Fleet::start`]; with `control_plane`, the order-service's mesh takes its policy
    /// over xDS from the dev control plane (examples/control-plane), in istiod's shape
    /// `control_plane`, and [`Fleet::publish`] writes the control plane's input file.
    pub async fn start_with(
        initial: &Policy,
        control_plane: Option<IstioShape>,
    ) -> Result<Self, DemoError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let identities = Identities::new()?;
        let order_id = identities.issue(ORDER_SA)?;
        let payment_id = identities.issue(PAYMENT_SA)?;
        let payment_policies = [
            identities.write("payment-v1.yaml", &payment_yaml(&payment_id, "v1"))?,
            identities.write("payment-v2.yaml", &payment_yaml(&payment_id, "v2"))?,
        ];
        let mut replicas = Vec::with_capacity(ReplicaId::ALL.len());
        let mut addrs = Vec::with_capacity(ReplicaId::ALL.len());
        for id in ReplicaId::ALL {
            let policy = policy_of(&payment_policies, id);
            let replica = start_replica(id, Behaviour::HEALTHY, bind(any).await?, policy).await?;
            addrs.push(replica.server.addr);
            replicas.push(Some(replica));
        }
        let endpoints = endpoints_of(&addrs);
        let (mesh, xds) = match control_plane {
            None => (
                order_mesh(initial, &endpoints, &order_id, "demo:start")?,
                None,
            ),
            Some(shape) => {
                let (mesh, cp, input) =
                    xds_order_mesh(initial, &endpoints, &order_id, identities.root(), shape)
                        .await?;
                (mesh, Some((cp, input)))
            }
        };
        let admin = AdminServer::new(mesh.clone())
            .spawn(any)
            .await
            .map_err(|source| DemoError::Bind { addr: any, source })?;
        let (order, client) = start_order("order-service".to_owned(), mesh.clone()).await?;
        Ok(Self {
            addrs,
            replicas,
            order,
            mesh,
            client,
            order_id,
            payment_policies,
            admin,
            xds,
            identities,
        })
    }

    /// Starts another order-service with its own identity `service_account` (issued by the
    /// same CA) and its own mesh on `policy`: a second caller of the payment service.
    pub async fn start_caller(
        &self,
        service_account: &str,
        policy: &Policy,
    ) -> Result<Caller, DemoError> {
        let identity = self.identities.issue(service_account)?;
        let mesh = order_mesh(policy, &self.endpoints(), &identity, service_account)?;
        let (server, client) =
            start_order(format!("order-service as sa/{service_account}"), mesh).await?;
        Ok(Caller {
            server,
            client,
            identity,
        })
    }

    /// Starts another order-service as the order-service identity on `mesh` (one built by
    /// the caller, e.g. from an xDS bootstrap).
    pub async fn start_caller_on(&self, name: &str, mesh: Mesh) -> Result<Caller, DemoError> {
        let (server, client) = start_order(name.to_owned(), mesh).await?;
        Ok(Caller {
            server,
            client,
            identity: self.order_id.clone(),
        })
    }

    /// The order-service's identity.
    pub fn order_identity(&self) -> &Issued {
        &self.order_id
    }

    /// The directory of the issued certificates and the payment policy files.
    pub fn identity_dir(&self) -> &Path {
        self.identities.root()
    }

    /// The payment-service's policy file for `version` (`v1`, `v2`).
    pub fn payment_policy(&self, id: ReplicaId) -> &Path {
        policy_of(&self.payment_policies, id)
    }

    /// Where the order-service mesh's admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The policy file text `policy` is published as.
    pub fn yaml(&self, policy: &Policy) -> String {
        policy.yaml(&self.endpoints(), Some(&self.order_id))
    }

    /// The mesh the order-service calls through.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// A client of the order-service.
    pub fn client(&self) -> &OrderClient {
        &self.client
    }

    /// The order-service's address.
    pub fn order_addr(&self) -> SocketAddr {
        self.order.addr
    }

    /// Where a replica listens.
    pub fn addr(&self, id: ReplicaId) -> SocketAddr {
        self.addrs
            .get(id.index())
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The endpoints as Kubernetes would list them.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        endpoints_of(&self.addrs)
    }

    /// Renders `policy` as a policy file, parses it and publishes it to the mesh; with a
    /// control plane, writes it to the control plane's input and waits until the mesh has
    /// the pushed policy. Returns the policy generation.
    pub async fn publish(&self, policy: &Policy, origin: &str) -> Result<u64, DemoError> {
        let snapshot = policy.snapshot(&self.endpoints(), Some(&self.order_id), origin)?;
        let Some((_, input)) = &self.xds else {
            return Ok(self.mesh.policy().publish(snapshot));
        };
        let yaml = policy.control_plane_yaml(&self.endpoints());
        if std::fs::read_to_string(input).is_ok_and(|old| old == yaml) {
            return Ok(self.mesh.policy().generation());
        }
        let mut changes = self.mesh.policy().watch();
        write_atomically(input, &yaml)?;
        // A push comes type by type (clusters, then routes): wait until the mesh's policy
        // for the payment service is the one published. The bound is for a control plane
        // that rejected the file.
        let converged = async {
            loop {
                let current = changes.changed().await;
                if same_payment_policy(&snapshot, &current) {
                    return;
                }
            }
        };
        tokio::time::timeout(XDS_PATIENCE, converged)
            .await
            .map_err(|_| DemoError::Files {
                path: input.clone(),
                source: std::io::Error::other(format!(
                    "the control plane's push of {origin} did not reach the order-service within {XDS_PATIENCE:?}"
                )),
            })?;
        Ok(self.mesh.policy().generation())
    }

    /// Stops replica `id` and starts it again on the same port, behaving as `behaviour`.
    pub async fn restart(&mut self, id: ReplicaId, behaviour: Behaviour) -> Result<(), DemoError> {
        let addr = self.addr(id);
        let Some(slot) = self.replicas.get_mut(id.index()) else {
            return Ok(());
        };
        if slot.as_ref().is_some_and(|r| r.behaviour == behaviour) {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            old.server.stop().await?;
        }
        let listener = rebind(addr).await?;
        let policy = policy_of(&self.payment_policies, id);
        *slot = Some(start_replica(id, behaviour, listener, policy).await?);
        Ok(())
    }

    /// Stops the order-service, then every replica; reports the first failure after
    /// trying them all.
    pub async fn stop(self) -> Result<(), DemoError> {
        let mut first = self.order.stop().await.err();
        for replica in self.replicas.into_iter().flatten() {
            if let Err(e) = replica.server.stop().await {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn policy_of(policies: &[PathBuf; 2], id: ReplicaId) -> &Path {
    let [v1, v2] = policies;
    match id.version() {
        PaymentVersion::V2 => v2,
        _ => v1,
    }
}

fn endpoints_of(addrs: &[SocketAddr]) -> Vec<Endpoint> {
    ReplicaId::ALL
        .iter()
        .zip(addrs)
        .map(|(id, addr)| Endpoint {
            addr: *addr,
            version: id.version().as_str(),
        })
        .collect()
}

/// Binds `addr` again after its server stopped, retrying briefly while the OS lets go.
async fn rebind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    let until = tokio::time::Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(source) if tokio::time::Instant::now() >= until => {
                return Err(DemoError::Bind { addr, source })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
