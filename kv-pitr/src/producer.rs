//! Continuous backup: ships every committed write of a [`Db`] to an object store.
//!
//! The database keeps a durable change log (`DbConfig::change_log`): a commit is in the log if
//! and only if it is committed, so the database never waits for the object store. A background
//! task ([`Backup`]) reads the log, uploads it as immutable log segments and trims what is safely
//! stored. When the store is slow or down, changes simply stay in the database's log and are
//! shipped later, with exponential backoff between attempts.
//!
//! On first start in an empty prefix the task writes an initial snapshot (`snapshots/`), ships
//! the commits that happened while the snapshot was taken, then writes `differential` and our
//! manifest. On later starts it resumes after the last log segment in the store.
//!
//! Object order within a prefix, which consumers rely on:
//!
//! 1. `kv-pitr.init.json` (ownership marker of an initial snapshot in progress),
//! 2. `snapshots/0001_{monoseq=1}_{seq}.bin` for seq = 0, 1, … (range 0 always exists),
//! 3. `logs/0001_{monoseq}_{first}_{last}.bin`, monoseq = 1, 2, … contiguous, each written only
//!    after the previous one is durable,
//! 4. `differential` (after the segments covering the snapshot are durable), then
//!    `kv-pitr.json` (the manifest; its presence means the backup is complete and incremental).
//!
//! Optionally ([`BackupConfig::checkpoint_interval`]) a second task writes periodic full
//! snapshots ("checkpoints") under `checkpoints/{monoseq:016x}/`, each completed by a
//! `checkpoint.json` ([`crate::format::CheckpointManifest`]) once the log up to its end is shipped, so
//! that a restore can start from a recent checkpoint instead of replaying the whole log. The
//! reference consumer does not look there. The log is kept whole unless
//! [`BackupConfig::retention`] is set: then the checkpointer also compacts the backup to that
//! window (module `retention` states what may be deleted and when; a compacted backup can no
//! longer be consumed by the reference `denokv`).
//!
//! One prefix must have at most one producer at a time, and one database at most one
//! shipping [`Backup`] (the change log has a single reader that trims it).
//!
//! Several servers on one shared database ([`Db::is_shared`], e.g. PostgreSQL) may each start a
//! [`Backup`] to the same prefix. Contract:
//! - At most one of them ships (and takes checkpoints) at a time: the one holding the
//!   database lease [`LEASE_NAME`] ([`Db::acquire_lease`]), taken for
//!   [`BackupConfig::lease_ttl`] and renewed every third of it. The others stand by
//!   ([`BackupStatus::standby`]) and try for the lease just as often.
//! - A holder checks its lease before every upload and abandons an upload in flight once its
//!   lease is no longer certain (a third of the ttl before it could expire, or as soon as a
//!   renewal fails), then stands by again. A process that takes over inspects the prefix as a
//!   restart does and continues after the last segment stored, whoever wrote it.
//! - [`Backup::shutdown`] gives the lease up, so another server takes over within a third of
//!   the ttl; a server that dies leaves it to expire, and another takes over within about
//!   `lease_ttl` plus a third. The servers' clocks must agree to well within the ttl.
//! - [`Backup::start`] inspects the prefix (and fails on a bad one) only if it got the lease;
//!   otherwise the prefix is inspected when this server takes over, and an error retrying
//!   cannot fix then stops its task. On a store of one process no lease is taken and nothing
//!   of this applies.
//!
//! The parts, one job each: `start_mode` inspects the prefix (fresh or resume), the
//! shipper uploads the initial snapshot and the log segments, the checkpointer writes and
//! retires checkpoints, `retention` compacts the backup to its window, `snapshot` is the range
//! export both snapshots share, `shared` the status they publish, `lease` the backup lease and
//! its tenures, and `standby` the task that takes turns on a shared store. All object access
//! goes through [`crate::store::BackupStore`]; its [`StoreError`]s become
//! [`BackupError::Store`] (or [`BackupError::Format`] for damaged or foreign objects).

mod checkpointer;
mod lease;
mod retention;
mod shared;
mod shipper;
pub(crate) mod snapshot;
mod standby;
pub(crate) mod start_mode;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_db::Db;
use kv_traits::{KvError, Versionstamp};
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::format::{FormatError, MAX_CHANGES_PER_BATCH};
use crate::store::{BackupStore, StoreError};

pub use checkpointer::list_checkpoints;
use checkpointer::Checkpointer;
pub use lease::LEASE_NAME;
use lease::{BackupLease, Tenure};
use shared::{Shared, StatusState};
use shipper::Shipper;
use standby::Turns;
use start_mode::{inspect_prefix, StartMode};

