//! Crash safety: a child process (this test binary re-executed with `KV_REDB_CRASH_CHILD` set)
//! writes through `kv_db::Db` over a redb file and prints every acknowledged write; the parent
//! SIGKILLs it at a random moment, reopens the file and checks that every acknowledged write is
//! there in full, no write is partially applied, versionstamps keep increasing and no
//! acknowledged queue message was lost. Repeated on the same file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::{
    AtomicWrite, CommitResult, Consistency, Database, Enqueue, KvValue, Mutation, ReadRange,
    Versionstamp,
};
use rand::Rng;

const CHILD_ENV: &str = "KV_REDB_CRASH_CHILD";
/// Keys set together by one atomic write.
const PARTS: u32 = 3;
const WRITERS: u64 = 8;
const ROUNDS: usize = 5;

fn part_key(id: u64, part: u32) -> Vec<u8> {
    encode_key(&[
        KeyPart::String("w".into()),
        KeyPart::Int(id.into()),
        KeyPart::Int(part.into()),
    ])
    .unwrap()
}

/// Every entry under the `["w"]` prefix, read in pages of at most the read limit.
async fn read_all(db: &Db) -> Vec<kv_traits::KvEntry> {
    let prefix = ReadRange::prefix(&encode_key(&[KeyPart::String("w".into())]).unwrap(), 1000);
    let mut start = prefix.start.clone();
    let mut all = Vec::new();
    loop {
        let range = ReadRange {
            start: start.clone(),
            ..prefix.clone()
        };
        let page = db
            .snapshot_read(vec![range], Consistency::Strong)
            .await
            .unwrap()
            .remove(0);
        let Some(last) = page.last() else { break };
        start = last.key.clone();
        start.push(0);
        let full = page.len() == 1000;
        all.extend(page);
        if !full {
            break;
        }
    }
    all
}

fn config() -> DbConfig {
    DbConfig {
        background_tasks: false,
        ..DbConfig::default()
    }
}

/// An acknowledged write, as the child printed it.
struct Ack {
    versionstamp: Versionstamp,
    enqueued: bool,
}

/// The child: writes until killed. Each id is written once, by one writer task; every fourth
/// write also enqueues a message whose payload names the id.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("KV_REDB_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
        let db = Arc::new(Db::open(backend, config()).await.unwrap());
        writeln!(std::io::stdout(), "READY").unwrap();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let id = round * 1_000_000_000 + w * 10_000_000 + i;
                    let enqueue = i % 4 == 0;
                    let write = AtomicWrite {
                        mutations: (0..PARTS)
                            .map(|p| {
                                Mutation::set(
                                    part_key(id, p),
                                    KvValue::Bytes(id.to_be_bytes().to_vec()),
                                )
                            })
                            .collect(),
                        enqueues: if enqueue {
                            vec![Enqueue {
                                payload: kv_traits::v8::serialize_number(id as f64),
                                deadline_ms: 0,
                                keys_if_undelivered: vec![],
                                backoff_schedule: None,
                            }]
                        } else {
                            vec![]
                        },
                        ..AtomicWrite::default()
                    };
                    match db.atomic_write(write).await.unwrap() {
                        CommitResult::Committed(vs) => {
                            let line = format!("ACK {id} {vs} {}\n", u8::from(enqueue));
                            let mut out = std::io::stdout().lock();
                            out.write_all(line.as_bytes()).unwrap();
                            out.flush().unwrap();
                        }
                        CommitResult::CheckFailed(_) => panic!("no checks were given"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn run_child(path: &Path, round: usize, kill_after: Duration) -> BTreeMap<u64, Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env("KV_REDB_CRASH_ROUND", (round + 1).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = BTreeMap::new();
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The test harness may print its own text before ours on the same line.
            if line.ends_with("READY") {
                ready = true;
            }
            let Some(at) = line.find("ACK ") else {
                continue;
            };
            let mut fields = line[at + 4..].split_whitespace();
            // A line cut by the kill has fewer fields; the write was not acknowledged.
            let (Some(id), Some(vs), Some(enq)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (Ok(id), Ok(versionstamp)) = (id.parse::<u64>(), vs.parse::<Versionstamp>()) else {
                continue;
            };
            acks.insert(
                id,
                Ack {
                    versionstamp,
                    enqueued: enq == "1",
                },
            );
        }
        (ready, acks)
    });
    std::thread::sleep(kill_after);
    // Child::kill sends SIGKILL on Unix.
    child.kill().unwrap();
    child.wait().unwrap();
    let (ready, acks) = reader.join().unwrap();
    assert!(ready, "round {round}: the child never opened the database");
    acks
}

