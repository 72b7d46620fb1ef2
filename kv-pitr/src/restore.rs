//! Point-in-time restore from a backup into an empty database, moving a restored database
//! forward in time, and read replicas that follow a backup continuously.
//!
//! - [`restore`] rebuilds the state at a [`RestoreTarget`] in an empty [`Db`] of any engine:
//!   objects are downloaded, checked and written in bounded chunks (memory does not grow with
//!   the database), and a damaged or incomplete backup leaves the database empty (what was
//!   written is deleted again; [`crate::file_restore`] and [`crate::staged_restore`] make file
//!   and PostgreSQL restores all-or-nothing even across a crash). Restored keys keep their versionstamps
//!   and expiry times, and the database version ends exactly at the restored point, so writes
//!   after promoting the copy get larger versionstamps.
//!
//!   A restore starts from the newest complete checkpoint (see
//!   [`BackupConfig::checkpoint_interval`](crate::producer::BackupConfig::checkpoint_interval))
//!   whose first consistent point is at or before the target, or from the initial snapshot
//!   when there is none (targets before every checkpoint, backups without checkpoints, or
//!   [`BackupReader::with_checkpoints`]`(false)`). It downloads that base's ranges and only
//!   the log segments that end after the base's start (for a checkpoint, also the one ending
//!   with the commit at its start, which dates its first recovery point), so its cost is
//!   bounded by the checkpoint interval, not by the backup's age; older segments need not
//!   even exist. The recovery points are the same whatever the base: from the differential
//!   point to the latest commit. A damaged checkpoint is an error
//!   ([`ConsumerError::Checkpoint`]), never silently skipped; restoring without checkpoints
//!   gets around it.
//! - [`catch_up`] (in the internal `follower` module, re-exported here) moves a database restored from
//!   the same backup forward to a later point (applying whole transactions; only the log
//!   after the database's point is read). Moving backwards is not supported: restore into a
//!   new database instead.
//! - [`Replica`] (in [`crate::replica`], re-exported here) restores the latest point (from
//!   the newest checkpoint, if any), then keeps polling the backup for new log segments and
//!   applies each complete transaction; watchers of the database are notified. Open the
//!   database with `read_only: true` so clients cannot write to it.
//!
//! This module holds the restore itself: the [`RestoreTarget`], and streaming a base (initial
//! snapshot or checkpoint) plus the log into the database in bounded chunks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use futures::StreamExt;
use kv_db::{Db, ExportEntry, ImportOp};
use kv_traits::{KvError, Versionstamp};

use crate::consumer::{
    BackupKind, BackupLayout, BackupReader, Checkpoint, ConsumerError, LogObject, RecoveryPoint,
    Transaction,
};
use crate::format;
use crate::format::{LogSegment, LogSegmentKey, SnapshotRangeKey};
use crate::walker::LogWalker;

pub use crate::follower::catch_up;
pub use crate::replica::{Replica, ReplicaConfig, ReplicaStatus};

/// Most entries written by one import call while restoring.
pub const IMPORT_CHUNK_ENTRIES: usize = 2000;
/// Most value bytes written by one import call while restoring.
pub const IMPORT_CHUNK_BYTES: usize = 8 << 20;

/// Which state of the backup to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The latest recovery point.
    Latest,
    /// The state after the commit with this versionstamp: the newest recovery point at or
    /// before it. Earlier than the first consistent point or later than the latest recovery
    /// point is an error.
    Versionstamp(Versionstamp),
    /// The state at this time (ms since the Unix epoch): the newest recovery point whose time
    /// is at or before it (the latest if the time is later than every point). Earlier than the
    /// first point is an error.
    Time(u64),
}

/// Text that is not a [`RestoreTarget`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restore target {0:?}: expected `latest`, a 20-hex-digit versionstamp or an RFC 3339 time such as 2026-01-02T03:04:05.678Z")]
pub struct InvalidTarget(pub String);

impl FromStr for RestoreTarget {
    type Err = InvalidTarget;

    /// Parses `latest`, a 20-hex-digit versionstamp, or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(RestoreTarget::Latest);
        }
        if let Ok(vs) = t.parse::<Versionstamp>() {
            return Ok(RestoreTarget::Versionstamp(vs));
        }
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|d| u64::try_from(d.timestamp_millis()).ok())
            .map(RestoreTarget::Time)
            .ok_or_else(|| InvalidTarget(s.to_string()))
    }
}

