//! The thin async driver: one ADS stream over tonic, reconnected with backoff, feeding an
//! [`AdsCore`](crate::ads::AdsCore) and publishing its cache.
//!
//! The cache survives reconnects: on a new stream every subscription is sent again with the
//! last accepted versions, and the last good data stays in force meanwhile.
//!
//! - Flavour: state of the world or delta, per server (`api_type` in the bootstrap, see
//!   [`crate::bootstrap`]) or for all ([`AdsConfig::protocol`]).
//! - Fallback (gRFC A71): with several servers, when the one in use cannot be reached (its
//!   connection or its stream fails before any response) and some watched resource is not
//!   cached yet, the next one is tried at once; the cache is kept across the switch. While
//!   on a fallback server, the preferred ones are retried with backoff, and the client
//!   switches back as soon as one accepts a connection. When every resource is cached the
//!   client stays with its server and retries it: the cache serves meanwhile.
//! - Channel credentials: `insecure`, or `tls` with gRPC's `ca_certificate_file`,
//!   `certificate_file` and `private_key_file` (rustls, ring).

mod backoff;
mod connect;
mod driver;
mod stream;
mod tls;

pub use backoff::Backoff;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use mesh_core::live::LivePolicy;
use mesh_core::Snapshot;

use crate::ads::{AdsConfig, Protocol, ResourceCache, UpdateCounts};
use crate::bootstrap::{Bootstrap, XdsServer};
use crate::resource::XdsType;
use crate::shape::{IstioShape, ShapeError};

/// Why a stream could not be opened or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The channel could not be opened.
    #[error("cannot connect: {}", error_chain(.0))]
    Connect(#[from] tonic::transport::Error),
    /// The server answered the ADS call with an error status instead of opening the
    /// stream (an unknown service, a denied node, a server shutting down).
    #[error("the server refused the ADS stream: {}", status_text(.0))]
    Refused(tonic::Status),
    /// The stream failed or the server ended it.
    #[error("stream ended: {}", status_text(.0))]
    Stream(#[from] tonic::Status),
    /// The server closed the stream cleanly.
    #[error("stream closed by the server")]
    Closed,
    /// The bootstrap's credentials for this server are not supported (`google_default`,
    /// or TLS over a Unix socket).
    #[error("{0}: unsupported channel credentials (insecure, or tls over TCP)")]
    UnsupportedCredentials(String),
    /// The TLS credentials could not be set up (a file, a field), or the handshake failed.
    #[error("TLS to {server}: {reason}")]
    Tls {
        /// The server's URI.
        server: String,
        /// What went wrong, naming the file or field.
        reason: String,
    },
    /// The server URI cannot be dialed.
    #[error("invalid server URI {0}")]
    InvalidUri(String),
    /// The bootstrap lists no server.
    #[error("the bootstrap lists no xDS server")]
    NoServer,
    /// `MESH_ISTIO_SHAPE` is not a shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

impl TransportError {
    /// What kind of failure it is, for a person deciding what to look at.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Connect(e) => {
                let chain = error_chain(e);
                if chain.contains("onnection refused") {
                    FailureKind::ConnectionRefused
                } else if chain.contains("timed out") || chain.contains("elapsed") {
                    FailureKind::ConnectTimeout
                } else {
                    FailureKind::Unreachable
                }
            }
            Self::Tls { .. } => FailureKind::Unreachable,
            Self::Refused(_) => FailureKind::StreamRefused,
            Self::Stream(_) | Self::Closed => FailureKind::StreamEnded,
            Self::UnsupportedCredentials(_)
            | Self::InvalidUri(_)
            | Self::NoServer
            | Self::Shape(_) => FailureKind::Configuration,
        }
    }
}

