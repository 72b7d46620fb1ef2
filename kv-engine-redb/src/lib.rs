//! A durable [`kv_traits::Backend`] on [redb](https://docs.rs/redb): one file, one ordered
//! keyspace of byte keys to byte values.
//!
//! - Keys are ordered bytewise unsigned (redb's order for `&[u8]`), one keyspace.
//! - A [`ReadTxn`] is a redb read transaction: a snapshot that later commits do not change.
//! - A [`WriteTxn`] is the redb write transaction (one at a time). Waiting for it happens on the
//!   async runtime (an async semaphore), and its commit (an fsync by default) runs on tokio's
//!   blocking pool, so neither stalls runtime workers. Dropping it without committing rolls it
//!   back.
//! - If a commit fails, the engine is poisoned: every later `begin_write` fails with
//!   [`BackendError::Poisoned`] carrying the original error (its message, and redb's error as
//!   the source), until the file is reopened.
//!
//! Durability and crash recovery:
//! - Commits are durable by default ([`RedbDurability::Immediate`]: fsync before `commit`
//!   returns); [`RedbDurability::None`] is an explicit opt-in for speed over crash safety.
//! - Every commit also records redb's allocator state and commits in two phases
//!   ([`RedbOptions::quick_repair`], on by default), so opening a file after a crash loads that
//!   state instead of walking every tree (a full repair took about 8 s per million 1 KB entries).
//!   The trade-off: a commit writes the allocator state table and fsyncs twice (see the README's
//!   Performance section for the measured cost). With it off, a crash costs a full repair at the
//!   next open ([`RedbBackend::repaired_on_open`] tells), still without losing a committed write.
//!
//! Layout and format (details in the `layout` and `format` modules):
//! - Format 2 (this build): table `kv` maps each key to its value tagged inline, or, for a value
//!   longer than [`RedbOptions::chunk_size`] (default [`DEFAULT_CHUNK_SIZE`] bytes) that does
//!   not fill most of its own pages, to a chunk header; the pieces live in table `kv_chunks` under `key ++ index`. Chunks keep every B-tree
//!   entry small enough to share a 4 KiB page: redb gives an entry that does not fit a page a
//!   power-of-two run of pages of its own, which cost 2x the logical size for 2–4 KB values.
//! - Format 1 (older builds): values stored whole. Such a file is upgraded in place when opened
//!   ([`RedbOptions::upgrade_on_open`], default on; resumable after a crash), or served as it is.
//! - The version is kept in a `meta` table; a file of an unknown or newer version is refused
//!   with [`BackendError::UnsupportedFormat`].
//!
//! Memory: redb's page cache is [`DEFAULT_CACHE_SIZE`] (64 MiB) unless
//! [`RedbOptions::cache_size`] says otherwise; the operating system's page cache serves the rest.
//!
//! Reads and writes inside a transaction run inline (redb works from its page cache; a miss is
//! one positioned read), with the table opened once per transaction; only waiting for the
//! writer slot and committing leave the calling task. Every method must run inside a tokio
//! runtime (commits use `spawn_blocking`).
//!
//! [`RedbBackend::open_with_storage`] opens a database on any redb [`StorageBackend`]: in memory,
//! or a wrapper that injects I/O failures (the crate's poisoning tests do that).
//!
//! ```
//! use kv_engine_redb::{RedbBackend, RedbOptions};
//! use kv_traits::Backend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let backend = RedbBackend::open(dir.path().join("kv.redb"), RedbOptions::default())?;
//!
//! let mut txn = backend.begin_write().await?;
//! txn.put(b"a", b"1").await?;
//! txn.put(b"b", b"2").await?;
//! txn.commit().await?;
//!
//! let mut snapshot = backend.begin_read().await?;
//! assert_eq!(snapshot.get(b"a").await?, Some(b"1".to_vec()));
//! let pairs = snapshot.scan(b"a", b"z", 10, true).await?;
//! assert_eq!(pairs[0], (b"b".to_vec(), b"2".to_vec()));
//!
//! backend.close().await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
mod format;
mod layout;
mod options;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use kv_traits::{Backend, BackendError, Cause, KvPair, ReadTxn, WriteTxn};
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, StorageBackend, WriteTransaction,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use error::{database_error, durability_error, table_error, transaction_error};
use layout::{Layout, Replacing, CHUNKS, DATA};

