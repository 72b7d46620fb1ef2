//! Shipping the change log: the [`Shipper`] task takes the initial snapshot of a fresh
//! backup, then cuts the database's change log into log segments and uploads them in order.
//!
//! Contract (see [`super`] for the object order):
//!
//! - Segment `monoseq` n + 1 is uploaded only after segment n is stored; a failed upload is
//!   retried with the same name and bytes until it succeeds, so `monoseq` numbers stay
//!   contiguous and no segment is ever rewritten with other content.
//! - The change log is trimmed only up to what is durable in the store.
//! - A segment holds commits at most one flush interval apart (its one time is the time of
//!   its last commit), at most `max_segment_batches` commits and about `max_segment_bytes`.
//! - A hole in the change log (trimmed by someone else, or bypassed by imports) stops the
//!   task with [`BackupError::Gap`] instead of leaving a silent hole in the backup.
//! - Store failures are retried with exponential backoff (up to `retry_max_backoff`); errors
//!   retrying cannot fix stop the task. Each failure is published in the status.
//! - A shipper works within one [`Tenure`] of the backup lease (unconditional on a store of
//!   one process): it checks the tenure before every upload, abandons an upload in flight when
//!   the tenure ends, and then returns [`Ended::LeaseLost`] with nothing more written or trimmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kv_db::{ChangeBatch, Db};
use kv_traits::clock::now_ms;
use kv_traits::Versionstamp;
use tokio::sync::watch;

use super::lease::Tenure;
use super::shared::Shared;
use super::snapshot::{upload_snapshot, SnapshotPlace};
use super::start_mode::{producer_name, InitMarker, StartMode};
use super::{init_marker_path, BackupConfig, BackupError, INITIAL_SNAPSHOT_MONOSEQ};
use crate::format::{self, BackupManifest, LogSegmentKey, MAX_CHANGES_PER_BATCH};
use crate::store::BackupStore;

/// An encoded segment waiting to be stored; retried unchanged until it succeeds.
struct PendingSegment {
    key: LogSegmentKey,
    body: Bytes,
    /// Everything logged up to here is in this segment (or earlier ones).
    covered: Versionstamp,
    /// More changes were waiting when this segment was cut.
    more: bool,
    /// The segment's time and commits, for the log index.
    timestamp_ms: u64,
    commits: Vec<Versionstamp>,
}

/// Why [`Shipper::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Shut down, or stopped by an error retrying cannot fix (see the status).
    Done,
    /// The tenure ended: another process may ship now.
    LeaseLost,
}

pub(super) struct Shipper {
    db: Db,
    tenure: Tenure,
    store: BackupStore,
    config: BackupConfig,
    shared: Arc<Shared>,
    commits: watch::Receiver<Versionstamp>,
    shipped: Versionstamp,
    next_monoseq: u64,
    pending: Option<PendingSegment>,
    /// The log index chunk being written.
    index: crate::log_index::IndexWriter,
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

impl Shipper {
    /// A shipper that has shipped nothing yet ([`Shipper::run`] sets where it starts).
    pub(super) fn new(
        db: Db,
        store: BackupStore,
        config: BackupConfig,
        shared: Arc<Shared>,
        tenure: Tenure,
    ) -> Self {
        Shipper {
            tenure,
            commits: db.subscribe_commits(),
            db,
            store,
            config,
            shared,
            shipped: Versionstamp::ZERO,
            next_monoseq: 1,
            pending: None,
            index: Default::default(),
            last_upload: None,
            last_lag_log: None,
            failures: 0,
        }
    }

    /// Starts as `mode` says, then ships until shutdown, a fatal error or the end of its
    /// tenure.
    pub(super) async fn run(mut self, mode: StartMode) -> Ended {
        match mode {
            StartMode::Resume {
                shipped_through,
                next_monoseq,
            } => {
                self.shipped = shipped_through;
                self.next_monoseq = next_monoseq;
                self.shared.update(|st| {
                    st.status.shipped_through = st.status.shipped_through.max(shipped_through);
                    st.status.next_monoseq = next_monoseq;
                    st.status.initial_snapshot_done = true;
                });
            }
            StartMode::Fresh => loop {
                if self.shared.stopping() {
                    return Ended::Done;
                }
                if !self.tenure.valid() {
                    return Ended::LeaseLost;
                }
                let tenure = self.tenure.clone();
                let attempt = tokio::select! {
                    r = self.initial_snapshot() => r,
                    _ = tenure.lost() => return Ended::LeaseLost,
                };
                match attempt {
                    Ok(()) => break,
                    Err(e) => {
                        if !self.on_error(e).await {
                            return Ended::Done;
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
                    return Ended::Done;
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
            if !self.tenure.valid() {
                return Ended::LeaseLost;
            }
            let tenure = self.tenure.clone();
            let attempt = async {
                tokio::select! {
                    r = self.ship_one() => Some(r),
                    _ = tenure.lost() => None,
                }
            };
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(r) => r,
                    Err(_) => return Ended::Done,
                },
                None => attempt.await,
            };
            let Some(result) = result else {
                return Ended::LeaseLost;
            };
            match result {
                Ok(more) => backlog = more,
                Err(e) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        self.record_error(Arc::new(e));
                        return Ended::Done;
                    }
                    if !self.on_error(e).await {
                        return Ended::Done;
                    }
                }
            }
        }
    }

