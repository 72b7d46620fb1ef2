//! [`SqliteBackend`] and its transactions.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};

use async_trait::async_trait;
use kv_traits::{Backend, BackendError, Cause, KvPair, ReadTxn, WriteTxn};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::error::{error_text, sql_err};
use crate::format::{self, FileState};
use crate::options::{Durability, SqliteOptions};

const SQL_GET: &str = "SELECT v FROM kv WHERE k = ?1";
const SQL_SCAN_ASC: &str = "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k ASC LIMIT ?3";
const SQL_SCAN_DESC: &str = "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3";
const SQL_PUT: &str =
    "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";
const SQL_DELETE: &str = "DELETE FROM kv WHERE k = ?1";
/// Reads the database header, which starts the read transaction and so pins the WAL snapshot.
const SQL_PIN_SNAPSHOT: &str = "PRAGMA user_version";

/// Size in bytes above which the WAL file is truncated after a checkpoint resets it.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The writer connection; `None` once the backend is closed.
type WriterSlot = Option<Connection>;

/// A durable [`Backend`] on an SQLite file in WAL mode.
///
/// One writer connection, held exclusively by the open [`WriteTxn`] (`BEGIN IMMEDIATE`), and a
/// pool of reader connections, each pinned to a WAL snapshot by the [`ReadTxn`] that uses it, so
/// reads never wait behind writes and always see a consistent snapshot.
///
/// Commits run on tokio's blocking thread pool (they fsync); other statements are short and run
/// inline on the calling task. Cloning is cheap and shares the same connections.
///
/// The database must be a real file (not `:memory:`): readers open their own connections to it.
/// One process should own a database file at a time; a second process would contend for the
/// write lock (waiting up to [`SqliteOptions::busy_timeout`]).
#[derive(Clone)]
pub struct SqliteBackend {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    options: SqliteOptions,
    writer: Arc<AsyncMutex<WriterSlot>>,
    idle_readers: StdMutex<Vec<Connection>>,
    /// The error that poisoned the engine, with its typed source (kept for `Poisoned`).
    poison: StdMutex<Option<Cause>>,
    closed: AtomicBool,
}

/// Locks a std mutex, ignoring poisoning (the protected data stays consistent: every critical
/// section is a single push/pop/assignment).
fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings every connection gets; `cache_size_kib` is the writer's or a reader's page cache.
fn configure(
    conn: &Connection,
    options: &SqliteOptions,
    cache_size_kib: u32,
) -> Result<(), BackendError> {
    conn.busy_timeout(options.busy_timeout).map_err(sql_err)?;
    // The scans bind their LIMIT as a parameter. Without a stable query plan SQLite treats such
    // a statement as depending on the bound value and re-prepares it on every execution, which
    // cost more CPU than the query itself.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sql_err)?;
    conn.pragma_update(None, "cache_size", -i64::from(cache_size_kib))
        .map_err(sql_err)?;
    // Read database pages in place instead of copying each page-cache miss (see
    // `SqliteOptions::mmap_size_mib`).
    conn.pragma_update(None, "mmap_size", i64::from(options.mmap_size_mib) << 20)
        .map_err(sql_err)?;
    Ok(())
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn get(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(SQL_GET)?
        .query_row([key], |r| r.get(0))
        .optional()
}

fn scan(
    conn: &Connection,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> rusqlite::Result<Vec<KvPair>> {
    if limit == 0 || start >= end {
        return Ok(Vec::new());
    }
    let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(if reverse { SQL_SCAN_DESC } else { SQL_SCAN_ASC })?;
    let rows = stmt.query_map(params![start, end, sql_limit], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    let mut out = Vec::with_capacity(limit.min(256));
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file at `path`.
    ///
    /// This is a blocking call (it may recover a write-ahead log); from async code call it
    /// through `tokio::task::spawn_blocking` if the file may be large. It:
    /// - upgrades a file of an older format ([`SqliteOptions::upgrade_on_open`]; see the crate
    ///   docs), which rewrites the whole file once;
    /// - refuses a file of another application ([`BackendError::Corrupt`]) or of an unknown or
    ///   newer format version ([`BackendError::UnsupportedFormat`]) without modifying it;
    /// - switches the file to WAL mode and sets `synchronous` per [`SqliteOptions::durability`];
    /// - creates the schema in a new file;
    /// - opens [`SqliteOptions::readers`] reader connections.
    pub fn open(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteBackend, BackendError> {
        let path = path.as_ref();
        let mut writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err)?;
        configure(&writer, &options, options.cache_size_kib)?;
        let state = format::inspect(&writer)?;
        match state {
            FileState::Empty => format::prepare_new(&writer)?,
            FileState::Outdated(from) if options.upgrade_on_open => {
                format::upgrade(&mut writer, from)?
            }
            FileState::Outdated(from) => {
                tracing::warn!(
                    path = %path.display(),
                    format = from,
                    "serving an older-format database as it is (upgrade_on_open is off)"
                );
            }
            FileState::Current => {}
        }
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BackendError::Io(
                format!(
                    "could not switch {} to WAL mode (journal_mode is {mode})",
                    path.display()
                )
                .into(),
            ));
        }
        writer
            .pragma_update(None, "synchronous", options.durability.synchronous_pragma())
            .map_err(sql_err)?;
        // On macOS a plain fsync does not reach stable storage; F_FULLFSYNC does. No effect
        // elsewhere.
        let full = options.durability == Durability::Full;
        writer
            .pragma_update(None, "fullfsync", full)
            .map_err(sql_err)?;
        writer
            .pragma_update(None, "checkpoint_fullfsync", full)
            .map_err(sql_err)?;
        // After a checkpoint resets the log, shrink a log that grew large (big group commits
        // or long-lived readers) instead of keeping its size forever.
        writer
            .pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sql_err)?;
        if state == FileState::Empty {
            format::initialize(&mut writer)?;
        }
        // Readers reopen the file by path: make it independent of later working-directory
        // changes.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let shared = Arc::new(Shared {
            path,
            options,
            writer: Arc::new(AsyncMutex::new(Some(writer))),
            idle_readers: StdMutex::new(Vec::new()),
            poison: StdMutex::new(None),
            closed: AtomicBool::new(false),
        });
        let mut readers = Vec::with_capacity(shared.options.readers);
        for _ in 0..shared.options.readers {
            readers.push(shared.open_reader()?);
        }
        *lock(&shared.idle_readers) = readers;
        tracing::debug!(path = %shared.path.display(), durability = ?shared.options.durability, "opened SQLite backend");
        Ok(SqliteBackend { shared })
    }

    /// The (canonicalized) path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The options the backend was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.shared.options
    }

    /// The error that poisoned the engine, if a commit failed; writes are refused until the
    /// database is reopened.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.shared.poison)
            .as_ref()
            .map(|cause| cause.message().to_owned())
    }

    /// Whether [`Backend::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.shared.path)
            .field("options", &self.shared.options)
            .field("closed", &self.is_closed())
            .field("poisoned", &self.poisoned())
            .finish()
    }
}