/// The kinds of [`TransportError`], as [`ClientView::last_failure`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Nothing accepted the connection (TCP reset: no server on that port).
    ConnectionRefused,
    /// The connection attempt timed out.
    ConnectTimeout,
    /// The connection failed otherwise (name resolution, TLS, routing).
    Unreachable,
    /// Connected, but the server answered the ADS call with an error status.
    StreamRefused,
    /// The stream was open and ended (or failed) later.
    StreamEnded,
    /// The bootstrap's server entry cannot be used as written.
    Configuration,
}

impl FailureKind {
    /// Its name in reports (`connection_refused`, `stream_refused`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::Unreachable => "unreachable",
            Self::StreamRefused => "stream_refused",
            Self::StreamEnded => "stream_ended",
            Self::Configuration => "configuration",
        }
    }
}

/// A status as `CODE: message` (tonic's own Display is a debug dump).
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// An error and its sources, `: `-separated (tonic's own message is only "transport
/// error"; the cause, such as a rejected certificate, is further down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        // Wrappers often repeat their source's message; say it once.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The client's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct XdsClientConfig {
    /// Protocol settings.
    pub ads: AdsConfig,
    /// Delay between reconnection attempts.
    pub backoff: Backoff,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// How outbound listener names are made from targets (`%s` is the target), so that
    /// snapshots key listeners by target (`payment-service:8080`).
    pub client_listener_template: String,
    /// Which of istiod's outputs to take; `None`: `MESH_ISTIO_SHAPE` decides when the
    /// client starts from a bootstrap ([`XdsClient::from_bootstrap`]), else
    /// [`AdsConfig::shape`].
    pub shape: Option<IstioShape>,
}

impl Default for XdsClientConfig {
    fn default() -> Self {
        Self {
            ads: AdsConfig::default(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(20),
            client_listener_template: "%s".to_owned(),
            shape: None,
        }
    }
}

impl XdsClientConfig {
    /// Sets the protocol settings.
    pub fn with_ads(mut self, ads: AdsConfig) -> Self {
        self.ads = ads;
        self
    }

    /// Sets the outbound listener name template (`%s` is the target).
    pub fn with_client_listener_template(mut self, template: &str) -> Self {
        self.client_listener_template = template.to_owned();
        self
    }

    /// Sets which of istiod's outputs to take (overrides `MESH_ISTIO_SHAPE`).
    pub fn with_shape(mut self, shape: IstioShape) -> Self {
        self.shape = Some(shape);
        self
    }

    /// Sets the reconnection backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// What the client knows, published after every change.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientView {
    /// Every subscribed resource with its data and status.
    pub cache: ResourceCache,
    /// Whether a stream is open (the call is made; the server may not have answered).
    pub connected: bool,
    /// Whether the server has sent a response on the open stream. grpc-go and C-core
    /// servers send nothing, not even response headers, before their first response.
    pub answered: bool,
    /// What kind of failure [`last_error`](Self::last_error) is.
    pub last_failure: Option<FailureKind>,
    /// How many streams have been opened.
    pub streams_opened: u64,
    /// The last transport error, if the stream is down.
    pub last_error: Option<String>,
    /// The last complete snapshot (gRFC A74), once every watched listener's cascade has
    /// been decided; it stays while later updates are incomplete or rejected.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The `server_uri` of the server in use (or being tried).
    pub server: Option<String>,
    /// The protocol flavour of the last stream.
    pub protocol: Protocol,
    /// Per type, how many responses were accepted and rejected (for `xds_update` metrics).
    pub updates: BTreeMap<XdsType, UpdateCounts>,
}

#[derive(Debug)]
pub(crate) enum Command {
    AddTarget(String),
    RemoveTarget(String),
}

/// The client task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the xDS client has stopped")]
pub struct ClientStopped;

/// A running ADS client. Dropping it stops the task.
#[derive(Debug)]
pub struct XdsClient {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<ClientView>>,
    task: JoinHandle<()>,
}

impl XdsClient {
    /// Starts a client talking to the bootstrap's servers (the first, falling back down the
    /// list as gRFC A71 says), announcing its node and honouring each server's
    /// `ignore_resource_deletion` feature (gRFC A53) and the listener name template.
    /// Must be called within a tokio runtime.
    pub fn from_bootstrap(
        bootstrap: &Bootstrap,
        config: XdsClientConfig,
    ) -> Result<Self, TransportError> {
        Self::from_bootstrap_inner(bootstrap, config, None)
    }