/// Name of the marker object written before an initial snapshot starts.
pub const INIT_MARKER: &str = "kv-pitr.init.json";

/// `monoseq` of the initial snapshot's ranges.
pub const INITIAL_SNAPSHOT_MONOSEQ: u64 = 1;

/// `<prefix>/kv-pitr.init.json`.
pub fn init_marker_path(prefix: &Path) -> Path {
    prefix.clone().join(INIT_MARKER)
}

/// How and where to ship a database's changes.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// The object store (S3, S3-compatible, local filesystem, memory, …).
    pub store: Arc<dyn ObjectStore>,
    /// Location of the backup inside the store. One producer per prefix.
    pub prefix: Path,
    /// At most one log segment per interval, unless a segment is full (default 1 s). Bounds
    /// the backup lag of a healthy store.
    pub flush_interval: Duration,
    /// Most commits per log segment (default 4096).
    pub max_segment_batches: usize,
    /// Approximate largest log segment in bytes (default 4 MiB; a single larger commit still
    /// gets its own segment).
    pub max_segment_bytes: usize,
    /// Keys per snapshot range object (default 10 000).
    pub snapshot_range_entries: usize,
    /// Longest wait between retries of a failing store (default 30 s).
    pub retry_max_backoff: Duration,
    /// How long [`Backup::shutdown`] keeps trying to ship what is left (default 10 s).
    pub shutdown_timeout: Duration,
    /// Take a checkpoint (a full snapshot under `checkpoints/`, so restores need not replay
    /// the log from the beginning) this often, when there were commits since the last one.
    /// `None` (the default) disables checkpoints.
    pub checkpoint_interval: Option<Duration>,
    /// Complete checkpoints kept; older ones are deleted (default 2). The initial snapshot and
    /// the log are never deleted, so every point stays restorable. Ignored with `retention`.
    pub checkpoint_retain: usize,
    /// Keep recovery points for this long only: after every checkpoint interval, the log
    /// segments and checkpoints that no point of the window (plus `retention_grace`) needs are
    /// deleted (see the `retention` module for the rule). `None` (the default) keeps
    /// everything. Needs `checkpoint_interval`.
    pub retention: Option<Duration>,
    /// With `retention`: how much longer than the window objects are kept, so that a restore
    /// or a replica that started within the window can finish reading them (default 1 hour).
    pub retention_grace: Duration,
    /// Shared stores only ([`Db::is_shared`]): how long the backup lease lasts without renewal
    /// (default 10 s). The holder renews it every third of this; when it dies, another process
    /// takes over within about this long plus a third.
    pub lease_ttl: Duration,
}