impl Shared {
    fn check_open(&self) -> Result<(), BackendError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(BackendError::Closed)
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<(), BackendError> {
        self.check_open()?;
        match &*lock(&self.poison) {
            Some(cause) => Err(BackendError::Poisoned(cause.clone())),
            None => Ok(()),
        }
    }

    fn set_poison(&self, cause: Cause) {
        let mut p = lock(&self.poison);
        if p.is_none() {
            tracing::error!(path = %self.path.display(), error = %cause, "SQLite backend poisoned; writes are refused until it is reopened");
            *p = Some(cause);
        }
    }

    fn open_reader(&self) -> Result<Connection, BackendError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err)?;
        configure(&conn, &self.options, self.options.reader_cache_size_kib)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(sql_err)?;
        Ok(conn)
    }

    fn take_reader(&self) -> Result<Connection, BackendError> {
        if let Some(conn) = lock(&self.idle_readers).pop() {
            return Ok(conn);
        }
        self.open_reader()
    }

    fn return_reader(&self, conn: Connection) {
        let mut idle = lock(&self.idle_readers);
        if !self.closed.load(Ordering::SeqCst) && idle.len() < self.options.readers {
            idle.push(conn);
        }
        // Otherwise the connection is dropped (closed) here.
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        self.shared.check_open()?;
        let conn = self.shared.take_reader()?;
        let txn = SqliteReadTxn {
            conn: Some(conn),
            shared: self.shared.clone(),
        };
        if let Some(conn) = &txn.conn {
            // BEGIN is deferred: the first read starts the read transaction and pins the
            // snapshot, so read the header now; the snapshot then includes exactly the commits
            // that finished before begin_read.
            exec_cached(conn, "BEGIN").map_err(sql_err)?;
            conn.prepare_cached(SQL_PIN_SNAPSHOT)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(sql_err)?;
        }
        Ok(Box::new(txn))
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        self.shared.check_writable()?;
        let mut guard = self.shared.writer.clone().lock_owned().await;
        // Re-check: the state may have changed while waiting for the previous transaction.
        self.shared.check_writable()?;
        let conn = guard.as_mut().ok_or(BackendError::Closed)?;
        if !conn.is_autocommit() {
            // Left open by a commit task that never ran (runtime shutdown): discard it.
            conn.execute_batch("ROLLBACK").map_err(|e| {
                let cause = Cause::with_source(
                    format!(
                        "could not roll back an abandoned transaction: {}",
                        error_text(&e)
                    ),
                    e,
                );
                self.shared.set_poison(cause.clone());
                BackendError::Io(cause)
            })?;
        }
        exec_cached(conn, "BEGIN IMMEDIATE").map_err(sql_err)?;
        Ok(Box::new(SqliteWriteTxn {
            guard: Some(guard),
            shared: self.shared.clone(),
            failed: None,
        }))
    }

    async fn close(&self) -> Result<(), BackendError> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Waits for the write transaction in progress, if any.
        let writer = self.shared.writer.clone().lock_owned().await.take();
        let readers = std::mem::take(&mut *lock(&self.shared.idle_readers));
        let path = self.shared.path.clone();
        tokio::task::spawn_blocking(move || close_blocking(&path, writer, readers))
            .await
            .map_err(|e| {
                BackendError::Io(Cause::with_source(format!("close task failed: {e}"), e))
            })?
    }
}

