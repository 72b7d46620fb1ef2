//! Reading a continuous backup: listing, fetching and checking its objects, and finding its
//! recovery points.
//!
//! A [`BackupReader`] reads the objects under one prefix of an [`ObjectStore`]: the
//! `differential` marker, our `kv-pitr.json` manifest (absent in backups written by Deno
//! Deploy), the snapshot ranges and the log segments. Every object is checked as it is read
//! (name, protobuf, checksum trailer when present, first/last versionstamps against the name),
//! and the listing is checked as a whole (no missing segment or snapshot range in backups that
//! carry our manifest). Problems are [`ConsumerError`]s naming the object.
//!
//! Every object is read through [`BackupStore`] (listing, fetching and checksum checks live
//! there; its [`StoreError`]s map one to one onto [`ConsumerError::Missing`],
//! [`ConsumerError::Store`], [`ConsumerError::Corrupt`] and [`ConsumerError::ForeignObject`]),
//! and the log is walked and checked for gaps by the crate's log walker.
//!
//! Our backups may also hold checkpoints (`checkpoints/{monoseq:016x}/`, full snapshots
//! taken while the backup runs): [`BackupReader::checkpoints`] lists the complete ones and
//! checks them like the initial snapshot.
//!
//! Only transaction boundaries (log entries whose 12-byte versionstamp ends in `ff ff`) at or
//! after the differential versionstamp are consistent states: those are the
//! [`RecoveryPoint`]s. The differential versionstamp itself is always the first one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use kv_traits::Versionstamp;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::format::{
    self, BackupManifest, CheckpointManifest, ExportEntry, FormatError, LogSegment, LogSegmentKey,
    SnapshotRangeKey, Vs12,
};
use crate::store::{BackupStore, CheckpointListing, StoreError};
use crate::walker::{self, LogWalker};

pub use crate::store::LogObject;
pub use crate::url::{open_store_url, StoreUrlError};
pub use crate::walker::{Transaction, FIRST_LOG_MONOSEQ};

/// How many objects are downloaded at the same time by default (results stay in order).
pub const DEFAULT_FETCH_CONCURRENCY: usize = 16;

