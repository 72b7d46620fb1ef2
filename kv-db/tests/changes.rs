//! The change log, raw export and import: what continuous backup and restore build on.

use std::sync::Arc;
use std::time::Duration;

use kv_db::{ChangeBatch, Db, DbConfig, ExportEntry, ImportOp, KeyChange};
use kv_engine_memory::MemoryBackend;
use kv_traits::{
    AtomicWrite, Check, Clock, CommitResult, Consistency, Database, Enqueue, KvError, KvValue,
    ManualClock, Mutation, MutationKind, ReadRange, Versionstamp,
};
use proptest::prelude::*;

fn key(s: &str) -> Vec<u8> {
    let mut k = vec![2];
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    k
}

fn manual(clock: &Arc<ManualClock>, change_log: bool) -> DbConfig {
    DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        change_log,
        ..Default::default()
    }
}

async fn commit(db: &Db, w: AtomicWrite) -> Versionstamp {
    match db.atomic_write(w).await.unwrap() {
        CommitResult::Committed(vs) => vs,
        other => panic!("not committed: {other:?}"),
    }
}

fn write(mutations: Vec<Mutation>) -> AtomicWrite {
    AtomicWrite {
        mutations,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_kind_of_commit_is_logged_with_post_images() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = Db::open(MemoryBackend::new(), manual(&clock, true))
        .await
        .unwrap();
    assert_eq!(
        db.change_log_since().await.unwrap(),
        Some(Versionstamp::from_version(0))
    );

    let v1 = commit(
        &db,
        write(vec![
            Mutation::set(key("a"), KvValue::U64(1)),
            Mutation {
                key: key("t"),
                kind: MutationKind::Set(KvValue::Bytes(b"x".to_vec())),
                expire_at_ms: Some(5_000),
            },
        ]),
    )
    .await;
    // Set then sum on the same key: one post-image, the final one.
    let v2 = commit(
        &db,
        write(vec![
            Mutation::set(key("a"), KvValue::U64(10)),
            Mutation {
                key: key("a"),
                kind: MutationKind::Sum {
                    value: KvValue::U64(5),
                    min: None,
                    max: None,
                    clamp: false,
                },
                expire_at_ms: None,
            },
            Mutation::delete(key("missing")),
        ]),
    )
    .await;
    // A failed check commits nothing and logs nothing.
    let failed = db
        .atomic_write(AtomicWrite {
            checks: vec![Check {
                key: key("a"),
                versionstamp: None,
            }],
            mutations: vec![Mutation::set(key("z"), KvValue::U64(9))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(failed, CommitResult::CheckFailed(_)));
    // An enqueue alone changes no user key: no batch.
    commit(
        &db,
        AtomicWrite {
            enqueues: vec![Enqueue {
                payload: vec![0xff, 0x0f, 0x5f],
                deadline_ms: 0,
                keys_if_undelivered: vec![key("dead")],
                backoff_schedule: Some(vec![]),
            }],
            ..Default::default()
        },
    )
    .await;
    let v4 = commit(&db, write(vec![Mutation::delete(key("a"))])).await;
    clock.set(6_000);
    assert_eq!(db.run_maintenance().await.unwrap(), 1);

    let log = db.read_changes(None, 100).await.unwrap();
    let summary: Vec<(Versionstamp, Vec<KeyChange>)> = log
        .iter()
        .map(|b| (b.versionstamp, b.changes.clone()))
        .collect();
    let put = |k: &str, v: KvValue, e: Option<u64>| KeyChange {
        key: key(k),
        value: Some(v),
        expire_at_ms: e,
    };
    let del = |k: &str| KeyChange {
        key: key(k),
        value: None,
        expire_at_ms: None,
    };
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert_eq!(
        summary[0],
        (
            v1,
            vec![
                put("a", KvValue::U64(1), None),
                put("t", KvValue::Bytes(b"x".to_vec()), Some(5_000))
            ]
        )
    );
    assert_eq!(summary[1], (v2, vec![put("a", KvValue::U64(15), None)]));
    assert_eq!(summary[2], (v4, vec![del("a")]));
    assert_eq!(summary[3].1, vec![del("t")]);
    assert!(summary[3].0 > v4);
    assert_eq!(log[0].timestamp_ms, 1_000);
    assert_eq!(log[3].timestamp_ms, 6_000);

    // The dead letter of the failed queue message is a logged commit too.
    let msg = db.dequeue(Duration::from_secs(30)).await.unwrap().unwrap();
    db.finish(msg.lease, false).await.unwrap();
    let log = db.read_changes(Some(summary[3].0), 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].changes,
        vec![put("dead", KvValue::V8(vec![0xff, 0x0f, 0x5f]), None)]
    );
    assert_eq!(
        db.current_versionstamp().await.unwrap(),
        log[0].versionstamp
    );

    // Paging and trimming.
    let all = db.read_changes(None, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(db.read_changes(None, 2).await.unwrap(), all[..2].to_vec());
    assert_eq!(
        db.read_changes(Some(all[1].versionstamp), 2).await.unwrap(),
        all[2..4].to_vec()
    );
    db.trim_changes(all[2].versionstamp).await.unwrap();
    assert_eq!(db.read_changes(None, 100).await.unwrap(), all[3..].to_vec());
    db.close().await.unwrap();
}

#[tokio::test]
async fn without_the_option_nothing_is_logged() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = Db::open(MemoryBackend::new(), manual(&clock, false))
        .await
        .unwrap();
    commit(&db, write(vec![Mutation::set(key("a"), KvValue::U64(1))])).await;
    assert_eq!(db.change_log_since().await.unwrap(), None);
    assert!(db.read_changes(None, 10).await.unwrap().is_empty());
    db.close().await.unwrap();
}

#[tokio::test]
async fn change_log_start_is_persisted_and_restarts_after_a_gap() {
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let db = Db::open(backend.clone(), manual(&clock, false))
        .await
        .unwrap();
    commit(&db, write(vec![Mutation::set(key("a"), KvValue::U64(1))])).await;
    drop(db); // the memory engine's close() can't be undone; dropping keeps the data

    // Turned on after a commit: complete from that commit on.
    let db = Db::open(backend.clone(), manual(&clock, true))
        .await
        .unwrap();
    let since = db.change_log_since().await.unwrap().unwrap();
    assert_eq!(since, db.current_versionstamp().await.unwrap());
    let v = commit(&db, write(vec![Mutation::set(key("b"), KvValue::U64(2))])).await;
    drop(db); // the memory engine's close() can't be undone; dropping keeps the data

    // Reopened with logging on: the start stays, the batch stays.
    let db = Db::open(backend.clone(), manual(&clock, true))
        .await
        .unwrap();
    assert_eq!(db.change_log_since().await.unwrap(), Some(since));
    assert_eq!(db.read_changes(None, 10).await.unwrap()[0].versionstamp, v);
    drop(db); // the memory engine's close() can't be undone; dropping keeps the data

    // A run without logging forgets the start and the log; turning it on again starts later.
    let db = Db::open(backend.clone(), manual(&clock, false))
        .await
        .unwrap();
    let v3 = commit(&db, write(vec![Mutation::set(key("c"), KvValue::U64(3))])).await;
    drop(db); // the memory engine's close() can't be undone; dropping keeps the data
    let db = Db::open(backend.clone(), manual(&clock, true))
        .await
        .unwrap();
    assert_eq!(db.change_log_since().await.unwrap(), Some(v3));
    assert!(db.read_changes(None, 10).await.unwrap().is_empty());
    drop(db); // the memory engine's close() can't be undone; dropping keeps the data
}

#[tokio::test]
async fn subscribe_commits_follows_the_latest_versionstamp() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = Db::open(MemoryBackend::new(), manual(&clock, true))
        .await
        .unwrap();
    let mut rx = db.subscribe_commits();
    assert_eq!(*rx.borrow_and_update(), Versionstamp::from_version(0));
    let v = commit(&db, write(vec![Mutation::set(key("a"), KvValue::U64(1))])).await;
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*rx.borrow_and_update(), v);
    db.close().await.unwrap();
}

