//! Several `kv-connect-server` processes on one PostgreSQL database (issue 13): every guarantee a
//! single server gives holds for N servers sharing one schema.
//!
//! A `Cluster` (`common/cluster.rs`) spawns N server binaries with `--engine postgres` on one
//! fresh schema of the test server (`kv_test_support::postgres`), all with the same access
//! token (so the same database id), and can SIGKILL one and restart it on the same port.
//!
//! - `conformance_suite_alternating_between_two_servers`: the database-level conformance suite
//!   over KV Connect, each call going to the other of two servers in turn (a watch opened on
//!   one server sees writes made through the other). Same tolerated failures as
//!   `kv-conformance/tests/remote.rs`.
//! - `watch_on_one_server_sees_writes_through_another`: 50 successive writes through B, each
//!   seen by a watcher on A with its versionstamp; prints the commit-to-notification latency
//!   (p50/p99) and asserts only delivery within a generous bound.
//! - `queue_messages_cross_servers_and_survive_a_killed_server`: enqueued through B, delivered
//!   to a listener on A; a listener whose server is SIGKILLed mid-lease loses nothing: its
//!   messages come back through the surviving server after the lease, as attempt 2; the killed
//!   server restarts on its port and serves the same queue.
//! - `versionstamps_stay_ordered_across_three_servers`: checked increments of one counter
//!   through three servers (each read through one server, committed through another); the
//!   counter equals the number of successful commits, commits are serializable, and an auditor
//!   on one server never sees the counter or its versionstamp go backwards.
//! - `real_clients_through_two_servers`: Deno writes through A, `@deno/kv` through B; each
//!   client reads both through the other server, and sees the same data and versionstamps.
//!
//! Performance is printed, never asserted.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use common::clients::{run_interop, tools};
use common::cluster::Cluster;
use futures::StreamExt;
use kv_conformance::harness::{block_on, database_suite_report, database_tests, DatabaseFactory};
use kv_connect_client::{RemoteDatabase, Value};
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, Enqueue, KvEntry, KvError, KvValue,
    Mutation, QueueLease, QueueMessage, ReadRange, Versionstamp, WatchKeyOutput, WatchStream,
};

/// Generous bound for anything that must happen "soon" (a notification, a delivery).
const SOON: Duration = Duration::from_secs(10);

// --------------------------------------------------------------------------- helpers

/// The key `["<s>"]`.
fn key(s: &str) -> Vec<u8> {
    common::key(s)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn get(db: &dyn Database, k: &[u8]) -> Option<KvEntry> {
    let mut out = db
        .snapshot_read(vec![ReadRange::single(k)], Consistency::Strong)
        .await
        .unwrap();
    out.remove(0).into_iter().next()
}

fn u64_of(entry: &Option<KvEntry>) -> u64 {
    match entry {
        None => 0,
        Some(KvEntry {
            value: KvValue::U64(n),
            ..
        }) => *n,
        Some(other) => panic!("not a U64: {other:?}"),
    }
}

fn set_write(k: &[u8], value: KvValue) -> AtomicWrite {
    AtomicWrite {
        mutations: vec![Mutation::set(k.to_vec(), value)],
        ..AtomicWrite::default()
    }
}

fn enqueue_write(text: &str, backoff: Vec<u32>) -> AtomicWrite {
    AtomicWrite {
        enqueues: vec![Enqueue {
            payload: Value::from(text).to_v8_bytes().unwrap(),
            deadline_ms: 0,
            keys_if_undelivered: vec![],
            backoff_schedule: Some(backoff),
        }],
        ..AtomicWrite::default()
    }
}

fn text_of(m: &QueueMessage) -> String {
    Value::from_v8_bytes(m.payload.clone())
        .as_str()
        .unwrap_or("<not a string>")
        .to_string()
}

/// The next entry of a one-key watch that changed (skipping `Unchanged`), within [`SOON`].
async fn next_change(stream: &mut WatchStream) -> Option<KvEntry> {
    loop {
        let batch = tokio::time::timeout(SOON, stream.next())
            .await
            .expect("a notification within 10 s")
            .expect("the watch stream ended")
            .expect("the watch stream failed");
        if let WatchKeyOutput::Changed(entry) = batch.into_iter().next().unwrap() {
            return entry;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ------------------------------------------------------------------- a. conformance

/// Two `RemoteDatabase`s on two servers of one database, used in turn call by call; closing
/// it stops both servers.
struct Alternating {
    remotes: [RemoteDatabase; 2],
    next: AtomicUsize,
    cluster: Mutex<Option<Cluster>>,
}

impl Alternating {
    fn pick(&self) -> &RemoteDatabase {
        &self.remotes[self.next.fetch_add(1, Ordering::Relaxed) % 2]
    }
}

#[async_trait]
impl Database for Alternating {
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        self.pick().snapshot_read(ranges, consistency).await
    }
    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        self.pick().atomic_write(write).await
    }
    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        self.pick().watch(keys).await
    }
    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.pick().dequeue(wait).await
    }
    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.pick().finish(lease, success).await
    }
    async fn close(&self) -> Result<(), KvError> {
        let a = self.remotes[0].close().await;
        let b = self.remotes[1].close().await;
        let cluster = self.cluster.lock().unwrap().take();
        drop(cluster);
        a.and(b)
    }
    fn limits(&self) -> kv_traits::Limits {
        self.remotes[0].limits()
    }
}

