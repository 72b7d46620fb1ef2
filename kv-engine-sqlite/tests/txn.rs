//! Transaction semantics: read-your-writes, snapshot isolation, rollback, writer exclusion,
//! readers not blocked by writers, close.

use std::time::Duration;

use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::{Backend, BackendError};

fn open(dir: &tempfile::TempDir) -> SqliteBackend {
    SqliteBackend::open(dir.path().join("db.sqlite3"), SqliteOptions::default()).unwrap()
}

async fn put_commit(b: &SqliteBackend, k: &[u8], v: &[u8]) {
    let mut w = b.begin_write().await.unwrap();
    w.put(k, v).await.unwrap();
    w.commit().await.unwrap();
}

async fn read(b: &SqliteBackend, k: &[u8]) -> Option<Vec<u8>> {
    b.begin_read().await.unwrap().get(k).await.unwrap()
}

#[tokio::test]
async fn read_your_writes_inside_a_write_txn() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    put_commit(&b, b"a", b"old").await;

    let mut w = b.begin_write().await.unwrap();
    assert_eq!(w.get(b"a").await.unwrap(), Some(b"old".to_vec()));
    w.put(b"a", b"new").await.unwrap();
    w.put(b"b", b"2").await.unwrap();
    assert_eq!(w.get(b"a").await.unwrap(), Some(b"new".to_vec()));
    assert_eq!(
        w.scan(b"", b"\xff", 10, false).await.unwrap(),
        vec![
            (b"a".to_vec(), b"new".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
    w.delete(b"a").await.unwrap();
    assert_eq!(w.get(b"a").await.unwrap(), None);
    // Deleting a missing key is fine.
    w.delete(b"zzz").await.unwrap();
    // Not visible to readers before commit.
    assert_eq!(read(&b, b"a").await, Some(b"old".to_vec()));
    assert_eq!(read(&b, b"b").await, None);
    w.commit().await.unwrap();

    assert_eq!(read(&b, b"a").await, None);
    assert_eq!(read(&b, b"b").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn read_txn_is_a_snapshot_taken_at_begin() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    put_commit(&b, b"k", b"1").await;
    put_commit(&b, b"other", b"x").await;

    // Begun but not yet used when the next write commits: must still see the old state.
    let mut fresh = b.begin_read().await.unwrap();
    // Used once before the write commits.
    let mut used = b.begin_read().await.unwrap();
    assert_eq!(used.get(b"k").await.unwrap(), Some(b"1".to_vec()));

    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"2").await.unwrap();
    w.put(b"new", b"n").await.unwrap();
    w.delete(b"other").await.unwrap();
    w.commit().await.unwrap();

    for r in [&mut fresh, &mut used] {
        assert_eq!(r.get(b"k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.get(b"new").await.unwrap(), None);
        assert_eq!(r.get(b"other").await.unwrap(), Some(b"x".to_vec()));
        assert_eq!(
            r.scan(b"", b"\xff", 100, false).await.unwrap(),
            vec![
                (b"k".to_vec(), b"1".to_vec()),
                (b"other".to_vec(), b"x".to_vec())
            ]
        );
    }
    drop(fresh);
    drop(used);

    let mut after = b.begin_read().await.unwrap();
    assert_eq!(after.get(b"k").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(after.get(b"new").await.unwrap(), Some(b"n".to_vec()));
    assert_eq!(after.get(b"other").await.unwrap(), None);
}

#[tokio::test]
async fn dropping_a_write_txn_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    put_commit(&b, b"keep", b"1").await;

    let mut w = b.begin_write().await.unwrap();
    w.put(b"keep", b"changed").await.unwrap();
    w.put(b"gone", b"x").await.unwrap();
    drop(w);

    assert_eq!(read(&b, b"keep").await, Some(b"1".to_vec()));
    assert_eq!(read(&b, b"gone").await, None);

    // The writer is free again and a new transaction does not see the rolled-back writes.
    let mut w = tokio::time::timeout(Duration::from_secs(5), b.begin_write())
        .await
        .expect("begin_write after a rollback must not hang")
        .unwrap();
    assert_eq!(w.get(b"gone").await.unwrap(), None);
    w.put(b"later", b"y").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&b, b"later").await, Some(b"y".to_vec()));
    assert_eq!(read(&b, b"gone").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_write_waits_for_the_previous_write_txn() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let mut w1 = b.begin_write().await.unwrap();
    w1.put(b"k", b"first").await.unwrap();

    let b2 = b.clone();
    let second = tokio::spawn(async move {
        let mut w2 = b2.begin_write().await.unwrap();
        // Must see the first transaction's committed write.
        let seen = w2.get(b"k").await.unwrap();
        w2.put(b"k", b"second").await.unwrap();
        w2.commit().await.unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "second writer must wait for the first"
    );
    w1.commit().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, Some(b"first".to_vec()));
    assert_eq!(read(&b, b"k").await, Some(b"second".to_vec()));
}

#[tokio::test]
async fn reads_do_not_wait_for_an_open_write_txn() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    put_commit(&b, b"k", b"v").await;
    let mut w = b.begin_write().await.unwrap();
    for i in 0..1000u32 {
        w.put(&i.to_be_bytes(), b"pending").await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(2), read(&b, b"k"))
        .await
        .expect("a read must not wait for the writer");
    assert_eq!(got, Some(b"v".to_vec()));
    assert_eq!(read(&b, &7u32.to_be_bytes()).await, None);
    w.commit().await.unwrap();
    assert_eq!(
        read(&b, &7u32.to_be_bytes()).await,
        Some(b"pending".to_vec())
    );
}

#[tokio::test]
async fn more_concurrent_reads_than_pooled_connections() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(
        dir.path().join("db.sqlite3"),
        SqliteOptions::default().with_readers(2),
    )
    .unwrap();
    put_commit(&b, b"k", b"0").await;
    let mut txns = Vec::new();
    for i in 0..10u8 {
        let r = b.begin_read().await.unwrap();
        txns.push(r);
        put_commit(&b, b"k", &[b'0' + i + 1]).await;
    }
    // Each snapshot sees the value committed just before it began.
    for (i, r) in txns.iter_mut().enumerate() {
        assert_eq!(r.get(b"k").await.unwrap(), Some(vec![b'0' + i as u8]));
    }
    drop(txns);
    // Pool still works after returning more connections than it keeps.
    for _ in 0..5 {
        assert_eq!(read(&b, b"k").await, Some(b":".to_vec()));
    }

    // With no pooled readers at all.
    let b0 = SqliteBackend::open(
        dir.path().join("db0.sqlite3"),
        SqliteOptions::default().with_readers(0),
    )
    .unwrap();
    put_commit(&b0, b"z", b"1").await;
    assert_eq!(read(&b0, b"z").await, Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_serialize_without_lost_updates() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    put_commit(&b, b"counter", &0u64.to_be_bytes()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let mut w = b.begin_write().await.unwrap();
                let cur = w.get(b"counter").await.unwrap().unwrap();
                let n = u64::from_be_bytes(cur.try_into().unwrap()) + 1;
                w.put(b"counter", &n.to_be_bytes()).await.unwrap();
                w.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        read(&b, b"counter").await,
        Some(80u64.to_be_bytes().to_vec())
    );
}

#[tokio::test]
async fn close_refuses_later_transactions_and_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    put_commit(&b, b"k", b"v").await;
    let wal = dir.path().join("db.sqlite3-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "commits go to the WAL"
    );

    // A read transaction still open during close keeps working and is released afterwards.
    let mut open_read = b.begin_read().await.unwrap();
    b.close().await.unwrap();
    assert!(b.is_closed());
    assert_eq!(open_read.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    drop(open_read);

    assert_eq!(b.begin_read().await.err(), Some(BackendError::Closed));
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
    // Closing twice is harmless.
    b.close().await.unwrap();
    drop(b);
    // Checkpointed: the WAL is gone or empty, and all data is in the main file.
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);

    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(read(&b, b"k").await, Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_the_write_txn_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"v").await.unwrap();
    let b2 = b.clone();
    let closing = tokio::spawn(async move { b2.close().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!closing.is_finished());
    w.commit().await.unwrap();
    closing.await.unwrap().unwrap();
    drop(b);
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(read(&b, b"k").await, Some(b"v".to_vec()));
}

#[tokio::test]
async fn cancelled_commit_still_completes_and_releases_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"v").await.unwrap();
    // Poll the commit once (it is handed to the blocking pool), then drop the future.
    let commit = w.commit();
    let _ = tokio::time::timeout(Duration::from_nanos(1), commit).await;
    let mut w = tokio::time::timeout(Duration::from_secs(5), b.begin_write())
        .await
        .unwrap()
        .unwrap();
    // The commit either completed or never started; in both cases the writer is usable.
    let v = w.get(b"k").await.unwrap();
    assert!(v.is_none() || v == Some(b"v".to_vec()));
    w.put(b"k2", b"v2").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&b, b"k2").await, Some(b"v2".to_vec()));
    assert_eq!(b.poisoned(), None);
}
