//! The mesh as an application holds it: the live policy and the clients taken from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::live::LivePolicy;
use mesh_core::policy_file::{PolicyError, PolicyFile};
use mesh_core::Snapshot;
pub use mesh_xds_client::shape::IstioShape;
use opentelemetry::global::BoxedTracer;

use crate::health::{Health, Readiness};
use crate::identity::{CertificateError, CertificateSource, FileWatcherConfig, MeshTls};
use crate::inbound::{AuthorizationLayer, InboundConfig, MeshListener};
use crate::metrics::{Metrics, WorkloadLabels};
use crate::outbound::{
    BreakerStatus, EndpointStatus, HttpClient, Outbound, OutboundConfig, TlsProvider, XdsTargets,
};

/// Where the mesh took its policy from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicySource {
    /// Built-in defaults: every target dialed by DNS, no TLS, no authorization.
    Defaults,
    /// A static policy file, watched for changes.
    File(PathBuf),
    /// Given in code.
    Snapshot,
    /// A control plane, from an xDS bootstrap file.
    Xds(PathBuf),
}

/// Why the mesh could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshBuildError {
    /// The policy file is unreadable or invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The certificates named by the policy file cannot be loaded.
    #[error(transparent)]
    Certificates(#[from] CertificateError),
    /// The xDS bootstrap is unreadable or invalid.
    #[error(transparent)]
    Bootstrap(#[from] mesh_xds_client::bootstrap::BootstrapError),
    /// The bootstrap names a certificate provider that cannot be used.
    #[error("bootstrap certificate provider {name:?}: {reason}")]
    CertificateProvider {
        /// The instance name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The xDS client could not start.
    #[error("xDS client: {0}")]
    Xds(String),
    /// xDS needs a tokio runtime.
    #[error("an xDS mesh must be built inside a tokio runtime")]
    NoRuntime,
}

/// The mesh: one per process, cheap to clone.
///
/// ```
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_tower::Mesh;
///
/// // A static policy (a file: `.policy_file(path)`; a control plane: `.bootstrap(path)`).
/// let policy = mesh_core::policy_file::PolicyFile::parse(
///     "services:\n  - name: inventory\n    ports: [{ port: 8080 }]\n    endpoints: [{ address: '127.0.0.1:9090' }]\n",
///     "inline",
/// )?
/// .to_snapshot("inline")?;
/// let mesh = Mesh::builder().snapshot(policy).build()?;
/// assert!(mesh.policy().snapshot().outbound("inventory:8080").is_some());
/// # Ok(())
/// # }
/// # demo().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Mesh {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: LivePolicy,
    outbound: Arc<Outbound>,
    source: PolicySource,
    file: Option<PolicyFile>,
    certificates: Option<CertificateSource>,
    xds: Option<XdsState>,
    metrics: Metrics,
    inbound: InboundConfig,
    health: Health,
}

#[derive(Debug)]
struct XdsState {
    client: Arc<mesh_xds_client::transport::XdsClient>,
    bootstrap: mesh_xds_client::bootstrap::Bootstrap,
    shape: IstioShape,
}

/// Builds a [`Mesh`].
#[derive(Default)]
pub struct MeshBuilder {
    bootstrap: Option<PathBuf>,
    policy_file: Option<PathBuf>,
    snapshot: Option<Snapshot>,
    tls: Option<Arc<dyn TlsProvider>>,
    certificates: Option<CertificateSource>,
    outbound: OutboundConfig,
    watch_interval: Option<Duration>,
    workload: Option<WorkloadLabels>,
    inbound: InboundConfig,
    istio_shape: Option<IstioShape>,
    tracer: Option<BoxedTracer>,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("policy_file", &self.policy_file)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MeshBuilder {
    /// Takes the policy from the control plane named by this gRPC xDS bootstrap file (the
    /// one the Istio agent writes; `GRPC_XDS_BOOTSTRAP`). Certificates come from its
    /// `file_watcher` certificate providers. Wins over a policy file.
    pub fn bootstrap(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(path.into());
        self
    }

    /// Which of istiod's outputs to take from the control plane: the proxyless one (the
    /// default) or the Envoy sidecar one, which carries every DestinationRule setting
    /// (see [`mesh_xds_client::shape`]). Without this call, `MESH_ISTIO_SHAPE` decides.
    pub fn istio_shape(mut self, shape: IstioShape) -> Self {
        self.istio_shape = Some(shape);
        self
    }

    /// Takes the policy from a static file (reloaded when it changes).
    pub fn policy_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy_file = Some(path.into());
        self
    }

    /// Takes the policy from a snapshot built in code.
    pub fn snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Uses this TLS provider for clusters that ask for TLS (instead of the one made from
    /// [`identity`](Self::identity)).
    pub fn tls(mut self, tls: Arc<dyn TlsProvider>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// This workload's SVID and trust bundle: presented and verified on outbound mTLS, and
    /// served by [`Mesh::listener`]. The certificate provider instance `default` of the
    /// policy (Istio's name) is this source.
    pub fn identity(mut self, certificates: CertificateSource) -> Self {
        self.certificates = Some(certificates);
        self
    }

    /// Connection settings of the listeners [`Mesh::listener`] makes: timeouts, limits,
    /// HTTP/2 keepalive (see [`InboundConfig`] for the defaults).
    pub fn inbound_config(mut self, config: InboundConfig) -> Self {
        self.inbound = config;
        self
    }

    /// Outbound client settings.
    pub fn outbound_config(mut self, config: OutboundConfig) -> Self {
        self.outbound = config;
        self
    }

    /// How often a policy file is checked for changes (default 1 s; `ZERO` = never).
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = Some(interval);
        self
    }

    /// Who this workload is, for the metrics' labels. Default: what the environment says
    /// ([`WorkloadLabels::from_env`]: Istio's injected variables, then
    /// `OTEL_SERVICE_NAME`), else the executable's name. With a
    /// [`bootstrap`](Self::bootstrap), what its node metadata says (the Istio agent writes
    /// `WORKLOAD_NAME`, `NAMESPACE`, `LABELS`, `CLUSTER_ID` there) takes precedence; see
    /// [`WorkloadLabels::with_node_metadata`].
    pub fn workload(mut self, labels: WorkloadLabels) -> Self {
        self.workload = Some(labels);
        self
    }

    /// Exports the mesh's spans (the server span of each request [`Mesh::serve`] and
    /// [`MeshLayer`](crate::MeshLayer) handle, the client span of each outbound call)
    /// through `tracer`. Without it, they go through the global tracer provider installed
    /// when [`build`](Self::build) runs: install yours (e.g. with
    /// [`otel::init_from_env`](crate::trace::otel::init_from_env)) before building the mesh.
    /// A tracer that makes no spans (the global one before a provider is installed) is
    /// found out once, at build, and the mesh then skips its spans; the trace context it
    /// propagates is the same.
    pub fn tracer(mut self, tracer: BoxedTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Builds the mesh. With a policy file, the file is read now (a bad file is an error)
    /// and, inside a tokio runtime, watched for changes.
    pub fn build(self) -> Result<Mesh, MeshBuildError> {
        if let Some(path) = self.bootstrap.clone() {
            return self.build_xds(path);
        }
        let (snapshot, source, file) = match (self.snapshot, &self.policy_file) {
            (Some(s), _) => (s, PolicySource::Snapshot, None),
            (None, Some(path)) => {
                let file = read_policy_file(path)?;
                let snap = file.to_snapshot(&path.display().to_string())?;
                warn_unsupported_rules(&path.display().to_string(), None, &snap);
                (snap, PolicySource::File(path.clone()), Some(file))
            }
            (None, None) => (Snapshot::empty(), PolicySource::Defaults, None),
        };
        let mut certificates = self.certificates;
        if certificates.is_none() {
            if let Some(files) = file.as_ref().and_then(|f| f.certificates.as_ref()) {
                certificates = Some(load_certificates(files)?);
            }
        }
        let tls: Option<Arc<dyn TlsProvider>> = match (self.tls, &certificates) {
            (Some(t), _) => Some(t),
            (None, Some(c)) => Some(Arc::new(MeshTls::new(c.clone()))),
            (None, None) => None,
        };
        let policy = LivePolicy::new(snapshot);
        let metrics = Metrics::new(self.workload.unwrap_or_else(default_workload));
        let tracer = Arc::new(crate::trace::MeshTracer::new(
            self.tracer.unwrap_or_else(crate::trace::global_tracer),
        ));
        let outbound = Arc::new(
            Outbound::new(policy.clone(), tls, self.outbound, None, tracer)
                .with_metrics(metrics.clone()),
        );
        let mesh = Mesh {
            inner: Arc::new(Inner {
                policy,
                outbound,
                source,
                file,
                certificates,
                xds: None,
                metrics,
                inbound: self.inbound,
                health: Health::new(Readiness::new()),
            }),
        };
        if let Some(path) = self.policy_file {
            let every = self.watch_interval.unwrap_or(Duration::from_secs(1));
            if !every.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(watch_file(Arc::downgrade(&mesh.inner), path, every));
            }
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(prune_on_change(
                Arc::downgrade(&mesh.inner.outbound),
                mesh.inner.policy.watch(),
            ));
            tokio::spawn(keep_a_timer_near(Arc::downgrade(&mesh.inner.outbound)));
        }
        Ok(mesh)
    }
}

impl MeshBuilder {
    fn build_xds(self, path: PathBuf) -> Result<Mesh, MeshBuildError> {
        use mesh_xds_client::bootstrap::{Bootstrap, CertificateProvider};
        use mesh_xds_client::transport::{XdsClient, XdsClientConfig};
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MeshBuildError::NoRuntime);
        }
        let bootstrap = Bootstrap::from_file(&path)?;
        // Certificate provider instances (Istio: `default`, file_watcher).
        let mut tls = MeshTls::default();
        let mut default_source = self.certificates.clone();
        for (name, provider) in &bootstrap.certificate_providers {
            let CertificateProvider::FileWatcher(fw) = provider else {
                continue;
            };
            let (Some(cert), Some(key), Some(ca)) = (
                &fw.certificate_file,
                &fw.private_key_file,
                &fw.ca_certificate_file,
            ) else {
                return Err(MeshBuildError::CertificateProvider {
                    name: name.clone(),
                    reason: "file_watcher needs certificate_file, private_key_file and ca_certificate_file".into(),
                });
            };
            let source = CertificateSource::file_watcher(
                FileWatcherConfig::new(cert, key, ca).with_refresh_interval(fw.refresh_interval),
            )?;
            if name == "default" && default_source.is_none() {
                default_source = Some(source.clone());
            }
            tls = tls.with_instance(name.clone(), source);
        }
        let tls: Option<Arc<dyn TlsProvider>> = match self.tls {
            Some(t) => Some(t),
            None => Some(Arc::new(tls)),
        };
        let shape = match self.istio_shape {
            Some(shape) => shape,
            None => IstioShape::from_env().map_err(|e| MeshBuildError::Xds(e.to_string()))?,
        };
        let policy = LivePolicy::new(Snapshot::empty());
        let client = XdsClient::from_bootstrap_with_policy(
            &bootstrap,
            XdsClientConfig::default().with_shape(shape),
            policy.clone(),
        )
        .map_err(|e| MeshBuildError::Xds(e.to_string()))?;
        let client = Arc::new(client);
        let subscriber = Arc::clone(&client);
        let names = bootstrap.clone();
        let subscribe = Box::new(move |target: String| {
            let client = Arc::clone(&subscriber);
            let name = names.client_listener_name(&target);
            tokio::spawn(async move {
                if client.add_target(&name).await.is_err() {
                    tracing::error!(listener = name, "the xDS client has stopped");
                }
            });
        });
        let xds_targets = XdsTargets::new(subscribe, Duration::from_secs(15));
        let labels = self
            .workload
            .unwrap_or_else(default_workload)
            .with_node_metadata(&bootstrap.node.id, &bootstrap.node.metadata);
        let metrics = Metrics::new(labels);
        let tracer = Arc::new(crate::trace::MeshTracer::new(
            self.tracer.unwrap_or_else(crate::trace::global_tracer),
        ));
        let outbound = Arc::new(
            Outbound::new(
                policy.clone(),
                tls,
                self.outbound,
                Some(xds_targets),
                tracer,
            )
            .with_metrics(metrics.clone()),
        );
        tokio::spawn(prune_on_change(Arc::downgrade(&outbound), policy.watch()));
        tokio::spawn(keep_a_timer_near(Arc::downgrade(&outbound)));
        tokio::spawn(audit_policy_changes(
            Arc::downgrade(&outbound),
            policy.watch(),
        ));
        tokio::spawn(count_xds_updates(client.watch(), metrics.clone()));
        let readiness =
            Readiness::waiting_for_policy("waiting for the first policy from the control plane");
        tokio::spawn(crate::health::follow_xds(readiness.clone(), client.watch()));
        Ok(Mesh {
            inner: Arc::new(Inner {
                policy,
                outbound,
                source: PolicySource::Xds(path),
                file: None,
                certificates: default_source,
                xds: Some(XdsState {
                    client,
                    bootstrap,
                    shape,
                }),
                metrics,
                inbound: self.inbound,
                health: Health::new(readiness),
            }),
        })
    }
}

