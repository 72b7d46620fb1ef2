//! The storage-engine trait: an ordered, transactional byte store.
//!
//! A [`Backend`] knows nothing about Deno KV. It stores byte keys and byte values in one ordered
//! keyspace (unsigned bytewise order) and offers snapshot read transactions and write
//! transactions. The semantics layer (`kv-db`) encodes entries, expiry indexes, queues and the
//! version counter into that keyspace, so every engine behaves identically by construction.
//!
//! Contract for implementations:
//! - A [`ReadTxn`] sees one consistent snapshot for its whole life, including every write
//!   transaction committed before it began.
//! - A [`WriteTxn`] sees its own uncommitted writes. At most one write transaction is open at a
//!   time: `begin_write` waits for the previous one to commit or be dropped (networked engines
//!   may instead fail a conflicting commit with [`BackendError::Conflict`]).
//! - `commit` is all-or-nothing. When it returns `Ok`, the transaction is durable to the degree
//!   the engine documents (the default must survive a process crash and a power loss).
//!   Dropping a `WriteTxn` without committing rolls it back.
//! - After a commit fails in a way that leaves the durable state unknown (for example fsync),
//!   the engine returns [`BackendError::Poisoned`] for every later write.
//!
//! Many logical atomic writes share one `WriteTxn` (group commit): the semantics layer buffers
//! each logical write's effects, applies only those that succeed, and commits once.
//!
//! Shared stores (networked engines, where several processes open the same database):
//! - [`Backend::shared`] returns `true`. "One write transaction at a time" then holds across
//!   every process: each write transaction sees every commit made before it began, whichever
//!   process made it, and commits are totally ordered (PostgreSQL: a transaction-scoped lock
//!   taken by `begin_write`). The semantics layer keeps no state between write transactions
//!   that another process could change, and follows other processes' commits to wake watchers
//!   and queue listeners.
//! - A commit that provably did not apply (a conflict, or a connection lost before the commit
//!   was sent or resolved as not applied) fails with [`BackendError::Conflict`]: nothing was
//!   written and the caller may retry. A commit whose outcome could not be resolved fails with
//!   [`BackendError::UnknownOutcome`]; the engine itself is not poisoned by either.
//! - [`Backend::commit_signals`] may offer push notifications of other processes' commits
//!   (PostgreSQL LISTEN/NOTIFY); followers also poll, so it is an optimisation only.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::BackendError;

/// A key-value pair from a scan.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A snapshot of the store.
#[async_trait]
pub trait ReadTxn: Send {
    /// The value stored at `key`.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Up to `limit` pairs with `start <= key < end`, ascending, or descending when `reverse`.
    /// An empty result when `start >= end`.
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError>;
}

/// A write transaction; reads see its own writes.
#[async_trait]
pub trait WriteTxn: ReadTxn {
    /// Stores `value` at `key`, replacing any previous value.
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError>;

    /// Removes `key` if present.
    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError>;

    /// Makes every write of this transaction durable and visible, or none of them.
    async fn commit(self: Box<Self>) -> Result<(), BackendError>;
}

/// An ordered, transactional byte store. Object-safe: `Arc<dyn Backend>` works.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts a snapshot read transaction.
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError>;

    /// Starts the write transaction, waiting for the previous one to finish.
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError>;

    /// Flushes and releases resources; later calls fail with [`BackendError::Closed`].
    async fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether other processes may commit to this store too (see "Shared stores" above).
    /// `false` (the default) for stores that one process owns.
    fn shared(&self) -> bool {
        false
    }

    /// For a shared store: a new subscription that yields (best effort, possibly coalesced)
    /// whenever another process may have committed. `None` (the default) when the engine has
    /// no push notifications; followers poll either way.
    fn commit_signals(&self) -> Option<BoxStream<'static, ()>> {
        None
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        (**self).begin_read().await
    }
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        (**self).begin_write().await
    }
    async fn close(&self) -> Result<(), BackendError> {
        (**self).close().await
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn commit_signals(&self) -> Option<BoxStream<'static, ()>> {
        (**self).commit_signals()
    }
}