impl fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreTarget::Latest => f.write_str("latest"),
            RestoreTarget::Versionstamp(v) => write!(f, "versionstamp {v}"),
            RestoreTarget::Time(ms) => {
                write!(f, "time {}", crate::consumer::format_time_ms(*ms))
            }
        }
    }
}

/// Progress of a restore, reported as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreProgress {
    /// The backup was listed and checked.
    Listed {
        /// Snapshot ranges to load.
        snapshot_ranges: usize,
        /// Log segments in the backup.
        log_segments: usize,
    },
    /// The restore starts from this base (reported again if it falls back to an older one:
    /// a checkpoint deleted meanwhile, or one whose first point is after a time target).
    Base {
        /// The checkpoint's `monoseq`; `None` for the initial snapshot.
        checkpoint: Option<u64>,
        /// Its snapshot ranges, to download.
        snapshot_ranges: usize,
        /// Log segments to download (those ending after the base's start).
        log_segments: usize,
    },
    /// One more snapshot range was downloaded and checked.
    SnapshotRange {
        /// Ranges done so far.
        done: usize,
        /// All ranges.
        total: usize,
    },
    /// One more log segment was downloaded, checked and replayed.
    LogSegment {
        /// Segments done so far.
        done: usize,
        /// All segments (the restore may stop earlier at its target).
        total: usize,
        /// Transactions replayed so far.
        transactions: u64,
    },
    /// Another chunk was written into the database (reported as the restore goes: snapshot
    /// entries, then replayed log operations).
    Writing {
        /// Operations (puts and deletes) written so far.
        written: usize,
    },
}

/// What a restore produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The recovery point restored (also the database's versionstamp afterwards).
    pub versionstamp: Versionstamp,
    /// Time of that point (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Keys in the restored database.
    pub keys: usize,
    /// Log transactions replayed on top of the snapshot.
    pub transactions: u64,
    /// The checkpoint the restore started from (its `monoseq`); `None` for the initial
    /// snapshot (and for [`catch_up`], which starts from the database).
    pub checkpoint: Option<u64>,
}

/// A restore, catch-up or replica failure.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup cannot be read, is damaged or incomplete, or does not hold the target.
    #[error(transparent)]
    Backup(#[from] ConsumerError),
    /// Restores only go into an empty database.
    #[error("the target database is not empty (its versionstamp is {versionstamp}, {detail}); restore into a new, empty database")]
    NotEmpty {
        /// The database's current versionstamp.
        versionstamp: Versionstamp,
        /// What was found.
        detail: &'static str,
    },
    /// The database is not at a recovery point of this backup, so it cannot be moved forward
    /// along it.
    #[error("the database (at {versionstamp}) is not a restored copy of this backup: {reason}")]
    NotACopy {
        /// The database's current versionstamp.
        versionstamp: Versionstamp,
        /// Why.
        reason: String,
    },
    /// The target is before the database's current point (moving backwards is unsupported).
    #[error("the database is at {current}, after the requested {target}; moving backwards in time is not supported: restore into a new database instead")]
    Backwards {
        /// The database's current versionstamp.
        current: Versionstamp,
        /// The requested target, as text.
        target: String,
    },
    /// The backup under the prefix was replaced by another one (its differential point
    /// changed or disappeared) while this copy followed it.
    #[error("the backup at {prefix} was replaced: its differential point changed from {was} to {}; this copy cannot follow the new backup, restore into a new database", .now.map_or_else(|| "nothing".to_string(), |v| v.to_string()))]
    BackupReplaced {
        /// The backup prefix.
        prefix: String,
        /// The differential versionstamp this copy was made from.
        was: Versionstamp,
        /// The differential versionstamp now (`None`: the marker is gone).
        now: Option<Versionstamp>,
    },
    /// The database failed.
    #[error("the target database failed: {0}")]
    Db(#[from] KvError),
}

/// Fails unless the database holds no data and has never committed.
pub async fn check_empty(db: &Db) -> Result<(), RestoreError> {
    let versionstamp = db.current_versionstamp().await?;
    if versionstamp != Versionstamp::ZERO {
        return Err(RestoreError::NotEmpty {
            versionstamp,
            detail: "it has committed writes",
        });
    }
    let (entries, _) = db.export_range(&[], &[0xff], 1).await?;
    if !entries.is_empty() {
        return Err(RestoreError::NotEmpty {
            versionstamp,
            detail: "it holds data",
        });
    }
    Ok(())
}

/// Decides, transaction by transaction after the first consistent point, where a fold stops.
pub(crate) struct Stopper {
    pub(crate) target: RestoreTarget,
}

impl Stopper {
    /// Whether a transaction after the first point is still part of the target state.
    pub(crate) fn includes(&self, point: &RecoveryPoint) -> bool {
        match self.target {
            RestoreTarget::Latest => true,
            RestoreTarget::Versionstamp(v) => point.versionstamp <= v,
            RestoreTarget::Time(t) => point.timestamp_ms <= t,
        }
    }

    /// Checks the target against the first point, once it is known.
    fn check_first(&self, first: &RecoveryPoint) -> Result<(), ConsumerError> {
        let before = match self.target {
            RestoreTarget::Latest => false,
            RestoreTarget::Versionstamp(v) => v < first.versionstamp,
            RestoreTarget::Time(t) => t < first.timestamp_ms,
        };
        if before {
            return Err(ConsumerError::BeforeFirstPoint {
                target: self.target.to_string(),
                first: *first,
            });
        }
        Ok(())
    }

    /// Checks the target against the latest point when the log ran out before the target.
    pub(crate) fn check_latest(&self, latest: &RecoveryPoint) -> Result<(), ConsumerError> {
        if let RestoreTarget::Versionstamp(v) = self.target {
            if v > latest.versionstamp {
                return Err(ConsumerError::BeyondLatest {
                    target: self.target.to_string(),
                    latest: *latest,
                });
            }
        }
        Ok(())
    }
}

/// Where a restore ended (its data is already written into the database).
pub(crate) struct Staged {
    pub(crate) layout: BackupLayout,
    pub(crate) walker: LogWalker,
    point: RecoveryPoint,
    transactions: u64,
    /// The checkpoint restored from (`None`: the initial snapshot).
    checkpoint: Option<u64>,
}

/// The bounded buffer between the backup and the database: operations are written in
/// imports of at most [`IMPORT_CHUNK_ENTRIES`] entries or [`IMPORT_CHUNK_BYTES`] bytes, in the
/// order they were pushed, none of which moves the database's version (only
/// [`Sink::finish`] does), so an interrupted restore is never taken for a complete copy.
pub(crate) struct Sink<'a> {
    db: &'a Db,
    chunk: Vec<ImportOp>,
    chunk_bytes: usize,
    /// Operations written so far.
    written: usize,
    /// Whether anything was written since the database was last known empty.
    touched: bool,
}

