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
//! Our backups may also hold checkpoints (`checkpoints/{monoseq:016x}/`, full snapshots
//! taken while the backup runs): [`BackupReader::checkpoints`] lists the complete ones and
//! checks them like the initial snapshot.
//!
//! Only transaction boundaries (log entries whose 12-byte versionstamp ends in `ff ff`) at or
//! after the differential versionstamp are consistent states: those are the
//! [`RecoveryPoint`]s. The differential versionstamp itself is always the first one.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use kv_traits::Versionstamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::format::{
    self, BackupManifest, CheckpointManifest, ExportEntry, FormatError, LogEntry, LogSegment,
    LogSegmentKey, SnapshotRangeKey, Vs12,
};

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

/// One listed log segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogObject {
    /// The segment's name.
    pub key: LogSegmentKey,
    /// Size in bytes.
    pub size: u64,
    /// When the store last modified it.
    pub last_modified: DateTime<Utc>,
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
    /// Log segments, in order.
    pub logs: Vec<LogObject>,
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

/// The objects listed in one checkpoint folder.
#[derive(Default)]
struct CheckpointListing {
    has_manifest: bool,
    ranges: Vec<SnapshotRangeKey>,
    /// The first object that is neither the manifest nor a range.
    foreign: Option<ConsumerError>,
}

/// Reads a backup under `prefix` of an object store.
///
/// Cloning is cheap (the store is shared).
#[derive(Clone, Debug)]
pub struct BackupReader {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    concurrency: usize,
    use_checkpoints: bool,
}