impl BackupConfig {
    /// Default settings for `store` and `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        BackupConfig {
            store,
            prefix,
            flush_interval: Duration::from_secs(1),
            max_segment_batches: 4096,
            max_segment_bytes: 4 << 20,
            snapshot_range_entries: 10_000,
            retry_max_backoff: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            checkpoint_interval: None,
            checkpoint_retain: 2,
            retention: None,
            retention_grace: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Why the backup cannot start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database was opened without `DbConfig::change_log`.
    #[error("continuous backup needs the database's change log: open it with DbConfig {{ change_log: true, .. }}")]
    ChangeLogDisabled,
    /// The change log does not reach back to the end of the backup.
    #[error("the database's change log starts at {log_since}, after the backup's end {shipped_through}: the database committed writes while the backup was off (or the change log was reset); start a new backup prefix")]
    Gap {
        /// Versionstamp from which the change log is complete.
        log_since: Versionstamp,
        /// The last versionstamp in the backup.
        shipped_through: Versionstamp,
    },
    /// The backup holds commits the database does not have.
    #[error("the backup reaches {backup} but the database is only at {database}: this backup belongs to another database (or a newer copy of it); use a new prefix")]
    BackupAhead {
        /// The last versionstamp in the backup.
        backup: Versionstamp,
        /// The database's current versionstamp.
        database: Versionstamp,
    },
    /// The prefix holds objects that are not a backup written by this crate.
    #[error("the backup prefix {prefix:?} already holds objects not written by kv-pitr (found {found:?}); use an empty prefix")]
    ForeignPrefix {
        /// The prefix.
        prefix: String,
        /// One of the objects found.
        found: String,
    },
    /// `retention` is set without `checkpoint_interval`, or is zero.
    #[error("invalid backup retention: {reason}")]
    InvalidRetention {
        /// What is wrong.
        reason: &'static str,
    },
    /// The manifest has a format this version does not know.
    #[error("unsupported kv-pitr manifest format {0}")]
    UnsupportedManifest(u32),
    /// An object store operation failed.
    #[error("object store: {0}")]
    Store(#[source] StoreError),
    /// An object in the backup is malformed.
    #[error("backup object {object}: {source}")]
    Format {
        /// The object's path.
        object: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// A database operation failed.
    #[error("database: {0}")]
    Db(#[from] KvError),
    /// A commit has more changes than 12-byte versionstamps can number.
    #[error("commit {versionstamp} has {changes} changes; a log segment can carry at most {MAX_CHANGES_PER_BATCH} per commit")]
    BatchTooLarge {
        /// The commit.
        versionstamp: Versionstamp,
        /// Its number of changes.
        changes: usize,
    },
    /// [`Backup::flush`] timed out.
    #[error("backup flush timed out: shipped through {shipped_through}, waiting for {target}{}", last_error_text(.last_error))]
    FlushTimeout {
        /// The versionstamp the flush waited for.
        target: Versionstamp,
        /// How far the backup got.
        shipped_through: Versionstamp,
        /// The last upload error, if any.
        #[source]
        last_error: Option<Arc<BackupError>>,
    },
    /// [`Backup::shutdown`] stopped before everything was shipped; the rest stays in the
    /// database's change log and is shipped by the next [`Backup::start`].
    #[error("backup stopped with commits up to {committed} but only {shipped_through} shipped{}; the rest is shipped on the next start", last_error_text(.last_error))]
    Incomplete {
        /// The latest commit.
        committed: Versionstamp,
        /// How far the backup got.
        shipped_through: Versionstamp,
        /// The last upload error, if any.
        #[source]
        last_error: Option<Arc<BackupError>>,
    },
    /// Another process holds the backup lease and ships; this one stands by.
    #[error("another server ships this database's backup; this one stands by")]
    Standby,
    /// The background task stopped because of an error it cannot recover from.
    #[error("backup task stopped: {reason}{}", last_error_text(.last_error))]
    Stopped {
        /// What stopped.
        reason: &'static str,
        /// The error that stopped it, if any.
        #[source]
        last_error: Option<Arc<BackupError>>,
    },
}

impl BackupError {
    /// True for errors that retrying cannot fix.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            BackupError::BatchTooLarge { .. }
                | BackupError::ChangeLogDisabled
                | BackupError::InvalidRetention { .. }
                | BackupError::Gap { .. }
                | BackupError::Format { .. }
        )
    }
}
impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { object, source }
            | StoreError::ForeignObject { object, source } => {
                BackupError::Format { object, source }
            }
            e @ (StoreError::Missing { .. } | StoreError::Access { .. }) => BackupError::Store(e),
        }
    }
}

/// ` (last error: …)` for messages, or nothing.
fn last_error_text(e: &Option<Arc<BackupError>>) -> String {
    e.as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

/// Progress of a [`Backup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupStatus {
    /// The database's latest commit, as last seen.
    pub committed: Versionstamp,
    /// Every logged commit up to this versionstamp is durable in the object store.
    pub shipped_through: Versionstamp,
    /// Upper bound of commits not shipped yet (version difference of the two above).
    pub pending_commits_estimate: u64,
    /// How long the oldest unshipped commit has been waiting (0 when caught up; an upper
    /// bound, measured from when the task first saw it).
    pub lag_ms: u64,
    /// Wall-clock time of the last successful upload: a log segment, or the initial snapshot
    /// once complete.
    pub last_upload_at_ms: Option<u64>,
    /// The last upload/database error; cleared by the next success.
    pub last_error: Option<String>,
    /// Whether the initial snapshot (or resume) is complete and logs are being shipped.
    pub initial_snapshot_done: bool,
    /// Log segments uploaded by this task.
    pub segments_uploaded: u64,
    /// `monoseq` of the next log segment.
    pub next_monoseq: u64,
    /// The background task has stopped (after shutdown or a fatal error).
    pub stopped: bool,
    /// `snapshot_end` of the newest complete checkpoint known to this task.
    pub last_checkpoint: Option<Versionstamp>,
    /// Checkpoints completed by this task.
    pub checkpoints_written: u64,
    /// The last checkpoint error; cleared by the next successful checkpoint.
    pub last_checkpoint_error: Option<String>,
    /// With retention: log segments deleted by this task.
    pub compacted_segments: u64,
    /// With retention: their bytes.
    pub compacted_bytes: u64,
    /// With retention: checkpoints deleted by this task.
    pub compacted_checkpoints: u64,
    /// With retention: the last compaction error; cleared by the next successful run.
    pub last_compaction_error: Option<String>,
    /// Shared stores only: another process holds the backup lease and ships; this one stands by
    /// (its `shipped_through` and lag are then not its own job). Always `false` on a store of
    /// one process.
    pub standby: bool,
}