    /// As [`from_bootstrap`](Self::from_bootstrap), publishing every complete snapshot to
    /// `policy` (the handle mesh-tower's layers read).
    pub fn from_bootstrap_with_policy(
        bootstrap: &Bootstrap,
        config: XdsClientConfig,
        policy: LivePolicy,
    ) -> Result<Self, TransportError> {
        Self::from_bootstrap_inner(bootstrap, config, Some(policy))
    }

    fn from_bootstrap_inner(
        bootstrap: &Bootstrap,
        mut config: XdsClientConfig,
        policy: Option<LivePolicy>,
    ) -> Result<Self, TransportError> {
        if bootstrap.xds_servers.is_empty() {
            return Err(TransportError::NoServer);
        }
        config.client_listener_template = bootstrap
            .client_default_listener_resource_name_template
            .clone();
        config.ads.certificate_providers =
            Some(bootstrap.certificate_providers.keys().cloned().collect());
        config.shape = Some(match config.shape {
            Some(shape) => shape,
            None => IstioShape::from_env()?,
        });
        Ok(Self::start_inner(
            bootstrap.xds_servers.clone(),
            bootstrap.node.to_proto(),
            config,
            policy,
        ))
    }

    /// Starts a client for `server` with this node. Must be called within a tokio runtime.
    pub fn start(server: XdsServer, node: Node, config: XdsClientConfig) -> Self {
        Self::start_inner(vec![server], node, config, None)
    }

    /// Starts a client for several servers in order of preference (gRFC A71 fallback),
    /// publishing every complete snapshot to `policy` if given. Must be called within a
    /// tokio runtime.
    pub fn start_with_servers(
        servers: Vec<XdsServer>,
        node: Node,
        config: XdsClientConfig,
        policy: Option<LivePolicy>,
    ) -> Result<Self, TransportError> {
        if servers.is_empty() {
            return Err(TransportError::NoServer);
        }
        Ok(Self::start_inner(servers, node, config, policy))
    }

    /// As [`start`](Self::start), publishing every complete snapshot to `policy`.
    pub fn start_with_policy(
        server: XdsServer,
        node: Node,
        config: XdsClientConfig,
        policy: LivePolicy,
    ) -> Self {
        Self::start_inner(vec![server], node, config, Some(policy))
    }

    fn start_inner(
        servers: Vec<XdsServer>,
        node: Node,
        config: XdsClientConfig,
        policy: Option<LivePolicy>,
    ) -> Self {
        let (commands, rx) = mpsc::channel(64);
        let (view_tx, view) = watch::channel(Arc::new(ClientView::default()));
        let driver = driver::Driver::new(servers, node, config, rx, view_tx, policy);
        let task = tokio::spawn(driver.run());
        Self {
            commands,
            view,
            task,
        }
    }

    /// Starts watching a listener by name.
    pub async fn add_target(&self, listener_name: &str) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::AddTarget(listener_name.to_owned()))
            .await
            .map_err(|_| ClientStopped)
    }

    /// Stops watching a listener.
    pub async fn remove_target(&self, listener_name: &str) -> Result<(), ClientStopped> {
        self.commands
            .send(Command::RemoveTarget(listener_name.to_owned()))
            .await
            .map_err(|_| ClientStopped)
    }

    /// A receiver of the client's view, updated after every change.
    pub fn watch(&self) -> watch::Receiver<Arc<ClientView>> {
        self.view.clone()
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClientView> {
        self.view.borrow().clone()
    }

    /// Stops the client and waits for its task to end.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        // The task owns nothing that needs a clean goodbye: the stream just ends.
        self.task.abort();
    }
}
