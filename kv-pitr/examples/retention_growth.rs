//! Backup storage and restore time over time, with and without retention.
//!
//! ```text
//! cargo run --release -p kv-pitr --example retention_growth -- \
//!     [--duration S] [--retention S] [--checkpoint S] [--sample S] [--rate N] [--dir DIR]
//! ```
//!
//! Two in-memory databases get the same steady writes (`--rate` commits a second, default
//! 50, each overwriting 20 of 5,000 keys with 1000-byte values, so the data stays about 5 MB)
//! for `--duration` seconds (default 240). Each has a continuous backup to its own local
//! folder under DIR, with checkpoints every `--checkpoint` seconds (default 10): `plain` with
//! the default checkpoint retention (the newest 2, the whole log kept), `retention` with
//! `BackupConfig::retention` = `--retention` seconds (default 60) and no grace. Every
//! `--sample` seconds (default 10) it prints a JSON line with both backups' storage bytes and
//! log segment counts. At the end it restores, from each backup, the latest point and the
//! point `--retention` seconds before the end into a new in-memory database, and prints their
//! times. `benches/restore.sh --retention-run` runs it and writes the results.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, RestoreTarget};
use kv_pitr::url::open_store_url;
use kv_pitr::BackupReader;
use kv_traits::clock::now_ms;
use kv_traits::{AtomicWrite, Database, KvValue, Mutation};

type Error = Box<dyn std::error::Error + Send + Sync>;

const KEYSPACE: usize = 5_000;
const SETS_PER_COMMIT: usize = 20;
const VALUE: usize = 1000;

struct Args {
    duration: u64,
    retention: u64,
    checkpoint: u64,
    sample: u64,
    rate: u64,
    dir: Option<PathBuf>,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        duration: 240,
        retention: 60,
        checkpoint: 10,
        sample: 10,
        rate: 50,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => a.duration = v.parse()?,
            "--retention" => a.retention = v.parse()?,
            "--checkpoint" => a.checkpoint = v.parse()?,
            "--sample" => a.sample = v.parse()?,
            "--rate" => a.rate = v.parse::<u64>()?.max(1),
            "--dir" => a.dir = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

fn dir_stats(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut segments = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ => {
                    bytes += e.metadata().map_or(0, |m| m.len());
                    if d.file_name().is_some_and(|n| n == "logs")
                        && e.file_name().to_string_lossy().ends_with(".bin")
                    {
                        segments += 1;
                    }
                }
            }
        }
    }
    (bytes, segments)
}

async fn source() -> Result<Db, Error> {
    let config = DbConfig {
        change_log: true,
        ..Default::default()
    };
    Ok(Db::open(MemoryBackend::new(), config).await?)
}

async fn start(db: &Db, dir: &Path, args: &Args, retention: bool) -> Result<Backup, Error> {
    let (store, prefix) = open_store_url(&dir.display().to_string(), None)?;
    let mut config = BackupConfig::new(store, prefix);
    config.checkpoint_interval = Some(Duration::from_secs(args.checkpoint));
    if retention {
        config.retention = Some(Duration::from_secs(args.retention));
        config.retention_grace = Duration::ZERO;
    }
    Ok(Backup::start(db.clone(), config).await?)
}

/// Restores `target` into a new in-memory database: seconds, transactions replayed.
async fn timed_restore(dir: &Path, target: RestoreTarget) -> Result<(f64, u64), Error> {
    let (store, prefix) = open_store_url(&dir.display().to_string(), None)?;
    let reader = BackupReader::new(store, prefix);
    let db = Db::open(MemoryBackend::new(), DbConfig::default()).await?;
    let t0 = Instant::now();
    let out = restore(&reader, &db, target, |_| {}).await?;
    Ok((t0.elapsed().as_secs_f64(), out.transactions))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse()?;
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let (plain_dir, kept_dir) = (dir.join("plain"), dir.join("retention"));
    let (a, b) = (source().await?, source().await?);
    let backups = [
        start(&a, &plain_dir, &args, false).await?,
        start(&b, &kept_dir, &args, true).await?,
    ];
    let value = vec![7u8; VALUE];
    let t0 = Instant::now();
    let tick = Duration::from_micros(1_000_000 / args.rate);
    let mut next_sample = Duration::ZERO;
    let mut n = 0usize;
    let end = Duration::from_secs(args.duration);
    while t0.elapsed() < end {
        let mutations: Vec<Mutation> = (0..SETS_PER_COMMIT)
            .map(|i| {
                let k = format!("k{:06}", (n * SETS_PER_COMMIT + i) % KEYSPACE);
                let mut key = vec![2];
                key.extend_from_slice(k.as_bytes());
                key.push(0);
                Mutation::set(key, KvValue::Bytes(value.clone()))
            })
            .collect();
        for db in [&a, &b] {
            db.atomic_write(AtomicWrite {
                mutations: mutations.clone(),
                ..Default::default()
            })
            .await?;
        }
        n += 1;
        if t0.elapsed() >= next_sample {
            let (pb, ps) = dir_stats(&plain_dir);
            let (rb, rs) = dir_stats(&kept_dir);
            let s = backups[1].status();
            println!(
                "{}",
                serde_json::json!({
                    "t_s": t0.elapsed().as_secs(),
                    "commits": n,
                    "plain_bytes": pb, "plain_segments": ps,
                    "retention_bytes": rb, "retention_segments": rs,
                    "compacted_segments": s.compacted_segments,
                    "compacted_checkpoints": s.compacted_checkpoints,
                })
            );
            next_sample += Duration::from_secs(args.sample);
        }
        tokio::time::sleep(tick).await;
    }
    let [p, r] = backups;
    p.flush(Duration::from_secs(120)).await?;
    r.flush(Duration::from_secs(120)).await?;
    p.shutdown().await?;
    r.shutdown().await?;
    let window_start = now_ms() - args.retention * 1000;
    let mut restores = serde_json::Map::new();
    for (name, d) in [("plain", &plain_dir), ("retention", &kept_dir)] {
        let (latest_s, latest_tx) = timed_restore(d, RestoreTarget::Latest).await?;
        let (oldest_s, oldest_tx) = timed_restore(d, RestoreTarget::Time(window_start)).await?;
        let (bytes, segments) = dir_stats(d);
        restores.insert(
            name.into(),
            serde_json::json!({
                "bytes": bytes, "segments": segments,
                "latest_s": latest_s, "latest_transactions": latest_tx,
                "window_start_s": oldest_s, "window_start_transactions": oldest_tx,
            }),
        );
    }
    println!("{}", serde_json::json!({ "final": restores, "commits": n }));
    Ok(())
}
