//! Opening a database: the format check (or initialisation of an empty store), the change-log
//! marker, and starting the writer and background tasks.
//!
//! Contract:
//! - An empty store is stamped with [`layout::FORMAT_VERSION`] and version 0 in one commit; a
//!   read-only open leaves it untouched. A store with another format version is refused with
//!   [`BackendError::UnsupportedFormat`]; one that holds data but no format marker with
//!   [`BackendError::Corrupt`]. Nothing else is written before the format is known good.
//! - Turning the change log on records the current version as the point from which the log is
//!   complete; turning it off forgets that point and deletes whatever was logged, so a later
//!   re-enable starts afresh. A read-only open changes neither. On a shared store
//!   ([`Backend::shared`]) an open only ever turns the log on: the log belongs to the store
//!   (every process logs while its marker is stored), and one process opened without backups
//!   must not delete what another process's backup has not shipped yet.
//! - The queue's ready and leased messages are counted once, on a snapshot taken at open before
//!   the writer starts: the starting point of the statistics' queue gauges ([`crate::stats`]).
//!   A deep queue is counted in the background ([`crate::queue::OpenCount`]), so opening costs
//!   no scan of it.
//! - Shared stores: a follower task ([`crate::feed::follow`]) runs for the life of the
//!   database, also when it is read-only.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kv_traits::{Backend, BackendError, KvError, Versionstamp};
use tokio::sync::{mpsc, Notify};

use crate::background::background;
use crate::layout::{self, CHANGE_LOG};
use crate::queue::OpenCount;
use crate::stats::Stats;
use crate::watch::WatchHub;
use crate::writer::Writer;
use crate::{Db, DbConfig, Inner};

/// Depth of the writer's request channel.
const WRITER_QUEUE: usize = 4096;

impl Db {
    /// Opens the database on `backend`, initialising an empty store or checking the format of
    /// an existing one, and starts the writer (and, if configured, the background tasks).
    /// Must be called inside a tokio runtime.
    pub async fn open(backend: impl Backend, config: DbConfig) -> Result<Db, KvError> {
        let backend: Arc<dyn Backend> = Arc::new(backend);
        check_format(&*backend, config.read_only).await?;
        let shared = backend.shared();
        if !config.read_only && (config.change_log || !shared) {
            mark_change_log(&*backend, config.change_log).await?;
        }
        let current = read_version(&*backend).await?;
        let commits = Arc::new(tokio::sync::watch::channel(Versionstamp::from_version(current)).0);
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let hub = Arc::new(WatchHub::default());
        let stats = Arc::new(Stats::default());
        // Pinned before the writer starts: its commits are deltas on top of this count.
        let queue_count = OpenCount::begin(&*backend).await?;
        let queue_notify = Arc::new(Notify::new());
        let writer = Writer {
            backend: backend.clone(),
            clock: config.clock.clone(),
            hub: hub.clone(),
            queue_notify: queue_notify.clone(),
            poisoned: None,
            change_log: config.change_log && !config.read_only,
            commits: commits.clone(),
            import_marker: None,
            shared,
            stats: stats.clone(),
        };
        let writer_task = tokio::spawn(writer.run(rx));
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let db = Db {
            inner: Arc::new(Inner {
                backend,
                tx,
                hub,
                watch_reads: Default::default(),
                queue_notify,
                config,
                closed: AtomicBool::new(false),
                shutdown,
                tasks: Mutex::new(vec![writer_task]),
                commits,
                stats,
            }),
        };
        let counting = queue_count
            .settle(db.inner.stats.clone(), db.inner.shutdown.subscribe())
            .await?;
        if let (Some(task), Ok(mut t)) = (counting, db.inner.tasks.lock()) {
            t.push(task);
        }
        if shared {
            let task = tokio::spawn(crate::feed::follow(
                db.inner.backend.clone(),
                db.inner.hub.clone(),
                db.inner.queue_notify.clone(),
                db.inner.commits.clone(),
                db.inner.config.follow_interval,
                db.inner.shutdown.subscribe(),
            ));
            if let Ok(mut t) = db.inner.tasks.lock() {
                t.push(task);
            }
        }
        if db.inner.config.background_tasks && !db.inner.config.read_only {
            let task = tokio::spawn(background(
                Arc::downgrade(&db.inner),
                db.inner.shutdown.subscribe(),
            ));
            if let Ok(mut t) = db.inner.tasks.lock() {
                t.push(task);
            }
        }
        Ok(db)
    }
}

/// The database version as committed.
pub(crate) async fn read_version(backend: &dyn Backend) -> Result<u64, KvError> {
    let mut r = backend.begin_read().await?;
    match r.get(layout::META_VERSION).await? {
        Some(b) => Ok(layout::decode_u64(&b)?),
        None => Ok(0),
    }
}

/// Records from which version the change log is complete when logging is turned on, and
/// forgets it when logging is turned off (so a later re-enable starts a new, later point).
async fn mark_change_log(backend: &dyn Backend, on: bool) -> Result<(), KvError> {
    let mut r = backend.begin_read().await?;
    let present = r.get(layout::META_CHANGE_LOG_SINCE).await?.is_some();
    drop(r);
    if present == on {
        return Ok(());
    }
    let mut w = backend.begin_write().await?;
    if on {
        let version = match w.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        w.put(layout::META_CHANGE_LOG_SINCE, &layout::encode_u64(version))
            .await?;
    } else {
        // Whatever was logged before is useless without the marker: a later re-enable starts
        // from scratch.
        w.delete(layout::META_CHANGE_LOG_SINCE).await?;
        loop {
            let old = w
                .scan(&[CHANGE_LOG], &[CHANGE_LOG + 1], 1000, false)
                .await?;
            if old.is_empty() {
                break;
            }
            for (k, _) in old {
                w.delete(&k).await?;
            }
        }
    }
    w.commit().await?;
    Ok(())
}

/// Checks the store's format marker, or stamps an empty writable store with it.
async fn check_format(backend: &dyn Backend, read_only: bool) -> Result<(), KvError> {
    let mut r = backend.begin_read().await?;
    match r.get(layout::META_FORMAT).await? {
        Some(b) => {
            let found = layout::decode_u64(&b)?;
            if found != layout::FORMAT_VERSION {
                return Err(KvError::Backend(BackendError::UnsupportedFormat {
                    found,
                    supported: layout::FORMAT_VERSION,
                }));
            }
            Ok(())
        }
        None if read_only => Ok(()),
        None => {
            drop(r);
            let mut w = backend.begin_write().await?;
            if w.get(layout::META_FORMAT).await?.is_none() {
                let any = w.scan(&[], &[0xff], 1, false).await?;
                if !any.is_empty() {
                    return Err(KvError::Backend(BackendError::Corrupt(
                        "the store holds data but no Deno KV format marker".into(),
                    )));
                }
                w.put(
                    layout::META_FORMAT,
                    &layout::encode_u64(layout::FORMAT_VERSION),
                )
                .await?;
                w.put(layout::META_VERSION, &layout::encode_u64(0)).await?;
                w.commit().await?;
            }
            Ok(())
        }
    }
}