/// Fresh two-server clusters, started [`PREFETCH`] tests ahead so that starting them overlaps
/// with the tests that run meanwhile.
struct PairFactory {
    pending: Mutex<std::collections::VecDeque<thread::JoinHandle<Cluster>>>,
    /// Time `create` spent waiting for a cluster to be up.
    waited: Mutex<Duration>,
}

/// How many clusters are being started ahead of the test that needs them.
const PREFETCH: usize = 2;

impl PairFactory {
    fn new() -> Self {
        PairFactory {
            pending: Mutex::new((0..PREFETCH).map(|_| Self::start_one()).collect()),
            waited: Mutex::new(Duration::ZERO),
        }
    }

    fn start_one() -> thread::JoinHandle<Cluster> {
        thread::spawn(|| Cluster::start(2, "conf", &[]))
    }
}

impl Drop for PairFactory {
    fn drop(&mut self) {
        for h in self.pending.lock().unwrap().drain(..) {
            let _ = h.join();
        }
    }
}

#[async_trait]
impl DatabaseFactory for PairFactory {
    async fn create(&self) -> Result<Arc<dyn Database>, KvError> {
        let next = {
            let mut pending = self.pending.lock().unwrap();
            pending.push_back(Self::start_one());
            pending.pop_front().unwrap()
        };
        let waiting = Instant::now();
        let cluster = tokio::task::spawn_blocking(move || next.join().unwrap())
            .await
            .unwrap();
        *self.waited.lock().unwrap() += waiting.elapsed();
        let remotes = [cluster.remote(0).await, cluster.remote(1).await];
        assert_eq!(remotes[0].database_id(), remotes[1].database_id());
        Ok(Arc::new(Alternating {
            remotes,
            next: AtomicUsize::new(0),
            cluster: Mutex::new(Some(cluster)),
        }))
    }
}

/// The same list as `kv-conformance/tests/remote.rs` (see there why it cannot hold over KV
/// Connect): tests allowed to fail, with the failure text they must fail with.
const REMOTE_LIMITATIONS: &[(&str, &str)] = &[(
    "watch::slow_watcher_gets_latest_state",
    "the first notification after a burst must carry the latest state",
)];

