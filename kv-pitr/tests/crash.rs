//! Crashing the backup producer: a child process (this test binary re-executed) runs a
//! [`Db`] on SQLite with the change log and a [`Backup`] to a local-filesystem store, writing
//! multi-key transactions as fast as it can and printing each acknowledged versionstamp; the
//! parent kills it with SIGKILL at a random moment (often in the middle of a segment upload),
//! several rounds, the producer resuming each time. After every kill the parent restores the
//! backup as it is into a new database and checks that the result is the state after exactly a
//! prefix of the committed transactions (never a torn one). At the end it restarts the producer,
//! flushes, and checks that the restore equals the database, every acknowledged write included.
//!
//! The checks (restores of a backup, not a reopened database) are this crate's own; the
//! child-process mechanics are `kv_conformance::child`'s, shared with the engines' crash tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_conformance::child::{self, Child};
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, RestoreTarget};
use kv_traits::key::{decode_key, encode_key, KeyPart};
use kv_traits::{AtomicWrite, CommitResult, Database, KvValue, Mutation, Versionstamp};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

use common::{HookedStore, StoreHooks};

const CHILD_ENV: &str = "KV_PITR_CRASH_CHILD";
const ROUNDS: u64 = 4;
const TASKS: u64 = 4;
const PREFIX: &str = "crash/backup";

type State = BTreeMap<Vec<u8>, (KvValue, Versionstamp)>;

/// Key of one of the three items of transaction (round, task, i).
fn item_key(kind: &str, round: u64, task: u64, i: u64) -> Vec<u8> {
    encode_key(&[
        KeyPart::from(kind),
        KeyPart::from(round as i64),
        KeyPart::from(task as i64),
        KeyPart::from(i as i64),
    ])
    .unwrap()
}

/// The per-task "latest" key: overwritten by every transaction of the task.
fn last_key(round: u64, task: u64) -> Vec<u8> {
    encode_key(&[
        KeyPart::from("last"),
        KeyPart::from(round as i64),
        KeyPart::from(task as i64),
    ])
    .unwrap()
}

fn tx_name(round: u64, task: u64, i: u64) -> String {
    format!("{round}-{task}-{i}")
}

fn store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    let root = dir.join("store");
    std::fs::create_dir_all(&root).unwrap();
    Arc::new(
        LocalFileSystem::new_with_prefix(root)
            .unwrap()
            .with_fsync(true),
    )
}

/// The child's store hooks: the latency of a remote store, and each upload announced on
/// stdout (`PUT-BEGIN <path>` / `PUT-END <path>`) so the parent can kill the child while a
/// segment is in flight.
#[derive(Debug)]
struct Slow {
    latency: Duration,
}

#[async_trait::async_trait]
impl StoreHooks for Slow {
    const NAME: &'static str = "SlowStore";

    async fn before_put(&self, location: &Path) -> object_store::Result<()> {
        println!("PUT-BEGIN {location}");
        tokio::time::sleep(self.latency).await;
        Ok(())
    }

    fn after_put(&self, location: &Path) {
        println!("PUT-END {location}");
    }
}

fn db_config(read_only: bool) -> DbConfig {
    DbConfig {
        change_log: true,
        background_tasks: false,
        read_only,
        ..Default::default()
    }
}

async fn open_db(dir: &std::path::Path, read_only: bool) -> Db {
    let backend = SqliteBackend::open(dir.join("db.sqlite3"), SqliteOptions::default()).unwrap();
    Db::open(backend, db_config(read_only)).await.unwrap()
}

fn backup_config(store: Arc<dyn ObjectStore>) -> BackupConfig {
    let mut c = BackupConfig::new(store, Path::from(PREFIX));
    // Many small segments, so kills often land in the middle of an upload.
    c.flush_interval = Duration::from_millis(15);
    c.max_segment_batches = 100;
    c.snapshot_range_entries = 500;
    c.retry_max_backoff = Duration::from_millis(200);
    c
}

