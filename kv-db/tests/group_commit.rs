//! Group commit: concurrent writes share transactions yet stay individually atomic, and a commit
//! failure poisons the database.

mod common;

use common::faulty;
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_test_support::Fault;
use kv_traits::{
    AtomicWrite, Backend, BackendError, CommitResult, Consistency, Database, KvError, KvValue,
    Mutation, MutationKind, ReadRange,
};

fn k(s: &str) -> Vec<u8> {
    let mut v = vec![2];
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_keep_distinct_versionstamps() {
    let backend = faulty();
    let db = Db::open(
        backend.clone(),
        DbConfig {
            background_tasks: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = backend.faults().calls().committed;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut write = AtomicWrite {
                mutations: vec![Mutation::set(k(&format!("k{i}")), KvValue::U64(i))],
                ..Default::default()
            };
            if i % 8 == 3 {
                // A type error in every eighth write: it must apply nothing and not disturb others.
                write.mutations.push(Mutation {
                    key: k(&format!("k{i}")),
                    kind: MutationKind::Min(KvValue::Bytes(vec![1])),
                    expire_at_ms: None,
                });
            }
            (i, db.atomic_write(write).await)
        }));
    }
    let mut stamps = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i % 8 == 3 {
            assert!(matches!(r, Err(KvError::Mutation(_))), "{r:?}");
        } else {
            stamps.push(r.unwrap().versionstamp().unwrap());
        }
    }
    let n = stamps.len();
    stamps.sort();
    stamps.dedup();
    assert_eq!(stamps.len(), n, "versionstamps are unique");
    let commits = backend.faults().calls().committed - before;
    assert!(
        commits < 64,
        "expected batching, got {commits} commits for 64 writes"
    );
    let all = ReadRange {
        start: vec![0],
        end: vec![0xff],
        limit: 1000,
        reverse: false,
    };
    let out = db
        .snapshot_read(vec![all], Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(out[0].len(), 56);
    for i in (3..64).step_by(8) {
        assert!(
            out[0].iter().all(|e| e.key != k(&format!("k{i}"))),
            "failed write k{i} left data behind"
        );
    }
}

#[tokio::test]
async fn failed_commit_poisons_the_database() {
    let backend = faulty();
    let db = Db::open(
        backend.clone(),
        DbConfig {
            background_tasks: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let w = || AtomicWrite {
        mutations: vec![Mutation::set(k("a"), KvValue::U64(1))],
        ..Default::default()
    };
    assert!(matches!(
        db.atomic_write(w()).await,
        Ok(CommitResult::Committed(_))
    ));
    backend.faults().fail_always(Fault::CommitBefore);
    let err = db.atomic_write(w()).await.unwrap_err();
    assert!(!err.is_client_error());
    backend.faults().disarm(Fault::CommitBefore);
    let err = db.atomic_write(w()).await.unwrap_err();
    assert!(
        matches!(err, KvError::Backend(BackendError::Poisoned(ref m)) if m.message().contains("injected")),
        "{err}"
    );
    // Reads still work.
    let out = db
        .snapshot_read(vec![ReadRange::single(&k("a"))], Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(out[0][0].value, KvValue::U64(1));
}

#[tokio::test]
async fn format_marker_is_checked_on_open() {
    let backend = MemoryBackend::new();
    let db = Db::open(
        backend.clone(),
        DbConfig {
            background_tasks: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    drop(db);
    let mut w = backend.begin_write().await.unwrap();
    w.put(kv_db::layout::META_FORMAT, &99u64.to_be_bytes())
        .await
        .unwrap();
    w.commit().await.unwrap();
    let err = Db::open(backend, DbConfig::default()).await.err().unwrap();
    assert!(
        matches!(
            err,
            KvError::Backend(BackendError::UnsupportedFormat { found: 99, .. })
        ),
        "{err}"
    );
}