/// Counts accepted and rejected resource updates (`mesh_xds_updates_total`) as the xDS
/// client's view changes: a resource counts as `ack` when its accepted version changes (or
/// it is removed), `nack` when a new rejection of it is recorded.
async fn count_xds_updates(
    mut view: tokio::sync::watch::Receiver<Arc<mesh_xds_client::transport::ClientView>>,
    metrics: Metrics,
) {
    use std::collections::HashMap;
    type Seen = (Option<std::time::Instant>, Option<std::time::Instant>);
    let mut seen: HashMap<(mesh_xds_client::resource::XdsType, String), Seen> = HashMap::new();
    loop {
        let current = Arc::clone(&view.borrow_and_update());
        let mut next = HashMap::with_capacity(seen.len());
        for (xds_type, name, entry) in current.cache.iter() {
            let now = (entry.last_updated, entry.last_error.as_ref().map(|e| e.at));
            let before = seen
                .get(&(xds_type, name.to_owned()))
                .copied()
                .unwrap_or_default();
            if now.0.is_some() && now.0 != before.0 {
                metrics.xds_update(xds_type.type_url(), true);
            }
            if now.1.is_some() && now.1 != before.1 {
                metrics.xds_update(xds_type.type_url(), false);
            }
            next.insert((xds_type, name.to_owned()), now);
        }
        seen = next;
        if view.changed().await.is_err() {
            return;
        }
    }
}