/// A problem reading a backup. Every variant names the object (or prefix) concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// An object the backup needs does not exist.
    #[error("backup object {object} is missing")]
    Missing {
        /// Full path of the object.
        object: String,
    },
    /// The object store failed (network, permissions, ...).
    #[error("could not read backup object {object}: {source}")]
    Store {
        /// Full path of the object or listed prefix.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object's bytes are damaged or do not match its name (checksum mismatch, truncated
    /// object, bad protobuf, wrong first/last versionstamp, bad differential text...).
    #[error("backup object {object} is corrupt: {source}")]
    Corrupt {
        /// Full path of the object.
        object: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// An object under `snapshots/` or `logs/` whose name is not a backup object name.
    #[error("unexpected object {object} in the backup (not a backup object name): {source}")]
    ForeignObject {
        /// Full path of the object.
        object: String,
        /// Why the name was rejected.
        #[source]
        source: FormatError,
    },
    /// An object is well formed but contradicts the rest of the backup.
    #[error("backup object {object} is inconsistent with the rest of the backup: {reason}")]
    Inconsistent {
        /// Full path of the object.
        object: String,
        /// What is contradictory.
        reason: String,
    },
    /// Log segments are missing: `monoseq` numbers of our backups are contiguous.
    #[error("log segments are missing in {prefix}: expected a segment with monoseq {expected_monoseq} {after}, found {found}")]
    MissingLogSegments {
        /// The backup prefix.
        prefix: String,
        /// The monoseq that should come next.
        expected_monoseq: u64,
        /// Where in the sequence (`after <segment>`, `before <segment> …` or `first`).
        after: String,
        /// What was found instead.
        found: String,
    },
    /// Snapshot ranges are missing: their `seq` numbers are contiguous from 0.
    #[error("snapshot ranges are missing in {prefix}: expected range seq {expected_seq} of snapshot {monoseq}, found {found}")]
    MissingSnapshotRanges {
        /// The backup prefix.
        prefix: String,
        /// The snapshot's monoseq.
        monoseq: u64,
        /// The seq that should come next.
        expected_seq: u64,
        /// What was found instead.
        found: String,
    },
    /// Nothing under the prefix looks like a backup.
    #[error("no backup found at {prefix}: it has no differential marker, no snapshot range and no log segment")]
    NotABackup {
        /// The backup prefix.
        prefix: String,
    },
    /// The backup exists but has no `differential` marker yet: its initial snapshot is not
    /// complete, so no state can be restored from it yet.
    #[error("the backup at {prefix} is not ready: it has no differential marker yet (the initial snapshot is still being written)")]
    NotReady {
        /// The backup prefix.
        prefix: String,
    },
    /// The manifest has a format this build does not know.
    #[error("backup manifest {object} has format {format}; this build reads format {supported}")]
    UnsupportedManifest {
        /// Full path of the manifest.
        object: String,
        /// The manifest's format number.
        format: u32,
        /// The format this build understands.
        supported: u32,
    },
    /// The logs do not reach the differential versionstamp, so not even the first consistent
    /// point can be rebuilt.
    #[error("the logs of the backup at {prefix} end at {logs_end}, before its first consistent point {differential}: log segments are missing or not written yet")]
    LogsIncomplete {
        /// The backup prefix.
        prefix: String,
        /// The differential versionstamp.
        differential: Versionstamp,
        /// Hex of the last 12-byte versionstamp in the logs ("nothing" if there are none).
        logs_end: String,
    },
    /// The requested target is before the first consistent point of the backup.
    #[error("{target} is before the first consistent point of the backup ({first}); earlier states cannot be restored")]
    BeforeFirstPoint {
        /// The requested target, as text.
        target: String,
        /// The first recovery point.
        first: RecoveryPoint,
    },
    /// A complete checkpoint (one with a `checkpoint.json`) is damaged or contradicts the
    /// backup. Restores do not silently fall back to an older checkpoint: delete the
    /// checkpoint's folder, or read the backup with [`BackupReader::with_checkpoints`]`(false)`,
    /// to restore from older data (slower: more of the log is replayed).
    #[error("checkpoint {dir} cannot be used: {source}; delete that folder (or restore without checkpoints) to restore from an older checkpoint or the initial snapshot instead")]
    Checkpoint {
        /// The checkpoint's `monoseq`.
        monoseq: u64,
        /// Full path of the checkpoint's folder.
        dir: String,
        /// What is wrong.
        #[source]
        source: Box<ConsumerError>,
    },
    /// The requested target is after the latest recovery point of the backup.
    #[error("{target} is after the latest recovery point of the backup ({latest})")]
    BeyondLatest {
        /// The requested target, as text.
        target: String,
        /// The latest recovery point.
        latest: RecoveryPoint,
    },
}

impl From<StoreError> for ConsumerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Missing { object } => ConsumerError::Missing { object },
            StoreError::Access { object, source } => ConsumerError::Store { object, source },
            StoreError::Corrupt { object, source } => ConsumerError::Corrupt { object, source },
            StoreError::ForeignObject { object, source } => {
                ConsumerError::ForeignObject { object, source }
            }
        }
    }
}

/// A consistent state of the backed-up database that can be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// Versionstamp of the last commit included.
    pub versionstamp: Versionstamp,
    /// Wall-clock time of that state (ms since the Unix epoch), as recorded by the log segment
    /// holding the commit; see [`BackupReader::recovery_points`].
    pub timestamp_ms: u64,
}

impl RecoveryPoint {
    /// The time as RFC 3339 text with milliseconds (`2026-01-02T03:04:05.678Z`).
    pub fn time_rfc3339(&self) -> String {
        format_time_ms(self.timestamp_ms)
    }
}

impl std::fmt::Display for RecoveryPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.versionstamp, self.time_rfc3339())
    }
}

/// Formats ms since the Unix epoch as RFC 3339 UTC text with milliseconds.
pub fn format_time_ms(ms: u64) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
    {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{ms} ms"),
    }
}

