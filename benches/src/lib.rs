//! Benchmark harness: one trait, [`BenchDb`], with the operations the workloads need, implemented
//! once per engine under test:
//!
//! - [`OursDb`] over `kv_engine_memory::MemoryBackend` (`ours-memory`),
//!   `kv_engine_sqlite::SqliteBackend` (`ours-sqlite`, durable default options) and
//!   `kv_engine_redb::RedbBackend` (`ours-redb`, durable default options), all through
//!   `kv_db::Db`;
//! - [`DenoKv`], the reference `denokv_sqlite::Sqlite` with its default settings (no batch
//!   timeout) on a connection opened the way the `denokv` server opens it.
//!
//! Every engine gets the same keys and values (encoded with `kv_traits::key`), so the workloads in
//! `benches/kv.rs` are identical across engines.

#![warn(missing_docs)]

use std::num::NonZeroU32;
use std::path::Path;

use async_trait::async_trait;
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::Database as _;

/// Number of keys preloaded under [`READ_PREFIX`] for the read workloads.
pub const READ_KEYS: u64 = 10_000;
/// Size of every value written by the workloads, in bytes.
pub const VALUE_SIZE: usize = 100;
/// First key part of the preloaded keys.
pub const READ_PREFIX: &str = "read";
/// First key part of the keys the write workloads (over)write.
pub const WRITE_PREFIX: &str = "write";

/// The encoded key `[prefix, i]` (`i` as a bigint key part, as `Deno.Kv` encodes `1n`).
pub fn key(prefix: &str, i: u64) -> Vec<u8> {
    // Encoding a short string and a u64 cannot fail.
    encode_key(&[KeyPart::String(prefix.to_owned()), KeyPart::Int(i.into())]).unwrap_or_default()
}

/// The encoded key `[prefix]`.
pub fn prefix_key(prefix: &str) -> Vec<u8> {
    encode_key(&[KeyPart::String(prefix.to_owned())]).unwrap_or_default()
}

/// A deterministic value of [`VALUE_SIZE`] bytes for key number `i`.
pub fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_SIZE];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_add(j) as u8;
    }
    v
}

/// The operations of the benchmark workloads. Implementations panic on any error: a benchmark
/// that silently measured failing operations would be worse than one that stops.
#[async_trait]
pub trait BenchDb: Clone + Send + Sync + 'static {
    /// Reads one key; returns whether it exists.
    async fn get(&self, key: Vec<u8>) -> bool;
    /// Lists the keys strictly under `prefix` (Deno's `list({ prefix })`), at most `limit`;
    /// returns how many were read.
    async fn list(&self, prefix: Vec<u8>, limit: u32) -> usize;
    /// One atomic write that sets every pair (raw-bytes values); must commit.
    async fn set_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>);
    /// One atomic write with a single `sum` of `KvU64(n)` on `key`; must commit.
    async fn sum_u64(&self, key: Vec<u8>, n: u64);
    /// Closes the database.
    async fn close(&self);
}

/// This project's `kv_db::Db` over any backend.
#[derive(Clone)]
pub struct OursDb(pub kv_db::Db);

impl OursDb {
    /// Opens a `Db` on `backend` without background tasks. Must run inside a tokio runtime.
    pub async fn open(backend: impl kv_traits::Backend) -> OursDb {
        let config = kv_db::DbConfig { background_tasks: false, ..Default::default() };
        OursDb(kv_db::Db::open(backend, config).await.unwrap())
    }

    /// `ours-memory`.
    pub async fn memory() -> OursDb {
        OursDb::open(kv_engine_memory::MemoryBackend::new()).await
    }

    /// `ours-sqlite` with the default (durable, `synchronous=FULL`) options, file in `dir`.
    pub async fn sqlite(dir: &Path) -> OursDb {
        let backend =
            kv_engine_sqlite::SqliteBackend::open(dir.join("ours.sqlite3"), kv_engine_sqlite::SqliteOptions::default())
                .unwrap();
        OursDb::open(backend).await
    }

