use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The error type a [`BackgroundServer`] stops with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server running in a tokio task on `127.0.0.1:<free port>`, for tests and demos.
///
/// Dropping it asks the server to shut down, like [`BackgroundServer::stop`] without
/// waiting.
#[derive(Debug)]
pub struct BackgroundServer<E> {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), E>>>,
}

/// Resolves when its [`BackgroundServer`] is stopped or dropped; hand it to a service's
/// `run` as the shutdown future.
#[derive(Debug)]
pub struct StopSignal(oneshot::Receiver<()>);

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender means the owner went away: that is a stop request too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl<E> BackgroundServer<E>
where
    E: Into<BoxError> + Send + 'static,
{
    /// Binds `127.0.0.1:0` and spawns `serve(listener, stop_signal)`.
    ///
    /// ```
    /// # async fn demo() -> Result<(), example_common::BoxError> {
    /// use example_common::BackgroundServer;
    ///
    /// let server = BackgroundServer::start(|listener, stop| async move {
    ///     drop(listener);
    ///     stop.await;
    ///     Ok::<(), std::io::Error>(())
    /// })
    /// .await?;
    /// println!("serving on {}", server.addr());
    /// server.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start<F, Fut>(serve: F) -> io::Result<Self>
    where
        F: FnOnce(TcpListener, StopSignal) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, signal) = oneshot::channel();
        let task = tokio::spawn(serve(listener, StopSignal(signal)));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the server to shut down and waits until it has, returning its result.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(stop) = self.stop.take() {
            // An error means the server already ended; its result is collected below.
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?.map_err(Into::into),
            None => Ok(()),
        }
    }
}
