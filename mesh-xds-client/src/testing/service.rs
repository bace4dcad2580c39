//! The gRPC side of the test server.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures_util::Stream;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{RecordedRequest, Shared, StreamHandle};
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
                return Err(Status::unavailable("test server is shutting down"));
            }
            inner.next_stream += 1;
            let id = inner.next_stream;
            inner.streams.push(StreamHandle {
                id,
                tx,
                subscribed: Default::default(),
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let rx = super::delta::open(&self.shared, request.into_inner(), STREAM_BUFFER)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Records the request and answers it when it opens or changes a subscription.
fn on_request(shared: &Shared, id: u64, req: DiscoveryRequest) {
    let mut inner = shared.lock();
    inner.requests.push(RecordedRequest {
        stream: id,
        request: req.clone(),
    });
    let count = inner.requests.len();
    if let Some(t) = XdsType::from_type_url(&req.type_url) {
        let names: BTreeSet<String> = req.resource_names.into_iter().collect();
        if let Some(i) = inner.streams.iter().position(|s| s.id == id) {
            let previous = inner.streams[i].subscribed.insert(t, names.clone());
            if previous.as_ref() != Some(&names) {
                let response = inner.response(t, &names);
                let _ = inner.streams[i].tx.try_send(Ok(response));
            }
        }
    }
    drop(inner);
    shared.recorded.send_replace(count);
}
