//! The single writer: one task applies every state-changing operation (atomic writes, dequeues,
//! finishes, maintenance, imports, change-log trims, leases), gathering whatever is pending into batches
//! that share one backend transaction and one commit (group commit).
//!
//! Contract:
//! - Batching: after the first operation arrives the task yields once, so writers already
//!   running can enqueue theirs, then cuts a batch of up to [`MAX_BATCH`] operations in arrival
//!   order. A lone writer never waits for a batch window.
//! - Isolation: each operation is applied through its own overlay ([`overlay`]); one that is
//!   refused (a failed check is not a refusal, a type error or an unknown lease is) leaves
//!   nothing behind, and the others still commit. Operations see the effects of the earlier
//!   ones in their batch.
//! - Versions: an operation that commits something takes the next version (the sweep and a
//!   dead letter take their own); the batch stores the last one as the database version.
//! - Durability: replies are sent only after the commit returned (see [`op`]). A backend error
//!   while applying, or a failed commit, answers the whole batch with that error. A failed
//!   commit other than a conflict leaves the durable state unknown: the writer is then poisoned
//!   and answers every later operation with [`BackendError::Poisoned`] until the database is
//!   reopened.
//! - After a commit: watchers of changed keys are signalled with the version of the change,
//!   queue waiters are woken when the queue changed, and commit subscribers see the new version.
//!   A message leased to a dequeuer who went away before receiving it is put back at once.
//! - Import marker: while the store holds nothing but imports (or was empty), the marker
//!   ([`layout::META_IMPORTED`]) tracks the point the imports reached; the first commit of
//!   anything else removes it for good.
//! - Shutdown: operations queued before [`Op::Shutdown`] complete; later ones are answered with
//!   [`KvError::Closed`].
//! - Shared stores ([`Backend::shared`]): other processes commit to the same store, so the
//!   writer keeps nothing between batches that they could change (the version is read in every
//!   batch already; the import marker and whether the change log is on are read per batch, the
//!   log being on while its start marker is stored). Each batch that creates versions also
//!   stores its [`crate::feed`] entry. A commit that fails with [`BackendError::Conflict`] (not
//!   applied) or [`BackendError::UnknownOutcome`] does not poison the writer; the latter is
//!   answered with [`KvError::UnknownOutcome`] so that no client retries it blindly.

mod apply;
mod backup;
mod lease;
mod maintenance;
mod op;
mod overlay;
mod queue;

use std::collections::VecDeque;
use std::sync::Arc;

use kv_traits::{Backend, BackendError, Clock, KvError, Versionstamp, WriteTxn};
use tokio::sync::{mpsc, Notify};

use self::op::Applied;
pub(crate) use self::op::{Dequeued, Op, Reply, Swept, Trimmed};
use self::overlay::{Cx, Effects};
use crate::changes;
use crate::feed;
use crate::layout;
use crate::stats::Stats;
use crate::watch::WatchHub;

/// Most operations gathered into one backend transaction.
const MAX_BATCH: usize = 512;

/// Shared state the writer needs.
pub(crate) struct Writer {
    pub backend: Arc<dyn Backend>,
    pub clock: Arc<dyn Clock>,
    pub hub: Arc<WatchHub>,
    pub queue_notify: Arc<Notify>,
    pub poisoned: Option<BackendError>,
    /// Store a change-log batch for every commit that changes user data.
    pub change_log: bool,
    /// Latest committed version, for backup shippers.
    pub commits: Arc<tokio::sync::watch::Sender<Versionstamp>>,
    /// Whether the imported-version marker is stored (`None`: not read yet).
    pub import_marker: Option<bool>,
    /// Other processes commit to the store too (see the module docs).
    pub shared: bool,
    /// Work counters ([`crate::stats`]), recorded after each successful commit.
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Whether the import marker is stored: read once, then tracked by the writer.
    async fn import_marker_present(
        &mut self,
        txn: &mut dyn WriteTxn,
    ) -> Result<bool, BackendError> {
        if let Some(p) = self.import_marker {
            return Ok(p);
        }
        let p = txn.get(layout::META_IMPORTED).await?.is_some();
        self.import_marker = Some(p);
        Ok(p)
    }

