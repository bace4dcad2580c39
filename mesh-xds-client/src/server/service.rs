//! The gRPC side of the test server.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{HeaderTiming, Shared, StreamHandle, WILDCARD};
use crate::resource::XdsType;

/// Responses buffered per stream.
const STREAM_BUFFER: usize = 256;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug)]
pub(super) struct AdsService {
    pub(super) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let id = {
            let mut inner = self.shared.lock();
            if inner.closed {
                return Err(Status::unavailable("ADS server is shutting down"));
            }
            if let Some(status) = &inner.refusal {
                return Err(status.clone());
            }
            inner.next_stream += 1;
            let id = inner.next_stream;
            inner.streams.push(StreamHandle {
                id,
                tx,
                subscribed: Default::default(),
                node: None,
                behind: Default::default(),
            });
            id
        };
        let shared = self.shared.clone();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                on_request(&shared, id, req);
            }
            shared.lock().streams.retain(|s| s.id != id);
        });
        respond(rx, self.shared.answering()).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if let Some(status) = self.shared.lock().refusal.clone() {
            return Err(status);
        }
        let rx = super::delta::open(&self.shared, request.into_inner(), STREAM_BUFFER)?;
        respond(rx, self.shared.answering()).await
    }
}

/// The call's answer. With [`HeaderTiming::WithFirstResponse`] (grpc-go's and C-core's
/// behaviour) the handler returns, and so the response headers go out, only once the first
/// response is ready; until then the client has nothing from the server but its reading
/// of the requests.
async fn respond<T: Send + 'static>(
    mut rx: mpsc::Receiver<Result<T, Status>>,
    (timing, answering): (HeaderTiming, bool),
) -> Result<Response<ResponseStream<T>>, Status> {
    if !answering {
        // Requests are read and recorded; nothing ever comes back.
        return match timing {
            HeaderTiming::Immediately => Ok(Response::new(Box::pin(
                futures_util::stream::pending::<Result<T, Status>>().chain(ReceiverStream::new(rx)),
            ))),
            _ => {
                std::future::pending::<()>().await;
                drop(rx);
                Err(Status::unavailable("not reached"))
            }
        };
    }
    match timing {
        HeaderTiming::Immediately => Ok(Response::new(Box::pin(ReceiverStream::new(rx)))),
        HeaderTiming::WithFirstResponse => match rx.recv().await {
            Some(Ok(first)) => {
                let rest = ReceiverStream::new(rx);
                Ok(Response::new(Box::pin(
                    futures_util::stream::once(async move { Ok(first) }).chain(rest),
                )))
            }
            // A stream ended before its first response: trailers only, as grpc-go does.
            Some(Err(status)) => Err(status),
            None => Err(Status::unavailable("stream closed before any response")),
        },
    }
}

/// Records the request and answers it when it opens or changes a subscription.
fn on_request(shared: &Shared, id: u64, req: DiscoveryRequest) {
    let mut inner = shared.lock();
    super::record(&mut inner.requests, id, &req);
    inner.received += 1;
    let count = inner.received;
    if let Some(t) = XdsType::from_type_url(&req.type_url) {
        let mut names: BTreeSet<String> = req.resource_names.into_iter().collect();
        if let Some(i) = inner.streams.iter().position(|s| s.id == id) {
            if inner.streams[i].node.is_none() {
                inner.streams[i].node = req.node.clone();
            }
            let before = inner.streams[i].subscribed.get(&t);
            if is_wildcard(t, &names, before) {
                names = BTreeSet::from([WILDCARD.to_owned()]);
            }
            let previous = inner.streams[i].subscribed.insert(t, names.clone());
            if previous.as_ref() != Some(&names) {
                let node = inner.streams[i].node.clone();
                let response = inner.response(t, &names, node.as_ref());
                inner.streams[i].send(t, response);
            }
        }
    }
    catch_up(&mut inner, id);
    drop(inner);
    shared.recorded.send_replace(count);
}

/// Sends stream `id` the current state of each type a full buffer held back: the client
/// has read something (this request acknowledges it), so there may be room now.
fn catch_up(inner: &mut super::Inner, id: u64) {
    let Some(i) = inner.streams.iter().position(|s| s.id == id) else {
        return;
    };
    for t in std::mem::take(&mut inner.streams[i].behind) {
        // Unsubscribed since: nothing to send.
        let Some(names) = inner.streams[i].subscribed.get(&t).cloned() else {
            continue;
        };
        let node = inner.streams[i].node.clone();
        let response = inner.response(t, &names, node.as_ref());
        inner.streams[i].send(t, response);
    }
}

/// Whether a state-of-the-world request for `t` subscribes to every resource of the type:
/// LDS and CDS only, when it names `*`, or names nothing on a stream that had no explicit
/// names for the type before (the legacy wildcard Envoy uses: its first LDS and CDS
/// requests are empty, and empty ACKs keep it). An empty request after explicit names
/// unsubscribes instead, as our client does when its last target goes.
fn is_wildcard(t: XdsType, names: &BTreeSet<String>, before: Option<&BTreeSet<String>>) -> bool {
    if !matches!(t, XdsType::Listener | XdsType::Cluster) {
        return false;
    }
    if names.contains(WILDCARD) {
        return true;
    }
    names.is_empty() && before.is_none_or(|b| b.contains(WILDCARD))
}