/// The child (ignored in a normal run; does nothing without the environment variable): writes
/// until killed, or for at most 20 s should the parent be gone.
#[ignore = "child process of restore_after_producer_crashes_is_a_prefix, started by it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(spec) = child::instructions(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (round, latency_ms, dir) = (parts.next(), parts.next(), parts.next());
    let round: u64 = round.unwrap().parse().unwrap();
    let latency = Duration::from_millis(latency_ms.unwrap().parse().unwrap());
    let dir = std::path::PathBuf::from(dir.unwrap());
    let db = open_db(&dir, false).await;
    let slow: Arc<dyn ObjectStore> = HookedStore::new(store(&dir), Slow { latency });
    let backup = Backup::start(db.clone(), backup_config(slow))
        .await
        .unwrap();
    child::announce_ready();
    let stop = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let name = tx_name(round, task, i);
                let value = KvValue::Bytes(name.clone().into_bytes());
                let mut mutations: Vec<Mutation> = ["a", "b", "c"]
                    .iter()
                    .map(|kind| Mutation::set(item_key(kind, round, task, i), value.clone()))
                    .collect();
                mutations.push(Mutation::set(last_key(round, task), KvValue::U64(i)));
                // A delete in every transaction: the previous "tmp" item goes away.
                mutations.push(Mutation::set(item_key("tmp", round, task, i), value));
                if i > 0 {
                    mutations.push(Mutation::delete(item_key("tmp", round, task, i - 1)));
                }
                let write = AtomicWrite {
                    checks: vec![],
                    mutations,
                    enqueues: vec![],
                };
                match db.atomic_write(write).await {
                    Ok(CommitResult::Committed(vs)) => println!("ACK {task} {i} {vs}"),
                    other => panic!("write {name} failed: {other:?}"),
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    backup.shutdown().await.unwrap();
}

#[derive(Debug, Clone)]
struct Ack {
    round: u64,
    task: u64,
    i: u64,
    versionstamp: Versionstamp,
}

fn parse_ack(round: u64, line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let task = parts.next()?.parse().ok()?;
    let i = parts.next()?.parse().ok()?;
    let versionstamp = parts.next()?.parse().ok()?;
    Some(Ack {
        round,
        task,
        i,
        versionstamp,
    })
}

/// What one child run produced.
struct ChildRun {
    acks: Vec<Ack>,
    /// The log segment whose upload was in flight when the child was killed, if any.
    in_flight: Option<String>,
}

/// Runs one child until a random kill and returns its acknowledged writes. With
/// `mid_upload`, the kill waits (after the random delay) for the next log segment upload to
/// begin and lands while it is in flight. The process mechanics (re-running this binary's
/// `crash_child`, the READY handshake, SIGKILL, collecting complete lines) are the shared
/// `kv_conformance::child` ones.
fn run_child(dir: &std::path::Path, round: u64, mid_upload: bool) -> ChildRun {
    let stderr_path = dir.join(format!("child-{round}.stderr"));
    // A kill meant to land mid-upload has the whole upload's latency to get there after the
    // parent reads `PUT-BEGIN`: 20 ms was missed under a loaded machine (CI), 250 ms is ample.
    let latency_ms = if mid_upload { 250 } else { 20 };
    let spec = format!("{round}|{latency_ms}|{}", dir.display());
    let mut child = Child::spawn("crash_child", CHILD_ENV, &spec, &stderr_path).unwrap();
    if let Err(e) = child.wait_ready(Duration::from_secs(30)) {
        panic!("round {round}: {e}");
    }
    let delay = child::random_delay(150..=1049);
    std::thread::sleep(delay);
    if mid_upload {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(line) = child.next_line(deadline.saturating_duration_since(Instant::now())) {
            if line.starts_with("PUT-BEGIN") && line.contains("/logs/") {
                break;
            }
        }
    }
    let killed = child.kill().unwrap();
    killed.assert_no_panic();
    let lines = killed.lines;
    let acks: Vec<Ack> = lines.iter().filter_map(|l| parse_ack(round, l)).collect();
    // The last segment upload that began and did not end.
    let mut in_flight: Option<String> = None;
    for l in &lines {
        if let Some(p) = l.strip_prefix("PUT-BEGIN ") {
            if p.contains("/logs/") {
                in_flight = Some(p.to_string());
            }
        } else if let Some(p) = l.strip_prefix("PUT-END ") {
            if in_flight.as_deref() == Some(p) {
                in_flight = None;
            }
        }
    }
    eprintln!(
        "round {round}: killed after {delay:?} with {} acknowledged writes{}",
        acks.len(),
        match &in_flight {
            Some(p) => format!(", in the middle of uploading {p}"),
            None => String::new(),
        }
    );
    ChildRun { acks, in_flight }
}

