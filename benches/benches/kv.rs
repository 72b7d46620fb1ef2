//! The workloads of issue 3, run on every engine in one criterion run so the numbers are
//! comparable: see `README.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kv_benches::{key, prefix_key, preload, value, BenchDb, DenoKv, OursDb, READ_KEYS, READ_PREFIX, WRITE_PREFIX};
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;

/// Concurrent writers in the `write1_64writers` workload.
const WRITERS: u64 = 64;
/// Distinct keys the write workloads cycle through (keeps the tables bounded).
const WRITE_KEYS: u64 = 10_000;

/// One engine under test, so one group can hold every engine.
#[derive(Clone)]
enum Engine {
    Ours(OursDb),
    DenoKv(DenoKv),
}

macro_rules! delegate {
    ($self:ident, $db:ident => $e:expr) => {
        match $self {
            Engine::Ours($db) => $e,
            Engine::DenoKv($db) => $e,
        }
    };
}

#[async_trait::async_trait]
impl BenchDb for Engine {
    async fn get(&self, key: Vec<u8>) -> bool {
        delegate!(self, db => db.get(key).await)
    }
    async fn list(&self, prefix: Vec<u8>, limit: u32) -> usize {
        delegate!(self, db => db.list(prefix, limit).await)
    }
    async fn set_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        delegate!(self, db => db.set_many(pairs).await)
    }
    async fn sum_u64(&self, key: Vec<u8>, n: u64) {
        delegate!(self, db => db.sum_u64(key, n).await)
    }
    async fn close(&self) {
        delegate!(self, db => db.close().await)
    }
}

struct Setup {
    rt: Runtime,
    engines: Vec<(&'static str, Engine)>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // One directory (on the same disk) for every file-backed engine.
    let dir = tempfile::tempdir().unwrap();
    let engines = rt.block_on(async {
        let denokv = DenoKv::open(dir.path());
        let (journal, sync) = DenoKv::pragmas(dir.path());
        eprintln!("denokv_sqlite: journal_mode={journal} synchronous={sync} (2 = FULL) in {}", dir.path().display());
        #[allow(unused_mut)]
        let mut engines: Vec<(&'static str, Engine)> = vec![
            ("denokv_sqlite", Engine::DenoKv(denokv)),
            ("ours-memory", Engine::Ours(OursDb::memory().await)),
            ("ours-sqlite", Engine::Ours(OursDb::sqlite(dir.path()).await)),
        ];
        #[cfg(feature = "redb")]
        engines.push(("ours-redb", Engine::Ours(OursDb::redb(dir.path()).await)));
        for (name, db) in &engines {
            preload(db).await;
            assert!(db.get(key(READ_PREFIX, READ_KEYS - 1)).await, "{name}: preload missing");
        }
        engines
    });
    Setup { rt, engines, _dir: dir }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
}

fn bench_get(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("get");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for (name, db) in &s.engines {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        group.bench_function(*name, |b| {
            b.to_async(&s.rt).iter(|| {
                let k = key(READ_PREFIX, rng.gen_range(0..READ_KEYS));
                async move { assert!(db.get(k).await) }
            })
        });
    }
    group.finish();
}

fn bench_list(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("list100");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    let prefix = prefix_key(READ_PREFIX);
    for (name, db) in &s.engines {
        group.bench_function(*name, |b| {
            b.to_async(&s.rt).iter(|| async { assert_eq!(db.list(prefix.clone(), 100).await, 100) })
        });
    }
    group.finish();
}

/// Atomic writes of `mutations` sets each, issued by `writers` concurrent tokio tasks per
/// iteration (each task one write); throughput is counted in atomic writes.
fn bench_writes(c: &mut Criterion, s: &Setup, group_name: &str, writers: u64, mutations: u64) {
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    group.throughput(Throughput::Elements(writers));
    for (name, db) in &s.engines {
        let counter = Arc::new(AtomicU64::new(0));
        group.bench_function(*name, |b| {
            b.to_async(&s.rt).iter(|| {
                let db = db.clone();
                let counter = counter.clone();
                async move {
                    let tasks: Vec<_> = (0..writers)
                        .map(|_| {
                            let db = db.clone();
                            let first = counter.fetch_add(mutations, Ordering::Relaxed);
                            let pairs = (first..first + mutations)
                                .map(|i| (key(WRITE_PREFIX, i % WRITE_KEYS), value(i)))
                                .collect();
                            tokio::spawn(async move { db.set_many(pairs).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
            })
        });
    }
    group.finish();
}

fn bench_sum(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("sum_hot_key");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    let hot = key("counter", 0);
    for (name, db) in &s.engines {
        group.bench_function(*name, |b| b.to_async(&s.rt).iter(|| db.sum_u64(hot.clone(), 1)));
    }
    group.finish();
}

fn all(c: &mut Criterion) {
    let s = setup();
    bench_get(c, &s);
    bench_list(c, &s);
    bench_writes(c, &s, "write1_1writer", 1, 1);
    bench_writes(c, &s, "write1_64writers", WRITERS, 1);
    bench_writes(c, &s, "write10_1writer", 1, 10);
    bench_sum(c, &s);
    s.rt.block_on(async {
        for (_, db) in &s.engines {
            db.close().await;
        }
    });
}

criterion_group!(benches, all);
criterion_main!(benches);
