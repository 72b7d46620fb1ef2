//! Point-in-time restore round trips: a source database is backed up continuously by the
//! producer into a local-filesystem or in-memory store, its exact raw state is recorded after
//! every commit, and restores (into memory, SQLite and redb databases) must reproduce those
//! states exactly: same keys, values of all three encodings, versionstamps and expiry times.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kv_db::{Db, DbConfig, ExportEntry};
use kv_pitr::consumer::{BackupReader, ConsumerError, RecoveryPoint};
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{catch_up, restore, RestoreError, RestoreProgress, RestoreTarget};
use kv_traits::{
    AtomicWrite, Consistency, Database, KvValue, Mutation, MutationKind, ReadRange, Versionstamp,
};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

use common::{dump, key, local_store, memory_db, restore_err, restore_to, Source};

impl Source {
    /// A varied workload: all three encodings, deletes, sums, expiry, multi-key commits.
    async fn workload(&mut self, round: u32) {
        let n = |i: u32| format!("r{round}k{i}");
        self.commit(vec![
            Mutation::set(
                key(&n(0)),
                KvValue::V8(vec![0xff, 0x0f, 0x22, 0x01, b'a' + (round % 26) as u8]),
            ),
            Mutation::set(key(&n(1)), KvValue::Bytes(vec![round as u8, 1, 2, 3])),
            Mutation::set(key(&n(2)), KvValue::U64(u64::from(round) * 1000)),
        ])
        .await;
        self.commit(vec![common::sum(key(&n(2)), 7)]).await;
        let soon = self.now() + 25;
        let later = self.now() + 86_400_000;
        self.commit(vec![
            Mutation {
                key: key(&n(3)),
                kind: MutationKind::Set(KvValue::Bytes(b"short-lived".to_vec())),
                expire_at_ms: Some(soon),
            },
            Mutation {
                key: key(&n(4)),
                kind: MutationKind::Set(KvValue::U64(4)),
                expire_at_ms: Some(later),
            },
        ])
        .await;
        self.commit(vec![Mutation::delete(key(&n(1)))]).await;
        // Overwrite a key of the previous round, delete another one.
        if round > 0 {
            let p = |i: u32| format!("r{}k{i}", round - 1);
            self.commit(vec![
                Mutation::set(key(&p(0)), KvValue::Bytes(b"overwritten".to_vec())),
                Mutation::delete(key(&p(4))),
            ])
            .await;
        }
        // The short-lived key expires; every other round the sweep deletes it (a logged commit).
        self.clock.advance(50);
        if round.is_multiple_of(2) {
            let swept = self.db.run_maintenance().await.unwrap();
            assert!(swept >= 1);
            self.record().await;
        }
    }
}

fn small_config(store: Arc<dyn ObjectStore>, prefix: &str) -> BackupConfig {
    let mut c = BackupConfig::new(store, Path::from(prefix));
    c.flush_interval = Duration::from_millis(20);
    c.max_segment_batches = 3;
    c.snapshot_range_entries = 4;
    c
}

