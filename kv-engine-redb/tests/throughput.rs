//! Rough per-operation costs, for tuning (ignored by default; run with
//! `cargo test -p kv-engine-redb --release --test throughput -- --ignored --nocapture`).

mod common;

use std::time::Instant;

use common::temp;
use kv_traits::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn per_operation_costs() {
    let (_dir, db) = temp();
    let n = 20_000u32;
    let value = vec![7u8; 100];

    let t = Instant::now();
    let mut w = db.begin_write().await.unwrap();
    for i in 0..n {
        w.put(&i.to_be_bytes(), &value).await.unwrap();
    }
    let puts = t.elapsed();
    let t = Instant::now();
    w.commit().await.unwrap();
    let big_commit = t.elapsed();

    let t = Instant::now();
    let mut w = db.begin_write().await.unwrap();
    for i in 0..n {
        w.get(&i.to_be_bytes()).await.unwrap();
    }
    let write_gets = t.elapsed();
    drop(w);

    let t = Instant::now();
    let mut r = db.begin_read().await.unwrap();
    for i in 0..n {
        r.get(&i.to_be_bytes()).await.unwrap();
    }
    let snapshot_gets = t.elapsed();

    let t = Instant::now();
    for i in 0..n {
        let mut r = db.begin_read().await.unwrap();
        r.get(&i.to_be_bytes()).await.unwrap();
    }
    let read_txn_gets = t.elapsed();

    let t = Instant::now();
    let mut r = db.begin_read().await.unwrap();
    let mut total = 0;
    for i in 0..(n / 100) {
        total += r
            .scan(
                &(i * 100).to_be_bytes(),
                &(i * 100 + 100).to_be_bytes(),
                100,
                false,
            )
            .await
            .unwrap()
            .len();
    }
    assert_eq!(total, n as usize);
    let scans = t.elapsed();

    let commits = 200u32;
    let t = Instant::now();
    for c in 0..commits {
        let mut w = db.begin_write().await.unwrap();
        for k in 0..320u32 {
            w.put(&(c * 1000 + k + 1_000_000).to_be_bytes(), &value)
                .await
                .unwrap();
        }
        w.commit().await.unwrap();
    }
    let durable = t.elapsed();

    let per = |d: std::time::Duration, count: u32| d.as_secs_f64() * 1e6 / count as f64;
    println!("put in write txn:     {:.2} us/op", per(puts, n));
    println!(
        "commit of {n} puts:  {:.1} ms",
        big_commit.as_secs_f64() * 1e3
    );
    println!("get in write txn:     {:.2} us/op", per(write_gets, n));
    println!("get in one snapshot:  {:.2} us/op", per(snapshot_gets, n));
    println!("begin_read + get:     {:.2} us/op", per(read_txn_gets, n));
    println!("scan of 100:          {:.2} us/scan", per(scans, n / 100));
    println!(
        "durable txn, 320 puts: {:.2} ms/commit",
        durable.as_secs_f64() * 1e3 / commits as f64
    );
}

/// Atomic writes per second through `kv_db::Db` with 64 concurrent durable writers, and point
/// reads per second with 64 concurrent readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn concurrent_writers_through_db() {
    use kv_traits::{AtomicWrite, Consistency, Database, KvValue, Mutation, ReadRange};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let backend = kv_engine_redb::RedbBackend::open(
        dir.path().join("kv.redb"),
        kv_engine_redb::RedbOptions::default(),
    )
    .unwrap();
    let db = Arc::new(
        kv_db::Db::open(backend, kv_db::DbConfig::default())
            .await
            .unwrap(),
    );
    let run_for = Duration::from_secs(3);

    let writes = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let db = db.clone();
        let writes = writes.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while t.elapsed() < run_for {
                let key = [b"\x02k\x00".as_slice(), &w.to_be_bytes(), &i.to_be_bytes()].concat();
                db.atomic_write(AtomicWrite {
                    mutations: vec![Mutation::set(key, KvValue::Bytes(vec![1; 100]))],
                    ..AtomicWrite::default()
                })
                .await
                .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let write_rate = writes.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();

    let reads = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let db = db.clone();
        let reads = reads.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while t.elapsed() < run_for {
                let key = [
                    b"\x02k\x00".as_slice(),
                    &w.to_be_bytes(),
                    &(i % 50).to_be_bytes(),
                ]
                .concat();
                db.snapshot_read(vec![ReadRange::single(&key)], Consistency::Strong)
                    .await
                    .unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let read_rate = reads.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    println!("64 durable writers: {write_rate:.0} atomic writes/s");
    println!("64 readers:         {read_rate:.0} point reads/s");
    db.close().await.unwrap();
}
