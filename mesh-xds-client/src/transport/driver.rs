//! The client task: connect, run one stream, back off, repeat.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::{connect::connect, ClientView, Command, TransportError, XdsClientConfig};
use crate::ads::{AdsCore, XdsEvent};
use crate::bootstrap::XdsServer;
use crate::resource::XdsType;
use crate::snapshot::SnapshotAssembler;
use mesh_core::live::LivePolicy;
use mesh_core::Snapshot;

/// Requests waiting for the stream; the core queues at most one per type at a time.
const REQUEST_BUFFER: usize = 16;

pub(super) struct Driver {
    server: XdsServer,
    config: XdsClientConfig,
    core: AdsCore,
    commands: mpsc::Receiver<Command>,
    view: watch::Sender<Arc<ClientView>>,
    streams_opened: u64,
    last_error: Option<String>,
    assembler: SnapshotAssembler,
    /// Whether the cache or the targets changed since the last snapshot attempt.
    dirty: bool,
    snapshot: Option<Arc<Snapshot>>,
    policy: Option<LivePolicy>,
}

enum StreamEnd {
    /// The application dropped the client.
    Shutdown,
    /// The stream failed; `got_response` says whether it had worked.
    Failed {
        error: TransportError,
        got_response: bool,
    },
}

impl Driver {
    pub(super) fn new(
        server: XdsServer,
        node: Node,
        config: XdsClientConfig,
        commands: mpsc::Receiver<Command>,
        view: watch::Sender<Arc<ClientView>>,
        policy: Option<LivePolicy>,
    ) -> Self {
        let core = AdsCore::new(node, config.ads.clone());
        let assembler = SnapshotAssembler::new(&config.client_listener_template);
        Self {
            server,
            config,
            core,
            commands,
            view,
            streams_opened: 0,
            last_error: None,
            assembler,
            dirty: false,
            snapshot: None,
            policy,
        }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = self.config.backoff.clone();
        loop {
            let got_response = match self.run_stream().await {
                StreamEnd::Shutdown => return,
                StreamEnd::Failed {
                    error,
                    got_response,
                } => {
                    tracing::warn!(server = %self.server.server_uri, %error, "ADS stream down");
                    self.last_error = Some(error.to_string());
                    got_response
                }
            };
            self.core.on_stream_closed();
            self.publish();
            // gRFC A57: a stream that got a response ended normally (the server may rebalance
            // or hit its max connection age); open the next one at once, with fresh backoff.
            if got_response {
                backoff.reset();
                continue;
            }
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => self.apply(cmd),
                        None => return,
                    },
                }
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        let now = Instant::now().into_std();
        match cmd {
            Command::AddTarget(name) => self.core.add_target(&name, now),
            Command::RemoveTarget(name) => self.core.remove_target(&name, now),
        }
        self.dirty = true;
    }

    fn publish(&mut self) {
        while let Some(event) = self.core.poll_event() {
            tracing::debug!(?event, "xDS change");
            // A rejection leaves the cache's data as it was: nothing to rebuild.
            if !matches!(event, XdsEvent::Rejected { .. }) {
                self.dirty = true;
            }
        }
        if self.dirty {
            self.try_snapshot();
        }
        let view = ClientView {
            cache: self.core.cache().clone(),
            connected: self.core.is_connected(),
            streams_opened: self.streams_opened,
            last_error: self.last_error.clone(),
            snapshot: self.snapshot.clone(),
        };
        self.view.send_replace(Arc::new(view));
    }

    /// Builds a snapshot if the cascade of every target is decided (gRFC A74) and hands
    /// it to the live policy; otherwise the previous one stays.
    fn try_snapshot(&mut self) {
        let version = XdsType::ALL
            .iter()
            .map(|t| format!("{}={}", t.short_name(), self.core.version(*t)))
            .collect::<Vec<_>>()
            .join(",");
        match self
            .assembler
            .assemble(self.core.targets(), self.core.cache(), &version)
        {
            Ok(snapshot) => {
                self.dirty = false;
                let snapshot = Arc::new(snapshot);
                if let Some(policy) = &self.policy {
                    policy.publish_arc(snapshot.clone());
                }
                self.snapshot = Some(snapshot);
            }
            Err(waiting) => tracing::debug!(%waiting, "snapshot not complete yet"),
        }
    }

    async fn flush(&mut self, tx: &mpsc::Sender<DiscoveryRequest>) -> bool {
        while let Some(request) = self.core.poll_request() {
            if tx.send(request).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn run_stream(&mut self) -> StreamEnd {
        let failed = |error: TransportError, got_response| StreamEnd::Failed {
            error,
            got_response,
        };
        let channel = match connect(&self.server, self.config.connect_timeout).await {
            Ok(channel) => channel,
            Err(error) => return failed(error, false),
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        self.core.on_stream_start(Instant::now().into_std());
        self.streams_opened += 1;
        self.last_error = None;
        self.flush(&tx).await;
        let mut inbound = match client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return failed(status.into(), false),
        };
        self.publish();
        let mut got_response = false;
        loop {
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        got_response = true;
                        let now = Instant::now().into_std();
                        match self.core.handle_response(response, now) {
                            Ok(outcome) if !outcome.acked => {
                                tracing::warn!(rejected = ?outcome.rejected, "xDS response NACKed");
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "xDS response ignored"),
                        }
                    }
                    Ok(None) => return failed(TransportError::Closed, got_response),
                    Err(status) => return failed(status.into(), got_response),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return StreamEnd::Shutdown,
                },
                _ = sleep_until_opt(deadline) => {
                    self.core.handle_timeout(Instant::now().into_std());
                }
            }
            if !self.flush(&tx).await {
                return failed(TransportError::Closed, got_response);
            }
            self.publish();
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