impl BackupReader {
    /// A reader of the backup under `prefix` (`Path::default()` for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        BackupReader {
            store,
            prefix,
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
        &self.store
    }

    /// The backup prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn prefix_text(&self) -> String {
        format!("{}/{}", self.store, self.prefix)
    }

    async fn get_optional(&self, path: &Path) -> Result<Option<Bytes>, ConsumerError> {
        let res = match self.store.get(path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ConsumerError::Store {
                object: path.to_string(),
                source,
            }),
        }
    }

    async fn get_required(&self, path: &Path) -> Result<Bytes, ConsumerError> {
        self.get_optional(path)
            .await?
            .ok_or_else(|| ConsumerError::Missing {
                object: path.to_string(),
            })
    }

    /// The differential versionstamp (from which the logs are complete), or `None` if the
    /// marker does not exist yet.
    pub async fn differential(&self) -> Result<Option<Versionstamp>, ConsumerError> {
        let path = format::differential_path(&self.prefix);
        match self.get_optional(&path).await? {
            Some(body) => format::decode_differential(&body)
                .map(Some)
                .map_err(|source| ConsumerError::Corrupt {
                    object: path.to_string(),
                    source,
                }),
            None => Ok(None),
        }
    }

    /// Our manifest, or `None` for backups without one (Deno Deploy's).
    pub async fn manifest(&self) -> Result<Option<BackupManifest>, ConsumerError> {
        let path = format::manifest_path(&self.prefix);
        let Some(body) = self.get_optional(&path).await? else {
            return Ok(None);
        };
        let m = BackupManifest::from_bytes(&body).map_err(|source| ConsumerError::Corrupt {
            object: path.to_string(),
            source,
        })?;
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

    /// Lists the objects directly under `dir` (sorted by name), with a listing offset.
    async fn list_dir(
        &self,
        dir: &Path,
        offset: Option<&Path>,
    ) -> Result<Vec<object_store::ObjectMeta>, ConsumerError> {
        let listing = match offset {
            Some(o) => self.store.list_with_offset(Some(dir), o),
            None => self.store.list(Some(dir)),
        };
        let mut metas: Vec<object_store::ObjectMeta> =
            listing
                .try_collect()
                .await
                .map_err(|source| ConsumerError::Store {
                    object: dir.to_string(),
                    source,
                })?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }

    /// The name of a listed object if it sits directly under `dir` and ends in `.bin`.
    fn object_name<'a>(
        dir: &Path,
        meta: &'a object_store::ObjectMeta,
    ) -> Result<&'a str, ConsumerError> {
        let foreign = |reason: &'static str| ConsumerError::ForeignObject {
            object: meta.location.to_string(),
            source: FormatError::BadObjectName {
                name: meta.location.filename().unwrap_or_default().to_string(),
                reason,
            },
        };
        if meta.location.parts().count() != dir.parts().count() + 1 {
            return Err(foreign("objects must sit directly in the folder"));
        }
        let name = meta.location.filename().unwrap_or_default();
        name.strip_suffix(format::OBJECT_EXTENSION)
            .ok_or_else(|| foreign("the name does not end in .bin"))
    }

    /// All snapshot ranges, in name order (not checked for completeness; see
    /// [`BackupReader::layout`]).
    pub async fn list_snapshot_ranges(&self) -> Result<Vec<SnapshotRangeKey>, ConsumerError> {
        let dir = format::snapshots_dir(&self.prefix);
        let mut out = Vec::new();
        for meta in self.list_dir(&dir, None).await? {
            let name = Self::object_name(&dir, &meta)?;
            let key =
                SnapshotRangeKey::parse(name).map_err(|source| ConsumerError::ForeignObject {
                    object: meta.location.to_string(),
                    source,
                })?;
            out.push(key);
        }
        out.sort();
        Ok(out)
    }

    /// Log segments after `after` (all if `None`), in log order. Not checked for gaps; see
    /// [`BackupReader::layout`] and [`BackupReader::logs_after`].
    pub async fn list_logs(
        &self,
        after: Option<&LogSegmentKey>,
    ) -> Result<Vec<LogObject>, ConsumerError> {
        let dir = format::logs_dir(&self.prefix);
        let offset = after.map(|k| format::log_path(&self.prefix, k));
        let mut out = Vec::new();
        for meta in self.list_dir(&dir, offset.as_ref()).await? {
            let name = Self::object_name(&dir, &meta)?;
            let key =
                LogSegmentKey::parse(name).map_err(|source| ConsumerError::ForeignObject {
                    object: meta.location.to_string(),
                    source,
                })?;
            if after.is_some_and(|a| key <= *a) {
                continue;
            }
            out.push(LogObject {
                key,
                size: meta.size,
                last_modified: meta.last_modified,
            });
        }
        out.sort_by_key(|o| o.key);
        Ok(out)
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
            BackupKind::KvPitr(_) => self.check_log_sequence(after.copied(), &logs)?,
            BackupKind::Foreign => {
                if let Some(cut) = logs.iter().position(|o| o.last_modified > listing_started) {
                    logs.truncate(cut);
                }
            }
        }
        Ok(logs)
    }

    /// Checks that `logs` continue `prev` without a gap (`monoseq` + 1, no overlap), or start
    /// the backup's log when `prev` is `None`.
    fn check_log_sequence(
        &self,
        prev: Option<LogSegmentKey>,
        logs: &[LogObject],
    ) -> Result<(), ConsumerError> {
        let mut prev = prev;
        for obj in logs {
            if let Some(p) = &prev {
                let expected = p.monoseq.saturating_add(1);
                if obj.key.monoseq != expected {
                    return Err(ConsumerError::MissingLogSegments {
                        prefix: self.prefix_text(),
                        expected_monoseq: expected,
                        after: format!("after {p}"),
                        found: obj.key.to_string(),
                    });
                }
                if obj.key.first_vs12 <= p.last_vs12 {
                    return Err(ConsumerError::Inconsistent {
                        object: format::log_path(&self.prefix, &obj.key).to_string(),
                        reason: format!(
                            "it starts at {} but the previous segment {p} ends at {}",
                            hex::encode(obj.key.first_vs12),
                            hex::encode(p.last_vs12)
                        ),
                    });
                }
            } else if obj.key.monoseq != FIRST_LOG_MONOSEQ {
                return Err(ConsumerError::MissingLogSegments {
                    prefix: self.prefix_text(),
                    expected_monoseq: FIRST_LOG_MONOSEQ,
                    after: "first".into(),
                    found: obj.key.to_string(),
                });
            }
            prev = Some(obj.key);
        }
        Ok(())
    }

    /// Splits the listed segments of a layout from [`BackupReader::restore_layout`] into
    /// those wholly at or before `start` (not needed to rebuild states after `start`; they
    /// are not checked, and may even have been deleted) and the rest, which are checked: with
    /// our manifest, their `monoseq` numbers are contiguous and nothing is missing between
    /// `start` and the first of them (it is the backup's first segment, holds `start`
    /// itself, or its predecessor is listed). `None`: every segment is needed.
    pub(crate) fn split_logs(
        &self,
        layout: &BackupLayout,
        start: Option<Vs12>,
    ) -> Result<(Vec<LogObject>, Vec<LogObject>), ConsumerError> {
        let (before, needed): (Vec<LogObject>, Vec<LogObject>) = layout
            .logs
            .iter()
            .cloned()
            .partition(|o| start.is_some_and(|s| o.key.last_vs12 <= s));
        if let BackupKind::KvPitr(_) = layout.kind {
            if let Some(first) = needed.first() {
                if let Some(late) = before.iter().find(|o| o.key > first.key) {
                    return Err(ConsumerError::Inconsistent {
                        object: format::log_path(&self.prefix, &late.key).to_string(),
                        reason: format!("it comes after {} but ends before it", first.key),
                    });
                }
            }
            let prev = match needed.first() {
                None => None,
                Some(first) if first.key.monoseq == FIRST_LOG_MONOSEQ => None,
                Some(first) => match before.last() {
                    Some(p) if p.key.monoseq.saturating_add(1) == first.key.monoseq => Some(p.key),
                    _ if start.is_some_and(|s| {
                        next_vs12(&s).is_none_or(|next| first.key.first_vs12 <= next)
                    }) =>
                    {
                        // It starts at or before the first entry that can follow `start`:
                        // nothing after `start` can be in an earlier one.
                        self.check_log_sequence(
                            Some(first.key),
                            needed.get(1..).unwrap_or_default(),
                        )?;
                        return Ok((before, needed));
                    }
                    _ => {
                        return Err(ConsumerError::MissingLogSegments {
                            prefix: self.prefix_text(),
                            expected_monoseq: first.key.monoseq.saturating_sub(1),
                            after: format!(
                                "before {} (it may hold entries after {}, which are needed)",
                                first.key,
                                start.map_or_else(
                                    || "the start".to_string(),
                                    |s| format::vs10_of(&s).to_string()
                                )
                            ),
                            found: match before.last() {
                                Some(p) => format!("{} before it", p.key),
                                None => "no earlier segment".into(),
                            },
                        });
                    }
                },
            };
            self.check_log_sequence(prev, &needed)?;
        }
        Ok((before, needed))
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
        let (differential, manifest, ranges) = futures::try_join!(
            self.differential(),
            self.manifest(),
            self.list_snapshot_ranges()
        )?;
        let kind = match manifest {
            Some(m) => BackupKind::KvPitr(m),
            None => BackupKind::Foreign,
        };
        let logs = match &kind {
            BackupKind::KvPitr(_) if !check_logs => self.list_logs(None).await?,
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
                        object: format::differential_path(&self.prefix).to_string(),
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
        let dir = format::checkpoints_dir(&self.prefix);
        let mut dirs: std::collections::BTreeMap<u64, CheckpointListing> =
            std::collections::BTreeMap::new();
        for meta in self.list_dir(&dir, None).await? {
            let Some(m) = format::checkpoint_monoseq_of(&self.prefix, &meta.location) else {
                tracing::debug!(object = %meta.location, "ignoring an object outside any checkpoint folder");
                continue;
            };
            let entry = dirs.entry(m).or_default();
            if meta.location == format::checkpoint_manifest_path(&self.prefix, m) {
                entry.has_manifest = true;
                continue;
            }
            let ranges_dir = format::checkpoint_dir(&self.prefix, m).join(format::SNAPSHOTS);
            let parsed = if meta.location.prefix_matches(&ranges_dir) {
                Self::object_name(&ranges_dir, &meta).and_then(|name| {
                    SnapshotRangeKey::parse(name).map_err(|source| ConsumerError::ForeignObject {
                        object: meta.location.to_string(),
                        source,
                    })
                })
            } else {
                Err(ConsumerError::ForeignObject {
                    object: meta.location.to_string(),
                    source: FormatError::BadObjectName {
                        name: meta.location.filename().unwrap_or_default().to_string(),
                        reason: "a checkpoint folder holds only checkpoint.json and snapshots/",
                    },
                })
            };
            match parsed {
                Ok(key) => entry.ranges.push(key),
                Err(e) => {
                    entry.foreign.get_or_insert(e);
                }
            }
        }
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
                self.store,
                format::checkpoint_dir(&self.prefix, monoseq)
            ),
            source: Box::new(source),
        }
    }

    /// Whether the manifest of checkpoint `monoseq` (still) exists.
    pub async fn checkpoint_exists(&self, monoseq: u64) -> Result<bool, ConsumerError> {
        let path = format::checkpoint_manifest_path(&self.prefix, monoseq);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(ConsumerError::Store {
                object: path.to_string(),
                source,
            }),
        }
    }

    /// Reads and checks one checkpoint's manifest against its listing and the backup.
    /// `None`: the manifest disappeared (deleted meanwhile).
    async fn check_checkpoint(
        &self,
        layout: &BackupLayout,
        monoseq: u64,
        mut listing: CheckpointListing,
    ) -> Result<Option<Checkpoint>, ConsumerError> {
        let path = format::checkpoint_manifest_path(&self.prefix, monoseq);
        let Some(body) = self.get_optional(&path).await? else {
            return Ok(None);
        };
        let inconsistent = |reason: String| ConsumerError::Inconsistent {
            object: path.to_string(),
            reason,
        };
        let manifest =
            CheckpointManifest::from_bytes(&body).map_err(|source| ConsumerError::Corrupt {
                object: path.to_string(),
                source,
            })?;
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
            return Err(e);
        }
        listing.ranges.sort();
        for (i, key) in listing.ranges.iter().enumerate() {
            let expected = i as u64;
            if key.monoseq != monoseq || key.format_version != format::FORMAT_VERSION {
                return Err(ConsumerError::Inconsistent {
                    object: format::checkpoint_snapshot_path(&self.prefix, key).to_string(),
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
        self.fetch_range_at(format::checkpoint_snapshot_path(&self.prefix, key))
            .await
    }

    /// Downloads and decodes the snapshot range object at `path`.
    async fn fetch_range_at(&self, path: Path) -> Result<Vec<ExportEntry>, ConsumerError> {
        let body = self.get_required(&path).await?;
        format::decode_snapshot_range(&body).map_err(|source| ConsumerError::Corrupt {
            object: path.to_string(),
            source,
        })
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
        self.fetch_range_at(format::snapshot_path(&self.prefix, key))
            .await
    }

    /// Downloads and decodes one log segment (checksum verified when present) and checks
    /// that its first and last entries are the ones its name announces.
    pub async fn fetch_log(&self, key: &LogSegmentKey) -> Result<LogSegment, ConsumerError> {
        let path = format::log_path(&self.prefix, key);
        let body = self.get_required(&path).await?;
        let corrupt = |source| ConsumerError::Corrupt {
            object: path.to_string(),
            source,
        };
        let seg = format::decode_log_segment(&body).map_err(corrupt)?;
        format::check_segment_matches_key(&seg, key).map_err(corrupt)?;
        Ok(seg)
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

    /// Reads every log segment of a checked layout and returns all recovery points, oldest
    /// first. The first is always the differential versionstamp.
    pub async fn all_recovery_points(
        &self,
        layout: &BackupLayout,
    ) -> Result<Vec<RecoveryPoint>, ConsumerError> {
        let mut walker = LogWalker::new(layout);
        let mut points = Vec::new();
        let mut segments = self.fetch_logs(layout.logs.iter().map(|o| o.key).collect());
        while let Some(item) = segments.next().await {
            let (key, seg) = item?;
            for txn in walker.push(&key, seg) {
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
        walker.check_reached_differential(self)?;
        if let Some(first) = walker.take_first_point() {
            points.push(first);
        }
        Ok(points)
    }

    /// Recovery points whose time is in `[start_ms, end_ms)` (unbounded where `None`), newest
    /// first. Reads every log segment.
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

    /// A summary of the backup. Reads every log segment.
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

    pub(crate) fn prefix_for_errors(&self) -> String {
        self.prefix_text()
    }
}

/// The 12-byte versionstamp right after `v` (`None` after the largest one): no entry can lie
/// strictly between the two.
fn next_vs12(v: &Vs12) -> Option<Vs12> {
    let mut next = *v;
    for b in next.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(next);
        }
    }
    None
}

/// A backup location that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The text is not a supported location.
    #[error("invalid backup location {location:?}: {reason}")]
    Invalid {
        /// The location as given.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store could not be set up.
    #[error("cannot open the object store for {location:?}: {source}")]
    Store {
        /// The location as given.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

/// Opens the object store and prefix named by a backup location, for command-line tools:
///
/// - `s3://<bucket>/<prefix>`: S3 or an S3-compatible store. Credentials, region and other
///   settings come from the `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, ...);
///   `s3_endpoint` (e.g. `http://127.0.0.1:9000`) selects an S3-compatible server with
///   path-style requests (plain HTTP allowed for `http://` endpoints; unsigned requests if
///   `AWS_ACCESS_KEY_ID` is not set). Without an endpoint and without credentials in the
///   environment, the AWS SDK chain falls back to the instance metadata service.
/// - `file:///<folder>` or a plain folder path: a local folder (created if missing; objects
///   are fsynced).
pub fn open_store_url(
    location: &str,
    s3_endpoint: Option<&str>,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    let invalid = |reason: &str| StoreUrlError::Invalid {
        location: location.to_string(),
        reason: reason.to_string(),
    };
    let store_err = |source| StoreUrlError::Store {
        location: location.to_string(),
        source,
    };
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(
                "the bucket name is missing (s3://<bucket>/<prefix>)",
            ));
        }
        let prefix = Path::parse(prefix.trim_end_matches('/'))
            .map_err(|e| invalid(&format!("bad prefix: {e}")))?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
            // An S3-compatible server has no AWS instance metadata service: without
            // credentials in the environment, send unsigned requests instead of asking it.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                builder = builder.with_skip_signature(true);
            }
        }
        let store = builder.build().map_err(store_err)?;
        return Ok((Arc::new(store), prefix));
    }
    let folder = match location.strip_prefix("file://") {
        Some(p) => p,
        None if location.contains("://") => return Err(invalid(
            "unsupported scheme (use s3://<bucket>/<prefix>, file:///<folder> or a folder path)",
        )),
        None => location,
    };
    if folder.is_empty() {
        return Err(invalid("the folder is missing"));
    }
    std::fs::create_dir_all(folder)
        .map_err(|e| invalid(&format!("cannot create the folder: {e}")))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
        .map_err(store_err)?
        .with_fsync(true);
    Ok((Arc::new(store), Path::default()))
}

