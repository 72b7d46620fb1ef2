//! `Database::stats`: every counter moves when the matching work happens, and only then.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_traits::{
    AtomicWrite, Check, CommitResult, Database, DatabaseStats, Enqueue, KvValue, ManualClock,
    Mutation, Versionstamp,
};

fn key(s: &str) -> Vec<u8> {
    let mut k = vec![2];
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    k
}

async fn open(clock: &Arc<ManualClock>) -> Db {
    let config = DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        ..Default::default()
    };
    Db::open(MemoryBackend::new(), config).await.unwrap()
}

fn stats(db: &Db) -> DatabaseStats {
    db.stats().expect("kv-db keeps statistics")
}

fn enqueue(backoff: Vec<u32>, dead_letter: Option<Vec<u8>>) -> AtomicWrite {
    AtomicWrite {
        enqueues: vec![Enqueue {
            payload: vec![1, 2, 3],
            deadline_ms: 0,
            keys_if_undelivered: dead_letter.into_iter().collect(),
            backoff_schedule: Some(backoff),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_write_counts_one_commit_and_one_batch() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&clock).await;
    let before = stats(&db);
    assert_eq!(before.commits_total, 0);
    let w = AtomicWrite {
        mutations: vec![Mutation::set(key("a"), KvValue::U64(1))],
        ..Default::default()
    };
    assert!(matches!(
        db.atomic_write(w).await.unwrap(),
        CommitResult::Committed(_)
    ));
    let after = stats(&db);
    assert_eq!(after.commits_total, 1);
    assert_eq!(after.writes_committed_total, 1);
    assert_eq!(after.batch_size.count, 1);
    assert_eq!(after.batch_size.sum, 1.0);
    assert_eq!(after.commit_seconds.count, 1);
    // A failed check commits nothing but is counted.
    let failing = AtomicWrite {
        checks: vec![Check {
            key: key("a"),
            versionstamp: Some(Versionstamp::from_version(999)),
        }],
        mutations: vec![Mutation::set(key("a"), KvValue::U64(2))],
        ..Default::default()
    };
    assert!(matches!(
        db.atomic_write(failing).await.unwrap(),
        CommitResult::CheckFailed(_)
    ));
    let s = stats(&db);
    assert_eq!(s.commits_total, 1);
    assert_eq!(s.writes_check_failed_total, 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_writes_share_batches() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&clock).await;
    let writes = (0..64).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            let w = AtomicWrite {
                mutations: vec![Mutation::set(key(&format!("k{i}")), KvValue::U64(i))],
                ..Default::default()
            };
            db.atomic_write(w).await.unwrap()
        })
    });
    for w in futures::future::join_all(writes).await {
        assert!(matches!(w.unwrap(), CommitResult::Committed(_)));
    }
    let s = stats(&db);
    assert_eq!(s.writes_committed_total, 64);
    // Every write is in exactly one committed batch.
    assert_eq!(s.batch_size.sum, 64.0);
    assert_eq!(s.batch_size.count, s.commits_total);
    assert!(s.commits_total <= 64);
    db.close().await.unwrap();
}

#[tokio::test]
async fn queue_gauges_follow_messages_through_their_states() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&clock).await;
    db.atomic_write(enqueue(vec![], Some(key("dead"))))
        .await
        .unwrap();
    db.atomic_write(enqueue(vec![], None)).await.unwrap();
    let s = stats(&db).queue;
    assert_eq!((s.ready, s.leased), (2, 0));

    let m1 = db.dequeue(Duration::ZERO).await.unwrap().unwrap();
    let s = stats(&db).queue;
    assert_eq!((s.ready, s.leased), (1, 1));
    let m2 = db.dequeue(Duration::ZERO).await.unwrap().unwrap();
    let s = stats(&db).queue;
    assert_eq!((s.ready, s.leased), (0, 2));

    // No retries left: one goes to its dead-letter key, the other is dropped.
    db.finish(m1.lease, false).await.unwrap();
    db.finish(m2.lease, false).await.unwrap();
    let s = stats(&db).queue;
    assert_eq!((s.ready, s.leased), (0, 0));
    assert_eq!((s.dead_lettered_total, s.dropped_total), (1, 1));

    // A failure with a retry left goes back to ready; a success leaves the queue.
    db.atomic_write(enqueue(vec![0], None)).await.unwrap();
    let m = db.dequeue(Duration::ZERO).await.unwrap().unwrap();
    db.finish(m.lease, false).await.unwrap();
    assert_eq!(stats(&db).queue.ready, 1);
    let m = db.dequeue(Duration::ZERO).await.unwrap().unwrap();
    db.finish(m.lease, true).await.unwrap();
    let s = stats(&db).queue;
    assert_eq!((s.ready, s.leased), (0, 0));
    db.close().await.unwrap();
}