#[tokio::test]
async fn export_and_import_copy_a_database_exactly() {
    let clock = Arc::new(ManualClock::new(1_000));
    let src = Db::open(MemoryBackend::new(), manual(&clock, false))
        .await
        .unwrap();
    for i in 0..50u64 {
        commit(
            &src,
            write(vec![Mutation {
                key: key(&format!("k{i:03}")),
                kind: MutationKind::Set(KvValue::U64(i)),
                expire_at_ms: (i % 7 == 0).then_some(1_000_000 + i),
            }]),
        )
        .await;
    }
    let (page1, at) = src.export_range(&[], &[0xff], 20).await.unwrap();
    assert_eq!(page1.len(), 20);
    assert_eq!(at, src.current_versionstamp().await.unwrap());
    let mut next = page1.last().unwrap().key.clone();
    next.push(0);
    let (rest, _) = src.export_range(&next, &[0xff], 1000).await.unwrap();
    assert_eq!(rest.len(), 30);
    assert_eq!(page1[0].expire_at_ms, Some(1_000_000));

    // Into a read-only database (a replica): imports still work, writes don't.
    let dst = Db::open(
        MemoryBackend::new(),
        DbConfig {
            read_only: true,
            ..manual(&clock, false)
        },
    )
    .await
    .unwrap();
    let ops: Vec<ImportOp> = page1
        .iter()
        .chain(&rest)
        .cloned()
        .map(ImportOp::Put)
        .collect();
    dst.import(ops, Some(at)).await.unwrap();
    let (copy, copy_at) = dst.export_range(&[], &[0xff], 1000).await.unwrap();
    assert_eq!(copy, [page1, rest].concat());
    assert_eq!(copy_at, at);
    let err = dst
        .atomic_write(write(vec![Mutation::set(key("x"), KvValue::U64(1))]))
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::WriteDisabled));
    src.close().await.unwrap();
    dst.close().await.unwrap();
}

