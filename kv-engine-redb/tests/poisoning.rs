//! Poisoning: a commit that fails on an injected I/O error poisons the engine.

mod common;

use common::{open, put_all};
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_test_support::storage::{DiskFaults, FaultyStorage};
use kv_traits::{Backend, BackendError};

fn faulty(path: &std::path::Path) -> (DiskFaults, RedbBackend) {
    let faults = DiskFaults::new();
    let storage = FaultyStorage::open_file(path, faults.clone()).unwrap();
    let db = RedbBackend::open_with_storage(storage, RedbOptions::default()).unwrap();
    (faults, db)
}

#[tokio::test]
async fn commits_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, db) = faulty(&dir.path().join("kv.redb"));
    let before = faults.syncs();
    put_all(&db, &[(b"a", b"1")]).await;
    assert!(faults.syncs() > before, "a durable commit must sync");
}

async fn check_poisoned_by(fault: fn(&DiskFaults), what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let (faults, db) = faulty(&path);
    put_all(&db, &[(b"committed", b"1")]).await;

    let mut w = db.begin_write().await.unwrap();
    w.put(b"doomed", b"2").await.unwrap();
    fault(&faults);
    let err = w.commit().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Io(m) if m.message().contains(what)),
        "commit error: {err:?}"
    );
    assert!(db.poisoned().unwrap().contains(what));

    // Every later write is refused with the original error, even once the fault is gone.
    faults.heal();
    for _ in 0..3 {
        match db.begin_write().await {
            Err(err @ BackendError::Poisoned(_)) => {
                assert!(
                    matches!(&err, BackendError::Poisoned(m) if m.message().contains(what)),
                    "{err}"
                );
                // The poison keeps redb's error of the failed commit as the source.
                let source = std::error::Error::source(&err).expect("a source");
                assert!(
                    source.downcast_ref::<redb::StorageError>().is_some(),
                    "{source:?}"
                );
            }
            other => panic!("expected Poisoned, got {:?}", other.err()),
        }
    }
    // Reads report the poisoning (redb's "previous I/O error" latch) or still work; they never
    // return wrong data.
    match db.begin_read().await {
        Ok(mut r) => match r.get(b"committed").await {
            Ok(v) => assert_eq!(v, Some(b"1".to_vec())),
            Err(e) => assert!(matches!(e, BackendError::Poisoned(_)), "{e:?}"),
        },
        Err(e) => assert!(
            matches!(e, BackendError::Poisoned(ref m) if m.message().contains(what)),
            "{e:?}"
        ),
    }
    let _ = db.close().await;
    drop(db);

    // Reopening recovers: earlier commits are there and writes work again.
    let db = open(&path);
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"committed").await.unwrap(), Some(b"1".to_vec()));
    put_all(&db, &[(b"after", b"3")]).await;
    assert_eq!(
        db.begin_read().await.unwrap().get(b"after").await.unwrap(),
        Some(b"3".to_vec())
    );
}

#[tokio::test]
async fn a_failed_fsync_poisons() {
    check_poisoned_by(|f| f.fail_syncs(true), "injected fsync failure").await;
}

#[tokio::test]
async fn a_failed_write_poisons() {
    check_poisoned_by(|f| f.fail_writes(true), "injected").await;
}

#[tokio::test]
async fn a_healthy_engine_is_not_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let (_faults, db) = faulty(&dir.path().join("kv.redb"));
    for i in 0..5u8 {
        put_all(&db, &[(&[i], b"v")]).await;
    }
    assert_eq!(db.poisoned(), None);
    assert!(db.begin_write().await.is_ok());
}