async fn verify(
    path: &Path,
    round: usize,
    acks: &BTreeMap<u64, Ack>,
    all_enqueued: &mut BTreeSet<u64>,
    delivered: &mut BTreeSet<u64>,
    last_versionstamp: &mut Versionstamp,
) {
    let backend = RedbBackend::open(path, RedbOptions::default()).unwrap();
    let db = Db::open(backend, config()).await.unwrap();

    // No writer is running, so reading in pages sees one state.
    let entries = read_all(&db).await;
    // Group the stored parts by write id.
    let mut stored: BTreeMap<u64, Vec<(Vec<u8>, Versionstamp)>> = BTreeMap::new();
    for e in &entries {
        let KvValue::Bytes(b) = &e.value else {
            panic!("round {round}: unexpected value {:?}", e.value)
        };
        let id = u64::from_be_bytes(b.as_slice().try_into().unwrap());
        stored
            .entry(id)
            .or_default()
            .push((e.key.clone(), e.versionstamp));
    }
    for (id, parts) in &stored {
        assert_eq!(
            parts.len(),
            PARTS as usize,
            "round {round}: write {id} is partially applied"
        );
        let keys: Vec<Vec<u8>> = (0..PARTS).map(|p| part_key(*id, p)).collect();
        assert_eq!(
            parts.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            keys
        );
        assert!(
            parts.iter().all(|(_, vs)| *vs == parts[0].1),
            "round {round}: write {id} has parts of different versionstamps"
        );
    }
    let mut max_vs = *last_versionstamp;
    for (id, ack) in acks {
        let parts = stored
            .get(id)
            .unwrap_or_else(|| panic!("round {round}: acknowledged write {id} was lost"));
        assert_eq!(parts[0].1, ack.versionstamp, "round {round}: write {id}");
        max_vs = max_vs.max(ack.versionstamp);
        if ack.enqueued {
            all_enqueued.insert(*id);
        }
    }
    for parts in stored.values() {
        max_vs = max_vs.max(parts[0].1);
    }

    // Versionstamps keep increasing after the reopen.
    let probe = db
        .atomic_write(AtomicWrite {
            mutations: vec![Mutation::set(
                b"\x02probe\x00".to_vec(),
                KvValue::U64(round as u64),
            )],
            ..AtomicWrite::default()
        })
        .await
        .unwrap()
        .versionstamp()
        .unwrap();
    assert!(
        probe > max_vs,
        "round {round}: versionstamp {probe} after reopen is not above {max_vs}"
    );
    *last_versionstamp = probe;

    // Drain the queue: every acknowledged enqueue must be delivered (this round or before).
    while let Some(msg) = db.dequeue(Duration::from_millis(100)).await.unwrap() {
        let id = match kv_traits::v8::parse(&msg.payload).unwrap() {
            kv_traits::v8::V8Value::Number(n) => n as u64,
            other => panic!("round {round}: unexpected payload {other:?}"),
        };
        delivered.insert(id);
        db.finish(msg.lease, true).await.unwrap();
    }
    let lost: Vec<&u64> = all_enqueued.difference(delivered).collect();
    assert!(
        lost.is_empty(),
        "round {round}: queue messages lost: {lost:?}"
    );
    db.close().await.unwrap();
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    let mut all_enqueued = BTreeSet::new();
    let mut delivered = BTreeSet::new();
    let mut last_vs = Versionstamp::from_version(0);
    let started = Instant::now();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.random_range(200..=800));
        let acks = run_child(&path, round, kill_after);
        total_acks += acks.len();
        rt.block_on(verify(
            &path,
            round,
            &acks,
            &mut all_enqueued,
            &mut delivered,
            &mut last_vs,
        ));
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} acknowledged writes verified",
            acks.len()
        );
    }
    assert!(total_acks > 0, "no write was acknowledged in any round");
    eprintln!(
        "{ROUNDS} rounds, {total_acks} acknowledged writes, {} messages, in {:?}",
        all_enqueued.len(),
        started.elapsed()
    );
}
