//! The inbound side: [`MeshListener`] accepts connections, applies the TLS mode of the
//! local port (STRICT, PERMISSIVE, DISABLE) from the live policy, and serves HTTP/1.1 and
//! HTTP/2 with the application's service (an axum `Router`, tonic `Routes`, any
//! `tower::Service<http::Request<hyper::body::Incoming>>`). Every request carries a
//! [`PeerIdentity`] extension; [`AuthorizationLayer`] decides who may call what.
//!
//! # The TLS mode of a connection
//!
//! Read per connection from `snapshot.inbound_for(local_addr)`, so a policy change applies
//! to new connections. When the policy says nothing about inbound traffic, the listener is
//! PERMISSIVE if it has certificates (Istio's default with no `PeerAuthentication`) and
//! DISABLE if it has none. A port the policy makes STRICT on a listener without
//! certificates refuses every connection (fail closed); PERMISSIVE without certificates
//! serves plaintext and refuses TLS.
//!
//! # Limits
//!
//! Handshakes run in each connection's own task, never on the accept loop, and must finish
//! (for PERMISSIVE: the first byte must arrive) within their timeouts. HTTP/1.1 request
//! headers must arrive within the header-read timeout; a connection with nothing in flight
//! is closed after the idle timeout; HTTP/2 connections are pinged. At most
//! `max_connections` connections are open, and `max_connections_per_peer` from one peer
//! address: at a limit the longest-idle connection makes room. See [`InboundConfig`] for
//! the settings and their defaults.
//!
//! ```no_run
//! # async fn demo(policy: mesh_core::live::LivePolicy, certs: mesh_tower::identity::CertificateSource) -> std::io::Result<()> {
//! use axum::{routing::get, Extension, Router};
//! use mesh_tower::inbound::{MeshListener, PeerIdentity};
//!
//! let app = Router::new().route(
//!     "/whoami",
//!     get(|Extension(peer): Extension<PeerIdentity>| async move {
//!         peer.spiffe_id.map(|id| id.to_string()).unwrap_or_default()
//!     }),
//! );
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! MeshListener::new(listener, policy, Some(certs))
//!     .serve(app, std::future::pending())
//!     .await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::inbound::TlsMode;
use mesh_core::live::LivePolicy;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::health::{ListenerReadiness, Readiness};
use crate::identity::CertificateSource;
use crate::metrics::Metrics;
use table::{Admission, ConnectionTable};

mod authz;
mod config;
mod connection;
mod preface;
mod table;
mod until;

pub use crate::exchange::PeerIdentity;
pub use authz::{Authorization, AuthorizationLayer, Authorize, PermissionDenied, ResponseFuture};
pub use config::{
    InboundConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
};
pub use connection::{HttpService, ResponseBody};

/// The accept loop and its settings.
#[derive(Debug)]
pub struct MeshListener {
    listener: TcpListener,
    policy: LivePolicy,
    tls: Option<CertificateSource>,
    config: InboundConfig,
    require_policy: bool,
    metrics: Option<Metrics>,
    readiness: Option<ListenerReadiness>,
}

impl MeshListener {
    /// A listener serving under `policy`, with `tls` certificates (none: plaintext only).
    pub fn new(listener: TcpListener, policy: LivePolicy, tls: Option<CertificateSource>) -> Self {
        Self {
            listener,
            policy,
            tls,
            config: InboundConfig::default(),
            require_policy: false,
            metrics: None,
            readiness: None,
        }
    }

    /// Takes part in `readiness` from now on: not ready until the accept loop runs (after
    /// gRFC A36's gate, with [`require_inbound_policy`](Self::require_inbound_policy));
    /// when the shutdown signal fires, the whole workload turns not ready
    /// ([`Readiness::shut_down`]). [`Mesh::listener`](crate::Mesh::listener) sets it.
    pub fn with_readiness(mut self, readiness: &Readiness) -> Self {
        if let Ok(local) = self.listener.local_addr() {
            let part = readiness.listener(local);
            if self.require_policy {
                part.waiting(A36_WAITING);
            }
            self.readiness = Some(part);
        }
        self
    }