/// Writes some data, starts the backup, writes more, flushes. Returns the source.
async fn backed_up_source(store: Arc<dyn ObjectStore>, prefix: &str, rounds: u32) -> Source {
    let mut src = Source::new().await;
    src.workload(0).await;
    src.workload(1).await;
    let backup = Backup::start(src.db.clone(), small_config(store, prefix))
        .await
        .unwrap();
    // Later commits go to the logs, not into the initial snapshot.
    common::initial_snapshot_done(&backup).await;
    for r in 2..rounds {
        src.workload(r).await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    src
}

/// An empty database of the given engine (files in `dir`).
async fn engine_db(engine: &str, dir: &std::path::Path) -> Db {
    match engine {
        "memory" => memory_db().await,
        "sqlite" => Db::open(
            kv_engine_sqlite::SqliteBackend::open(dir.join("restored.db"), Default::default())
                .unwrap(),
            DbConfig::default(),
        )
        .await
        .unwrap(),
        "redb" => Db::open(
            kv_engine_redb::RedbBackend::open(dir.join("restored.redb"), Default::default())
                .unwrap(),
            DbConfig::default(),
        )
        .await
        .unwrap(),
        other => panic!("unknown engine {other}"),
    }
}

async fn assert_round_trip(store: Arc<dyn ObjectStore>, engine: &str) {
    let src = backed_up_source(store.clone(), "backups/db1", 6).await;
    let reader = BackupReader::new(store, Path::from("backups/db1"));
    let dir = tempfile::tempdir().unwrap();
    let target = engine_db(engine, dir.path()).await;
    let mut events = Vec::new();
    let out = restore(&reader, &target, RestoreTarget::Latest, |p| events.push(p))
        .await
        .unwrap();
    let source_vs = src.db.current_versionstamp().await.unwrap();
    assert_eq!(
        out.versionstamp, source_vs,
        "{engine}: restored to the latest commit"
    );
    assert_eq!(target.current_versionstamp().await.unwrap(), source_vs);
    let expected = dump(&src.db).await;
    assert_eq!(dump(&target).await, expected, "{engine}: raw state differs");
    assert_eq!(out.keys, expected.len());
    assert!(out.transactions > 0);
    assert!(
        matches!(events.first(), Some(RestoreProgress::Listed { snapshot_ranges, log_segments }) if *snapshot_ranges > 1 && *log_segments > 1),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RestoreProgress::Writing { .. })));

    // All three encodings, expiry and versionstamps survived; reads behave the same.
    let encodings: std::collections::HashSet<_> =
        expected.iter().map(|e| e.value.encoding()).collect();
    assert_eq!(encodings.len(), 3);
    assert!(expected.iter().any(|e| e.expire_at_ms.is_some()));
    let read = |db: Db| async move {
        db.snapshot_read(vec![ReadRange::prefix(&[2], 1000)], Consistency::Strong)
            .await
            .unwrap()
    };
    assert_eq!(read(target.clone()).await, read(src.db.clone()).await);

    // Promotion: new writes get larger versionstamps.
    let res = target
        .atomic_write(AtomicWrite {
            mutations: vec![Mutation::set(key("after-promotion"), KvValue::U64(1))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(res.versionstamp().unwrap() > source_vs);
    target.close().await.unwrap();
}

#[tokio::test]
async fn round_trip_local_fs_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    assert_round_trip(local_store(dir.path()), "memory").await;
}

#[tokio::test]
async fn round_trip_local_fs_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    assert_round_trip(local_store(dir.path()), "sqlite").await;
}

#[tokio::test]
async fn round_trip_local_fs_into_redb() {
    let dir = tempfile::tempdir().unwrap();
    assert_round_trip(local_store(dir.path()), "redb").await;
}

#[tokio::test]
async fn round_trip_in_memory_store_into_all_engines() {
    for engine in ["memory", "sqlite", "redb"] {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        assert_round_trip(store, engine).await;
    }
}