    #[cfg(feature = "redb")]
    /// `ours-redb` with the default (durable, `Durability::Immediate`) options, file in `dir`.
    pub async fn redb(dir: &Path) -> OursDb {
        let backend =
            kv_engine_redb::RedbBackend::open(dir.join("ours.redb"), kv_engine_redb::RedbOptions::default()).unwrap();
        OursDb::open(backend).await
    }
}

#[async_trait]
impl BenchDb for OursDb {
    async fn get(&self, key: Vec<u8>) -> bool {
        let out = self
            .0
            .snapshot_read(vec![kv_traits::ReadRange::single(&key)], kv_traits::Consistency::Strong)
            .await
            .unwrap();
        !out[0].is_empty()
    }

    async fn list(&self, prefix: Vec<u8>, limit: u32) -> usize {
        let out = self
            .0
            .snapshot_read(vec![kv_traits::ReadRange::prefix(&prefix, limit)], kv_traits::Consistency::Strong)
            .await
            .unwrap();
        out[0].len()
    }

    async fn set_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let mutations =
            pairs.into_iter().map(|(k, v)| kv_traits::Mutation::set(k, kv_traits::KvValue::Bytes(v))).collect();
        let write = kv_traits::AtomicWrite { mutations, ..Default::default() };
        let res = self.0.atomic_write(write).await.unwrap();
        assert!(res.versionstamp().is_some(), "write did not commit: {res:?}");
    }

    async fn sum_u64(&self, key: Vec<u8>, n: u64) {
        let mutation = kv_traits::Mutation {
            key,
            kind: kv_traits::MutationKind::Sum {
                value: kv_traits::KvValue::U64(n),
                min: None,
                max: None,
                clamp: false,
            },
            expire_at_ms: None,
        };
        let write = kv_traits::AtomicWrite { mutations: vec![mutation], ..Default::default() };
        let res = self.0.atomic_write(write).await.unwrap();
        assert!(res.versionstamp().is_some(), "sum did not commit: {res:?}");
    }

    async fn close(&self) {
        self.0.close().await.unwrap();
    }
}

/// Number of `denokv_sqlite` workers: one writer thread plus three reader threads.
pub const DENOKV_WORKERS: usize = 4;

/// The reference implementation, `denokv_sqlite::Sqlite`.
#[derive(Clone)]
pub struct DenoKv(pub denokv_sqlite::Sqlite);

impl DenoKv {
    /// Opens `denokv.sqlite3` in `dir` the way the `denokv` server does: read-write, create,
    /// no mutex; `denokv_sqlite` itself switches the file to WAL and leaves `synchronous` at
    /// SQLite's default (FULL, durable). Default config: no batch timeout.
    pub fn open(dir: &Path) -> DenoKv {
        use rand::SeedableRng;
        use rusqlite::OpenFlags;
        let path = dir.join("denokv.sqlite3");
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sqlite = denokv_sqlite::Sqlite::new(
            || {
                let conn = rusqlite::Connection::open_with_flags(&path, flags)
                    .map_err(|e| deno_error::JsErrorBox::generic(e.to_string()))?;
                let rng: Box<dyn rand::RngCore + Send> = Box::new(rand::rngs::StdRng::from_entropy());
                Ok((conn, rng))
            },
            denokv_sqlite::SqliteNotifier::default(),
            denokv_sqlite::SqliteConfig { num_workers: DENOKV_WORKERS, batch_timeout: None },
        )
        .unwrap();
        DenoKv(sqlite)
    }

    /// `journal_mode` and `synchronous` as seen by a connection opened like the server's.
    pub fn pragmas(dir: &Path) -> (String, i64) {
        let conn = rusqlite::Connection::open(dir.join("denokv.sqlite3")).unwrap();
        let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        (journal, sync)
    }
}

fn denokv_range(start: Vec<u8>, end: Vec<u8>, limit: u32) -> denokv_proto::ReadRange {
    denokv_proto::ReadRange { start, end, limit: NonZeroU32::new(limit).unwrap(), reverse: false }
}