    fn record_error(&self, e: Arc<BackupError>) {
        self.shared.update(|st| st.set_error(e));
    }

    /// Records a failure and waits before the next attempt; false = stop the task.
    async fn on_error(&mut self, e: BackupError) -> bool {
        let e = Arc::new(e);
        self.record_error(e.clone());
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
                timestamp_ms,
                commits: batches
                    .iter()
                    .filter(|b| !b.changes.is_empty())
                    .map(|b| b.versionstamp)
                    .collect(),
            });
        }
        let Some(p) = self.pending.as_ref() else {
            return Ok(false);
        };
        self.store.put_log(&p.key, p.body.clone()).await?;
        let (covered, more, key) = (p.covered, p.more, p.key);
        if let Some(p) = self.pending.take() {
            self.index
                .record(&self.store, &key, p.timestamp_ms, p.commits)
                .await;
        }
        self.next_monoseq = key.monoseq + 1;
        self.last_upload = Some(Instant::now());
        tracing::debug!(segment = %key, "shipped log segment");
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
            st.clear_error();
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
        let prefix = self.store.prefix();
        let mut doomed = self
            .store
            .list_paths(&format::snapshots_dir(prefix))
            .await?;
        doomed.extend(self.store.list_paths(&format::logs_dir(prefix)).await?);
        doomed.push(format::differential_path(prefix));
        if !doomed.is_empty() {
            tracing::info!(prefix = %prefix, objects = doomed.len(), "removing an interrupted initial snapshot");
        }
        for p in doomed {
            self.store.delete(&p).await?;
        }
        Ok(())
    }

    async fn initial_snapshot(&mut self) -> Result<(), BackupError> {
        let store = self.store.clone();
        let prefix = store.prefix();
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
        InitMarker {
            producer: producer_name(),
            created_at_ms,
            snapshot_start: v0.to_string(),
        }
        .write(&store)
        .await?;
        tracing::info!(prefix = %prefix, snapshot_start = %v0, "taking the initial snapshot");
        let snapshot = upload_snapshot(
            &self.db,
            &store,
            SnapshotPlace::Initial,
            INITIAL_SNAPSHOT_MONOSEQ,
            v0,
            self.config.snapshot_range_entries,
        )
        .await?;
        let v1 = snapshot.end;
        // Logs of the commits that happened while the snapshot was taken.
        self.shipped = v0;
        self.next_monoseq = 1;
        while self.shipped < v1 {
            self.ship_one().await?;
        }
        store.write_differential(&v1).await?;
        let manifest = BackupManifest {
            format: BackupManifest::FORMAT,
            producer: producer_name(),
            created_at_ms,
            initial_snapshot_monoseq: INITIAL_SNAPSHOT_MONOSEQ,
            snapshot_start: v0.to_string(),
            snapshot_end: v1.to_string(),
        };
        store.write_manifest(&manifest).await?;
        if let Err(e) = store.delete(&init_marker_path(prefix)).await {
            tracing::debug!(error = %e, "could not delete the init marker");
        }
        tracing::info!(prefix = %prefix, ranges = snapshot.ranges, differential = %v1, "initial snapshot complete");
        let (shipped, next_monoseq) = (self.shipped, self.next_monoseq);
        self.shared.update(|st| {
            st.status.initial_snapshot_done = true;
            st.status.shipped_through = shipped;
            st.status.next_monoseq = next_monoseq;
            // The snapshot and manifest are uploads: a database written only before its backup
            // started ships no log segment, yet is backed up as of now.
            st.status.last_upload_at_ms = Some(now_ms());
            st.clear_error();
        });
        // Everything logged before the snapshot is in it.
        if let Err(e) = self.db.trim_changes(shipped).await {
            tracing::warn!(error = %e, "could not trim the change log");
        }
        Ok(())
    }
}
