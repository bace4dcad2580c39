//! [`CertificateSource`]: our identity and trust bundle, live and swappable. TLS configs
//! read it at every handshake, so a rotation needs no rebuilt config and drops no
//! connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{CertificateError, CertifiedIdentity, TrustBundle};

/// Istio's file names in the directory the agent writes (`/etc/certs` or
/// `./var/run/secrets/workload-spiffe-credentials`).
pub const ISTIO_CERT_CHAIN: &str = "cert-chain.pem";
/// See [`ISTIO_CERT_CHAIN`].
pub const ISTIO_KEY: &str = "key.pem";
/// See [`ISTIO_CERT_CHAIN`].
pub const ISTIO_ROOT_CERT: &str = "root-cert.pem";
/// The `file_watcher` plugin's `refresh_interval` when the bootstrap gives none (gRPC's
/// default, 10 minutes).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// The `file_watcher` certificate provider's settings (from the bootstrap's
/// `certificate_providers.<instance>.config`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileWatcherConfig {
    /// The certificate chain, leaf first (`certificate_file`).
    pub certificate_file: PathBuf,
    /// The private key (`private_key_file`).
    pub private_key_file: PathBuf,
    /// The roots (`ca_certificate_file`).
    pub ca_certificate_file: PathBuf,
    /// How often the files are read for changes (`refresh_interval`).
    pub refresh_interval: Duration,
}

impl FileWatcherConfig {
    /// The three files, polled every [`DEFAULT_REFRESH_INTERVAL`].
    pub fn new(
        certificate_file: impl Into<PathBuf>,
        private_key_file: impl Into<PathBuf>,
        ca_certificate_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            certificate_file: certificate_file.into(),
            private_key_file: private_key_file.into(),
            ca_certificate_file: ca_certificate_file.into(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }

    /// Istio's layout in `dir`: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub fn istio(dir: &Path) -> Self {
        Self::new(
            dir.join(ISTIO_CERT_CHAIN),
            dir.join(ISTIO_KEY),
            dir.join(ISTIO_ROOT_CERT),
        )
    }

    /// Sets the polling interval.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Status {
    reloads: u64,
    errors: u64,
}

struct Shared {
    identity: ArcSwap<CertifiedIdentity>,
    bundle: ArcSwap<TrustBundle>,
    last_error: Mutex<Option<Arc<CertificateError>>>,
    status: watch::Sender<Status>,
}

/// A live identity and trust bundle. Clones share them.
///
/// Made from static PEM files ([`from_pem_files`](Self::from_pem_files)), from the
/// `file_watcher` provider ([`file_watcher`](Self::file_watcher)), or from memory
/// ([`in_memory`](Self::in_memory), then [`update`](Self::update) to rotate).
#[derive(Clone)]
pub struct CertificateSource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSource")
            .field("identity", &self.identity())
            .field("bundle", &self.bundle())
            .field("status", &*self.shared.status.borrow())
            .finish()
    }
}

impl CertificateSource {
    /// A source holding `identity` and `bundle` until [`update`](Self::update).
    ///
    /// A bundle without a trust domain gets the identity's: peers must then be in our own
    /// trust domain, as in a single-cluster Istio mesh.
    pub fn in_memory(identity: CertifiedIdentity, bundle: TrustBundle) -> Self {
        let bundle = default_trust_domain(bundle, &identity);
        Self {
            shared: Arc::new(Shared {
                identity: ArcSwap::from_pointee(identity),
                bundle: ArcSwap::from_pointee(bundle),
                last_error: Mutex::new(None),
                status: watch::Sender::new(Status::default()),
            }),
        }
    }

    /// A source from static PEM files, read once.
    pub fn from_pem_files(
        chain: &Path,
        key: &Path,
        roots: &Path,
    ) -> Result<Self, CertificateError> {
        let identity = CertifiedIdentity::from_pem_files(chain, key)?;
        let bundle = TrustBundle::from_pem_file(roots)?;
        Ok(Self::in_memory(identity, bundle))
    }

    /// The `file_watcher` provider: reads the files now (an error here is returned), then
    /// polls them every `refresh_interval` on the current tokio runtime and reloads when
    /// their content changes. A broken new file is reported ([`last_error`](Self::last_error),
    /// [`watch`](Self::watch), a log line) and the last good certificate stays in use.
    /// Polling stops when the last clone of the source is dropped.
    ///
    /// Must be called within a tokio runtime.
    pub fn file_watcher(config: FileWatcherConfig) -> Result<Self, CertificateError> {
        let files = read_files(&config)?;
        let (identity, bundle) = parse_files(&config, &files)?;
        let source = Self::in_memory(identity, bundle);
        let weak = Arc::downgrade(&source.shared);
        tokio::spawn(poll_files(weak, config, files));
        Ok(source)
    }

    /// The current identity (lock-free).
    pub fn identity(&self) -> Arc<CertifiedIdentity> {
        self.shared.identity.load_full()
    }

