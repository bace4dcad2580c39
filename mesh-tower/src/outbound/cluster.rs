//! The live state of each cluster: its endpoints, picker, circuit breaker, retry budget,
//! outlier detector and connection pools.
//!
//! States are built from the snapshot when a request first needs them and rebuilt when the
//! snapshot's cluster or endpoints change (checked by pointer, per request, for free).
//! Counters that must survive a policy change (breaker, budget, outlier history) are
//! carried over; connection pools are kept unless the cluster's TLS or protocol changed,
//! so a weight or endpoint change drops no connection, while a TLS change stops the old
//! connections from serving new requests.

/// Looked up per request by cluster name: foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use mesh_core::breaker::CircuitBreaker;
use mesh_core::cluster::{Cluster, ClusterLoadAssignment, Discovery};
use mesh_core::lb::{pick_priority, priority_load, LbHost, Picker};
use mesh_core::outlier::{Outcome, OutlierDetector};
use mesh_core::retry::RetryBudget;
use rand::Rng;

use super::connect::{MeshConnector, UpstreamTlsConnect};
use super::demand::{DialDemand, DialDemands};
use super::pool::{ByAuthority, H1Pool, H2Pool, IDLE_TIMEOUT};
use crate::metrics::Metrics;

/// Builds the TLS connector for a cluster, when it has TLS settings.
pub trait TlsProvider: Send + Sync + 'static {
    /// The connector for `cluster`'s TLS settings, or an error saying why none can be made
    /// (then the cluster's requests fail rather than go out in plaintext).
    fn connector_for(
        &self,
        cluster: &Cluster,
    ) -> Result<Option<Arc<dyn UpstreamTlsConnect>>, String>;
}

/// One endpoint's live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) addr: SocketAddr,
    /// `http://addr` prebuilt, so a request only swaps the path in.
    pub(crate) authority: http::uri::Authority,
    weight: u32,
    usable: bool,
    pub(crate) ejected: AtomicBool,
    /// Requests in flight, shared with the endpoint's state in later snapshots (attempts
    /// in flight across an update count down where they counted up).
    pub(crate) active: Arc<AtomicU64>,
    /// Its HTTP/1.1 requests and connections, which its pool's dials wait on.
    pub(crate) demand: Option<Arc<DialDemand>>,
    /// Its HTTP/1.1 connections.
    pub(crate) http1: Option<Arc<H1Pool>>,
    /// Its HTTP/2 connection.
    pub(crate) http2: Option<Arc<H2Pool>>,
    /// Index in the cluster's outlier detector.
    detector_index: usize,
}

impl LbHost for EndpointState {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    fn is_available(&self) -> bool {
        self.usable && !self.ejected.load(Ordering::Relaxed)
    }
}

/// The endpoints of one priority and their picker.
#[derive(Debug)]
struct Level {
    endpoints: Vec<Arc<EndpointState>>,
    picker: Picker,
}

/// Connection pools of a cluster: each endpoint's, by authority (an endpoint that stays
/// keeps its own).
#[derive(Clone)]
pub(crate) struct Pools {
    http1: Arc<ByAuthority<H1Pool>>,
    http2: Arc<ByAuthority<H2Pool>>,
    /// What the HTTP/2 pools dial with.
    connector: MeshConnector,
    /// What the HTTP/1.1 pools dial with: the endpoints' demand gates their dials.
    connector_h1: MeshConnector,
    tls: bool,
    /// The endpoints' demand the HTTP/1.1 pools' dials wait on.
    demand: Arc<DialDemands>,
}

impl Pools {
    fn http2_for(&self, authority: &http::uri::Authority) -> Arc<H2Pool> {
        self.http2.register_with(authority.as_str(), || {
            H2Pool::new(authority, self.connector.clone())
        })
    }

    fn http1_for(&self, authority: &http::uri::Authority) -> Arc<H1Pool> {
        self.http1.register_with(authority.as_str(), || {
            H1Pool::new(
                authority,
                self.connector_h1.clone(),
                self.http2_for(authority),
                IDLE_TIMEOUT,
            )
        })
    }
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("tls", &self.tls).finish()
    }
}

/// Everything a request needs from a cluster.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) config: Arc<Cluster>,
    endpoints_src: Option<Arc<ClusterLoadAssignment>>,
    levels: Vec<Level>,
    priority_load: ArcSwap<Vec<u32>>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    outlier: Option<Arc<OutlierDetector<SocketAddr>>>,
    /// Nanoseconds since `epoch` of the next outlier sweep.
    next_sweep: AtomicU64,
    epoch: Instant,
    pub(crate) pools: Result<Pools, String>,
    /// Where its outlier ejections are counted.
    pub(crate) metrics: Metrics,
}