impl<'a> Sink<'a> {
    fn new(db: &'a Db) -> Self {
        Sink {
            db,
            chunk: Vec::new(),
            chunk_bytes: 0,
            written: 0,
            touched: false,
        }
    }

    async fn push(
        &mut self,
        op: ImportOp,
        progress: &mut dyn FnMut(RestoreProgress),
    ) -> Result<(), KvError> {
        self.chunk_bytes += match &op {
            ImportOp::Put(e) => e.key.len() + e.value.encoded_len(),
            ImportOp::Delete(k) => k.len(),
        };
        self.chunk.push(op);
        if self.chunk.len() >= IMPORT_CHUNK_ENTRIES || self.chunk_bytes >= IMPORT_CHUNK_BYTES {
            self.flush(progress).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, progress: &mut dyn FnMut(RestoreProgress)) -> Result<(), KvError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.written += self.chunk.len();
        self.touched = true;
        self.chunk_bytes = 0;
        self.db
            .import(std::mem::take(&mut self.chunk), None)
            .await?;
        progress(RestoreProgress::Writing {
            written: self.written,
        });
        Ok(())
    }

    /// Writes the rest and moves the database to `point`.
    async fn finish(
        &mut self,
        point: Versionstamp,
        progress: &mut dyn FnMut(RestoreProgress),
    ) -> Result<(), KvError> {
        self.written += self.chunk.len();
        self.touched = true;
        self.db
            .import(std::mem::take(&mut self.chunk), Some(point))
            .await?;
        progress(RestoreProgress::Writing {
            written: self.written,
        });
        Ok(())
    }

    /// Empties the database again (after a base was declined or the restore failed), in
    /// bounded pages. The database's version was never moved, so it is empty as before.
    async fn wipe(&mut self) -> Result<(), KvError> {
        self.chunk.clear();
        self.chunk_bytes = 0;
        if !self.touched {
            return Ok(());
        }
        loop {
            let (entries, _) = self
                .db
                .export_range(&[], &[0xff], IMPORT_CHUNK_ENTRIES)
                .await?;
            if entries.is_empty() {
                break;
            }
            let ops = entries
                .into_iter()
                .map(|e| ImportOp::Delete(e.key))
                .collect();
            self.db.import(ops, None).await?;
        }
        self.touched = false;
        self.written = 0;
        Ok(())
    }