#[tokio::test]
async fn every_recovery_point_restores_the_exact_source_state() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let src = backed_up_source(store.clone(), "p", 5).await;
    let reader = BackupReader::new(store, Path::from("p"));
    let info = reader.info().await.unwrap();
    let points = reader.recovery_points(None, None).await.unwrap();
    assert_eq!(points.len(), info.recovery_points);
    assert_eq!(points.first().copied(), Some(info.latest_point));
    assert_eq!(points.last().copied(), Some(info.first_point));
    assert_eq!(info.first_point.versionstamp, info.differential);
    // Newest first, strictly.
    assert!(points
        .windows(2)
        .all(|w| w[0].versionstamp > w[1].versionstamp));
    assert!(points
        .windows(2)
        .all(|w| w[0].timestamp_ms >= w[1].timestamp_ms));
    // Every source commit after the differential point is a recovery point.
    let after_dv: Vec<Versionstamp> = src
        .states
        .keys()
        .copied()
        .filter(|v| *v > info.differential)
        .collect();
    assert!(
        after_dv.len() > 10,
        "workload too small: {}",
        after_dv.len()
    );
    let listed: Vec<Versionstamp> = points.iter().map(|p| p.versionstamp).collect();
    for v in &after_dv {
        assert!(listed.contains(v), "commit {v} is not a recovery point");
    }
    for p in &points {
        let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
        assert_eq!(out.versionstamp, p.versionstamp);
        assert_eq!(out.timestamp_ms, p.timestamp_ms);
        assert_eq!(db.current_versionstamp().await.unwrap(), p.versionstamp);
        assert_eq!(
            &dump(&db).await,
            src.states.get(&p.versionstamp).unwrap(),
            "state at {p} differs"
        );
    }
}

#[tokio::test]
async fn versionstamp_targets_between_points_and_out_of_range() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let src = backed_up_source(store.clone(), "p", 4).await;
    let reader = BackupReader::new(store, Path::from("p"));
    let points = reader.recovery_points(None, None).await.unwrap();
    let latest = points[0];
    let first = *points.last().unwrap();

    // A versionstamp between two commits restores the earlier one.
    let p = points[3];
    let mut between = p.versionstamp;
    between.0[9] = 5;
    let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(between)).await;
    assert_eq!(out.versionstamp, p.versionstamp);
    assert_eq!(&dump(&db).await, src.states.get(&p.versionstamp).unwrap());

    // Before the first consistent point, after the latest: errors, database untouched.
    let (db, err) = restore_err(
        &reader,
        RestoreTarget::Versionstamp(Versionstamp::from_version(first.versionstamp.version() - 1)),
    )
    .await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("before the first consistent point"),
        "{err}"
    );
    let err = restore(
        &reader,
        &db,
        RestoreTarget::Versionstamp(Versionstamp::from_version(
            latest.versionstamp.version() + 1,
        )),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RestoreError::Backup(ConsumerError::BeyondLatest { latest: l, .. }) if l == latest),
        "{err}"
    );
    assert_eq!(db.current_versionstamp().await.unwrap(), Versionstamp::ZERO);
    assert!(dump(&db).await.is_empty());
}

#[tokio::test]
async fn time_targets_pick_the_newest_point_not_after_the_time() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let src = backed_up_source(store.clone(), "p", 5).await;
    let reader = BackupReader::new(store, Path::from("p"));
    let points = reader.recovery_points(None, None).await.unwrap();
    let first = *points.last().unwrap();
    let mut checked = 0;
    for p in &points {
        for t in [p.timestamp_ms, p.timestamp_ms + 3] {
            let expected: RecoveryPoint = *points.iter().find(|q| q.timestamp_ms <= t).unwrap();
            let (db, out) = restore_to(&reader, RestoreTarget::Time(t)).await;
            assert_eq!(out.versionstamp, expected.versionstamp, "time {t}");
            assert_eq!(
                &dump(&db).await,
                src.states.get(&expected.versionstamp).unwrap()
            );
            checked += 1;
        }
    }
    assert!(checked > 10);
    // Far in the future: the latest point.
    let (_, out) = restore_to(&reader, RestoreTarget::Time(u64::MAX / 2)).await;
    assert_eq!(out.versionstamp, points[0].versionstamp);
    // Before the first point: an error.
    let (db, err) = restore_err(&reader, RestoreTarget::Time(first.timestamp_ms - 1)).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );
    assert!(dump(&db).await.is_empty());

    // The listing filters by time window [start, end), newest first.
    let mid = points[points.len() / 2].timestamp_ms;
    let window = reader
        .recovery_points(Some(mid), Some(points[0].timestamp_ms))
        .await
        .unwrap();
    assert!(!window.is_empty());
    assert!(window
        .iter()
        .all(|p| p.timestamp_ms >= mid && p.timestamp_ms < points[0].timestamp_ms));
    let expected: Vec<_> = points
        .iter()
        .filter(|p| p.timestamp_ms >= mid && p.timestamp_ms < points[0].timestamp_ms)
        .copied()
        .collect();
    assert_eq!(window, expected);
}