/// Who wrote a backup, which decides how strictly its listing is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// Written by this crate (has `kv-pitr.json`): segments have contiguous `monoseq`
    /// numbers, so a missing segment is detected.
    KvPitr(BackupManifest),
    /// No manifest (e.g. written by Deno Deploy): segments modified after a listing started
    /// are ignored by that listing (they may be racing with earlier, not yet visible ones).
    Foreign,
}

/// The structure of a backup, listed and checked (no object content read except the
/// differential marker and the manifest).
#[derive(Clone, Debug)]
pub struct BackupLayout {
    /// The differential versionstamp: the first consistent point.
    pub differential: Versionstamp,
    /// Who wrote the backup.
    pub kind: BackupKind,
    /// Snapshot ranges to load, in order.
    pub snapshot_ranges: Vec<SnapshotRangeKey>,
    /// Log segments, in order (after the compacted ones, if the backup was compacted).
    pub logs: Vec<LogObject>,
    /// The compaction marker, if the log before a checkpoint was deleted
    /// (see [`crate::compact`]).
    pub compaction: Option<crate::compact::Compaction>,
}

impl BackupLayout {
    /// Versionstamp of the source database when its snapshot started (from our manifest).
    pub fn snapshot_start(&self) -> Option<Versionstamp> {
        match &self.kind {
            BackupKind::KvPitr(m) => m.snapshot_start.parse().ok(),
            BackupKind::Foreign => None,
        }
    }
}

/// A summary of a backup.
#[derive(Clone, Debug)]
pub struct BackupInfo {
    /// The differential versionstamp.
    pub differential: Versionstamp,
    /// Our manifest, if the backup has one.
    pub manifest: Option<BackupManifest>,
    /// Number of snapshot ranges.
    pub snapshot_ranges: usize,
    /// Number of log segments.
    pub log_segments: usize,
    /// Total size of all log segments, in bytes.
    pub log_bytes: u64,
    /// Number of recovery points.
    pub recovery_points: usize,
    /// The first consistent point.
    pub first_point: RecoveryPoint,
    /// The latest recovery point.
    pub latest_point: RecoveryPoint,
}

/// A complete checkpoint of a backup (see [`format::CheckpointManifest`]): its manifest was
/// read and checked, and its range objects were listed (their content is checked when they
/// are downloaded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The manifest (`checkpoint.json`).
    pub manifest: CheckpointManifest,
    /// Versionstamp of the database when the checkpoint started: log entries after it are
    /// replayed on top of the ranges.
    pub snapshot_start: Versionstamp,
    /// Versionstamp from which states restored from the checkpoint are consistent.
    pub snapshot_end: Versionstamp,
    /// The range objects, `seq` 0, 1, … in order.
    pub ranges: Vec<SnapshotRangeKey>,
}

/// Reads a backup under `prefix` of an object store.
///
/// Cloning is cheap (the store is shared).
#[derive(Clone, Debug)]
pub struct BackupReader {
    store: BackupStore,
    concurrency: usize,
    use_checkpoints: bool,
}