impl Mesh {
    /// Starts building a mesh.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// A mesh on built-in defaults. Its spans go to the global tracer provider installed
    /// now (see [`MeshBuilder::tracer`]).
    pub fn with_defaults() -> Self {
        match Self::builder().snapshot(Snapshot::empty()).build() {
            Ok(m) => m,
            // Building from a snapshot cannot fail.
            Err(e) => unreachable_build(e),
        }
    }

    /// The live policy: read the current snapshot, publish a new one, watch for changes.
    pub fn policy(&self) -> &LivePolicy {
        &self.inner.policy
    }

    /// Where the policy came from.
    pub fn source(&self) -> &PolicySource {
        &self.inner.source
    }

    /// The policy file as parsed, when the mesh runs on one.
    pub fn policy_file(&self) -> Option<&PolicyFile> {
        self.inner.file.as_ref()
    }

    /// An HTTP client: requests are routed by their authority (`http://payment-service:8080/x`).
    pub fn http_client<B>(&self) -> HttpClient<B> {
        HttpClient::new(Arc::clone(&self.inner.outbound), None)
    }

    /// A client bound to `target` (`payment-service:8080`, `xds:///payment-service:8080` or
    /// `dns:///host:port`), for tonic-generated clients:
    /// `PaymentServiceClient::new(mesh.channel("payment-service:8080"))`.
    pub fn channel<B>(&self, target: &str) -> HttpClient<B> {
        let target = strip_scheme(target);
        // With xDS, start watching the target's listener now, before the first call.
        self.inner.outbound.subscribe(target);
        HttpClient::new(Arc::clone(&self.inner.outbound), Some(target))
    }

