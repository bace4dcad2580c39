//! The outlier-detection state machine.

use std::hash::Hash;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Outcome, OutlierConfig};

/// Looked up per response: foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Why a host was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectionReason {
    /// `consecutive_5xx` failures in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` gateway failures in a row.
    ConsecutiveGatewayFailure,
    /// Success rate below the cluster's mean minus the allowed deviation.
    SuccessRate,
    /// Failure percentage at or above the threshold.
    FailurePercentage,
}

/// What one [`OutlierDetector::on_interval`] sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntervalReport {
    /// Hosts ejected by this sweep, with the reason.
    pub ejected: Vec<(usize, EjectionReason)>,
    /// Hosts whose ejection ended and that were returned to service.
    pub returned: Vec<usize>,
}

/// Per-host state, all atomics so that recording needs only `&self`.
#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Requests and successes in the current interval.
    requests: AtomicU64,
    successes: AtomicU64,
    /// Nanoseconds since the detector's epoch when the ejection ends; 0 when not ejected.
    ejected_until: AtomicU64,
    /// The ejection multiplier: ejections not yet forgiven.
    ejections: AtomicU32,
}

impl HostState {
    fn copy_from(&self, other: &HostState) {
        let copy = |to: &AtomicU64, from: &AtomicU64| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed)
        };
        let copy32 = |to: &AtomicU32, from: &AtomicU32| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed)
        };
        copy32(&self.consecutive_5xx, &other.consecutive_5xx);
        copy32(&self.consecutive_gateway, &other.consecutive_gateway);
        copy(&self.requests, &other.requests);
        copy(&self.successes, &other.successes);
        copy(&self.ejected_until, &other.ejected_until);
        copy32(&self.ejections, &other.ejections);
    }
}

/// Outlier detection over one cluster's host set.
///
/// Hosts are addressed by index into the current set; each also has a stable key `K`
/// (such as its `SocketAddr`) so that [`OutlierDetector::rebuild`] can carry state across
/// an endpoint update. `Send + Sync`; recording and ejection checks take `&self` and use
/// atomics only.
#[derive(Debug)]
pub struct OutlierDetector<K> {
    config: OutlierConfig,
    epoch: Instant,
    keys: Vec<K>,
    index: HashMap<K, usize>,
    hosts: Vec<HostState>,
    ejected_count: AtomicUsize,
    /// SplitMix64 state for enforcement draws made inside `record`.
    draw_state: AtomicU64,
}

impl<K: Eq + Hash + Clone> OutlierDetector<K> {
    /// A detector with no history over `keys` (the host set, in index order).
    pub fn new(config: OutlierConfig, keys: Vec<K>, now: Instant) -> Self {
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        let hosts = keys.iter().map(|_| HostState::default()).collect();
        OutlierDetector {
            config,
            epoch: now,
            keys,
            index,
            hosts,
            ejected_count: AtomicUsize::new(0),
            draw_state: AtomicU64::new(0x5EED_0F00_711E_7500),
        }
    }

    /// A detector for a new host set (and possibly new config) that keeps the state of the
    /// hosts whose key is in both sets. New hosts start clean; removed hosts are forgotten.
    pub fn rebuild(&self, config: OutlierConfig, keys: Vec<K>) -> Self {
        let mut next = OutlierDetector::new(config, keys, self.epoch);
        let mut ejected = 0;
        for (i, key) in next.keys.iter().enumerate() {
            if let Some(&old) = self.index.get(key) {
                next.hosts[i].copy_from(&self.hosts[old]);
                if next.hosts[i].ejected_until.load(Ordering::Relaxed) != 0 {
                    ejected += 1;
                }
            }
        }
        next.ejected_count = AtomicUsize::new(ejected);
        next.draw_state = AtomicU64::new(self.draw_state.load(Ordering::Relaxed));
        next
    }

