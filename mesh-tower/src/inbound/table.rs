//! Every open inbound connection, for the connection limits: how many are open in all and
//! per peer address, which are idle and since when, and a way to close one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's activity, shared by its task and the requests it serves.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Requests being served, counting a response body until it is sent.
    in_flight: AtomicUsize,
    /// When the last request started or ended, in milliseconds since `epoch`.
    last_active_ms: AtomicU64,
    /// Set when the table closes the connection to make room.
    evicted: AtomicBool,
    evict: Notify,
    /// Set when the connection's first bytes were HTTP/2's preface.
    http2: AtomicBool,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let this = Self {
            epoch,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            http2: AtomicBool::new(false),
        };
        this.touch();
        this
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Restarts the idle clock (a request's end, the connection's establishment).
    pub(super) fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request starts; the returned guard ends it (keep it until the response body has
    /// been sent). Only the end reads the clock: idle time counts from the last request's
    /// end, and a connection with a request in flight is not idle.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// When the connection last turned idle, in milliseconds since the table's epoch;
    /// `None` while a request is in flight.
    fn idle_since_ms(&self) -> Option<u64> {
        self.is_idle()
            .then(|| self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Whether nothing is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// How long it has been idle (zero while something is in flight).
    pub(super) fn idle_for(&self) -> Duration {
        if !self.is_idle() {
            return Duration::ZERO;
        }
        let since = self.last_active_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    /// Marks the connection HTTP/2 (its first bytes were the preface).
    pub(super) fn mark_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Whether the connection speaks HTTP/2; until its first bytes are read, it does not.
    pub(super) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Resolves when the table evicts the connection.
    pub(super) async fn evicted(&self) {
        loop {
            let notified = self.evict.notified();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections, grouped by peer address: the per-peer limit looks only at that
/// peer's connections, and picking the longest-idle one compares stored timestamps (no
/// clock read per connection).
#[derive(Default)]
struct Inner {
    next_id: u64,
    total: usize,
    peers: HashMap<IpAddr, HashMap<u64, Arc<Activity>>>,
}

/// What [`ConnectionTable::admit`] decided.
pub(super) enum Admission {
    /// Room was made; the guard keeps the connection counted until dropped.
    Admitted(Registered),
    /// The peer has its limit of connections, all busy.
    PeerLimit,
    /// The listener has its limit of connections, all busy.
    Full,
}

/// The open connections and the limits on them.
pub(super) struct ConnectionTable {
    inner: Mutex<Inner>,
    epoch: Instant,
    max_total: usize,
    max_per_peer: usize,
    /// Signalled whenever a connection leaves the table.
    removed: Notify,
}

impl ConnectionTable {
    pub(super) fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            epoch: Instant::now(),
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            removed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `peer`, closing the longest-idle connection (of the
    /// same peer, for the per-peer limit) when a limit is reached.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let mut inner = self.lock();
        if inner.peers.get(&peer).map_or(0, HashMap::len) >= self.max_per_peer {
            if !evict_longest_idle(&mut inner, Some(peer)) {
                return Admission::PeerLimit;
            }
            tracing::debug!(%peer, "per-peer connection limit: closed this peer's longest-idle connection");
        }
        if inner.total >= self.max_total {
            if !evict_longest_idle(&mut inner, None) {
                return Admission::Full;
            }
            tracing::debug!("connection limit: closed the longest-idle connection");
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let activity = Arc::new(Activity::new(self.epoch));
        inner
            .peers
            .entry(peer)
            .or_default()
            .insert(id, Arc::clone(&activity));
        inner.total += 1;
        Admission::Admitted(Registered {
            id,
            peer,
            activity,
            table: Arc::clone(self),
        })
    }

    /// Resolves after the next connection leaves the table.
    pub(super) async fn wait_for_room(&self) {
        self.removed.notified().await;
    }

    /// Connections open.
    pub(super) fn len(&self) -> usize {
        self.lock().total
    }

    fn remove(&self, peer: IpAddr, id: u64) {
        let mut inner = self.lock();
        inner.take(peer, id);
        drop(inner);
        self.removed.notify_waiters();
    }
}

impl Inner {
    /// Takes a connection out of the table, if it is still there.
    fn take(&mut self, peer: IpAddr, id: u64) -> Option<Arc<Activity>> {
        let conns = self.peers.get_mut(&peer)?;
        let activity = conns.remove(&id)?;
        if conns.is_empty() {
            self.peers.remove(&peer);
        }
        self.total -= 1;
        Some(activity)
    }
}

/// Closes the connection idle the longest (of `peer` if given); `false` if none is idle.
/// It leaves the table at once, so its room is free before its task has finished.
fn evict_longest_idle(inner: &mut Inner, peer: Option<IpAddr>) -> bool {
    // Idle the longest = turned idle first; on a tie (same millisecond), the older
    // connection (the smaller id).
    let oldest = |conns: &HashMap<u64, Arc<Activity>>| {
        conns
            .iter()
            .filter_map(|(id, a)| a.idle_since_ms().map(|since| (since, *id)))
            .min()
    };
    let victim = match peer {
        Some(p) => inner
            .peers
            .get(&p)
            .and_then(|conns| oldest(conns).map(|(since, id)| (since, id, p))),
        None => inner
            .peers
            .iter()
            .filter_map(|(p, conns)| oldest(conns).map(|(since, id)| (since, id, *p)))
            .min(),
    };
    let Some((_, id, p)) = victim else {
        return false;
    };
    if let Some(activity) = inner.take(p, id) {
        activity.evicted.store(true, Ordering::Release);
        activity.evict.notify_waiters();
    }
    true
}

/// A connection counted in the table until dropped.
pub(super) struct Registered {
    id: u64,
    peer: IpAddr,
    activity: Arc<Activity>,
    table: Arc<ConnectionTable>,
}

impl Registered {
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.remove(self.peer, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admitted(a: Admission) -> Registered {
        match a {
            Admission::Admitted(r) => r,
            Admission::PeerLimit => panic!("refused: peer limit"),
            Admission::Full => panic!("refused: full"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_makes_room() {
        let table = ConnectionTable::new(2, 10);
        let old = admitted(table.admit(ip(1)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let newer = admitted(table.admit(ip(2)));
        tokio::time::advance(Duration::from_secs(1)).await;
        // Full: the one idle for 6 s goes, not the one idle for 1 s.
        let third = admitted(table.admit(ip(3)));
        assert!(old.activity().evicted.load(Ordering::Acquire));
        assert!(!newer.activity().evicted.load(Ordering::Acquire));
        assert_eq!(table.len(), 2);
        drop(old);
        assert_eq!(table.len(), 2, "an evicted connection is no longer counted");
        drop((newer, third));
        assert_eq!(table.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_are_never_evicted() {
        let table = ConnectionTable::new(2, 10);
        let a = admitted(table.admit(ip(1)));
        let b = admitted(table.admit(ip(2)));
        let _ra = a.activity().start();
        let rb = b.activity().start();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(table.admit(ip(3)), Admission::Full));
        // A request ending makes its connection idle again, and evictable.
        drop(rb);
        tokio::time::advance(Duration::from_secs(1)).await;
        let _c = admitted(table.admit(ip(3)));
        assert!(b.activity().evicted.load(Ordering::Acquire));
        assert!(!a.activity().evicted.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_peer_limit_evicts_only_that_peers_connections() {
        let table = ConnectionTable::new(100, 2);
        let other = admitted(table.admit(ip(9)));
        tokio::time::advance(Duration::from_secs(10)).await;
        let p1 = admitted(table.admit(ip(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let p2 = admitted(table.admit(ip(1)));
        let _r = p2.activity().start();
        let _p3 = admitted(table.admit(ip(1)));
        assert!(p1.activity().evicted.load(Ordering::Acquire));
        assert!(
            !other.activity().evicted.load(Ordering::Acquire),
            "another peer's idle connection is left alone"
        );
        // Both of the peer's connections busy: the next one is refused.
        let _r3 = _p3.activity().start();
        assert!(matches!(table.admit(ip(1)), Admission::PeerLimit));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_last_request() {
        let table = ConnectionTable::new(10, 10);
        let c = admitted(table.admit(ip(1)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.activity().idle_for(), Duration::from_secs(3));
        let r = c.activity().start();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(c.activity().idle_for(), Duration::ZERO, "busy");
        drop(r);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.activity().idle_for(), Duration::from_secs(2));
    }
}