#[tokio::test]
async fn import_advances_the_version_and_wakes_watchers() {
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let db = Db::open(backend.clone(), manual(&clock, true))
        .await
        .unwrap();
    let mut watch = db.watch(vec![key("w")]).await.unwrap();
    use futures::StreamExt;
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.len(), 1);

    let vs = Versionstamp::from_version(1_000);
    db.import(
        vec![ImportOp::Put(ExportEntry {
            key: key("w"),
            value: KvValue::Bytes(b"hi".to_vec()),
            versionstamp: vs,
            expire_at_ms: None,
        })],
        Some(vs),
    )
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&frame[0], kv_traits::WatchKeyOutput::Changed(Some(e)) if e.versionstamp == vs)
    );
    // Imports are not logged; the next real write gets a larger versionstamp and is logged.
    assert!(db.read_changes(None, 10).await.unwrap().is_empty());
    let next = commit(&db, write(vec![Mutation::set(key("n"), KvValue::U64(1))])).await;
    assert!(next > vs);
    assert_eq!(db.read_changes(None, 10).await.unwrap().len(), 1);
    // A delete through import.
    db.import(vec![ImportOp::Delete(key("w"))], None)
        .await
        .unwrap();
    let got = db
        .snapshot_read(vec![ReadRange::single(&key("w"))], Consistency::Strong)
        .await
        .unwrap();
    assert!(got[0].is_empty());
    db.close().await.unwrap();

    // An import into a brand-new read-only store leaves a valid database behind.
    let fresh = MemoryBackend::new();
    let ro = Db::open(
        fresh.clone(),
        DbConfig {
            read_only: true,
            ..manual(&clock, false)
        },
    )
    .await
    .unwrap();
    ro.import(vec![ImportOp::Delete(key("x"))], Some(vs))
        .await
        .unwrap();
    drop(ro);
    let rw = Db::open(fresh, manual(&clock, false)).await.unwrap();
    assert_eq!(rw.current_versionstamp().await.unwrap(), vs);
    rw.close().await.unwrap();
}

