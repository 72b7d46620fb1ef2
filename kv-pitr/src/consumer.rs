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
    self, BackupManifest, ExportEntry, FormatError, LogEntry, LogSegment, LogSegmentKey,
    SnapshotRangeKey, Vs12,
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
        /// Where in the sequence ("after <segment>" or "first").
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

/// Reads a backup under `prefix` of an object store.
///
/// Cloning is cheap (the store is shared).
#[derive(Clone, Debug)]
pub struct BackupReader {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    concurrency: usize,
}

impl BackupReader {
    /// A reader of the backup under `prefix` (`Path::default()` for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        BackupReader {
            store,
            prefix,
            concurrency: DEFAULT_FETCH_CONCURRENCY,
        }
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
            BackupKind::KvPitr(_) => {
                let mut prev = after.copied();
                for obj in &logs {
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
        let (differential, manifest, ranges) = futures::try_join!(
            self.differential(),
            self.manifest(),
            self.list_snapshot_ranges()
        )?;
        let kind = match manifest {
            Some(m) => BackupKind::KvPitr(m),
            None => BackupKind::Foreign,
        };
        let logs = self.logs_after(&kind, None).await?;
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

    /// Downloads and decodes one snapshot range (checksum verified when present).
    pub async fn fetch_snapshot_range(
        &self,
        key: &SnapshotRangeKey,
    ) -> Result<Vec<ExportEntry>, ConsumerError> {
        let path = format::snapshot_path(&self.prefix, key);
        let body = self.get_required(&path).await?;
        format::decode_snapshot_range(&body).map_err(|source| ConsumerError::Corrupt {
            object: path.to_string(),
            source,
        })
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
        let reader = self.clone();
        stream::iter(keys)
            .map(move |k| {
                let reader = reader.clone();
                async move { reader.fetch_snapshot_range(&k).await.map(|e| (k, e)) }
            })
            .buffered(self.concurrency)
            .boxed()
    }

    /// Downloads log segments concurrently; results come in the order of `keys`.
    pub fn fetch_logs(
        &self,
        keys: Vec<LogSegmentKey>,
    ) -> BoxStream<'static, Result<(LogSegmentKey, LogSegment), ConsumerError>> {
        let reader = self.clone();
        stream::iter(keys)
            .map(move |k| {
                let reader = reader.clone();
                async move { reader.fetch_log(&k).await.map(|s| (k, s)) }
            })
            .buffered(self.concurrency)
            .boxed()
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