async fn export(db: &Db) -> State {
    let (entries, _) = db.export_range(&[], &[0xff], usize::MAX).await.unwrap();
    entries
        .into_iter()
        .map(|e| (e.key, (e.value, e.versionstamp)))
        .collect()
}

/// The transaction a key belongs to: (kind, round, task, i), or (kind, round, task) for "last".
fn parse_item(key: &[u8]) -> (String, u64, u64, Option<u64>) {
    let parts = decode_key(key).unwrap();
    let text = |p: &KeyPart| match p {
        KeyPart::String(s) => s.clone(),
        other => panic!("unexpected key part {other:?}"),
    };
    let int = |p: &KeyPart| match p {
        KeyPart::Int(n) => u64::try_from(n.clone()).unwrap(),
        other => panic!("unexpected key part {other:?}"),
    };
    (
        text(&parts[0]),
        int(&parts[1]),
        int(&parts[2]),
        parts.get(3).map(int),
    )
}

/// The state of the database right after the commit `at`, reconstructed from the database's
/// current contents: every transaction writes three never-overwritten items, so the state at
/// `at` is "items with versionstamp <= at", the newest tmp item per task and the matching
/// "last" counters.
fn state_at(current: &State, at: Versionstamp) -> State {
    let mut out = State::new();
    // (round, task) -> (i, versionstamp) of the newest transaction <= at.
    let mut newest: BTreeMap<(u64, u64), (u64, Versionstamp)> = BTreeMap::new();
    for (k, (v, vs)) in current {
        let (kind, round, task, i) = parse_item(k);
        if kind == "a" && *vs <= at {
            let i = i.unwrap();
            let e = newest.entry((round, task)).or_insert((i, *vs));
            if *vs > e.1 {
                *e = (i, *vs);
            }
        }
        if ["a", "b", "c"].contains(&kind.as_str()) && *vs <= at {
            out.insert(k.clone(), (v.clone(), *vs));
        }
    }
    for ((round, task), (i, vs)) in newest {
        out.insert(last_key(round, task), (KvValue::U64(i), vs));
        out.insert(
            item_key("tmp", round, task, i),
            (KvValue::Bytes(tx_name(round, task, i).into_bytes()), vs),
        );
    }
    out
}

/// Checks that the database is a consistent result of the child's transactions (so that
/// `state_at` is meaningful) and holds every acknowledged write.
fn check_database(current: &State, acks: &[Ack]) {
    // Items of one transaction all have the same versionstamp, and each task's transactions
    // are contiguous from 0.
    let mut tx_vs: BTreeMap<(u64, u64, u64), BTreeSet<Versionstamp>> = BTreeMap::new();
    let mut kinds: BTreeMap<(u64, u64, u64), usize> = BTreeMap::new();
    for (k, (v, vs)) in current {
        let (kind, round, task, i) = parse_item(k);
        if let Some(i) = i {
            if kind != "tmp" {
                assert_eq!(v, &KvValue::Bytes(tx_name(round, task, i).into_bytes()));
                tx_vs.entry((round, task, i)).or_default().insert(*vs);
                *kinds.entry((round, task, i)).or_default() += 1;
            }
        }
    }
    for (tx, n) in &kinds {
        assert_eq!(*n, 3, "transaction {tx:?} is torn in the database");
        assert_eq!(tx_vs[tx].len(), 1);
    }
    for a in acks {
        let vs = tx_vs
            .get(&(a.round, a.task, a.i))
            .unwrap_or_else(|| panic!("acknowledged write {a:?} lost"));
        assert!(
            vs.contains(&a.versionstamp),
            "{a:?} has versionstamp {vs:?}"
        );
    }
}