fn close_blocking(
    path: &Path,
    writer: Option<Connection>,
    readers: Vec<Connection>,
) -> Result<(), BackendError> {
    for reader in readers {
        if let Err((_, e)) = reader.close() {
            tracing::warn!(error = %e, "closing a reader connection failed");
        }
    }
    let Some(writer) = writer else {
        return Ok(());
    };
    // Do not wait for read transactions still open elsewhere: checkpoint what is possible now
    // (the last connection to close checkpoints again anyway).
    if let Err(e) = writer.busy_timeout(std::time::Duration::ZERO) {
        tracing::warn!(error = %e, "could not clear the busy timeout before the final checkpoint");
    }
    let checkpoint = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    let mut result = match checkpoint {
        Ok((busy, log, checkpointed)) => {
            tracing::debug!(path = %path.display(), busy, log, checkpointed, "checkpointed WAL at close");
            Ok(())
        }
        Err(e) => Err(sql_err(e)),
    };
    if let Err((_, e)) = writer.close() {
        result = result.and(Err(sql_err(e)));
    }
    result
}

/// A snapshot read on a pooled reader connection (returned to the pool on drop).
struct SqliteReadTxn {
    conn: Option<Connection>,
    shared: Arc<Shared>,
}

impl SqliteReadTxn {
    fn conn(&self) -> Result<&Connection, BackendError> {
        self.conn.as_ref().ok_or(BackendError::Closed)
    }
}

impl Drop for SqliteReadTxn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !conn.is_autocommit() {
            if let Err(e) = exec_cached(&conn, "COMMIT") {
                tracing::warn!(error = %e, "ending a read transaction failed; dropping its connection");
                return;
            }
        }
        self.shared.return_reader(conn);
    }
}

#[async_trait]
impl ReadTxn for SqliteReadTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        get(self.conn()?, key).map_err(sql_err)
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        scan(self.conn()?, start, end, limit, reverse).map_err(sql_err)
    }
}

/// The write transaction: owns the writer connection until committed or dropped.
struct SqliteWriteTxn {
    guard: Option<OwnedMutexGuard<WriterSlot>>,
    shared: Arc<Shared>,
    /// Set by the first failed statement: SQLite may have rolled the transaction back already,
    /// so nothing more may run in it. Kept as the source of the errors that follow.
    failed: Option<BackendError>,
}

impl SqliteWriteTxn {
    fn run<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        if let Some(failed) = &self.failed {
            return Err(BackendError::Io(Cause::with_source(
                format!("the write transaction already failed: {failed}"),
                failed.clone(),
            )));
        }
        let conn = self
            .guard
            .as_deref()
            .and_then(Option::as_ref)
            .ok_or(BackendError::Closed)?;
        f(conn).map_err(|e| {
            let err = sql_err(e);
            self.failed = Some(err.clone());
            err
        })
    }
}

impl Drop for SqliteWriteTxn {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let Some(conn) = guard.as_mut() else {
            return;
        };
        if !conn.is_autocommit() {
            if let Err(e) = exec_cached(conn, "ROLLBACK") {
                self.shared.set_poison(Cause::with_source(
                    format!(
                        "rolling back a write transaction failed: {}",
                        error_text(&e)
                    ),
                    e,
                ));
            }
        }
    }
}

#[async_trait]
impl ReadTxn for SqliteWriteTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.run(|conn| get(conn, key))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.run(|conn| scan(conn, start, end, limit, reverse))
    }
}