    /// The stored versionstamp of `key`, writing pending operations first.
    async fn stored_versionstamp(
        &mut self,
        key: &[u8],
        progress: &mut dyn FnMut(RestoreProgress),
    ) -> Result<Option<Versionstamp>, KvError> {
        self.flush(progress).await?;
        let mut end = key.to_vec();
        end.push(0);
        let (entries, _) = self.db.export_range(key, &end, 1).await?;
        Ok(entries.first().map(|e| e.versionstamp))
    }

    /// Writes one log transaction.
    async fn apply(
        &mut self,
        txn: Transaction,
        progress: &mut dyn FnMut(RestoreProgress),
    ) -> Result<(), KvError> {
        for e in txn.entries {
            let op = match e.value {
                Some(value) => ImportOp::Put(ExportEntry {
                    versionstamp: format::vs10_of(&e.vs12),
                    key: e.key,
                    value,
                    expire_at_ms: e.expire_at_ms,
                }),
                None => ImportOp::Delete(e.key),
            };
            self.push(op, progress).await?;
        }
        Ok(())
    }
}

/// Counts the keys of a database in bounded pages.
async fn count_keys(db: &Db) -> Result<usize, KvError> {
    let mut count = 0;
    let mut start = Vec::new();
    loop {
        let (entries, _) = db
            .export_range(&start, &[0xff], IMPORT_CHUNK_ENTRIES)
            .await?;
        count += entries.len();
        match entries.last() {
            Some(last) if entries.len() == IMPORT_CHUNK_ENTRIES => {
                start = last.key.clone();
                start.push(0);
            }
            _ => return Ok(count),
        }
    }
}

/// Key intervals of the snapshot ranges written so far (first key to last key), merged: an
/// entry outside all of them cannot replace an older one, so only entries inside need a look
/// at the database (never, for ranges with disjoint key spans such as ours).
#[derive(Default)]
struct Intervals(BTreeMap<Vec<u8>, Vec<u8>>);

impl Intervals {
    fn contains(&self, key: &[u8]) -> bool {
        self.0
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, last)| key <= last.as_slice())
    }

    fn add(&mut self, first: Vec<u8>, last: Vec<u8>) {
        let (mut first, mut last) = (first, last);
        let overlapping: Vec<Vec<u8>> = self
            .0
            .range::<[u8], _>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(last.as_slice()),
            ))
            .rev()
            .take_while(|(_, l)| l.as_slice() >= first.as_slice())
            .map(|(f, _)| f.clone())
            .collect();
        for f in overlapping {
            if let Some(l) = self.0.remove(&f) {
                if f < first {
                    first = f;
                }
                if l > last {
                    last = l;
                }
            }
        }
        self.0.insert(first, last);
    }
}

/// What a restore starts from.
#[derive(Clone, Copy)]
enum Base<'a> {
    /// The initial snapshot (`snapshots/`), consistent from the differential point.
    Initial,
    /// A checkpoint, consistent from its `snapshot_end`.
    Checkpoint(&'a Checkpoint),
}

