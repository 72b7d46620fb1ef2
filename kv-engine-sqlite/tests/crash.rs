//! Crash safety through the whole stack (`kv_db::Db` over [`SqliteBackend`], durable default):
//! a child process (this test binary re-executed) runs concurrent atomic writes and enqueues and
//! prints every acknowledged write; the parent kills it with SIGKILL at a random moment,
//! reopens the database and checks that
//!
//! - every acknowledged write is present, with its acknowledged versionstamp;
//! - no write is partially applied (each sets three keys, bumps a counter and sometimes enqueues
//!   a message: all or nothing);
//! - versionstamps keep increasing after the reopen;
//! - no acknowledged queue message is lost.
//!
//! Rounds accumulate in one database file, so later rounds also re-check earlier rounds' data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kv_db::{Db, DbConfig};
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::{
    AtomicWrite, CommitResult, Consistency, Database, Enqueue, KvEntry, KvValue, Mutation,
    MutationKind, ReadRange, Versionstamp,
};

const CHILD_ENV: &str = "KV_ENGINE_SQLITE_CRASH_CHILD";
const ROUNDS: u64 = 5;
const TASKS: u64 = 8;
/// Every this many writes of a task also enqueue a message.
const ENQUEUE_EVERY: u64 = 4;

fn item_key(kind: &str, round: u64, task: u64, i: u64) -> Vec<u8> {
    encode_key(&[
        KeyPart::from(kind),
        KeyPart::from(round as i64),
        KeyPart::from(task as i64),
        KeyPart::from(i as i64),
    ])
    .unwrap()
}

fn task_prefix(kind: &str, round: u64, task: u64) -> Vec<u8> {
    encode_key(&[
        KeyPart::from(kind),
        KeyPart::from(round as i64),
        KeyPart::from(task as i64),
    ])
    .unwrap()
}

fn count_key(round: u64, task: u64) -> Vec<u8> {
    encode_key(&[
        KeyPart::from("count"),
        KeyPart::from(round as i64),
        KeyPart::from(task as i64),
    ])
    .unwrap()
}

fn item_value(round: u64, task: u64, i: u64) -> Vec<u8> {
    format!("{round}-{task}-{i}").into_bytes()
}

/// A V8-serialized one-byte string (version 15), the shape Deno gives queue payloads.
fn v8_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 128);
    let mut out = vec![0xff, 0x0f, 0x22, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn message_name(round: u64, task: u64, i: u64) -> String {
    format!("q-{round}-{task}-{i}")
}

fn db_path(dir: &str) -> std::path::PathBuf {
    std::path::Path::new(dir).join("crash.sqlite3")
}

/// The child (ignored in a normal run; does nothing without the environment variable): writes
/// until killed, or for at most 20 s should the parent be gone.
#[ignore = "child process of acknowledged_writes_survive_sigkill, started by it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (round, dir) = spec.split_once('|').unwrap();
    let round: u64 = round.parse().unwrap();
    let backend = SqliteBackend::open(db_path(dir), SqliteOptions::default()).unwrap();
    let db = Arc::new(Db::open(backend, DbConfig::default()).await.unwrap());
    println!("READY");
    let stop = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let text = String::from_utf8(item_value(round, task, i)).unwrap();
                let mut mutations: Vec<Mutation> = ["a", "b", "c"]
                    .iter()
                    .map(|kind| {
                        Mutation::set(
                            item_key(kind, round, task, i),
                            KvValue::Bytes(text.clone().into_bytes()),
                        )
                    })
                    .collect();
                mutations.push(Mutation {
                    key: count_key(round, task),
                    kind: MutationKind::Sum {
                        value: KvValue::U64(1),
                        min: None,
                        max: None,
                        clamp: false,
                    },
                    expire_at_ms: None,
                });
                let enqueue = i.is_multiple_of(ENQUEUE_EVERY);
                let enqueues = if enqueue {
                    vec![Enqueue {
                        payload: v8_string(&message_name(round, task, i)),
                        deadline_ms: 0,
                        keys_if_undelivered: vec![],
                        backoff_schedule: None,
                    }]
                } else {
                    vec![]
                };
                let write = AtomicWrite {
                    checks: vec![],
                    mutations,
                    enqueues,
                };
                match db.atomic_write(write).await {
                    Ok(CommitResult::Committed(vs)) => {
                        println!("ACK {task} {i} {vs} {}", u8::from(enqueue));
                    }
                    other => panic!("write {task}/{i} failed: {other:?}"),
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[derive(Debug)]
struct Ack {
    task: u64,
    i: u64,
    versionstamp: Versionstamp,
    enqueued: bool,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let task = parts.next()?.parse().ok()?;
    let i = parts.next()?.parse().ok()?;
    let versionstamp = parts.next()?.parse().ok()?;
    let enqueued = parts.next()? == "1";
    Some(Ack {
        task,
        i,
        versionstamp,
        enqueued,
    })
}

/// Seeds from the clock: every run kills at different moments.
fn random_kill_delay() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut x = nanos ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_millis(200 + x % 601)
}

/// Runs one child and returns its acknowledged writes.
fn run_child(dir: &str, round: u64) -> Vec<Ack> {
    let stderr_path = std::path::Path::new(dir).join(format!("child-{round}.stderr"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{round}|{dir}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill is not an acknowledgement.
                Ok(_) if buf.last() == Some(&b'\n') => {
                    let _ = tx.send(String::from_utf8_lossy(&buf).trim_end().to_string());
                }
                Ok(_) => break,
            }
        }
    });
    // The test harness prints its own lines first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            // With one test thread the harness prints "test crash_child ... " on the same line.
            Ok(line) if line.ends_with("READY") => break Ok(line),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    if ready.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        let _ = std::fs::File::open(&stderr_path).and_then(|mut f| f.read_to_string(&mut err));
        panic!("child did not start: {ready:?}\n{err}");
    }
    let delay = random_kill_delay();
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let lines: Vec<String> = rx.try_iter().collect();
    let acks: Vec<Ack> = lines.iter().filter_map(|l| parse_ack(l)).collect();
    let mut err = String::new();
    let _ = std::fs::File::open(&stderr_path).and_then(|mut f| f.read_to_string(&mut err));
    assert!(
        !err.contains("panicked"),
        "child panicked before the kill (status {status:?}):\n{err}"
    );
    eprintln!(
        "round {round}: killed after {delay:?} with {} acknowledged writes",
        acks.len()
    );
    acks
}