#[test]
fn conformance_suite_alternating_between_two_servers() {
    let started = Instant::now();
    let factory = PairFactory::new();
    let mut report = block_on(database_suite_report(&factory));
    let waited = *factory.waited.lock().unwrap();
    drop(factory);
    let ran = report.passed.len() + report.failed.len();
    report.failed.retain(|(name, message)| {
        let allowed = REMOTE_LIMITATIONS
            .iter()
            .any(|(n, text)| n == name && message.contains(text));
        if allowed {
            eprintln!("{name} failed as expected over KV Connect (see REMOTE_LIMITATIONS)");
        }
        !allowed
    });
    eprintln!(
        "two servers, alternating: {} passed, {} failed in {:?} ({waited:?} of it waiting for servers to start)",
        report.passed.len(),
        report.failed.len(),
        started.elapsed()
    );
    if std::env::var("KV_CONFORMANCE_FILTER").map_or(true, |f| f.is_empty()) {
        assert_eq!(
            ran,
            database_tests().len(),
            "every database-level test must run"
        );
    }
    report.assert_ok();
}

// ---------------------------------------------------------------------------- b. watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_one_server_sees_writes_through_another() {
    const WRITES: u64 = 50;
    let cluster = Cluster::start(2, "watch", &[]);
    let a = cluster.remote(0).await;
    let b = cluster.remote(1).await;
    assert_eq!(
        a.database_id(),
        b.database_id(),
        "same token, same database"
    );
    let k = key("watched");
    let mut stream = a.watch(vec![k.clone()]).await.unwrap();
    assert_eq!(next_change(&mut stream).await, None, "initially absent");

    // The watcher runs on its own task and timestamps each notification as it arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(KvEntry, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            for out in item.unwrap() {
                if let WatchKeyOutput::Changed(Some(entry)) = out {
                    if tx.send((entry, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut latencies = Vec::new();
    for i in 1..=WRITES {
        let committed = b
            .atomic_write(set_write(&k, KvValue::U64(i)))
            .await
            .unwrap()
            .versionstamp()
            .expect("an unconditional write commits");
        let acked = Instant::now();
        let (entry, seen) = tokio::time::timeout(SOON, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "write {i} through B not seen by A's watcher within 10 s\n{}",
                    cluster.stderr_tails()
                )
            })
            .expect("watcher ended");
        assert_eq!(
            entry.value,
            KvValue::U64(i),
            "write {i}: notification value"
        );
        assert_eq!(
            entry.versionstamp, committed,
            "write {i}: notification versionstamp"
        );
        latencies.push(seen.saturating_duration_since(acked));
    }
    latencies.sort();
    eprintln!(
        "cross-server watch: {WRITES} writes through B seen on A; commit-acknowledged-to-notification latency p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    watcher.abort();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// ---------------------------------------------------------------------------- c. queues

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_cross_servers_and_survive_a_killed_server() {
    const BACKOFF_MS: u32 = 100;
    const HELD: usize = 3;
    const MESSAGES: usize = 8;
    let mut cluster = Cluster::start(2, "queue", &["--queue-lease-secs", "1"]);
    let a = Arc::new(cluster.remote(0).await);
    let b = cluster.remote(1).await;
    assert!(a.supports_queues() && b.supports_queues());

    // 1. A listener waiting on A receives what is enqueued through B.
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.dequeue(SOON).await })
    };
    b.atomic_write(enqueue_write("hello", vec![BACKOFF_MS]))
        .await
        .unwrap();
    let hello = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the message enqueued through B reaches the listener on A within 10 s");
    assert_eq!((text_of(&hello).as_str(), hello.attempt), ("hello", 1));
    a.finish(hello.lease, true).await.unwrap();

    // 2. A leases some messages and its server dies before finishing them.
    let mut expected = HashSet::new();
    for i in 0..MESSAGES {
        let m = format!("m{i}");
        b.atomic_write(enqueue_write(&m, vec![BACKOFF_MS]))
            .await
            .unwrap();
        expected.insert(m);
    }
    let mut held = Vec::new();
    for _ in 0..HELD {
        let m = a
            .dequeue(SOON)
            .await
            .unwrap()
            .expect("A gets a message within 10 s");
        assert_eq!(m.attempt, 1, "{}", text_of(&m));
        held.push((text_of(&m), m.lease.deadline_ms));
    }
    cluster.kill(0);

    // The survivor delivers everything: the messages A held come back after their lease as
    // attempt 2, the others as attempt 1; each is finished successfully once.
    let mut done = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done != expected {
        assert!(
            Instant::now() < deadline,
            "not every message was delivered through the surviving server within 20 s: done {done:?} of {expected:?}\n{}",
            cluster.stderr_tails()
        );
        let Some(m) = b.dequeue(Duration::from_secs(2)).await.unwrap() else {
            continue;
        };
        let text = text_of(&m);
        let at = now_ms();
        match held.iter().find(|(t, _)| *t == text) {
            Some((_, lease_deadline)) => {
                assert_eq!(m.attempt, 2, "{text} was leased to the killed server once");
                assert!(
                    at + 50 >= *lease_deadline,
                    "{text} came back at {at}, before its lease ran out at {lease_deadline}"
                );
            }
            None => assert_eq!(m.attempt, 1, "{text} was never leased before"),
        }
        assert!(expected.contains(&text), "unexpected message {text}");
        b.finish(m.lease, true).await.unwrap();
        done.insert(text);
    }
    assert!(
        b.dequeue(Duration::from_millis(1500))
            .await
            .unwrap()
            .is_none(),
        "finished messages are not delivered again"
    );

    // 3. The killed server restarts on its port and serves the same queue.
    cluster.restart(0);
    let a2 = cluster.remote(0).await;
    assert_eq!(a2.database_id(), b.database_id());
    b.atomic_write(enqueue_write("after-restart", vec![BACKOFF_MS]))
        .await
        .unwrap();
    let m = a2
        .dequeue(SOON)
        .await
        .unwrap()
        .expect("the restarted server delivers within 10 s");
    assert_eq!((text_of(&m).as_str(), m.attempt), ("after-restart", 1));
    a2.finish(m.lease, true).await.unwrap();
    a2.close().await.unwrap();
    b.close().await.unwrap();
}

