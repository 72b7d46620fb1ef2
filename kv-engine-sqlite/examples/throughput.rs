//! A quick throughput probe of the raw backend (not the Deno KV layer):
//! `cargo run --release -p kv-engine-sqlite --example throughput -- [DIR]`.
//!
//! Measures durable single-put commits, group commits of 64 puts, snapshot point reads from 1
//! and from 8 concurrent tasks, and, through `kv_db::Db`, atomic writes from 64 concurrent
//! writers (group commit) and single-key snapshot reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::{
    AtomicWrite, Backend, BackendError, Consistency, Database, KvError, KvValue, Mutation,
    ReadRange,
};

const RUN: Duration = Duration::from_secs(2);

fn key(i: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = 0x02;
    k[1..].copy_from_slice(&i.to_be_bytes());
    k
}

#[tokio::main]
async fn main() -> Result<(), BackendError> {
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = std::env::temp_dir().join(format!("kv-sqlite-throughput-{}", std::process::id()));
    let dir = dir.unwrap_or(tmp);
    std::fs::create_dir_all(&dir).map_err(|e| BackendError::Io(e.to_string().into()))?;
    let path = dir.join("bench.sqlite3");
    let _ = std::fs::remove_file(&path);
    let b = Arc::new(SqliteBackend::open(&path, SqliteOptions::default())?);
    let value = vec![0x5a_u8; 100];

    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        let mut w = b.begin_write().await?;
        w.put(&key(n), &value).await?;
        w.commit().await?;
        n += 1;
    }
    println!(
        "single-put durable commits: {:.0}/s",
        n as f64 / start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let mut commits = 0u64;
    while start.elapsed() < RUN {
        let mut w = b.begin_write().await?;
        for _ in 0..64 {
            w.put(&key(n), &value).await?;
            n += 1;
        }
        w.commit().await?;
        commits += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "64-put group commits: {:.0} commits/s = {:.0} puts/s",
        commits as f64 / secs,
        commits as f64 * 64.0 / secs
    );

    for tasks in [1u64, 8] {
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let b = b.clone();
            handles.push(tokio::spawn(async move {
                let mut reads = 0u64;
                let mut i = t * 7919;
                while start.elapsed() < RUN {
                    let mut r = b.begin_read().await?;
                    let got = r.get(&key(i % n)).await?;
                    assert!(got.is_some());
                    reads += 1;
                    i += 1;
                }
                Ok::<u64, BackendError>(reads)
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h
                .await
                .map_err(|e| BackendError::Io(e.to_string().into()))??;
        }
        println!(
            "snapshot point reads, {tasks} tasks: {:.0}/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
    }
    b.close().await?;
    db_level(&dir)
        .await
        .map_err(|e| BackendError::Io(e.to_string().into()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn db_level(dir: &std::path::Path) -> Result<(), KvError> {
    let path = dir.join("db.sqlite3");
    let _ = std::fs::remove_file(&path);
    let backend = SqliteBackend::open(&path, SqliteOptions::default())?;
    let db = Arc::new(Db::open(backend, DbConfig::default()).await?);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..64u64 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < RUN {
                let k = key(t * 1_000_000 + n).to_vec();
                let write = AtomicWrite {
                    mutations: vec![Mutation::set(k, KvValue::Bytes(vec![7; 100]))],
                    ..Default::default()
                };
                db.atomic_write(write).await?;
                n += 1;
            }
            Ok::<u64, KvError>(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.map_err(|e| KvError::Transport(e.to_string()))??;
    }
    println!(
        "Db atomic writes, 64 concurrent durable writers: {:.0}/s",
        total as f64 / start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut reads = 0u64;
    while start.elapsed() < RUN {
        let k = key(reads % 1000);
        db.snapshot_read(vec![ReadRange::single(&k)], Consistency::Strong)
            .await?;
        reads += 1;
    }
    println!(
        "Db single-key snapshot reads, 1 task: {:.0}/s",
        reads as f64 / start.elapsed().as_secs_f64()
    );
    db.close().await
}
