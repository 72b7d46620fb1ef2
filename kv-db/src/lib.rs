//! The Deno KV semantics, written once over any [`Backend`]: versionstamp allocation, checks,
//! SET/DELETE/SUM/MIN/MAX/versionstamped keys, expiry, queues and watch fan-out, with group
//! commit. Every engine behaves identically because none of this lives in an engine.
//!
//! ```
//! use kv_db::{Db, DbConfig};
//! use kv_engine_memory::MemoryBackend;
//! use kv_traits::{AtomicWrite, CommitResult, Consistency, Database, KvValue, Mutation, ReadRange};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let db = Db::open(MemoryBackend::new(), DbConfig::default()).await.unwrap();
//! let write = AtomicWrite { mutations: vec![Mutation::set(b"\x02a\x00".to_vec(), KvValue::U64(1))], ..Default::default() };
//! let CommitResult::Committed(vs) = db.atomic_write(write).await.unwrap() else { panic!() };
//! let out = db.snapshot_read(vec![ReadRange::single(b"\x02a\x00")], Consistency::Strong).await.unwrap();
//! assert_eq!(out[0][0].versionstamp, vs);
//! db.close().await.unwrap();
//! # });
//! ```
//!
//! Writes of all callers go through one writer task that gathers whatever is pending into one
//! backend transaction and one commit (one fsync on durable engines). A lone writer never waits
//! for a batch window. Each logical write is applied through its own overlay: if it fails (a check
//! or a type error), nothing of it reaches the transaction and the others still commit.

#![warn(missing_docs)]

pub mod changes;
pub mod layout;
mod mutate;
mod watch;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kv_traits::{
    AtomicWrite, Backend, BackendError, Clock, CommitResult, Consistency, Database, KvEntry,
    KvError, Limits, QueueLease, QueueMessage, ReadRange, ReadTxn, SystemClock, Versionstamp,
    WatchKeyOutput, WatchStream,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub use crate::changes::{ChangeBatch, ExportEntry, ImportOp, KeyChange};
use crate::layout::{Record, CHANGE_LOG, DATA, EXPIRY, QUEUE_LEASE, QUEUE_READY};
use crate::watch::WatchHub;
use crate::writer::{Op, OpResult, Request, Writer};

/// Configuration of a [`Db`].
#[derive(Clone)]
pub struct DbConfig {
    /// Limits enforced on requests.
    pub limits: Limits,
    /// Time source for expiry and queues.
    pub clock: Arc<dyn Clock>,
    /// Run the expiry sweep and queue lease expiry in the background. Tests with a
    /// [`kv_traits::ManualClock`] turn this off and call [`Db::run_maintenance`] themselves.
    pub background_tasks: bool,
    /// How often the background task looks for expired keys and leases.
    pub maintenance_interval: Duration,
    /// How long a dequeued message is leased to its listener before it is redelivered.
    pub queue_lease: Duration,
    /// Read-only database: writes fail with [`KvError::WriteDisabled`]. [`Db::import`] still
    /// works (read replicas apply what they follow with it).
    pub read_only: bool,
    /// Keep a durable log of every commit's changes for a backup shipper (see
    /// [`Db::read_changes`]). Costs one extra row per commit until it is trimmed.
    pub change_log: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            background_tasks: true,
            maintenance_interval: Duration::from_millis(500),
            queue_lease: Duration::from_secs(30),
            read_only: false,
            change_log: false,
        }
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Request>,
    hub: Arc<WatchHub>,
    queue_notify: Arc<Notify>,
    config: DbConfig,
    closed: AtomicBool,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    commits: Arc<tokio::sync::watch::Sender<Versionstamp>>,
}

