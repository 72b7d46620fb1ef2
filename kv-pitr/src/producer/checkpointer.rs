//! Periodic checkpoints: the [`Checkpointer`] task writes a full snapshot under
//! `checkpoints/{monoseq:016x}/` every `checkpoint_interval` (when there were commits since
//! the last one), so restores can start near their target instead of at the initial snapshot.
//!
//! Contract:
//!
//! - A checkpoint's ranges are written first; its `checkpoint.json` last, and only once the
//!   log up to the checkpoint's end is shipped: a checkpoint with a manifest is complete and
//!   usable, one without is ignored by readers and removed by the next producer start.
//! - `monoseq` numbers only grow (after every folder found at start, even incomplete ones).
//! - Without `retention`, the newest `checkpoint_retain` complete checkpoints are kept and
//!   older ones deleted manifest first, so a reader never uses a half-deleted checkpoint; the
//!   initial snapshot and the log are never deleted. With `retention`, after every interval
//!   (whether or not it took a checkpoint) the `retention` module compacts the backup to the
//!   window and deletes the checkpoints before it instead (its docs state the rule).
//! - Checkpoint failures never stop the backup: they are logged, published as
//!   `last_checkpoint_error`, and the checkpoint's objects are removed.
//! - On a shared store checkpoints are taken only within a tenure of the backup lease (see
//!   `lease`): each tenure starts with the clean-up above (another process may have written
//!   checkpoints in between), and a checkpoint in progress is abandoned when the tenure ends;
//!   its objects are removed as incomplete by whichever process takes the next one.

use std::sync::Arc;
use std::time::Duration;

use kv_db::Db;
use kv_traits::clock::now_ms;
use kv_traits::Versionstamp;
use object_store::path::Path;
use object_store::ObjectStore;

use super::lease::{BackupLease, Tenure};
use super::retention;
use super::shared::Shared;
use super::snapshot::{upload_snapshot, SnapshotPlace};
use super::start_mode::producer_name;
use super::{BackupConfig, BackupError, INITIAL_SNAPSHOT_MONOSEQ};
use crate::format;
use crate::store::{self, BackupStore};

/// Reads every complete checkpoint manifest under the prefix (oldest first), and the
/// `monoseq`s of incomplete checkpoints (folders without `checkpoint.json`, or whose manifest
/// disappeared while listed).
pub async fn list_checkpoints(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<(Vec<format::CheckpointManifest>, Vec<u64>), BackupError> {
    let mut complete = Vec::new();
    let mut incomplete = Vec::new();
    for (m, listing) in store::list_checkpoint_folders(store, prefix).await? {
        if !listing.has_manifest {
            incomplete.push(m);
            continue;
        }
        match store::read_checkpoint_manifest(store, prefix, m).await? {
            Some(manifest) => complete.push(manifest),
            None => incomplete.push(m),
        }
    }
    Ok((complete, incomplete))
}

/// The periodic checkpoint task.
pub(super) struct Checkpointer {
    pub(super) db: Db,
    pub(super) store: BackupStore,
    pub(super) config: BackupConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) interval: Duration,
    /// The backup lease, on a shared store.
    pub(super) lease: Option<Arc<BackupLease>>,
}

impl Checkpointer {
    /// Takes checkpoints in every tenure of the lease (without a lease: in one that never
    /// ends) until the backup stops.
    pub(super) async fn run(self) {
        loop {
            let tenure = match &self.lease {
                None => Tenure::unconditional(),
                Some(lease) => match lease.wait_held(&self.shared).await {
                    Some(t) => t,
                    None => return,
                },
            };
            tokio::select! {
                _ = self.serve() => return,
                _ = tenure.lost() => {
                    tracing::debug!("checkpoints paused: the backup lease is gone");
                }
            }
        }
    }