/// How [`Backup::start`] goes on.
enum Plan {
    /// A store of one process: ship from `mode`.
    Alone(StartMode),
    /// A shared store: take turns through the lease, starting with this tenure and mode if the
    /// lease was taken at start.
    Shared(Arc<BackupLease>, Option<(Tenure, StartMode)>),
}

/// Inspects the prefix (see [`start_mode`]) and checks that the database's change log can
/// continue the backup found there.
async fn prepare(db: &Db, config: &BackupConfig) -> Result<StartMode, BackupError> {
    let log_since = db
        .change_log_since()
        .await?
        .ok_or(BackupError::ChangeLogDisabled)?;
    let mode = inspect_prefix(config).await?;
    let current = db.current_versionstamp().await?;
    if let StartMode::Resume {
        shipped_through,
        next_monoseq,
    } = &mode
    {
        if log_since > *shipped_through {
            return Err(BackupError::Gap {
                log_since,
                shipped_through: *shipped_through,
            });
        }
        if current < *shipped_through {
            return Err(BackupError::BackupAhead {
                backup: *shipped_through,
                database: current,
            });
        }
        tracing::info!(
            prefix = %config.prefix,
            shipped_through = %shipped_through,
            next_monoseq,
            "resuming continuous backup"
        );
    }
    Ok(mode)
}

/// A running continuous backup (a background task). Dropping it stops the task abruptly
/// (nothing is lost: unshipped changes stay in the database's change log); prefer
/// [`Backup::shutdown`].
pub struct Backup {
    shared: Arc<Shared>,
    db: Db,
    task: Option<JoinHandle<()>>,
    /// Follows the database's commits into the status (so lag is visible even while the
    /// shipping task is stuck on a slow store).
    watcher: JoinHandle<()>,
    /// Takes periodic checkpoints, if configured.
    checkpointer: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Backup {
    /// Inspects the prefix and starts shipping in a background task.
    ///
    /// Fails if `retention` is set without `checkpoint_interval` or is zero, if the database has
    /// no change log, if the prefix holds something else, or if the
    /// database's change log does not reach back to the end of the existing backup. The store
    /// must be reachable for this inspection; afterwards store failures are retried forever.
    pub async fn start(db: Db, config: BackupConfig) -> Result<Backup, BackupError> {
        if let Some(retention) = config.retention {
            if config.checkpoint_interval.is_none() {
                return Err(BackupError::InvalidRetention {
                    reason: "retention needs checkpoints (a checkpoint interval)",
                });
            }
            if retention.is_zero() {
                return Err(BackupError::InvalidRetention {
                    reason: "the retention window must be longer than zero",
                });
            }
        }
        db.change_log_since()
            .await?
            .ok_or(BackupError::ChangeLogDisabled)?;
        let plan = if db.is_shared() {
            let lease = BackupLease::new(db.clone(), config.lease_ttl);
            // Holding the lease: inspect now, so that a bad prefix fails the start. Otherwise
            // the prefix is the holder's business until this process takes over.
            let first = match lease.attempt().await.then(|| lease.tenure()).flatten() {
                Some(tenure) => match prepare(&db, &config).await {
                    Ok(mode) => Some((tenure, mode)),
                    Err(e) => {
                        lease.release().await;
                        return Err(e);
                    }
                },
                None => None,
            };
            Plan::Shared(lease, first)
        } else {
            Plan::Alone(prepare(&db, &config).await?)
        };
        let current = db.current_versionstamp().await?;
        let mut status = BackupStatus {
            committed: current,
            shipped_through: Versionstamp::ZERO,
            pending_commits_estimate: 0,
            lag_ms: 0,
            last_upload_at_ms: None,
            last_error: None,
            initial_snapshot_done: false,
            segments_uploaded: 0,
            next_monoseq: 1,
            stopped: false,
            last_checkpoint: None,
            checkpoints_written: 0,
            last_checkpoint_error: None,
            compacted_segments: 0,
            compacted_bytes: 0,
            compacted_checkpoints: 0,
            last_compaction_error: None,
            standby: matches!(plan, Plan::Shared(_, None)),
        };
        let first_mode = match &plan {
            Plan::Alone(mode) => Some(mode),
            Plan::Shared(_, first) => first.as_ref().map(|(_, mode)| mode),
        };
        if let Some(StartMode::Resume {
            shipped_through,
            next_monoseq,
        }) = first_mode
        {
            status.shipped_through = *shipped_through;
            status.next_monoseq = *next_monoseq;
            status.initial_snapshot_done = true;
        }
        let (tx, _) = watch::channel(status.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(StatusState::new(status)),
            tx,
            wake: Notify::new(),
            stop: AtomicBool::new(false),
        });
        shared.update(|_| {});
        let shutdown_timeout = config.shutdown_timeout;
        let store = BackupStore::new(config.store.clone(), config.prefix.clone());
        let lease = match &plan {
            Plan::Alone(_) => None,
            Plan::Shared(lease, _) => Some(lease.clone()),
        };
        let checkpointer = config.checkpoint_interval.map(|interval| {
            tokio::spawn(
                Checkpointer {
                    db: db.clone(),
                    store: store.clone(),
                    config: config.clone(),
                    shared: shared.clone(),
                    interval,
                    lease,
                }
                .run(),
            )
        });
        let task = match plan {
            Plan::Alone(mode) => {
                let shipper = Shipper::new(
                    db.clone(),
                    store,
                    config,
                    shared.clone(),
                    Tenure::unconditional(),
                );
                tokio::spawn(async move {
                    shipper.run(mode).await;
                })
            }
            Plan::Shared(lease, first) => tokio::spawn(
                Turns {
                    db: db.clone(),
                    store,
                    config,
                    shared: shared.clone(),
                    lease,
                }
                .run(first),
            ),
        };
        let watcher = {
            let shared = shared.clone();
            let mut commits = db.subscribe_commits();
            tokio::spawn(async move {
                while commits.changed().await.is_ok() {
                    let vs = *commits.borrow_and_update();
                    shared.update(|st| st.note_commit(vs));
                }
            })
        };
        Ok(Backup {
            shared,
            db,
            task: Some(task),
            watcher,
            checkpointer,
            shutdown_timeout,
        })
    }

