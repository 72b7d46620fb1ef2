//! The `Backend` contract: snapshots, read-your-writes, rollback, scans, key order, big values,
//! single-writer serialisation and close.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{put_all, temp};
use kv_traits::{Backend, BackendError};

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

#[tokio::test]
async fn read_your_writes_overwrite_and_delete() {
    let (_dir, db) = temp();
    put_all(&db, &[(b"a", b"1"), (b"b", b"2")]).await;

    let mut w = db.begin_write().await.unwrap();
    w.put(b"a", b"10").await.unwrap();
    w.delete(b"b").await.unwrap();
    w.put(b"c", b"3").await.unwrap();
    w.delete(b"missing").await.unwrap();
    assert_eq!(w.get(b"a").await.unwrap(), Some(b"10".to_vec()));
    assert_eq!(w.get(b"b").await.unwrap(), None);
    assert_eq!(
        w.scan(b"", b"\xff", 10, false).await.unwrap(),
        vec![kv(b"a", b"10"), kv(b"c", b"3")]
    );
    // A snapshot taken while the write is open does not see it.
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"a").await.unwrap(), Some(b"1".to_vec()));
    w.commit().await.unwrap();

    let mut r2 = db.begin_read().await.unwrap();
    assert_eq!(
        r2.scan(b"", b"\xff", 10, false).await.unwrap(),
        vec![kv(b"a", b"10"), kv(b"c", b"3")]
    );
    assert_eq!(r.get(b"b").await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test]
async fn snapshot_isolation_while_a_write_commits() {
    let (_dir, db) = temp();
    let keys: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    {
        let mut w = db.begin_write().await.unwrap();
        for k in &keys {
            w.put(k, b"old").await.unwrap();
        }
        w.commit().await.unwrap();
    }
    let mut before = db.begin_read().await.unwrap();

    let writer = {
        let db = db.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut w = db.begin_write().await.unwrap();
            for k in &keys {
                w.put(k, b"new").await.unwrap();
            }
            w.put(b"\xffextra", b"x").await.unwrap();
            w.commit().await.unwrap();
        })
    };
    // Read repeatedly while the writer runs and after it committed.
    for _ in 0..20 {
        let all = before.scan(b"", b"\xff\xff", 1000, false).await.unwrap();
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|(_, v)| v == b"old"));
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let all = before.scan(b"", b"\xff\xff", 1000, false).await.unwrap();
    assert!(all.iter().all(|(_, v)| v == b"old"));
    assert_eq!(before.get(b"\xffextra").await.unwrap(), None);

    let mut after = db.begin_read().await.unwrap();
    let all = after.scan(b"", b"\xff\xff", 1000, false).await.unwrap();
    assert_eq!(all.len(), 101);
    assert!(all[..100].iter().all(|(_, v)| v == b"new"));
}

#[tokio::test]
async fn drop_without_commit_rolls_back() {
    let (_dir, db) = temp();
    put_all(&db, &[(b"keep", b"1")]).await;
    {
        let mut w = db.begin_write().await.unwrap();
        w.put(b"lost", b"x").await.unwrap();
        w.delete(b"keep").await.unwrap();
    }
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"lost").await.unwrap(), None);
    assert_eq!(r.get(b"keep").await.unwrap(), Some(b"1".to_vec()));
    // The writer slot was released.
    let mut w = tokio::time::timeout(Duration::from_secs(5), db.begin_write())
        .await
        .expect("begin_write after a dropped transaction must not hang")
        .unwrap();
    assert_eq!(w.get(b"lost").await.unwrap(), None);
    w.put(b"next", b"2").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        db.begin_read().await.unwrap().get(b"next").await.unwrap(),
        Some(b"2".to_vec())
    );
}

#[tokio::test]
async fn scan_order_limits_reverse_and_empty_ranges() {
    let (_dir, db) = temp();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0u8..10).map(|i| (vec![b'k', i], vec![i])).collect();
    {
        let mut w = db.begin_write().await.unwrap();
        // Insert out of order.
        for (k, v) in pairs.iter().rev() {
            w.put(k, v).await.unwrap();
        }
        w.commit().await.unwrap();
    }
    for mut txn in [
        db.begin_read().await.unwrap(),
        db.begin_write().await.unwrap() as Box<dyn kv_traits::ReadTxn>,
    ] {
        let all = txn.scan(b"k", b"l", 100, false).await.unwrap();
        assert_eq!(all, pairs);
        let rev = txn.scan(b"k", b"l", 100, true).await.unwrap();
        assert_eq!(rev, pairs.iter().rev().cloned().collect::<Vec<_>>());
        // Limits.
        assert_eq!(
            txn.scan(b"k", b"l", 3, false).await.unwrap(),
            pairs[..3].to_vec()
        );
        assert_eq!(
            txn.scan(b"k", b"l", 3, true).await.unwrap(),
            vec![pairs[9].clone(), pairs[8].clone(), pairs[7].clone()]
        );
        assert!(txn.scan(b"k", b"l", 0, false).await.unwrap().is_empty());
        // Bounds: start inclusive, end exclusive.
        assert_eq!(
            txn.scan(&[b'k', 2], &[b'k', 5], 100, false).await.unwrap(),
            pairs[2..5].to_vec()
        );
        assert_eq!(
            txn.scan(&[b'k', 2], &[b'k', 5], 100, true).await.unwrap(),
            pairs[2..5].iter().rev().cloned().collect::<Vec<_>>()
        );
        // Empty and inverted ranges.
        assert!(txn
            .scan(&[b'k', 5], &[b'k', 5], 100, false)
            .await
            .unwrap()
            .is_empty());
        assert!(txn
            .scan(&[b'k', 5], &[b'k', 2], 100, false)
            .await
            .unwrap()
            .is_empty());
        assert!(txn
            .scan(&[b'k', 5], &[b'k', 2], 100, true)
            .await
            .unwrap()
            .is_empty());
        assert!(txn.scan(b"z", b"a", 100, true).await.unwrap().is_empty());
        assert!(txn.scan(b"a", b"b", 100, false).await.unwrap().is_empty());
        // The empty key is the smallest start.
        assert_eq!(
            txn.scan(b"", b"l", 1, false).await.unwrap(),
            pairs[..1].to_vec()
        );
    }
}