    /// This workload's certificates, when it has any.
    pub fn certificates(&self) -> Option<&CertificateSource> {
        self.inner.certificates.as_ref()
    }

    /// The inbound listener for `listener`: TLS mode per port and authorization from the
    /// live policy, this workload's certificates. Serve the application on it with
    /// [`MeshListener::serve`], wrapped in [`Mesh::authorization_layer`].
    pub fn listener(&self, listener: tokio::net::TcpListener) -> MeshListener {
        let mut require = false;
        if let (Some(xds), Ok(local)) = (&self.inner.xds, listener.local_addr()) {
            // gRFC A36: the server's policy is the listener named by the template; in the
            // sidecar shape, the `virtualInbound` chains for the port.
            let name = if xds.shape.is_sidecar() {
                Some(IstioShape::inbound_target(local))
            } else {
                xds.bootstrap
                    .server_listener_resource_name_template
                    .as_ref()
                    .map(|template| template.replace("%s", &local.to_string()))
            };
            if let Some(name) = name {
                let client = Arc::clone(&xds.client);
                tokio::spawn(async move {
                    if client.add_target(&name).await.is_err() {
                        tracing::error!(listener = name, "the xDS client has stopped");
                    }
                });
                require = true;
            }
        }
        MeshListener::new(
            listener,
            self.inner.policy.clone(),
            self.inner.certificates.clone(),
        )
        .with_metrics(self.inner.metrics.clone())
        .with_config(self.inner.inbound.clone())
        .require_inbound_policy(require)
        .with_readiness(self.readiness())
    }