    /// The current trust bundle (lock-free).
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.shared.bundle.load_full()
    }

    /// Replaces the identity, and the bundle when one is given. New handshakes use them;
    /// established connections carry on.
    pub fn update(&self, identity: CertifiedIdentity, bundle: Option<TrustBundle>) {
        if let Some(bundle) = bundle {
            let bundle = default_trust_domain(bundle, &identity);
            self.shared.bundle.store(Arc::new(bundle));
        }
        self.shared.identity.store(Arc::new(identity));
        self.shared.status.send_modify(|s| s.reloads += 1);
    }

    /// Records a failed reload: kept for [`last_error`](Self::last_error) and announced to
    /// watchers. The current certificate is untouched.
    pub fn report_error(&self, error: CertificateError) {
        tracing::warn!(%error, "certificate reload failed; keeping the last good certificate");
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = Some(Arc::new(error));
        }
        self.shared.status.send_modify(|s| s.errors += 1);
    }

    /// The last reload error, if any (cleared by nothing: compare with
    /// [`reloads`](Self::reloads) to see if a good reload came after).
    pub fn last_error(&self) -> Option<Arc<CertificateError>> {
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// How many times the identity was replaced.
    pub fn reloads(&self) -> u64 {
        self.shared.status.borrow().reloads
    }

    /// A watcher of reloads and reload errors from now on.
    pub fn watch(&self) -> CertificateWatch {
        let rx = self.shared.status.subscribe();
        let seen = *rx.borrow();
        CertificateWatch {
            source: self.clone(),
            rx,
            seen,
        }
    }
}

fn default_trust_domain(bundle: TrustBundle, identity: &CertifiedIdentity) -> TrustBundle {
    if bundle.trust_domain().is_some() {
        return bundle;
    }
    let td = identity.spiffe_id().trust_domain().clone();
    bundle.with_trust_domain(Some(td))
}

/// What a [`CertificateWatch`] saw.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceEvent {
    /// A new identity is in use.
    Reloaded(Arc<CertifiedIdentity>),
    /// A reload failed; the previous identity stays.
    Failed(Arc<CertificateError>),
}

/// Waits for reloads and reload errors of a [`CertificateSource`].
#[derive(Debug)]
pub struct CertificateWatch {
    source: CertificateSource,
    rx: watch::Receiver<Status>,
    seen: Status,
}

impl CertificateWatch {
    /// Resolves at the next reload or failed reload after the last one returned. Several in
    /// a row may resolve once; a reload wins over an error.
    pub async fn changed(&mut self) -> SourceEvent {
        loop {
            let now = *self.rx.borrow_and_update();
            if now != self.seen {
                let reloaded = now.reloads != self.seen.reloads;
                self.seen = now;
                if reloaded {
                    return SourceEvent::Reloaded(self.source.identity());
                }
                if let Some(e) = self.source.last_error() {
                    return SourceEvent::Failed(e);
                }
            }
            // The sender lives in the source this watch holds, so it is never closed.
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

type Files = [Vec<u8>; 3];

fn read_files(config: &FileWatcherConfig) -> Result<Files, CertificateError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| CertificateError::Read {
            origin: p.display().to_string(),
            source,
        })
    };
    Ok([
        read(&config.certificate_file)?,
        read(&config.private_key_file)?,
        read(&config.ca_certificate_file)?,
    ])
}

fn parse_files(
    config: &FileWatcherConfig,
    [chain, key, roots]: &Files,
) -> Result<(CertifiedIdentity, TrustBundle), CertificateError> {
    let origin = format!(
        "{} + {}",
        config.certificate_file.display(),
        config.private_key_file.display()
    );
    let identity = CertifiedIdentity::from_pem(chain, key, &origin)?;
    let bundle = TrustBundle::from_pem(roots, &config.ca_certificate_file.display().to_string())?;
    Ok((identity, bundle))
}

/// Polls the files; reloads on a content change. A bad version is reported once and not
/// retried until the files change again.
async fn poll_files(shared: Weak<Shared>, config: FileWatcherConfig, mut seen: Files) {
    let mut ticker = tokio::time::interval(config.refresh_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the files were just read
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return; // every handle is gone
        };
        let source = CertificateSource { shared };
        let cfg = config.clone();
        let files = match tokio::task::spawn_blocking(move || read_files(&cfg)).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                // A file missing mid-rotation is reported once per distinct state.
                if source.last_error().map(|l| l.to_string()) != Some(e.to_string()) {
                    source.report_error(e);
                }
                continue;
            }
            Err(join) => {
                tracing::error!(%join, "certificate file reader task failed");
                continue;
            }
        };
        if files == seen {
            continue;
        }
        match parse_files(&config, &files) {
            Ok((identity, bundle)) => {
                tracing::info!(
                    spiffe_id = %identity.spiffe_id(),
                    serial = identity.serial(),
                    "certificates reloaded"
                );
                source.update(identity, Some(bundle));
            }
            Err(e) => source.report_error(e),
        }
        seen = files;
    }
}