/// The `monoseq` of the first log segment of a backup written by this crate.
pub const FIRST_LOG_MONOSEQ: u64 = 1;

/// One complete transaction of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The commit's versionstamp.
    pub versionstamp: Versionstamp,
    /// Time of the segment holding its boundary entry (never less than earlier ones).
    pub timestamp_ms: u64,
    /// Its entries, in order (the last one is the boundary).
    pub entries: Vec<LogEntry>,
}

/// Turns a sequence of log segments into complete transactions, skipping entries already
/// seen (overlapping segments) and keeping a transaction whose boundary is in a later
/// segment until that segment arrives.
#[derive(Clone, Debug)]
pub(crate) struct LogWalker {
    differential: Versionstamp,
    manifest_created_ms: Option<u64>,
    /// Entries after the last boundary seen.
    pending: Vec<LogEntry>,
    /// The greatest vs12 seen.
    pub(crate) last_vs12: Option<Vs12>,
    /// Largest segment time seen.
    ts_max: u64,
    /// Largest time of a transaction at or before the differential versionstamp.
    ts_at_differential: Option<u64>,
    /// Time of the first segment (fallback time of the first point).
    first_segment_ts: Option<u64>,
    /// The first point, until it is taken.
    first_point_pending: bool,
    /// Last segment pushed.
    pub(crate) cursor: Option<LogSegmentKey>,
}