// ----------------------------------------------------------------------- d. versionstamps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versionstamps_stay_ordered_across_three_servers() {
    const SERVERS: usize = 3;
    const WRITERS: usize = 6;
    const INCREMENTS: usize = 30;
    let started = Instant::now();
    let cluster = Cluster::start(SERVERS, "vs", &[]);
    let mut remotes = Vec::new();
    for i in 0..SERVERS {
        remotes.push(Arc::new(cluster.remote(i).await));
    }
    let k = key("counter");

    // The auditor: a watch and a reader, both through server 0.
    let stop = Arc::new(AtomicBool::new(false));
    let mut stream = remotes[0].watch(vec![k.clone()]).await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<(Versionstamp, u64)> = Vec::new();
        while let Some(item) = stream.next().await {
            if let Some(WatchKeyOutput::Changed(entry)) = item.unwrap().into_iter().next() {
                let n = u64_of(&entry);
                seen.push((entry.map_or(Versionstamp::ZERO, |e| e.versionstamp), n));
                if n == (WRITERS * INCREMENTS) as u64 {
                    break;
                }
            }
        }
        seen
    });
    let reader = {
        let db = remotes[0].clone();
        let (k, stop) = (k.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let entry = get(&*db, &k).await;
                let n = u64_of(&entry);
                seen.push((entry.map_or(Versionstamp::ZERO, |e| e.versionstamp), n));
            }
            seen
        })
    };

    // Writers: read through one server, commit the checked increment through the next.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let read_db = remotes[w % SERVERS].clone();
        let write_db = remotes[(w + 1) % SERVERS].clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut commits = Vec::new();
            let mut conflicts = 0usize;
            let mut last = Versionstamp::ZERO;
            while commits.len() < INCREMENTS {
                let entry = get(&*read_db, &k).await;
                let current = entry.as_ref().map(|e| e.versionstamp);
                assert!(
                    current.unwrap_or(Versionstamp::ZERO) >= last,
                    "writer {w}: a strong read through another server missed its own commit"
                );
                let n = u64_of(&entry);
                let write = AtomicWrite {
                    checks: vec![Check {
                        key: k.clone(),
                        versionstamp: current,
                    }],
                    mutations: vec![Mutation::set(k.clone(), KvValue::U64(n + 1))],
                    enqueues: vec![],
                };
                match write_db.atomic_write(write).await.unwrap() {
                    CommitResult::Committed(vs) => {
                        assert!(vs > last, "writer {w}: versionstamp went backwards");
                        last = vs;
                        commits.push((vs, n + 1));
                    }
                    CommitResult::CheckFailed(_) => conflicts += 1,
                }
            }
            (commits, conflicts)
        }));
    }
    let mut commits = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (c, f) = t.await.unwrap();
        commits.extend(c);
        conflicts += f;
    }
    let total = (WRITERS * INCREMENTS) as u64;
    assert_eq!(commits.len() as u64, total);

    // Serializable: the successful commits wrote 1, 2, ..., total in versionstamp order.
    commits.sort();
    for (i, (_, value)) in commits.iter().enumerate() {
        assert_eq!(
            *value,
            i as u64 + 1,
            "commits in versionstamp order: {commits:?}"
        );
    }
    let last_vs = commits.last().unwrap().0;
    for (i, db) in remotes.iter().enumerate() {
        let entry = get(&**db, &k).await.expect("the counter exists");
        assert_eq!(
            entry.value,
            KvValue::U64(total),
            "counter through server {i}"
        );
        assert_eq!(
            entry.versionstamp, last_vs,
            "versionstamp through server {i}"
        );
    }

    let watched = tokio::time::timeout(SOON, watcher)
        .await
        .expect("the auditor's watch reaches the final count within 10 s")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let read = reader.await.unwrap();
    for (what, seen) in [("watch", &watched), ("reads", &read)] {
        for pair in seen.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1,
                "auditor ({what}) saw the counter go backwards: {:?} after {:?}",
                pair[1],
                pair[0]
            );
        }
        // Every value seen belongs to the commit with that versionstamp.
        for (vs, n) in seen.iter().filter(|(_, n)| *n > 0) {
            assert_eq!(
                commits[*n as usize - 1].0,
                *vs,
                "auditor ({what}): {n} at {vs:?}"
            );
        }
    }
    assert_eq!(watched.last().unwrap().1, total);
    eprintln!(
        "versionstamps: {total} checked increments through {SERVERS} servers ({conflicts} check failures retried), auditor saw {} notifications and {} reads, in {:?}",
        watched.len(),
        read.len(),
        started.elapsed()
    );
    for db in &remotes {
        db.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------- e. real clients

#[test]
fn real_clients_through_two_servers() {
    tools();
    let cluster = Cluster::start(2, "clients", &[]);
    let run = |client: &str, server: usize, mode: &str, prefix: &str| -> Vec<String> {
        run_interop(client, &cluster.url(server), mode, prefix, || {
            format!("through server {server}\n{}", cluster.stderr_tails())
        })
    };
    assert_eq!(
        run("deno", 0, "write", "fromdeno"),
        vec![r#"{"written":true}"#]
    );
    assert_eq!(
        run("node", 1, "write", "fromnode"),
        vec![r#"{"written":true}"#]
    );
    for prefix in ["fromdeno", "fromnode"] {
        let deno_a = run("deno", 0, "read", prefix);
        let deno_b = run("deno", 1, "read", prefix);
        let node_a = run("node", 0, "read", prefix);
        let node_b = run("node", 1, "read", prefix);
        assert_eq!(
            deno_a.len(),
            15,
            "{prefix}: entries seen by Deno: {deno_a:#?}"
        );
        assert_eq!(
            deno_a, deno_b,
            "{prefix}: Deno sees different data through A and B"
        );
        assert_eq!(
            node_a, node_b,
            "{prefix}: Node sees different data through A and B"
        );
        // Node's first line records what its default V8 decoder did (see real_clients.rs).
        assert_eq!(
            deno_b,
            node_a[1..],
            "{prefix}: Deno through B and Node through A see different data"
        );
    }
}
