//! Dials an HTTP/1.1 pool makes only while a request needs them.
//!
//! An endpoint's HTTP/1.1 pool ([`H1Pool`](super::pool::H1Pool)) starts a dial for every
//! request that finds no idle connection, while the request also waits for a connection
//! coming free; when the free connection wins, an ungated dial would go on and open a
//! connection nobody asked for (under mTLS, a handshake on the shared core). Here each
//! endpoint counts its HTTP/1.1 requests in flight and its connections open or being
//! dialed, and a dial goes ahead only while the requests outnumber the connections, as
//! Envoy's pool opens a connection per pending request. A dial that is not needed waits for
//! a request that needs it, until its connect timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::{Event, IntoNotification};

/// One endpoint's HTTP/1.1 requests in flight and connections open or being dialed.
#[derive(Debug, Default)]
pub(crate) struct DialDemand {
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Fires when a request arrives or a connection goes away.
    changed: Event,
}

impl DialDemand {
    /// Counts a request in flight until the returned guard drops (its response ends).
    pub(crate) fn request(self: &Arc<Self>) -> DemandRequest {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.changed.notify(1.additional());
        DemandRequest(Arc::clone(self))
    }

    /// Counts one more connection if the requests outnumber the connections.
    fn try_claim(self: &Arc<Self>) -> Option<ConnectionClaim> {
        let requests = self.requests.load(Ordering::Acquire);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < requests).then_some(c + 1)
            })
            .ok()
            .map(|_| ConnectionClaim::new(self))
    }

    /// A claim on a new connection, once a request needs one; `None` if none does before
    /// `deadline`.
    pub(crate) async fn claim(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Option<ConnectionClaim> {
        loop {
            if let Some(claim) = self.try_claim() {
                return Some(claim);
            }
            // Listen, then look again: a request that arrived in between is not missed.
            let changed = self.changed.listen();
            if let Some(claim) = self.try_claim() {
                return Some(claim);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                // No time left to dial with: not even a socket.
                return None;
            }
        }
    }

    /// Requests in flight and connections counted, for tests.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::Acquire),
            self.connections.load(Ordering::Acquire),
        )
    }
}

/// A request in flight on an endpoint's HTTP/1.1 pool.
#[derive(Debug)]
pub(crate) struct DemandRequest(Arc<DialDemand>);

impl Drop for DemandRequest {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection counted for its endpoint, from its dial until it closes or is upgraded.
#[derive(Debug)]
pub(crate) struct ConnectionClaim(Arc<ClaimState>);

#[derive(Debug)]
struct ClaimState {
    demand: Arc<DialDemand>,
    released: AtomicBool,
}

impl ClaimState {
    /// Uncounts the connection, once.
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.demand.connections.fetch_sub(1, Ordering::AcqRel);
            self.demand.changed.notify(1.additional());
        }
    }
}

impl ConnectionClaim {
    fn new(demand: &Arc<DialDemand>) -> Self {
        Self(Arc::new(ClaimState {
            demand: Arc::clone(demand),
            released: AtomicBool::new(false),
        }))
    }

    /// Whether the endpoint has more connections (this one included) than requests: a
    /// request this dial was for has been served by a connection that came free.
    pub(crate) fn is_surplus(&self) -> bool {
        let demand = &self.0.demand;
        demand.connections.load(Ordering::Acquire) > demand.requests.load(Ordering::Acquire)
    }

    /// What the pool keeps with the connection, to give up its place if it is upgraded.
    pub(crate) fn handle(&self) -> ClaimHandle {
        ClaimHandle(Arc::clone(&self.0))
    }
}