impl ClusterState {
    pub(crate) fn build(
        config: Arc<Cluster>,
        cla: Option<Arc<ClusterLoadAssignment>>,
        previous: Option<&ClusterState>,
        tls: Option<&dyn TlsProvider>,
        metrics: &Metrics,
        now: Instant,
    ) -> Self {
        // Endpoints by priority; unusable ones are kept (they count for priority health).
        let mut by_priority: Vec<Vec<(SocketAddr, u32, bool)>> = Vec::new();
        let mut dns_authority = None;
        if let Discovery::LogicalDns { host, port } = &config.discovery {
            // One endpoint: the name, resolved when connecting.
            // An IPv6 literal goes in brackets, or `::1:8080` is no authority.
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            dns_authority = http::uri::Authority::try_from(authority.as_str()).ok();
            by_priority.push(vec![(SocketAddr::from(([0, 0, 0, 0], *port)), 1, true)]);
        } else if let Some(cla) = &cla {
            for (loc, ep) in cla.endpoints() {
                let p = loc.priority as usize;
                if by_priority.len() <= p {
                    by_priority.resize_with(p + 1, Vec::new);
                }
                by_priority[p].push((ep.address, ep.weight.max(1), ep.health.is_usable()));
            }
        }
        let keys: Vec<SocketAddr> = by_priority.iter().flatten().map(|e| e.0).collect();
        // The in-flight counts of the previous endpoints, by address: one lookup per
        // endpoint, so an update of a 10,000-endpoint cluster stays linear.
        let previous_active: std::collections::HashMap<SocketAddr, Arc<AtomicU64>> = previous
            .map(|p| {
                p.levels
                    .iter()
                    .flat_map(|l| &l.endpoints)
                    .map(|e| (e.addr, Arc::clone(&e.active)))
                    .collect()
            })
            .unwrap_or_default();
        let breaker = match previous {
            Some(p) => {
                p.breaker.set_thresholds(&config.circuit_breakers);
                Arc::clone(&p.breaker)
            }
            None => Arc::new(CircuitBreaker::new(config.circuit_breakers.clone())),
        };
        // Keep connection pools unless what they were made for changed.
        let pools = match previous {
            Some(p)
                if p.config.tls == config.tls
                    && p.config.protocol == config.protocol
                    && p.config.connect_timeout == config.connect_timeout =>
            {
                p.pools.clone()
            }
            _ => make_pools(&config, &breaker, tls, metrics),
        };
        let pools_ok = pools.as_ref().ok();
        let mut next_index = 0;
        let levels: Vec<Level> = by_priority
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(|eps| {
                let endpoints: Vec<Arc<EndpointState>> = eps
                    .into_iter()
                    .map(|(addr, weight, usable)| {
                        let authority = match &dns_authority {
                            Some(a) => a.clone(),
                            None => http::uri::Authority::try_from(addr.to_string().as_str())
                                .unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
                        };
                        let detector_index = next_index;
                        next_index += 1;
                        // An endpoint that stays keeps its in-flight counter itself: the
                        // attempts sent before the update end on it.
                        let active = previous_active.get(&addr).cloned().unwrap_or_default();
                        Arc::new(EndpointState {
                            addr,
                            weight,
                            usable,
                            ejected: AtomicBool::new(false),
                            active,
                            demand: pools_ok.map(|p| p.demand.register(authority.as_str())),
                            http1: pools_ok.map(|p| p.http1_for(&authority)),
                            http2: pools_ok.map(|p| p.http2_for(&authority)),
                            authority,
                            detector_index,
                        })
                    })
                    .collect();
                let picker = Picker::build(&config.lb, &endpoints, |e| e.addr.to_string());
                Level { endpoints, picker }
            })
            .collect();

        let budget =
            config
                .retry_budget
                .as_ref()
                .map(|b| match previous.and_then(|p| p.budget.clone()) {
                    Some(existing) => {
                        existing.set_config(b);
                        existing
                    }
                    None => Arc::new(RetryBudget::new(b)),
                });
        let outlier = config.outlier_detection.as_ref().map(|oc| {
            Arc::new(match previous.and_then(|p| p.outlier.as_ref()) {
                Some(old) => old.rebuild(oc.clone(), keys.clone()),
                None => OutlierDetector::new(oc.clone(), keys.clone(), now),
            })
        });
        let state = Self {
            endpoints_src: cla,
            levels,
            priority_load: ArcSwap::from_pointee(Vec::new()),
            breaker,
            budget,
            outlier,
            next_sweep: AtomicU64::new(0),
            epoch: previous.map_or(now, |p| p.epoch),
            pools,
            config,
            metrics: metrics.clone(),
        };
        if let Some(det) = &state.outlier {
            for ep in state.levels.iter().flat_map(|l| &l.endpoints) {
                ep.ejected
                    .store(det.is_ejected(ep.detector_index, now), Ordering::Relaxed);
            }
            let first = state.nanos(now) + det.config().interval.as_nanos() as u64;
            state.next_sweep.store(first, Ordering::Relaxed);
        }
        state.refresh_priority_load();
        state
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn refresh_priority_load(&self) {
        let health: Vec<(u32, u32)> = self
            .levels
            .iter()
            .map(|l| {
                let healthy = l.endpoints.iter().filter(|e| e.is_available()).count();
                (healthy as u32, l.endpoints.len() as u32)
            })
            .collect();
        self.priority_load.store(Arc::new(priority_load(&health)));
    }

    /// Picks an endpoint, avoiding `avoid` (the previous attempt's) when another is
    /// available. Runs the outlier sweep first when one is due.
    pub(crate) fn pick(
        &self,
        hash: Option<u64>,
        avoid: Option<SocketAddr>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Arc<EndpointState>> {
        self.maybe_sweep(now, rng);
        let load = self.priority_load.load();
        let level = pick_priority(&load, rng.random()).and_then(|p| self.levels.get(p))?;
        let mut choice = level.picker.pick(&level.endpoints, hash, rng)?;
        if let Some(avoid) = avoid {
            // As Envoy's previous-hosts predicate: a few more draws for another endpoint.
            for _ in 0..3 {
                if level.endpoints[choice].addr != avoid {
                    break;
                }
                choice = level
                    .picker
                    .pick(&level.endpoints, Some(rng.random()), rng)?;
            }
        }
        level.endpoints.get(choice).cloned()
    }

    /// Whether the cluster has outlier detection (else [`Self::record`] does nothing).
    pub(crate) fn detects_outliers(&self) -> bool {
        self.outlier.is_some()
    }

    /// Records an attempt's outcome for outlier detection.
    pub(crate) fn record(&self, ep: &EndpointState, outcome: Outcome, now: Instant) {
        if let Some(det) = &self.outlier {
            if det.record(ep.detector_index, outcome, now).is_some() {
                ep.ejected.store(true, Ordering::Relaxed);
                self.refresh_priority_load();
                tracing::info!(cluster = self.config.name(), endpoint = %ep.addr, "outlier ejected");
            }
        }
    }

    fn maybe_sweep(&self, now: Instant, rng: &mut impl Rng) {
        let Some(det) = &self.outlier else {
            return;
        };
        let due = self.next_sweep.load(Ordering::Relaxed);
        let now_n = self.nanos(now);
        if now_n < due {
            return;
        }
        let next = now_n + det.config().interval.as_nanos() as u64;
        // One request runs the sweep; the others go on.
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let report = det.on_interval(now, rng);
        if report.ejected.is_empty() && report.returned.is_empty() {
            return;
        }
        for ep in self.levels.iter().flat_map(|l| &l.endpoints) {
            ep.ejected
                .store(det.is_ejected(ep.detector_index, now), Ordering::Relaxed);
        }
        self.refresh_priority_load();
    }

    /// Endpoints with their state, for admin pages and tests.
    pub(crate) fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(p, l)| {
                l.endpoints.iter().map(move |e| EndpointStatus {
                    address: e.addr,
                    priority: p as u32,
                    weight: e.weight,
                    healthy: e.usable,
                    ejected: e.ejected.load(Ordering::Relaxed),
                    active_requests: e.active.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// An endpoint as the admin page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// Address.
    pub address: SocketAddr,
    /// Priority level.
    pub priority: u32,
    /// Weight.
    pub weight: u32,
    /// Healthy as the control plane says.
    pub healthy: bool,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Requests in flight.
    pub active_requests: u64,
}

/// The name of a cluster made for a target outside the policy starts with this.
pub(crate) const PASSTHROUGH: &str = "passthrough|";

fn make_pools(
    config: &Cluster,
    breaker: &Arc<CircuitBreaker>,
    tls: Option<&dyn TlsProvider>,
    metrics: &Metrics,
) -> Result<Pools, String> {
    let tls_connector = match (&config.tls, tls) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(format!(
                "cluster {} requires TLS but the mesh has no certificates",
                config.name()
            ))
        }
        (Some(_), Some(provider)) => provider.connector_for(config)?,
    };
    let is_tls = tls_connector.is_some();
    let mut connector =
        MeshConnector::new(config.connect_timeout, Arc::clone(breaker), tls_connector)
            .with_metrics(metrics.clone());
    // A service of the mesh's policy learns who is calling (Istio's metadata exchange); a
    // destination dialed by DNS outside the policy does not.
    if !config.name().starts_with(PASSTHROUGH) {
        connector = connector.with_exchange();
    }
    // HTTP/1.1 carries one request per connection: the pools keep every connection warm
    // (up to the breaker's `max_connections`, as Envoy keeps them until its idle timeout),
    // so a burst's connections serve the next burst instead of being dialed (and handshaken)
    // again, and close them after `IDLE_TIMEOUT` idle.
    let demand = Arc::new(DialDemands::default());
    Ok(Pools {
        http1: Arc::default(),
        http2: Arc::default(),
        connector_h1: connector.clone().with_demand(Arc::clone(&demand)),
        connector,
        tls: is_tls,
        demand,
    })
}

/// All cluster states, swapped whole when one changes.
pub(crate) struct ClusterRegistry {
    states: ArcSwap<HashMap<String, Arc<ClusterState>>>,
    /// Targets the policy does not know, by target.
    passthrough: ArcSwap<HashMap<String, Arc<ClusterState>>>,
    rebuild: Mutex<()>,
    tls: Option<Arc<dyn TlsProvider>>,
    metrics: Metrics,
}

impl std::fmt::Debug for ClusterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRegistry")
            .field("clusters", &self.states.load().len())
            .finish()
    }
}

impl ClusterRegistry {
    pub(crate) fn new(tls: Option<Arc<dyn TlsProvider>>) -> Self {
        Self {
            states: ArcSwap::from_pointee(HashMap::default()),
            passthrough: ArcSwap::from_pointee(HashMap::default()),
            rebuild: Mutex::new(()),
            tls,
            metrics: Metrics::default(),
        }
    }

