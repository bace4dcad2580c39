//! One ADS stream of either flavour, so the driver's loop is written once.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::ads::{AdsCore, Protocol, ProtocolError, ResponseOutcome};

/// Requests waiting for the stream; the core queues at most one per type at a time.
const REQUEST_BUFFER: usize = 16;

/// The sending half.
pub(super) enum Outbound {
    StateOfTheWorld(mpsc::Sender<DiscoveryRequest>),
    Delta(mpsc::Sender<DeltaDiscoveryRequest>),
}

/// The receiving half, once the server accepted the call.
pub(super) enum Inbound {
    StateOfTheWorld(Streaming<DiscoveryResponse>),
    Delta(Streaming<DeltaDiscoveryResponse>),
}

/// A response of either flavour.
pub(super) enum Response {
    StateOfTheWorld(DiscoveryResponse),
    Delta(DeltaDiscoveryResponse),
}

impl Response {
    /// Feeds it to the core.
    pub(super) fn apply(
        self,
        core: &mut AdsCore,
        now: std::time::Instant,
    ) -> Result<ResponseOutcome, ProtocolError> {
        match self {
            Self::StateOfTheWorld(r) => core.handle_response(r, now),
            Self::Delta(r) => core.handle_delta_response(r, now),
        }
    }
}

/// A stream's two halves before the call is made: the sender the driver feeds, and the
/// requests the call will carry.
pub(super) fn pair(protocol: Protocol) -> (Outbound, Pending) {
    match protocol {
        Protocol::Delta => {
            let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
            (Outbound::Delta(tx), Pending::Delta(ReceiverStream::new(rx)))
        }
        _ => {
            let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
            (
                Outbound::StateOfTheWorld(tx),
                Pending::StateOfTheWorld(ReceiverStream::new(rx)),
            )
        }
    }
}

/// The requests of a call not made yet.
pub(super) enum Pending {
    StateOfTheWorld(ReceiverStream<DiscoveryRequest>),
    Delta(ReceiverStream<DeltaDiscoveryRequest>),
}

impl Pending {
    /// Makes the call on `channel`.
    pub(super) async fn open(self, channel: Channel) -> Result<Inbound, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        match self {
            Self::StateOfTheWorld(rx) => {
                let response = client.stream_aggregated_resources(rx).await?;
                Ok(Inbound::StateOfTheWorld(response.into_inner()))
            }
            Self::Delta(rx) => {
                let response = client.delta_aggregated_resources(rx).await?;
                Ok(Inbound::Delta(response.into_inner()))
            }
        }
    }
}

impl Inbound {
    /// The next response; `None` when the server ended the stream.
    pub(super) async fn message(&mut self) -> Result<Option<Response>, tonic::Status> {
        Ok(match self {
            Self::StateOfTheWorld(s) => s.message().await?.map(Response::StateOfTheWorld),
            Self::Delta(s) => s.message().await?.map(Response::Delta),
        })
    }
}

impl Outbound {
    /// Sends every request the core has queued; `false` if the stream is gone.
    pub(super) async fn flush(&self, core: &mut AdsCore) -> bool {
        match self {
            Self::StateOfTheWorld(tx) => {
                while let Some(request) = core.poll_request() {
                    if tx.send(request).await.is_err() {
                        return false;
                    }
                }
            }
            Self::Delta(tx) => {
                while let Some(request) = core.poll_delta_request() {
                    if tx.send(request).await.is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }
}
