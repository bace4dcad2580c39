//! The client task: connect, run one stream, back off or fall back, repeat.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::stream::{pair, Inbound, Response};
use super::{
    connect::connect, Backoff, ClientView, Command, FailureKind, TransportError, XdsClientConfig,
};
use crate::ads::{AdsCore, XdsEvent};
use crate::bootstrap::XdsServer;
use crate::resource::XdsType;
use crate::snapshot::SnapshotAssembler;
use mesh_core::live::LivePolicy;
use mesh_core::Snapshot;

pub(super) struct Driver {
    /// In order of preference (gRFC A71); never empty.
    servers: Vec<XdsServer>,
    /// The one in use.
    current: usize,
    config: XdsClientConfig,
    core: AdsCore,
    commands: mpsc::Receiver<Command>,
    view: watch::Sender<Arc<ClientView>>,
    streams_opened: u64,
    /// Whether the server answered on the current stream.
    answered: bool,
    last_error: Option<(String, FailureKind)>,
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
    /// A server preferred to the one in use became reachable (gRFC A71).
    Recovered(usize),
}

impl Driver {
    pub(super) fn new(
        servers: Vec<XdsServer>,
        node: Node,
        config: XdsClientConfig,
        commands: mpsc::Receiver<Command>,
        view: watch::Sender<Arc<ClientView>>,
        policy: Option<LivePolicy>,
    ) -> Self {
        let mut ads = config.ads.clone();
        if let Some(shape) = config.shape {
            ads.shape = shape;
        }
        let node = ads.shape.announce(node);
        let assembler =
            SnapshotAssembler::new(&config.client_listener_template).with_shape(ads.shape);
        let core = AdsCore::new(node, ads);
        Self {
            servers,
            current: 0,
            config,
            core,
            commands,
            view,
            streams_opened: 0,
            answered: false,
            last_error: None,
            assembler,
            dirty: false,
            snapshot: None,
            policy,
        }
    }

    fn server(&self) -> &XdsServer {
        &self.servers[self.current]
    }