    /// Counts the connections its clusters open in `metrics` (set before any use).
    pub(crate) fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// The state for `config` with `cla`, rebuilt when either differs from what it was
    /// built from.
    pub(crate) fn get(
        &self,
        config: &Arc<Cluster>,
        cla: Option<&Arc<ClusterLoadAssignment>>,
    ) -> Arc<ClusterState> {
        let current = |s: &ClusterState| {
            Arc::ptr_eq(&s.config, config)
                && match (&s.endpoints_src, cla) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        if let Some(s) = self.states.load().get(config.name()) {
            if current(s) {
                return Arc::clone(s);
            }
        }
        // Rare: build under a lock so concurrent requests build once.
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.states.load_full();
        let previous = map.get(config.name());
        if let Some(s) = previous {
            if current(s) {
                return Arc::clone(s);
            }
        }
        let state = Arc::new(ClusterState::build(
            Arc::clone(config),
            cla.cloned(),
            previous.map(|p| p.as_ref()),
            self.tls.as_deref(),
            &self.metrics,
            Instant::now(),
        ));
        let mut next = HashMap::clone(&map);
        next.insert(config.name().to_owned(), Arc::clone(&state));
        self.states.store(Arc::new(next));
        state
    }

    /// The state for a target the policy does not know: dialed by DNS name with default
    /// settings (a breaker with Envoy's default limits, round robin, no retries).
    pub(crate) fn passthrough(&self, target: &str) -> Arc<ClusterState> {
        if let Some(s) = self.passthrough.load().get(target) {
            return Arc::clone(s);
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.passthrough.load_full();
        if let Some(s) = map.get(target) {
            return Arc::clone(s);
        }
        let (host, port) = match target.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().unwrap_or(80),
            ),
            None => (target, 80),
        };
        let mut cluster = Cluster::new(format!("{PASSTHROUGH}{target}"));
        cluster.discovery = Discovery::LogicalDns {
            host: host.to_owned(),
            port,
        };
        let state = Arc::new(ClusterState::build(
            Arc::new(cluster),
            None,
            None,
            None,
            &self.metrics,
            Instant::now(),
        ));
        let mut next = HashMap::clone(&map);
        next.insert(target.to_owned(), Arc::clone(&state));
        self.passthrough.store(Arc::new(next));
        state
    }

    /// Drops the states of clusters the policy no longer has.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.states.load_full();
        if map.keys().all(|k| keep(k)) {
            return;
        }
        let next: HashMap<_, _> = map
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        self.states.store(Arc::new(next));
    }

    /// Every cluster state, for admin pages.
    pub(crate) fn snapshot(&self) -> Arc<HashMap<String, Arc<ClusterState>>> {
        self.states.load_full()
    }
}
