//! Whether the workload is ready for traffic: shared by the mesh, its listeners, the admin
//! server's readiness path and the gRPC health service.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// What readiness says now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadinessStatus {
    /// The policy is in and every listener serves.
    Ready,
    /// Something is still missing; the reason names what (the policy, a listener).
    NotReady {
        /// What is awaited, for a person (`listener 127.0.0.1:8080: waiting for ...`).
        reason: String,
    },
    /// The workload is shutting down: it will not be ready again.
    ShuttingDown,
}

impl ReadinessStatus {
    /// Ready for traffic.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl fmt::Display for ReadinessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::NotReady { reason } => write!(f, "not ready: {reason}"),
            Self::ShuttingDown => f.write_str("not ready: shutting down"),
        }
    }
}

/// The parts readiness is made of.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Why the first policy is not in yet; `None` once it is.
    policy_waiting: Option<String>,
    /// Registered conditions (listeners, the application's holds) by id.
    conditions: BTreeMap<u64, Condition>,
    next_id: u64,
    shutting_down: bool,
}

#[derive(Debug)]
struct Condition {
    name: String,
    /// Why it is not met; `None` once met.
    waiting: Option<String>,
}

impl State {
    pub(crate) fn status(&self) -> ReadinessStatus {
        if self.shutting_down {
            return ReadinessStatus::ShuttingDown;
        }
        let mut reasons: Vec<String> = Vec::new();
        if let Some(why) = &self.policy_waiting {
            reasons.push(why.clone());
        }
        for c in self.conditions.values() {
            if let Some(why) = &c.waiting {
                reasons.push(format!("{}: {why}", c.name));
            }
        }
        if reasons.is_empty() {
            ReadinessStatus::Ready
        } else {
            ReadinessStatus::NotReady {
                reason: reasons.join("; "),
            }
        }
    }
}

/// The workload's readiness: cheap to clone, one per [`Mesh`](crate::Mesh)
/// ([`Mesh::readiness`](crate::Mesh::readiness)).
///
/// Ready when all of these hold:
/// - the first policy arrived: at once for a policy file, a snapshot or the defaults; for
///   xDS, when the client publishes its first complete snapshot (every listener it watches,
///   and what they name, has arrived);
/// - every listener made by [`Mesh::listener`](crate::Mesh::listener) serves: it passed
///   gRFC A36's gate (its inbound policy arrived, when that comes from xDS) and its accept
///   loop runs;
/// - every [`hold`](Self::hold) the application took has been released;
/// - nothing has started shutting down: a mesh listener whose shutdown signal fired, or
///   [`shut_down`](Self::shut_down). That is final.
///
/// A listener counts from the moment it is made, so make it before the probes start
/// (before the admin server, as the examples do); until then only the policy counts.
///
/// ```
/// use mesh_tower::health::{Readiness, ReadinessStatus};
///
/// let readiness = Readiness::new();
/// let warming = readiness.hold("cache", "loading the price list");
/// assert_eq!(
///     readiness.status().to_string(),
///     "not ready: cache: loading the price list"
/// );
/// warming.release();
/// assert_eq!(readiness.status(), ReadinessStatus::Ready);
/// readiness.shut_down();
/// assert_eq!(readiness.status(), ReadinessStatus::ShuttingDown);
/// ```
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<State>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Readiness with the policy in: ready until a condition is registered.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Readiness waiting for the first policy (`reason` says from where) until
    /// [`policy_arrived`](Self::policy_arrived).
    pub fn waiting_for_policy(reason: impl Into<String>) -> Self {
        let this = Self::new();
        let reason = reason.into();
        this.state.send_modify(|s| s.policy_waiting = Some(reason));
        this
    }

    /// What readiness says now.
    pub fn status(&self) -> ReadinessStatus {
        self.state.borrow().status()
    }

    /// Ready for traffic now.
    pub fn is_ready(&self) -> bool {
        self.status().is_ready()
    }

    /// Follows readiness as it changes.
    pub fn watch(&self) -> ReadinessWatch {
        ReadinessWatch {
            rx: self.state.subscribe(),
        }
    }

    /// The first policy has arrived (a policy source that is not the mesh's own calls it).
    pub fn policy_arrived(&self) {
        self.state
            .send_if_modified(|s| s.policy_waiting.take().is_some());
    }

    /// While the first policy is awaited, says why in more detail (the xDS client's
    /// connection state); no effect once it has arrived.
    pub(crate) fn policy_waiting_because(&self, reason: String) {
        self.state
            .send_if_modified(|s| match &mut s.policy_waiting {
                Some(why) if *why != reason => {
                    *why = reason;
                    true
                }
                _ => false,
            });
    }

    /// Holds readiness back until the returned guard is released or dropped: for what the
    /// application must do before it takes traffic (warm a cache, open a database pool).
    #[must_use = "readiness is held only while the guard lives"]
    pub fn hold(&self, name: impl Into<String>, reason: impl Into<String>) -> ReadinessHold {
        ReadinessHold {
            condition: self.condition(name.into(), reason.into()),
        }
    }

    /// A listener on `addr` that is not serving yet.
    pub(crate) fn listener(&self, addr: SocketAddr) -> ListenerReadiness {
        ListenerReadiness {
            condition: self.condition(format!("listener {addr}"), "not serving yet".into()),
        }
    }

    fn condition(&self, name: String, reason: String) -> ConditionGuard {
        let mut id = 0;
        self.state.send_modify(|s| {
            id = s.next_id;
            s.next_id += 1;
            s.conditions.insert(
                id,
                Condition {
                    name,
                    waiting: Some(reason),
                },
            );
        });
        ConditionGuard {
            readiness: self.clone(),
            id,
        }
    }

    /// The workload is shutting down: not ready from now on, and every gRPC health status
    /// turns `NOT_SERVING`. Call it when the process is told to stop, before draining (a
    /// mesh listener does when its shutdown signal fires).
    pub fn shut_down(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.shutting_down, true));
    }

    /// Whether [`shut_down`](Self::shut_down) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.state.borrow().shutting_down
    }
}