pub use format::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
pub use options::{RedbDurability, RedbOptions, DEFAULT_CACHE_SIZE, DEFAULT_CHUNK_SIZE};

/// The redb version this crate is built on, for naming [`StorageBackend`] and its error types.
pub use redb;

/// A [`Backend`] storing its keyspace in one redb file.
///
/// Cloning is cheap and shares the open database.
#[derive(Clone, Debug)]
pub struct RedbBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The open database; `None` after [`Backend::close`].
    db: RwLock<Option<Arc<Database>>>,
    /// One permit: the right to hold the write transaction. Closed by [`Backend::close`].
    writer: Arc<Semaphore>,
    /// Set when a commit failed: the original error (message and typed source).
    poison: Mutex<Option<Cause>>,
    closed: AtomicBool,
    durability: Durability,
    quick_repair: bool,
    /// The layout of the file's format.
    layout: Layout,
    /// Whether opening needed redb's full repair.
    repaired: bool,
}

impl Inner {
    fn database(&self) -> Result<Arc<Database>, BackendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(BackendError::Closed)
    }

    fn poison_cause(&self) -> Option<Cause> {
        self.poison
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the engine poisoned, keeping the first error.
    fn set_poison(&self, cause: &Cause) {
        let mut poison = self.poison.lock().unwrap_or_else(PoisonError::into_inner);
        if poison.is_none() {
            tracing::error!(
                error = %cause,
                "redb commit failed; the engine refuses further writes until reopened"
            );
            *poison = Some(cause.clone());
        }
    }

    fn check_poison(&self) -> Result<(), BackendError> {
        match self.poison_cause() {
            Some(cause) => Err(BackendError::Poisoned(cause)),
            None => Ok(()),
        }
    }

    /// Turns redb's "previous I/O error" state into [`BackendError::Poisoned`] with the original
    /// error when we saw it, and records the poisoning.
    fn escalate(&self, error: BackendError) -> BackendError {
        match error {
            BackendError::Poisoned(redb_cause) => {
                let original = self.poison_cause();
                match original {
                    Some(cause) => BackendError::Poisoned(cause),
                    None => {
                        self.set_poison(&redb_cause);
                        BackendError::Poisoned(redb_cause)
                    }
                }
            }
            other => other,
        }
    }
}

impl RedbBackend {
    /// Opens (creating if missing) the redb file at `path`, upgrading its format if it is older
    /// and [`RedbOptions::upgrade_on_open`] is set (see "Format" in the crate docs).
    ///
    /// Fails with [`BackendError::UnsupportedFormat`] when the file was written by a newer or
    /// unknown format, and with [`BackendError::Io`] when the file cannot be opened or is
    /// already open (redb locks it).
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<RedbBackend, BackendError> {
        let path = path.as_ref();
        let repaired = Arc::new(AtomicBool::new(false));
        let started = std::time::Instant::now();
        let db = builder(&options, &repaired)
            .create(path)
            .map_err(database_error)?;
        let repaired = repaired.load(Ordering::Acquire);
        if repaired {
            tracing::warn!(
                path = %path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the redb file was not closed cleanly and needed a full repair"
            );
        }
        tracing::debug!(path = %path.display(), "opened redb database");
        Self::from_database(db, &options, repaired)
    }

    /// Opens (initialising if empty) a database on a custom redb [`StorageBackend`], for example
    /// an in-memory one or a wrapper that injects I/O failures in tests.
    pub fn open_with_storage(
        storage: impl StorageBackend,
        options: RedbOptions,
    ) -> Result<RedbBackend, BackendError> {
        let repaired = Arc::new(AtomicBool::new(false));
        let db = builder(&options, &repaired)
            .create_with_backend(storage)
            .map_err(database_error)?;
        let repaired = repaired.load(Ordering::Acquire);
        Self::from_database(db, &options, repaired)
    }