/// Downloads, checks and writes (through `sink`, all but its last chunk) everything the
/// target needs, starting from the newest checkpoint that can hold the target (the initial
/// snapshot if none can). A base that turns out not to hold the target is wiped from the
/// database before the next one is tried.
async fn stage(
    reader: &BackupReader,
    target: RestoreTarget,
    sink: &mut Sink<'_>,
    progress: &mut dyn FnMut(RestoreProgress),
) -> Result<Staged, RestoreError> {
    let layout = reader.restore_layout().await?;
    let dv = layout.differential;
    progress(RestoreProgress::Listed {
        snapshot_ranges: layout.snapshot_ranges.len(),
        log_segments: layout.logs.len(),
    });
    // Fail early for versionstamps before the first point (its time is not needed).
    if let RestoreTarget::Versionstamp(v) = target {
        if v < dv {
            return Err(ConsumerError::BeforeFirstPoint {
                target: target.to_string(),
                first: RecoveryPoint {
                    versionstamp: dv,
                    timestamp_ms: 0,
                },
            }
            .into());
        }
    }
    let checkpoints = match layout.kind {
        BackupKind::KvPitr(_) if reader.uses_checkpoints() => reader.checkpoints(&layout).await?,
        _ => Vec::new(),
    };
    // Newest first. The time of a checkpoint's first recovery point is only known from the
    // log (the manifest's time comes from another clock): for a time target, a checkpoint
    // whose first point turns out to be after the target is passed over in `stage_from`,
    // before its ranges are downloaded.
    // After a compaction, older checkpoints lack the log they need.
    let oldest_usable = layout.compaction.as_ref().map_or(0, |c| c.checkpoint);
    let candidates = checkpoints
        .iter()
        .rev()
        .filter(|c| c.manifest.monoseq >= oldest_usable)
        .filter(|c| match target {
            RestoreTarget::Latest | RestoreTarget::Time(_) => true,
            RestoreTarget::Versionstamp(v) => c.snapshot_end <= v,
        });
    for c in candidates {
        if let Some(staged) =
            stage_from(reader, &layout, Base::Checkpoint(c), target, sink, progress).await?
        {
            return Ok(staged);
        }
        sink.wipe().await?;
    }
    if let Some(first) = layout.compaction.as_ref().and_then(|c| c.first()) {
        // The log the initial snapshot needs was compacted away: no checkpoint held the
        // target, so it is before the first point.
        return Err(ConsumerError::BeforeFirstPoint {
            target: target.to_string(),
            first,
        }
        .into());
    }
    match stage_from(reader, &layout, Base::Initial, target, sink, progress).await? {
        Some(staged) => Ok(staged),
        // Only a checkpoint base can decline the target.
        None => Err(ConsumerError::NotReady {
            prefix: reader.prefix().to_string(),
        }
        .into()),
    }
}

