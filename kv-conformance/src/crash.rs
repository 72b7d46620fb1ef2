//! The SIGKILL crash test, for engines that store data in a file (or a directory).
//!
//! A child process (the engine's test binary re-executed, see [`crate::child`]) opens a
//! [`kv_db::Db`] over the engine at a path and runs concurrent atomic writes until it is killed,
//! printing every acknowledged write. The parent kills it with SIGKILL at a random moment,
//! reopens the same path and checks that
//!
//! - every acknowledged write is present, with its acknowledged versionstamp;
//! - no write is partially applied: each sets three keys (one versionstamp, one value naming the
//!   write), bumps its task's counter and every few writes enqueues a message, all or nothing;
//!   a task's committed writes are exactly its first `n`, where `n` is its acknowledged count
//!   or one more (the write in flight at the kill);
//! - versionstamps keep increasing after the reopen (above everything stored or acknowledged);
//! - no acknowledged queue message is lost, and no message of an uncommitted write (or of an
//!   earlier round, already finished) is delivered.
//!
//! Rounds accumulate in one store, so each round also re-checks every earlier round's data.
//! The child's stderr is checked for a panic before the kill; at least one write and one message
//! must have been acknowledged over the whole test.
//!
//! An engine gets the test with [`crate::crash_tests!`], given the function that opens it at a
//! path (the same one it gives [`crate::harness::FileFactory`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::v8::{self, V8Value};
use kv_traits::{
    AtomicWrite, Backend, BackendError, CommitResult, Consistency, Database, Enqueue, KvEntry,
    KvValue, Mutation, MutationKind, ReadRange, Versionstamp,
};

use crate::child::{self, Child};

/// The environment variable carrying the child's instructions (`<round>|<path>`).
pub const CHILD_ENV: &str = "KV_CONFORMANCE_CRASH_CHILD";

/// The keys set together by every write.
const KINDS: [&str; 3] = ["a", "b", "c"];

/// How hard the crash test pushes.
#[derive(Clone, Debug)]
pub struct CrashConfig {
    /// Kill-and-reopen rounds on the same store.
    pub rounds: u64,
    /// Concurrent writer tasks in the child.
    pub tasks: u64,
    /// Every this many writes of a task also enqueue a message.
    pub enqueue_every: u64,
    /// The kill comes this many milliseconds after the child is ready (uniformly random); in
    /// the rounds before any write was acknowledged, after its first acknowledged write.
    pub kill_after_ms: RangeInclusive<u64>,
    /// The child stops writing after this long, should the parent be gone.
    pub child_lifetime: Duration,
    /// How long the child may take to open the store, and then to acknowledge its first write
    /// when the parent waits for one. It only bounds a hang.
    pub ready_timeout: Duration,
}