impl BackupReader {
    /// A reader of the backup under `prefix` (`Path::default()` for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        BackupReader {
            store: BackupStore::new(store, prefix),
            concurrency: DEFAULT_FETCH_CONCURRENCY,
            use_checkpoints: true,
        }
    }

    /// Whether restores start from the newest suitable checkpoint (the default) or always
    /// from the initial snapshot (replaying the whole log; e.g. to get around a damaged
    /// checkpoint).
    pub fn with_checkpoints(mut self, use_them: bool) -> Self {
        self.use_checkpoints = use_them;
        self
    }

    /// Whether restores may start from a checkpoint; see [`BackupReader::with_checkpoints`].
    pub fn uses_checkpoints(&self) -> bool {
        self.use_checkpoints
    }

    /// Sets how many objects are downloaded at the same time (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.store.store()
    }

    /// The backup prefix.
    pub fn prefix(&self) -> &Path {
        self.store.prefix()
    }

    /// The store access layer this reader reads through.
    pub fn backup_store(&self) -> &BackupStore {
        &self.store
    }

    fn prefix_text(&self) -> String {
        self.store.describe()
    }

    /// The differential versionstamp (from which the logs are complete), or `None` if the
    /// marker does not exist yet.
    pub async fn differential(&self) -> Result<Option<Versionstamp>, ConsumerError> {
        Ok(self.store.read_differential().await?)
    }

    /// Our manifest, or `None` for backups without one (Deno Deploy's).
    pub async fn manifest(&self) -> Result<Option<BackupManifest>, ConsumerError> {
        let Some(m) = self.store.read_manifest().await? else {
            return Ok(None);
        };
        let path = format::manifest_path(self.prefix());
        if m.format != BackupManifest::FORMAT {
            return Err(ConsumerError::UnsupportedManifest {
                object: path.to_string(),
                format: m.format,
                supported: BackupManifest::FORMAT,
            });
        }
        for (field, text) in [
            ("snapshot_start", &m.snapshot_start),
            ("snapshot_end", &m.snapshot_end),
        ] {
            if text.parse::<Versionstamp>().is_err() {
                return Err(ConsumerError::Inconsistent {
                    object: path.to_string(),
                    reason: format!("{field} {text:?} is not a 20-hex-digit versionstamp"),
                });
            }
        }
        Ok(Some(m))
    }

    /// All snapshot ranges, in name order (not checked for completeness; see
    /// [`BackupReader::layout`]).
    pub async fn list_snapshot_ranges(&self) -> Result<Vec<SnapshotRangeKey>, ConsumerError> {
        Ok(self.store.list_snapshot_ranges().await?)
    }

    /// Log segments after `after` (all if `None`), in log order. Not checked for gaps; see
    /// [`BackupReader::layout`] and [`BackupReader::logs_after`].
    pub async fn list_logs(
        &self,
        after: Option<&LogSegmentKey>,
    ) -> Result<Vec<LogObject>, ConsumerError> {
        Ok(self.store.list_logs(after).await?)
    }

    /// Log segments after `after`, checked for this kind of backup: with our manifest,
    /// `monoseq` numbers must continue without a gap (from `after`, or from the first segment
    /// of the backup when `after` is `None`); without it, the list stops before the first
    /// segment modified after the listing began (the reference consumer's guard against
    /// listing races).
    pub async fn logs_after(
        &self,
        kind: &BackupKind,
        after: Option<&LogSegmentKey>,
    ) -> Result<Vec<LogObject>, ConsumerError> {
        let listing_started = Utc::now();
        let mut logs = self.list_logs(after).await?;
        match kind {
            BackupKind::KvPitr(_) => {
                walker::check_log_sequence(&self.store, after.copied(), &logs)?
            }
            BackupKind::Foreign => {
                if let Some(cut) = logs.iter().position(|o| o.last_modified > listing_started) {
                    logs.truncate(cut);
                }
            }
        }
        Ok(logs)
    }

    /// Lists the whole backup and checks its structure: the differential marker exists, the
    /// manifest (if any) is valid, snapshot ranges are complete (`seq` contiguous from 0 in
    /// each snapshot; with our manifest only the manifest's snapshot is used) and log
    /// segments are complete (see [`BackupReader::logs_after`]).
    pub async fn layout(&self) -> Result<BackupLayout, ConsumerError> {
        self.layout_inner(true).await
    }

    /// [`BackupReader::layout`] without the completeness check of the log segments of our
    /// backups (restores check only the segments they need, with
    /// [`BackupReader::split_logs`]).
    pub(crate) async fn restore_layout(&self) -> Result<BackupLayout, ConsumerError> {
        self.layout_inner(false).await
    }

    async fn layout_inner(&self, check_logs: bool) -> Result<BackupLayout, ConsumerError> {
        let (differential, manifest, ranges, compaction) = futures::try_join!(
            self.differential(),
            self.manifest(),
            self.list_snapshot_ranges(),
            crate::compact::read_compaction(self)
        )?;
        let kind = match manifest {
            Some(m) => BackupKind::KvPitr(m),
            None => BackupKind::Foreign,
        };
        let compacted_through = compaction
            .as_ref()
            .and_then(crate::compact::Compaction::through_key);
        let logs = match &kind {
            BackupKind::KvPitr(_) if !check_logs => {
                // Segments left by an interrupted compaction are ignored.
                let mut logs = self.list_logs(None).await?;
                if let Some(t) = &compacted_through {
                    logs.retain(|o| o.key.monoseq > t.monoseq);
                }
                logs
            }
            BackupKind::KvPitr(_) if compacted_through.is_some() => {
                let t = compacted_through;
                let mut logs = self.list_logs(None).await?;
                logs.retain(|o| t.is_none_or(|t| o.key.monoseq > t.monoseq));
                walker::check_log_sequence(&self.store, t, &logs)?;
                logs
            }
            _ => self.logs_after(&kind, None).await?,
        };
        let Some(differential) = differential else {
            if ranges.is_empty() && logs.is_empty() && kind == BackupKind::Foreign {
                return Err(ConsumerError::NotABackup {
                    prefix: self.prefix_text(),
                });
            }
            return Err(ConsumerError::NotReady {
                prefix: self.prefix_text(),
            });
        };
        let snapshot_ranges = match &kind {
            BackupKind::KvPitr(m) => {
                let end: Versionstamp = m.snapshot_end.parse().unwrap_or_default();
                if end != differential {
                    return Err(ConsumerError::Inconsistent {
                        object: format::differential_path(self.prefix()).to_string(),
                        reason: format!(
                            "it says {differential} but the manifest's snapshot_end is {end}"
                        ),
                    });
                }
                let mine: Vec<SnapshotRangeKey> = ranges
                    .into_iter()
                    .filter(|k| k.monoseq == m.initial_snapshot_monoseq)
                    .collect();
                if mine.is_empty() {
                    return Err(ConsumerError::MissingSnapshotRanges {
                        prefix: self.prefix_text(),
                        monoseq: m.initial_snapshot_monoseq,
                        expected_seq: 0,
                        found: "no range of that snapshot".into(),
                    });
                }
                mine
            }
            BackupKind::Foreign => {
                if ranges.is_empty() {
                    return Err(ConsumerError::MissingSnapshotRanges {
                        prefix: self.prefix_text(),
                        monoseq: 0,
                        expected_seq: 0,
                        found: "no snapshot range at all".into(),
                    });
                }
                ranges
            }
        };
        let mut expected: Option<(u64, u64)> = None;
        for k in &snapshot_ranges {
            let want = match expected {
                Some((monoseq, seq)) if monoseq == k.monoseq => seq,
                _ => 0,
            };
            if k.seq != want {
                return Err(ConsumerError::MissingSnapshotRanges {
                    prefix: self.prefix_text(),
                    monoseq: k.monoseq,
                    expected_seq: want,
                    found: k.to_string(),
                });
            }
            expected = Some((k.monoseq, want.saturating_add(1)));
        }
        Ok(BackupLayout {
            differential,
            kind,
            snapshot_ranges,
            logs,
            compaction,
        })
    }

    /// The complete checkpoints of a backup (see [`format::CheckpointManifest`]), oldest
    /// first. Folders without `checkpoint.json` (being written, or left by a crash) are
    /// ignored, and so is a checkpoint deleted while it is listed (the producer deletes old
    /// ones, manifest first). Reads every complete checkpoint's manifest; range contents are
    /// not read.
    ///
    /// A complete checkpoint that is inconsistent (unreadable manifest, ranges missing or
    /// extra, a start before the backup's differential point, …) is an error
    /// ([`ConsumerError::Checkpoint`]) rather than skipped, so damage is noticed. A checkpoint
    /// created before the backup's manifest (left by an earlier backup under the same prefix)
    /// is ignored with a warning.
    pub async fn checkpoints(
        &self,
        layout: &BackupLayout,
    ) -> Result<Vec<Checkpoint>, ConsumerError> {
        let dirs = self.store.list_checkpoints().await?;
        let mut out = Vec::new();
        for (monoseq, listing) in dirs {
            if !listing.has_manifest {
                continue;
            }
            match self.check_checkpoint(layout, monoseq, listing).await {
                Ok(Some(c)) => {
                    let backup_created = match &layout.kind {
                        BackupKind::KvPitr(m) => m.created_at_ms,
                        BackupKind::Foreign => 0,
                    };
                    if c.manifest.created_at_ms < backup_created {
                        // Left by an earlier backup under the same prefix (whose other
                        // objects were deleted): its versionstamps mean nothing here. The
                        // producer's retention removes it eventually.
                        tracing::warn!(
                            monoseq,
                            "ignoring checkpoint {monoseq} of {}: it is older than the backup itself",
                            self.prefix_text()
                        );
                        continue;
                    }
                    out.push(c)
                }
                Ok(None) => {}
                Err(e) => {
                    if self.checkpoint_exists(monoseq).await? {
                        return Err(self.checkpoint_error(monoseq, e));
                    }
                    tracing::debug!(monoseq, "checkpoint deleted while listed; ignored");
                }
            }
        }
        Ok(out)
    }

    /// Wraps a problem with a checkpoint's objects into [`ConsumerError::Checkpoint`].
    pub(crate) fn checkpoint_error(&self, monoseq: u64, source: ConsumerError) -> ConsumerError {
        ConsumerError::Checkpoint {
            monoseq,
            dir: format!(
                "{}/{}/",
                self.store.store(),
                format::checkpoint_dir(self.prefix(), monoseq)
            ),
            source: Box::new(source),
        }
    }

    /// Whether the manifest of checkpoint `monoseq` (still) exists.
    pub async fn checkpoint_exists(&self, monoseq: u64) -> Result<bool, ConsumerError> {
        let path = format::checkpoint_manifest_path(self.prefix(), monoseq);
        Ok(self.store.exists(&path).await?)
    }

    /// Reads and checks one checkpoint's manifest against its listing and the backup.
    /// `None`: the manifest disappeared (deleted meanwhile).
    async fn check_checkpoint(
        &self,
        layout: &BackupLayout,
        monoseq: u64,
        mut listing: CheckpointListing,
    ) -> Result<Option<Checkpoint>, ConsumerError> {
        let path = format::checkpoint_manifest_path(self.prefix(), monoseq);
        let Some(manifest) = self.store.read_checkpoint_manifest(monoseq).await? else {
            return Ok(None);
        };
        let inconsistent = |reason: String| ConsumerError::Inconsistent {
            object: path.to_string(),
            reason,
        };
        if manifest.format != CheckpointManifest::FORMAT {
            return Err(ConsumerError::UnsupportedManifest {
                object: path.to_string(),
                format: manifest.format,
                supported: CheckpointManifest::FORMAT,
            });
        }
        if manifest.monoseq != monoseq {
            return Err(inconsistent(format!(
                "it names checkpoint {} but sits in the folder of checkpoint {monoseq}",
                manifest.monoseq
            )));
        }
        let parse = |field: &str, text: &str| {
            text.parse::<Versionstamp>().map_err(|_| {
                inconsistent(format!(
                    "{field} {text:?} is not a 20-hex-digit versionstamp"
                ))
            })
        };
        let snapshot_start = parse("snapshot_start", &manifest.snapshot_start)?;
        let snapshot_end = parse("snapshot_end", &manifest.snapshot_end)?;
        if snapshot_start > snapshot_end {
            return Err(inconsistent(format!(
                "its snapshot_start {snapshot_start} is after its snapshot_end {snapshot_end}"
            )));
        }
        if snapshot_start < layout.differential {
            return Err(inconsistent(format!(
                "its snapshot_start {snapshot_start} is before the backup's differential point {}",
                layout.differential
            )));
        }
        if let Some(e) = listing.foreign.take() {
            return Err(e.into());
        }
        listing.ranges.sort();
        for (i, key) in listing.ranges.iter().enumerate() {
            let expected = i as u64;
            if key.monoseq != monoseq || key.format_version != format::FORMAT_VERSION {
                return Err(ConsumerError::Inconsistent {
                    object: format::checkpoint_snapshot_path(self.prefix(), key).to_string(),
                    reason: format!("its name does not belong to checkpoint {monoseq}"),
                });
            }
            if key.seq != expected {
                return Err(ConsumerError::MissingSnapshotRanges {
                    prefix: self.prefix_text(),
                    monoseq,
                    expected_seq: expected,
                    found: key.to_string(),
                });
            }
        }
        let listed = listing.ranges.len() as u64;
        if listed < manifest.ranges {
            return Err(ConsumerError::MissingSnapshotRanges {
                prefix: self.prefix_text(),
                monoseq,
                expected_seq: listed,
                found: format!(
                    "{listed} of the {} ranges its manifest lists",
                    manifest.ranges
                ),
            });
        }
        if listed == 0 {
            return Err(inconsistent(
                "it has no range (a checkpoint always has range 0)".into(),
            ));
        }
        if listed > manifest.ranges {
            return Err(inconsistent(format!(
                "it lists {} ranges but the folder holds {listed}",
                manifest.ranges
            )));
        }
        Ok(Some(Checkpoint {
            manifest,
            snapshot_start,
            snapshot_end,
            ranges: listing.ranges,
        }))
    }

    /// Downloads and decodes one range of a checkpoint (checksum verified when present).
    pub async fn fetch_checkpoint_range(
        &self,
        key: &SnapshotRangeKey,
    ) -> Result<Vec<ExportEntry>, ConsumerError> {
        Ok(self.store.fetch_checkpoint_range(key).await?)
    }

    /// Runs `fetch` for every key, up to the reader's concurrency at once; results come in
    /// the order of `keys`.
    fn fetch_in_order<K, T, F, Fut>(
        &self,
        keys: Vec<K>,
        fetch: F,
    ) -> BoxStream<'static, Result<(K, T), ConsumerError>>
    where
        K: Send + 'static,
        T: Send + 'static,
        F: Fn(BackupReader, K) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(K, T), ConsumerError>> + Send + 'static,
    {
        let reader = self.clone();
        stream::iter(keys)
            .map(move |k| fetch(reader.clone(), k))
            .buffered(self.concurrency)
            .boxed()
    }

    /// Downloads ranges of a checkpoint concurrently; results come in the order of `keys`.
    pub fn fetch_checkpoint_ranges(
        &self,
        keys: Vec<SnapshotRangeKey>,
    ) -> BoxStream<'static, Result<(SnapshotRangeKey, Vec<ExportEntry>), ConsumerError>> {
        self.fetch_in_order(keys, |reader, k| async move {
            reader.fetch_checkpoint_range(&k).await.map(|e| (k, e))
        })
    }

    /// Downloads and decodes one snapshot range (checksum verified when present).
    pub async fn fetch_snapshot_range(
        &self,
        key: &SnapshotRangeKey,
    ) -> Result<Vec<ExportEntry>, ConsumerError> {
        Ok(self.store.fetch_snapshot_range(key).await?)
    }

    /// Downloads and decodes one log segment (checksum verified when present) and checks
    /// that its first and last entries are the ones its name announces.
    pub async fn fetch_log(&self, key: &LogSegmentKey) -> Result<LogSegment, ConsumerError> {
        Ok(self.store.fetch_log(key).await?)
    }

    /// Downloads snapshot ranges concurrently; results come in the order of `keys`.
    pub fn fetch_snapshot_ranges(
        &self,
        keys: Vec<SnapshotRangeKey>,
    ) -> BoxStream<'static, Result<(SnapshotRangeKey, Vec<ExportEntry>), ConsumerError>> {
        self.fetch_in_order(keys, |reader, k| async move {
            reader.fetch_snapshot_range(&k).await.map(|e| (k, e))
        })
    }

    /// Downloads log segments concurrently; results come in the order of `keys`.
    pub fn fetch_logs(
        &self,
        keys: Vec<LogSegmentKey>,
    ) -> BoxStream<'static, Result<(LogSegmentKey, LogSegment), ConsumerError>> {
        self.fetch_in_order(keys, |reader, k| async move {
            reader.fetch_log(&k).await.map(|s| (k, s))
        })
    }

    /// The segment's skeleton from the log index if there is one, else the segment.
    async fn log_or_skeleton(
        &self,
        key: LogSegmentKey,
        skeleton: Option<LogSegment>,
    ) -> Result<(LogSegmentKey, LogSegment), ConsumerError> {
        match skeleton {
            Some(seg) => Ok((key, seg)),
            None => self.fetch_log(&key).await.map(|seg| (key, seg)),
        }
    }

    /// Returns all recovery points of a checked layout, oldest first, from the log index
    /// where it describes a segment and from the segment itself otherwise (see
    /// [`crate::log_index`]). The first is always the differential versionstamp.
    pub async fn all_recovery_points(
        &self,
        layout: &BackupLayout,
    ) -> Result<Vec<RecoveryPoint>, ConsumerError> {
        let mut walker = LogWalker::new(layout);
        let mut points = Vec::new();
        // A compacted backup starts at its new first point, after the deleted segments.
        let compacted = layout.compaction.as_ref().and_then(|c| {
            let first = c.first()?;
            walker.skip(&c.through_key()?);
            walker.take_first_point();
            Some(first)
        });
        if let Some(first) = compacted {
            points.push(first);
        }
        let index = crate::log_index::LogIndex::read(&self.store).await;
        let items: Vec<(LogSegmentKey, Option<LogSegment>)> = layout
            .logs
            .iter()
            .map(|o| (o.key, index.skeleton(&o.key)))
            .collect();
        drop(index);
        let mut segments = futures::stream::iter(items)
            .map(|(key, skeleton)| self.log_or_skeleton(key, skeleton))
            .buffered(self.concurrency);
        while let Some(item) = segments.next().await {
            let (key, seg) = item?;
            for txn in walker.push(&key, seg) {
                if compacted.is_some_and(|f| txn.versionstamp <= f.versionstamp) {
                    continue;
                }
                if txn.versionstamp > layout.differential {
                    if let Some(first) = walker.take_first_point() {
                        points.push(first);
                    }
                    points.push(RecoveryPoint {
                        versionstamp: txn.versionstamp,
                        timestamp_ms: txn.timestamp_ms,
                    });
                }
            }
        }
        walker.check_reached_differential(&self.store)?;
        if let Some(first) = walker.take_first_point() {
            points.push(first);
        }
        Ok(points)
    }

    /// Recovery points whose time is in `[start_ms, end_ms)` (unbounded where `None`), newest
    /// first. Reads the log index, and only the segments it does not describe.
    ///
    /// A point's time is the time of the log segment holding its commit; should segment
    /// times ever go backwards, a point's time is the largest time seen so far in log order,
    /// so times never decrease along the log. The first point (the differential versionstamp)
    /// takes the time of the newest segment holding commits up to it; if there is none, the
    /// earlier of the manifest's creation time and the first segment's time.
    pub async fn recovery_points(
        &self,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
    ) -> Result<Vec<RecoveryPoint>, ConsumerError> {
        let layout = self.layout().await?;
        let mut points = self.all_recovery_points(&layout).await?;
        points.retain(|p| {
            start_ms.is_none_or(|s| p.timestamp_ms >= s)
                && end_ms.is_none_or(|e| p.timestamp_ms < e)
        });
        points.reverse();
        Ok(points)
    }

    /// A summary of the backup. Reads the log index, and only the segments it does not
    /// describe.
    pub async fn info(&self) -> Result<BackupInfo, ConsumerError> {
        let layout = self.layout().await?;
        let points = self.all_recovery_points(&layout).await?;
        let (Some(first), Some(latest)) = (points.first().copied(), points.last().copied()) else {
            // all_recovery_points always yields the first point.
            return Err(ConsumerError::NotReady {
                prefix: self.prefix_text(),
            });
        };
        Ok(BackupInfo {
            differential: layout.differential,
            manifest: match &layout.kind {
                BackupKind::KvPitr(m) => Some(m.clone()),
                BackupKind::Foreign => None,
            },
            snapshot_ranges: layout.snapshot_ranges.len(),
            log_segments: layout.logs.len(),
            log_bytes: layout.logs.iter().map(|o| o.size).sum(),
            recovery_points: points.len(),
            first_point: first,
            latest_point: latest,
        })
    }

    /// Splits the listed segments of a layout into those not needed after `start` and the
    /// checked rest; see [`walker::split_logs`].
    pub(crate) fn split_logs(
        &self,
        layout: &BackupLayout,
        start: Option<Vs12>,
    ) -> Result<(Vec<LogObject>, Vec<LogObject>), ConsumerError> {
        walker::split_logs(&self.store, layout, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_text() {
        assert_eq!(
            format_time_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
