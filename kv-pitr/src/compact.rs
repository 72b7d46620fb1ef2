//! Compaction: deleting the log segments that a newer checkpoint makes unnecessary, so that
//! backup storage and restore time stop growing with the backup's age.
//!
//! Contract of [`compact`]:
//!
//! - It picks the newest complete checkpoint at or before the horizon (a versionstamp: the
//!   checkpoint's `snapshot_end` is at or before it; a time: its `snapshot_end_timestamp_ms`
//!   is; `Latest`: the newest checkpoint) whose first recovery point is in the log, and
//!   deletes every log segment wholly before that checkpoint's start (the ones a restore from
//!   it never reads).
//! - **Recovery points lost**: every point before the checkpoint's first recovery point.
//!   Restores, `info` and listings then start there (restoring an earlier point is a
//!   [`ConsumerError::BeforeFirstPoint`] error); every later point stays restorable. The
//!   initial snapshot and older checkpoints are kept (the producer's retention deletes old
//!   checkpoints) but can no longer be restored from.
//! - Before deleting anything it writes `<prefix>/compacted.json` ([`Compaction`]), which
//!   readers use to start after the deleted segments (a crash midway leaves some of them,
//!   which readers ignore; compacting again deletes them). It never moves backwards.
//! - Only backups written by this crate (with `kv-pitr.json`) can be compacted. A compacted
//!   backup can no longer be consumed by the reference `denokv` (it needs the whole log).
//! - It may run while the producer ships (it touches only segments before a checkpoint).

use object_store::path::Path;

use crate::consumer::{BackupKind, BackupReader, ConsumerError, RecoveryPoint};
use crate::format::{self, LogSegmentKey};
use crate::restore::RestoreTarget;
use crate::walker::LogWalker;

/// Name of the compaction marker under the prefix.
pub const COMPACTED: &str = "compacted.json";

/// `<prefix>/compacted.json`.
pub fn compaction_path(prefix: &Path) -> Path {
    prefix.clone().join(COMPACTED)
}

/// The compaction marker: the log before `through` (inclusive) may be gone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compaction {
    /// Marker format (1).
    pub format: u32,
    /// The checkpoint compacted to (its `monoseq`).
    pub checkpoint: u64,
    /// Name of the last segment deleted (all earlier ones are deleted too).
    pub through: String,
    /// The backup's first recovery point from now on (20 hex digits).
    pub first_point: String,
    /// Its time, ms since the Unix epoch.
    pub first_point_ms: u64,
}

impl Compaction {
    /// The last deleted segment.
    pub fn through_key(&self) -> Option<LogSegmentKey> {
        LogSegmentKey::parse(&self.through).ok()
    }

    /// The first recovery point.
    pub fn first(&self) -> Option<RecoveryPoint> {
        Some(RecoveryPoint {
            versionstamp: self.first_point.parse().ok()?,
            timestamp_ms: self.first_point_ms,
        })
    }
}

/// What [`compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactReport {
    /// The checkpoint compacted to; `None`: no checkpoint qualified, nothing was deleted.
    pub checkpoint: Option<u64>,
    /// Log segments deleted.
    pub deleted_segments: usize,
    /// Their total size in bytes.
    pub deleted_bytes: u64,
    /// The backup's first recovery point afterwards (`None` if nothing changed).
    pub first_point: Option<RecoveryPoint>,
}

/// Reads the compaction marker, if any.
pub(crate) async fn read_compaction(
    reader: &BackupReader,
) -> Result<Option<Compaction>, ConsumerError> {
    let path = compaction_path(reader.prefix());
    let Some(body) = reader.backup_store().get(&path).await? else {
        return Ok(None);
    };
    let c: Compaction = serde_json::from_slice(&body).map_err(|e| ConsumerError::Inconsistent {
        object: path.to_string(),
        reason: format!("it is not a compaction marker: {e}"),
    })?;
    if c.format != 1 || c.through_key().is_none() || c.first().is_none() {
        return Err(ConsumerError::Inconsistent {
            object: path.to_string(),
            reason: "unsupported format or malformed fields".into(),
        });
    }
    Ok(Some(c))
}

/// Deletes the log segments before the newest checkpoint at or before `horizon` (see the
/// module contract).
pub async fn compact(
    reader: &BackupReader,
    horizon: RestoreTarget,
) -> Result<CompactReport, ConsumerError> {
    let nothing = CompactReport {
        checkpoint: None,
        deleted_segments: 0,
        deleted_bytes: 0,
        first_point: None,
    };
    let layout = reader.restore_layout().await?;
    if layout.kind == BackupKind::Foreign {
        return Err(ConsumerError::Inconsistent {
            object: reader.prefix().to_string(),
            reason: "only backups written by kv-pitr (with kv-pitr.json) can be compacted".into(),
        });
    }
    let checkpoints = reader.checkpoints(&layout).await?;
    let chosen = checkpoints.iter().rev().find(|c| match horizon {
        RestoreTarget::Latest => true,
        RestoreTarget::Versionstamp(v) => c.snapshot_end <= v,
        RestoreTarget::Time(t) => c.manifest.snapshot_end_timestamp_ms <= t,
    });
    let Some(c) = chosen else {
        return Ok(nothing);
    };
    let skip_through = format::vs12(&c.snapshot_start, format::BOUNDARY_INDEX - 1);
    let (skipped, needed) = reader.split_logs(&layout, Some(skip_through))?;
    let mut walker = LogWalker::new(&layout);
    for o in &skipped {
        walker.skip(&o.key);
    }
    let (first, _) =
        crate::restore::checkpoint_first_point(reader, &layout, c, &walker, &needed).await?;
    let (Some(first), Some(last_deleted)) = (first, skipped.last()) else {
        return Ok(nothing);
    };
    if let Some(old) = &layout.compaction {
        if old
            .first()
            .is_some_and(|f| f.versionstamp >= first.versionstamp)
        {
            return Ok(nothing);
        }
    }
    let marker = Compaction {
        format: 1,
        checkpoint: c.manifest.monoseq,
        through: last_deleted.key.to_string(),
        first_point: first.versionstamp.to_string(),
        first_point_ms: first.timestamp_ms,
    };
    let body = serde_json::to_vec_pretty(&marker).map_err(|e| ConsumerError::Inconsistent {
        object: compaction_path(reader.prefix()).to_string(),
        reason: e.to_string(),
    })?;
    let store = reader.backup_store();
    store
        .put(&compaction_path(reader.prefix()), body.into())
        .await?;
    let mut deleted_bytes = 0;
    for o in &skipped {
        store
            .delete(&format::log_path(reader.prefix(), &o.key))
            .await?;
        deleted_bytes += o.size;
    }
    tracing::info!(
        checkpoint = c.manifest.monoseq,
        segments = skipped.len(),
        first_point = %first,
        "compacted backup {}",
        reader.prefix()
    );
    Ok(CompactReport {
        checkpoint: Some(c.manifest.monoseq),
        deleted_segments: skipped.len(),
        deleted_bytes,
        first_point: Some(first),
    })
}
