//! The single writer: gathers every state-changing operation (atomic writes, dequeues,
//! finishes, maintenance) into batches that share one backend transaction and one commit
//! (group commit). Each operation is applied through its own overlay, so an operation that fails
//! leaves nothing behind while the rest of the batch still commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use kv_traits::key::versionstamped_key;
use kv_traits::{
    AtomicWrite, Backend, BackendError, Clock, CommitResult, KvError, KvValue, MutationKind,
    QueueLease, QueueMessage, Versionstamp, WriteTxn, DEFAULT_BACKOFF_SCHEDULE,
};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::changes::{self, ImportOp, KeyChange};
use crate::layout::{
    self, QueueRecord, Record, CHANGE_LOG, DATA, EXPIRY, QUEUE_LEASE, QUEUE_READY, QUEUE_RUNNING,
};
use crate::mutate;
use crate::watch::WatchHub;

/// Most operations gathered into one backend transaction.
const MAX_BATCH: usize = 512;
/// Most expired keys or leases handled by one maintenance operation.
const MAINTENANCE_CHUNK: usize = 1000;

/// A state-changing operation.
pub(crate) enum Op {
    Write(AtomicWrite),
    Dequeue {
        lease_ms: u64,
    },
    Finish {
        lease: QueueLease,
        success: bool,
    },
    Maintenance,
    /// Puts a leased message back as if it had never been delivered (its requester went away
    /// before receiving it).
    Release(QueueLease),
    /// Deletes change-log entries up to and including a version.
    Trim {
        through: u64,
    },
    /// Stores raw entries (restore, replicas).
    Import {
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
    },
    Shutdown,
}

/// The result of an [`Op`].
pub(crate) enum OpResult {
    Write(CommitResult),
    /// A leased message, or none and the ready time of the earliest waiting message.
    Dequeue(Option<QueueMessage>, Option<u64>),
    Finish,
    /// Number of expired keys deleted, and whether more work was due than one pass handles.
    Maintenance(usize, bool),
    /// Whether more change-log entries remain to trim.
    Trim(bool),
    Import,
    Shutdown,
}

pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<OpResult, KvError>>,
}

/// Errors while applying one operation: `Op` discards only that operation, `Fatal` aborts the
/// whole batch (the backend failed, so the transaction's state is unknown).
enum ApplyError {
    Op(KvError),
    Fatal(BackendError),
}

impl From<BackendError> for ApplyError {
    fn from(e: BackendError) -> Self {
        ApplyError::Fatal(e)
    }
}

impl From<KvError> for ApplyError {
    fn from(e: KvError) -> Self {
        ApplyError::Op(e)
    }
}

/// The version after `v`, or an error once the 64-bit version space is used up (only a corrupt
/// or hostile store or import can get there).
fn next_version(v: u64) -> Result<u64, BackendError> {
    v.checked_add(1).ok_or_else(|| {
        BackendError::Corrupt(
            "the database version is at its maximum; no further commit is possible".into(),
        )
    })
}

/// Buffered writes of one operation, read through to the transaction.
#[derive(Default)]
struct Overlay {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// What one operation did, merged into the batch only if it succeeds.
#[derive(Default)]
struct Effects {
    /// User keys changed, with the version of the change.
    changed: Vec<(Vec<u8>, u64)>,
    queue_changed: bool,
    /// Change-log batches: (version, post-images).
    log: Vec<(u64, Vec<KeyChange>)>,
}

struct Cx<'a> {
    txn: &'a mut dyn WriteTxn,
    ov: Overlay,
    version: u64,
    now: u64,
    fx: Effects,
    /// Record post-images for the change log.
    logging: bool,
    /// Post-images of the logical write being applied.
    pending: Vec<KeyChange>,
    /// Where an import left the database.
    import_point: Versionstamp,
}