    /// Counts connections in `metrics` (`istio_tcp_connections_opened_total` and
    /// `_closed_total`, `reporter="destination"`): a connection counts once its handshake
    /// is done, labelled with the peer's SPIFFE ID and whether it is mutual TLS.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves nothing until the policy has an inbound policy for this listener's address
    /// (gRFC A36's not-serving state, for a server whose policy comes from xDS): until
    /// then connections wait in the accept queue.
    pub fn require_inbound_policy(mut self, yes: bool) -> Self {
        self.require_policy = yes;
        self
    }

    /// Sets every connection setting at once.
    pub fn with_config(mut self, config: InboundConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the time a client has to finish its TLS handshake.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Sets the most connections open at once (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max.max(1);
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `service` on every connection until `shutdown` resolves; then stops
    /// accepting, asks open connections to finish their requests (graceful shutdown), and
    /// returns once they have. Fails only when the TLS configs cannot be built.
    pub async fn serve<S, B>(self, service: S, shutdown: impl Future<Output = ()>) -> io::Result<()>
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let acceptors = match &self.tls {
            Some(source) => Some(Arc::new(connection::Acceptors::new(source)?)),
            None => None,
        };
        let table = ConnectionTable::new(
            self.config.max_connections,
            self.config.max_connections_per_peer,
        );
        let (closing_tx, closing_rx) = watch::channel(false);
        let ctx = Arc::new(connection::Context {
            policy: self.policy,
            acceptors,
            closing: closing_rx,
            metrics: self.metrics,
            http: connection::http_builder(&self.config),
            config: self.config,
        });
        tokio::pin!(shutdown);
        let readiness = self.readiness;
        if self.require_policy {
            let local = self.listener.local_addr()?;
            if let Some(r) = &readiness {
                r.waiting(A36_WAITING);
            }
            let mut watch = ctx.policy.watch();
            tracing::info!(%local, "not serving until the control plane sends this listener's policy");
            while ctx.policy.load().inbound_for(local).is_none() {
                tokio::select! {
                    _ = watch.changed() => {}
                    () = &mut shutdown => {
                        if let Some(r) = &readiness {
                            r.shutting_down();
                        }
                        return Ok(());
                    }
                }
            }
            tracing::info!(%local, "serving");
        }
        if let Some(r) = &readiness {
            r.serving();
        }
        'accept: loop {
            let (stream, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        accept_error(error).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let registered = loop {
                match table.admit(remote.ip()) {
                    Admission::Admitted(registered) => break registered,
                    Admission::PeerLimit => {
                        tracing::debug!(%remote, "refused: the peer has its limit of connections, all busy");
                        continue 'accept;
                    }
                    // Every connection busy: wait for one to close (a notification can
                    // be missed between the check and the wait, hence the timeout).
                    Admission::Full => tokio::select! {
                        _ = tokio::time::timeout(Duration::from_millis(100), table.wait_for_room()) => {}
                        () = &mut shutdown => break 'accept,
                    },
                }
            };
            let ctx = ctx.clone();
            let service = service.clone();
            tokio::spawn(async move {
                connection::handle(ctx, stream, remote, service, registered).await;
            });
        }
        if let Some(r) = &readiness {
            r.shutting_down();
        }
        let _ = closing_tx.send(true);
        // Every connection is in the table until its task ends.
        while table.len() > 0 {
            let _ = tokio::time::timeout(Duration::from_millis(100), table.wait_for_room()).await;
        }
        Ok(())
    }
}

/// Why a listener that waits for its xDS policy is not ready.
const A36_WAITING: &str = "waiting for its inbound policy from the control plane (gRFC A36)";

/// Serves `service` on `listener` with the default limits: see [`MeshListener`].
pub async fn serve<S, B>(
    listener: TcpListener,
    policy: LivePolicy,
    tls: Option<CertificateSource>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    MeshListener::new(listener, policy, tls)
        .serve(service, shutdown)
        .await
}

/// Out of file descriptors or a connection reset before accept: log, pause briefly so a
/// persistent condition does not spin the loop, go on.
async fn accept_error(error: io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The mode of a connection: the policy's for the port, else PERMISSIVE with certificates
/// and DISABLE without.
pub(crate) fn effective_mode(policy: &LivePolicy, local: SocketAddr, has_certs: bool) -> TlsMode {
    match policy.load().inbound_for(local) {
        Some(inbound) => inbound.mode_for_port(local.port()),
        None if has_certs => TlsMode::Permissive,
        None => TlsMode::Disable,
    }
}

fn set_nodelay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY failed");
    }
}
