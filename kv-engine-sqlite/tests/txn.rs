//! SQLite-specific transaction behaviour: the reader connection pool (more open snapshots than
//! pooled connections, no pool at all), the WAL checkpoint on close, and a cancelled commit. The
//! `Backend` contract itself (snapshots, read-your-writes, rollback, one writer, close) is the
//! shared suite's, run in `contract.rs`.

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

#[tokio::test]
async fn cancelled_commit_still_completes_and_releases_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"v").await.unwrap();
    // Poll the commit once (it is handed to the blocking pool), then drop the future.
    let commit = w.commit();
    let _ = tokio::time::timeout(Duration::from_nanos(1), commit).await;
    let mut w = tokio::time::timeout(Duration::from_secs(30), b.begin_write())
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