    fn from_database(
        db: Database,
        options: &RedbOptions,
        repaired: bool,
    ) -> Result<RedbBackend, BackendError> {
        let layout = format::open(&db, options)?;
        let durability = match options.durability {
            RedbDurability::Immediate => Durability::Immediate,
            RedbDurability::None => Durability::None,
        };
        Ok(RedbBackend {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(Arc::new(db))),
                writer: Arc::new(Semaphore::new(1)),
                poison: Mutex::new(None),
                closed: AtomicBool::new(false),
                durability,
                quick_repair: options.quick_repair,
                layout,
                repaired,
            }),
        })
    }

    /// The error that poisoned the engine, if a commit has failed.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.poison_cause().map(Cause::into_message)
    }

    /// Whether opening the file needed redb's full repair: the file was not closed cleanly and
    /// its last commit did not record the allocator state (it was made without
    /// [`RedbOptions::quick_repair`]). The repair walks every tree, in time proportional to the
    /// file.
    pub fn repaired_on_open(&self) -> bool {
        self.inner.repaired
    }

    /// The format the file is served in: [`FORMAT_VERSION`], or [`OLDEST_FORMAT_VERSION`] for an
    /// older file opened without [`RedbOptions::upgrade_on_open`].
    pub fn format_version(&self) -> u64 {
        match self.inner.layout {
            Layout::Whole => OLDEST_FORMAT_VERSION,
            Layout::Chunked { .. } => FORMAT_VERSION,
        }
    }
}

fn builder(options: &RedbOptions, repaired: &Arc<AtomicBool>) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(options.cache_size.unwrap_or(DEFAULT_CACHE_SIZE));
    let repaired = repaired.clone();
    builder.set_repair_callback(move |_| repaired.store(true, Ordering::Release));
    builder
}

/// A snapshot: the open tables of a redb read transaction (they keep the snapshot alive).
struct RedbReadTxn {
    data: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The chunks table (format 2 only).
    chunks: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    inner: Arc<Inner>,
}

#[async_trait]
impl ReadTxn for RedbReadTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        layout::get(self.inner.layout, &self.data, self.chunks.as_ref(), key)
            .map_err(|e| self.inner.escalate(e))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        layout::scan(
            self.inner.layout,
            &self.data,
            self.chunks.as_ref(),
            (start, end),
            limit,
            reverse,
        )
        .map_err(|e| self.inner.escalate(e))
    }
}

/// The tables of an open write transaction.
struct WriteTables<'txn> {
    data: layout::Table<'txn>,
    /// The chunks table (format 2 only).
    chunks: Option<layout::Table<'txn>>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction, layout: Layout) -> Result<Self, redb::TableError> {
        let data = txn.open_table(DATA)?;
        let chunks = match layout {
            Layout::Whole => None,
            Layout::Chunked { .. } => Some(txn.open_table(CHUNKS)?),
        };
        Ok(WriteTables { data, chunks })
    }
}

self_cell::self_cell!(
    /// A redb write transaction together with its tables, opened once.
    struct OpenWrite {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: WriteTables,
    }
);

/// The write transaction.
struct RedbWriteTxn {
    // Declared before `permit`: the transaction ends (aborts on drop) before the permit is
    // released to the next writer.
    open: OpenWrite,
    inner: Arc<Inner>,
    permit: OwnedSemaphorePermit,
}

#[async_trait]
impl ReadTxn for RedbWriteTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let layout = self.inner.layout;
        self.open
            .with_dependent(|_, t| layout::get(layout, &t.data, t.chunks.as_ref(), key))
            .map_err(|e| self.inner.escalate(e))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        let layout = self.inner.layout;
        self.open
            .with_dependent(|_, t| {
                layout::scan(
                    layout,
                    &t.data,
                    t.chunks.as_ref(),
                    (start, end),
                    limit,
                    reverse,
                )
            })
            .map_err(|e| self.inner.escalate(e))
    }
}

#[async_trait]
impl WriteTxn for RedbWriteTxn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        let layout = self.inner.layout;
        self.open
            .with_dependent_mut(|_, t| {
                layout::put(
                    layout,
                    &mut t.data,
                    t.chunks.as_mut(),
                    key,
                    value,
                    Replacing::Entry,
                )
            })
            .map_err(|e| self.inner.escalate(e))
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        let layout = self.inner.layout;
        self.open
            .with_dependent_mut(|_, t| layout::delete(layout, &mut t.data, t.chunks.as_mut(), key))
            .map_err(|e| self.inner.escalate(e))
    }

    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        let RedbWriteTxn {
            open,
            inner,
            permit,
        } = *self;
        // The permit moves into the blocking task: if this future is dropped mid-commit, the next
        // writer still waits for the commit to finish.
        let outcome = tokio::task::spawn_blocking(move || {
            // Closes the tables (recording their new roots) and hands back the transaction.
            let txn = open.into_owner();
            let result = txn.commit();
            drop(permit);
            result
        })
        .await;
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => error::commit_error(e),
            Err(join) => BackendError::Io(Cause::with_source(
                format!("commit task failed: {join}"),
                join,
            )),
        };
        match error {
            BackendError::Closed => Err(BackendError::Closed),
            BackendError::Poisoned(_) => Err(inner.escalate(error)),
            BackendError::Io(cause)
            | BackendError::Corrupt(cause)
            | BackendError::Conflict(cause) => {
                inner.set_poison(&cause);
                Err(BackendError::Io(cause))
            }
            other => {
                inner.set_poison(&Cause::with_source(other.to_string(), other.clone()));
                Err(other)
            }
        }
    }
}

