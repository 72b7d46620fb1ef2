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
//! `checkpoint.json` ([`format::CheckpointManifest`]) once the log up to its end is shipped, so
//! that a restore can start from a recent checkpoint instead of replaying the whole log. The
//! reference consumer does not look there; the initial snapshot and the log are never deleted.
//!
//! One prefix must have at most one producer at a time, and one database at most one
//! [`Backup`] (the change log has a single reader that trims it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use kv_db::{ChangeBatch, Db};
use kv_traits::{KvError, Versionstamp};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::format::{
    self, BackupManifest, FormatError, LogSegmentKey, SnapshotRangeKey, MAX_CHANGES_PER_BATCH,
};

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
    /// the log are never deleted, so every point stays restorable.
    pub checkpoint_retain: usize,
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
    /// The manifest has a format this version does not know.
    #[error("unsupported kv-pitr manifest format {0}")]
    UnsupportedManifest(u32),
    /// An object store operation failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// An object in the backup is malformed.
    #[error("backup object {object}: {source}")]
    Format {
        /// The object's path.
        object: String,
        /// What is wrong.
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
    #[error("backup flush timed out: shipped through {shipped_through}, waiting for {target} (last error: {last_error:?})")]
    FlushTimeout {
        /// The versionstamp the flush waited for.
        target: Versionstamp,
        /// How far the backup got.
        shipped_through: Versionstamp,
        /// The last upload error, if any.
        last_error: Option<String>,
    },
    /// [`Backup::shutdown`] stopped before everything was shipped; the rest stays in the
    /// database's change log and is shipped by the next [`Backup::start`].
    #[error("backup stopped with commits up to {committed} but only {shipped_through} shipped (last error: {last_error:?}); the rest is shipped on the next start")]
    Incomplete {
        /// The latest commit.
        committed: Versionstamp,
        /// How far the backup got.
        shipped_through: Versionstamp,
        /// The last upload error, if any.
        last_error: Option<String>,
    },
    /// The background task stopped because of an error it cannot recover from.
    #[error("backup task stopped: {0}")]
    Stopped(String),
}

impl BackupError {
    /// True for errors that retrying cannot fix.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            BackupError::BatchTooLarge { .. }
                | BackupError::ChangeLogDisabled
                | BackupError::Gap { .. }
                | BackupError::Format { .. }
        )
    }
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
    /// Wall-clock time of the last successful upload.
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
}

struct StatusState {
    status: BackupStatus,
    /// Commits seen and not shipped yet, with when they were first seen (oldest first;
    /// coalesced when long).
    unshipped: VecDeque<(Versionstamp, Instant)>,
    urgent_target: Option<Versionstamp>,
}

/// Most commit timings kept for the lag estimate.
const MAX_LAG_SAMPLES: usize = 4096;

impl StatusState {
    fn note_commit(&mut self, vs: Versionstamp) {
        if vs <= self.status.committed {
            return;
        }
        self.status.committed = vs;
        if vs <= self.status.shipped_through {
            return;
        }
        if self.unshipped.len() >= MAX_LAG_SAMPLES {
            // Keep the oldest timings: extend the newest sample instead of adding one.
            if let Some(last) = self.unshipped.back_mut() {
                last.0 = vs;
            }
        } else {
            self.unshipped.push_back((vs, Instant::now()));
        }
    }

    fn prune(&mut self) {
        let shipped = self.status.shipped_through;
        while self.unshipped.front().is_some_and(|(vs, _)| *vs <= shipped) {
            self.unshipped.pop_front();
        }
    }

