//! Waiting for queue messages. A dequeue looks for a due message with a read transaction and
//! only asks the writer to lease one when something is due, so idle listeners cost no writes.
//!
//! Contract of [`Inner::dequeue`]:
//! - Returns a leased message as soon as one is due, or `None` once `wait` has passed.
//! - Wakes on a new or re-queued message, at the earliest ready time, and at least every
//!   second (a test clock may be moved without notice), never past the caller's wait.
//! - Fails with [`KvError::Closed`] when the database closes while waiting.

use std::time::Duration;

use kv_traits::{KvError, QueueMessage};

use crate::layout::{self, QUEUE_READY};
use crate::writer::{Dequeued, Op};
use crate::Inner;

impl Inner {
    /// Waits up to `wait` for a due message and leases it.
    pub(crate) async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        let give_up = tokio::time::Instant::now() + wait;
        let lease_ms = self.config.queue_lease.as_millis() as u64;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let notified = self.queue_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Look first with a read transaction; only a ready message needs the writer.
            let next_ready = match self.earliest_ready().await? {
                Some(ts) if ts <= self.config.clock.now_ms() => {
                    match self.call(|reply| Op::Dequeue { lease_ms, reply }).await? {
                        Dequeued::Leased(m) => return Ok(Some(m)),
                        Dequeued::Empty { next_ready } => next_ready,
                    }
                }
                other => other,
            };
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Ok(None);
            }
            // Wake at the next ready time, on a new or re-queued message, or at least every
            // second (the clock may be moved by tests), but never past the caller's wait.
            let mut sleep_for = (give_up - now).min(Duration::from_secs(1));
            if let Some(ts) = next_ready {
                let until = ts.saturating_sub(self.config.clock.now_ms()).max(1);
                sleep_for = sleep_for.min(Duration::from_millis(until));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = shutdown.wait_for(|s| *s) => return Err(KvError::Closed),
            }
        }
    }

    /// The ready time of the earliest queued (not leased) message.
    async fn earliest_ready(&self) -> Result<Option<u64>, KvError> {
        let mut txn = self.backend.begin_read().await?;
        let first = txn
            .scan(&[QUEUE_READY], &[QUEUE_READY + 1], 1, false)
            .await?;
        match first.first() {
            Some((k, _)) => Ok(Some(layout::split_timed(k)?.0)),
            None => Ok(None),
        }
    }
}