/// Replaying the change log (as imports) onto an empty database reproduces the source
/// exactly, after any sequence of writes, deletes, sums, expiries and sweeps.
#[derive(Clone, Debug)]
enum Step {
    Set(u8, u64, bool),
    Delete(u8),
    Sum(u8, u64),
    Multi(u8, u8),
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..8, any::<u64>(), any::<bool>()).prop_map(|(k, v, e)| Step::Set(k, v, e)),
        (0u8..8).prop_map(Step::Delete),
        (0u8..8, 0u64..100).prop_map(|(k, v)| Step::Sum(k, v)),
        (0u8..8, 0u8..8).prop_map(|(a, b)| Step::Multi(a, b)),
        Just(Step::Tick),
    ]
}

fn replay(batches: &[ChangeBatch]) -> Vec<ImportOp> {
    let mut ops = Vec::new();
    for b in batches {
        for c in &b.changes {
            ops.push(match &c.value {
                Some(v) => ImportOp::Put(ExportEntry {
                    key: c.key.clone(),
                    value: v.clone(),
                    versionstamp: b.versionstamp,
                    expire_at_ms: c.expire_at_ms,
                }),
                None => ImportOp::Delete(c.key.clone()),
            });
        }
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn replaying_the_log_reproduces_the_database(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let clock = Arc::new(ManualClock::new(1_000));
            let src = Db::open(MemoryBackend::new(), manual(&clock, true)).await.unwrap();
            for s in steps {
                let k = |i: u8| key(&format!("k{i}"));
                let w = match s {
                    Step::Set(i, v, e) => write(vec![Mutation {
                        key: k(i),
                        kind: MutationKind::Set(KvValue::U64(v)),
                        expire_at_ms: e.then(|| clock.now_ms() + 10),
                    }]),
                    Step::Delete(i) => write(vec![Mutation::delete(k(i))]),
                    Step::Sum(i, v) => write(vec![Mutation {
                        key: k(i),
                        kind: MutationKind::Sum { value: KvValue::U64(v), min: None, max: None, clamp: false },
                        expire_at_ms: None,
                    }]),
                    Step::Multi(a, b) => write(vec![
                        Mutation::set(k(a), KvValue::Bytes(vec![a])),
                        Mutation::delete(k(b)),
                        Mutation::set(k(b.wrapping_add(1) % 8), KvValue::V8(vec![0xff, 0x0f, 0x5f])),
                    ]),
                    Step::Tick => {
                        clock.advance(7);
                        src.run_maintenance().await.unwrap();
                        continue;
                    }
                };
                // Sums over a non-U64 value fail as a whole; that is fine and logs nothing.
                let _ = src.atomic_write(w).await;
            }
            let log = src.read_changes(None, 10_000).await.unwrap();
            let dst = Db::open(MemoryBackend::new(), manual(&clock, false)).await.unwrap();
            let at = log.last().map(|b| b.versionstamp);
            dst.import(replay(&log), at).await.unwrap();
            let a = src.export_range(&[], &[0xff], 10_000).await.unwrap();
            let b = dst.export_range(&[], &[0xff], 10_000).await.unwrap();
            assert_eq!(a.0, b.0);
            // Commits that changed no user key (a delete of a missing key) take a version
            // but log nothing, so the copy may stand at an earlier version.
            assert!(a.1 >= b.1);
            src.close().await.unwrap();
            dst.close().await.unwrap();
        });
    }
}