impl Drop for ConnectionClaim {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A connection's place among its endpoint's connections, as the pool holds it.
#[derive(Debug)]
pub(crate) struct ClaimHandle(Arc<ClaimState>);

impl ClaimHandle {
    /// The connection was upgraded (a WebSocket, a CONNECT tunnel): it is the caller's
    /// now, never the pool's again, so it no longer counts among the endpoint's
    /// connections (a new request gets a dial of its own), though it stays open. Its
    /// request ends as any other, when its response's body (the 101's, empty) ends or the
    /// response is dropped; a caller that keeps the response meanwhile lets one dial more
    /// through.
    pub(crate) fn release(&self) {
        self.0.release();
    }
}

/// The demand of each endpoint of one cluster's HTTP/1.1 pool, by the authority the pool
/// dials. The connector only looks up, so an authority nobody registered is dialed without
/// waiting.
pub(crate) type DialDemands = super::pool::ByAuthority<DialDemand>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dial_goes_ahead_only_while_requests_outnumber_connections() {
        let demand = Arc::new(DialDemand::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = demand.request();
        let c1 = demand
            .claim(deadline)
            .await
            .expect("one request, no connection");
        // The second dial for the same request waits; it gives up at the deadline.
        let started = Instant::now();
        assert!(demand.claim(deadline).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(demand.counts(), (1, 1));
        drop((first, c1));
        assert_eq!(demand.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_dial_goes_when_a_request_arrives_or_a_connection_closes() {
        let demand = Arc::new(DialDemand::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        let _r1 = demand.request();
        let c1 = demand.claim(deadline).await.unwrap();

        // A dial waiting, then a second request: the dial goes.
        let waiting = tokio::spawn({
            let demand = Arc::clone(&demand);
            async move { demand.claim(deadline).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _r2 = demand.request();
        let _c2 = waiting
            .await
            .unwrap()
            .expect("the second request needs a connection");

        // All claimed; a dial waiting, then one connection closes: the dial replaces it.
        let waiting = tokio::spawn({
            let demand = Arc::clone(&demand);
            async move { demand.claim(deadline).await.map(|c| (c, Instant::now())) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let closed_at = Instant::now();
        drop(c1);
        let (_c3, at) = waiting
            .await
            .unwrap()
            .expect("the closed connection is replaced");
        assert_eq!(at, closed_at);
    }

    #[tokio::test(start_paused = true)]
    async fn two_requests_arriving_together_release_two_waiting_dials() {
        let demand = Arc::new(DialDemand::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        let dials: Vec<_> = (0..3)
            .map(|_| {
                let demand = Arc::clone(&demand);
                tokio::spawn(
                    async move { demand.claim(deadline).await.map(|c| (c, Instant::now())) },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let arrived_at = Instant::now();
        let _requests = (demand.request(), demand.request());
        let mut claimed = Vec::new();
        for dial in dials {
            claimed.extend(dial.await.unwrap());
        }
        assert_eq!(
            claimed.len(),
            2,
            "two requests need two connections, not three"
        );
        assert!(
            claimed.iter().all(|(_, at)| *at == arrived_at),
            "both woken by the requests, not the deadline"
        );
        assert_eq!(demand.counts(), (2, 2));
    }

    #[test]
    fn an_upgraded_connection_gives_up_its_place_once() {
        let demand = Arc::new(DialDemand::default());
        let upgrade = demand.request();
        let claim = demand.try_claim().unwrap();
        claim.handle().release();
        assert_eq!(demand.counts(), (1, 0));
        // The upgrade's response (the 101's empty body) ends.
        drop(upgrade);
        assert_eq!(demand.counts(), (0, 0));
        // The upgraded connection, still open, is unusable by the pool: a new request gets
        // a dial of its own, and only one.
        let next = demand.request();
        let dialed = demand.try_claim().expect("a dial for the new request");
        assert!(demand.try_claim().is_none(), "one dial, not two");
        // The upgraded connection closes: nothing is uncounted twice.
        drop(claim);
        assert_eq!(demand.counts(), (1, 1));
        drop((next, dialed));
        assert_eq!(demand.counts(), (0, 0));
    }

    #[test]
    fn a_claim_is_surplus_once_a_request_it_was_for_ends() {
        let demand = Arc::new(DialDemand::default());
        let r = demand.request();
        let claim = demand.try_claim().unwrap();
        assert!(!claim.is_surplus());
        drop(r);
        assert!(claim.is_surplus());
    }

    #[test]
    fn registered_authorities_are_found_until_their_endpoints_go() {
        let demands = DialDemands::default();
        assert!(demands.find("10.0.0.1:80").is_none());
        let d = demands.register("10.0.0.1:80");
        assert!(Arc::ptr_eq(&d, &demands.register("10.0.0.1:80")));
        assert!(Arc::ptr_eq(&d, &demands.find("10.0.0.1:80").unwrap()));
        drop(d);
        assert!(demands.find("10.0.0.1:80").is_none());
        // Dead entries are swept as the map grows.
        let kept: Vec<_> = (0..100)
            .map(|i| demands.register(&format!("10.0.1.{i}:80")))
            .collect();
        for i in 0..1_000 {
            drop(demands.register(&format!("10.0.2.{i}:80")));
        }
        let len = demands.entries();
        assert!(len < 400, "{len} entries kept for 100 live endpoints");
        assert!(kept.iter().all(|d| Arc::strong_count(d) == 1));
    }
}
