//! A connection served until something stops it, where the stop signal is polled only when
//! its own waker fires. A connection's task wakes for every read and write; `select!`ing
//! the connection with its close signals (shutdown, eviction, idle timer) would poll all of
//! them on each of those wake-ups, for signals that fire once in a connection's life.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

/// How [`Until`] ended.
#[derive(Debug)]
pub(super) enum Ended<C, S> {
    /// The connection finished first.
    Done(C),
    /// The stop signal fired first.
    Stopped(S),
}

/// Wakes the connection's task and notes that the stop signal wants polling.
#[derive(Debug)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project! {
    /// Polls `conn` on every wake-up and `stop` only after its waker fired (and once at
    /// the start); the connection wins when both are ready.
    pub(super) struct Until<C, S> {
        #[pin]
        conn: C,
        #[pin]
        stop: S,
        signal: Arc<Signal>,
        stop_waker: Waker,
    }
}

impl<C, S> Until<C, S> {
    pub(super) fn new(conn: C, stop: S) -> Self {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            conn,
            stop,
            stop_waker: Waker::from(Arc::clone(&signal)),
            signal,
        }
    }
}

impl<C: Future, S: Future> Future for Until<C, S> {
    type Output = Ended<C::Output, S::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Registered before the flag is read: a signal firing after the read wakes us.
        this.signal.task.register(cx.waker());
        if let Poll::Ready(done) = this.conn.poll(cx) {
            return Poll::Ready(Ended::Done(done));
        }
        if this.signal.woken.swap(false, Ordering::AcqRel) {
            let mut stop_cx = Context::from_waker(this.stop_waker);
            if let Poll::Ready(stopped) = this.stop.poll(&mut stop_cx) {
                return Poll::Ready(Ended::Stopped(stopped));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    /// Counts its polls; never ready.
    struct Counting(Arc<AtomicUsize>);

    impl Future for Counting {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_stop_signal_is_polled_only_when_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        // A "connection" that wakes its task ten times, then finishes.
        let mut wakes = 0;
        let conn = std::future::poll_fn(move |cx| {
            if wakes == 10 {
                return Poll::Ready("done");
            }
            wakes += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        let stop = Counting(Arc::clone(&polls));
        match Until::new(conn, stop).await {
            Ended::Done(out) => assert_eq!(out, "done"),
            Ended::Stopped(()) => panic!("the stop signal never fires"),
        }
        // Eleven polls of the connection, one of the stop signal (the first).
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stop_signal_that_fires_later_stops_a_pending_connection() {
        let (tx, rx) = oneshot::channel::<&str>();
        let task = tokio::spawn(Until::new(std::future::pending::<()>(), rx));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        tx.send("stop").expect("receiver alive");
        match task.await.expect("task") {
            Ended::Stopped(Ok(why)) => assert_eq!(why, "stop"),
            other => panic!("ended with {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signal_from_another_thread_stops_a_connection_that_keeps_waking() {
        let (tx, rx) = oneshot::channel::<&str>();
        // A connection under load: it wakes its task over and over.
        let conn = std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        });
        let task = tokio::spawn(Until::new(conn, rx));
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send("stop");
        });
        // A guard against a lost wake-up hanging the test, not a timing assertion.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the stop signal was seen")
            .expect("task");
        assert!(matches!(ended, Ended::Stopped(Ok("stop"))), "{ended:?}");
    }

    #[tokio::test]
    async fn the_connection_wins_when_both_are_ready() {
        let ended = Until::new(std::future::ready(1), std::future::ready(2)).await;
        assert!(matches!(ended, Ended::Done(1)), "{ended:?}");
    }
}