#[tokio::test]
async fn keys_are_ordered_bytewise_unsigned() {
    let (_dir, db) = temp();
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x01],
        vec![0x7f],
        vec![0x7f, 0xff],
        vec![0x80],
        vec![0xfe, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff],
    ];
    {
        let mut w = db.begin_write().await.unwrap();
        for (i, k) in keys.iter().enumerate().rev() {
            w.put(k, &[i as u8]).await.unwrap();
        }
        w.commit().await.unwrap();
    }
    let mut r = db.begin_read().await.unwrap();
    let end = vec![0xff; 8];
    let got: Vec<Vec<u8>> = r
        .scan(b"", &end, 100, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, keys);
    let got_rev: Vec<Vec<u8>> = r
        .scan(b"", &end, 100, true)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got_rev, keys.iter().rev().cloned().collect::<Vec<_>>());
    // A range that starts inside the 0xff prefix.
    let tail = r.scan(&[0xff], &[0xff, 0xff], 100, false).await.unwrap();
    assert_eq!(
        tail.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![vec![0xff], vec![0xff, 0x00]]
    );
    assert_eq!(r.get(&[]).await.unwrap(), Some(vec![0]));
    assert_eq!(r.get(&[0xff, 0xff, 0xff]).await.unwrap(), Some(vec![11]));
}

#[tokio::test]
async fn large_values_and_keys() {
    let (_dir, db) = temp();
    let big: Vec<u8> = (0..(8 * 1024 * 1024u32)).map(|i| (i % 251) as u8).collect();
    let medium = vec![0xabu8; 65_536];
    let long_key = vec![0x5au8; 2048];
    {
        let mut w = db.begin_write().await.unwrap();
        w.put(b"big", &big).await.unwrap();
        w.put(b"medium", &medium).await.unwrap();
        w.put(&long_key, b"long").await.unwrap();
        assert_eq!(w.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
        w.commit().await.unwrap();
    }
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(
        r.get(b"medium").await.unwrap().as_deref(),
        Some(&medium[..])
    );
    assert_eq!(r.get(&long_key).await.unwrap(), Some(b"long".to_vec()));
    let scanned = r.scan(b"b", b"c", 10, false).await.unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].1.len(), big.len());
}

#[tokio::test]
async fn begin_write_waits_for_the_previous_transaction() {
    let (_dir, db) = temp();
    let mut first = db.begin_write().await.unwrap();
    first.put(b"n", b"1").await.unwrap();

    let second = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut w = db.begin_write().await.unwrap();
            let seen = w.get(b"n").await.unwrap();
            w.put(b"n", b"2").await.unwrap();
            w.commit().await.unwrap();
            seen
        })
    };
    // While the first transaction is open, the second cannot start; the runtime keeps running
    // other tasks (this test runs on a single-threaded runtime).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished());
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"n").await.unwrap(), None);

    first.commit().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, Some(b"1".to_vec()));
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"n").await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_serialised() {
    let (_dir, db) = temp();
    let db = Arc::new(db);
    let tasks = 16;
    let per_task = 10;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let mut w = db.begin_write().await.unwrap();
                let n = w
                    .get(b"counter")
                    .await
                    .unwrap()
                    .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
                    .unwrap_or(0);
                w.put(b"counter", &(n + 1).to_be_bytes()).await.unwrap();
                w.put(format!("t{t:02}-{i:02}").as_bytes(), b"")
                    .await
                    .unwrap();
                w.commit().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut r = db.begin_read().await.unwrap();
    let n = u64::from_be_bytes(
        r.get(b"counter")
            .await
            .unwrap()
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert_eq!(n, (tasks * per_task) as u64);
    assert_eq!(
        r.scan(b"t", b"u", 1000, false).await.unwrap().len(),
        tasks * per_task
    );
}

#[tokio::test]
async fn close_refuses_later_calls() {
    let (_dir, db) = temp();
    put_all(&db, &[(b"a", b"1")]).await;
    let mut early = db.begin_read().await.unwrap();
    db.close().await.unwrap();
    assert_eq!(db.begin_read().await.err(), Some(BackendError::Closed));
    assert_eq!(db.begin_write().await.err(), Some(BackendError::Closed));
    // Closing twice is harmless.
    db.close().await.unwrap();
    // A snapshot from before the close either still reads or reports Closed; it never returns
    // other data.
    match early.get(b"a").await {
        Ok(v) => assert_eq!(v, Some(b"1".to_vec())),
        Err(e) => assert_eq!(e, BackendError::Closed),
    }
}

#[tokio::test]
async fn close_waits_for_the_live_write_transaction() {
    let (_dir, db) = temp();
    let mut w = db.begin_write().await.unwrap();
    w.put(b"a", b"1").await.unwrap();
    let closer = {
        let db = db.clone();
        tokio::spawn(async move { db.close().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!closer.is_finished());
    w.commit().await.unwrap();
    closer.await.unwrap().unwrap();
    assert_eq!(db.begin_write().await.err(), Some(BackendError::Closed));
}
