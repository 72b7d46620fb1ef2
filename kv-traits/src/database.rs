//! The Deno KV operations as a trait, implemented by the embedded database (`kv-db`) and by the
//! remote KV Connect client alike.
//! Implementations own request validation: see "Limits" on [`Database`].

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::error::KvError;
use crate::limits::Limits;
use crate::stats::DatabaseStats;
use crate::types::{
    AtomicWrite, CommitResult, Consistency, KvEntry, QueueLease, QueueMessage, ReadRange,
    WatchKeyOutput,
};

/// A stream of watch notifications: one `Vec` per notification, one element per watched key in
/// request order. The first notification reports every key as changed.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Vec<WatchKeyOutput>, KvError>> + Send>>;

/// A Deno KV database.
///
/// # Limits
///
/// The implementation is the one place where request [`Limits`] are decided and enforced:
/// [`Database::limits`] says which it applies, and [`snapshot_read`](Database::snapshot_read),
/// [`atomic_write`](Database::atomic_write) and [`watch`](Database::watch) validate their own
/// input against them ([`Limits::validate_read`], [`Limits::validate_write`],
/// [`Limits::validate_watch`], no empty watched key), answering [`KvError::Limit`] with nothing
/// applied. A proxy (the remote client) relies on the database it forwards to, which validates
/// the same way. Callers such as servers do not validate again; they read
/// [`Database::limits`] only when they need a bound of their own (e.g. a request body size).
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Reads every range from one consistent snapshot; one `Vec` of entries per range, in order.
    /// Each holds exactly `min(limit, matching keys)` entries. Expired entries are never returned.
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError>;

    /// Applies an atomic write: every check holds and everything is applied under one new
    /// versionstamp, or nothing is applied.
    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError>;

    /// Watches up to the key limit; see [`WatchStream`].
    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError>;

    /// Waits up to `wait` for a ready queue message and leases it to the caller. `None` if none
    /// became ready in time.
    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError>;

    /// Ends a delivery: on success the message is gone; on failure it is retried along its
    /// backoff schedule, then written to its dead-letter keys.
    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError>;

    /// Stops background work and closes the storage. Later calls fail with [`KvError::Closed`].
    async fn close(&self) -> Result<(), KvError> {
        Ok(())
    }

    /// The limits this database enforces on every request (see "Limits" above: the
    /// implementation validates, callers don't). Default: [`Limits::default`], the Deno KV
    /// table, which is also the best guess of an implementation that cannot know its peer's.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// A snapshot of the database's work counters for metrics (see [`crate::stats`]); cheap,
    /// no I/O. Default: `None`, an implementation that keeps none (e.g. a remote proxy).
    fn stats(&self) -> Option<DatabaseStats> {
        None
    }
}

#[async_trait]
impl<D: Database + ?Sized> Database for std::sync::Arc<D> {
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        (**self).snapshot_read(ranges, consistency).await
    }
    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        (**self).atomic_write(write).await
    }
    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        (**self).watch(keys).await
    }
    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        (**self).dequeue(wait).await
    }
    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        (**self).finish(lease, success).await
    }
    async fn close(&self) -> Result<(), KvError> {
        (**self).close().await
    }
    fn limits(&self) -> Limits {
        (**self).limits()
    }
    fn stats(&self) -> Option<DatabaseStats> {
        (**self).stats()
    }
}
