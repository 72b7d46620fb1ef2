//! Restores that start from checkpoints (periodic full snapshots under `checkpoints/`): every
//! recovery point still restores the exact source state, a restore reads only the log after
//! the checkpoint it starts from (old segments can even be gone), damaged checkpoints are
//! clear errors, and replicas and catch-up work from a checkpoint.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_pitr::consumer::{BackupReader, Checkpoint, ConsumerError, RecoveryPoint};
use kv_pitr::format::{self, LogSegmentKey};
use kv_pitr::producer::Backup;
use kv_pitr::restore::{catch_up, restore, Replica, RestoreError, RestoreProgress, RestoreTarget};
use kv_traits::{KvValue, Mutation, Versionstamp};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};

use common::{
    backed_up_source, checkpoint_config as config, dump, key, memory_db, restore_err, restore_to,
    settle, settled_source, HookedStore, Source, StoreHooks,
};

/// Records the objects read from a store (`get`, not `head` or listings).
#[derive(Debug, Default)]
struct Recording {
    gets: Mutex<Vec<Path>>,
}

impl Recording {
    fn take_gets(&self) -> Vec<Path> {
        std::mem::take(&mut *self.gets.lock().unwrap())
    }
}

impl StoreHooks for Recording {
    const NAME: &'static str = "RecordingStore";

    fn before_get(&self, location: &Path, options: &GetOptions) {
        if !options.head {
            self.gets.lock().unwrap().push(location.clone());
        }
    }
}

fn recording_store() -> Arc<HookedStore<Recording>> {
    HookedStore::new(Arc::new(InMemory::new()), Recording::default())
}

/// Deletes the log segments that hold only commits before checkpoint `cp` started; returns
/// how many.
async fn delete_logs_before(
    store: &dyn ObjectStore,
    reader: &BackupReader,
    cp: &Checkpoint,
) -> usize {
    let start = format::vs12(&cp.snapshot_start, format::BOUNDARY_INDEX - 1);
    let layout = reader.layout().await.unwrap();
    let mut deleted = 0;
    for o in layout.logs.iter().filter(|o| o.key.last_vs12 <= start) {
        store
            .delete(&format::log_path(reader.prefix(), &o.key))
            .await
            .unwrap();
        deleted += 1;
    }
    deleted
}

async fn checkpoints_of(reader: &BackupReader) -> Vec<Checkpoint> {
    let layout = reader.layout().await.unwrap();
    reader.checkpoints(&layout).await.unwrap()
}

/// The checkpoint a restore of point `p` must start from: the newest whose consistent point
/// is at or before it (a checkpoint that ends exactly at the differential point holds no
/// commit of its own, so it only serves later points).
fn expected_checkpoint(cps: &[Checkpoint], dv: Versionstamp, p: Versionstamp) -> Option<u64> {
    cps.iter()
        .rev()
        .find(|c| c.snapshot_end < p || (c.snapshot_end == p && p != dv))
        .map(|c| c.manifest.monoseq)
}