    /// Runs until the channel closes or a shutdown request is processed.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.recv().await {
            // Let writers that are already running enqueue their requests before the batch is
            // cut, so a burst lands in one commit; a lone writer loses only a scheduler turn.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let shutdown = batch.iter().any(Op::is_shutdown);
            self.run_batch(batch).await;
            if shutdown {
                rx.close();
                while let Ok(op) = rx.try_recv() {
                    op.fail(KvError::Closed);
                }
                return;
            }
        }
    }

    async fn run_batch(&mut self, batch: Vec<Op>) {
        if let Some(p) = &self.poisoned {
            let e = BackendError::Poisoned(p.to_string().into());
            for op in batch {
                op.fail(KvError::Backend(e.clone()));
            }
            return;
        }
        if batch.iter().all(Op::is_shutdown) {
            // Nothing to write: no transaction (a networked store would take its writer lock
            // for nothing, and a read-only one, e.g. a replica, has none to give).
            for op in batch {
                op.fail(KvError::Closed); // a shutdown is answered the same either way
            }
            return;
        }
        let mut pending = VecDeque::from(batch);
        let mut applied = Vec::with_capacity(pending.len());
        match self.apply_batch(&mut pending, &mut applied).await {
            Ok(fx) => {
                for (k, v) in &fx.changed {
                    self.hub.notify(std::iter::once(k.as_slice()), *v);
                }
                if fx.queue_changed {
                    self.queue_notify.notify_waiters();
                }
                // The caller of a dequeue went away after its message was leased: put the
                // message back now instead of letting it wait for the lease to expire.
                let releases: Vec<Op> = applied
                    .into_iter()
                    .filter_map(Applied::deliver)
                    .map(|lease| Op::Release { lease })
                    .collect();
                if !releases.is_empty() {
                    Box::pin(self.run_batch(releases)).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write batch failed");
                let answer = match &e {
                    BackendError::UnknownOutcome(m) => KvError::UnknownOutcome(m.to_string()),
                    other => KvError::Backend(other.clone()),
                };
                for a in applied {
                    a.fail(answer.clone());
                }
                for op in pending {
                    op.fail(answer.clone());
                }
            }
        }
    }

    /// Applies the operations of `pending` in order, moving each into `applied`, and commits.
    /// On error, `applied` and what is left in `pending` are what still needs an answer.
    async fn apply_batch(
        &mut self,
        pending: &mut VecDeque<Op>,
        applied: &mut Vec<Applied>,
    ) -> Result<Effects, BackendError> {
        let mut txn = self.backend.begin_write().await?;
        let start_version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let logging = if self.shared {
            // Another process may have changed both since the last batch.
            self.import_marker = None;
            txn.get(layout::META_CHANGE_LOG_SINCE).await?.is_some()
        } else {
            self.change_log
        };
        let now = self.clock.now_ms();
        let mut version = start_version;
        let mut all = Effects::default();
        let mut dirty = false;
        // The import marker after this batch: Some(Some(point)) set, Some(None) cleared.
        let mut marker: Option<Option<Versionstamp>> = None;
        let mut diverged = false;
        while let Some(op) = pending.pop_front() {
            let mut cx = Cx::new(&mut *txn, version, now, logging);
            cx.shared = self.shared;
            let is_import = matches!(op, Op::Import { .. });
            let (answer, settled) = match op {
                Op::Write { write, reply } => {
                    Applied::settle(reply, cx.apply_write(&write).await, Applied::Write)
                }
                Op::Dequeue { lease_ms, reply } => {
                    let res = if reply.is_closed() {
                        // Nobody waits for this message any more: don't lease it to anyone.
                        Err(overlay::ApplyError::Op(KvError::Closed))
                    } else {
                        cx.apply_dequeue(lease_ms).await
                    };
                    Applied::settle(reply, res, Applied::Dequeue)
                }
                Op::Finish {
                    lease,
                    success,
                    reply,
                } => Applied::settle(reply, cx.apply_finish(lease, success).await, Applied::Done),
                Op::Maintenance { reply } => {
                    Applied::settle(reply, cx.apply_maintenance().await, Applied::Swept)
                }
                Op::Release { lease } => Applied::released(cx.apply_release(lease).await),
                Op::Trim { through, reply } => {
                    Applied::settle(reply, cx.apply_trim(through).await, Applied::Trimmed)
                }
                Op::Import {
                    ops,
                    advance_to,
                    reply,
                } => Applied::settle(reply, cx.apply_import(ops, advance_to).await, Applied::Done),
                Op::Lease { request, reply } => {
                    Applied::settle(reply, cx.apply_lease(request).await, Applied::Lease)
                }
                Op::Shutdown { done } => (Applied::Shutdown(done), op::Settled::Applied),
            };
            applied.push(answer);
            match settled {
                op::Settled::Applied => {}
                op::Settled::Refused => continue,
                op::Settled::Fatal(e) => return Err(e),
            }
            let Cx {
                writes,
                version: v,
                fx,
                import_point,
                ..
            } = cx;
            for (k, val) in writes {
                dirty = true;
                match val {
                    Some(val) => txn.put(&k, &val).await?,
                    None => txn.delete(&k).await?,
                }
            }
            for (v, changes) in &fx.log {
                dirty = true;
                let body = changes::encode_batch(now, *v, changes);
                txn.put(&changes::log_key(*v), &body).await?;
            }
            if is_import {
                // Only a copy that has seen nothing but imports (or was empty) stays one.
                let present = self.import_marker_present(&mut *txn).await?;
                if !diverged && (present || start_version == 0 || marker.is_some()) {
                    marker = Some(Some(import_point));
                }
            } else if v != version {
                diverged = true;
                marker = Some(None);
            }
            version = v;
            all.changed.extend(fx.changed);
            all.queue_changed |= fx.queue_changed;
            all.stats.add(&fx.stats);
        }
        if version != start_version {
            txn.put(layout::META_VERSION, &layout::encode_u64(version))
                .await?;
            if self.shared {
                let entry = feed::encode(
                    start_version,
                    now,
                    all.queue_changed,
                    all.changed.iter().map(|(k, _)| k.as_slice()),
                );
                txn.put(&feed::key(version), &entry).await?;
            }
            dirty = true;
        }
        let marker_before = self.import_marker;
        match marker {
            Some(Some(point)) => {
                txn.put(layout::META_IMPORTED, point.as_bytes()).await?;
                self.import_marker = Some(true);
                dirty = true;
            }
            Some(None) => {
                if self.import_marker_present(&mut *txn).await? {
                    txn.delete(layout::META_IMPORTED).await?;
                    dirty = true;
                }
                self.import_marker = Some(false);
            }
            None => {}
        }
        if dirty {
            let started = std::time::Instant::now();
            if let Err(e) = txn.commit().await {
                self.import_marker = marker_before;
                if matches!(
                    e,
                    BackendError::Conflict(_) | BackendError::UnknownOutcome(_)
                ) {
                    return Err(e);
                }
                // The durable state is unknown: refuse further writes until reopened.
                tracing::error!(error = %e, "commit failed; database poisoned");
                let reason = match &e {
                    BackendError::Poisoned(s) => s.clone(),
                    other => other.to_string().into(),
                };
                self.poisoned = Some(BackendError::Poisoned(reason));
                return Err(e);
            }
            let seconds = started.elapsed().as_secs_f64();
            self.stats.record_commit(applied.len(), seconds, &all.stats);
        } else {
            self.stats.record_effects(&all.stats);
        }
        if version != start_version {
            self.commits
                .send_replace(Versionstamp::from_version(version));
        }
        Ok(all)
    }
}