/// Changes of a [`Readiness`].
#[derive(Debug, Clone)]
pub struct ReadinessWatch {
    rx: watch::Receiver<State>,
}

impl ReadinessWatch {
    /// The status now (and marks it seen).
    pub fn status(&mut self) -> ReadinessStatus {
        self.rx.borrow_and_update().status()
    }

    /// Waits until something changed since the last [`status`](Self::status). Never
    /// returns while the readiness lives; returns at once if it is gone.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A registered condition; removed when dropped.
#[derive(Debug)]
struct ConditionGuard {
    readiness: Readiness,
    id: u64,
}

impl ConditionGuard {
    fn set(&self, waiting: Option<String>) {
        self.readiness
            .state
            .send_if_modified(|s| match s.conditions.get_mut(&self.id) {
                Some(c) if c.waiting != waiting => {
                    c.waiting = waiting;
                    true
                }
                _ => false,
            });
    }
}

impl Drop for ConditionGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.readiness
            .state
            .send_if_modified(|s| s.conditions.remove(&id).is_some());
    }
}

/// Holds readiness back while it lives ([`Readiness::hold`]).
#[derive(Debug)]
pub struct ReadinessHold {
    condition: ConditionGuard,
}

impl ReadinessHold {
    /// Says what is awaited now.
    pub fn update(&self, reason: impl Into<String>) {
        self.condition.set(Some(reason.into()));
    }

    /// Done: readiness no longer waits for this.
    pub fn release(self) {}
}

/// One listener's part in readiness, kept by the listener.
#[derive(Debug)]
pub(crate) struct ListenerReadiness {
    condition: ConditionGuard,
}

impl ListenerReadiness {
    /// Not serving, because of `reason`.
    pub(crate) fn waiting(&self, reason: impl Into<String>) {
        self.condition.set(Some(reason.into()));
    }

    /// Its accept loop runs.
    pub(crate) fn serving(&self) {
        self.condition.set(None);
    }

    /// Its shutdown signal fired: the workload is shutting down.
    pub(crate) fn shutting_down(&self) {
        self.condition.readiness.shut_down();
    }
}

/// Marks the first policy arrived when the xDS client publishes its first complete
/// snapshot; until then keeps the reason up to date with the client's state.
pub(crate) async fn follow_xds(
    readiness: Readiness,
    mut view: watch::Receiver<Arc<mesh_xds_client::transport::ClientView>>,
) {
    loop {
        let reason = {
            let v = view.borrow_and_update();
            if v.snapshot.is_some() {
                readiness.policy_arrived();
                return;
            }
            xds_waiting_reason(&v)
        };
        readiness.policy_waiting_because(reason);
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Why an xDS client has no complete snapshot yet, for a person.
fn xds_waiting_reason(v: &mesh_xds_client::transport::ClientView) -> String {
    use mesh_xds_client::ads::ResourceState;
    let server = v.server.as_deref().unwrap_or("the control plane");
    let state = if let Some(error) = &v.last_error {
        format!("not connected: {error}")
    } else if !v.connected {
        "connecting".to_owned()
    } else if !v.answered {
        "connected, no response yet".to_owned()
    } else {
        let pending: Vec<String> = v
            .cache
            .iter()
            .filter(|(_, _, entry)| entry.state == ResourceState::Requested)
            .map(|(t, name, _)| format!("{} {name}", t.short_name()))
            .take(5)
            .collect();
        if pending.is_empty() {
            "connected".to_owned()
        } else {
            format!("connected, waiting for {}", pending.join(", "))
        }
    };
    format!("waiting for the first policy from the xDS server {server} ({state})")
}