fn log_key_of(prefix: &Path, path: &Path) -> Option<LogSegmentKey> {
    if !path.prefix_matches(&format::logs_dir(prefix)) {
        return None;
    }
    LogSegmentKey::parse(path.filename()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recovery_point_restores_exactly_from_the_newest_usable_checkpoint() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (src, reader) = settled_source(store.clone(), "p", 14, 4).await;
    let cps = checkpoints_of(&reader).await;
    assert!(cps.len() >= 4, "{} checkpoints", cps.len());
    let dv = reader.layout().await.unwrap().differential;
    let points = reader.recovery_points(None, None).await.unwrap();
    assert!(points.len() > 30, "{} points", points.len());
    let mut from_checkpoints = std::collections::BTreeSet::new();
    for p in &points {
        let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
        assert_eq!(out.versionstamp, p.versionstamp);
        assert_eq!(out.timestamp_ms, p.timestamp_ms, "time of {p}");
        assert_eq!(db.current_versionstamp().await.unwrap(), p.versionstamp);
        assert_eq!(
            &dump(&db).await,
            src.states.get(&p.versionstamp).unwrap(),
            "state at {p} (from checkpoint {:?})",
            out.checkpoint
        );
        assert_eq!(
            out.checkpoint,
            expected_checkpoint(&cps, dv, p.versionstamp),
            "base of {p}"
        );
        from_checkpoints.insert(out.checkpoint);
    }
    assert!(
        from_checkpoints.len() >= 4,
        "several bases used: {from_checkpoints:?}"
    );
    // The same restores without checkpoints replay from the initial snapshot.
    let plain = reader.clone().with_checkpoints(false);
    let latest = points[0];
    let (db, out) = restore_to(&plain, RestoreTarget::Latest).await;
    assert_eq!(out.checkpoint, None);
    assert_eq!(out.versionstamp, latest.versionstamp);
    assert_eq!(
        &dump(&db).await,
        src.states.get(&latest.versionstamp).unwrap()
    );
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.checkpoint, Some(cps.last().unwrap().manifest.monoseq));
    assert_eq!(out.versionstamp, latest.versionstamp);
    assert_eq!(
        &dump(&db).await,
        src.states.get(&latest.versionstamp).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_targets_pick_the_same_points_as_a_full_replay() {
    let recording = recording_store();
    let store: Arc<dyn ObjectStore> = recording.clone();
    let prefix = Path::from("t");
    let (src, reader) = settled_source(store.clone(), "t", 10, 3).await;
    let points = reader.recovery_points(None, None).await.unwrap();
    let oldest_first: Vec<RecoveryPoint> = points.iter().rev().copied().collect();
    let mut times: Vec<u64> = oldest_first.iter().map(|p| p.timestamp_ms).collect();
    times.dedup();
    let mut used_checkpoint = false;
    let mut passed_over = 0;
    for t in times.into_iter().flat_map(|t| [t, t + 5]) {
        // The newest point at or before t (commits are 10 ms apart on the source's clock).
        let expect = *oldest_first
            .iter()
            .rev()
            .find(|p| p.timestamp_ms <= t)
            .unwrap();
        recording.hooks.take_gets();
        let db = memory_db().await;
        let mut bases = Vec::new();
        let out = restore(&reader, &db, RestoreTarget::Time(t), |e| {
            if let RestoreProgress::Base { checkpoint, .. } = e {
                bases.push(checkpoint);
            }
        })
        .await
        .unwrap();
        assert_eq!(out.versionstamp, expect.versionstamp, "time {t}");
        assert_eq!(out.timestamp_ms, expect.timestamp_ms);
        assert_eq!(
            &dump(&db).await,
            src.states.get(&expect.versionstamp).unwrap()
        );
        used_checkpoint |= out.checkpoint.is_some();
        // Newer checkpoints whose first point is after the target are passed over without
        // downloading their ranges.
        assert_eq!(bases.last(), Some(&out.checkpoint));
        passed_over += bases.len() - 1;
        let used_dir = out
            .checkpoint
            .map(|m| format::checkpoint_dir(&prefix, m).join(format::SNAPSHOTS));
        for p in recording.hooks.take_gets() {
            if p.prefix_matches(&format::checkpoints_dir(&prefix)) && !p.as_ref().ends_with(".json")
            {
                assert!(
                    used_dir.as_ref().is_some_and(|d| p.prefix_matches(d)),
                    "time {t}: read {p} but restored from {:?}",
                    out.checkpoint
                );
            }
        }
    }
    assert!(used_checkpoint);
    assert!(passed_over > 0);
    // Before the first point: still an error.
    let first = *oldest_first.first().unwrap();
    let (_, err) = restore_err(&reader, RestoreTarget::Time(first.timestamp_ms - 1)).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_restore_reads_only_the_log_after_the_newest_checkpoint() {
    let recording = recording_store();
    let store: Arc<dyn ObjectStore> = recording.clone();
    let prefix = Path::from("b");
    let (mut src, backup) = backed_up_source(store.clone(), "b", 12, 3).await;
    // Commits after the newest checkpoint, so the restore has log to replay.
    settle(&src, backup).await;
    let backup = Backup::start(src.db.clone(), {
        let mut c = config(store.clone(), "b");
        c.checkpoint_interval = None;
        c
    })
    .await
    .unwrap();
    for r in 100..104 {
        src.round(r).await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    let latest_vs = src.db.current_versionstamp().await.unwrap();

    let reader = BackupReader::new(store.clone(), prefix.clone());
    let cps = checkpoints_of(&reader).await;
    let newest = cps.last().unwrap().clone();
    let older = cps[cps.len() - 2].clone();
    let start = format::vs12(&newest.snapshot_start, format::BOUNDARY_INDEX - 1);
    let layout = reader.layout().await.unwrap();
    let old_segments: Vec<LogSegmentKey> = layout
        .logs
        .iter()
        .map(|o| o.key)
        .filter(|k| k.last_vs12 <= start)
        .collect();
    assert!(
        old_segments.len() > 5,
        "{} old segments",
        old_segments.len()
    );

    recording.hooks.take_gets();
    let mut events = Vec::new();
    let db = memory_db().await;
    let out = restore(&reader, &db, RestoreTarget::Latest, |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(out.versionstamp, latest_vs);
    assert_eq!(out.checkpoint, Some(newest.manifest.monoseq));
    assert_eq!(&dump(&db).await, src.states.get(&latest_vs).unwrap());
    assert!(
        events.iter().any(|e| matches!(e, RestoreProgress::Base { checkpoint: Some(m), .. } if *m == newest.manifest.monoseq)),
        "{events:?}"
    );
    let gets = recording.hooks.take_gets();
    let segments_read: Vec<LogSegmentKey> =
        gets.iter().filter_map(|p| log_key_of(&prefix, p)).collect();
    assert!(!segments_read.is_empty());
    for k in &segments_read {
        assert!(
            k.last_vs12 > start,
            "segment {k} ends before the checkpoint's start {}",
            newest.snapshot_start
        );
    }
    let snapshots = format::snapshots_dir(&prefix);
    let newest_dir = format::checkpoint_dir(&prefix, newest.manifest.monoseq);
    for p in &gets {
        assert!(
            !p.prefix_matches(&snapshots),
            "read the initial snapshot: {p}"
        );
        // Manifests of all checkpoints are read to choose one; ranges only of the newest.
        if p.prefix_matches(&format::checkpoints_dir(&prefix)) && !p.as_ref().ends_with(".json") {
            assert!(
                p.prefix_matches(&newest_dir),
                "read an older checkpoint: {p}"
            );
        }
    }

    // The old segments (and the initial snapshot) can even be gone.
    for k in &old_segments {
        store.delete(&format::log_path(&prefix, k)).await.unwrap();
    }
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, latest_vs);
    assert_eq!(&dump(&db).await, src.states.get(&latest_vs).unwrap());
    // Every point from the newest checkpoint on is still restorable.
    let from_newest: Vec<Versionstamp> = src
        .states
        .keys()
        .copied()
        .filter(|v| *v >= newest.snapshot_end)
        .collect();
    assert!(from_newest.len() > 3);
    for v in from_newest {
        let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(v)).await;
        assert_eq!(out.versionstamp, v);
        assert_eq!(
            &dump(&db).await,
            src.states.get(&v).unwrap(),
            "state at {v}"
        );
    }
    // A point before it needs the deleted segments: a clear error, the database untouched.
    let db = memory_db().await;
    let before = Versionstamp::from_version(older.snapshot_end.version());
    let err = restore(&reader, &db, RestoreTarget::Versionstamp(before), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::MissingLogSegments { .. })
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("log segments are missing"), "{text}");
    assert!(dump(&db).await.is_empty());
    assert_eq!(db.current_versionstamp().await.unwrap(), Versionstamp::ZERO);
    // The first point needs the log from its first segment: the error names the last
    // missing one before the oldest left.
    let oldest_left = reader.list_logs(None).await.unwrap()[0].key;
    let err = restore(
        &reader,
        &db,
        RestoreTarget::Versionstamp(layout.differential),
        |_| {},
    )
    .await
    .unwrap_err();
    let RestoreError::Backup(ConsumerError::MissingLogSegments {
        expected_monoseq, ..
    }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*expected_monoseq, oldest_left.monoseq - 1, "{err}");
    assert!(err.to_string().contains(&oldest_left.to_string()), "{err}");
    // Listing every recovery point needs the whole log.
    assert!(matches!(
        reader.recovery_points(None, None).await,
        Err(ConsumerError::MissingLogSegments { .. })
    ));
}

/// Flips one byte in the middle of an object.
async fn damage(store: &dyn ObjectStore, path: &Path) {
    let mut body = common::get(store, path).await.to_vec();
    let i = body.len() / 2;
    body[i] ^= 0x40;
    store.put(path, body.into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_checkpoints_are_clear_errors() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("d");
    let (src, reader) = settled_source(store.clone(), "d", 8, 2).await;
    let latest_vs = src.db.current_versionstamp().await.unwrap();
    let cps = checkpoints_of(&reader).await;
    let newest = cps.last().unwrap().clone();
    let m = newest.manifest.monoseq;
    assert!(newest.ranges.len() > 1);

    let expect_checkpoint_error = |err: RestoreError, what: &str| -> String {
        let RestoreError::Backup(ConsumerError::Checkpoint { monoseq, dir, .. }) = &err else {
            panic!("{what}: not a checkpoint error: {err}")
        };
        assert_eq!(*monoseq, m, "{what}");
        let text = err.to_string();
        assert!(text.contains(&dir.to_string()), "{text}");
        assert!(text.contains("cannot be used"), "{text}");
        text
    };

    // A flipped byte in a range: checksum error naming the object.
    let range = format::checkpoint_snapshot_path(&prefix, &newest.ranges[1]);
    let good = common::get(&*store, &range).await;
    damage(&*store, &range).await;
    let (db, err) = restore_err(&reader, RestoreTarget::Latest).await;
    let text = expect_checkpoint_error(err, "flipped byte");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(range.as_ref()), "{text}");
    assert!(dump(&db).await.is_empty(), "database untouched");
    // A restore that needs an older base does not touch the damaged checkpoint.
    let older = &cps[cps.len() - 2];
    let (db2, out) = restore_to(&reader, RestoreTarget::Versionstamp(older.snapshot_end)).await;
    assert_eq!(out.checkpoint, Some(older.manifest.monoseq));
    assert_eq!(
        &dump(&db2).await,
        src.states.get(&older.snapshot_end).unwrap()
    );
    // Without checkpoints, the restore works.
    let plain = reader.clone().with_checkpoints(false);
    let (db2, out) = restore_to(&plain, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, latest_vs);
    assert_eq!(&dump(&db2).await, src.states.get(&latest_vs).unwrap());
    store.put(&range, good.clone().into()).await.unwrap();

    // A missing range.
    store.delete(&range).await.unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    let text = expect_checkpoint_error(err, "missing range");
    assert!(text.contains("snapshot ranges are missing"), "{text}");
    store.put(&range, good.clone().into()).await.unwrap();

    // A range holding a key newer than the checkpoint's end.
    let mut entries = format::decode_snapshot_range(&good).unwrap();
    entries[0].versionstamp = Versionstamp::from_version(newest.snapshot_end.version() + 1);
    store
        .put(&range, format::encode_snapshot_range(&entries).into())
        .await
        .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    let text = expect_checkpoint_error(err, "newer entry");
    assert!(
        text.contains("after the checkpoint's snapshot_end"),
        "{text}"
    );
    store.put(&range, good.clone().into()).await.unwrap();

    // A manifest that does not parse, or contradicts the folder.
    let manifest_path = format::checkpoint_manifest_path(&prefix, m);
    let manifest = common::get(&*store, &manifest_path).await;
    store
        .put(
            &manifest_path,
            b"{\"format\": 1, \"monoseq\":".to_vec().into(),
        )
        .await
        .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    let text = expect_checkpoint_error(err, "bad manifest");
    assert!(text.contains("is corrupt"), "{text}");
    let mut wrong = newest.manifest.clone();
    wrong.ranges += 1;
    store
        .put(&manifest_path, wrong.to_bytes().unwrap().into())
        .await
        .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    expect_checkpoint_error(err, "range count");
    let mut wrong = newest.manifest.clone();
    wrong.keys += 1;
    store
        .put(&manifest_path, wrong.to_bytes().unwrap().into())
        .await
        .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    let text = expect_checkpoint_error(err, "key count");
    assert!(text.contains("keys"), "{text}");
    assert!(dump(&db).await.is_empty(), "database untouched");
    store.put(&manifest_path, manifest.into()).await.unwrap();

    // A checkpoint left by an earlier backup under the same prefix (created before this
    // backup) is ignored, even though it looks newer.
    let stale = m + 50;
    for (i, k) in newest.ranges.iter().enumerate() {
        let body = common::get(&*store, &format::checkpoint_snapshot_path(&prefix, k)).await;
        let mut entries = format::decode_snapshot_range(&body).unwrap();
        for e in &mut entries {
            e.value = KvValue::Bytes(b"from another database".to_vec());
        }
        let key = format::SnapshotRangeKey {
            format_version: 1,
            monoseq: stale,
            seq: i as u64,
        };
        store
            .put(
                &format::checkpoint_snapshot_path(&prefix, &key),
                format::encode_snapshot_range(&entries).into(),
            )
            .await
            .unwrap();
    }
    let mut old = newest.manifest.clone();
    old.monoseq = stale;
    old.created_at_ms = 1_000;
    store
        .put(
            &format::checkpoint_manifest_path(&prefix, stale),
            old.to_bytes().unwrap().into(),
        )
        .await
        .unwrap();
    let (db3, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.checkpoint, Some(m));
    assert_eq!(&dump(&db3).await, src.states.get(&latest_vs).unwrap());
    assert!(checkpoints_of(&reader)
        .await
        .iter()
        .all(|c| c.manifest.monoseq != stale));

    // An incomplete checkpoint (no manifest yet) is ignored.
    let junk = format::checkpoint_snapshot_path(
        &prefix,
        &format::SnapshotRangeKey {
            format_version: 1,
            monoseq: m + 100,
            seq: 0,
        },
    );
    store.put(&junk, b"partial".to_vec().into()).await.unwrap();
    let out = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    assert_eq!(out.checkpoint, Some(m));
    assert_eq!(out.versionstamp, latest_vs);
    assert_eq!(&dump(&db).await, src.states.get(&latest_vs).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_starts_from_a_checkpoint_and_follows() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("r");
    let (mut src, backup) = backed_up_source(store.clone(), "r", 8, 2).await;
    let reader = BackupReader::new(store.clone(), prefix.clone());
    let cps = checkpoints_of(&reader).await;
    let newest = cps.last().unwrap().clone();
    // Without the segments before the checkpoint, only a checkpoint can start the replica.
    let deleted = delete_logs_before(&*store, &reader, &newest).await;
    assert!(deleted > 3);

    let replica_db = common::read_only_db().await;
    let replica = Replica::start(
        reader.clone(),
        replica_db.clone(),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    let at = replica.status().applied_through;
    assert!(at >= newest.snapshot_end);
    assert_eq!(&dump(&replica_db).await, src.states.get(&at).unwrap());

    // New commits (and new checkpoints) arrive; the replica follows the log.
    for r in 50..60 {
        src.round(r).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latest = backup.flush(Duration::from_secs(30)).await.unwrap();
    let status = replica
        .wait_for(latest, Duration::from_secs(30))
        .await
        .expect("replica caught up");
    assert_eq!(status.applied_through, latest);
    assert!(status.last_error.is_none(), "{status:?}");
    assert_eq!(&dump(&replica_db).await, src.states.get(&latest).unwrap());
    replica.stop().await;
    backup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_from_a_checkpoint_restore_without_the_old_log() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (src, reader) = settled_source(store.clone(), "c", 10, 3).await;
    let latest_vs = src.db.current_versionstamp().await.unwrap();
    let cps = checkpoints_of(&reader).await;
    let older = cps[cps.len() - 2].clone();
    // Restore the older checkpoint's point, drop the log before it, move to the latest.
    let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(older.snapshot_end)).await;
    assert_eq!(out.checkpoint, Some(older.manifest.monoseq));
    delete_logs_before(&*store, &reader, &older).await;
    let out = catch_up(&reader, &db, RestoreTarget::Latest).await.unwrap();
    assert_eq!(out.versionstamp, latest_vs);
    assert_eq!(&dump(&db).await, src.states.get(&latest_vs).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_read_while_commits_land_restore_exactly() {
    // Checkpoints whose ranges are read while commits land (snapshot_start < snapshot_end):
    // the log between the two must be replayed on top of the ranges.
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut src = Source::new().await;
    for r in 0..30 {
        src.round(r).await;
    }
    let mut cfg = config(store.clone(), "w");
    cfg.checkpoint_interval = Some(Duration::from_millis(15));
    cfg.snapshot_range_entries = 2;
    let backup = Backup::start(src.db.clone(), cfg).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    let reader = BackupReader::new(store.clone(), Path::from("w"));
    let t0 = Instant::now();
    let mut r = 30;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint overlapped commits"
        );
        for _ in 0..10 {
            src.round(r).await;
            r += 1;
        }
        let layout = reader.layout().await.unwrap();
        let cps = reader.checkpoints(&layout).await.unwrap();
        if cps
            .iter()
            .filter(|c| c.snapshot_start < c.snapshot_end)
            .count()
            >= 2
        {
            break;
        }
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    let cps = checkpoints_of(&reader).await;
    let dv = reader.layout().await.unwrap().differential;
    let overlapping: Vec<&Checkpoint> = cps
        .iter()
        .filter(|c| c.snapshot_start < c.snapshot_end)
        .collect();
    assert!(overlapping.len() >= 2);
    let points = reader.recovery_points(None, None).await.unwrap();
    let mut checked = 0;
    for c in overlapping {
        // Every point from this checkpoint's end up to the next checkpoint's end.
        let next_end = cps
            .iter()
            .find(|n| n.snapshot_end > c.snapshot_end)
            .map(|n| n.snapshot_end);
        for p in points.iter().filter(|p| {
            p.versionstamp >= c.snapshot_end && next_end.is_none_or(|e| p.versionstamp < e)
        }) {
            let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
            assert_eq!(out.versionstamp, p.versionstamp);
            assert_eq!(
                out.checkpoint,
                expected_checkpoint(&cps, dv, p.versionstamp)
            );
            assert_eq!(
                &dump(&db).await,
                src.states.get(&p.versionstamp).unwrap(),
                "state at {p} from checkpoint {:?}",
                out.checkpoint
            );
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_starting_at_a_one_change_commit_needs_no_older_segment() {
    // One commit per segment, and the checkpoint starts at a commit with a single change (a
    // lone boundary entry): the segment holding it is the first one needed, and nothing
    // before it.
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("one");
    let mut src = Source::new().await;
    let mut cfg = config(store.clone(), "one");
    cfg.max_segment_batches = 1;
    cfg.checkpoint_interval = Some(Duration::from_millis(30));
    let backup = Backup::start(src.db.clone(), cfg).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    for r in 0..6 {
        src.round(r).await;
    }
    let reader = BackupReader::new(store.clone(), prefix.clone());
    // A checkpoint that starts exactly at the one-change commit (retried if one happened to
    // start just before it).
    let mut tries = 0;
    let (last, newest) = loop {
        tries += 1;
        assert!(tries < 20);
        let last = src
            .commit(vec![Mutation::set(key("single"), KvValue::U64(tries))])
            .await;
        backup.flush(Duration::from_secs(30)).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            backup
                .subscribe()
                .wait_for(|s| s.last_checkpoint.is_some_and(|c| c >= last)),
        )
        .await
        .unwrap()
        .unwrap();
        let newest = checkpoints_of(&reader).await.last().unwrap().clone();
        if newest.snapshot_start == last {
            break (last, newest);
        }
    };
    backup.shutdown().await.unwrap();
    assert_eq!(newest.snapshot_end, last);
    let layout = reader.layout().await.unwrap();
    let holder = layout
        .logs
        .iter()
        .find(|o| o.key.last_vs12 == format::boundary_of(&last))
        .unwrap();
    assert_eq!(holder.key.first_vs12, format::boundary_of(&last));
    for o in layout.logs.iter().filter(|o| o.key < holder.key) {
        store
            .delete(&format::log_path(&prefix, &o.key))
            .await
            .unwrap();
    }
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.checkpoint, Some(newest.manifest.monoseq));
    assert_eq!(out.versionstamp, last);
    assert_eq!(&dump(&db).await, src.states.get(&last).unwrap());
}
