//! The Deno KV semantics, written once over any [`Backend`]: versionstamp allocation, checks,
//! SET/DELETE/SUM/MIN/MAX/versionstamped keys, expiry, queues and watch fan-out, with group
//! commit. Every engine behaves identically because none of this lives in an engine.
//!
//! ```
//! use kv_db::{Db, DbConfig};
//! use kv_engine_memory::MemoryBackend;
//! use kv_traits::{AtomicWrite, CommitResult, Consistency, Database, KvValue, Mutation, ReadRange};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let db = Db::open(MemoryBackend::new(), DbConfig::default()).await.unwrap();
//! let write = AtomicWrite { mutations: vec![Mutation::set(b"\x02a\x00".to_vec(), KvValue::U64(1))], ..Default::default() };
//! let CommitResult::Committed(vs) = db.atomic_write(write).await.unwrap() else { panic!() };
//! let out = db.snapshot_read(vec![ReadRange::single(b"\x02a\x00")], Consistency::Strong).await.unwrap();
//! assert_eq!(out[0][0].versionstamp, vs);
//! db.close().await.unwrap();
//! # });
//! ```
//!
//! Writes of all callers go through one writer task that gathers whatever is pending into one
//! backend transaction and one commit (one fsync on durable engines). A lone writer never waits
//! for a batch window. Each logical write is applied through its own overlay: if it fails (a check
//! or a type error), nothing of it reaches the transaction and the others still commit.
//!
//! # Validation
//!
//! [`Db`] owns request validation. Every [`Database::snapshot_read`], [`Database::atomic_write`]
//! and [`Database::watch`] is checked against [`DbConfig::limits`] exactly once, on entry, before
//! anything reaches the backend or the writer; a violation fails with [`KvError::Limit`] and has
//! no effect. Callers (the KV Connect server, embedders) pass requests through as they are and
//! do not validate again. [`Db::import`] is the one exception: it stores history that was
//! validated when it was first written.
//!
//! # Modules
//!
//! | module | holds |
//! |---|---|
//! | [`layout`] | the keyspace: what is stored under which key (the storage contract) |
//! | [`changes`] | the change log's format and the import/export types |
//! | `config` | [`DbConfig`] |
//! | `open` | opening: format check, change-log marker, starting the tasks |
//! | `read` | snapshot reads and watch streams |
//! | `queue` | waiting for and leasing queue messages |
//! | `background` | the maintenance task |
//! | `backup` | change log, export and import as [`Db`] methods |
//! | [`lease`] | named cross-process leases (one backup shipper per shared database) |
//! | `mutate` | SUM/MIN/MAX as pure functions |
//! | `watch` | per-key commit signals for watchers |
//! | `stats` | work counters for [`Database::stats`] (commits, batches, queue, sweeps) |
//! | `writer` | the single writer task and group commit, with one module per kind of operation |

#![warn(missing_docs)]

mod background;
mod backup;
pub mod changes;
mod config;
pub mod feed;
pub mod layout;
pub mod lease;
mod mutate;
mod open;
mod queue;
mod read;
mod stats;
mod watch;
mod watch_read;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kv_traits::{
    AtomicWrite, Backend, CommitResult, Consistency, Database, DatabaseStats, KvEntry, KvError,
    LimitError, Limits, QueueLease, QueueMessage, ReadRange, Versionstamp, WatchStream,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub use crate::changes::{ChangeBatch, ExportEntry, ImportOp, KeyChange};
pub use crate::config::DbConfig;
pub use crate::lease::{LeaseOwner, LeaseState};
pub use crate::queue::QueueCounts;
use crate::watch::WatchHub;
use crate::writer::{Op, Reply};

/// The state every handle of one database shares.
struct Inner {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Op>,
    hub: Arc<WatchHub>,
    /// Re-reads shared by the watch streams of the same keys.
    watch_reads: crate::watch_read::SharedReads,
    queue_notify: Arc<Notify>,
    config: DbConfig,
    closed: AtomicBool,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    commits: Arc<tokio::sync::watch::Sender<Versionstamp>>,
    stats: Arc<stats::Stats>,
}

impl Inner {
    fn check_open(&self) -> Result<(), KvError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        Ok(())
    }

    /// Sends the operation built by `op` to the writer and waits for its reply.
    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, KvError> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(op(reply)).await.map_err(|_| KvError::Closed)?;
        rx.await.map_err(|_| KvError::Closed)?
    }
}

/// A Deno KV database over a [`Backend`]. Cloning gives another handle to the same database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl Db {
    /// The configuration the database was opened with.
    pub fn config(&self) -> &DbConfig {
        &self.inner.config
    }

    /// Runs the expiry sweep and the queue lease-expiry pass now, at the clock's current time,
    /// until nothing due is left (each pass of up to 1000 keys is its own commit). Returns the
    /// number of expired keys deleted.
    pub async fn run_maintenance(&self) -> Result<usize, KvError> {
        self.inner.maintain().await
    }

    /// Versionstamp of the latest commit (all zero for an empty database).
    pub async fn current_versionstamp(&self) -> Result<Versionstamp, KvError> {
        self.inner.check_open()?;
        Ok(Versionstamp::from_version(
            open::read_version(&*self.inner.backend).await?,
        ))
    }

    /// A receiver whose value is the latest committed versionstamp; it changes on every commit
    /// that allocates a version (writes, expiry sweeps, dead letters, imports).
    pub fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<Versionstamp> {
        self.inner.commits.subscribe()
    }

    /// How many queue messages are ready, delayed and leased (read-only; visits every queued
    /// message once, so it costs a scan of the queue).
    pub async fn queue_counts(&self) -> Result<QueueCounts, KvError> {
        self.inner.queue_counts().await
    }

    /// Fails unless the database takes writes.
    fn check_writable(&self) -> Result<(), KvError> {
        self.inner.check_open()?;
        if self.inner.config.read_only {
            return Err(KvError::WriteDisabled);
        }
        Ok(())
    }
}

#[async_trait]
impl Database for Db {
    fn limits(&self) -> Limits {
        self.inner.config.limits.clone()
    }

    fn stats(&self) -> Option<DatabaseStats> {
        Some(self.inner.stats.snapshot())
    }

    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        _consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        self.inner.check_open()?;
        self.inner.config.limits.validate_read(&ranges)?;
        self.inner.snapshot_read(&ranges).await
    }

    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        self.inner.check_open()?;
        // An over-limit write is a request error even where writes are disabled.
        let now = self.inner.config.clock.now_ms();
        self.inner.config.limits.validate_write(&write, now)?;
        self.check_writable()?;
        self.inner.call(|reply| Op::Write { write, reply }).await
    }

    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        self.inner.check_open()?;
        self.inner.config.limits.validate_watch(&keys)?;
        if keys.iter().any(|k| k.is_empty()) {
            return Err(KvError::Limit(LimitError::EmptyKey));
        }
        Ok(self.inner.watch_stream(keys))
    }

    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.check_writable()?;
        self.inner.dequeue(wait).await
    }

    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.inner
            .call(|reply| Op::Finish {
                lease,
                success,
                reply,
            })
            .await
    }

    async fn close(&self) -> Result<(), KvError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Let writes queued before the close finish, then stop everything.
        let (done, finished) = oneshot::channel();
        if inner.tx.send(Op::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
        inner.closed.store(true, Ordering::Release);
        let _ = inner.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = match inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        inner.backend.close().await?;
        Ok(())
    }
}
