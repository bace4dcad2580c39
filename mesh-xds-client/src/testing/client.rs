//! Waiting on a client's view, for tests.

use std::sync::Arc;
use std::time::Duration;

use crate::transport::{ClientView, XdsClient};

/// Waits until the client's view satisfies `pred` and returns it, or `None` after
/// `within` (a deadline for a hung test, not a timing assertion).
pub async fn wait_for_view(
    client: &XdsClient,
    within: Duration,
    mut pred: impl FnMut(&ClientView) -> bool,
) -> Option<Arc<ClientView>> {
    let mut rx = client.watch();
    let wait = async {
        loop {
            let view = rx.borrow_and_update().clone();
            if pred(&view) {
                return Some(view);
            }
            rx.changed().await.ok()?;
        }
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}