#[tokio::test]
async fn imported_through_tracks_an_unmodified_copy() {
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let db = Db::open(backend.clone(), manual(&clock, false))
        .await
        .unwrap();
    assert_eq!(db.imported_through().await.unwrap(), None);
    let vs = Versionstamp::from_version(7);
    let put = |k: &str| {
        ImportOp::Put(ExportEntry {
            key: key(k),
            value: KvValue::U64(1),
            versionstamp: vs,
            expire_at_ms: None,
        })
    };
    db.import(vec![put("a")], Some(vs)).await.unwrap();
    assert_eq!(db.imported_through().await.unwrap(), Some(vs));
    let later = Versionstamp::from_version(9);
    db.import(vec![put("b")], Some(later)).await.unwrap();
    assert_eq!(db.imported_through().await.unwrap(), Some(later));
    // A failed check commits nothing: still a copy.
    let failed = db
        .atomic_write(AtomicWrite {
            checks: vec![Check {
                key: key("a"),
                versionstamp: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(failed, CommitResult::CheckFailed(_)));
    assert_eq!(db.imported_through().await.unwrap(), Some(later));
    // A write makes it diverge, also after a reopen.
    commit(&db, write(vec![Mutation::set(key("c"), KvValue::U64(1))])).await;
    assert_eq!(db.imported_through().await.unwrap(), None);
    drop(db);
    let db = Db::open(backend, manual(&clock, false)).await.unwrap();
    assert_eq!(db.imported_through().await.unwrap(), None);
    // Importing into a diverged database doesn't make it a copy again.
    db.import(vec![put("d")], None).await.unwrap();
    assert_eq!(db.imported_through().await.unwrap(), None);
    drop(db);

    // A Deno Deploy point keeps its batch index; the next write still sorts after it.
    let db = Db::open(MemoryBackend::new(), manual(&clock, false))
        .await
        .unwrap();
    let deploy: Versionstamp = "000000000000000c0003".parse().unwrap();
    db.import(vec![put("a")], Some(deploy)).await.unwrap();
    assert_eq!(db.imported_through().await.unwrap(), Some(deploy));
    // A write and an import in one batch: the write wins, the copy has diverged.
    let (w, i) = tokio::join!(
        db.atomic_write(write(vec![Mutation::set(key("w"), KvValue::U64(1))])),
        db.import(vec![put("b")], Some(Versionstamp::from_version(100)))
    );
    i.unwrap();
    let CommitResult::Committed(vs) = w.unwrap() else {
        panic!()
    };
    assert!(vs > deploy);
    assert_eq!(db.imported_through().await.unwrap(), None);
}

#[tokio::test]
async fn trims_and_imports_move_the_change_log_start() {
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = MemoryBackend::new();
    let db = Db::open(backend.clone(), manual(&clock, true))
        .await
        .unwrap();
    let v1 = commit(&db, write(vec![Mutation::set(key("a"), KvValue::U64(1))])).await;
    let v2 = commit(&db, write(vec![Mutation::set(key("b"), KvValue::U64(1))])).await;
    assert_eq!(
        db.change_log_since().await.unwrap(),
        Some(Versionstamp::from_version(0))
    );
    db.trim_changes(v1).await.unwrap();
    assert_eq!(db.change_log_since().await.unwrap(), Some(v1));
    // Trimming past the log (commits that logged nothing) moves it only as far as it deleted.
    db.trim_changes(Versionstamp::from_version(50))
        .await
        .unwrap();
    assert_eq!(db.change_log_since().await.unwrap(), Some(v2));
    let vi = Versionstamp::from_version(70);
    db.import(
        vec![ImportOp::Put(ExportEntry {
            key: key("i"),
            value: KvValue::U64(1),
            versionstamp: vi,
            expire_at_ms: None,
        })],
        Some(vi),
    )
    .await
    .unwrap();
    assert_eq!(db.change_log_since().await.unwrap(), Some(vi));
    drop(db);
    // Opened read-only, the database logs nothing, whatever the store remembers.
    let ro = Db::open(
        backend,
        DbConfig {
            read_only: true,
            ..manual(&clock, true)
        },
    )
    .await
    .unwrap();
    assert_eq!(ro.change_log_since().await.unwrap(), None);
}

#[tokio::test]
async fn an_exhausted_version_space_is_an_error_not_a_crash() {
    let clock = Arc::new(ManualClock::new(1_000));
    let db = Db::open(MemoryBackend::new(), manual(&clock, false))
        .await
        .unwrap();
    let max = Versionstamp::from_version(u64::MAX);
    db.import(vec![], Some(max)).await.unwrap();
    let err = db
        .atomic_write(write(vec![Mutation::set(key("a"), KvValue::U64(1))]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maximum"), "{err}");
    // The writer is still alive: reads and imports work.
    assert_eq!(db.current_versionstamp().await.unwrap(), max);
    db.import(vec![], None).await.unwrap();
}
