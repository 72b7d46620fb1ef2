//! Compaction: deleting the log segments before a checkpoint keeps every recovery point
//! after the checkpoint's first one restorable (exactly), `info` and listings start there,
//! and earlier points are clear errors.

mod common;

use std::sync::Arc;

use common::{dump, list, restore_err, restore_to, settled_source};
use kv_pitr::compact::{compact, compaction_path};
use kv_pitr::consumer::ConsumerError;
use kv_pitr::restore::{RestoreError, RestoreTarget};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_deletes_old_segments_and_keeps_later_points() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (src, reader) = settled_source(store.clone(), "p", 12, 3).await;
    let points = reader.recovery_points(None, None).await.unwrap();
    let segments_before = list(&*store, &Path::from("p/logs")).await.len();

    // A horizon before every checkpoint compacts nothing.
    let first = *points.last().unwrap();
    let report = compact(&reader, RestoreTarget::Versionstamp(first.versionstamp))
        .await
        .unwrap();
    assert_eq!(report.deleted_segments, 0);
    assert!(store
        .head(&compaction_path(&Path::from("p")))
        .await
        .is_err());

    let report = compact(&reader, RestoreTarget::Latest).await.unwrap();
    assert!(report.checkpoint.is_some());
    assert!(report.deleted_segments > 0, "{report:?}");
    let segments_after = list(&*store, &Path::from("p/logs")).await.len();
    assert_eq!(segments_after + report.deleted_segments, segments_before);
    let horizon = report.first_point.unwrap();

    // Listing and info start at the new first point; later points are unchanged.
    let kept: Vec<_> = points
        .iter()
        .copied()
        .filter(|p| p.versionstamp >= horizon.versionstamp)
        .collect();
    assert!(!kept.is_empty() && kept.len() < points.len());
    let after = reader.recovery_points(None, None).await.unwrap();
    assert_eq!(after, kept);
    let info = reader.info().await.unwrap();
    assert_eq!(info.first_point, horizon);
    assert_eq!(info.latest_point, points[0]);
    assert_eq!(info.log_segments, segments_after);

    // Every point after the horizon restores exactly; earlier ones are clear errors.
    for p in &kept {
        let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
        assert_eq!(out.versionstamp, p.versionstamp);
        assert_eq!(dump(&db).await, src.states[&p.versionstamp], "state at {p}");
    }
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, points[0].versionstamp);
    assert_eq!(dump(&db).await, src.states[&points[0].versionstamp]);
    for p in points
        .iter()
        .filter(|p| p.versionstamp < horizon.versionstamp)
    {
        let (db, err) = restore_err(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
        assert!(
            matches!(
                err,
                RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
            ),
            "{p}: {err}"
        );
        assert!(dump(&db).await.is_empty());
    }

    // Compacting again to the same checkpoint changes nothing.
    let again = compact(&reader, RestoreTarget::Latest).await.unwrap();
    assert_eq!(again.deleted_segments, 0);
    assert_eq!(reader.recovery_points(None, None).await.unwrap(), kept);
}
