//! The cluster's circuit breaker as a layer: the request slot (`max_requests`) is taken in
//! `poll_ready`, a pending slot (`max_pending_requests`) when an HTTP/1.1 request finds
//! every allowed connection busy, and the request slot is held by the response body until
//! it ends. A full breaker fails the call at once, as Envoy's does; nothing waits.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Response, Version};
use mesh_core::breaker::{BreakerGuard, BreakerLimit, CircuitBreaker, Overflow};
use mesh_core::cluster::{Cluster, UpstreamProtocol};

use super::attempt::{Attempt, Failed};
use super::response::ResponseBody;
use crate::error::MeshError;

/// A cluster's breaker in front of `S`.
#[derive(Debug)]
pub(crate) struct Breaker<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    cluster: Arc<Cluster>,
    /// The request slot taken by `poll_ready`, for the next `call`.
    permit: Option<BreakerGuard>,
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        // A clone is not ready: it takes its own slot.
        Self {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            cluster: Arc::clone(&self.cluster),
            permit: None,
        }
    }
}

impl<S> Breaker<S> {
    pub(crate) fn new(inner: S, breaker: Arc<CircuitBreaker>, cluster: Arc<Cluster>) -> Self {
        Self {
            inner,
            breaker,
            cluster,
            permit: None,
        }
    }

    fn open(&self, o: Overflow) -> Failed {
        Failed::refused(MeshError::CircuitOpen {
            cluster: self.cluster.name().to_owned(),
            limit: o.limit,
            max: o.max,
        })
    }

    /// HTTP/1.1 carries one request per connection: a request beyond what the open
    /// connections may carry waits for one, and counts as pending.
    fn pending(&self, attempt: &Attempt) -> Result<Option<BreakerGuard>, Failed> {
        let h2 = self.cluster.protocol == UpstreamProtocol::Http2
            || attempt.req.version() == Version::HTTP_2;
        if h2
            || self.breaker.in_flight(BreakerLimit::MaxRequests)
                <= self.cluster.circuit_breakers.max_connections
        {
            return Ok(None);
        }
        self.breaker
            .try_pending()
            .map(Some)
            .map_err(|o| self.open(o))
    }
}

impl<S, E> tower::Service<Attempt> for Breaker<S>
where
    S: tower::Service<Attempt, Response = Response<ResponseBody>, Error = E>,
    E: From<Failed>,
{
    type Response = Response<ResponseBody>;
    type Error = E;
    type Future = BreakerFuture<S::Future, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        // The slot is taken first: while the inner service is not ready the caller holds
        // it, as a request waiting in Envoy's router holds its `max_requests` count.
        if self.permit.is_none() {
            match self.breaker.try_request() {
                Ok(permit) => self.permit = Some(permit),
                Err(o) => return Poll::Ready(Err(self.open(o).into())),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let permit = self.permit.take().ok_or_else(|| {
            // The tower contract: `call` follows a ready `poll_ready`, which took the slot.
            Failed::refused(MeshError::Upstream {
                endpoint: String::new(),
                reason: "the breaker was called without poll_ready".to_owned(),
            })
        });
        let admitted = permit.and_then(|p| Ok((p, self.pending(&attempt)?)));
        match admitted {
            Ok((permit, pending)) => BreakerFuture::Admitted {
                call: self.inner.call(attempt),
                permit: Some(permit),
                _pending: pending,
            },
            Err(failed) => BreakerFuture::Refused {
                failed: Some(failed.into()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A call through the breaker.
    #[project = BreakerProj]
    pub(crate) enum BreakerFuture<F, E> {
        Admitted {
            #[pin]
            call: F,
            permit: Option<BreakerGuard>,
            // Held until the response head: the request is no longer waiting then.
            _pending: Option<BreakerGuard>,
        },
        Refused { failed: Option<E> },
    }
}

impl<F, E> Future for BreakerFuture<F, E>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
    E: From<Failed>,
{
    type Output = Result<Response<ResponseBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BreakerProj::Admitted { call, permit, .. } => {
                if permit.is_none() {
                    // Finished: the slot went with the response or was given back.
                    return Poll::Ready(Err(polled_again()));
                }
                let result = ready!(call.poll(cx));
                let permit = permit.take();
                let mut resp = result?;
                if let Some(p) = permit {
                    resp.body_mut().hold(p);
                }
                Poll::Ready(Ok(resp))
            }
            BreakerProj::Refused { failed } => {
                Poll::Ready(Err(failed.take().unwrap_or_else(polled_again)))
            }
        }
    }
}

fn polled_again<E: From<Failed>>() -> E {
    Failed::refused(MeshError::Upstream {
        endpoint: String::new(),
        reason: "a breaker's future was polled after it completed".to_owned(),
    })
    .into()
}
