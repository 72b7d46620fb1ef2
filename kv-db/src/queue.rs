//! Waiting for queue messages. A dequeue looks for a due message with a read transaction and
//! only asks the writer to lease one when something is due, so idle listeners cost no writes.
//!
//! Contract of [`Inner::dequeue`]:
//! - Returns a leased message as soon as one is due, or `None` once `wait` has passed.
//! - Wakes on a new or re-queued message, at the earliest ready time, and at least every
//!   second (a test clock may be moved without notice), never past the caller's wait.
//! - Fails with [`KvError::Closed`] when the database closes while waiting.
//!
//! Counting the messages in each state ([`QueueCounts`], and the gauges' starting point at open,
//! [`OpenCount`]) reads them page by page on one read transaction.

use std::sync::Arc;
use std::time::Duration;

use kv_traits::{Backend, KvError, QueueMessage, ReadTxn};
use tokio::task::JoinHandle;

use crate::layout::{self, QUEUE_READY, QUEUE_RUNNING};
use crate::stats::Stats;
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

/// Pages the open-time count reads before [`Db::open`](crate::Db::open) returns; a queue
/// longer than that is counted on in the background.
const OPEN_PAGES: usize = 16;

/// Counts queued and leased messages on one read transaction, a page of [`COUNT_PAGE`] keys
/// per [`Counter::step`].
pub(crate) struct Counter {
    txn: Box<dyn ReadTxn>,
    now: u64,
    /// Index into `[QUEUE_READY, QUEUE_RUNNING]` of the prefix being read.
    prefix: usize,
    start: Vec<u8>,
    counts: QueueCounts,
}

impl Counter {
    /// A counter on `txn`, telling ready from delayed messages at `now`.
    pub(crate) fn new(txn: Box<dyn ReadTxn>, now: u64) -> Counter {
        Counter {
            txn,
            now,
            prefix: 0,
            start: vec![QUEUE_READY],
            counts: QueueCounts::default(),
        }
    }

    /// Reads the next page; returns the counts once every page was read.
    pub(crate) async fn step(&mut self) -> Result<Option<QueueCounts>, KvError> {
        let prefixes = [QUEUE_READY, QUEUE_RUNNING];
        let Some(&prefix) = prefixes.get(self.prefix) else {
            return Ok(Some(self.counts));
        };
        let page = self
            .txn
            .scan(&self.start, &[prefix + 1], COUNT_PAGE, false)
            .await?;
        for (key, _) in &page {
            if prefix == QUEUE_RUNNING {
                self.counts.leased += 1;
            } else if layout::split_timed(key)?.0 <= self.now {
                self.counts.ready += 1;
            } else {
                self.counts.delayed += 1;
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == COUNT_PAGE => {
                self.start = last.clone();
                self.start.push(0);
            }
            _ => {
                self.prefix += 1;
                match prefixes.get(self.prefix) {
                    Some(&next) => self.start = vec![next],
                    None => return Ok(Some(self.counts)),
                }
            }
        }
        Ok(None)
    }

    /// Reads pages until done.
    pub(crate) async fn finish(mut self) -> Result<QueueCounts, KvError> {
        loop {
            if let Some(c) = self.step().await? {
                return Ok(c);
            }
        }
    }
}

impl Inner {
    /// Counts the messages in each queue state, reading in pages of [`COUNT_PAGE`] keys within
    /// one read transaction (read-only; costs one key visit per message).
    pub(crate) async fn queue_counts(&self) -> Result<QueueCounts, KvError> {
        self.check_open()?;
        let txn = self.backend.begin_read().await?;
        Counter::new(txn, self.config.clock.now_ms()).finish().await
    }
}

/// The starting point of the queue gauges ([`Stats`]): a count of the stored messages on a
/// read transaction begun before the writer started, so every queue change the writer
/// commits afterwards is a delta on top of it.
///
/// Contract:
/// - [`OpenCount::begin`] must be called before the writer starts (it pins the snapshot).
/// - [`OpenCount::settle`] counts up to [`OPEN_PAGES`] pages at once: a queue that short has
///   exact gauges when [`Db::open`](crate::Db::open) returns. A longer one is counted on by the
///   returned task, so opening a database with a deep queue costs no scan of it (restarts
///   resume deliveries at once); until that task ends the gauges hold only the changes made
///   since the open (never below 0). The task ends early, adding nothing, on `shutdown`.
pub(crate) struct OpenCount(Counter);

impl OpenCount {
    /// Begins the count's read transaction.
    pub(crate) async fn begin(backend: &dyn Backend) -> Result<OpenCount, KvError> {
        // Ready and delayed messages are both in the ready gauge: `now` does not matter.
        Ok(OpenCount(Counter::new(backend.begin_read().await?, 0)))
    }

    /// Counts what fits in [`OPEN_PAGES`] pages now, the rest in a background task.
    pub(crate) async fn settle(
        mut self,
        stats: Arc<Stats>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>, KvError> {
        for _ in 0..OPEN_PAGES {
            if let Some(c) = self.0.step().await? {
                stats.add_queue(c.ready + c.delayed, c.leased);
                return Ok(None);
            }
        }
        Ok(Some(tokio::spawn(async move {
            tokio::select! {
                r = self.0.finish() => match r {
                    Ok(c) => stats.add_queue(c.ready + c.delayed, c.leased),
                    Err(e) => tracing::warn!(error = %e, "counting the queue at open failed"),
                },
                _ = shutdown.wait_for(|s| *s) => {}
            }
        })))
    }
}