/// A Deno KV database over a [`Backend`]. Cloning gives another handle to the same database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl Db {
    /// Opens the database on `backend`, initialising an empty store or checking the format of
    /// an existing one, and starts the writer (and, if configured, the background tasks).
    /// Must be called inside a tokio runtime.
    pub async fn open(backend: impl Backend, config: DbConfig) -> Result<Db, KvError> {
        let backend: Arc<dyn Backend> = Arc::new(backend);
        check_format(&*backend, config.read_only).await?;
        if !config.read_only {
            mark_change_log(&*backend, config.change_log).await?;
        }
        let current = read_version(&*backend).await?;
        let commits = Arc::new(tokio::sync::watch::channel(Versionstamp::from_version(current)).0);
        let (tx, rx) = mpsc::channel(4096);
        let hub = Arc::new(WatchHub::default());
        let queue_notify = Arc::new(Notify::new());
        let writer = Writer {
            backend: backend.clone(),
            clock: config.clock.clone(),
            hub: hub.clone(),
            queue_notify: queue_notify.clone(),
            poisoned: None,
            change_log: config.change_log && !config.read_only,
            commits: commits.clone(),
            import_marker: None,
        };
        let writer_task = tokio::spawn(writer.run(rx));
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let db = Db {
            inner: Arc::new(Inner {
                backend,
                tx,
                hub,
                queue_notify,
                config,
                closed: AtomicBool::new(false),
                shutdown,
                tasks: Mutex::new(vec![writer_task]),
                commits,
            }),
        };
        if db.inner.config.background_tasks && !db.inner.config.read_only {
            let task = tokio::spawn(background(
                Arc::downgrade(&db.inner),
                db.inner.shutdown.subscribe(),
            ));
            if let Ok(mut t) = db.inner.tasks.lock() {
                t.push(task);
            }
        }
        Ok(db)
    }

    /// The configuration the database was opened with.
    pub fn config(&self) -> &DbConfig {
        &self.inner.config
    }

    /// Runs the expiry sweep and the queue lease-expiry pass now, at the clock's current time,
    /// until nothing due is left (each pass of up to 1000 keys is its own commit). Returns the
    /// number of expired keys deleted.
    pub async fn run_maintenance(&self) -> Result<usize, KvError> {
        self.inner.maintain().await
    }

    /// Versionstamp of the latest commit (all zero for an empty database).
    pub async fn current_versionstamp(&self) -> Result<Versionstamp, KvError> {
        self.inner.check_open()?;
        Ok(Versionstamp::from_version(
            read_version(&*self.inner.backend).await?,
        ))
    }

    /// While the database holds only what [`Db::import`] put there (a restored copy or a
    /// replica): the versionstamp the imports reached. `None` once anything else committed
    /// (a write, an expiry sweep, a dead letter), i.e. once the copy has diverged from its
    /// source.
    pub async fn imported_through(&self) -> Result<Option<Versionstamp>, KvError> {
        self.inner.check_open()?;
        let mut txn = self.inner.backend.begin_read().await?;
        match txn.get(layout::META_IMPORTED).await? {
            Some(b) => Ok(Some(Versionstamp::from_slice(&b).ok_or_else(|| {
                BackendError::Corrupt("the import marker is not a versionstamp".into())
            })?)),
            None => Ok(None),
        }
    }

    /// A receiver whose value is the latest committed versionstamp; it changes on every commit
    /// that allocates a version (writes, expiry sweeps, dead letters, imports).
    pub fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<Versionstamp> {
        self.inner.commits.subscribe()
    }

    /// With the change log on: the versionstamp after which it is complete (every commit with a
    /// larger versionstamp is in it until trimmed). It is the database version at the moment
    /// logging was turned on, and is persisted. `None` when the change log is off.
    pub async fn change_log_since(&self) -> Result<Option<Versionstamp>, KvError> {
        self.inner.check_open()?;
        // A database opened without logging (or read-only) does not log, whatever the store
        // remembers from an earlier run.
        if !self.inner.config.change_log || self.inner.config.read_only {
            return Ok(None);
        }
        let mut txn = self.inner.backend.begin_read().await?;
        match txn.get(layout::META_CHANGE_LOG_SINCE).await? {
            Some(b) => Ok(Some(Versionstamp::from_version(layout::decode_u64(&b)?))),
            None => Ok(None),
        }
    }

    /// Up to `max_batches` logged commits with a versionstamp above `after` (`None`: from the
    /// oldest kept), in commit order. A commit is in the log if and only if it committed.
    pub async fn read_changes(
        &self,
        after: Option<Versionstamp>,
        max_batches: usize,
    ) -> Result<Vec<ChangeBatch>, KvError> {
        self.inner.check_open()?;
        let start = match after {
            Some(vs) => match vs.version().checked_add(1) {
                Some(v) => changes::log_key(v),
                None => return Ok(Vec::new()),
            },
            None => vec![CHANGE_LOG],
        };
        let mut txn = self.inner.backend.begin_read().await?;
        let rows = txn
            .scan(&start, &[CHANGE_LOG + 1], max_batches, false)
            .await?;
        rows.iter()
            .map(|(k, v)| changes::decode_batch(k, v).map_err(KvError::from))
            .collect()
    }

    /// Deletes logged commits with a versionstamp up to and including `through` (once a
    /// shipper has stored them safely elsewhere).
    pub async fn trim_changes(&self, through: Versionstamp) -> Result<(), KvError> {
        loop {
            match self
                .inner
                .submit(Op::Trim {
                    through: through.version(),
                })
                .await?
            {
                OpResult::Trim(true) => continue,
                OpResult::Trim(false) => return Ok(()),
                _ => return Err(unexpected_reply()),
            }
        }
    }

    /// Raw data entries with `start <= key < end` (encoded user keys), ascending, at most
    /// `limit`, from one consistent snapshot, with that snapshot's versionstamp. Entries that
    /// have expired but are not swept yet are included, with their expiry.
    pub async fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<(Vec<ExportEntry>, Versionstamp), KvError> {
        self.inner.check_open()?;
        let mut txn = self.inner.backend.begin_read().await?;
        let version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let mut out = Vec::new();
        if start < end && limit > 0 {
            let rows = txn
                .scan(
                    &layout::prefixed(DATA, start),
                    &layout::prefixed(DATA, end),
                    limit,
                    false,
                )
                .await?;
            out.reserve(rows.len());
            for (mut k, v) in rows {
                let rec = Record::decode_owned(v)?;
                k.remove(0);
                out.push(ExportEntry {
                    key: k,
                    value: rec.value,
                    versionstamp: rec.versionstamp,
                    expire_at_ms: rec.expire_at_ms,
                });
            }
        }
        Ok((out, Versionstamp::from_version(version)))
    }

    /// Applies `ops` in one commit as they are, without checks or limits (restore and read
    /// replicas); works on a read-only database too. Afterwards the database version is at
    /// least `advance_to`, so later writes get larger versionstamps, and
    /// [`Db::imported_through`] reports `advance_to` (all 10 bytes) while the database holds
    /// nothing but imports. Watchers of the touched keys are notified. Imports are not written
    /// to the change log, which therefore counts as complete only after them.
    pub async fn import(
        &self,
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
    ) -> Result<(), KvError> {
        let op = Op::Import { ops, advance_to };
        match self.inner.submit(op).await? {
            OpResult::Import => Ok(()),
            _ => Err(unexpected_reply()),
        }
    }
}

