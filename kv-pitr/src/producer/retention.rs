//! Retention on the producer: with [`BackupConfig::retention`](super::BackupConfig::retention)
//! set, the checkpointer calls [`enforce`] after every checkpoint interval, so the backup keeps
//! recovery points for that window only and its storage and restore time stop growing.
//!
//! The rule (what may be deleted, and when):
//!
//! - The **horizon** is `now - retention - retention_grace`. Every recovery point whose commit
//!   time is at or after the horizon stays restorable; nothing a restore of such a point reads
//!   is deleted.
//! - The **base** is the newest complete checkpoint whose read time
//!   (`snapshot_end_timestamp_ms`) is strictly before the horizon. Each enforcement runs
//!   [`compact`](crate::compact::compact) to the base: it deletes the log segments wholly
//!   before the base's start, after writing `compacted.json`. A commit at or after the horizon
//!   came after the base's snapshot was read, so it is at or after the base's first recovery
//!   point and stays restorable.
//! - Then every complete checkpoint older than the compaction marker's checkpoint (the one
//!   restores of the oldest kept point start from) is deleted, manifest first, as
//!   `checkpoint_retain` does without retention (which is ignored with retention: a count
//!   could delete the base). The initial snapshot is kept (it is one database's size, and a
//!   restarted producer recognises its backup by it) but can no longer be restored from.
//! - **Readers in flight**: a restore or a replica reads the newest checkpoint at or before its
//!   target and the log after it. A restore of a point that was in the window when it started,
//!   or a replica that lags less than `retention` behind the head, needs nothing older than
//!   `now - retention` at its start; the grace keeps that for another `retention_grace`, so
//!   such readers are safe as long as they finish (or, for a replica, catch up) within the
//!   grace. A replica lagging further gets a clear missing-segment error (restart it to
//!   restore afresh), never wrong data.
//! - Nothing is deleted when no checkpoint is old enough (a young backup, or one without
//!   writes since long before the horizon: its base is the last checkpoint, which is kept).
//! - Failures are logged and published as `last_compaction_error`; the next interval retries.
//!   A crash midway leaves segments the marker already excludes: the next run deletes them.

use std::time::Duration;

use kv_traits::clock::now_ms;

use crate::compact::{compact, read_compaction, CompactReport};
use crate::consumer::{BackupReader, ConsumerError};
use crate::restore::RestoreTarget;
use crate::store::BackupStore;

use super::checkpointer::list_checkpoints;
use super::BackupError;

/// What one enforcement did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Enforced {
    /// Log segments deleted.
    pub(super) segments: u64,
    /// Their bytes.
    pub(super) bytes: u64,
    /// Checkpoints deleted.
    pub(super) checkpoints: u64,
}

/// Why an enforcement failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RetentionError {
    /// Reading the backup or compacting it failed.
    #[error("compacting the backup: {0}")]
    Compact(#[from] ConsumerError),
    /// Listing or deleting checkpoints failed.
    #[error("deleting old checkpoints: {0}")]
    Checkpoints(#[from] BackupError),
}

/// The horizon for `retention` and `grace` at `now` (ms since the epoch; 0 if the window
/// reaches before 1970).
pub(super) fn horizon_ms(now: u64, retention: Duration, grace: Duration) -> u64 {
    let keep = retention.saturating_add(grace).as_millis();
    now.saturating_sub(u64::try_from(keep).unwrap_or(u64::MAX))
}

/// Compacts the backup to the window and deletes the checkpoints before its base (see the
/// module rule).
pub(super) async fn enforce(
    store: &BackupStore,
    retention: Duration,
    grace: Duration,
) -> Result<Enforced, RetentionError> {
    let horizon = horizon_ms(now_ms(), retention, grace);
    let mut done = Enforced::default();
    if horizon == 0 {
        return Ok(done);
    }
    let reader = BackupReader::new(store.store().clone(), store.prefix().clone());
    // Strictly before the horizon: `compact` takes read times at or before its target.
    let report: CompactReport = compact(&reader, RestoreTarget::Time(horizon - 1)).await?;
    done.segments = report.deleted_segments as u64;
    done.bytes = report.deleted_bytes;
    let Some(marker) = read_compaction(&reader).await? else {
        return Ok(done);
    };
    let (complete, _) = list_checkpoints(&**store.store(), store.prefix()).await?;
    for c in complete.iter().filter(|c| c.monoseq < marker.checkpoint) {
        store
            .delete_checkpoint(c.monoseq)
            .await
            .map_err(BackupError::from)?;
        done.checkpoints += 1;
    }
    if done != Enforced::default() {
        tracing::info!(
            prefix = %store.prefix(),
            segments = done.segments,
            bytes = done.bytes,
            checkpoints = done.checkpoints,
            first_point = %marker.first_point,
            "retention: deleted backup objects older than the window"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_subtracts_window_and_grace_and_saturates() {
        let s = Duration::from_secs;
        assert_eq!(horizon_ms(100_000, s(60), s(30)), 10_000);
        assert_eq!(horizon_ms(100_000, s(60), s(60)), 0);
        assert_eq!(horizon_ms(100_000, Duration::MAX, s(1)), 0);
    }
}
