//! Backup and restore of one database size: time, storage and the restore's peak memory.
//!
//! ```text
//! cargo run --release -p kv-pitr --example restore_memory -- \
//!     --keys N [--value-size B] [--dir DIR] [--to LOCATION] [--s3-endpoint URL] [--concurrency N]
//! ```
//!
//! Writes N keys (B-byte values, default 1000; 200 sets per commit) into a SQLite database
//! under DIR with a continuous backup to LOCATION (default `DIR/backup`; `s3://bucket/prefix`
//! with `--s3-endpoint` for an S3-compatible server), so the data is in the backup's log as
//! with `kv-connect-server serve --backup-to`. It then deletes the source database and
//! restores the latest point into a new SQLite file with
//! [`kv_pitr::file_restore::restore_file`] in a child process of its own, and prints one JSON
//! line: the backup time (seeding until everything is shipped), the backup's storage bytes
//! (the objects under the prefix), the restore time, the restore process's peak RSS (`VmHWM`
//! of `/proc/self/status`, Linux only) and the restored file's size. DIR (default: a new
//! temporary directory) keeps the restored file until the caller deletes it.
//!
//! `benches/restore.sh` runs it per size and store and writes `benches/results/restore-*`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kv_db::{Db, DbConfig};
use kv_engine_sqlite::SqliteBackend;
use kv_pitr::file_restore::restore_file;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::RestoreTarget;
use kv_pitr::url::{fetch_concurrency, open_store_url};
use kv_pitr::BackupReader;
use kv_traits::{AtomicWrite, Database, KvError, KvValue, Mutation};
use object_store::path::Path as StorePath;
use object_store::ObjectStore;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sets per atomic write while seeding.
const BATCH: usize = 200;

/// The command line.
struct Args {
    keys: usize,
    value_size: usize,
    dir: Option<PathBuf>,
    to: Option<String>,
    s3_endpoint: Option<String>,
    /// Segments downloaded ahead by the restore (`BackupReader::with_concurrency`).
    concurrency: Option<usize>,
    restore_child: bool,
}

impl Args {
    fn parse() -> Result<Args, Error> {
        let mut a = Args {
            keys: 0,
            value_size: 1000,
            dir: None,
            to: None,
            s3_endpoint: None,
            concurrency: None,
            restore_child: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--restore-child" {
                a.restore_child = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--keys" => a.keys = value.parse()?,
                "--value-size" => a.value_size = value.parse()?,
                "--dir" => a.dir = Some(PathBuf::from(value)),
                "--to" => a.to = Some(value),
                "--s3-endpoint" => a.s3_endpoint = Some(value),
                "--concurrency" => a.concurrency = Some(value.parse()?),
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        Ok(a)
    }

    fn location(&self, dir: &Path) -> String {
        self.to
            .clone()
            .unwrap_or_else(|| dir.join("backup").display().to_string())
    }

    fn store(&self, dir: &Path) -> Result<(Arc<dyn ObjectStore>, StorePath), Error> {
        Ok(open_store_url(
            &self.location(dir),
            self.s3_endpoint.as_deref(),
        )?)
    }
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

async fn seed(args: &Args, dir: &Path) -> Result<(), Error> {
    let (store, prefix) = args.store(dir)?;
    let source = dir.join("source.db");
    let db = open_sqlite(source.clone(), true).await?;
    let mut config = BackupConfig::new(store, prefix);
    config.flush_interval = Duration::from_millis(200);
    let backup = Backup::start(db.clone(), config).await?;
    let value: Vec<u8> = (0..args.value_size).map(|i| (i % 251) as u8).collect();
    let mut i = 0;
    while i < args.keys {
        let n = BATCH.min(args.keys - i);
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
    backup.flush(Duration::from_secs(3600)).await?;
    backup.shutdown().await?;
    db.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", source.display()));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

/// Total size of the objects under the backup's prefix.
async fn backup_bytes(args: &Args, dir: &Path) -> Result<u64, Error> {
    let (store, prefix) = args.store(dir)?;
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    Ok(objects.iter().map(|o| o.size).sum())
}

/// A `/proc/self/status` field in KiB (`VmHWM`, `RssAnon`, `RssFile`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn restore_child(args: &Args, dir: &Path) -> Result<(), Error> {
    let (store, prefix) = args.store(dir)?;
    // As `kv-connect-server pitr restore` reads: by default, as far ahead as suits the store.
    let n = args
        .concurrency
        .unwrap_or_else(|| fetch_concurrency(&args.location(dir)));
    let reader = BackupReader::new(store, prefix).with_concurrency(n);
    let target = dir.join("restored.db");
    // Peaks of the anonymous and file-backed parts of the RSS (VmHWM is only their sum),
    // sampled every 20 ms.
    let peaks = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let sampler = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                let (a, f) = (status_kib("RssAnon"), status_kib("RssFile"));
                if let Ok(mut p) = peaks.lock() {
                    p.0 = p.0.max(a.unwrap_or(0));
                    p.1 = p.1.max(f.unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
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
    sampler.abort();
    let (anon, file) = peaks.lock().map(|p| *p).unwrap_or_default();
    let line = serde_json::json!({
        "peak_rss_anon_kib": anon,
        "peak_rss_file_kib": file,
        "restored_keys": outcome.keys,
        "transactions": outcome.transactions,
        "restore_s": elapsed.as_secs_f64(),
        "peak_rss_kib": status_kib("VmHWM"),
        "restored_file_bytes": std::fs::metadata(&target)?.len(),
    });
    println!("{line}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse()?;
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    if args.restore_child {
        return restore_child(&args, &dir).await;
    }
    if args.keys == 0 {
        return Err("usage: restore_memory --keys N [--value-size B] [--dir DIR] [--to LOCATION] [--s3-endpoint URL]".into());
    }
    let t0 = Instant::now();
    seed(&args, &dir).await?;
    let backup_s = t0.elapsed().as_secs_f64();
    let bytes = backup_bytes(&args, &dir).await?;
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.arg("--restore-child").arg("--dir").arg(&dir);
    child.arg("--to").arg(args.location(&dir));
    if let Some(e) = &args.s3_endpoint {
        child.arg("--s3-endpoint").arg(e);
    }
    if let Some(n) = args.concurrency {
        child.arg("--concurrency").arg(n.to_string());
    }
    let out = child.stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("the restore failed: {}", out.status).into());
    }
    let mut line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if let Some(o) = line.as_object_mut() {
        o.insert("keys".into(), args.keys.into());
        o.insert("value_size".into(), args.value_size.into());
        o.insert("backup_s".into(), backup_s.into());
        o.insert("backup_bytes".into(), bytes.into());
    }
    println!("{line}");
    Ok(())
}