    /// Cleans up after earlier runs, then takes a checkpoint every interval.
    async fn serve(&self) {
        let mut rx = self.shared.tx.subscribe();
        match rx.wait_for(|s| s.initial_snapshot_done || s.stopped).await {
            Ok(s) if s.stopped => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let mut next_monoseq = INITIAL_SNAPSHOT_MONOSEQ + 1;
        let mut last_end: Option<Versionstamp> = None;
        let store = &self.store;
        let prefix = store.prefix();
        match list_checkpoints(&**store.store(), prefix).await {
            Ok((complete, incomplete)) => {
                for m in &incomplete {
                    tracing::info!(prefix = %prefix, monoseq = m, "removing an incomplete checkpoint");
                    if let Err(e) = store.delete_checkpoint(*m).await {
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
                self.enforce_retention().await;
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
                    if self.config.retention.is_some() {
                        self.enforce_retention().await;
                    } else if let Err(e) = self.retain().await {
                        tracing::warn!(error = %e, "could not delete old checkpoints");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, prefix = %prefix, monoseq, "checkpoint failed");
                    let msg = e.to_string();
                    self.shared
                        .update(|st| st.status.last_checkpoint_error = Some(msg));
                    if let Err(e) = store.delete_checkpoint(monoseq).await {
                        tracing::debug!(error = %e, "could not remove a failed checkpoint");
                    }
                }
            }
        }
    }

    /// Writes checkpoint `monoseq`: its ranges, then (once the log up to its end is
    /// shipped) its manifest.
    async fn take(&self, monoseq: u64) -> Result<format::CheckpointManifest, BackupError> {
        let v0 = self.db.current_versionstamp().await?;
        let snapshot = upload_snapshot(
            &self.db,
            &self.store,
            SnapshotPlace::Checkpoint,
            monoseq,
            v0,
            self.config.snapshot_range_entries,
        )
        .await?;
        let v1 = snapshot.end;
        let read_at_ms = now_ms();
        // The log up to v1 must be shipped before the checkpoint is usable.
        let mut rx = self.shared.tx.subscribe();
        let shipped = rx
            .wait_for(|s| s.shipped_through >= v1 || s.stopped)
            .await
            .map_err(|_| BackupError::Stopped {
                reason: "the backup task is gone",
                last_error: None,
            })?
            .clone();
        if shipped.shipped_through < v1 {
            return Err(BackupError::Stopped {
                reason: "the backup stopped before the checkpoint's log was shipped",
                last_error: self.shared.lock().last_error.clone(),
            });
        }
        let manifest = format::CheckpointManifest {
            format: format::CheckpointManifest::FORMAT,
            monoseq,
            producer: producer_name(),
            created_at_ms: now_ms(),
            ranges: snapshot.ranges,
            keys: snapshot.keys,
            snapshot_start: v0.to_string(),
            snapshot_end: v1.to_string(),
            snapshot_end_timestamp_ms: read_at_ms,
        };
        self.store.write_checkpoint_manifest(&manifest).await?;
        Ok(manifest)
    }

    /// With `retention` set: compacts the backup to the window and publishes what was deleted
    /// (see `retention`); a failure is logged and retried at the next interval.
    async fn enforce_retention(&self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        match retention::enforce(&self.store, retention, self.config.retention_grace).await {
            Ok(done) => self.shared.update(|st| {
                st.status.compacted_segments += done.segments;
                st.status.compacted_bytes += done.bytes;
                st.status.compacted_checkpoints += done.checkpoints;
                st.status.last_compaction_error = None;
            }),
            Err(e) => {
                tracing::warn!(error = %e, prefix = %self.store.prefix(), "retention failed");
                let msg = e.to_string();
                self.shared
                    .update(|st| st.status.last_compaction_error = Some(msg));
            }
        }
    }

    /// Deletes the oldest complete checkpoints beyond `checkpoint_retain`.
    async fn retain(&self) -> Result<(), BackupError> {
        let (complete, _) = list_checkpoints(&**self.store.store(), self.store.prefix()).await?;
        let keep = self.config.checkpoint_retain.max(1);
        if complete.len() > keep {
            for c in &complete[..complete.len() - keep] {
                self.store.delete_checkpoint(c.monoseq).await?;
            }
        }
        Ok(())
    }
}