#[tokio::test]
async fn refuses_a_non_empty_database() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    backed_up_source(store.clone(), "p", 3).await;
    let reader = BackupReader::new(store, Path::from("p"));
    let db = memory_db().await;
    db.atomic_write(AtomicWrite {
        mutations: vec![Mutation::set(key("mine"), KvValue::U64(1))],
        ..Default::default()
    })
    .await
    .unwrap();
    let before = dump(&db).await;
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("not empty"));
    assert_eq!(dump(&db).await, before);
}

#[tokio::test]
async fn catch_up_moves_a_restored_copy_forward_only() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let src = backed_up_source(store.clone(), "p", 5).await;
    let reader = BackupReader::new(store, Path::from("p"));
    let points = reader.recovery_points(None, None).await.unwrap();
    let early = points[points.len() - 2];
    let mid = points[points.len() / 2];
    let (db, _) = restore_to(&reader, RestoreTarget::Versionstamp(early.versionstamp)).await;
    let out = catch_up(&reader, &db, RestoreTarget::Versionstamp(mid.versionstamp))
        .await
        .unwrap();
    assert_eq!(out.versionstamp, mid.versionstamp);
    assert_eq!(&dump(&db).await, src.states.get(&mid.versionstamp).unwrap());
    let err = catch_up(
        &reader,
        &db,
        RestoreTarget::Versionstamp(early.versionstamp),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RestoreError::Backwards { .. }), "{err}");
    let out = catch_up(&reader, &db, RestoreTarget::Latest).await.unwrap();
    assert_eq!(out.versionstamp, points[0].versionstamp);
    assert_eq!(dump(&db).await, dump(&src.db).await);
    // Already at the latest point: nothing to do.
    let again = catch_up(&reader, &db, RestoreTarget::Latest).await.unwrap();
    assert_eq!(again.versionstamp, points[0].versionstamp);
    assert_eq!(again.transactions, 0);

    // A database that was written to is not a copy of the backup.
    db.atomic_write(AtomicWrite {
        mutations: vec![Mutation::set(key("local"), KvValue::U64(1))],
        ..Default::default()
    })
    .await
    .unwrap();
    let err = catch_up(&reader, &db, RestoreTarget::Latest)
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotACopy { .. }), "{err}");
}

#[tokio::test]
async fn backup_of_an_empty_database_restores_to_an_empty_database() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let src = Source::new().await;
    let backup = Backup::start(src.db.clone(), small_config(store.clone(), "empty"))
        .await
        .unwrap();
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    let reader = BackupReader::new(store, Path::from("empty"));
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, Versionstamp::ZERO);
    assert_eq!(out.keys, 0);
    assert!(dump(&db).await.is_empty());
}