fn denokv_strong() -> denokv_proto::SnapshotReadOptions {
    denokv_proto::SnapshotReadOptions { consistency: denokv_proto::Consistency::Strong }
}

#[async_trait]
impl BenchDb for DenoKv {
    async fn get(&self, key: Vec<u8>) -> bool {
        let mut end = key.clone();
        end.push(0);
        let out = self.0.snapshot_read(vec![denokv_range(key, end, 1)], denokv_strong()).await.unwrap();
        !out[0].entries.is_empty()
    }

    async fn list(&self, prefix: Vec<u8>, limit: u32) -> usize {
        let mut start = prefix.clone();
        start.push(0);
        let mut end = prefix;
        end.push(0xff);
        let out = self.0.snapshot_read(vec![denokv_range(start, end, limit)], denokv_strong()).await.unwrap();
        out[0].entries.len()
    }

    async fn set_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let mutations = pairs
            .into_iter()
            .map(|(key, v)| denokv_proto::Mutation {
                key,
                kind: denokv_proto::MutationKind::Set(denokv_proto::KvValue::Bytes(v)),
                expire_at: None,
            })
            .collect();
        let write = denokv_proto::AtomicWrite { checks: vec![], mutations, enqueues: vec![] };
        let res = self.0.atomic_write(write).await.unwrap();
        assert!(matches!(res, denokv_proto::AtomicWriteOutcome::Committed(_)), "write did not commit: {res:?}");
    }

    async fn sum_u64(&self, key: Vec<u8>, n: u64) {
        let mutation = denokv_proto::Mutation {
            key,
            kind: denokv_proto::MutationKind::Sum {
                value: denokv_proto::KvValue::U64(n),
                min_v8: vec![],
                max_v8: vec![],
                clamp: false,
            },
            expire_at: None,
        };
        let write = denokv_proto::AtomicWrite { checks: vec![], mutations: vec![mutation], enqueues: vec![] };
        let res = self.0.atomic_write(write).await.unwrap();
        assert!(matches!(res, denokv_proto::AtomicWriteOutcome::Committed(_)), "sum did not commit: {res:?}");
    }

    async fn close(&self) {
        self.0.close();
    }
}

/// Loads [`READ_KEYS`] keys `[READ_PREFIX, i]` with [`value`]`(i)` in writes of 500 sets.
pub async fn preload<D: BenchDb>(db: &D) {
    let mut i = 0;
    while i < READ_KEYS {
        let end = (i + 500).min(READ_KEYS);
        db.set_many((i..end).map(|j| (key(READ_PREFIX, j), value(j))).collect()).await;
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise<D: BenchDb>(db: D) {
        preload(&db).await;
        assert!(db.get(key(READ_PREFIX, 42)).await);
        assert!(!db.get(key(READ_PREFIX, READ_KEYS)).await);
        assert_eq!(db.list(prefix_key(READ_PREFIX), 100).await, 100);
        db.set_many(vec![(key(WRITE_PREFIX, 1), value(1))]).await;
        assert!(db.get(key(WRITE_PREFIX, 1)).await);
        db.sum_u64(key("counter", 0), 1).await;
        db.sum_u64(key("counter", 0), 2).await;
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_engine_runs_the_workload_operations() {
        exercise(OursDb::memory().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_engine_runs_the_workload_operations() {
        let dir = tempfile::tempdir().unwrap();
        exercise(OursDb::sqlite(dir.path()).await).await;
    }

    #[cfg(feature = "redb")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_engine_runs_the_workload_operations() {
        let dir = tempfile::tempdir().unwrap();
        exercise(OursDb::redb(dir.path()).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn denokv_runs_the_workload_operations_durably() {
        let dir = tempfile::tempdir().unwrap();
        let db = DenoKv::open(dir.path());
        let (journal, sync) = DenoKv::pragmas(dir.path());
        assert_eq!(journal, "wal");
        assert_eq!(sync, 2, "synchronous must be FULL (2)");
        exercise(db).await;
    }
}