    /// The config in force.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The host keys, in index order.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The index of the host with this key.
    pub fn index_of(&self, key: &K) -> Option<usize> {
        self.index.get(key).copied()
    }
}

impl<K> OutlierDetector<K> {
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn next_draw(&self) -> u64 {
        let mut z = self
            .draw_state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Number of hosts in the set.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the host set is empty.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether the host is ejected at `now`. A host whose ejection time has passed is not
    /// ejected any more, even before the next sweep formally returns it. Out-of-range
    /// indexes are not ejected.
    pub fn is_ejected(&self, host: usize, now: Instant) -> bool {
        self.hosts.get(host).is_some_and(|h| {
            let until = h.ejected_until.load(Ordering::Acquire);
            until != 0 && self.nanos(now) < until
        })
    }

    /// Hosts marked ejected (including any whose time ran out since the last sweep).
    pub fn ejected_count(&self) -> usize {
        self.ejected_count.load(Ordering::Relaxed)
    }

    /// The current ejection multiplier of a host (ejections not yet forgiven).
    pub fn ejection_multiplier(&self, host: usize) -> u32 {
        self.hosts
            .get(host)
            .map_or(0, |h| h.ejections.load(Ordering::Relaxed))
    }

    /// Records one request's outcome. Returns the reason if this call ejected the host.
    /// Cheap: a few atomic operations, no lock, no allocation.
    pub fn record(&self, host: usize, outcome: Outcome, now: Instant) -> Option<EjectionReason> {
        let h = self.hosts.get(host)?;
        h.requests.fetch_add(1, Ordering::Relaxed);
        let gateway = match outcome {
            Outcome::Success => {
                h.successes.fetch_add(1, Ordering::Relaxed);
                h.consecutive_5xx.store(0, Ordering::Relaxed);
                h.consecutive_gateway.store(0, Ordering::Relaxed);
                return None;
            }
            Outcome::Http5xx => false,
            Outcome::GatewayFailure | Outcome::LocalOriginFailure => true,
        };
        let c = &self.config;
        if gateway && c.consecutive_gateway_failure > 0 {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if n == c.consecutive_gateway_failure {
                let draw = self.next_draw();
                if self.try_eject(host, now, c.enforcing_consecutive_gateway_failure, draw) {
                    return Some(EjectionReason::ConsecutiveGatewayFailure);
                }
            }
        }
        if c.consecutive_5xx > 0 {
            let n = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if n == c.consecutive_5xx {
                let draw = self.next_draw();
                if self.try_eject(host, now, c.enforcing_consecutive_5xx, draw) {
                    return Some(EjectionReason::Consecutive5xx);
                }
            }
        }
        None
    }

    /// Ejects `host` if the enforcement draw and `max_ejection_percent` allow it.
    fn try_eject(&self, host: usize, now: Instant, enforcing: u32, draw: u64) -> bool {
        if enforcing == 0 || (enforcing < 100 && draw % 100 >= u64::from(enforcing)) {
            return false;
        }
        let Some(h) = self.hosts.get(host) else {
            return false;
        };
        let now_n = self.nanos(now);
        let current = h.ejected_until.load(Ordering::Acquire);
        if current != 0 && now_n < current {
            return false; // already ejected
        }
        // A host whose ejection expired but was not yet returned keeps its slot.
        if current == 0 {
            let n = self.hosts.len() as u64;
            let max = u64::from(self.config.max_ejection_percent);
            let reserved =
                self.ejected_count
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                        (e as u64 * 100 < max * n).then_some(e + 1)
                    });
            if reserved.is_err() {
                return false;
            }
        }
        let times = h
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let duration = self.config.ejection_time(times);
        let until = now_n
            .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        if h.ejected_until
            .compare_exchange(current, until, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread ejected or returned it meanwhile; undo our bookkeeping.
            h.ejections.fetch_sub(1, Ordering::Relaxed);
            if current == 0 {
                self.ejected_count.fetch_sub(1, Ordering::AcqRel);
            }
            return false;
        }
        true
    }

    /// The periodic sweep: returns hosts whose ejection ended, forgives one ejection of
    /// each host that stayed in service for the whole interval, and runs success-rate and
    /// failure-percentage analysis over this interval's counts (which it then resets).
    /// Enforcement percentages are drawn from `rng`.
    pub fn on_interval(&self, now: Instant, rng: &mut impl Rng) -> IntervalReport {
        let mut report = IntervalReport::default();
        let now_n = self.nanos(now);
        let mut rates: Vec<(usize, u64, u64)> = Vec::with_capacity(self.hosts.len());
        for (i, h) in self.hosts.iter().enumerate() {
            let until = h.ejected_until.load(Ordering::Acquire);
            if until != 0 && now_n >= until {
                if h.ejected_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.ejected_count.fetch_sub(1, Ordering::AcqRel);
                    h.consecutive_5xx.store(0, Ordering::Relaxed);
                    h.consecutive_gateway.store(0, Ordering::Relaxed);
                    report.returned.push(i);
                }
            } else if until == 0 {
                // In service for the whole interval: forgive one ejection.
                let _ = h
                    .ejections
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| e.checked_sub(1));
            }
            let requests = h.requests.swap(0, Ordering::Relaxed);
            let successes = h.successes.swap(0, Ordering::Relaxed).min(requests);
            if until == 0 || now_n >= until {
                rates.push((i, requests, successes));
            }
        }
        self.success_rate_sweep(&rates, now, rng, &mut report);
        self.failure_percentage_sweep(&rates, now, rng, &mut report);
        report
    }

    fn success_rate_sweep(
        &self,
        rates: &[(usize, u64, u64)],
        now: Instant,
        rng: &mut impl Rng,
        report: &mut IntervalReport,
    ) {
        let c = &self.config;
        let volume = u64::from(c.success_rate_request_volume);
        let eligible = || rates.iter().filter(|(_, req, _)| *req >= volume.max(1));
        let count = eligible().count();
        if count == 0 || count < c.success_rate_minimum_hosts as usize {
            return;
        }
        let rate = |req: u64, ok: u64| ok as f64 * 100.0 / req as f64;
        let mean = eligible().map(|&(_, r, s)| rate(r, s)).sum::<f64>() / count as f64;
        let variance = eligible()
            .map(|&(_, r, s)| (rate(r, s) - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        let threshold = mean - variance.sqrt() * f64::from(c.success_rate_stdev_factor) / 1000.0;
        for &(i, r, s) in eligible() {
            if rate(r, s) < threshold
                && self.try_eject(i, now, c.enforcing_success_rate, rng.random())
            {
                report.ejected.push((i, EjectionReason::SuccessRate));
            }
        }
    }

    fn failure_percentage_sweep(
        &self,
        rates: &[(usize, u64, u64)],
        now: Instant,
        rng: &mut impl Rng,
        report: &mut IntervalReport,
    ) {
        let c = &self.config;
        let volume = u64::from(c.failure_percentage_request_volume);
        let eligible = || rates.iter().filter(|(_, req, _)| *req >= volume.max(1));
        if eligible().count() < c.failure_percentage_minimum_hosts as usize {
            return;
        }
        for &(i, r, s) in eligible() {
            let failed = (r - s) as f64 * 100.0 / r as f64;
            if failed >= f64::from(c.failure_percentage_threshold)
                && self.try_eject(i, now, c.enforcing_failure_percentage, rng.random())
            {
                report.ejected.push((i, EjectionReason::FailurePercentage));
            }
        }
    }

    /// How long until the host's ejection ends, if it is ejected at `now`.
    pub fn ejected_for(&self, host: usize, now: Instant) -> Option<Duration> {
        let until = self.hosts.get(host)?.ejected_until.load(Ordering::Acquire);
        let now_n = self.nanos(now);
        (until != 0 && now_n < until).then(|| Duration::from_nanos(until - now_n))
    }
}