    /// The xDS client's view (per-resource status, connection state), when the policy
    /// comes from a control plane.
    pub fn xds_view(&self) -> Option<Arc<mesh_xds_client::transport::ClientView>> {
        self.inner.xds.as_ref().map(|x| x.client.view())
    }

    /// The CSDS service (gRFC A40) reporting the xDS client's per-resource status, when the
    /// policy comes from a control plane. The admin server serves it on its port.
    pub fn csds(&self) -> Option<mesh_xds_client::csds::CsdsService> {
        self.inner.xds.as_ref().map(|x| {
            mesh_xds_client::csds::CsdsService::new(x.bootstrap.node.to_proto(), x.client.watch())
        })
    }

    /// The layer that enforces the live policy's authorization on each request (403 for
    /// HTTP, `PERMISSION_DENIED` for gRPC).
    pub fn authorization_layer(&self) -> AuthorizationLayer {
        AuthorizationLayer::new(self.inner.policy.clone())
    }

    /// The endpoints of every cluster in use, with health and ejections.
    pub fn cluster_status(&self) -> Vec<(String, Vec<EndpointStatus>)> {
        self.inner.outbound.cluster_status()
    }

    /// Each cluster's circuit-breaker limits in use.
    pub fn breaker_status(&self) -> Vec<(String, Vec<BreakerStatus>)> {
        self.inner.outbound.breaker_status()
    }

    /// Whether the workload is ready for traffic: the first policy arrived and every
    /// listener made by [`Mesh::listener`] serves. The admin server's `/ready` and the
    /// gRPC health service answer from it; see [`Readiness`].
    pub fn readiness(&self) -> &Readiness {
        self.inner.health.readiness()
    }

    /// The statuses `grpc.health.v1.Health` reports: overall from
    /// [`readiness`](Self::readiness), per service as the application sets them.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The `grpc.health.v1.Health` service (`Check`, `Watch`) of this mesh, for tonic:
    /// `routes.add_service(mesh.health_service())`. See [`Health`].
    pub fn health_service(
        &self,
    ) -> tonic_health::pb::health_server::HealthServer<crate::health::HealthService> {
        self.inner.health.service()
    }

