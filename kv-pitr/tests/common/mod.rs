//! Helpers shared by the kv-pitr integration tests: key builders, database set-up, raw state
//! snapshots, a source database that records its state after every commit, restore
//! shorthands and an object-store decorator that tests hook into (to fail, slow down or
//! record calls).
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use kv_db::{Db, DbConfig, ExportEntry};
use kv_engine_memory::MemoryBackend;
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::Backup;
use kv_pitr::restore::{restore, RestoreError, RestoreOutcome, RestoreTarget};
use kv_traits::{
    AtomicWrite, CommitResult, Database, KvValue, ManualClock, Mutation, MutationKind, Versionstamp,
};
use object_store::local::LocalFileSystem;
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
