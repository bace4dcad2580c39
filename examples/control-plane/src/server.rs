//! The running control plane: ADS servers on TCP and/or a unix socket, fed from the input
//! files, re-read when they change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::server::AdsServer;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::envoy::Resources;
use crate::input::{self, InputError, Served};

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// Input files and directories.
    pub paths: Vec<PathBuf>,
    /// TCP address for ADS (`None`: TCP off).
    pub listen: Option<SocketAddr>,
    /// Unix socket path for ADS.
    pub unix: Option<PathBuf>,
    /// How often the files are checked for changes.
    pub poll: Duration,
}

/// What the control plane is serving.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Counts pushes: 1 is the initial config, each accepted edit adds one.
    pub version: u64,
    /// The served resources' counts.
    pub summary: String,
    /// Edits rejected so far.
    pub rejected: u64,
    /// Why the last edit was rejected (cleared by the next accepted one).
    pub last_error: Option<String>,
    /// What the last push (or the initial config) took away or denies, as logged at WARN:
    /// files deleted and what they declared, workloads whose mTLS got weaker or whose
    /// authorization rules were removed, rules that deny because the mesh cannot enforce
    /// them (a CUSTOM AuthorizationPolicy).
    pub warnings: Vec<String>,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The initial configuration is invalid.
    #[error("invalid configuration:\n{0}")]
    Input(#[from] InputError),
    /// A socket could not be opened.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The address or path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Neither TCP nor a unix socket was configured.
    #[error("nothing to listen on: give --listen or --unix")]
    NoListener,
}

#[derive(Debug)]
struct State {
    served: Served,
    fingerprint: u64,
}

/// A running control plane; dropping it stops serving.
#[derive(Debug)]
pub struct ControlPlane {
    tcp: Option<SocketAddr>,
    status: watch::Receiver<Status>,
    shared: Arc<Shared>,
    watcher: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    servers: Vec<AdsServer>,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    paths: Vec<PathBuf>,
}

impl ControlPlane {
    /// Loads the input, starts serving it, and starts watching the files.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let paths = config.paths.clone();
        let fingerprint = input::fingerprint(&paths);
        let served = load(paths.clone()).await?;
        let mut servers = Vec::new();
        let mut tcp = None;
        if let Some(addr) = config.listen {
            let server = AdsServer::start_on(addr)
                .await
                .map_err(|source| StartError::Listen {
                    what: addr.to_string(),
                    source,
                })?;
            tcp = server.addr();
            servers.push(server);
        }
        if let Some(path) = &config.unix {
            // A socket left by an earlier run would make bind fail.
            let _ = std::fs::remove_file(path);
            let server =
                AdsServer::start_unix(path)
                    .await
                    .map_err(|source| StartError::Listen {
                        what: path.display().to_string(),
                        source,
                    })?;
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(StartError::NoListener);
        }
        for server in &servers {
            server.set_wildcard_filter(Arc::new(wildcard_visible));
            server.set_variant(Arc::new(sidecar_variant));
        }
        apply(&servers, &Resources::default(), &served.resources);
        let warnings = audit(None, &served);
        let status = Status {
            version: 1,
            summary: served.resources.summary(),
            rejected: 0,
            last_error: None,
            warnings,
        };
        tracing::info!("push version=1 {}", status.summary);
        let (tx, rx) = watch::channel(status);
        let shared = Arc::new(Shared {
            servers,
            state: Mutex::new(State {
                served,
                fingerprint,
            }),
            status: tx,
            paths,
        });
        let watcher = tokio::spawn(watch_files(shared.clone(), config.poll));
        Ok(Self {
            tcp,
            status: rx,
            shared,
            watcher,
        })
    }

    /// The TCP address ADS is served on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The ADS servers (TCP first, then the unix socket), whose recorded requests show
    /// what each client ACKed and NACKed.
    pub fn servers(&self) -> &[AdsServer] {
        &self.shared.servers
    }

    /// What is being served; changes on every push and every rejected edit.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The servers stop when the last handle on them goes: this one, and the watcher's.
        self.watcher.abort();
    }
}

/// Whether a node asked for the proxyless generator (`GENERATOR: grpc` in its metadata).
pub fn is_proxyless(node: Option<&Node>) -> bool {
    node.and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get("GENERATOR"))
        .is_some_and(|v| matches!(&v.kind, Some(Kind::StringValue(g)) if g == "grpc"))
}

/// What a wildcard subscription gets, as istiod decides by the node's `GENERATOR`
/// metadata: proxyless (`GENERATOR: grpc`) nodes get the proxyless listeners (API
/// listeners, which Envoy ignores, and gRPC's inbound template with certificate-provider
/// TLS, which Envoy NACKs); every other node (an Envoy sidecar, the mesh with
/// `MESH_ISTIO_SHAPE=sidecar`) gets the sidecar shape's listeners (`0.0.0.0_PORT`,
/// `virtualInbound`). Clusters and endpoints go to everyone, sidecar nodes getting the
/// sidecar shape's clusters ([`sidecar_variant`]). Clients that name their listeners get
/// them whatever their node.
fn wildcard_visible(node: Option<&Node>, t: XdsType, name: &str) -> bool {
    t != XdsType::Listener || is_proxyless(node) != crate::envoy::sidecar::is_sidecar_listener(name)
}