    /// The mesh's metrics: the outbound client records here; hand it to
    /// [`MetricsLayer`](crate::metrics::MetricsLayer) and the admin server.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The tracer the mesh's spans go to (see [`MeshBuilder::tracer`]).
    pub(crate) fn tracer(&self) -> &Arc<crate::trace::MeshTracer> {
        self.inner.outbound.tracer()
    }
}

/// The workload's labels when the builder was given none: the environment's
/// ([`WorkloadLabels::from_env`]), named after the executable when it names nothing.
fn default_workload() -> WorkloadLabels {
    let exe = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    WorkloadLabels::from_env(&exe)
}

fn unreachable_build(e: MeshBuildError) -> Mesh {
    tracing::error!(error = %e, "building a mesh from a snapshot failed; using defaults");
    let policy = LivePolicy::new(Snapshot::empty());
    let outbound = Arc::new(Outbound::new(
        policy.clone(),
        None,
        OutboundConfig::default(),
        None,
        Arc::new(crate::trace::MeshTracer::new(crate::trace::global_tracer())),
    ));
    Mesh {
        inner: Arc::new(Inner {
            policy,
            outbound,
            source: PolicySource::Defaults,
            file: None,
            certificates: None,
            xds: None,
            metrics: Metrics::default(),
            inbound: InboundConfig::default(),
            health: Health::new(Readiness::new()),
        }),
    }
}

/// The policy file's certificates: watched for changes inside a runtime (rotation without
/// restart), read once otherwise.
fn load_certificates(
    files: &mesh_core::policy_file::CertificateFiles,
) -> Result<CertificateSource, CertificateError> {
    let config = FileWatcherConfig::new(
        PathBuf::from(&files.certificate_file),
        PathBuf::from(&files.private_key_file),
        PathBuf::from(&files.ca_certificate_file),
    )
    .with_refresh_interval(Duration::from_secs(1));
    if tokio::runtime::Handle::try_current().is_ok() {
        CertificateSource::file_watcher(config)
    } else {
        CertificateSource::from_pem_files(
            Path::new(&files.certificate_file),
            Path::new(&files.private_key_file),
            Path::new(&files.ca_certificate_file),
        )
    }
}

/// `xds:///name:port` and `dns:///name:port` name the target `name:port`.
pub fn strip_scheme(target: &str) -> &str {
    for scheme in ["xds:///", "dns:///", "xds://", "dns:"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return rest.trim_start_matches('/');
        }
    }
    target
}

/// How often [`keep_a_timer_near`] ticks.
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`TIMER_ANCHOR`] on the runtime while the mesh lives.
///
/// Requests arm timers: the route's deadline, hyper's header-read timeout. Tokio wakes its
/// I/O driver (an eventfd write, then one more `epoll_wait`) whenever a new timer is due
/// before the driver's recorded next wake-up, even when the registering thread is the one
/// running the driver (tokio-rs/tokio#5207, for the current-thread runtime); with no other
/// timer near, that is every request arriving while none is in flight: 1,793 of 2,000
/// requests of service A in the e2e benchmark at 500 req/s. With a tick due within a
/// second, a deadline further out registers without a wake-up; the cost is one wake-up
/// per second. Under paused time (tests), the clock auto-advances in steps of at most a
/// second while the mesh lives.
async fn keep_a_timer_near(outbound: std::sync::Weak<Outbound>) {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while outbound.strong_count() > 0 {
        tick.tick().await;
    }
}

