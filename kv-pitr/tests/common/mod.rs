//! Helpers shared by the kv-pitr integration tests: key builders, database set-up, raw state
//! snapshots, a source database that records its state after every commit, restore
//! shorthands and an object-store decorator that tests hook into (to fail, slow down or
//! record calls).
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use kv_db::{Db, DbConfig, ExportEntry};
use kv_engine_memory::MemoryBackend;
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, RestoreError, RestoreOutcome, RestoreTarget};
use kv_traits::{
    AtomicWrite, CommitResult, Database, KvValue, ManualClock, Mutation, MutationKind, Versionstamp,
};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A one-string-part key as the KV key encoding writes it (`0x02`, the bytes, `0x00`).
pub fn key(s: &str) -> Vec<u8> {
    let mut k = vec![2];
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    k
}

/// The whole raw state of a database: every entry with its versionstamp and expiry.
pub async fn dump(db: &Db) -> Vec<ExportEntry> {
    db.export_range(&[], &[0xff], usize::MAX).await.unwrap().0
}

/// An empty in-memory database with the default configuration.
pub async fn memory_db() -> Db {
    Db::open(MemoryBackend::new(), DbConfig::default())
        .await
        .unwrap()
}

/// An empty read-only in-memory database (a replica's target).
pub async fn read_only_db() -> Db {
    Db::open(
        MemoryBackend::new(),
        DbConfig {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// An empty in-memory database with the change log on (a backup's source).
pub async fn change_log_db() -> Db {
    Db::open(
        MemoryBackend::new(),
        DbConfig {
            change_log: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// An unclamped `sum` of `n` into the `U64` at `key`, without expiry.
pub fn sum(key: Vec<u8>, n: u64) -> Mutation {
    Mutation {
        key,
        kind: MutationKind::Sum {
            value: KvValue::U64(n),
            min: None,
            max: None,
            clamp: false,
        },
        expire_at_ms: None,
    }
}

/// Commits `mutations` and returns the commit's versionstamp; panics if it did not commit.
pub async fn commit(db: &Db, mutations: Vec<Mutation>) -> Versionstamp {
    match db
        .atomic_write(AtomicWrite {
            mutations,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        CommitResult::Committed(vs) => vs,
        other => panic!("not committed: {other:?}"),
    }
}

/// Waits until the backup's initial snapshot is written.
pub async fn initial_snapshot_done(backup: &Backup) {
    backup
        .subscribe()
        .wait_for(|s| s.initial_snapshot_done)
        .await
        .unwrap();
}

/// Restores `target` into a new empty in-memory database.
pub async fn restore_to(reader: &BackupReader, target: RestoreTarget) -> (Db, RestoreOutcome) {
    let db = memory_db().await;
    let out = restore(reader, &db, target, |_| {}).await.unwrap();
    (db, out)
}

/// Restores `target` into a new empty in-memory database, expecting an error.
pub async fn restore_err(reader: &BackupReader, target: RestoreTarget) -> (Db, RestoreError) {
    let db = memory_db().await;
    let err = restore(reader, &db, target, |_| {}).await.unwrap_err();
    (db, err)
}

/// A local-filesystem object store rooted at `dir`.
pub fn local_store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
}

/// The body of an object.
pub async fn get(store: &dyn ObjectStore, path: &Path) -> Bytes {
    store.get(path).await.unwrap().bytes().await.unwrap()
}

/// The paths of all objects under `dir`, sorted.
pub async fn list(store: &dyn ObjectStore, dir: &Path) -> Vec<Path> {
    let mut out: Vec<Path> = store
        .list(Some(dir))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    out.sort();
    out
}

/// Replaces (or creates) an object.
pub async fn put(store: &dyn ObjectStore, path: &Path, body: Vec<u8>) {
    store.put(path, PutPayload::from(body)).await.unwrap();
}

/// A source database with a manual clock, recording its raw state after every commit.
pub struct Source {
    pub db: Db,
    pub clock: Arc<ManualClock>,
    pub states: BTreeMap<Versionstamp, Vec<ExportEntry>>,
}

impl Source {
    /// An empty source with the change log on and no background tasks, its clock an hour in
    /// the past.
    pub async fn new() -> Source {
        // An hour ago, so that expiry times compare the same way on the restored databases
        // (which use the system clock).
        let now = kv_traits::clock::now_ms();
        let clock = Arc::new(ManualClock::new(now - 3_600_000));
        let db = Db::open(
            MemoryBackend::new(),
            DbConfig {
                clock: clock.clone(),
                background_tasks: false,
                change_log: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut s = Source {
            db,
            clock,
            states: BTreeMap::new(),
        };
        s.record().await;
        s
    }

    /// Records the current state under the current versionstamp.
    pub async fn record(&mut self) -> Versionstamp {
        let vs = self.db.current_versionstamp().await.unwrap();
        let state = dump(&self.db).await;
        self.states.insert(vs, state);
        vs
    }

    /// Advances the clock by 10 ms, commits and records the new state.
    pub async fn commit(&mut self, mutations: Vec<Mutation>) -> Versionstamp {
        self.clock.advance(10);
        let vs = commit(&self.db, mutations).await;
        assert_eq!(self.record().await, vs);
        vs
    }

    /// The source clock's time.
    pub fn now(&self) -> u64 {
        use kv_traits::Clock;
        self.clock.now_ms()
    }
}

/// What a [`HookedStore`] does around the calls it forwards to its inner store. Every hook
/// does nothing by default.
#[async_trait::async_trait]
pub trait StoreHooks: std::fmt::Debug + Send + Sync + 'static {
    /// The name the store displays.
    const NAME: &'static str;

    /// Before a `put_opts`; an error fails the put.
    async fn before_put(&self, _location: &Path) -> object_store::Result<()> {
        Ok(())
    }

    /// After a `put_opts`, whatever its result.
    fn after_put(&self, _location: &Path) {}

    /// Before a `put_multipart_opts`; an error fails it.
    fn before_multipart(&self, _location: &Path) -> object_store::Result<()> {
        Ok(())
    }

    /// Before a `get_opts` (heads included: see `options.head`).
    fn before_get(&self, _location: &Path, _options: &GetOptions) {}

    /// After [`StoreHooks::before_get`]; an error fails the get.
    fn fail_get(&self, _location: &Path, _options: &GetOptions) -> object_store::Result<()> {
        Ok(())
    }

    /// Before a `copy_opts`; an error fails it.
    fn before_copy(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Ok(())
    }
}

/// An object store forwarding every call to `inner`, with `hooks` around some of them.
#[derive(Debug)]
pub struct HookedStore<H> {
    pub inner: Arc<dyn ObjectStore>,
    pub hooks: H,
}

impl<H> HookedStore<H> {
    pub fn new(inner: Arc<dyn ObjectStore>, hooks: H) -> Arc<HookedStore<H>> {
        Arc::new(HookedStore { inner, hooks })
    }
}

impl<H: StoreHooks> std::fmt::Display for HookedStore<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", H::NAME, self.inner)
    }
}

#[async_trait::async_trait]
impl<H: StoreHooks> ObjectStore for HookedStore<H> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.hooks.before_put(location).await?;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.hooks.after_put(location);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.hooks.before_multipart(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.hooks.before_get(location, &options);
        self.hooks.fail_get(location, &options)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.hooks.before_copy(from, to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

// Backups with checkpoints (used by the checkpoint and compaction tests).

impl Source {
    /// Sets of all three encodings, a sum, an expiring key, overwrites and deletes.
    pub async fn round(&mut self, r: u32) {
        let n = |i: u32| format!("r{r}k{i}");
        self.commit(vec![
            Mutation::set(key(&n(0)), KvValue::V8(vec![0xff, 0x0f, 0x49, r as u8])),
            Mutation::set(key(&n(1)), KvValue::Bytes(vec![r as u8, 1, 2])),
            Mutation {
                key: key(&n(2)),
                kind: MutationKind::Set(KvValue::U64(u64::from(r))),
                expire_at_ms: Some(4_000_000_000_000 + u64::from(r)),
            },
        ])
        .await;
        self.commit(vec![sum(key("counter"), 1)]).await;
        if r > 0 {
            let p = |i: u32| format!("r{}k{i}", r - 1);
            self.commit(vec![
                Mutation::delete(key(&p(1))),
                Mutation::set(key(&p(0)), KvValue::Bytes(b"overwritten".to_vec())),
            ])
            .await;
        }
    }
}

pub fn checkpoint_config(store: Arc<dyn ObjectStore>, prefix: &str) -> BackupConfig {
    let mut c = BackupConfig::new(store, Path::from(prefix));
    c.flush_interval = Duration::from_millis(10);
    c.max_segment_batches = 3;
    c.snapshot_range_entries = 4;
    c.checkpoint_interval = Some(Duration::from_millis(40));
    c.checkpoint_retain = 50;
    c.shutdown_timeout = Duration::from_secs(10);
    c
}

/// Writes some data, starts a backup with checkpoints, writes until at least `checkpoints`
/// checkpoints exist and `rounds` rounds are done, flushes. The backup keeps running.
pub async fn backed_up_source(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    rounds: u32,
    checkpoints: u64,
) -> (Source, Backup) {
    let mut src = Source::new().await;
    src.round(0).await;
    src.round(1).await;
    let backup = Backup::start(src.db.clone(), checkpoint_config(store, prefix))
        .await
        .unwrap();
    initial_snapshot_done(&backup).await;
    let t0 = Instant::now();
    let mut r = 2;
    while r < rounds || backup.status().checkpoints_written < checkpoints {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            backup.status()
        );
        src.round(r).await;
        r += 1;
        tokio::time::sleep(Duration::from_millis(12)).await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    (src, backup)
}

/// Waits until a checkpoint covering the latest commit is complete, then stops the backup.
pub async fn settle(src: &Source, backup: Backup) {
    let committed = src.db.current_versionstamp().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        backup
            .subscribe()
            .wait_for(|s| s.last_checkpoint.is_some_and(|c| c >= committed)),
    )
    .await
    .expect("a checkpoint of the latest state")
    .unwrap();
    backup.shutdown().await.unwrap();
}

/// [`backed_up_source`], then [`settle`]: the backup is complete and stopped. Returns the
/// source and a reader of the backup.
pub async fn settled_source(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    rounds: u32,
    checkpoints: u64,
) -> (Source, BackupReader) {
    let (src, backup) = backed_up_source(store.clone(), prefix, rounds, checkpoints).await;
    settle(&src, backup).await;
    (src, BackupReader::new(store, Path::from(prefix)))
}

/// Keys in the initial snapshot: more than one import chunk, so a restore has written some
/// before it reaches the log.
pub const SNAPSHOT_KEYS: u32 = 2600;

/// Fails every read of a log segment while `broken` is set.
#[derive(Debug, Default)]
pub struct BrokenLogs {
    /// Set: log reads fail.
    pub broken: AtomicBool,
}

impl StoreHooks for BrokenLogs {
    const NAME: &'static str = "BrokenLogs";

    fn fail_get(&self, location: &Path, options: &GetOptions) -> object_store::Result<()> {
        if !options.head
            && self.broken.load(Ordering::SeqCst)
            && location.as_ref().contains("/logs/")
        {
            return Err(object_store::Error::Generic {
                store: "BrokenLogs",
                source: "injected failure".into(),
            });
        }
        Ok(())
    }
}

/// A backup of `SNAPSHOT_KEYS` keys (in ranges of 500) followed by a few logged commits,
/// stopped. Returns the source and the store, whose log reads can be broken.
pub async fn backed_up() -> (Source, Arc<HookedStore<BrokenLogs>>) {
    let mut src = Source::new().await;
    for batch in 0..SNAPSHOT_KEYS / 200 {
        let muts = (0..200)
            .map(|i| {
                let n = batch * 200 + i;
                Mutation::set(key(&format!("k{n:05}")), KvValue::Bytes(vec![n as u8; 64]))
            })
            .collect();
        src.commit(muts).await;
    }
    let store = HookedStore::new(Arc::new(InMemory::new()), BrokenLogs::default());
    let mut config = BackupConfig::new(store.clone(), Path::from("b"));
    config.flush_interval = Duration::from_millis(10);
    config.snapshot_range_entries = 500;
    config.max_segment_batches = 2;
    let backup = Backup::start(src.db.clone(), config).await.unwrap();
    initial_snapshot_done(&backup).await;
    for i in 0..6u8 {
        src.commit(vec![
            Mutation::set(key("log"), KvValue::U64(u64::from(i))),
            Mutation::delete(key(&format!("k{:05}", u32::from(i) * 7))),
        ])
        .await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    (src, store)
}

pub fn broken_logs_reader(store: &Arc<HookedStore<BrokenLogs>>) -> BackupReader {
    let store: Arc<dyn ObjectStore> = store.clone();
    BackupReader::new(store, Path::from("b"))
}