impl Cx<'_> {
    /// Records the state of `key` after the logical write being applied, for the change log.
    fn log_change(&mut self, key: &[u8], value: Option<&KvValue>, expire_at_ms: Option<u64>) {
        if self.logging {
            self.pending.push(KeyChange {
                key: key.to_vec(),
                value: value.cloned(),
                expire_at_ms,
            });
        }
    }

    /// Raises the persisted start of the change log to `version`, if logging was ever on and it
    /// is lower: the log is complete only after commits it does not hold.
    async fn raise_change_log_since(&mut self, version: u64) -> Result<(), BackendError> {
        if let Some(b) = self.get(layout::META_CHANGE_LOG_SINCE).await? {
            if layout::decode_u64(&b)? < version {
                self.put(
                    layout::META_CHANGE_LOG_SINCE.to_vec(),
                    layout::encode_u64(version).to_vec(),
                );
            }
        }
        Ok(())
    }

    /// Ends a logical write at `version`: its post-images become one change-log batch.
    fn seal(&mut self, version: u64) {
        if self.logging && !self.pending.is_empty() {
            let changes = changes::dedupe(std::mem::take(&mut self.pending));
            self.fx.log.push((version, changes));
        }
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match self.ov.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.txn.get(key).await,
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ov.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.ov.writes.insert(key, None);
    }

    async fn record(&mut self, user_key: &[u8]) -> Result<Option<Record>, BackendError> {
        match self.get(&layout::prefixed(DATA, user_key)).await? {
            Some(b) => Ok(Some(Record::decode_owned(b)?)),
            None => Ok(None),
        }
    }

    /// The record if present and not expired.
    async fn live(&mut self, user_key: &[u8]) -> Result<Option<Record>, BackendError> {
        let now = self.now;
        Ok(self.record(user_key).await?.filter(|r| !r.is_expired(now)))
    }

    async fn set_record(&mut self, user_key: &[u8], rec: Record) -> Result<(), BackendError> {
        if let Some(old) = self.record(user_key).await? {
            if let Some(t) = old.expire_at_ms {
                self.delete(layout::timed(EXPIRY, t, user_key));
            }
        }
        if let Some(t) = rec.expire_at_ms {
            self.put(layout::timed(EXPIRY, t, user_key), Vec::new());
        }
        self.log_change(user_key, Some(&rec.value), rec.expire_at_ms);
        self.put(layout::prefixed(DATA, user_key), rec.encode());
        self.fx
            .changed
            .push((user_key.to_vec(), rec.versionstamp.version()));
        Ok(())
    }

    async fn delete_record(&mut self, user_key: &[u8], version: u64) -> Result<(), BackendError> {
        if let Some(old) = self.record(user_key).await? {
            if let Some(t) = old.expire_at_ms {
                self.delete(layout::timed(EXPIRY, t, user_key));
            }
            self.delete(layout::prefixed(DATA, user_key));
            self.fx.changed.push((user_key.to_vec(), version));
            self.log_change(user_key, None, None);
        }
        Ok(())
    }

    async fn apply_write(&mut self, w: &AtomicWrite) -> Result<OpResult, ApplyError> {
        let mut failed = Vec::new();
        for (i, c) in w.checks.iter().enumerate() {
            let current = self.live(&c.key).await?.map(|r| r.versionstamp);
            if current != c.versionstamp {
                failed.push(i as u32);
            }
        }
        if !failed.is_empty() {
            return Ok(OpResult::Write(CommitResult::CheckFailed(failed)));
        }
        let version = next_version(self.version)?;
        let vs = Versionstamp::from_version(version);
        for m in &w.mutations {
            match &m.kind {
                MutationKind::Set(v) => {
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&m.key, rec).await?;
                }
                MutationKind::Delete => self.delete_record(&m.key, version).await?,
                MutationKind::Sum {
                    value,
                    min,
                    max,
                    clamp,
                } => {
                    let cur = self.live(&m.key).await?.map(|r| r.value);
                    let new = mutate::sum(cur.as_ref(), value, min, max, *clamp)?;
                    self.set_record(
                        &m.key,
                        Record {
                            value: new,
                            versionstamp: vs,
                            expire_at_ms: None,
                        },
                    )
                    .await?;
                }
                MutationKind::Min(v) | MutationKind::Max(v) => {
                    let is_max = matches!(m.kind, MutationKind::Max(_));
                    let cur = self.live(&m.key).await?.map(|r| r.value);
                    let new = mutate::min_max(cur.as_ref(), v, is_max)?;
                    self.set_record(
                        &m.key,
                        Record {
                            value: new,
                            versionstamp: vs,
                            expire_at_ms: None,
                        },
                    )
                    .await?;
                }
                MutationKind::SetSuffixVersionstampedKey(v) => {
                    let key = versionstamped_key(&m.key, &vs);
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&key, rec).await?;
                }
            }
        }
        for e in &w.enqueues {
            let id: [u8; 16] = rand::random();
            let rec = QueueRecord {
                attempts: 0,
                lease_deadline_ms: 0,
                backoff: e
                    .backoff_schedule
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
                keys_if_undelivered: e.keys_if_undelivered.clone(),
                payload: e.payload.clone(),
            };
            self.put(layout::timed(QUEUE_READY, e.deadline_ms, &id), rec.encode());
            self.fx.queue_changed = true;
        }
        self.version = version;
        self.seal(version);
        Ok(OpResult::Write(CommitResult::Committed(vs)))
    }

    async fn apply_dequeue(&mut self, lease_ms: u64) -> Result<OpResult, ApplyError> {
        let ready_end = layout::timed(QUEUE_READY, self.now.saturating_add(1), &[]);
        let first = self.txn.scan(&[QUEUE_READY], &ready_end, 1, false).await?;
        let Some((key, value)) = first.into_iter().next() else {
            let next = self
                .txn
                .scan(&[QUEUE_READY], &[QUEUE_READY + 1], 1, false)
                .await?;
            let next_ts = match next.first() {
                Some((k, _)) => Some(layout::split_timed(k)?.0),
                None => None,
            };
            return Ok(OpResult::Dequeue(None, next_ts));
        };
        let (_, id_bytes) = layout::split_timed(&key)?;
        let id: [u8; 16] = id_bytes
            .try_into()
            .map_err(|_| BackendError::Corrupt("queue message id is not 16 bytes".into()))?;
        let mut rec = QueueRecord::decode(&value)?;
        rec.attempts = rec.attempts.saturating_add(1);
        // A ready record keeps its previous lease deadline, so every delivery gets a distinct,
        // later lease even when it is redelivered within the same millisecond.
        rec.lease_deadline_ms = self
            .now
            .saturating_add(lease_ms)
            .max(rec.lease_deadline_ms.saturating_add(1));
        self.delete(key);
        self.put(layout::prefixed(QUEUE_RUNNING, &id), rec.encode());
        self.put(
            layout::timed(QUEUE_LEASE, rec.lease_deadline_ms, &id),
            Vec::new(),
        );
        let msg = QueueMessage {
            lease: QueueLease {
                id,
                deadline_ms: rec.lease_deadline_ms,
            },
            payload: rec.payload,
            attempt: rec.attempts,
        };
        Ok(OpResult::Dequeue(Some(msg), None))
    }

    /// Takes a running message out of the running set; `None` if the lease no longer holds.
    async fn take_running(
        &mut self,
        lease: QueueLease,
    ) -> Result<Option<QueueRecord>, BackendError> {
        let running_key = layout::prefixed(QUEUE_RUNNING, &lease.id);
        let Some(bytes) = self.get(&running_key).await? else {
            return Ok(None);
        };
        let rec = QueueRecord::decode(&bytes)?;
        if rec.lease_deadline_ms != lease.deadline_ms {
            return Ok(None);
        }
        self.delete(running_key);
        self.delete(layout::timed(QUEUE_LEASE, lease.deadline_ms, &lease.id));
        Ok(Some(rec))
    }

    /// A failed delivery: retry after the next backoff step, or dead-letter, or drop.
    async fn requeue(&mut self, id: [u8; 16], mut rec: QueueRecord) -> Result<(), BackendError> {
        if !rec.backoff.is_empty() {
            let delay = rec.backoff.remove(0);
            self.put(
                layout::timed(QUEUE_READY, self.now.saturating_add(delay as u64), &id),
                rec.encode(),
            );
            self.fx.queue_changed = true;
        } else if !rec.keys_if_undelivered.is_empty() {
            self.version = next_version(self.version)?;
            let vs = Versionstamp::from_version(self.version);
            for key in &rec.keys_if_undelivered {
                let r = Record {
                    value: KvValue::V8(rec.payload.clone()),
                    versionstamp: vs,
                    expire_at_ms: None,
                };
                self.set_record(key, r).await?;
            }
            self.seal(self.version);
        }
        Ok(())
    }

    async fn apply_finish(
        &mut self,
        lease: QueueLease,
        success: bool,
    ) -> Result<OpResult, ApplyError> {
        let Some(rec) = self.take_running(lease).await? else {
            return Err(ApplyError::Op(KvError::LeaseNotFound));
        };
        if !success {
            self.requeue(lease.id, rec).await?;
        }
        Ok(OpResult::Finish)
    }

    async fn apply_release(&mut self, lease: QueueLease) -> Result<OpResult, ApplyError> {
        if let Some(mut rec) = self.take_running(lease).await? {
            rec.attempts = rec.attempts.saturating_sub(1);
            self.put(
                layout::timed(QUEUE_READY, self.now, &lease.id),
                rec.encode(),
            );
            self.fx.queue_changed = true;
        }
        Ok(OpResult::Finish)
    }

    async fn apply_maintenance(&mut self) -> Result<OpResult, ApplyError> {
        let now = self.now;
        // Expiry sweep: one commit (one new version) for everything deleted.
        let end = layout::timed(EXPIRY, now.saturating_add(1), &[]);
        let due = self
            .txn
            .scan(&[EXPIRY], &end, MAINTENANCE_CHUNK, false)
            .await?;
        let mut more = due.len() == MAINTENANCE_CHUNK;
        let sweep_version = next_version(self.version)?;
        let mut deleted = 0;
        for (k, _) in due {
            let (ts, user_key) = layout::split_timed(&k)?;
            let user_key = user_key.to_vec();
            self.delete(k);
            if let Some(rec) = self.record(&user_key).await? {
                if rec.expire_at_ms == Some(ts) {
                    self.delete(layout::prefixed(DATA, &user_key));
                    self.log_change(&user_key, None, None);
                    self.fx.changed.push((user_key, sweep_version));
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            self.version = sweep_version;
            self.seal(sweep_version);
        }
        // Lease expiry: treat as a failed delivery.
        let end = layout::timed(QUEUE_LEASE, now.saturating_add(1), &[]);
        let leases = self
            .txn
            .scan(&[QUEUE_LEASE], &end, MAINTENANCE_CHUNK, false)
            .await?;
        more |= leases.len() == MAINTENANCE_CHUNK;
        for (k, _) in leases {
            let (deadline, id) = layout::split_timed(&k)?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| BackendError::Corrupt("queue message id is not 16 bytes".into()))?;
            match self
                .take_running(QueueLease {
                    id,
                    deadline_ms: deadline,
                })
                .await?
            {
                Some(rec) => self.requeue(id, rec).await?,
                None => self.delete(k),
            }
        }
        Ok(OpResult::Maintenance(deleted, more))
    }

    async fn apply_trim(&mut self, through: u64) -> Result<OpResult, ApplyError> {
        let end = changes::log_key(through.saturating_add(1));
        let old = self
            .txn
            .scan(&[CHANGE_LOG], &end, MAINTENANCE_CHUNK, false)
            .await?;
        let more = old.len() == MAINTENANCE_CHUNK;
        let mut newest = None;
        for (k, _) in old {
            newest = Some(layout::split_timed(&k)?.0);
            self.delete(k);
        }
        // What is trimmed is no longer in the log (another reader would otherwise miss it).
        if let Some(newest) = newest {
            self.raise_change_log_since(newest).await?;
        }
        Ok(OpResult::Trim(more))
    }

    async fn apply_import(
        &mut self,
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
    ) -> Result<OpResult, ApplyError> {
        // Imports are not logged: they replay history that is already stored elsewhere.
        self.logging = false;
        if self.get(layout::META_FORMAT).await?.is_none() {
            self.put(
                layout::META_FORMAT.to_vec(),
                layout::encode_u64(layout::FORMAT_VERSION).to_vec(),
            );
        }
        // The point the imports reached, with all 10 bytes (a Deno Deploy versionstamp can have a
        // non-zero batch index; the database's own counter is the first 8 bytes).
        self.import_point = match advance_to {
            Some(a) if a.version() >= self.version => {
                self.version = a.version();
                a
            }
            _ => Versionstamp::from_version(self.version),
        };
        let version = self.version;
        // Imported changes are not in the change log either.
        self.raise_change_log_since(version).await?;
        for op in ops {
            match op {
                ImportOp::Put(e) => {
                    let rec = Record {
                        value: e.value,
                        versionstamp: e.versionstamp,
                        expire_at_ms: e.expire_at_ms,
                    };
                    self.set_record(&e.key, rec).await?;
                }
                ImportOp::Delete(k) => self.delete_record(&k, version).await?,
            }
        }
        // Watchers wait for a version above the one they read: signal the import's version.
        for c in &mut self.fx.changed {
            c.1 = version;
        }
        Ok(OpResult::Import)
    }
}

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
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.recv().await {
            // Let writers that are already running enqueue their requests before the batch is
            // cut, so a burst lands in one commit; a lone writer loses only a scheduler turn.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let shutdown = batch.iter().any(|r| matches!(r.op, Op::Shutdown));
            self.run_batch(batch).await;
            if shutdown {
                rx.close();
                while let Ok(r) = rx.try_recv() {
                    let _ = r.reply.send(Err(KvError::Closed));
                }
                return;
            }
        }
    }

    async fn run_batch(&mut self, mut batch: Vec<Request>) {
        if let Some(p) = &self.poisoned {
            let e = BackendError::Poisoned(p.to_string());
            for r in batch {
                let res = if matches!(r.op, Op::Shutdown) {
                    Ok(OpResult::Shutdown)
                } else {
                    Err(KvError::Backend(e.clone()))
                };
                let _ = r.reply.send(res);
            }
            return;
        }
        match self.apply_batch(&mut batch).await {
            Ok((results, fx)) => {
                for (k, v) in &fx.changed {
                    self.hub.notify(std::iter::once(k.as_slice()), *v);
                }
                if fx.queue_changed {
                    self.queue_notify.notify_waiters();
                }
                let mut undelivered = Vec::new();
                for (r, res) in batch.into_iter().zip(results) {
                    if let Err(Ok(OpResult::Dequeue(Some(m), _))) = r.reply.send(res) {
                        undelivered.push(m.lease);
                    }
                }
                if !undelivered.is_empty() {
                    // The caller of a dequeue went away after its message was leased: put the
                    // message back now instead of letting it wait for the lease to expire.
                    let releases = undelivered
                        .into_iter()
                        .map(|lease| Request {
                            op: Op::Release(lease),
                            reply: oneshot::channel().0,
                        })
                        .collect();
                    Box::pin(self.run_batch(releases)).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write batch failed");
                for r in batch {
                    let res = if matches!(r.op, Op::Shutdown) {
                        Ok(OpResult::Shutdown)
                    } else {
                        Err(KvError::Backend(e.clone()))
                    };
                    let _ = r.reply.send(res);
                }
            }
        }
    }

    async fn apply_batch(
        &mut self,
        batch: &mut [Request],
    ) -> Result<(Vec<Result<OpResult, KvError>>, Effects), BackendError> {
        let mut txn = self.backend.begin_write().await?;
        let start_version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let now = self.clock.now_ms();
        let mut version = start_version;
        let mut results = Vec::with_capacity(batch.len());
        let mut all = Effects::default();
        let mut dirty = false;
        // The import marker after this batch: Some(Some(point)) set, Some(None) cleared.
        let mut marker: Option<Option<Versionstamp>> = None;
        let mut diverged = false;
        for req in batch {
            let mut cx = Cx {
                txn: &mut *txn,
                ov: Overlay::default(),
                version,
                now,
                fx: Effects::default(),
                logging: self.change_log,
                pending: Vec::new(),
                import_point: Versionstamp::from_version(version),
            };
            let res = match &mut req.op {
                Op::Write(w) => cx.apply_write(w).await,
                // Nobody waits for this message any more: don't lease it to anyone.
                Op::Dequeue { .. } if req.reply.is_closed() => Err(ApplyError::Op(KvError::Closed)),
                Op::Dequeue { lease_ms } => cx.apply_dequeue(*lease_ms).await,
                Op::Trim { through } => cx.apply_trim(*through).await,
                Op::Import { ops, advance_to } => {
                    cx.apply_import(std::mem::take(ops), *advance_to).await
                }
                Op::Finish { lease, success } => cx.apply_finish(*lease, *success).await,
                Op::Maintenance => cx.apply_maintenance().await,
                Op::Release(lease) => cx.apply_release(*lease).await,
                Op::Shutdown => Ok(OpResult::Shutdown),
            };
            match res {
                Ok(r) => {
                    let Cx {
                        ov,
                        version: v,
                        fx,
                        import_point: cx_point,
                        ..
                    } = cx;
                    for (k, val) in ov.writes {
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
                    if matches!(r, OpResult::Import) {
                        // Only a copy that has seen nothing but imports (or was empty) stays one.
                        let present = self.import_marker_present(&mut *txn).await?;
                        if !diverged && (present || start_version == 0 || marker.is_some()) {
                            marker = Some(Some(cx_point));
                        }
                    } else if v != version {
                        diverged = true;
                        marker = Some(None);
                    }
                    version = v;
                    all.changed.extend(fx.changed);
                    all.queue_changed |= fx.queue_changed;
                    results.push(Ok(r));
                }
                Err(ApplyError::Op(e)) => results.push(Err(e)),
                Err(ApplyError::Fatal(e)) => return Err(e),
            }
        }
        if version != start_version {
            txn.put(layout::META_VERSION, &layout::encode_u64(version))
                .await?;
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
            if let Err(e) = txn.commit().await {
                self.import_marker = marker_before;
                if matches!(e, BackendError::Conflict(_)) {
                    return Err(e);
                }
                // The durable state is unknown: refuse further writes until reopened.
                tracing::error!(error = %e, "commit failed; database poisoned");
                let reason = match &e {
                    BackendError::Poisoned(s) => s.clone(),
                    other => other.to_string(),
                };
                self.poisoned = Some(BackendError::Poisoned(reason));
                return Err(e);
            }
        }
        if version != start_version {
            self.commits
                .send_replace(Versionstamp::from_version(version));
        }
        Ok((results, all))
    }
}