    pub(super) async fn run(mut self) {
        let mut backoff = self.config.backoff.clone();
        loop {
            let end = self.run_stream().await;
            self.core.on_stream_closed();
            match end {
                StreamEnd::Shutdown => return,
                StreamEnd::Recovered(index) => {
                    tracing::info!(
                        from = %self.server().server_uri,
                        to = %self.servers[index].server_uri,
                        "xDS server preferred to the one in use is reachable again; switching back"
                    );
                    self.current = index;
                    backoff.reset();
                    self.publish();
                    continue;
                }
                StreamEnd::Failed {
                    error,
                    got_response,
                } => {
                    tracing::warn!(server = %self.server().server_uri, %error, "ADS stream down");
                    self.last_error = Some((
                        format!("{}: {error}", self.server().server_uri),
                        error.kind(),
                    ));
                    self.publish();
                    // gRFC A57: a stream that got a response ended normally (the server may
                    // rebalance or hit its max connection age); open the next one at once.
                    if got_response {
                        backoff.reset();
                        continue;
                    }
                    // gRFC A71: the server is unreachable; try the next one at once, but
                    // only if something watched is not cached (the cache serves otherwise).
                    if self.current + 1 < self.servers.len() && self.core.has_uncached() {
                        self.current += 1;
                        tracing::warn!(server = %self.server().server_uri, "falling back to the next xDS server");
                        continue;
                    }
                }
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
            // The whole list failed: start again from the most preferred server.
            if self.current + 1 == self.servers.len() {
                self.current = 0;
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
        let updates: BTreeMap<_, _> = XdsType::ALL
            .into_iter()
            .map(|t| (t, self.core.update_counts(t)))
            .collect();
        let view = ClientView {
            cache: self.core.cache().clone(),
            connected: self.core.is_connected(),
            answered: self.core.is_connected() && self.answered,
            streams_opened: self.streams_opened,
            last_error: self.last_error.as_ref().map(|e| e.0.clone()),
            last_failure: self.last_error.as_ref().map(|e| e.1),
            snapshot: self.snapshot.clone(),
            server: Some(self.server().server_uri.clone()),
            protocol: self.core.protocol(),
            updates,
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

    async fn run_stream(&mut self) -> StreamEnd {
        let failed = |error: TransportError, got_response| StreamEnd::Failed {
            error,
            got_response,
        };
        // While on a fallback server, keep trying the preferred ones (gRFC A71).
        let preferred: Vec<XdsServer> = self.servers[..self.current].to_vec();
        let probe = probe(
            preferred,
            self.config.backoff.clone(),
            self.config.connect_timeout,
        );
        tokio::pin!(probe);
        let channel = tokio::select! {
            connected = connect(self.server(), self.config.connect_timeout) => match connected {
                Ok(channel) => channel,
                Err(error) => return failed(error, false),
            },
            index = &mut probe => return StreamEnd::Recovered(index),
        };
        let protocol = self.server().api_type.unwrap_or(self.config.ads.protocol);
        self.core.set_protocol(protocol);
        // gRFC A53 is a feature of the server in use, on top of the client's setting.
        self.core.set_ignore_resource_deletion(
            self.config.ads.ignore_resource_deletion || self.server().ignore_resource_deletion(),
        );
        let (tx, pending) = pair(protocol);
        self.core.on_stream_start(Instant::now().into_std());
        self.streams_opened += 1;
        self.last_error = None;
        self.answered = false;
        // The call is made at once; its response headers may come only with the first
        // response (grpc-go and C-core servers: istiod, the Istio agent, go-control-plane,
        // grpcio), and the server answers only what it was asked. So requests are sent
        // whenever they are due, whether or not the call has been answered yet.
        let open = pending.open(channel);
        tokio::pin!(open);
        let mut inbound: Option<Inbound> = None;
        loop {
            if !tx.flush(&mut self.core).await {
                return failed(TransportError::Closed, self.answered);
            }
            self.publish();
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // The call first, so it is made before requests could fill its buffer.
                biased;
                opened = &mut open, if inbound.is_none() => match opened {
                    Ok(stream) => inbound = Some(stream),
                    // A status the server sent is a refusal; one made up locally
                    // (the connection failed under the call) is a transport failure.
                    Err(status) if std::error::Error::source(&status).is_none() => {
                        return failed(TransportError::Refused(status), false)
                    }
                    Err(status) => return failed(status.into(), false),
                },
                message = next_message(&mut inbound), if inbound.is_some() => match message {
                    Ok(Some(response)) => {
                        self.answered = true;
                        let now = Instant::now().into_std();
                        match response.apply(&mut self.core, now) {
                            Ok(outcome) if !outcome.acked => {
                                tracing::warn!(rejected = ?outcome.rejected, "xDS response NACKed");
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "xDS response ignored"),
                        }
                    }
                    Ok(None) => return failed(TransportError::Closed, self.answered),
                    Err(status) => return failed(status.into(), self.answered),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return StreamEnd::Shutdown,
                },
                _ = sleep_until_opt(deadline) => {
                    self.core.handle_timeout(Instant::now().into_std());
                }
                index = &mut probe => return StreamEnd::Recovered(index),
            }
        }
    }
}

/// The next response of an answered call (only polled once it is).
async fn next_message(inbound: &mut Option<Inbound>) -> Result<Option<Response>, tonic::Status> {
    match inbound {
        Some(inbound) => inbound.message().await,
        None => std::future::pending().await,
    }
}

/// Tries the `preferred` servers, most preferred first, with backoff between rounds, and
/// returns the index of the first that accepts a connection; never returns if there are
/// none.
async fn probe(
    preferred: Vec<XdsServer>,
    mut backoff: Backoff,
    connect_timeout: std::time::Duration,
) -> usize {
    if preferred.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let delay = backoff.next_delay(rand::rng().random::<f64>());
        tokio::time::sleep(delay).await;
        for (index, server) in preferred.iter().enumerate() {
            if connect(server, connect_timeout).await.is_ok() {
                return index;
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