/// The variant of the resources a node gets: `sidecar` for every node but proxyless ones.
fn sidecar_variant(node: Option<&Node>) -> Option<String> {
    (!is_proxyless(node)).then(|| SIDECAR.to_owned())
}

const SIDECAR: &str = "sidecar";

/// Reads and translates the files off the async threads.
async fn load(paths: Vec<PathBuf>) -> Result<Served, InputError> {
    let joined = tokio::task::spawn_blocking(move || {
        let input = input::load(&paths)?;
        for skipped in &input.skipped {
            tracing::info!("skipped {skipped} (not an Istio networking/security kind)");
        }
        input.to_served()
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) => Err(InputError(vec![format!("loading failed: {e}")])),
    }
}

async fn watch_files(shared: Arc<Shared>, poll: Duration) {
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let paths = shared.paths.clone();
        let Ok(fingerprint) = tokio::task::spawn_blocking(move || input::fingerprint(&paths)).await
        else {
            continue;
        };
        let mut state = shared.state.lock().await;
        if fingerprint == state.fingerprint {
            continue;
        }
        state.fingerprint = fingerprint;
        match load(shared.paths.clone()).await {
            Ok(served) => {
                let warnings = audit(Some(&state.served), &served);
                if served.resources == state.served.resources {
                    tracing::info!("files changed; resources unchanged, nothing pushed");
                    state.served = served;
                    if !warnings.is_empty() {
                        shared.status.send_modify(|s| s.warnings = warnings);
                    }
                    continue;
                }
                apply(&shared.servers, &state.served.resources, &served.resources);
                let summary = served.resources.summary();
                state.served = served;
                shared.status.send_modify(|s| {
                    s.version += 1;
                    s.summary = summary.clone();
                    s.last_error = None;
                    s.warnings = warnings;
                    tracing::info!("push version={} {summary}", s.version);
                });
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!("rejected edit; still serving the last good config:\n{message}");
                shared.status.send_modify(|s| {
                    s.rejected += 1;
                    s.last_error = Some(message);
                });
            }
        }
    }
}

/// What `new` takes away compared with `old` (`None`: the initial config), each logged
/// at WARN: files deleted (a deliberate removal) with what they declared; workloads
/// whose mTLS got weaker or whose DENY rules or ALLOW policy went away; authorization
/// rules that now deny because the mesh cannot enforce them (CUSTOM, an unknown action),
/// with the reason.
fn audit(old: Option<&Served>, new: &Served) -> Vec<String> {
    use mesh_core::inbound::diff::weakenings;
    use std::collections::{HashMap, HashSet};

    let mut out = Vec::new();
    if let Some(old) = old {
        for (file, declared) in &old.declared {
            if new.declared.contains_key(file) {
                continue;
            }
            let what = if declared.is_empty() {
                "nothing the control plane serves".to_owned()
            } else {
                declared.join(", ")
            };
            out.push(format!("{file} was deleted: removing {what}"));
        }
    }
    let before: HashMap<SocketAddr, &crate::envoy::InboundWorkload> = old
        .map(|o| o.inbound.iter().map(|w| (w.addr, w)).collect())
        .unwrap_or_default();
    for w in &new.inbound {
        let previous = before.get(&w.addr);
        if let Some(p) = previous {
            for weakening in weakenings(Some(&p.policy), Some(&w.policy)) {
                out.push(format!(
                    "policy change removes protection: {}: {weakening}",
                    w.workload
                ));
            }
        }
        let known: HashSet<&str> = previous
            .map(|p| {
                p.policy
                    .authorization
                    .unsupported_rules()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        for reason in w.policy.authorization.unsupported_rules() {
            if !known.contains(reason) {
                out.push(format!(
                    "authorization fails closed: {}: {reason}",
                    w.workload
                ));
            }
        }
    }
    for line in &out {
        tracing::warn!("{line}");
    }
    out
}

/// Pushes the difference: additions and changes bottom-up (clusters and endpoints before
/// the routes and listeners that name them), then removals top-down.
fn apply(servers: &[AdsServer], old: &Resources, new: &Resources) {
    let empty = BTreeMap::new();
    let of = |r: &Resources, t| r.by_type.get(&t).unwrap_or(&empty).clone();
    let add_order = [
        XdsType::Cluster,
        XdsType::ClusterLoadAssignment,
        XdsType::RouteConfiguration,
        XdsType::Listener,
    ];
    let base_clusters_change = of(old, XdsType::Cluster) != of(new, XdsType::Cluster);
    if old.sidecar_clusters != new.sidecar_clusters {
        let clusters: Vec<(String, Any)> = new
            .sidecar_clusters
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        // One version per change: the base clusters' push carries the variant too.
        for s in servers {
            s.put_variant(
                SIDECAR,
                XdsType::Cluster,
                clusters.clone(),
                !base_clusters_change,
            );
        }
    }
    for t in add_order {
        let (before, after) = (of(old, t), of(new, t));
        let changed: Vec<(String, Any)> = after
            .into_iter()
            .filter(|(name, any)| before.get(name) != Some(any))
            .collect();
        if !changed.is_empty() {
            for s in servers {
                s.put_all(t, changed.clone());
            }
        }
    }
    for t in add_order.into_iter().rev() {
        let after = of(new, t);
        for name in of(old, t).keys().filter(|n| !after.contains_key(*n)) {
            for s in servers {
                s.remove(t, name);
            }
        }
    }
}
