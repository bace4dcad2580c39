//! The mesh as an application holds it: the live policy and the clients taken from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::live::LivePolicy;
use mesh_core::policy_file::{PolicyError, PolicyFile};
use mesh_core::Snapshot;

use crate::metrics::{Metrics, WorkloadLabels};
use crate::outbound::{
    BreakerStatus, EndpointStatus, HttpClient, Outbound, OutboundConfig, TlsProvider,
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
}

/// Why the mesh could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshBuildError {
    /// The policy file is unreadable or invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The mesh: one per process, cheap to clone.
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
    metrics: Metrics,
}

/// Builds a [`Mesh`].
#[derive(Default)]
pub struct MeshBuilder {
    policy_file: Option<PathBuf>,
    snapshot: Option<Snapshot>,
    tls: Option<Arc<dyn TlsProvider>>,
    outbound: OutboundConfig,
    watch_interval: Option<Duration>,
    workload: Option<WorkloadLabels>,
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

    /// Uses this TLS provider for clusters that ask for TLS.
    pub fn tls(mut self, tls: Arc<dyn TlsProvider>) -> Self {
        self.tls = Some(tls);
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

    /// Who this workload is, for the metrics' labels (default: unknown).
    pub fn workload(mut self, labels: WorkloadLabels) -> Self {
        self.workload = Some(labels);
        self
    }

    /// Builds the mesh. With a policy file, the file is read now (a bad file is an error)
    /// and, inside a tokio runtime, watched for changes.
    pub fn build(self) -> Result<Mesh, MeshBuildError> {
        let (snapshot, source, file) = match (self.snapshot, &self.policy_file) {
            (Some(s), _) => (s, PolicySource::Snapshot, None),
            (None, Some(path)) => {
                let file = PolicyFile::load(path)?;
                let snap = file.to_snapshot(&path.display().to_string())?;
                (snap, PolicySource::File(path.clone()), Some(file))
            }
            (None, None) => (Snapshot::empty(), PolicySource::Defaults, None),
        };
        let policy = LivePolicy::new(snapshot);
        let metrics = Metrics::new(self.workload.unwrap_or_default());
        let outbound = Arc::new(
            Outbound::new(policy.clone(), self.tls, self.outbound).with_metrics(metrics.clone()),
        );
        let mesh = Mesh {
            inner: Arc::new(Inner {
                policy,
                outbound,
                source,
                file,
                metrics,
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
        }
        Ok(mesh)
    }
}

impl Mesh {
    /// Starts building a mesh.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// A mesh on built-in defaults.
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
        HttpClient::new(Arc::clone(&self.inner.outbound), Some(strip_scheme(target)))
    }

    /// The endpoints of every cluster in use, with health and ejections.
    pub fn cluster_status(&self) -> Vec<(String, Vec<EndpointStatus>)> {
        self.inner.outbound.cluster_status()
    }

    /// Each cluster's circuit-breaker limits in use.
    pub fn breaker_status(&self) -> Vec<(String, Vec<BreakerStatus>)> {
        self.inner.outbound.breaker_status()
    }

    /// The mesh's metrics: the outbound client records here; hand it to
    /// [`MetricsLayer`](crate::metrics::MetricsLayer) and the admin server.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

fn unreachable_build(e: MeshBuildError) -> Mesh {
    tracing::error!(error = %e, "building a mesh from a snapshot failed; using defaults");
    let policy = LivePolicy::new(Snapshot::empty());
    let outbound = Arc::new(Outbound::new(
        policy.clone(),
        None,
        OutboundConfig::default(),
    ));
    Mesh {
        inner: Arc::new(Inner {
            policy,
            outbound,
            source: PolicySource::Defaults,
            file: None,
            metrics: Metrics::default(),
        }),
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

async fn watch_file(mesh: std::sync::Weak<Inner>, path: PathBuf, every: Duration) {
    let mut last = std::fs::read(&path).ok();
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
        let Ok(now) = tokio::fs::read(&path).await else {
            continue;
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        last = Some(now);
        match reload(&path) {
            Ok(snap) => {
                tracing::info!(file = %path.display(), version = snap.version(), "policy file reloaded");
                policy.publish(snap);
            }
            // The last good policy stays in force.
            Err(e) => {
                tracing::error!(error = %e, "policy file rejected; keeping the previous policy")
            }
        }
    }
}

fn reload(path: &Path) -> Result<Snapshot, PolicyError> {
    PolicyFile::load(path)?.to_snapshot(&path.display().to_string())
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