async fn read_all(db: &Db, prefix: &[u8]) -> Vec<KvEntry> {
    let mut range = ReadRange::prefix(prefix, 500);
    let mut out = Vec::new();
    loop {
        let page = db
            .snapshot_read(vec![range.clone()], Consistency::Strong)
            .await
            .unwrap()
            .remove(0);
        let full = page.len() == range.limit as usize;
        if let Some(last) = page.last() {
            range.start = last.key.clone();
            range.start.push(0);
        }
        out.extend(page);
        if !full {
            return out;
        }
    }
}

/// Drains every ready queue message with concurrent listeners; returns the payload names.
async fn drain_queue(db: &Db) -> Vec<String> {
    let mut handles = Vec::new();
    for _ in 0..16 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(msg) = db.dequeue(Duration::from_millis(300)).await.unwrap() {
                assert!(
                    msg.payload.starts_with(&[0xff, 0x0f, 0x22]),
                    "{:?}",
                    msg.payload
                );
                got.push(String::from_utf8(msg.payload[4..].to_vec()).unwrap());
                db.finish(msg.lease, true).await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

/// Checks one round's data against its acknowledgements; returns the largest versionstamp seen.
async fn verify_round(db: &Db, round: u64, acks: &[Ack]) -> Versionstamp {
    let mut max_vs = Versionstamp::default();
    let mut by_task: BTreeMap<u64, Vec<&Ack>> = BTreeMap::new();
    for a in acks {
        by_task.entry(a.task).or_default().push(a);
    }
    for task in 0..TASKS {
        let acked = by_task.get(&task).map(Vec::as_slice).unwrap_or(&[]);
        let mut present: Vec<BTreeMap<u64, (Vec<u8>, Versionstamp)>> = Vec::new();
        for kind in ["a", "b", "c"] {
            let mut m = BTreeMap::new();
            for e in read_all(db, &task_prefix(kind, round, task)).await {
                let KvValue::Bytes(v) = e.value else {
                    panic!("unexpected value {e:?}")
                };
                // The value names the write; the key must be that write's key.
                let text = String::from_utf8(v.clone()).unwrap();
                let i: u64 = text.rsplit('-').next().unwrap().parse().unwrap();
                assert_eq!(e.key, item_key(kind, round, task, i), "{text}");
                max_vs = max_vs.max(e.versionstamp);
                m.insert(i, (v, e.versionstamp));
            }
            present.push(m);
        }
        // All three keys of a write, or none.
        assert_eq!(present[0], present[1], "round {round} task {task}: a vs b");
        assert_eq!(present[0], present[2], "round {round} task {task}: a vs c");
        let written = present[0].len() as u64;
        // Writes of a task are sequential: the present ones are exactly 0..written.
        assert_eq!(
            present[0].keys().copied().collect::<Vec<_>>(),
            (0..written).collect::<Vec<_>>(),
            "round {round} task {task}: gap in the committed writes"
        );
        for (i, (v, _)) in &present[0] {
            assert_eq!(v, &item_value(round, task, *i));
        }
        // The counter moved together with the keys.
        let count = db
            .snapshot_read(
                vec![ReadRange::single(&count_key(round, task))],
                Consistency::Strong,
            )
            .await
            .unwrap()
            .remove(0);
        let count = match count.first().map(|e| &e.value) {
            Some(KvValue::U64(n)) => *n,
            None => 0,
            other => panic!("bad counter {other:?}"),
        };
        assert_eq!(count, written, "round {round} task {task}: counter vs keys");
        // Every acknowledged write is there with its versionstamp; at most one write beyond
        // the last acknowledgement (in flight at the kill) committed.
        for a in acked {
            let (_, vs) = present[0]
                .get(&a.i)
                .unwrap_or_else(|| panic!("round {round}: acknowledged write {a:?} lost"));
            assert_eq!(*vs, a.versionstamp, "round {round}: versionstamp of {a:?}");
        }
        let acked_len = acked.iter().map(|a| a.i + 1).max().unwrap_or(0);
        assert!(
            written == acked_len || written == acked_len + 1,
            "round {round} task {task}: {written} committed, {acked_len} acknowledged"
        );
    }
    max_vs
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut history: Vec<Vec<Ack>> = Vec::new();
    let mut total_acks = 0;
    let mut total_messages = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let acks = run_child(&dir_str, round);
        total_acks += acks.len();
        history.push(acks);
        rt.block_on(async {
            let backend = SqliteBackend::open(db_path(&dir_str), SqliteOptions::default()).unwrap();
            let db = Db::open(backend, DbConfig::default()).await.unwrap();
            // Earlier rounds' data is still intact, too.
            let mut max_vs = Versionstamp::default();
            for (r, acks) in history.iter().enumerate() {
                max_vs = max_vs.max(verify_round(&db, r as u64, acks).await);
            }
            let acks = &history[round as usize];
            for a in acks {
                max_vs = max_vs.max(a.versionstamp);
            }

            // Queue: every acknowledged enqueue is delivered; nothing from a write that did not
            // commit is.
            let delivered: BTreeSet<String> = drain_queue(&db).await.into_iter().collect();
            let acked_messages: BTreeSet<String> = acks
                .iter()
                .filter(|a| a.enqueued)
                .map(|a| message_name(round, a.task, a.i))
                .collect();
            let missing: Vec<_> = acked_messages.difference(&delivered).collect();
            assert!(
                missing.is_empty(),
                "round {round}: lost queue messages {missing:?}"
            );
            for name in &delivered {
                let mut parts = name.split('-').skip(1).map(|p| p.parse::<u64>().unwrap());
                let (r, t, i) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                assert_eq!(r, round, "message {name} delivered again in a later round");
                let written = read_all(&db, &task_prefix("a", r, t)).await.len() as u64;
                assert!(
                    i < written,
                    "message {name} of an uncommitted write was delivered"
                );
            }
            total_messages += delivered.len();

            // Versionstamps keep increasing after the crash.
            let write = AtomicWrite {
                mutations: vec![Mutation::set(
                    encode_key(&[KeyPart::from("after"), KeyPart::from(round as i64)]).unwrap(),
                    KvValue::U64(round),
                )],
                ..Default::default()
            };
            let vs = db
                .atomic_write(write)
                .await
                .unwrap()
                .versionstamp()
                .unwrap();
            assert!(
                vs > max_vs,
                "round {round}: new versionstamp {vs} <= {max_vs}"
            );
            db.close().await.unwrap();
        });
    }
    eprintln!(
        "{ROUNDS} rounds, {total_acks} acknowledged writes, {total_messages} queue messages, {:?}",
        started.elapsed()
    );
    assert!(total_acks > 0, "the children never acknowledged a write");
    assert!(total_messages > 0);
}
