//! Waits on the broker that end when the connection does.
//!
//! lapin settles an operation's future when its frame is written (a publish, an ack) or its
//! reply arrives (a declare, a confirm). When the server closes the connection (an operator
//! closing it in the management UI, a node stopping), a frame queued just before the close can
//! be left unwritten and its future never settled (amqp-rs/lapin#409). The task awaiting it (a
//! slot acking its chunk, the feeder publishing a window) would then wait forever on a connection
//! the node has long replaced, and stop serving for good. So every wait on the broker in this
//! crate goes through a [`Lifeline`], which gives up with a connection error as soon as the
//! connection is no longer open; the caller then sees the same error a failed write gives, and
//! waits for the new connection.

use std::future::Future;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionState, ConnectionStatus, ErrorKind};

/// How often a pending wait looks at the connection's state. A lost connection is noticed this
/// much later at most; lapin offers no notification that covers every way a connection ends.
const POLL: Duration = Duration::from_millis(100);

/// The state of one connection, shared by everything that waits on it.
#[derive(Clone)]
pub(crate) struct Lifeline(ConnectionStatus);

impl Lifeline {
    pub(crate) fn of(connection: &Connection) -> Lifeline {
        Lifeline(connection.status().clone())
    }

    /// `op`'s output, or `None` once the connection is no longer open and `op` has not finished.
    pub(crate) async fn until_closed<F: Future>(&self, op: F) -> Option<F::Output> {
        tokio::pin!(op);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut op => return Some(out),
                _ = tick.tick() => {
                    if !self.0.connected() {
                        return None;
                    }
                }
            }
        }
    }

    /// `op`, failing as a write on a closed connection does once the connection is no longer open.
    pub(crate) async fn bound<T>(
        &self,
        op: impl Future<Output = lapin::Result<T>>,
    ) -> lapin::Result<T> {
        self.until_closed(op).await.unwrap_or_else(|| Err(closed()))
    }

    /// Closes `channel` (reply 200), best effort: what it held goes back to its queues either way.
    pub(crate) async fn close_channel(&self, channel: &Channel, why: &str) {
        let _ = self.bound(channel.close(200, why.into())).await;
    }
}

/// The error of an operation abandoned because its connection closed.
pub(crate) fn closed() -> lapin::Error {
    ErrorKind::InvalidConnectionState(ConnectionState::Closed).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_on_a_connection_that_never_opened_ends_with_a_connection_error() {
        // A status that was never connected reads as closed: the wait must not hang.
        let lifeline = Lifeline(ConnectionStatus::default());
        let never = std::future::pending::<lapin::Result<()>>();
        let ended = tokio::time::timeout(Duration::from_secs(30), lifeline.bound(never)).await;
        let error = ended.expect("the wait ended").unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::InvalidConnectionState(_)),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_finished_operation_wins_over_a_closed_connection() {
        let lifeline = Lifeline(ConnectionStatus::default());
        assert_eq!(lifeline.until_closed(async { 7 }).await, Some(7));
    }
}
