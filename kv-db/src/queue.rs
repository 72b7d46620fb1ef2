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

/// How many queue messages wait in each state (see [`crate::Db::queue_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Queued messages whose ready time has come (deliverable now).
    pub ready: u64,
    /// Queued messages waiting for a later ready time (delayed enqueues and retries in backoff).
    pub delayed: u64,
    /// Messages leased to a listener (being delivered).
    pub leased: u64,
}

/// Keys read per backend scan while counting.
const COUNT_PAGE: usize = 1000;

impl Inner {
    /// Counts the messages in each queue state, reading in pages of [`COUNT_PAGE`] keys within
    /// one read transaction (read-only; costs one key visit per message).
    pub(crate) async fn queue_counts(&self) -> Result<QueueCounts, KvError> {
        self.check_open()?;
        let now = self.config.clock.now_ms();
        let mut txn = self.backend.begin_read().await?;
        let mut counts = QueueCounts::default();
        for prefix in [QUEUE_READY, layout::QUEUE_RUNNING] {
            let end = [prefix + 1];
            let mut start = vec![prefix];
            loop {
                let page = txn.scan(&start, &end, COUNT_PAGE, false).await?;
                for (key, _) in &page {
                    if prefix == layout::QUEUE_RUNNING {
                        counts.leased += 1;
                    } else if layout::split_timed(key)?.0 <= now {
                        counts.ready += 1;
                    } else {
                        counts.delayed += 1;
                    }
                }
                match page.last() {
                    Some((last, _)) if page.len() == COUNT_PAGE => {
                        start = last.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(counts)
    }
}