#[tokio::test]
async fn queue_gauges_start_from_the_stored_messages() {
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let config = || DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        ..Default::default()
    };
    let db = Db::open(backend.clone(), config()).await.unwrap();
    for _ in 0..3 {
        db.atomic_write(enqueue(vec![], None)).await.unwrap();
    }
    let _leased = db.dequeue(Duration::ZERO).await.unwrap().unwrap();
    drop(db);
    let reopened = Db::open(backend, config()).await.unwrap();
    let s = stats(&reopened).queue;
    assert_eq!((s.ready, s.leased), (2, 1));
}

#[tokio::test]
async fn the_expiry_sweep_counts_passes_and_deleted_keys() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&clock).await;
    let mut m = Mutation::set(key("short"), KvValue::U64(1));
    m.expire_at_ms = Some(2_000);
    db.atomic_write(AtomicWrite {
        mutations: vec![m, Mutation::set(key("kept"), KvValue::U64(1))],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(db.run_maintenance().await.unwrap(), 0);
    let s = stats(&db);
    assert_eq!(s.expiry_sweeps_total, 1);
    assert_eq!(s.expired_keys_deleted_total, 0);
    clock.advance(5_000);
    assert_eq!(db.run_maintenance().await.unwrap(), 1);
    let s = stats(&db);
    assert_eq!(s.expiry_sweeps_total, 2);
    assert_eq!(s.expired_keys_deleted_total, 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn open_watch_streams_are_counted_until_dropped() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&clock).await;
    let mut a = db.watch(vec![key("a")]).await.unwrap();
    let b = db.watch(vec![key("b")]).await.unwrap();
    assert!(a.next().await.is_some());
    assert_eq!(stats(&db).watches_open, 2);
    drop(b);
    assert_eq!(stats(&db).watches_open, 1);
    drop(a);
    assert_eq!(stats(&db).watches_open, 0);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_queue_is_counted_after_open_and_changes_made_meanwhile_add_up() {
    // More than the pages counted before `open` returns (16 × 1000 keys): the rest is counted
    // in the background, on a snapshot taken before the writer started.
    const N: u64 = 20_500;
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let config = || DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        ..Default::default()
    };
    let db = Db::open(backend.clone(), config()).await.unwrap();
    let mut left = N;
    while left > 0 {
        let n = left.min(1000);
        let one = enqueue(vec![], None).enqueues.remove(0);
        let write = AtomicWrite {
            enqueues: vec![one; n as usize],
            ..Default::default()
        };
        db.atomic_write(write).await.unwrap();
        left -= n;
    }
    drop(db);

    let reopened = Db::open(backend, config()).await.unwrap();
    // Lease one while the count may still be running: a delta on top of the snapshot.
    let _leased = reopened.dequeue(Duration::ZERO).await.unwrap().unwrap();
    let mut s = stats(&reopened).queue;
    for _ in 0..1000 {
        if s.ready + s.leased >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = stats(&reopened).queue;
    }
    assert_eq!((s.ready, s.leased), (N - 1, 1));
    let counts = reopened.queue_counts().await.unwrap();
    assert_eq!((counts.ready, counts.leased), (N - 1, 1));
    reopened.close().await.unwrap();
}