#[async_trait]
impl WriteTxn for SqliteWriteTxn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.run(|conn| {
            conn.prepare_cached(SQL_PUT)?.execute(params![key, value])?;
            Ok(())
        })
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.run(|conn| {
            conn.prepare_cached(SQL_DELETE)?.execute([key])?;
            Ok(())
        })
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        if let Some(failed) = &self.failed {
            // Drop rolls back whatever SQLite has not rolled back already.
            return Err(BackendError::Io(Cause::with_source(
                format!("cannot commit a write transaction that failed: {failed}"),
                failed.clone(),
            )));
        }
        let guard = self.guard.take().ok_or(BackendError::Closed)?;
        let shared = self.shared.clone();
        // The COMMIT fsyncs: run it off the async worker threads. The guard moves into the
        // task, so the writer stays locked until the commit has finished even if this future
        // is dropped.
        match tokio::task::spawn_blocking(move || commit_blocking(guard, &shared)).await {
            Ok(result) => result,
            Err(e) => {
                let cause = Cause::with_source(format!("commit task failed: {e}"), e);
                self.shared.set_poison(cause.clone());
                Err(BackendError::Io(cause))
            }
        }
    }
}

fn commit_blocking(
    mut guard: OwnedMutexGuard<WriterSlot>,
    shared: &Shared,
) -> Result<(), BackendError> {
    let conn = guard.as_mut().ok_or(BackendError::Closed)?;
    if conn.is_autocommit() {
        return Err(BackendError::Io(
            "the write transaction was rolled back by SQLite before commit".into(),
        ));
    }
    match exec_cached(conn, "COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            // The poison keeps the SQLite error (message and source) of the failed COMMIT.
            let err = sql_err(e);
            if let Some(cause) = err.cause() {
                shared.set_poison(cause.clone());
            }
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "rollback after a failed commit failed");
                }
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_pragma(b: &SqliteBackend, name: &str) -> i64 {
        let guard = b.shared.writer.try_lock().unwrap();
        let conn = guard.as_ref().unwrap();
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn durability_sets_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(dir.path().join("full"), SqliteOptions::default()).unwrap();
        assert_eq!(writer_pragma(&b, "synchronous"), 2, "FULL");
        assert_eq!(writer_pragma(&b, "fullfsync"), 1);
        assert_eq!(writer_pragma(&b, "busy_timeout"), 5000);
        assert_eq!(writer_pragma(&b, "cache_size"), -2048);
        let b = SqliteBackend::open(
            dir.path().join("normal"),
            SqliteOptions::default().with_durability(Durability::Normal),
        )
        .unwrap();
        assert_eq!(writer_pragma(&b, "synchronous"), 1, "NORMAL");
        assert_eq!(writer_pragma(&b, "fullfsync"), 0);
    }

    #[test]
    fn readers_are_query_only_and_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(
            dir.path().join("db"),
            SqliteOptions::default().with_readers(3),
        )
        .unwrap();
        let idle = lock(&b.shared.idle_readers);
        assert_eq!(idle.len(), 3);
        for conn in idle.iter() {
            let q: i64 = conn
                .query_row("PRAGMA query_only", [], |r| r.get(0))
                .unwrap();
            assert_eq!(q, 1);
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            assert!(conn
                .execute("INSERT INTO kv VALUES (x'00', x'00')", [])
                .is_err());
            let cache: i64 = conn
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(cache, -2048);
            let mmap: i64 = conn
                .query_row("PRAGMA mmap_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mmap, i64::from(crate::DEFAULT_MMAP_SIZE_MIB) << 20);
        }
    }

    #[test]
    fn mmap_size_zero_turns_mapping_off() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            mmap_size_mib: 0,
            ..SqliteOptions::default()
        };
        let b = SqliteBackend::open(dir.path().join("db"), options).unwrap();
        assert_eq!(writer_pragma(&b, "mmap_size"), 0);
        let conn = lock(&b.shared.idle_readers).pop().unwrap();
        let mmap: i64 = conn
            .query_row("PRAGMA mmap_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mmap, 0);
    }

    #[test]
    fn scans_with_different_limits_reuse_their_prepared_statement() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(dir.path().join("db"), SqliteOptions::default()).unwrap();
        let conn = lock(&b.shared.idle_readers).pop().unwrap();
        for limit in [1, 7, 100] {
            scan(&conn, b"\x00", b"\xff", limit, false).unwrap();
            scan(&conn, b"\x00", b"\xff", limit, true).unwrap();
        }
        for sql in [SQL_SCAN_ASC, SQL_SCAN_DESC] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql} was prepared again"
            );
        }
    }

    #[test]
    fn returned_readers_are_capped_at_the_pool_size() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(
            dir.path().join("db"),
            SqliteOptions::default().with_readers(1),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let r1 = b.begin_read().await.unwrap();
            let r2 = b.begin_read().await.unwrap();
            assert_eq!(lock(&b.shared.idle_readers).len(), 0);
            drop(r1);
            drop(r2);
            assert_eq!(lock(&b.shared.idle_readers).len(), 1);
            b.close().await.unwrap();
            assert_eq!(lock(&b.shared.idle_readers).len(), 0);
        });
    }
}
