//! The bottom of a cluster's stack: an endpoint picked by the load balancer (ejected ones
//! skipped, the previous attempt's avoided), the request addressed to it and sent on the
//! cluster's pool within the attempt's deadline, and the outcome recorded for outlier
//! detection.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Response, Version};
use mesh_core::classify::{classify, TransportError};
use mesh_core::cluster::UpstreamProtocol;

use super::attempt::{class_of, Attempt, Failed};
use super::cluster::{ClusterState, EndpointState};
use super::connect::ConnectError;
use super::pool::{Answered, PoolError, SendFuture};
use super::response::{AttemptGuard, ResponseBody};
use crate::error::MeshError;

/// Sends attempts to the endpoints of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    state: Arc<ClusterState>,
    /// The Host header an HTTP/1.1 request without one gets (the pool would otherwise
    /// write the endpoint's address).
    host: Option<HeaderValue>,
}

impl Endpoints {
    pub(crate) fn new(state: Arc<ClusterState>, host: Option<HeaderValue>) -> Self {
        Self { state, host }
    }

    fn send(&self, attempt: Attempt) -> Result<EndpointFuture, Failed> {
        let state = &self.state;
        let now = std::time::Instant::now();
        let endpoint = crate::rng::with(|rng| state.pick(attempt.hash, attempt.avoid, now, rng))
            .ok_or_else(|| {
                Failed::refused(MeshError::NoHealthyEndpoint(state.config.name().to_owned()))
            })?;
        if let Err(reason) = &state.pools {
            return Err(Failed::refused(MeshError::Connect {
                endpoint: endpoint.authority.to_string(),
                reason: reason.clone(),
            }));
        }
        let h2 = state.config.protocol == UpstreamProtocol::Http2
            || attempt.req.version() == Version::HTTP_2;
        let mut req = attempt.req;
        // Each pool writes the request as its connections send it, addressed to the
        // endpoint.
        let pool = if h2 {
            endpoint.http2.as_ref().map(|p| p.send(req))
        } else {
            // The HTTP/1.1 pool writes the origin form and, when the request has no Host,
            // the endpoint's address as its Host.
            if let Some(host) = &self.host {
                if !req.headers().contains_key(http::header::HOST) {
                    req.headers_mut().insert(http::header::HOST, host.clone());
                }
            }
            endpoint.http1.as_ref().map(|p| p.send(req))
        };
        // Not reached: an endpoint of a cluster with pools has both.
        let call = pool.ok_or_else(|| {
            Failed::refused(MeshError::Connect {
                endpoint: endpoint.authority.to_string(),
                reason: "the endpoint has no connection pool".to_owned(),
            })
        })?;
        let guard = AttemptGuard::new(Arc::clone(&endpoint), !h2);
        let send = match attempt.deadline {
            Some(d) => Send::Bounded {
                call: tokio::time::timeout_at(d, call),
            },
            None => Send::Unbounded { call },
        };
        Ok(EndpointFuture {
            send,
            sent: Some(Sent {
                state: Arc::clone(state),
                endpoint,
                guard,
                started: attempt.started,
            }),
        })
    }
}

impl tower::Service<Attempt> for Endpoints {
    type Response = Response<ResponseBody>;
    type Error = Failed;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        // The pool's capacity is per connection; the breaker above bounds what goes in.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> EndpointFuture {
        self.send(attempt).unwrap_or_else(|failed| EndpointFuture {
            send: Send::Refused {
                failed: Some(failed),
            },
            sent: None,
        })
    }
}

/// What an attempt in flight went to.
struct Sent {
    state: Arc<ClusterState>,
    endpoint: Arc<EndpointState>,
    guard: AttemptGuard,
    started: tokio::time::Instant,
}