fn unexpected_reply() -> KvError {
    KvError::Backend(BackendError::Corrupt("unexpected writer reply".into()))
}

async fn read_version(backend: &dyn Backend) -> Result<u64, KvError> {
    let mut r = backend.begin_read().await?;
    match r.get(layout::META_VERSION).await? {
        Some(b) => Ok(layout::decode_u64(&b)?),
        None => Ok(0),
    }
}

/// Records from which version the change log is complete when logging is turned on, and
/// forgets it when logging is turned off (so a later re-enable starts a new, later point).
async fn mark_change_log(backend: &dyn Backend, on: bool) -> Result<(), KvError> {
    let mut r = backend.begin_read().await?;
    let present = r.get(layout::META_CHANGE_LOG_SINCE).await?.is_some();
    drop(r);
    if present == on {
        return Ok(());
    }
    let mut w = backend.begin_write().await?;
    if on {
        let version = match w.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        w.put(layout::META_CHANGE_LOG_SINCE, &layout::encode_u64(version))
            .await?;
    } else {
        // Whatever was logged before is useless without the marker: a later re-enable starts
        // from scratch.
        w.delete(layout::META_CHANGE_LOG_SINCE).await?;
        loop {
            let old = w
                .scan(&[CHANGE_LOG], &[CHANGE_LOG + 1], 1000, false)
                .await?;
            if old.is_empty() {
                break;
            }
            for (k, _) in old {
                w.delete(&k).await?;
            }
        }
    }
    w.commit().await?;
    Ok(())
}

