//! Peak memory of a restore against the size of the database.
//!
//! `cargo run --release -p kv-pitr --example restore_memory -- KEYS [VALUE_SIZE] [DIR]`
//!
//! Writes KEYS keys (VALUE_SIZE-byte values, default 1000) into a SQLite database with a
//! continuous backup to a local directory (so they are in the backup's log, as with
//! `kv-connect-server serve --backup-to`), stops, then restores the latest point into a new
//! SQLite file with [`kv_pitr::file_restore::restore_file`] in a child process of its own and
//! prints that process's peak RSS (`VmHWM` of `/proc/self/status`, Linux only), the restore
//! time and the sizes. DIR (default: a new temporary directory) keeps the files.
//!
//! Results are recorded in `benches/results/restore-memory.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_engine_sqlite::SqliteBackend;
use kv_pitr::file_restore::restore_file;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::RestoreTarget;
use kv_pitr::BackupReader;
use kv_traits::{AtomicWrite, Database, KvError, KvValue, Mutation};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sets per atomic write while seeding.
const BATCH: usize = 200;

fn store(dir: &Path) -> Result<Arc<dyn ObjectStore>, Error> {
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
}

async fn open_sqlite(path: PathBuf, change_log: bool) -> Result<Db, KvError> {
    let config = DbConfig {
        change_log,
        background_tasks: false,
        ..Default::default()
    };
    Db::open(SqliteBackend::open(&path, Default::default())?, config).await
}

fn key(i: usize) -> Vec<u8> {
    // A one-string-part key as Deno encodes it: 0x02, the bytes, 0x00.
    let mut k = vec![2];
    k.extend_from_slice(format!("restore-memory/{i:012}").as_bytes());
    k.push(0);
    k
}

async fn seed(dir: &Path, keys: usize, value_size: usize) -> Result<(), Error> {
    std::fs::create_dir_all(dir.join("backup"))?;
    let db = open_sqlite(dir.join("source.db"), true).await?;
    let mut config = BackupConfig::new(store(&dir.join("backup"))?, StorePath::from("b"));
    config.flush_interval = Duration::from_millis(200);
    let backup = Backup::start(db.clone(), config).await?;
    let value: Vec<u8> = (0..value_size).map(|i| (i % 251) as u8).collect();
    let mut i = 0;
    while i < keys {
        let n = BATCH.min(keys - i);
        let mutations = (i..i + n)
            .map(|k| Mutation::set(key(k), KvValue::Bytes(value.clone())))
            .collect();
        db.atomic_write(AtomicWrite {
            mutations,
            ..Default::default()
        })
        .await?;
        i += n;
    }
    backup.flush(Duration::from_secs(600)).await?;
    backup.shutdown().await?;
    db.close().await?;
    Ok(())
}

/// A `/proc/self/status` field in KiB (`VmHWM`, `RssAnon`, `RssFile`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(field: &str) -> String {
    status_kib(field).map_or_else(|| "unknown".into(), |k| (k / 1024).to_string())
}

async fn restore_child(dir: &Path) -> Result<(), Error> {
    let reader = BackupReader::new(store(&dir.join("backup"))?, StorePath::from("b"));
    let target = dir.join("restored.db");
    let t0 = Instant::now();
    let outcome = restore_file(
        &reader,
        &target,
        |p| open_sqlite(p, false),
        RestoreTarget::Latest,
        |_| {},
    )
    .await?;
    let elapsed = t0.elapsed();
    println!(
        "restored {} keys ({} transactions) in {:.1} s; peak RSS {} MiB (now: anonymous {} MiB, file-backed {} MiB); restored file {} MiB",
        outcome.keys,
        outcome.transactions,
        elapsed.as_secs_f64(),
        mib("VmHWM"),
        mib("RssAnon"),
        mib("RssFile"),
        std::fs::metadata(&target)?.len() >> 20,
    );
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--restore-child") {
        let dir = args.get(2).ok_or("--restore-child DIR")?;
        return restore_child(Path::new(dir)).await;
    }
    let keys: usize = args
        .get(1)
        .ok_or("usage: restore_memory KEYS [VALUE_SIZE] [DIR]")?
        .parse()?;
    let value_size: usize = args.get(2).map_or(Ok(1000), |v| v.parse())?;
    let tmp;
    let dir = match args.get(3) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let t0 = Instant::now();
    seed(&dir, keys, value_size).await?;
    println!(
        "seeded {keys} keys of {value_size} B in {:.1} s; backup {} MiB",
        t0.elapsed().as_secs_f64(),
        dir_size(&dir.join("backup")) >> 20
    );
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--restore-child")
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err(format!("the restore failed: {status}").into());
    }
    Ok(())
}