    /// The current progress.
    pub fn status(&self) -> BackupStatus {
        self.shared.lock().snapshot()
    }

    /// A receiver of progress updates (sent after every upload, error and commit seen).
    pub fn subscribe(&self) -> watch::Receiver<BackupStatus> {
        self.shared.tx.subscribe()
    }

    /// Ships everything committed before the call now (without waiting for the flush
    /// interval) and returns how far the backup got; fails after `timeout`, and at once with
    /// [`BackupError::Standby`] while another process ships.
    pub async fn flush(&self, timeout: Duration) -> Result<Versionstamp, BackupError> {
        if self.status().standby {
            return Err(BackupError::Standby);
        }
        let target = self.db.current_versionstamp().await?;
        self.shared.update(|st| {
            st.urgent_target = Some(st.urgent_target.map_or(target, |t| t.max(target)));
            st.note_commit(target);
        });
        self.shared.wake.notify_one();
        let mut rx = self.shared.tx.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| (s.initial_snapshot_done && s.shipped_through >= target) || s.stopped),
        )
        .await;
        let status = self.status();
        let last_error = self.shared.lock().last_error.clone();
        match waited {
            Ok(Ok(_)) if status.initial_snapshot_done && status.shipped_through >= target => {
                Ok(status.shipped_through)
            }
            Ok(_) => Err(BackupError::Stopped {
                reason: if last_error.is_some() {
                    "it failed"
                } else {
                    "shut down"
                },
                last_error,
            }),
            Err(_) => Err(BackupError::FlushTimeout {
                target,
                shipped_through: status.shipped_through,
                last_error,
            }),
        }
    }

    /// Ships what it can within the configured shutdown timeout, then stops the task (and, on a
    /// shared store, gives the backup lease up so that another process takes over at once).
    /// Returns [`BackupError::Incomplete`] if commits remain unshipped (they stay in the
    /// database's change log for the next start); a process standing by has nothing of its own
    /// to ship and returns `Ok`.
    pub async fn shutdown(mut self) -> Result<(), BackupError> {
        let target = self.db.current_versionstamp().await.ok();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.shutdown_timeout + Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.watcher.abort();
        if let Some(c) = self.checkpointer.take() {
            c.abort();
            // An abort lands at the task's next await: wait until it has, so no checkpoint
            // object is written or deleted after shutdown returns.
            let _ = c.await;
        }
        self.shared.update(|st| st.status.stopped = true);
        let status = self.status();
        let committed = target.unwrap_or(status.committed).max(status.committed);
        if status.standby || (status.initial_snapshot_done && status.shipped_through >= committed) {
            Ok(())
        } else {
            Err(BackupError::Incomplete {
                committed,
                shipped_through: status.shipped_through,
                last_error: self.shared.lock().last_error.clone(),
            })
        }
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.watcher.abort();
        if let Some(c) = &self.checkpointer {
            c.abort();
        }
    }
}
