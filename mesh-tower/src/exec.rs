//! The executor hyper's connections spawn their per-request futures on.

use std::future::Future;

/// Spawns what hyper hands it boxed. hyper's HTTP/2 client hands two futures per request
/// (the body's pipe, the wait for the stream) as one enum whose largest variant is the
/// whole connection, a few KiB; its server hands one per stream, holding the service's
/// future. Spawned by value, tokio moves all of that into the task on every request;
/// boxed, it is copied once into the box and the task holds a pointer. hyper-util's pooled
/// client boxes them the same way.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}