impl Default for CrashConfig {
    /// 5 rounds of 8 writer tasks, a message every 4th write, killed 200–800 ms in.
    fn default() -> Self {
        CrashConfig {
            rounds: 5,
            tasks: 8,
            enqueue_every: 4,
            kill_after_ms: 200..=800,
            child_lifetime: Duration::from_secs(90),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

fn item_key(kind: &str, round: u64, task: u64, i: u64) -> Vec<u8> {
    key(vec![kind.into(), int(round), int(task), int(i)])
}

fn round_prefix(kind: &str, round: u64) -> Vec<u8> {
    key(vec![kind.into(), int(round)])
}

fn count_key(round: u64, task: u64) -> Vec<u8> {
    key(vec!["count".into(), int(round), int(task)])
}

fn int(n: u64) -> KeyPart {
    KeyPart::from(n as i64)
}

fn key(parts: Vec<KeyPart>) -> Vec<u8> {
    encode_key(&parts).unwrap_or_else(|e| panic!("encoding a key failed: {e}"))
}

/// The value of every key of write (round, task, i): it names the write.
fn item_value(round: u64, task: u64, i: u64) -> String {
    format!("{round}-{task}-{i}")
}

fn message_name(round: u64, task: u64, i: u64) -> String {
    format!("q-{round}-{task}-{i}")
}

/// (round, task, i) from an item value or (after the `q-`) a message name.
fn parse_name(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('-').map(|p| p.parse::<u64>());
    let (Some(Ok(r)), Some(Ok(t)), Some(Ok(i)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((r, t, i))
}

/// The child side, for a `#[test]` (ignored) that the parent runs: does nothing unless
/// [`CHILD_ENV`] is set; otherwise opens the store with `open` and writes until killed.
pub fn crash_child<F, B>(open: F, config: &CrashConfig)
where
    F: Fn(&Path) -> Result<B, BackendError>,
    B: Backend,
{
    let Some(spec) = child::instructions(CHILD_ENV) else {
        return;
    };
    let (round, path) = spec
        .split_once('|')
        .unwrap_or_else(|| panic!("bad {CHILD_ENV}: {spec}"));
    let round: u64 = round
        .parse()
        .unwrap_or_else(|e| panic!("bad round {round}: {e}"));
    crate::harness::block_on(async {
        let backend = open(Path::new(path)).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        child_workload(backend, round, config).await;
    });
}

async fn child_workload(backend: impl Backend, round: u64, config: &CrashConfig) {
    let db = Arc::new(
        Db::open(backend, DbConfig::default())
            .await
            .unwrap_or_else(|e| panic!("Db::open failed: {e}")),
    );
    child::announce_ready();
    let stop = Instant::now() + config.child_lifetime;
    let enqueue_every = config.enqueue_every.max(1);
    let mut tasks = Vec::new();
    for task in 0..config.tasks {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let value = KvValue::Bytes(item_value(round, task, i).into_bytes());
                let mut mutations: Vec<Mutation> = KINDS
                    .iter()
                    .map(|kind| Mutation::set(item_key(kind, round, task, i), value.clone()))
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
                let enqueue = i.is_multiple_of(enqueue_every);
                let enqueues = if enqueue {
                    let name = message_name(round, task, i);
                    vec![Enqueue {
                        payload: v8::serialize(&V8Value::String(name)),
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
        t.await.unwrap_or_else(|e| panic!("writer task: {e}"));
    }
}

/// A write the child acknowledged.
#[derive(Debug)]
struct Ack {
    task: u64,
    i: u64,
    versionstamp: Versionstamp,
    enqueued: bool,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let ack = Ack {
        task: parts.next()?.parse().ok()?,
        i: parts.next()?.parse().ok()?,
        versionstamp: parts.next()?.parse().ok()?,
        enqueued: parts.next()? == "1",
    };
    parts.next().is_none().then_some(ack)
}

/// The parent side: `rounds` times, runs the child test `child_test` (its libtest name, see
/// [`child::test_name`]) on a store in a new temporary directory, kills it, reopens the store
/// with `open` and checks it (see the module docs). Panics on the first violation.
pub fn run_crash_test<F, B>(child_test: &str, open: F, config: &CrashConfig)
where
    F: Fn(&Path) -> Result<B, BackendError>,
    B: Backend,
{
    let dir = tempfile::Builder::new()
        .prefix("kv-conformance-crash-")
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
    let path = dir.path().join("crash-db");
    let path_str = path
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {path:?}"));
    let mut history: Vec<Vec<Ack>> = Vec::new();
    let mut last_probe = Versionstamp::default();
    let (mut total_acks, mut total_messages) = (0, 0);
    let started = Instant::now();
    for round in 0..config.rounds {
        let stderr = dir.path().join(format!("child-{round}.stderr"));
        let mut child = Child::spawn(
            child_test,
            CHILD_ENV,
            &format!("{round}|{path_str}"),
            &stderr,
        )
        .unwrap_or_else(|e| panic!("starting the child: {e}"));
        if let Err(e) = child.wait_ready(config.ready_timeout) {
            panic!("round {round}: {e}");
        }
        if total_acks == 0 {
            // However slow the machine, the run checks at least one acknowledged write and
            // one message (a task's first write enqueues one).
            if let Err(e) = child.wait_for_line(
                config.ready_timeout,
                "acknowledge a write with a message",
                |l| parse_ack(l).is_some_and(|a| a.enqueued),
            ) {
                panic!("round {round}: {e}");
            }
        }
        let delay = child::random_delay(config.kill_after_ms.clone());
        std::thread::sleep(delay);
        let killed = child
            .kill()
            .unwrap_or_else(|e| panic!("killing the child: {e}"));
        killed.assert_no_panic();
        let acks: Vec<Ack> = killed.lines.iter().filter_map(|l| parse_ack(l)).collect();
        eprintln!(
            "round {round}: killed after {delay:?} with {} acknowledged writes",
            acks.len()
        );
        total_acks += acks.len();
        history.push(acks);

        let (messages, probe) = crate::harness::block_on(async {
            let backend = open(&path).unwrap_or_else(|e| panic!("round {round}: reopening: {e}"));
            verify(backend, round, &history, last_probe, config).await
        });
        total_messages += messages;
        last_probe = probe;
    }
    eprintln!(
        "{} rounds, {total_acks} acknowledged writes, {total_messages} queue messages, {:?}",
        config.rounds,
        started.elapsed()
    );
    assert!(total_acks > 0, "the children never acknowledged a write");
    assert!(total_messages > 0, "no queue message was delivered");
}

/// Checks the store after round `round`; returns the number of messages delivered and the
/// versionstamp of the probe write.
async fn verify(
    backend: impl Backend,
    round: u64,
    history: &[Vec<Ack>],
    last_probe: Versionstamp,
    config: &CrashConfig,
) -> (usize, Versionstamp) {
    let db = Db::open(backend, DbConfig::default())
        .await
        .unwrap_or_else(|e| panic!("round {round}: Db::open failed: {e}"));
    // Earlier rounds' data is still intact, too.
    let mut max_vs = last_probe;
    let mut written = BTreeMap::new();
    for (r, acks) in history.iter().enumerate() {
        let (vs, w) = verify_round(&db, r as u64, acks, config).await;
        max_vs = max_vs.max(vs);
        written.insert(r as u64, w);
    }
    let acks = &history[round as usize];
    for a in acks {
        max_vs = max_vs.max(a.versionstamp);
    }

    // Every acknowledged enqueue is delivered; nothing of an uncommitted write, nor of an
    // earlier round (finished then) is.
    let delivered: BTreeSet<String> = drain_queue(&db, round).await.into_iter().collect();
    let acked: BTreeSet<String> = acks
        .iter()
        .filter(|a| a.enqueued)
        .map(|a| message_name(round, a.task, a.i))
        .collect();
    let lost: Vec<_> = acked.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "round {round}: lost queue messages {lost:?}"
    );
    for name in &delivered {
        let (r, t, i) = name
            .strip_prefix("q-")
            .and_then(parse_name)
            .unwrap_or_else(|| panic!("round {round}: unexpected message {name}"));
        assert_eq!(r, round, "message {name} delivered again in a later round");
        let committed = written[&r].get(&t).copied().unwrap_or(0);
        assert!(
            i < committed && i.is_multiple_of(config.enqueue_every.max(1)),
            "round {round}: message {name} of an uncommitted write was delivered"
        );
    }

    // Versionstamps keep increasing after the crash.
    let probe = db
        .atomic_write(AtomicWrite {
            mutations: vec![Mutation::set(
                key(vec!["after".into(), int(round)]),
                KvValue::U64(round),
            )],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: write after reopen: {e}"))
        .versionstamp()
        .unwrap_or_else(|| panic!("round {round}: the write after reopen was not committed"));
    assert!(
        probe > max_vs,
        "round {round}: new versionstamp {probe} <= {max_vs}"
    );
    db.close()
        .await
        .unwrap_or_else(|e| panic!("round {round}: close: {e}"));
    (delivered.len(), probe)
}

/// Every entry under `prefix`, read in pages.
async fn read_all(db: &Db, prefix: &[u8]) -> Vec<KvEntry> {
    let mut range = ReadRange::prefix(prefix, 500);
    let mut out = Vec::new();
    loop {
        let page = db
            .snapshot_read(vec![range.clone()], Consistency::Strong)
            .await
            .unwrap_or_else(|e| panic!("reading {prefix:02x?}: {e}"))
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

/// Drains every ready message with 16 concurrent listeners; returns their names.
async fn drain_queue(db: &Db, round: u64) -> Vec<String> {
    let mut handles = Vec::new();
    for _ in 0..16 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(msg) = db
                .dequeue(Duration::from_millis(300))
                .await
                .unwrap_or_else(|e| panic!("round {round}: dequeue: {e}"))
            {
                match v8::parse(&msg.payload) {
                    Ok(V8Value::String(name)) => got.push(name),
                    other => panic!("round {round}: unexpected payload {other:?}"),
                }
                db.finish(msg.lease, true)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: finish: {e}"));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_else(|e| panic!("listener task: {e}")));
    }
    all
}

/// The writes found under one kind of key: task -> i -> (value, versionstamp).
type Writes = BTreeMap<u64, BTreeMap<u64, (String, Versionstamp)>>;

/// Checks one round's data against its acknowledgements; returns the largest versionstamp
/// stored and each task's number of committed writes.
async fn verify_round(
    db: &Db,
    round: u64,
    acks: &[Ack],
    config: &CrashConfig,
) -> (Versionstamp, BTreeMap<u64, u64>) {
    let mut max_vs = Versionstamp::default();
    // One per kind.
    let mut present: Vec<Writes> = Vec::new();
    for kind in KINDS {
        let mut by_task = Writes::new();
        for e in read_all(db, &round_prefix(kind, round)).await {
            let KvValue::Bytes(v) = &e.value else {
                panic!("round {round}: unexpected value {e:?}")
            };
            // The value names the write; the key must be that write's key.
            let text = String::from_utf8_lossy(v).to_string();
            let (r, task, i) =
                parse_name(&text).unwrap_or_else(|| panic!("round {round}: bad value {text}"));
            assert_eq!(r, round, "{text} stored in round {round}'s keys");
            assert!(task < config.tasks, "{text}: no such task");
            assert_eq!(e.key, item_key(kind, round, task, i), "{text}");
            max_vs = max_vs.max(e.versionstamp);
            by_task
                .entry(task)
                .or_default()
                .insert(i, (text, e.versionstamp));
        }
        present.push(by_task);
    }
    // All three keys of a write, with one versionstamp, or none.
    assert_eq!(present[0], present[1], "round {round}: a vs b");
    assert_eq!(present[0], present[2], "round {round}: a vs c");

    let mut acked_by_task: BTreeMap<u64, Vec<&Ack>> = BTreeMap::new();
    for a in acks {
        acked_by_task.entry(a.task).or_default().push(a);
    }
    let empty = BTreeMap::new();
    let mut written_by_task = BTreeMap::new();
    for task in 0..config.tasks {
        let writes = present[0].get(&task).unwrap_or(&empty);
        let written = writes.len() as u64;
        // A task's writes are sequential: the committed ones are exactly 0..written.
        assert_eq!(
            writes.keys().copied().collect::<Vec<_>>(),
            (0..written).collect::<Vec<_>>(),
            "round {round} task {task}: gap in the committed writes"
        );
        // The counter moved together with the keys.
        let count = db
            .snapshot_read(
                vec![ReadRange::single(&count_key(round, task))],
                Consistency::Strong,
            )
            .await
            .unwrap_or_else(|e| panic!("reading a counter: {e}"))
            .remove(0);
        let count = match count.first().map(|e| &e.value) {
            Some(KvValue::U64(n)) => *n,
            None => 0,
            other => panic!("round {round} task {task}: bad counter {other:?}"),
        };
        assert_eq!(count, written, "round {round} task {task}: counter vs keys");
        // Every acknowledged write is there with its versionstamp; at most one write beyond
        // the last acknowledgement (in flight at the kill) committed.
        let acked = acked_by_task.get(&task).map(Vec::as_slice).unwrap_or(&[]);
        for a in acked {
            let (_, vs) = writes
                .get(&a.i)
                .unwrap_or_else(|| panic!("round {round}: acknowledged write {a:?} lost"));
            assert_eq!(*vs, a.versionstamp, "round {round}: versionstamp of {a:?}");
        }
        let acked_len = acked.iter().map(|a| a.i + 1).max().unwrap_or(0);
        assert!(
            written == acked_len || written == acked_len + 1,
            "round {round} task {task}: {written} committed, {acked_len} acknowledged"
        );
        written_by_task.insert(task, written);
    }
    (max_vs, written_by_task)
}

/// Generates an engine's crash test from the function that opens it at a path: the test
/// `acknowledged_writes_survive_sigkill` (see [`run_crash_test`]) and the ignored child test
/// `crash_child` it runs (see [`crash_child`]). An optional second argument is the
/// [`CrashConfig`] (default: [`CrashConfig::default`]).
///
/// ```no_run
/// # struct MyBackend;
/// # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
/// #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
/// #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } }
/// fn open(path: &std::path::Path) -> Result<MyBackend, kv_traits::BackendError> {
///     # let _ = path;
///     // MyBackend::open(path, MyOptions::default())
///     # Ok(MyBackend)
/// }
///
/// // tests/crash.rs of an engine crate
/// kv_conformance::crash_tests!(open);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! crash_tests {
    ($open:expr) => {
        $crate::crash_tests!($open, $crate::crash::CrashConfig::default());
    };
    ($open:expr, $config:expr $(,)?) => {
        /// The child process of `acknowledged_writes_survive_sigkill`.
        #[ignore = "child process of acknowledged_writes_survive_sigkill, started by it"]
        #[test]
        fn crash_child() {
            $crate::crash::crash_child($open, &$config);
        }

        #[test]
        fn acknowledged_writes_survive_sigkill() {
            $crate::crash::run_crash_test(
                &$crate::child::test_name(module_path!(), "crash_child"),
                $open,
                &$config,
            );
        }
    };
}
