//! Retention on the producer (`BackupConfig::retention`): old log segments and checkpoints
//! are deleted while the backup runs, every point of the window stays restorable exactly,
//! a restarted producer continues the compacted backup, and bad settings are clear errors.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{change_log_db, checkpoint_config, commit, dump, key, restore_err, restore_to, sum};
use kv_db::ExportEntry;
use kv_pitr::consumer::{BackupReader, ConsumerError};
use kv_pitr::producer::{Backup, BackupConfig, BackupError};
use kv_pitr::restore::{RestoreError, RestoreTarget};
use kv_traits::clock::now_ms;
use kv_traits::{KvValue, Mutation, Versionstamp};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

const RETENTION: Duration = Duration::from_millis(400);
const GRACE: Duration = Duration::from_millis(100);

fn retention_config(store: Arc<dyn ObjectStore>) -> BackupConfig {
    let mut c = checkpoint_config(store, "p");
    c.retention = Some(RETENTION);
    c.retention_grace = GRACE;
    c
}

/// The model: the state after every commit, and when the commit was started (its commit
/// time is at or after that).
#[derive(Default)]
struct Model {
    states: BTreeMap<Versionstamp, (u64, Vec<ExportEntry>)>,
}

impl Model {
    async fn commit(&mut self, db: &kv_db::Db, i: u32) {
        let started = now_ms();
        let mutations = vec![
            Mutation::set(key(&format!("k{i}")), KvValue::Bytes(vec![i as u8; 8])),
            Mutation::delete(key(&format!("k{}", i.saturating_sub(3)))),
            sum(key("counter"), 1),
        ];
        let vs = commit(db, mutations).await;
        self.states.insert(vs, (started, dump(db).await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_objects_and_keeps_the_window_restorable() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let db = change_log_db().await;
    let mut model = Model::default();
    for i in 0..3 {
        model.commit(&db, i).await;
    }
    let backup = Backup::start(db.clone(), retention_config(store.clone()))
        .await
        .unwrap();
    common::initial_snapshot_done(&backup).await;

    // Write until retention has deleted segments and checkpoints, and for at least three
    // windows.
    let t0 = Instant::now();
    let mut i = 3;
    loop {
        let s = backup.status();
        if s.compacted_segments > 0
            && s.compacted_checkpoints > 0
            && t0.elapsed() > 3 * (RETENTION + GRACE)
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{s:?}");
        model.commit(&db, i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    // The status once every task has stopped: a compaction may still run between a status read
    // and the shutdown, and the object counts below must match the final one.
    let status_rx = backup.subscribe();
    backup.shutdown().await.unwrap();
    let stopped_at = now_ms();
    let status = status_rx.borrow().clone();
    assert_eq!(status.last_compaction_error, None);

    // Old segments are gone: what remains plus what was deleted is what was uploaded.
    let reader = BackupReader::new(store.clone(), Path::from("p"));
    let info = reader.info().await.unwrap();
    assert!(info.log_segments > 0);
    assert_eq!(
        info.log_segments as u64 + status.compacted_segments,
        status.segments_uploaded,
        "{status:?}"
    );
    // Checkpoints before the window are gone too: at most those of one window and the base
    // remain (one per interval), far fewer than were written.
    let (checkpoints, _) = kv_pitr::producer::list_checkpoints(&*store, &Path::from("p"))
        .await
        .unwrap();
    assert!(!checkpoints.is_empty());
    assert!(
        (checkpoints.len() as u64) < status.checkpoints_written,
        "{} of {}",
        checkpoints.len(),
        status.checkpoints_written
    );

    // The first writes are no longer restorable.
    let (first_vs, _) = model.states.first_key_value().unwrap();
    let (_, err) = restore_err(&reader, RestoreTarget::Versionstamp(*first_vs)).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );

    // The last enforcement ran before `stopped_at`, so its horizon is at or before this: every
    // point from here on must restore exactly.
    let horizon = stopped_at - (RETENTION + GRACE).as_millis() as u64;
    let (restored, out) = restore_to(&reader, RestoreTarget::Time(horizon)).await;
    assert_eq!(dump(&restored).await, model.states[&out.versionstamp].1);
    let window: Vec<_> = model
        .states
        .iter()
        .filter(|(_, (started, _))| *started >= horizon)
        .collect();
    for (vs, (_, state)) in &window {
        let (restored, out) = restore_to(&reader, RestoreTarget::Versionstamp(**vs)).await;
        assert_eq!(out.versionstamp, **vs);
        assert_eq!(&dump(&restored).await, state, "state at {vs}");
    }
    let (latest_vs, (_, latest)) = model.states.last_key_value().unwrap();
    let (restored, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, *latest_vs);
    assert_eq!(&dump(&restored).await, latest);

    // A restarted producer continues the compacted backup.
    let backup = Backup::start(db.clone(), retention_config(store.clone()))
        .await
        .unwrap();
    model.commit(&db, i).await;
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    let (latest_vs, (_, latest)) = model.states.last_key_value().unwrap();
    let (restored, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, *latest_vs);
    assert_eq!(&dump(&restored).await, latest);
    assert_eq!(db.current_versionstamp().await.unwrap(), *latest_vs);
}

#[tokio::test]
async fn bad_retention_settings_are_clear_errors() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let db = change_log_db().await;

    let mut no_checkpoints = retention_config(store.clone());
    no_checkpoints.checkpoint_interval = None;
    let err = Backup::start(db.clone(), no_checkpoints)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BackupError::InvalidRetention { .. }), "{err}");
    assert!(err.to_string().contains("checkpoint"), "{err}");

    let mut zero = retention_config(store.clone());
    zero.retention = Some(Duration::ZERO);
    let err = Backup::start(db, zero).await.err().unwrap();
    assert!(matches!(err, BackupError::InvalidRetention { .. }), "{err}");
    assert!(err.to_string().contains("zero"), "{err}");

    // Nothing was written to the store.
    use futures::TryStreamExt;
    let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
    assert!(objects.is_empty(), "{objects:?}");
}

/// A copy that lags behind what compaction deleted cannot move forward: catching up is an
/// error, and the copy keeps its old state (never the later log applied on a stale base).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_older_than_the_compacted_log_fails_to_catch_up() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (src, reader) = common::settled_source(store.clone(), "p", 12, 3).await;
    let points = reader.recovery_points(None, None).await.unwrap();
    let oldest = *points.last().unwrap();
    let (copy, _) = restore_to(&reader, RestoreTarget::Versionstamp(oldest.versionstamp)).await;
    let before = dump(&copy).await;
    let report = kv_pitr::compact::compact(&reader, RestoreTarget::Latest)
        .await
        .unwrap();
    assert!(report.deleted_segments > 0, "{report:?}");
    let err = kv_pitr::restore::catch_up(&reader, &copy, RestoreTarget::Latest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(dump(&copy).await, before);
    assert_eq!(before, src.states[&oldest.versionstamp]);
}