impl LogWalker {
    pub(crate) fn new(layout: &BackupLayout) -> Self {
        LogWalker {
            differential: layout.differential,
            manifest_created_ms: match &layout.kind {
                BackupKind::KvPitr(m) => Some(m.created_at_ms),
                BackupKind::Foreign => None,
            },
            pending: Vec::new(),
            last_vs12: None,
            ts_max: 0,
            ts_at_differential: None,
            first_segment_ts: None,
            first_point_pending: true,
            cursor: None,
        }
    }

    /// Continues after a known position: `applied` is the last applied boundary, `cursor` the
    /// last segment consumed and `pending` the entries after `applied` already read.
    pub(crate) fn resume(
        layout: &BackupLayout,
        cursor: Option<LogSegmentKey>,
        applied: Versionstamp,
        pending: Vec<LogEntry>,
    ) -> Self {
        let mut w = LogWalker::new(layout);
        w.first_point_pending = false;
        w.cursor = cursor;
        w.last_vs12 = Some(
            pending
                .last()
                .map(|e| e.vs12)
                .unwrap_or_else(|| format::boundary_of(&applied)),
        );
        w.pending = pending;
        w
    }

    /// Records that a segment was passed over without reading it (it lies wholly before
    /// the snapshot, so its entries are not needed).
    pub(crate) fn skip(&mut self, key: &LogSegmentKey) {
        self.cursor = Some(*key);
        self.last_vs12 = Some(
            self.last_vs12
                .map_or(key.last_vs12, |l| l.max(key.last_vs12)),
        );
    }