/// Restores the backup as it is now; `None` if it has no consistent point yet.
async fn restore_latest(dir: &std::path::Path) -> Option<(Versionstamp, State)> {
    let reader = BackupReader::new(store(dir), Path::from(PREFIX));
    reader.differential().await.unwrap()?;
    let db = Db::open(MemoryBackend::new(), db_config(false))
        .await
        .unwrap();
    let outcome = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_or_else(|e| panic!("restore failed: {e}"));
    assert_eq!(
        db.current_versionstamp().await.unwrap(),
        outcome.versionstamp
    );
    let state = export(&db).await;
    db.close().await.unwrap();
    Some((outcome.versionstamp, state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_producer_crashes_is_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut acks: Vec<Ack> = Vec::new();
    let mut last_point = Versionstamp::ZERO;
    let mut checked_rounds = 0;
    let mut mid_upload_kills = 0;
    for round in 0..ROUNDS {
        let run = run_child(dir, round, !round.is_multiple_of(2));
        acks.extend(run.acks);
        if let Some(p) = run.in_flight {
            let landed = std::fs::metadata(dir.join("store").join(&p)).is_ok();
            eprintln!("round {round}: segment {p} in flight at the kill; stored: {landed}");
            mid_upload_kills += 1;
        }
        let db = open_db(dir, true).await;
        let current = export(&db).await;
        let db_vs = db.current_versionstamp().await.unwrap();
        db.close().await.unwrap();
        check_database(&current, &acks);
        match restore_latest(dir).await {
            None => {
                assert_eq!(last_point, Versionstamp::ZERO, "the backup disappeared");
                eprintln!("round {round}: killed before the initial snapshot completed");
            }
            Some((point, restored)) => {
                assert!(point <= db_vs, "the backup is ahead of the database");
                assert!(point >= last_point, "the backup went back in time");
                last_point = point;
                let expected = state_at(&current, point);
                if restored != expected {
                    let missing: Vec<_> = expected
                        .keys()
                        .filter(|k| !restored.contains_key(*k))
                        .take(5)
                        .map(|k| parse_item(k))
                        .collect();
                    let extra: Vec<_> = restored
                        .keys()
                        .filter(|k| !expected.contains_key(*k))
                        .take(5)
                        .map(|k| parse_item(k))
                        .collect();
                    panic!(
                        "round {round}: restore at {point} is not the state after a prefix of \
                         the commits (missing {missing:?}, extra {extra:?})"
                    );
                }
                let shipped = acks.iter().filter(|a| a.versionstamp <= point).count();
                eprintln!(
                    "round {round}: restored point {point} (database at {db_vs}), \
                     {shipped}/{} acknowledged writes shipped",
                    acks.len()
                );
                checked_rounds += 1;
            }
        }
    }
    assert!(checked_rounds >= 2, "the initial snapshot never completed");
    assert!(
        mid_upload_kills >= 1,
        "no kill landed during a segment upload"
    );

    // Restart the producer one last time: it resumes and ships everything.
    let db = open_db(dir, false).await;
    let backup = Backup::start(db.clone(), backup_config(store(dir)))
        .await
        .unwrap();
    let shipped = backup.flush(Duration::from_secs(30)).await.unwrap();
    let db_vs = db.current_versionstamp().await.unwrap();
    assert_eq!(shipped, db_vs);
    backup.shutdown().await.unwrap();
    let current = export(&db).await;
    db.close().await.unwrap();
    check_database(&current, &acks);
    let (point, restored) = restore_latest(dir).await.unwrap();
    assert_eq!(point, db_vs);
    assert_eq!(restored, current, "the final restore equals the database");
    for a in &acks {
        let k = item_key("a", a.round, a.task, a.i);
        assert_eq!(restored.get(&k).map(|e| e.1), Some(a.versionstamp), "{a:?}");
    }
}
