//! Several databases on one shared store, as several servers on one networked database: every
//! guarantee of one database holds across them (versionstamps in commit order, serializable
//! checks, watch and queues across processes, the change log, feed trimming).

use std::time::Duration;

use futures::StreamExt;
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_test_support::SharedStore;
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, Enqueue, KvEntry, KvValue, Mutation,
    ReadRange, Versionstamp, WatchKeyOutput,
};

/// Bounds a wait that should end much sooner; only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

fn config() -> DbConfig {
    DbConfig {
        maintenance_interval: Duration::from_millis(50),
        queue_lease: Duration::from_millis(300),
        ..DbConfig::default()
    }
}

async fn open_two() -> (Db, Db) {
    let store = SharedStore::new(MemoryBackend::new());
    let a = Db::open(store.open(), config()).await.unwrap();
    let b = Db::open(store.open(), config()).await.unwrap();
    (a, b)
}

async fn set(db: &Db, key: &[u8], value: u64) -> Versionstamp {
    let w = AtomicWrite {
        mutations: vec![Mutation::set(key.to_vec(), KvValue::U64(value))],
        ..Default::default()
    };
    match db.atomic_write(w).await.unwrap() {
        CommitResult::Committed(vs) => vs,
        other => panic!("unexpected {other:?}"),
    }
}

async fn get(db: &Db, key: &[u8]) -> Option<KvEntry> {
    let mut out = db
        .snapshot_read(vec![ReadRange::single(key)], Consistency::Strong)
        .await
        .unwrap();
    out.pop().and_then(|mut r| r.pop())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versionstamps_increase_in_commit_order_across_databases() {
    let (a, b) = open_two().await;
    let mut last = Versionstamp::from_version(0);
    for i in 0..50u64 {
        let db = if i % 2 == 0 { &a } else { &b };
        let vs = set(db, b"\x02k\x00", i).await;
        assert!(vs > last, "{vs:?} after {last:?}");
        last = vs;
        // The other database reads what this one committed, at its versionstamp.
        let other = if i % 2 == 0 { &b } else { &a };
        assert_eq!(get(other, b"\x02k\x00").await.unwrap().versionstamp, vs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_increments_from_both_databases_are_serializable() {
    let (a, b) = open_two().await;
    set(&a, b"\x02n\x00", 0).await;
    let inc = |db: Db| async move {
        let mut done = 0;
        while done < 25 {
            let cur = get(&db, b"\x02n\x00").await.unwrap();
            let KvValue::U64(n) = cur.value else {
                panic!("not a u64")
            };
            let w = AtomicWrite {
                checks: vec![Check {
                    key: b"\x02n\x00".to_vec(),
                    versionstamp: Some(cur.versionstamp),
                }],
                mutations: vec![Mutation::set(b"\x02n\x00".to_vec(), KvValue::U64(n + 1))],
                ..Default::default()
            };
            if let CommitResult::Committed(_) = db.atomic_write(w).await.unwrap() {
                done += 1;
            }
        }
    };
    let (x, y) = tokio::join!(tokio::spawn(inc(a.clone())), tokio::spawn(inc(b.clone())));
    x.unwrap();
    y.unwrap();
    assert_eq!(get(&a, b"\x02n\x00").await.unwrap().value, KvValue::U64(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_database_sees_writes_made_through_another() {
    let (a, b) = open_two().await;
    let mut watch = b.watch(vec![b"\x02w\x00".to_vec()]).await.unwrap();
    // First frame: the current state (absent).
    let first = tokio::time::timeout(HANG, watch.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap(), vec![WatchKeyOutput::Changed(None)]);
    for i in 1..=3u64 {
        let vs = set(&a, b"\x02w\x00", i).await;
        loop {
            let frame = tokio::time::timeout(HANG, watch.next())
                .await
                .expect("the watcher saw the other database's write")
                .unwrap()
                .unwrap();
            if let [WatchKeyOutput::Changed(Some(e))] = frame.as_slice() {
                if e.versionstamp == vs {
                    assert_eq!(e.value, KvValue::U64(i));
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_enqueued_through_one_database_is_delivered_through_another() {
    let (a, b) = open_two().await;
    // A listener waits on b before the message exists.
    let listener = tokio::spawn({
        let b = b.clone();
        async move { b.dequeue(HANG).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let w = AtomicWrite {
        enqueues: vec![Enqueue {
            payload: b"hello".to_vec(),
            deadline_ms: 0,
            keys_if_undelivered: vec![],
            backoff_schedule: Some(vec![10]),
        }],
        ..Default::default()
    };
    assert!(matches!(
        a.atomic_write(w).await.unwrap(),
        CommitResult::Committed(_)
    ));
    let m = listener.await.unwrap().expect("delivered through b");
    assert_eq!((m.payload.as_slice(), m.attempt), (b"hello".as_slice(), 1));
    // b's listener "dies" without finishing: the lease expires and a is given the message.
    let again = tokio::time::timeout(HANG, async {
        loop {
            if let Some(m) = a.dequeue(Duration::from_secs(1)).await.unwrap() {
                return m;
            }
        }
    })
    .await
    .expect("redelivered after the lease expired");
    assert_eq!(again.attempt, 2);
    a.finish(again.lease, true).await.unwrap();
    // The first lease is stale now.
    assert!(b.finish(m.lease, true).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_database_logs_changes_while_one_of_them_keeps_a_change_log() {
    let store = SharedStore::new(MemoryBackend::new());
    let logging = Db::open(
        store.open(),
        DbConfig {
            change_log: true,
            ..config()
        },
    )
    .await
    .unwrap();
    let plain = Db::open(store.open(), config()).await.unwrap();
    let v1 = set(&logging, b"\x02x\x00", 1).await;
    let v2 = set(&plain, b"\x02y\x00", 2).await;
    let batches = logging.read_changes(None, 100).await.unwrap();
    let versions: Vec<Versionstamp> = batches.iter().map(|b| b.versionstamp).collect();
    assert_eq!(
        versions,
        vec![v1, v2],
        "the plain database's commit is logged too"
    );
    // Opening without a change log does not delete the shared one.
    let _again = Db::open(store.open(), config()).await.unwrap();
    assert_eq!(
        logging.change_log_since().await.unwrap(),
        Some(Versionstamp::from_version(0))
    );
}