/// Writes the snapshot ranges of `base` into the database (through `sink`; the newest
/// version of each key wins), one range object in memory at a time, checking that no entry
/// is newer than `end`. For a checkpoint, also that its keys are strictly ascending across
/// ranges and that their number matches its manifest.
async fn load_base(
    reader: &BackupReader,
    layout: &BackupLayout,
    base: Base<'_>,
    sink: &mut Sink<'_>,
    progress: &mut dyn FnMut(RestoreProgress),
) -> Result<(), RestoreError> {
    let (keys, end, what) = match base {
        Base::Initial => (
            layout.snapshot_ranges.clone(),
            layout.differential,
            "the differential versionstamp",
        ),
        Base::Checkpoint(c) => (
            c.ranges.clone(),
            c.snapshot_end,
            "the checkpoint's snapshot_end",
        ),
    };
    let total = keys.len();
    let mut ranges = match base {
        Base::Initial => reader.fetch_snapshot_ranges(keys),
        Base::Checkpoint(_) => reader.fetch_checkpoint_ranges(keys),
    };
    let path_of = |key: &SnapshotRangeKey| match base {
        Base::Initial => format::snapshot_path(reader.prefix(), key),
        Base::Checkpoint(_) => format::checkpoint_snapshot_path(reader.prefix(), key),
    };
    // Initial snapshot only (a checkpoint's keys are checked to be ascending): the key spans
    // of the ranges written, to find the keys a range may hold twice.
    let mut spans = Intervals::default();
    let mut last_key: Option<Vec<u8>> = None;
    let mut count = 0u64;
    let mut done = 0;
    while let Some(item) = ranges.next().await {
        let (key, entries) = item?;
        let mut span: Option<(Vec<u8>, Vec<u8>)> = None;
        for e in entries {
            if e.versionstamp > end {
                return Err(ConsumerError::Inconsistent {
                    object: path_of(&key).to_string(),
                    reason: format!(
                        "it holds a key written at {}, after {what} {end}",
                        e.versionstamp
                    ),
                }
                .into());
            }
            match base {
                Base::Checkpoint(_) => {
                    if last_key.as_ref().is_some_and(|l| *l >= e.key) {
                        return Err(ConsumerError::Inconsistent {
                            object: path_of(&key).to_string(),
                            reason:
                                "its keys are not in ascending order after those of the previous ranges"
                                    .into(),
                        }
                        .into());
                    }
                    last_key = Some(e.key.clone());
                    count += 1;
                }
                Base::Initial => {
                    let seen = spans.contains(&e.key)
                        || span.as_ref().is_some_and(|(_, last)| e.key <= *last);
                    match &mut span {
                        None => span = Some((e.key.clone(), e.key.clone())),
                        Some((first, last)) => {
                            if e.key < *first {
                                *first = e.key.clone();
                            }
                            if e.key > *last {
                                *last = e.key.clone();
                            }
                        }
                    }
                    if seen {
                        if let Some(stored) = sink.stored_versionstamp(&e.key, progress).await? {
                            if stored > e.versionstamp {
                                continue;
                            }
                        }
                    }
                }
            }
            sink.push(ImportOp::Put(e), progress).await?;
        }
        if let Some((first, last)) = span {
            spans.add(first, last);
        }
        done += 1;
        progress(RestoreProgress::SnapshotRange { done, total });
    }
    if let Base::Checkpoint(c) = base {
        if count != c.manifest.keys {
            return Err(ConsumerError::Inconsistent {
                object: format::checkpoint_manifest_path(reader.prefix(), c.manifest.monoseq)
                    .to_string(),
                reason: format!(
                    "it counts {} keys but its ranges hold {count}",
                    c.manifest.keys
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// Restores the target from one base. `None`: the base cannot produce the target (a
/// checkpoint whose first consistent point is after it, or that was deleted meanwhile).
async fn stage_from(
    reader: &BackupReader,
    layout: &BackupLayout,
    base: Base<'_>,
    target: RestoreTarget,
    sink: &mut Sink<'_>,
    progress: &mut dyn FnMut(RestoreProgress),
) -> Result<Option<Staged>, RestoreError> {
    let dv = layout.differential;
    let stopper = Stopper { target };
    // Entries up to `start` are in the ranges; states are consistent from `end` on.
    let (start, end) = match base {
        Base::Initial => (layout.snapshot_start(), dv),
        Base::Checkpoint(c) => (Some(c.snapshot_start), c.snapshot_end),
    };
    // Segments wholly at or before `start` are not needed (replaying them would be harmless
    // but slow), not even downloaded: restore time depends on the log after the base only.
    // For a checkpoint, the segment ending with the commit at `start` is read too: that
    // commit is often the checkpoint's first recovery point, whose time it gives.
    let skip_through = match base {
        Base::Initial => start.map(|s| format::boundary_of(&s)),
        Base::Checkpoint(c) => Some(format::vs12(&c.snapshot_start, format::BOUNDARY_INDEX - 1)),
    };
    let (skipped, needed) = reader.split_logs(layout, skip_through)?;
    let checkpoint = match base {
        Base::Initial => None,
        Base::Checkpoint(c) => Some(c.manifest.monoseq),
    };
    progress(RestoreProgress::Base {
        checkpoint,
        snapshot_ranges: match base {
            Base::Initial => layout.snapshot_ranges.len(),
            Base::Checkpoint(c) => c.ranges.len(),
        },
        log_segments: needed.len(),
    });

    let mut walker = LogWalker::new(layout);
    for o in &skipped {
        walker.skip(&o.key);
    }
    // For a checkpoint, first find its first recovery point in the log (usually in the
    // first segment or two, which are needed anyway): if the target is before it, the
    // checkpoint is passed over without downloading its ranges.
    let mut prefetched = Vec::new();
    if let Base::Checkpoint(c) = base {
        let (first, fetched) = checkpoint_first_point(reader, layout, c, &walker, &needed).await?;
        match first {
            Some(p) if stopper.includes(&p) => {}
            _ => return Ok(None),
        }
        prefetched = fetched;
    }

    match load_base(reader, layout, base, sink, progress).await {
        Ok(()) => {}
        Err(e @ RestoreError::Db(_)) => return Err(e),
        Err(e) => match base {
            Base::Initial => return Err(e),
            Base::Checkpoint(c) => {
                let RestoreError::Backup(e) = e else {
                    return Err(e);
                };
                if reader.checkpoint_exists(c.manifest.monoseq).await? {
                    return Err(reader.checkpoint_error(c.manifest.monoseq, e).into());
                }
                tracing::info!(
                    monoseq = c.manifest.monoseq,
                    "checkpoint deleted while it was being read; using an older one"
                );
                return Ok(None);
            }
        },
    }

    // The first consistent point of the base: the differential point for the initial
    // snapshot; for a checkpoint, the last transaction up to its end, if the log read holds it.
    let mut last_in_base: Option<RecoveryPoint> = None;
    let mut first_checked = false;
    let mut point: Option<RecoveryPoint> = None;
    let mut transactions = 0u64;
    let mut stopped = false;
    let total = layout.logs.len();
    let mut done = skipped.len();
    let rest: Vec<LogSegmentKey> = needed
        .iter()
        .skip(prefetched.len())
        .map(|o| o.key)
        .collect();
    let mut segments = futures::stream::iter(prefetched.into_iter().map(Ok))
        .chain(reader.fetch_logs(rest))
        .boxed();
    'segments: while let Some(item) = segments.next().await {
        let (key, seg) = item?;
        for txn in walker.push(&key, seg) {
            if txn.versionstamp <= end {
                if txn.versionstamp > dv {
                    last_in_base = Some(point_of(&txn));
                }
                sink.apply(txn, progress).await?;
                transactions += 1;
                continue;
            }
            if !first_checked {
                first_checked = true;
                match first_point(base, &mut walker, last_in_base, &stopper)? {
                    FirstPoint::Point(p) => point = Some(p),
                    FirstPoint::Unknown => {}
                    FirstPoint::AfterTarget => return Ok(None),
                }
            }
            if !stopper.includes(&point_of(&txn)) {
                stopped = true;
                break 'segments;
            }
            point = Some(point_of(&txn));
            sink.apply(txn, progress).await?;
            transactions += 1;
        }
        done += 1;
        progress(RestoreProgress::LogSegment {
            done,
            total,
            transactions,
        });
    }
    drop(segments);
    if !stopped {
        walker.check_reached_differential(reader.backup_store())?;
    }
    if !first_checked {
        match first_point(base, &mut walker, last_in_base, &stopper)? {
            FirstPoint::Point(p) => point = Some(p),
            FirstPoint::Unknown => {}
            FirstPoint::AfterTarget => return Ok(None),
        }
    }
    let Some(point) = point else {
        // The initial snapshot always has its first point; a checkpoint whose last
        // transaction is in a segment before its start is declined.
        return Ok(None);
    };
    if !stopped {
        stopper.check_latest(&point)?;
    }
    if let Base::Checkpoint(c) = base {
        tracing::debug!(
            monoseq = c.manifest.monoseq,
            segments = needed.len(),
            "restoring from checkpoint"
        );
    }
    Ok(Some(Staged {
        layout: layout.clone(),
        walker,
        point,
        transactions,
        checkpoint,
    }))
}

/// Downloads, in order, the needed segments of a checkpoint base up to the first commit after
/// its end, and returns its first recovery point (the last commit up to its end if the
/// segments read hold one after the differential point, else the first commit after its end;
/// `None` if there is neither) with the segments read.
pub(crate) async fn checkpoint_first_point(
    reader: &BackupReader,
    layout: &BackupLayout,
    c: &Checkpoint,
    walker: &LogWalker,
    needed: &[LogObject],
) -> Result<(Option<RecoveryPoint>, Vec<(LogSegmentKey, LogSegment)>), ConsumerError> {
    let mut walker = walker.clone();
    let mut fetched = Vec::new();
    let mut last_in_base: Option<RecoveryPoint> = None;
    for o in needed {
        let seg = reader.fetch_log(&o.key).await?;
        fetched.push((o.key, seg.clone()));
        for txn in walker.push(&o.key, seg) {
            if txn.versionstamp <= c.snapshot_end {
                if txn.versionstamp > layout.differential {
                    last_in_base = Some(point_of(&txn));
                }
                continue;
            }
            return Ok((
                Some(last_in_base.unwrap_or_else(|| point_of(&txn))),
                fetched,
            ));
        }
    }
    Ok((last_in_base, fetched))
}

pub(crate) fn point_of(txn: &Transaction) -> RecoveryPoint {
    RecoveryPoint {
        versionstamp: txn.versionstamp,
        timestamp_ms: txn.timestamp_ms,
    }
}

/// The first consistent point of a base, decided once every transaction up to the base's
/// end has been replayed.
enum FirstPoint {
    /// The point, within the target.
    Point(RecoveryPoint),
    /// Not in the log read: the first point is the first transaction after the base's end.
    Unknown,
    /// The target is before the base's first point.
    AfterTarget,
}

fn first_point(
    base: Base<'_>,
    walker: &mut LogWalker,
    last_in_base: Option<RecoveryPoint>,
    stopper: &Stopper,
) -> Result<FirstPoint, ConsumerError> {
    match base {
        Base::Initial => match walker.take_first_point() {
            Some(first) => {
                stopper.check_first(&first)?;
                Ok(FirstPoint::Point(first))
            }
            None => Ok(FirstPoint::Unknown),
        },
        Base::Checkpoint(_) => match last_in_base {
            Some(p) if stopper.includes(&p) => Ok(FirstPoint::Point(p)),
            Some(_) => Ok(FirstPoint::AfterTarget),
            None => Ok(FirstPoint::Unknown),
        },
    }
}

/// Restores the backup's state at `target` into `db`, which must be empty (no data, never
/// committed). Works on a read-only database too.
///
/// Streams: one snapshot range object (and a few being downloaded) and one chunk of at most
/// [`IMPORT_CHUNK_ENTRIES`] entries / [`IMPORT_CHUNK_BYTES`] bytes are in memory at a time,
/// whatever the size of the database; every object is verified as it is read. The database's
/// version stays at zero until the last chunk, which moves it exactly to the restored point,
/// so an interrupted restore is never taken for a copy ([`Db::imported_through`] is `None`).
/// On an error the entries written so far are deleted again (in bounded pages), leaving the
/// database empty as it was; a crash mid-restore leaves a partial database at version zero.
/// For an all-or-nothing restore of a file database that survives crashes too, use
/// [`crate::file_restore::restore_file`], which restores into a temporary file and swaps it
/// in when complete (PostgreSQL: [`crate::staged_restore::restore_staged`], a staging
/// schema).
pub async fn restore(
    reader: &BackupReader,
    db: &Db,
    target: RestoreTarget,
    mut progress: impl FnMut(RestoreProgress),
) -> Result<RestoreOutcome, RestoreError> {
    let (outcome, _) = restore_staged(reader, db, target, &mut progress).await?;
    Ok(outcome)
}

pub(crate) async fn restore_staged(
    reader: &BackupReader,
    db: &Db,
    target: RestoreTarget,
    progress: &mut dyn FnMut(RestoreProgress),
) -> Result<(RestoreOutcome, Staged), RestoreError> {
    check_empty(db).await?;
    let mut sink = Sink::new(db);
    let staged = match stage(reader, target, &mut sink, progress).await {
        Ok(staged) => staged,
        Err(e) => {
            if let Err(wipe) = sink.wipe().await {
                tracing::warn!(error = %wipe, "cannot delete what a failed restore wrote; the database is at version zero, so it is not taken for a copy");
            }
            return Err(e);
        }
    };
    sink.finish(staged.point.versionstamp, progress).await?;
    if db.imported_through().await? != Some(staged.point.versionstamp) {
        return Err(RestoreError::NotACopy {
            versionstamp: db.current_versionstamp().await?,
            reason: format!(
                "after the restore its versionstamp is not the restored point {} (was it written to meanwhile?)",
                staged.point.versionstamp
            ),
        });
    }
    let keys = count_keys(db).await?;
    let outcome = RestoreOutcome {
        versionstamp: staged.point.versionstamp,
        timestamp_ms: staged.point.timestamp_ms,
        keys,
        transactions: staged.transactions,
        checkpoint: staged.checkpoint,
    };
    tracing::info!(
        versionstamp = %outcome.versionstamp,
        keys = outcome.keys,
        transactions = outcome.transactions,
        "restored backup {}",
        reader.prefix()
    );
    Ok((outcome, staged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_contain() {
        let k = |s: &str| s.as_bytes().to_vec();
        let mut spans = Intervals::default();
        assert!(!spans.contains(b"a"));
        spans.add(k("b"), k("d"));
        spans.add(k("f"), k("h"));
        assert!(spans.contains(b"b") && spans.contains(b"c") && spans.contains(b"d"));
        assert!(!spans.contains(b"a") && !spans.contains(b"e") && !spans.contains(b"i"));
        // Bridging both merges them into one.
        spans.add(k("c"), k("g"));
        assert_eq!(spans.0.len(), 1);
        assert!(spans.contains(b"e"));
        assert!(!spans.contains(b"i"));
        spans.add(k("a"), k("z"));
        assert_eq!(spans.0.len(), 1);
        assert!(spans.contains(b"i"));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "latest".parse::<RestoreTarget>().unwrap(),
            RestoreTarget::Latest
        );
        assert_eq!(
            "00000000000000050000".parse::<RestoreTarget>().unwrap(),
            RestoreTarget::Versionstamp(Versionstamp::from_version(5))
        );
        assert_eq!(
            "2023-11-14T22:13:20.123Z".parse::<RestoreTarget>().unwrap(),
            RestoreTarget::Time(1_700_000_000_123)
        );
        assert!("yesterday".parse::<RestoreTarget>().is_err());
        assert!("1969-01-01T00:00:00Z".parse::<RestoreTarget>().is_err());
        assert_eq!(
            RestoreTarget::Time(1_700_000_000_123).to_string(),
            "time 2023-11-14T22:13:20.123Z"
        );
    }
}
