//! Slow fsyncs and a busy writer slot do not stall the async runtime: these tests run on a
//! single-threaded runtime, where any blocking call would stop every other task.

mod common;

use std::time::{Duration, Instant};

use common::put_all;
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_test_support::storage::{DiskFaults, FaultyStorage};
use kv_traits::Backend;

/// The bound on every wait here: it only catches a hang.
const HANG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "current_thread")]
async fn a_slow_commit_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let faults = DiskFaults::new();
    let storage = FaultyStorage::open_file(&dir.path().join("kv.redb"), faults.clone()).unwrap();
    let db = RedbBackend::open_with_storage(storage, RedbOptions::default()).unwrap();
    put_all(&db, &[(b"a", b"1")]).await;
    // A few more commits first, so that the file has grown to hold the allocator state that
    // each commit records (quick repair): growing the file syncs it while redb holds the lock
    // that `begin_read` takes, and the sync held below must be the commit's own.
    for _ in 0..4 {
        put_all(&db, &[(b"b", b"1")]).await;
    }

    // The commit's fsync blocks until this task has run 10 ticks while it is held.
    faults.hold_syncs(HANG);
    let started = Instant::now();
    let committer = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut w = db.begin_write().await.unwrap();
            w.put(b"a", b"2").await.unwrap();
            w.commit().await.unwrap();
        })
    };
    // Meanwhile this task keeps reading on the same (only) runtime thread.
    let mut reads = 0u32;
    let mut ticks = 0u32;
    while ticks < 10 {
        assert!(
            !committer.is_finished(),
            "the commit finished while its sync was held"
        );
        assert!(
            started.elapsed() < HANG,
            "the commit never reached its sync, or the runtime stalled: {ticks} ticks"
        );
        let mut r = db.begin_read().await.unwrap();
        assert!(r.get(b"a").await.unwrap().is_some());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if faults.held_syncs() > 0 {
            ticks += 1;
        }
    }
    assert!(
        faults.release_syncs(),
        "the held sync was let go by its cap, not by this task: the runtime stalled"
    );
    tokio::time::timeout(HANG, committer)
        .await
        .expect("the commit did not finish after its sync was released")
        .unwrap();
    assert!(reads >= 10);
    assert_eq!(
        db.begin_read().await.unwrap().get(b"a").await.unwrap(),
        Some(b"2".to_vec())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn many_waiting_writers_do_not_stall_the_runtime() {
    let (_dir, db) = common::temp();
    let holder = db.begin_write().await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..64u8 {
        let db = db.clone();
        waiters.push(tokio::spawn(async move {
            let mut w = db.begin_write().await.unwrap();
            w.put(&[i], b"").await.unwrap();
            w.commit().await.unwrap();
        }));
    }
    // All 64 are waiting; this task still runs.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(waiters.iter().all(|w| !w.is_finished()));
    drop(holder);
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
    }
    let all = db
        .begin_read()
        .await
        .unwrap()
        .scan(b"", b"\xff", 100, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 64);
}