pin_project_lite::pin_project! {
    #[project = SendProj]
    enum Send {
        Bounded { #[pin] call: tokio::time::Timeout<SendFuture> },
        Unbounded { call: SendFuture },
        Refused { failed: Option<Failed> },
    }
}

pin_project_lite::pin_project! {
    /// An attempt at one endpoint.
    pub(crate) struct EndpointFuture {
        #[pin]
        send: Send,
        sent: Option<Sent>,
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<ResponseBody>, Failed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let send = this.send.project();
        if let SendProj::Refused { failed } = send {
            return Poll::Ready(Err(failed.take().unwrap_or_else(polled_again)));
        }
        if this.sent.is_none() {
            // Finished: the pool's future is not polled again.
            return Poll::Ready(Err(polled_again()));
        }
        let result = match send {
            SendProj::Bounded { call } => ready!(call.poll(cx)).ok(),
            SendProj::Unbounded { call } => Some(ready!(call.as_mut().poll(cx))),
            SendProj::Refused { .. } => None,
        };
        match this.sent.take() {
            Some(sent) => Poll::Ready(sent.finish(result)),
            None => Poll::Ready(Err(polled_again())),
        }
    }
}

fn polled_again() -> Failed {
    Failed::refused(MeshError::Upstream {
        endpoint: String::new(),
        reason: "an attempt's future was polled after it completed".to_owned(),
    })
}

impl Sent {
    /// Classifies the outcome and records it for outlier detection.
    fn finish(
        self,
        result: Option<Result<Answered, PoolError>>,
    ) -> Result<Response<ResponseBody>, Failed> {
        let state = &self.state;
        let endpoint = &self.endpoint;
        let failed = |error, kind| Failed {
            error,
            transport: Some(kind),
            endpoint: Some(endpoint.addr),
        };
        let outcome = match result {
            None => Err(failed(
                MeshError::Timeout(self.started.elapsed()),
                TransportError::Timeout,
            )),
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) if waited_for_no_request(&e) => {
                // The dial waited for a request to need it (its accounting found the
                // endpoint's connections enough) until its connect timeout: not the
                // endpoint's fault, not counted for outlier detection.
                return Err(Failed {
                    error: MeshError::Connect {
                        endpoint: endpoint.authority.to_string(),
                        reason: error_chain(&e),
                    },
                    transport: None,
                    endpoint: Some(endpoint.addr),
                });
            }
            Some(Err(e)) => {
                let (kind, err) =
                    transport_error(&e, endpoint.authority.as_str(), state.config.name());
                if let Some(error @ MeshError::CircuitOpen { .. }) = err {
                    // max_connections: the call fails at once, not retried, not the
                    // endpoint's fault.
                    return Err(Failed {
                        error,
                        transport: None,
                        endpoint: Some(endpoint.addr),
                    });
                }
                let err = err.unwrap_or_else(|| MeshError::Upstream {
                    endpoint: endpoint.authority.to_string(),
                    reason: error_chain(&e),
                });
                Err(failed(err, kind))
            }
        };
        let outcome = outcome.map(|answered| {
            let (parts, incoming) = answered.resp.into_parts();
            let body = ResponseBody::upstream(incoming, &parts.headers, Some(self.guard))
                .with_peer_meta(answered.peer);
            Response::from_parts(parts, body)
        });
        // Classified only for a cluster that detects outliers (the retry policy classifies
        // for itself, when the route has one).
        if state.detects_outliers() {
            let class = match &outcome {
                Ok(resp) => class_of(resp),
                Err(f) => classify(None, None, f.transport),
            };
            let was_ejected = endpoint.ejected.load(Ordering::Relaxed);
            state.record(endpoint, class.outlier_outcome(), std::time::Instant::now());
            if !was_ejected && endpoint.ejected.load(Ordering::Relaxed) {
                state.metrics.outlier_ejection(state.config.name());
            }
        }
        outcome
    }
}

/// Whether the pool's dial gave up because no request needed it.
fn waited_for_no_request(e: &PoolError) -> bool {
    matches!(e.connect_error(), Some(ConnectError::NotNeeded { .. }))
}

/// Classifies a pool error as a transport failure; an overflow of `max_connections` becomes
/// the breaker's error.
fn transport_error(
    e: &PoolError,
    endpoint: &str,
    cluster: &str,
) -> (TransportError, Option<MeshError>) {
    match e.connect_error() {
        Some(ConnectError::Overflow(o)) => {
            return (
                TransportError::ConnectFailure,
                Some(MeshError::CircuitOpen {
                    cluster: cluster.to_owned(),
                    limit: o.limit,
                    max: o.max,
                }),
            )
        }
        Some(other) => {
            return (
                TransportError::ConnectFailure,
                Some(MeshError::Connect {
                    endpoint: endpoint.to_owned(),
                    reason: other.to_string(),
                }),
            )
        }
        None => {}
    }
    (TransportError::Reset, None)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