#[async_trait]
impl Backend for RedbBackend {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        let inner = &self.inner;
        let db = inner.database()?;
        let txn = db
            .begin_read()
            .map_err(transaction_error)
            .map_err(|e| inner.escalate(e))?;
        let data = txn
            .open_table(DATA)
            .map_err(table_error)
            .map_err(|e| inner.escalate(e))?;
        let chunks = match inner.layout {
            Layout::Whole => None,
            Layout::Chunked { .. } => Some(
                txn.open_table(CHUNKS)
                    .map_err(table_error)
                    .map_err(|e| inner.escalate(e))?,
            ),
        };
        Ok(Box::new(RedbReadTxn {
            data,
            chunks,
            inner: inner.clone(),
        }))
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        let inner = &self.inner;
        inner.database()?;
        inner.check_poison()?;
        let permit = inner
            .writer
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BackendError::Closed)?;
        inner.check_poison()?;
        let db = inner.database()?;
        let mut txn = match db.try_begin_write() {
            Ok(txn) => txn,
            // Only when a previous commit task is still finishing after its caller went away.
            Err(redb::TransactionError::WouldBlock) => {
                tokio::task::spawn_blocking(move || db.begin_write())
                    .await
                    .map_err(|join| {
                        BackendError::Io(Cause::with_source(
                            format!("begin_write task failed: {join}"),
                            join,
                        ))
                    })?
                    .map_err(transaction_error)
                    .map_err(|e| inner.escalate(e))?
            }
            Err(e) => return Err(inner.escalate(transaction_error(e))),
        };
        txn.set_durability(inner.durability)
            .map_err(durability_error)?;
        txn.set_quick_repair(inner.quick_repair);
        let layout = inner.layout;
        let open = OpenWrite::try_new(txn, |txn| WriteTables::open(txn, layout))
            .map_err(table_error)
            .map_err(|e| inner.escalate(e))?;
        Ok(Box::new(RedbWriteTxn {
            open,
            inner: inner.clone(),
            permit,
        }))
    }

    async fn close(&self) -> Result<(), BackendError> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Wait for the live write transaction (if any) to finish, then refuse new ones.
        let permit = inner.writer.clone().acquire_owned().await;
        inner.writer.close();
        drop(permit);
        let db = inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(db) = db else {
            return Ok(());
        };
        let result = tokio::task::spawn_blocking(move || match Arc::try_unwrap(db) {
            Ok(db) => db.close().map_err(database_error),
            // A concurrent begin_read still holds a handle; the database closes when it drops.
            Err(_shared) => Ok(()),
        })
        .await
        .map_err(|join| {
            BackendError::Io(Cause::with_source(
                format!("close task failed: {join}"),
                join,
            ))
        })?;
        tracing::debug!("closed redb database");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_storage_round_trip() {
        let backend = RedbBackend::open_with_storage(
            redb::backends::InMemoryBackend::new(),
            RedbOptions::default(),
        )
        .unwrap();
        let mut w = backend.begin_write().await.unwrap();
        w.put(b"k", b"v").await.unwrap();
        assert_eq!(w.get(b"k").await.unwrap(), Some(b"v".to_vec()));
        w.commit().await.unwrap();
        let mut r = backend.begin_read().await.unwrap();
        assert_eq!(r.get(b"k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(r.scan(b"b", b"a", 10, false).await.unwrap(), vec![]);
    }

    #[test]
    fn durability_default_is_immediate() {
        assert_eq!(RedbOptions::default().durability, RedbDurability::Immediate);
    }
}