    /// Feeds one segment; returns the transactions it completes.
    pub(crate) fn push(&mut self, key: &LogSegmentKey, seg: LogSegment) -> Vec<Transaction> {
        self.cursor = Some(*key);
        self.first_segment_ts.get_or_insert(seg.timestamp_ms);
        self.ts_max = self.ts_max.max(seg.timestamp_ms);
        let last = self.last_vs12;
        let mut entries = std::mem::take(&mut self.pending);
        entries.extend(
            seg.entries
                .into_iter()
                .filter(|e| last.is_none_or(|l| e.vs12 > l)),
        );
        if let Some(e) = entries.last() {
            self.last_vs12 = Some(self.last_vs12.map_or(e.vs12, |l| l.max(e.vs12)));
        }
        let (done, rest) = format::group_transactions(entries);
        self.pending = rest;
        let ts = self.ts_max;
        done.into_iter()
            .map(|(versionstamp, entries)| {
                if versionstamp <= self.differential {
                    self.ts_at_differential = Some(ts);
                }
                Transaction {
                    versionstamp,
                    timestamp_ms: ts,
                    entries,
                }
            })
            .collect()
    }

    /// The time of the first point (the differential versionstamp).
    fn differential_time(&self) -> u64 {
        if let Some(t) = self.ts_at_differential {
            return t;
        }
        // No commit up to the differential point is in the logs: the state at it was current
        // when the backup was created and until the first logged commit.
        match (self.manifest_created_ms, self.first_segment_ts) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        }
    }

    /// The first point, once: call it before handling each transaction after the
    /// differential versionstamp (and at the end); it is returned the first time a
    /// transaction after the differential versionstamp is about to be handled.
    pub(crate) fn take_first_point(&mut self) -> Option<RecoveryPoint> {
        if !self.first_point_pending {
            return None;
        }
        self.first_point_pending = false;
        Some(RecoveryPoint {
            versionstamp: self.differential,
            timestamp_ms: self.differential_time(),
        })
    }

    /// For backups without our manifest, the logs must reach the differential versionstamp:
    /// otherwise the state at it cannot be rebuilt (segments missing or not written yet).
    pub(crate) fn check_reached_differential(
        &self,
        reader: &BackupReader,
    ) -> Result<(), ConsumerError> {
        if self.manifest_created_ms.is_some() {
            // Our producer writes the marker only after the segments up to it are stored,
            // and segment gaps are detected by monoseq.
            return Ok(());
        }
        let target = format::boundary_of(&self.differential);
        match self.last_vs12 {
            Some(l) if l >= target => Ok(()),
            _ if self.differential == Versionstamp::ZERO => Ok(()),
            other => Err(ConsumerError::LogsIncomplete {
                prefix: reader.prefix_for_errors(),
                differential: self.differential,
                logs_end: other.map_or_else(|| "nothing".to_string(), hex::encode),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{boundary_of, vs12};

    fn vs(n: u64) -> Versionstamp {
        Versionstamp::from_version(n)
    }

    fn entry(v: Vs12) -> LogEntry {
        LogEntry {
            vs12: v,
            key: b"k".to_vec(),
            value: None,
            expire_at_ms: None,
        }
    }

    fn layout(dv: u64) -> BackupLayout {
        BackupLayout {
            differential: vs(dv),
            kind: BackupKind::Foreign,
            snapshot_ranges: vec![],
            logs: vec![],
        }
    }

    fn key(m: u64, seg: &LogSegment) -> LogSegmentKey {
        LogSegmentKey {
            format_version: 1,
            monoseq: m,
            first_vs12: seg.entries[0].vs12,
            last_vs12: seg.entries[seg.entries.len() - 1].vs12,
        }
    }

    #[test]
    fn walker_groups_across_segments_and_skips_overlaps() {
        let mut w = LogWalker::new(&layout(2));
        let s1 = LogSegment {
            timestamp_ms: 10,
            entries: vec![entry(boundary_of(&vs(1))), entry(vs12(&vs(3), 0))],
        };
        let s2 = LogSegment {
            timestamp_ms: 5, // clock went backwards: times never decrease
            entries: vec![
                entry(vs12(&vs(3), 0)), // overlap, skipped
                entry(boundary_of(&vs(3))),
                entry(boundary_of(&vs(4))),
            ],
        };
        let t1 = w.push(&key(1, &s1), s1.clone());
        assert_eq!(t1.len(), 1);
        assert_eq!(t1[0].versionstamp, vs(1));
        assert_eq!(w.pending.len(), 1);
        let t2 = w.push(&key(2, &s2), s2.clone());
        assert_eq!(
            t2.iter().map(|t| t.versionstamp).collect::<Vec<_>>(),
            vec![vs(3), vs(4)]
        );
        assert_eq!(t2[0].entries.len(), 2);
        assert!(t2.iter().all(|t| t.timestamp_ms == 10));
        let first = w.take_first_point().unwrap();
        assert_eq!(first.versionstamp, vs(2));
        assert_eq!(first.timestamp_ms, 10);
        assert!(w.take_first_point().is_none());
        assert_eq!(w.cursor, Some(key(2, &s2)));
    }

    #[test]
    fn split_logs_checks_only_the_needed_segments() {
        use object_store::memory::InMemory;
        let reader = BackupReader::new(Arc::new(InMemory::new()), Path::from("p"));
        // Segment m holds versions 10m+1 ..= 10m+10 (boundaries only).
        let obj = |m: u64| LogObject {
            key: LogSegmentKey {
                format_version: 1,
                monoseq: m,
                first_vs12: boundary_of(&vs(10 * m + 1)),
                last_vs12: boundary_of(&vs(10 * m + 10)),
            },
            size: 1,
            last_modified: Utc::now(),
        };
        let layout = |ms: &[u64]| BackupLayout {
            differential: vs(1),
            kind: BackupKind::KvPitr(BackupManifest {
                format: 1,
                producer: "t".into(),
                created_at_ms: 0,
                initial_snapshot_monoseq: 1,
                snapshot_start: vs(0).to_string(),
                snapshot_end: vs(1).to_string(),
            }),
            snapshot_ranges: vec![],
            logs: ms.iter().map(|m| obj(*m)).collect(),
        };
        let monoseqs = |v: &[LogObject]| v.iter().map(|o| o.key.monoseq).collect::<Vec<_>>();
        // Start at the end of segment 3: 4.. needed, 3 listed as its predecessor.
        let (before, needed) = reader
            .split_logs(&layout(&[1, 2, 3, 4, 5]), Some(boundary_of(&vs(40))))
            .unwrap();
        assert_eq!(
            (monoseqs(&before), monoseqs(&needed)),
            (vec![1, 2, 3], vec![4, 5])
        );
        // Segments before the predecessor may be gone.
        let (_, needed) = reader
            .split_logs(&layout(&[3, 4, 5]), Some(boundary_of(&vs(40))))
            .unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        // Without the predecessor, entries after the start may be missing...
        let err = reader
            .split_logs(&layout(&[4, 5]), Some(boundary_of(&vs(40))))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerError::MissingLogSegments {
                    expected_monoseq: 3,
                    ..
                }
            ),
            "{err}"
        );
        // ...unless the first needed segment holds the start itself.
        let (_, needed) = reader
            .split_logs(&layout(&[4, 5]), Some(boundary_of(&vs(45))))
            .unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        // ...or starts with the entry right after it (a one-change commit is a lone boundary
        // entry): the start of a checkpoint is `vs12(start, 0xfffe)`.
        let (_, needed) = reader
            .split_logs(&layout(&[4, 5]), Some(vs12(&vs(41), 0xfffe)))
            .unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        assert!(reader
            .split_logs(&layout(&[4, 5]), Some(vs12(&vs(40), 0xfffe)))
            .is_err());
        assert_eq!(
            next_vs12(&vs12(&vs(41), 0xfffe)),
            Some(boundary_of(&vs(41)))
        );
        assert_eq!(next_vs12(&[0xff; 12]), None);
        // Gaps among the needed segments are errors; among the others they are not.
        assert!(matches!(
            reader.split_logs(&layout(&[1, 3, 4, 6]), Some(boundary_of(&vs(40)))),
            Err(ConsumerError::MissingLogSegments {
                expected_monoseq: 5,
                ..
            })
        ));
        // From the beginning, the first segment must be there.
        assert!(matches!(
            reader.split_logs(&layout(&[2, 3]), None),
            Err(ConsumerError::MissingLogSegments {
                expected_monoseq: 1,
                ..
            })
        ));
        assert_eq!(
            monoseqs(&reader.split_logs(&layout(&[1, 2]), None).unwrap().1),
            vec![1, 2]
        );
    }

    #[test]
    fn store_locations() {
        let (_, prefix) = open_store_url("s3://bucket/team/db1/", None).unwrap();
        assert_eq!(prefix.as_ref(), "team/db1");
        let (_, prefix) = open_store_url("s3://bucket", Some("http://127.0.0.1:9")).unwrap();
        assert_eq!(prefix.as_ref(), "");
        assert!(matches!(
            open_store_url("s3:///x", None),
            Err(StoreUrlError::Invalid { .. })
        ));
        assert!(matches!(
            open_store_url("gs://b/x", None),
            Err(StoreUrlError::Invalid { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        let (store, prefix) = open_store_url(folder.to_str().unwrap(), None).unwrap();
        assert_eq!(prefix, Path::default());
        assert!(folder.is_dir());
        assert!(store.to_string().contains("LocalFileSystem"));
        let url = format!("file://{}", folder.display());
        assert!(open_store_url(&url, None).is_ok());
    }

    #[test]
    fn time_text() {
        assert_eq!(
            format_time_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
