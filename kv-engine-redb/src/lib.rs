//! A durable [`kv_traits::Backend`] on [redb](https://docs.rs/redb): one file, one ordered table
//! of byte keys to byte values.
//!
//! - Keys are ordered bytewise unsigned (redb's order for `&[u8]`), one keyspace.
//! - A [`ReadTxn`] is a redb read transaction: a snapshot that later commits do not change.
//! - A [`WriteTxn`] is the redb write transaction (one at a time). Waiting for it happens on the
//!   async runtime (an async semaphore), and its commit (an fsync by default) runs on tokio's
//!   blocking pool, so neither stalls runtime workers. Dropping it without committing rolls it
//!   back.
//! - Commits are durable by default ([`RedbDurability::Immediate`]); [`RedbDurability::None`] is
//!   an explicit opt-in for speed over crash safety.
//! - If a commit fails, the engine is poisoned: every later `begin_write` fails with
//!   [`BackendError::Poisoned`] carrying the original error (its message, and redb's error as
//!   the source), until the file is reopened.
//! - The file records this crate's format version in a `meta` table; a file of an unknown or
//!   newer version is refused with [`BackendError::UnsupportedFormat`].
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

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use kv_traits::{Backend, BackendError, Cause, KvPair, ReadTxn, WriteTxn};
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, WriteTransaction,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use error::{
    commit_error, database_error, durability_error, storage_error, table_error, transaction_error,
};

/// The redb version this crate is built on, for naming [`StorageBackend`] and its error types.
pub use redb;

/// The format version this build writes and reads, stored in the `meta` table.
pub const FORMAT_VERSION: u64 = 1;

/// The table holding the keyspace.
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// The table holding engine metadata (the format version).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key of the format version in [`META`].
const FORMAT_KEY: &str = "format_version";

/// How durable a commit is when it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedbDurability {
    /// Every commit is flushed to stable storage (fsync) before it returns. Survives a process
    /// crash and a power loss. The default.
    #[default]
    Immediate,
    /// Commits are visible at once but not flushed: a crash may lose every commit since the last
    /// durable point (a clean [`Backend::close`]). The file stays consistent. Opt-in only, for
    /// tests and caches.
    None,
}

/// Options of [`RedbBackend::open`].
#[derive(Debug, Clone, Default)]
pub struct RedbOptions {
    /// Durability of commits; [`RedbDurability::Immediate`] by default.
    pub durability: RedbDurability,
    /// Size of redb's page cache in bytes; redb's default (1 GiB) when `None`.
    pub cache_size: Option<usize>,
}

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
    /// Opens (creating if missing) the redb file at `path`.
    ///
    /// Fails with [`BackendError::UnsupportedFormat`] when the file was written by a newer or
    /// unknown format, and with [`BackendError::Io`] when the file cannot be opened or is
    /// already open (redb locks it).
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<RedbBackend, BackendError> {
        let path = path.as_ref();
        let db = builder(&options).create(path).map_err(database_error)?;
        tracing::debug!(path = %path.display(), "opened redb database");
        Self::from_database(db, &options)
    }

    /// Opens (initialising if empty) a database on a custom redb [`StorageBackend`], for example
    /// an in-memory one or a wrapper that injects I/O failures in tests.
    pub fn open_with_storage(
        storage: impl StorageBackend,
        options: RedbOptions,
    ) -> Result<RedbBackend, BackendError> {
        let db = builder(&options)
            .create_with_backend(storage)
            .map_err(database_error)?;
        Self::from_database(db, &options)
    }

    fn from_database(db: Database, options: &RedbOptions) -> Result<RedbBackend, BackendError> {
        init_format(&db)?;
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
            }),
        })
    }

    /// The error that poisoned the engine, if a commit has failed.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.poison_cause().map(Cause::into_message)
    }
}

fn builder(options: &RedbOptions) -> redb::Builder {
    let mut builder = redb::Builder::new();
    if let Some(size) = options.cache_size {
        builder.set_cache_size(size);
    }
    builder
}

/// Creates the tables of a new file and checks the format version of an existing one.
fn init_format(db: &Database) -> Result<(), BackendError> {
    let mut txn = db.begin_write().map_err(transaction_error)?;
    txn.set_durability(Durability::Immediate)
        .map_err(durability_error)?;
    let stored = {
        let meta = txn.open_table(META).map_err(table_error)?;
        let stored = meta.get(FORMAT_KEY).map_err(storage_error)?;
        stored.map(|guard| guard.value())
    };
    match stored {
        Some(found) if found == FORMAT_VERSION => Ok(()),
        Some(found) => Err(BackendError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        }),
        None => {
            {
                let data = txn.open_table(DATA).map_err(table_error)?;
                if !redb::ReadableTableMetadata::is_empty(&data).map_err(storage_error)? {
                    return Err(BackendError::Corrupt(
                        "the key-value table has data but no format version".into(),
                    ));
                }
                let mut meta = txn.open_table(META).map_err(table_error)?;
                meta.insert(FORMAT_KEY, FORMAT_VERSION)
                    .map_err(storage_error)?;
            }
            txn.commit().map_err(commit_error)?;
            tracing::debug!(
                version = FORMAT_VERSION,
                "initialised redb key-value format"
            );
            Ok(())
        }
    }
}

fn get_from<T>(table: &T, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    Ok(table
        .get(key)
        .map_err(storage_error)?
        .map(|guard| guard.value().to_vec()))
}

fn scan_from<T>(
    table: &T,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KvPair>, BackendError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    // redb refuses inverted ranges; an empty or inverted range holds nothing.
    if start >= end || limit == 0 {
        return Ok(Vec::new());
    }
    let range = table.range::<&[u8]>(start..end).map_err(storage_error)?;
    let items: Box<dyn Iterator<Item = _>> = if reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut out = Vec::with_capacity(limit.min(128));
    for item in items.take(limit) {
        let (k, v) = item.map_err(storage_error)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// A snapshot: an open table of a redb read transaction (the table keeps the snapshot alive).
struct RedbReadTxn {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    inner: Arc<Inner>,
}

#[async_trait]
impl ReadTxn for RedbReadTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        get_from(&self.table, key).map_err(|e| self.inner.escalate(e))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        scan_from(&self.table, start, end, limit, reverse).map_err(|e| self.inner.escalate(e))
    }
}

/// The key-value table of an open write transaction.
type DataTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

self_cell::self_cell!(
    /// A redb write transaction together with its key-value table, opened once.
    struct OpenWrite {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: DataTable,
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
        self.open
            .with_dependent(|_, table| get_from(table, key))
            .map_err(|e| self.inner.escalate(e))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.open
            .with_dependent(|_, table| scan_from(table, start, end, limit, reverse))
            .map_err(|e| self.inner.escalate(e))
    }
}

#[async_trait]
impl WriteTxn for RedbWriteTxn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.open
            .with_dependent_mut(|_, table| table.insert(key, value).map(drop))
            .map_err(storage_error)
            .map_err(|e| self.inner.escalate(e))
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.open
            .with_dependent_mut(|_, table| table.remove(key).map(drop))
            .map_err(storage_error)
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
            // Closes the table (recording its new root) and hands back the transaction.
            let txn = open.into_owner();
            let result = txn.commit();
            drop(permit);
            result
        })
        .await;
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => commit_error(e),
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
        let table = txn
            .open_table(DATA)
            .map_err(table_error)
            .map_err(|e| inner.escalate(e))?;
        Ok(Box::new(RedbReadTxn {
            table,
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
        let open = OpenWrite::try_new(txn, |txn| txn.open_table(DATA))
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