async fn check_format(backend: &dyn Backend, read_only: bool) -> Result<(), KvError> {
    let mut r = backend.begin_read().await?;
    match r.get(layout::META_FORMAT).await? {
        Some(b) => {
            let found = layout::decode_u64(&b)?;
            if found != layout::FORMAT_VERSION {
                return Err(KvError::Backend(BackendError::UnsupportedFormat {
                    found,
                    supported: layout::FORMAT_VERSION,
                }));
            }
            Ok(())
        }
        None if read_only => Ok(()),
        None => {
            drop(r);
            let mut w = backend.begin_write().await?;
            if w.get(layout::META_FORMAT).await?.is_none() {
                let any = w.scan(&[], &[0xff], 1, false).await?;
                if !any.is_empty() {
                    return Err(KvError::Backend(BackendError::Corrupt(
                        "the store holds data but no Deno KV format marker".into(),
                    )));
                }
                w.put(
                    layout::META_FORMAT,
                    &layout::encode_u64(layout::FORMAT_VERSION),
                )
                .await?;
                w.put(layout::META_VERSION, &layout::encode_u64(0)).await?;
                w.commit().await?;
            }
            Ok(())
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), KvError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        Ok(())
    }

    async fn submit(&self, op: Op) -> Result<OpResult, KvError> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { op, reply })
            .await
            .map_err(|_| KvError::Closed)?;
        rx.await.map_err(|_| KvError::Closed)?
    }

    /// Runs maintenance passes until nothing due is left; returns the expired keys deleted.
    async fn maintain(&self) -> Result<usize, KvError> {
        let mut total = 0;
        loop {
            match self.submit(Op::Maintenance).await? {
                OpResult::Maintenance(n, more) => {
                    total += n;
                    if !more {
                        return Ok(total);
                    }
                }
                _ => {
                    return Err(KvError::Backend(BackendError::Corrupt(
                        "unexpected writer reply".into(),
                    )))
                }
            }
        }
    }

    /// Reads up to `limit` live entries of one range.
    async fn read_range(
        &self,
        txn: &mut dyn ReadTxn,
        r: &ReadRange,
        now: u64,
    ) -> Result<Vec<KvEntry>, KvError> {
        let mut out = Vec::new();
        if r.start >= r.end {
            return Ok(out);
        }
        let limit = r.limit as usize;
        let mut start = layout::prefixed(DATA, &r.start);
        let mut end = layout::prefixed(DATA, &r.end);
        loop {
            let want = limit - out.len();
            let page = txn.scan(&start, &end, want, r.reverse).await?;
            let n = page.len();
            let last = page.last().map(|(k, _)| k.clone());
            for (mut k, v) in page {
                let rec = Record::decode_owned(v)?;
                if !rec.is_expired(now) {
                    k.remove(0); // the DATA prefix
                    out.push(KvEntry {
                        key: k,
                        value: rec.value,
                        versionstamp: rec.versionstamp,
                    });
                }
            }
            if out.len() >= limit || n < want {
                return Ok(out);
            }
            let Some(last) = last else { return Ok(out) };
            if r.reverse {
                end = last;
            } else {
                start = last;
                start.push(0);
            }
        }
    }

    /// Reads the watched keys and the commit version they reflect, from one snapshot.
    async fn read_watched(&self, keys: &[Vec<u8>]) -> Result<(u64, Vec<Option<KvEntry>>), KvError> {
        let mut txn = self.backend.begin_read().await?;
        let version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let now = self.config.clock.now_ms();
        let mut entries = Vec::with_capacity(keys.len());
        for k in keys {
            let entry = match txn.get(&layout::prefixed(DATA, k)).await? {
                Some(b) => {
                    let rec = Record::decode_owned(b)?;
                    (!rec.is_expired(now)).then(|| KvEntry {
                        key: k.clone(),
                        value: rec.value,
                        versionstamp: rec.versionstamp,
                    })
                }
                None => None,
            };
            entries.push(entry);
        }
        Ok((version, entries))
    }

    /// The ready time of the earliest queued (not leased) message.
    async fn earliest_ready(&self) -> Result<Option<u64>, KvError> {
        let mut txn = self.backend.begin_read().await?;
        let first = txn
            .scan(&[QUEUE_READY], &[QUEUE_READY + 1], 1, false)
            .await?;
        match first.first() {
            Some((k, _)) => Ok(Some(layout::split_timed(k)?.0)),
            None => Ok(None),
        }
    }

    /// True when an expired key or an expired lease awaits maintenance.
    async fn maintenance_due(&self) -> Result<bool, KvError> {
        let now = self.config.clock.now_ms();
        let mut txn = self.backend.begin_read().await?;
        for prefix in [EXPIRY, QUEUE_LEASE] {
            let end = layout::timed(prefix, now.saturating_add(1), &[]);
            if !txn.scan(&[prefix], &end, 1, false).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

async fn background(
    inner: std::sync::Weak<Inner>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let Some(db) = inner.upgrade() else { return };
        let interval = db.config.maintenance_interval;
        match db.maintenance_due().await {
            Ok(true) => {
                if let Err(e) = db.maintain().await {
                    tracing::warn!(error = %e, "background maintenance failed");
                }
            }
            Ok(false) => {}
            Err(KvError::Closed) | Err(KvError::Backend(BackendError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "background maintenance check failed"),
        }
        drop(db);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

struct WatchState {
    inner: Arc<Inner>,
    keys: Vec<Vec<u8>>,
    receivers: Vec<tokio::sync::watch::Receiver<u64>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Version read last time and what each key held then; `None` before the first notification.
    last: Option<(u64, Vec<Option<Versionstamp>>)>,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<Vec<WatchKeyOutput>, KvError>> {
        loop {
            if let Some((version, _)) = &self.last {
                let v = *version;
                if self.receivers.is_empty() {
                    // Nothing can ever change: wait for the database to close.
                    let _ = self.shutdown.wait_for(|s| *s).await;
                    return None;
                }
                let waits = self
                    .receivers
                    .iter_mut()
                    .map(|rx| Box::pin(rx.wait_for(move |x| *x > v)));
                tokio::select! {
                    _ = futures::future::select_all(waits) => {}
                    _ = self.shutdown.wait_for(|s| *s) => return None,
                }
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return None;
            }
            let (version, entries) = match self.inner.read_watched(&self.keys).await {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            let stamps: Vec<Option<Versionstamp>> = entries
                .iter()
                .map(|e| e.as_ref().map(|e| e.versionstamp))
                .collect();
            let out: Vec<WatchKeyOutput> = match &self.last {
                None => entries.into_iter().map(WatchKeyOutput::Changed).collect(),
                Some((_, prev)) => entries
                    .into_iter()
                    .zip(prev)
                    .map(|(e, p)| {
                        if e.as_ref().map(|e| e.versionstamp) == *p {
                            WatchKeyOutput::Unchanged
                        } else {
                            WatchKeyOutput::Changed(e)
                        }
                    })
                    .collect(),
            };
            let first = self.last.is_none();
            self.last = Some((version, stamps));
            if first || out.iter().any(|o| matches!(o, WatchKeyOutput::Changed(_))) {
                return Some(Ok(out));
            }
        }
    }
}

#[async_trait]
impl Database for Db {
    fn limits(&self) -> Limits {
        self.inner.config.limits.clone()
    }

    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        _consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.config.limits.validate_read(&ranges)?;
        let mut txn = inner.backend.begin_read().await?;
        let now = inner.config.clock.now_ms();
        let mut out = Vec::with_capacity(ranges.len());
        for r in &ranges {
            out.push(inner.read_range(&mut *txn, r, now).await?);
        }
        Ok(out)
    }

    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        let inner = &self.inner;
        inner.check_open()?;
        // An over-limit write is a request error even where writes are disabled.
        inner
            .config
            .limits
            .validate_write(&write, inner.config.clock.now_ms())?;
        if inner.config.read_only {
            return Err(KvError::WriteDisabled);
        }
        match inner.submit(Op::Write(write)).await? {
            OpResult::Write(r) => Ok(r),
            _ => Err(KvError::Backend(BackendError::Corrupt(
                "unexpected writer reply".into(),
            ))),
        }
    }

    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.config.limits.validate_watch(&keys)?;
        if keys.iter().any(|k| k.is_empty()) {
            return Err(KvError::Limit(kv_traits::LimitError::EmptyKey));
        }
        let receivers = keys.iter().map(|k| inner.hub.subscribe(k)).collect();
        let state = WatchState {
            inner: inner.clone(),
            keys,
            receivers,
            shutdown: inner.shutdown.subscribe(),
            last: None,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            s.next().await.map(|item| (item, s))
        });
        Ok(stream.boxed())
    }

    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        let inner = &self.inner;
        inner.check_open()?;
        if inner.config.read_only {
            return Err(KvError::WriteDisabled);
        }
        let give_up = tokio::time::Instant::now() + wait;
        let lease_ms = inner.config.queue_lease.as_millis() as u64;
        let mut shutdown = inner.shutdown.subscribe();
        loop {
            let notified = inner.queue_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Look first with a read transaction; only a ready message needs the writer.
            let earliest = inner.earliest_ready().await?;
            let next_ready = match earliest {
                Some(ts) if ts <= inner.config.clock.now_ms() => {
                    match inner.submit(Op::Dequeue { lease_ms }).await? {
                        OpResult::Dequeue(Some(m), _) => return Ok(Some(m)),
                        OpResult::Dequeue(None, next) => next,
                        _ => {
                            return Err(KvError::Backend(BackendError::Corrupt(
                                "unexpected writer reply".into(),
                            )))
                        }
                    }
                }
                other => other,
            };
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Ok(None);
            }
            // Wake at the next ready time, on a new or re-queued message, or at least every
            // second (the clock may be moved by tests), but never past the caller's wait.
            let mut sleep_for = (give_up - now).min(Duration::from_secs(1));
            if let Some(ts) = next_ready {
                let until = ts.saturating_sub(inner.config.clock.now_ms()).max(1);
                sleep_for = sleep_for.min(Duration::from_millis(until));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = shutdown.wait_for(|s| *s) => return Err(KvError::Closed),
            }
        }
    }

    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        match self.inner.submit(Op::Finish { lease, success }).await? {
            OpResult::Finish => Ok(()),
            _ => Err(KvError::Backend(BackendError::Corrupt(
                "unexpected writer reply".into(),
            ))),
        }
    }

    async fn close(&self) -> Result<(), KvError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Let writes queued before the close finish, then stop everything.
        let (reply, rx) = oneshot::channel();
        if inner
            .tx
            .send(Request {
                op: Op::Shutdown,
                reply,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        inner.closed.store(true, Ordering::Release);
        let _ = inner.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = match inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        inner.backend.close().await?;
        Ok(())
    }
}