    fn snapshot(&self) -> BackupStatus {
        let mut s = self.status.clone();
        s.pending_commits_estimate = s
            .committed
            .version()
            .saturating_sub(s.shipped_through.version());
        s.lag_ms = match self.unshipped.front() {
            Some((_, seen)) if s.committed > s.shipped_through => {
                u64::try_from(seen.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        s
    }
}

struct Shared {
    state: Mutex<StatusState>,
    tx: watch::Sender<BackupStatus>,
    wake: Notify,
    stop: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StatusState> {
        // A poisoned lock only means a panic elsewhere; the status data stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut StatusState)) {
        let snap = {
            let mut st = self.lock();
            f(&mut st);
            st.prune();
            st.snapshot()
        };
        self.tx.send_replace(snap);
    }

    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

/// How the task begins.
enum StartMode {
    /// Take an initial snapshot (after deleting leftovers of an interrupted one of ours).
    Fresh,
    /// Continue after the last shipped segment.
    Resume {
        shipped_through: Versionstamp,
        next_monoseq: u64,
    },
}

impl Backup {
    /// Inspects the prefix and starts shipping in a background task.
    ///
    /// Fails if the database has no change log, if the prefix holds something else, or if the
    /// database's change log does not reach back to the end of the existing backup. The store
    /// must be reachable for this inspection; afterwards store failures are retried forever.
    pub async fn start(db: Db, config: BackupConfig) -> Result<Backup, BackupError> {
        let log_since = db
            .change_log_since()
            .await?
            .ok_or(BackupError::ChangeLogDisabled)?;
        let mode = inspect_prefix(&config).await?;
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
        };
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
            status.shipped_through = *shipped_through;
            status.next_monoseq = *next_monoseq;
            status.initial_snapshot_done = true;
            tracing::info!(
                prefix = %config.prefix,
                shipped_through = %shipped_through,
                next_monoseq,
                "resuming continuous backup"
            );
        }
        let (tx, _) = watch::channel(status.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(StatusState {
                status,
                unshipped: VecDeque::new(),
                urgent_target: None,
            }),
            tx,
            wake: Notify::new(),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        shared.update(|_| {});
        let shutdown_timeout = config.shutdown_timeout;
        let checkpointer = config.checkpoint_interval.map(|interval| {
            tokio::spawn(
                Checkpointer {
                    db: db.clone(),
                    config: config.clone(),
                    shared: shared.clone(),
                    interval,
                }
                .run(),
            )
        });
        let worker = Worker {
            commits: db.subscribe_commits(),
            db: db.clone(),
            config,
            shared: shared.clone(),
            shipped: Versionstamp::ZERO,
            next_monoseq: 1,
            pending: None,
            last_upload: None,
            last_lag_log: None,
            failures: 0,
        };
        let task = tokio::spawn(worker.run(mode));
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
    /// interval) and returns how far the backup got; fails after `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<Versionstamp, BackupError> {
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
        match waited {
            Ok(Ok(_)) if status.initial_snapshot_done && status.shipped_through >= target => {
                Ok(status.shipped_through)
            }
            Ok(_) => Err(BackupError::Stopped(
                status.last_error.unwrap_or_else(|| "shut down".into()),
            )),
            Err(_) => Err(BackupError::FlushTimeout {
                target,
                shipped_through: status.shipped_through,
                last_error: status.last_error,
            }),
        }
    }

    /// Ships what it can within the configured shutdown timeout, then stops the task.
    /// Returns [`BackupError::Incomplete`] if commits remain unshipped (they stay in the
    /// database's change log for the next start).
    pub async fn shutdown(mut self) -> Result<(), BackupError> {
        let target = self.db.current_versionstamp().await.ok();
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
        if status.initial_snapshot_done && status.shipped_through >= committed {
            Ok(())
        } else {
            Err(BackupError::Incomplete {
                committed,
                shipped_through: status.shipped_through,
                last_error: status.last_error,
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

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Reads an object, `None` if it does not exist.
async fn get_opt(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, BackupError> {
    match store.get(path).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn list_paths(store: &dyn ObjectStore, dir: &Path) -> Result<Vec<Path>, BackupError> {
    let metas: Vec<_> = store.list(Some(dir)).try_collect().await?;
    let mut out: Vec<Path> = metas.into_iter().map(|m| m.location).collect();
    out.sort();
    Ok(out)
}

/// Parses every log segment name under the prefix, in order.
async fn list_log_keys(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<LogSegmentKey>, BackupError> {
    let mut keys = Vec::new();
    for p in list_paths(store, &format::logs_dir(prefix)).await? {
        let key = LogSegmentKey::parse(p.as_ref()).map_err(|source| BackupError::Format {
            object: p.to_string(),
            source,
        })?;
        keys.push(key);
    }
    keys.sort();
    Ok(keys)
}

/// Progress marker of an initial snapshot (also marks the prefix as ours).
#[derive(serde::Serialize, serde::Deserialize)]
struct InitMarker {
    producer: String,
    created_at_ms: u64,
    snapshot_start: String,
}

fn producer_name() -> String {
    format!("kv-pitr {}", env!("CARGO_PKG_VERSION"))
}

fn bad_json(path: &Path, e: serde_json::Error) -> BackupError {
    BackupError::Format {
        object: path.to_string(),
        source: FormatError::Manifest(e),
    }
}

async fn inspect_prefix(config: &BackupConfig) -> Result<StartMode, BackupError> {
    let store = &*config.store;
    let prefix = &config.prefix;
    let manifest_path = format::manifest_path(prefix);
    let manifest = match get_opt(store, &manifest_path).await? {
        Some(body) => {
            Some(
                BackupManifest::from_bytes(&body).map_err(|source| BackupError::Format {
                    object: manifest_path.to_string(),
                    source,
                })?,
            )
        }
        None => {
            let marker_path = init_marker_path(prefix);
            match get_opt(store, &marker_path).await? {
                None => {
                    // Any object at all under the prefix (the first one listed is enough).
                    let first = store.list(Some(prefix)).try_next().await?;
                    if let Some(found) = first.map(|m| m.location) {
                        return Err(BackupError::ForeignPrefix {
                            prefix: prefix.to_string(),
                            found: found.to_string(),
                        });
                    }
                    return Ok(StartMode::Fresh);
                }
                Some(body) => {
                    let marker: InitMarker =
                        serde_json::from_slice(&body).map_err(|e| bad_json(&marker_path, e))?;
                    let diff_path = format::differential_path(prefix);
                    let Some(diff) = get_opt(store, &diff_path).await? else {
                        // An initial snapshot of ours was interrupted: start over.
                        return Ok(StartMode::Fresh);
                    };
                    // Interrupted between `differential` and the manifest: finish it.
                    let dv = format::decode_differential(&diff).map_err(|source| {
                        BackupError::Format {
                            object: diff_path.to_string(),
                            source,
                        }
                    })?;
                    let manifest = BackupManifest {
                        format: BackupManifest::FORMAT,
                        producer: marker.producer,
                        created_at_ms: marker.created_at_ms,
                        initial_snapshot_monoseq: INITIAL_SNAPSHOT_MONOSEQ,
                        snapshot_start: marker.snapshot_start,
                        snapshot_end: dv.to_string(),
                    };
                    write_manifest(store, prefix, &manifest).await?;
                    Some(manifest)
                }
            }
        }
    };
    let Some(manifest) = manifest else {
        return Ok(StartMode::Fresh);
    };
    if manifest.format != BackupManifest::FORMAT {
        return Err(BackupError::UnsupportedManifest(manifest.format));
    }
    let snapshot_end: Versionstamp =
        manifest
            .snapshot_end
            .parse()
            .map_err(|_| BackupError::Format {
                object: manifest_path.to_string(),
                source: FormatError::BadDifferential(manifest.snapshot_end.clone()),
            })?;
    let diff_path = format::differential_path(prefix);
    if get_opt(store, &diff_path).await?.is_none() {
        tracing::warn!(path = %diff_path, "differential marker missing; rewriting it from the manifest");
        store
            .put(
                &diff_path,
                format::encode_differential(&snapshot_end).into(),
            )
            .await?;
    }
    let logs = list_log_keys(store, prefix).await?;
    let (shipped_through, next_monoseq) = match logs.last() {
        Some(last) => {
            if last.format_version != format::FORMAT_VERSION {
                return Err(BackupError::ForeignPrefix {
                    prefix: prefix.to_string(),
                    found: format::log_path(prefix, last).to_string(),
                });
            }
            (
                snapshot_end.max(format::vs10_of(&last.last_vs12)),
                last.monoseq + 1,
            )
        }
        None => (snapshot_end, 1),
    };
    Ok(StartMode::Resume {
        shipped_through,
        next_monoseq,
    })
}

async fn write_manifest(
    store: &dyn ObjectStore,
    prefix: &Path,
    manifest: &BackupManifest,
) -> Result<(), BackupError> {
    let path = format::manifest_path(prefix);
    let body = manifest.to_bytes().map_err(|source| BackupError::Format {
        object: path.to_string(),
        source,
    })?;
    store.put(&path, body.into()).await?;
    Ok(())
}

/// An encoded segment waiting to be stored; retried unchanged until it succeeds.
struct PendingSegment {
    key: LogSegmentKey,
    body: Bytes,
    /// Everything logged up to here is in this segment (or earlier ones).
    covered: Versionstamp,
    /// More changes were waiting when this segment was cut.
    more: bool,
}

struct Worker {
    db: Db,
    config: BackupConfig,
    shared: Arc<Shared>,
    commits: watch::Receiver<Versionstamp>,
    shipped: Versionstamp,
    next_monoseq: u64,
    pending: Option<PendingSegment>,
    last_upload: Option<Instant>,
    last_lag_log: Option<Instant>,
    failures: u32,
}

fn batch_size_estimate(b: &ChangeBatch) -> usize {
    b.changes
        .iter()
        .map(|c| c.key.len() + c.value.as_ref().map_or(0, |v| v.encoded_len()) + 40)
        .sum()
}

impl Worker {
    async fn run(mut self, mode: StartMode) {
        match mode {
            StartMode::Resume {
                shipped_through,
                next_monoseq,
            } => {
                self.shipped = shipped_through;
                self.next_monoseq = next_monoseq;
            }
            StartMode::Fresh => loop {
                if self.shared.stopping() {
                    return;
                }
                match self.initial_snapshot().await {
                    Ok(()) => break,
                    Err(e) => {
                        if !self.on_error(e).await {
                            return;
                        }
                    }
                }
            },
        }
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut backlog = false;
        loop {
            let committed = *self.commits.borrow_and_update();
            self.shared.update(|st| st.note_commit(committed));
            let stopping = self.shared.stopping();
            if stopping && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.config.shutdown_timeout);
            }
            let behind = self.pending.is_some() || committed > self.shipped;
            if !behind {
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = self.commits.changed() => {}
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.flush_interval) => {}
                }
                continue;
            }
            let urgent = stopping
                || backlog
                || self
                    .shared
                    .lock()
                    .urgent_target
                    .is_some_and(|t| t > self.shipped);
            if !urgent {
                if let Some(last) = self.last_upload {
                    let due = last + self.config.flush_interval;
                    if Instant::now() < due {
                        tokio::select! {
                            _ = tokio::time::sleep_until(due.into()) => {}
                            _ = self.shared.wake.notified() => {}
                        }
                        continue;
                    }
                }
            }
            let attempt = self.ship_one();
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => attempt.await,
            };
            match result {
                Ok(more) => backlog = more,
                Err(e) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        self.record_error(&e);
                        return;
                    }
                    if !self.on_error(e).await {
                        return;
                    }
                }
            }
        }
    }

    fn record_error(&self, e: &BackupError) {
        let msg = e.to_string();
        self.shared
            .update(|st| st.status.last_error = Some(msg.clone()));
    }

    /// Records a failure and waits before the next attempt; false = stop the task.
    async fn on_error(&mut self, e: BackupError) -> bool {
        self.record_error(&e);
        if e.is_fatal() {
            tracing::error!(error = %e, prefix = %self.config.prefix, "continuous backup stopped");
            self.shared.update(|st| st.status.stopped = true);
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(100);
        let backoff = base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.config.retry_max_backoff);
        tracing::warn!(
            error = %e,
            prefix = %self.config.prefix,
            retry_in_ms = backoff.as_millis() as u64,
            shipped_through = %self.shipped,
            "continuous backup upload failed; the changes stay in the database's change log"
        );
        if self.shared.stopping() {
            // Shutdown: retry quickly within the shutdown deadline.
            tokio::time::sleep(backoff.min(Duration::from_millis(200))).await;
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = self.shared.wake.notified() => {}
        }
        true
    }

    fn on_success(&mut self) {
        self.failures = 0;
    }

    /// Cuts (if needed) and stores one segment. Returns whether more changes are waiting.
    async fn ship_one(&mut self) -> Result<bool, BackupError> {
        if self.pending.is_none() {
            // The log may have been trimmed by another reader or passed by imports since the
            // last segment: shipping on would leave a silent hole in the backup.
            let log_since = self
                .db
                .change_log_since()
                .await?
                .ok_or(BackupError::ChangeLogDisabled)?;
            if log_since > self.shipped {
                return Err(BackupError::Gap {
                    log_since,
                    shipped_through: self.shipped,
                });
            }
            let before = self.db.current_versionstamp().await?;
            let mut batches = self
                .db
                .read_changes(Some(self.shipped), self.config.max_segment_batches.max(1))
                .await?;
            let full_read = batches.len() >= self.config.max_segment_batches.max(1);
            let mut size = 0usize;
            let mut take = 0usize;
            // A segment carries one time (its last commit's), which is what recovery points by
            // time see: keep the commits of one segment within one flush interval of each
            // other, also when a backlog is shipped.
            let first_ts = batches.first().map_or(0, |b| b.timestamp_ms);
            let max_spread =
                u64::try_from(self.config.flush_interval.as_millis()).unwrap_or(u64::MAX);
            for b in &batches {
                let s = batch_size_estimate(b);
                if take > 0
                    && (size + s > self.config.max_segment_bytes
                        || b.timestamp_ms.saturating_sub(first_ts) > max_spread)
                {
                    break;
                }
                size += s;
                take += 1;
            }
            let more = full_read || take < batches.len();
            batches.truncate(take);
            if let Some(b) = batches
                .iter()
                .find(|b| b.changes.len() > MAX_CHANGES_PER_BATCH)
            {
                return Err(BackupError::BatchTooLarge {
                    versionstamp: b.versionstamp,
                    changes: b.changes.len(),
                });
            }
            let last_vs = batches.last().map(|b| b.versionstamp);
            let covered = if more {
                last_vs.unwrap_or(self.shipped)
            } else {
                before.max(last_vs.unwrap_or(self.shipped))
            };
            if batches.iter().all(|b| b.changes.is_empty()) {
                // Only commits without logged data changes (queue-only commits, imports).
                self.advance(covered, None).await;
                return Ok(more);
            }
            let timestamp_ms = batches.last().map_or(0, |b| b.timestamp_ms);
            let (first, last, body) = format::encode_log_segment(&batches, timestamp_ms);
            self.pending = Some(PendingSegment {
                key: LogSegmentKey {
                    format_version: format::FORMAT_VERSION,
                    monoseq: self.next_monoseq,
                    first_vs12: first,
                    last_vs12: last,
                },
                body,
                covered,
                more,
            });
        }
        let Some(p) = self.pending.as_ref() else {
            return Ok(false);
        };
        let path = format::log_path(&self.config.prefix, &p.key);
        self.config
            .store
            .put(&path, PutPayload::from(p.body.clone()))
            .await?;
        let (covered, more, key) = (p.covered, p.more, p.key);
        self.pending = None;
        self.next_monoseq = key.monoseq + 1;
        self.last_upload = Some(Instant::now());
        tracing::debug!(segment = %path, "shipped log segment");
        self.advance(covered, Some(key)).await;
        Ok(more)
    }

    /// Records that everything logged up to `covered` is durable, and trims the change log.
    async fn advance(&mut self, covered: Versionstamp, uploaded: Option<LogSegmentKey>) {
        self.on_success();
        self.shipped = self.shipped.max(covered);
        if let Err(e) = self.db.trim_changes(self.shipped).await {
            // Harmless: trimmed by a later successful upload.
            tracing::warn!(error = %e, "could not trim the change log");
        }
        let shipped = self.shipped;
        let next_monoseq = self.next_monoseq;
        let lag = self.shared.lock().snapshot().lag_ms;
        if lag > 10 * u64::try_from(self.config.flush_interval.as_millis()).unwrap_or(u64::MAX)
            && self
                .last_lag_log
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.last_lag_log = Some(Instant::now());
            tracing::info!(
                prefix = %self.config.prefix,
                lag_ms = lag,
                shipped_through = %shipped,
                "continuous backup is behind; catching up"
            );
        }
        self.shared.update(|st| {
            st.status.shipped_through = shipped;
            st.status.next_monoseq = next_monoseq;
            st.status.last_error = None;
            if uploaded.is_some() {
                st.status.segments_uploaded += 1;
                st.status.last_upload_at_ms = Some(now_ms());
            }
            if st.urgent_target.is_some_and(|t| t <= shipped) {
                st.urgent_target = None;
            }
        });
    }

    /// Deletes the objects of an interrupted initial snapshot of ours.
    async fn clean_prefix(&self) -> Result<(), BackupError> {
        let store = &*self.config.store;
        let prefix = &self.config.prefix;
        let mut doomed = list_paths(store, &format::snapshots_dir(prefix)).await?;
        doomed.extend(list_paths(store, &format::logs_dir(prefix)).await?);
        doomed.push(format::differential_path(prefix));
        if !doomed.is_empty() {
            tracing::info!(prefix = %prefix, objects = doomed.len(), "removing an interrupted initial snapshot");
        }
        for p in doomed {
            match store.delete(&p).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn initial_snapshot(&mut self) -> Result<(), BackupError> {
        let store = self.config.store.clone();
        let prefix = self.config.prefix.clone();
        self.clean_prefix().await?;
        self.pending = None;
        let v0 = self.db.current_versionstamp().await?;
        let log_since = self
            .db
            .change_log_since()
            .await?
            .ok_or(BackupError::ChangeLogDisabled)?;
        if log_since > v0 {
            return Err(BackupError::Gap {
                log_since,
                shipped_through: v0,
            });
        }
        let created_at_ms = now_ms();
        let marker = InitMarker {
            producer: producer_name(),
            created_at_ms,
            snapshot_start: v0.to_string(),
        };
        let marker_path = init_marker_path(&prefix);
        let body = serde_json::to_vec(&marker).map_err(|e| bad_json(&marker_path, e))?;
        store.put(&marker_path, body.into()).await?;
        tracing::info!(prefix = %prefix, snapshot_start = %v0, "taking the initial snapshot");

        // Snapshot ranges: each page is its own consistent read at a version >= v0.
        let mut v1 = v0;
        let mut start: Vec<u8> = Vec::new();
        let mut seq = 0u64;
        let limit = self.config.snapshot_range_entries.max(1);
        loop {
            let (entries, at) = self.db.export_range(&start, &[0xff], limit).await?;
            v1 = v1.max(at);
            let key = SnapshotRangeKey {
                format_version: format::FORMAT_VERSION,
                monoseq: INITIAL_SNAPSHOT_MONOSEQ,
                seq,
            };
            let body = format::encode_snapshot_range(&entries);
            store
                .put(&format::snapshot_path(&prefix, &key), body.into())
                .await?;
            seq += 1;
            match entries.last() {
                Some(last) if entries.len() >= limit => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        // Logs of the commits that happened while the snapshot was taken.
        self.shipped = v0;
        self.next_monoseq = 1;
        while self.shipped < v1 {
            self.ship_one().await?;
        }
        store
            .put(
                &format::differential_path(&prefix),
                format::encode_differential(&v1).into(),
            )
            .await?;
        let manifest = BackupManifest {
            format: BackupManifest::FORMAT,
            producer: producer_name(),
            created_at_ms,
            initial_snapshot_monoseq: INITIAL_SNAPSHOT_MONOSEQ,
            snapshot_start: v0.to_string(),
            snapshot_end: v1.to_string(),
        };
        write_manifest(&*store, &prefix, &manifest).await?;
        if let Err(e) = store.delete(&marker_path).await {
            tracing::debug!(error = %e, "could not delete the init marker");
        }
        tracing::info!(prefix = %prefix, ranges = seq, differential = %v1, "initial snapshot complete");
        let (shipped, next_monoseq) = (self.shipped, self.next_monoseq);
        self.shared.update(|st| {
            st.status.initial_snapshot_done = true;
            st.status.shipped_through = shipped;
            st.status.next_monoseq = next_monoseq;
            st.status.last_error = None;
        });
        // Everything logged before the snapshot is in it.
        if let Err(e) = self.db.trim_changes(shipped).await {
            tracing::warn!(error = %e, "could not trim the change log");
        }
        Ok(())
    }
}

/// Reads every complete checkpoint manifest under the prefix (oldest first), and the
/// `monoseq`s of incomplete checkpoints (objects without `checkpoint.json`).
pub async fn list_checkpoints(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<(Vec<format::CheckpointManifest>, Vec<u64>), BackupError> {
    let paths = list_paths(store, &format::checkpoints_dir(prefix)).await?;
    let mut dirs: std::collections::BTreeMap<u64, bool> = std::collections::BTreeMap::new();
    for p in &paths {
        if let Some(m) = format::checkpoint_monoseq_of(prefix, p) {
            let complete = *p == format::checkpoint_manifest_path(prefix, m);
            *dirs.entry(m).or_default() |= complete;
        }
    }
    let mut complete = Vec::new();
    let mut incomplete = Vec::new();
    for (m, has_manifest) in dirs {
        if !has_manifest {
            incomplete.push(m);
            continue;
        }
        let path = format::checkpoint_manifest_path(prefix, m);
        let Some(body) = get_opt(store, &path).await? else {
            incomplete.push(m);
            continue;
        };
        let manifest = format::CheckpointManifest::from_bytes(&body).map_err(|source| {
            BackupError::Format {
                object: path.to_string(),
                source,
            }
        })?;
        complete.push(manifest);
    }
    Ok((complete, incomplete))
}

/// Deletes every object of one checkpoint, its manifest first (so it stops being used
/// before its ranges disappear).
async fn delete_checkpoint(
    store: &dyn ObjectStore,
    prefix: &Path,
    monoseq: u64,
) -> Result<(), BackupError> {
    let manifest = format::checkpoint_manifest_path(prefix, monoseq);
    match store.delete(&manifest).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    for p in list_paths(store, &format::checkpoint_dir(prefix, monoseq)).await? {
        match store.delete(&p).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The periodic checkpoint task.
struct Checkpointer {
    db: Db,
    config: BackupConfig,
    shared: Arc<Shared>,
    interval: Duration,
}

impl Checkpointer {
    async fn run(self) {
        let mut rx = self.shared.tx.subscribe();
        match rx.wait_for(|s| s.initial_snapshot_done || s.stopped).await {
            Ok(s) if s.stopped => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let mut next_monoseq = INITIAL_SNAPSHOT_MONOSEQ + 1;
        let mut last_end: Option<Versionstamp> = None;
        let store = &*self.config.store;
        let prefix = &self.config.prefix;
        match list_checkpoints(store, prefix).await {
            Ok((complete, incomplete)) => {
                for m in &incomplete {
                    tracing::info!(prefix = %prefix, monoseq = m, "removing an incomplete checkpoint");
                    if let Err(e) = delete_checkpoint(store, prefix, *m).await {
                        tracing::warn!(error = %e, "could not remove an incomplete checkpoint");
                    }
                }
                let max = complete
                    .iter()
                    .map(|c| c.monoseq)
                    .chain(incomplete.iter().copied())
                    .max();
                if let Some(max) = max {
                    next_monoseq = next_monoseq.max(max + 1);
                }
                last_end = complete
                    .iter()
                    .filter_map(|c| c.snapshot_end.parse::<Versionstamp>().ok())
                    .max();
                self.shared
                    .update(|st| st.status.last_checkpoint = last_end);
            }
            Err(e) => {
                // Not fatal: a fresh monoseq far above any existing one is still unique.
                tracing::warn!(error = %e, "could not list checkpoints");
                next_monoseq = now_ms().max(next_monoseq);
            }
        }
        loop {
            tokio::time::sleep(self.interval).await;
            if self.shared.stopping() {
                return;
            }
            let committed = self.shared.lock().status.committed;
            if last_end.is_some_and(|e| e >= committed) {
                continue;
            }
            let monoseq = next_monoseq;
            next_monoseq += 1;
            match self.take(monoseq).await {
                Ok(m) => {
                    let end = m.snapshot_end.parse::<Versionstamp>().ok();
                    last_end = end.or(last_end);
                    tracing::info!(prefix = %prefix, monoseq, keys = m.keys, snapshot_end = %m.snapshot_end, "checkpoint complete");
                    self.shared.update(|st| {
                        st.status.last_checkpoint = end;
                        st.status.checkpoints_written += 1;
                        st.status.last_checkpoint_error = None;
                    });
                    if let Err(e) = self.retain().await {
                        tracing::warn!(error = %e, "could not delete old checkpoints");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, prefix = %prefix, monoseq, "checkpoint failed");
                    let msg = e.to_string();
                    self.shared
                        .update(|st| st.status.last_checkpoint_error = Some(msg));
                    if let Err(e) = delete_checkpoint(store, prefix, monoseq).await {
                        tracing::debug!(error = %e, "could not remove a failed checkpoint");
                    }
                }
            }
        }
    }

    async fn take(&self, monoseq: u64) -> Result<format::CheckpointManifest, BackupError> {
        let store = &*self.config.store;
        let prefix = &self.config.prefix;
        let v0 = self.db.current_versionstamp().await?;
        let mut v1 = v0;
        let mut start: Vec<u8> = Vec::new();
        let mut seq = 0u64;
        let mut keys = 0u64;
        let limit = self.config.snapshot_range_entries.max(1);
        loop {
            let (entries, at) = self.db.export_range(&start, &[0xff], limit).await?;
            v1 = v1.max(at);
            keys += entries.len() as u64;
            let key = SnapshotRangeKey {
                format_version: format::FORMAT_VERSION,
                monoseq,
                seq,
            };
            store
                .put(
                    &format::checkpoint_snapshot_path(prefix, &key),
                    format::encode_snapshot_range(&entries).into(),
                )
                .await?;
            seq += 1;
            match entries.last() {
                Some(last) if entries.len() >= limit => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        let read_at_ms = now_ms();
        // The log up to v1 must be shipped before the checkpoint is usable.
        let mut rx = self.shared.tx.subscribe();
        let shipped = rx
            .wait_for(|s| s.shipped_through >= v1 || s.stopped)
            .await
            .map_err(|_| BackupError::Stopped("backup task gone".into()))?
            .clone();
        if shipped.shipped_through < v1 {
            return Err(BackupError::Stopped(
                "the backup stopped before the checkpoint's log was shipped".into(),
            ));
        }
        let manifest = format::CheckpointManifest {
            format: format::CheckpointManifest::FORMAT,
            monoseq,
            producer: producer_name(),
            created_at_ms: now_ms(),
            ranges: seq,
            keys,
            snapshot_start: v0.to_string(),
            snapshot_end: v1.to_string(),
            snapshot_end_timestamp_ms: read_at_ms,
        };
        let path = format::checkpoint_manifest_path(prefix, monoseq);
        let body = manifest.to_bytes().map_err(|source| BackupError::Format {
            object: path.to_string(),
            source,
        })?;
        store.put(&path, body.into()).await?;
        Ok(manifest)
    }

    async fn retain(&self) -> Result<(), BackupError> {
        let store = &*self.config.store;
        let prefix = &self.config.prefix;
        let (complete, _) = list_checkpoints(store, prefix).await?;
        let keep = self.config.checkpoint_retain.max(1);
        if complete.len() > keep {
            for c in &complete[..complete.len() - keep] {
                delete_checkpoint(store, prefix, c.monoseq).await?;
            }
        }
        Ok(())
    }
}