#[tokio::test]
async fn a_prefix_without_backup_is_reported_clearly() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let reader = BackupReader::new(store, Path::from("nothing/here"));
    let (_, err) = restore_err(&reader, RestoreTarget::Latest).await;
    assert!(
        matches!(err, RestoreError::Backup(ConsumerError::NotABackup { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("no backup found"), "{err}");
}

/// A hand-built backup of ours whose snapshot ranges were read at different versions while
/// commits happened (a fuzzy snapshot): replaying the logs up to the differential versionstamp
/// makes it consistent.
#[tokio::test]
async fn fuzzy_snapshot_becomes_consistent_at_the_differential_point() {
    use kv_db::{ChangeBatch, KeyChange};
    use kv_pitr::format::{self, BackupManifest, LogSegmentKey, SnapshotRangeKey};
    use object_store::{ObjectStoreExt, PutPayload};

    let v = Versionstamp::from_version;
    let e = |k: &str, n: u64, at: u64| ExportEntry {
        key: key(k),
        value: KvValue::U64(n),
        versionstamp: v(at),
        expire_at_ms: None,
    };
    let ch = |k: &str, n: Option<u64>| KeyChange {
        key: key(k),
        value: n.map(KvValue::U64),
        expire_at_ms: None,
    };
    let batch = |at: u64, changes: Vec<KeyChange>| ChangeBatch {
        versionstamp: v(at),
        timestamp_ms: at * 10,
        changes,
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("fuzzy");
    let put = |p: Path, body: bytes::Bytes| {
        let store = store.clone();
        async move { store.put(&p, PutPayload::from(body)).await.unwrap() }
    };
    // Range 0 read at v5, range 1 read at v8.
    let r = |seq| SnapshotRangeKey {
        format_version: 1,
        monoseq: 1,
        seq,
    };
    put(
        format::snapshot_path(&prefix, &r(0)),
        format::encode_snapshot_range(&[e("a", 1, 3), e("b", 2, 5), e("e", 5, 4), e("z", 1, 4)]),
    )
    .await;
    put(
        format::snapshot_path(&prefix, &r(1)),
        format::encode_snapshot_range(&[e("c", 3, 7), e("d", 4, 8)]),
    )
    .await;
    // A segment wholly before the snapshot started is not needed (and not replayed).
    let segments = [
        (vec![batch(4, vec![ch("z", Some(1))])], 40),
        (
            vec![
                batch(6, vec![ch("a", Some(10)), ch("e", None)]),
                batch(7, vec![ch("c", Some(3))]),
            ],
            100,
        ),
        (
            vec![
                batch(8, vec![ch("d", Some(4)), ch("b", Some(20))]),
                batch(9, vec![ch("a", None)]),
            ],
            200,
        ),
    ];
    for (i, (batches, ts)) in segments.into_iter().enumerate() {
        let (first_vs12, last_vs12, body) = format::encode_log_segment(&batches, ts);
        let k = LogSegmentKey {
            format_version: 1,
            monoseq: i as u64 + 1,
            first_vs12,
            last_vs12,
        };
        put(format::log_path(&prefix, &k), body).await;
    }
    put(
        format::differential_path(&prefix),
        format::encode_differential(&v(8)),
    )
    .await;
    let manifest = BackupManifest {
        format: BackupManifest::FORMAT,
        producer: "hand-made".into(),
        created_at_ms: 50,
        initial_snapshot_monoseq: 1,
        snapshot_start: v(5).to_string(),
        snapshot_end: v(8).to_string(),
    };
    put(format::manifest_path(&prefix), manifest.to_bytes().unwrap()).await;

    let reader = BackupReader::new(store, prefix);
    let points = reader.recovery_points(None, None).await.unwrap();
    assert_eq!(
        points,
        vec![
            RecoveryPoint {
                versionstamp: v(9),
                timestamp_ms: 200
            },
            RecoveryPoint {
                versionstamp: v(8),
                timestamp_ms: 200
            },
        ]
    );
    let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(v(8))).await;
    assert_eq!(out.versionstamp, v(8));
    assert_eq!(
        out.transactions, 3,
        "the commit before the snapshot is not replayed"
    );
    let want = |a: bool| {
        let mut s = vec![];
        if a {
            s.push(e("a", 10, 6));
        }
        s.extend([e("b", 20, 8), e("c", 3, 7), e("d", 4, 8), e("z", 1, 4)]);
        s
    };
    assert_eq!(dump(&db).await, want(true));
    let (db, _) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(dump(&db).await, want(false));
    // v7 is inside the fuzzy window: not a consistent point.
    let (_, err) = restore_err(&reader, RestoreTarget::Versionstamp(v(7))).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );
}