async fn watch_file(mesh: std::sync::Weak<Inner>, path: PathBuf, every: Duration) {
    let mut last = std::fs::read(&path).ok();
    // Why the file could not be read last time, to say it once, not every tick.
    let mut unreadable: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The mesh is gone: stop watching.
        let Some(inner) = mesh.upgrade() else {
            return;
        };
        let policy = inner.policy.clone();
        drop(inner);
        let now = match tokio::fs::read(&path).await {
            Ok(now) => {
                unreadable = None;
                now
            }
            // Deleted or unreadable: the last good policy stays in force.
            Err(e) => {
                let reason = e.to_string();
                if unreadable.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(file = %path.display(), error = %reason, "policy file unreadable; keeping the previous policy");
                    unreadable = Some(reason);
                }
                continue;
            }
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        let parsed = reload(&path, &now);
        last = Some(now);
        match parsed {
            Ok(snap) => {
                let previous = policy.snapshot();
                let origin = path.display().to_string();
                warn_weakenings(&origin, &previous, &snap);
                warn_unsupported_rules(&origin, Some(&previous), &snap);
                tracing::info!(file = %origin, version = snap.version(), "policy file reloaded");
                policy.publish(snap);
            }
            // The last good policy stays in force.
            Err(e) => {
                tracing::error!(error = %e, "policy file rejected; keeping the previous policy")
            }
        }
    }
}

/// Reads and parses a policy file (`mesh-core` parses; reading files is done here).
pub fn read_policy_file(path: &Path) -> Result<PolicyFile, PolicyError> {
    let contents = std::fs::read(path).map_err(|e| PolicyError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_policy_file(path, &contents)
}

/// Parses a policy file's contents, read from `path`.
fn parse_policy_file(path: &Path, contents: &[u8]) -> Result<PolicyFile, PolicyError> {
    let origin = path.display().to_string();
    let text = std::str::from_utf8(contents).map_err(|e| PolicyError::Io {
        file: origin.clone(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    PolicyFile::parse(text, &origin)
}

/// Parses the file's new contents (the bytes just read, so what is checked is what was
/// seen to change).
fn reload(path: &Path, contents: &[u8]) -> Result<Snapshot, PolicyError> {
    parse_policy_file(path, contents)?.to_snapshot(&path.display().to_string())
}

/// Logs at WARN what `new` no longer enforces that `old` did: mTLS made weaker, DENY
/// rules or an ALLOW policy removed, the inbound policy gone.
fn warn_weakenings(source: &str, old: &Snapshot, new: &Snapshot) {
    for (scope, weakening) in mesh_core::inbound::diff::snapshot_weakenings(old, new) {
        tracing::warn!(
            source,
            %scope,
            version = new.version(),
            "policy change removes protection: {weakening}"
        );
    }
}

/// Logs at WARN the authorization rules of `new` that cannot be evaluated and so deny
/// (a CUSTOM policy, an unknown action, a field the mesh cannot check), each with its
/// reason; with `old`, only those it did not have.
fn warn_unsupported_rules(source: &str, old: Option<&Snapshot>, new: &Snapshot) {
    use mesh_core::inbound::diff::snapshot_unsupported_rules;
    let seen: std::collections::HashSet<(mesh_core::inbound::diff::InboundScope, &str)> = old
        .map(|o| snapshot_unsupported_rules(o).into_iter().collect())
        .unwrap_or_default();
    for (scope, reason) in snapshot_unsupported_rules(new) {
        if !seen.contains(&(scope, reason)) {
            tracing::warn!(source, %scope, "authorization fails closed: {reason}");
        }
    }
}

/// Follows the policy a control plane publishes and logs, for each update, what it takes
/// away ([`warn_weakenings`]) and the rules that deny because they cannot be evaluated
/// ([`warn_unsupported_rules`]). Ends with the outbound side (the mesh), like
/// [`prune_on_change`].
async fn audit_policy_changes(
    outbound: std::sync::Weak<Outbound>,
    mut watch: mesh_core::live::PolicyWatch,
) {
    let mut previous = watch.policy().snapshot();
    loop {
        let next = watch.changed().await;
        if outbound.strong_count() == 0 {
            return;
        }
        warn_weakenings("xds", &previous, &next);
        warn_unsupported_rules("xds", Some(&previous), &next);
        previous = next;
    }
}

async fn prune_on_change(
    outbound: std::sync::Weak<Outbound>,
    mut watch: mesh_core::live::PolicyWatch,
) {
    loop {
        watch.changed().await;
        let Some(o) = outbound.upgrade() else {
            return;
        };
        o.prune();
    }
}
