//! Damaged or incomplete backups give a clear error that names the object, and never a wrong
//! database: the target database stays empty after every failed restore.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kv_db::ExportEntry;
use kv_pitr::consumer::{BackupReader, ConsumerError};
use kv_pitr::format::{self, FormatError};
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, Replica, RestoreError, RestoreTarget};
use kv_traits::{AtomicWrite, Database, KvValue, Mutation, Versionstamp};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use common::{dump, get, key, memory_db as empty_db, put};

const PREFIX: &str = "bk";

/// A backup with several snapshot ranges and several log segments.
async fn make_backup() -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let db = common::change_log_db().await;
    let put = |i: u32| {
        let db = db.clone();
        async move {
            db.atomic_write(AtomicWrite {
                mutations: vec![
                    Mutation::set(key(&format!("k{i}")), KvValue::U64(u64::from(i))),
                    Mutation::set(key(&format!("b{i}")), KvValue::Bytes(vec![i as u8; 3])),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        }
    };
    for i in 0..6 {
        put(i).await;
    }
    let mut config = BackupConfig::new(store.clone(), Path::from(PREFIX));
    config.flush_interval = Duration::from_millis(10);
    config.max_segment_batches = 2;
    config.snapshot_range_entries = 3;
    let backup = Backup::start(db.clone(), config).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    for i in 6..16 {
        put(i).await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    store
}

/// The objects in folder `dir` of the backup, sorted.
async fn list(store: &Arc<dyn ObjectStore>, dir: &str) -> Vec<Path> {
    common::list(&**store, &Path::from(format!("{PREFIX}/{dir}"))).await
}

/// Deletes object `index` of folder `dir` from a new backup and restores it, expecting an
/// error. Returns how many objects the folder had, and the error.
async fn restore_without(dir: &str, index: usize) -> (usize, ConsumerError) {
    let store = make_backup().await;
    let objects = list(&store, dir).await;
    store.delete(&objects[index]).await.unwrap();
    (objects.len(), restore_fails(&store).await)
}

/// Restores latest into a fresh database; expects an error and an untouched database.
async fn restore_fails(store: &Arc<dyn ObjectStore>) -> ConsumerError {
    let reader = BackupReader::new(store.clone(), Path::from(PREFIX));
    let db = empty_db().await;
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert_eq!(db.current_versionstamp().await.unwrap(), Versionstamp::ZERO);
    assert!(dump(&db).await.is_empty(), "a failed restore wrote data");
    // A replica refuses to start the same way, and leaves its database empty too.
    let replica_db = empty_db().await;
    let replica = Replica::start(reader, replica_db.clone(), Duration::from_millis(10)).await;
    assert!(replica.is_err(), "replica started on a damaged backup");
    assert!(dump(&replica_db).await.is_empty());
    eprintln!("restore error: {err}");
    match err {
        RestoreError::Backup(e) => e,
        other => panic!("unexpected error kind: {other}"),
    }
}

#[tokio::test]
async fn intact_backup_restores() {
    let store = make_backup().await;
    let reader = BackupReader::new(store.clone(), Path::from(PREFIX));
    let db = empty_db().await;
    let out = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    assert_eq!(out.keys, 32);
    assert!(list(&store, "logs").await.len() >= 4);
    assert!(list(&store, "snapshots").await.len() >= 3);
}

#[tokio::test]
async fn flipped_byte_in_a_log_segment_is_a_checksum_error() {
    let store = make_backup().await;
    let logs = list(&store, "logs").await;
    let victim = &logs[1];
    let mut body = get(&store, victim).await.to_vec();
    body[10] ^= 0x01;
    put(&store, victim, body).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { object, source: FormatError::Checksum { .. } } if object == victim.as_ref()),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(victim.as_ref()) && text.contains("checksum"),
        "{text}"
    );
}

#[tokio::test]
async fn flipped_byte_in_a_snapshot_range_is_a_checksum_error() {
    let store = make_backup().await;
    let ranges = list(&store, "snapshots").await;
    let victim = &ranges[0];
    let mut body = get(&store, victim).await.to_vec();
    body[5] ^= 0x20;
    put(&store, victim, body).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { object, .. } if object == victim.as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_segment_is_corrupt() {
    let store = make_backup().await;
    let logs = list(&store, "logs").await;
    let victim = logs.last().unwrap();
    let body = get(&store, victim).await;
    put(&store, victim, body[..body.len() / 2].to_vec()).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { object, .. } if object == victim.as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn deleted_middle_segment_is_a_gap() {
    let (_, err) = restore_without("logs", 2).await;
    assert!(
        matches!(
            err,
            ConsumerError::MissingLogSegments {
                expected_monoseq: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("log segments are missing"),
        "{err}"
    );
}

#[tokio::test]
async fn deleted_first_segment_is_a_gap() {
    let (_, err) = restore_without("logs", 0).await;
    assert!(
        matches!(
            err,
            ConsumerError::MissingLogSegments {
                expected_monoseq: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn deleted_snapshot_range_is_reported() {
    for index in [0usize, 1] {
        let (ranges, err) = restore_without("snapshots", index).await;
        assert!(ranges >= 3);
        assert!(
            matches!(err, ConsumerError::MissingSnapshotRanges { expected_seq, .. } if expected_seq == index as u64),
            "{err}"
        );
        assert!(
            err.to_string().contains("snapshot ranges are missing"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn bad_or_missing_differential() {
    let store = make_backup().await;
    let path = format::differential_path(&Path::from(PREFIX));
    put(&store, &path, b"not a versionstamp".to_vec()).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { object, source: FormatError::BadDifferential(_) } if object == path.as_ref()),
        "{err}"
    );
    // A different, well-formed value contradicts the manifest.
    put(
        &store,
        &path,
        format::encode_differential(&Versionstamp::from_version(999)).to_vec(),
    )
    .await;
    let err = restore_fails(&store).await;
    assert!(matches!(err, ConsumerError::Inconsistent { .. }), "{err}");
    store.delete(&path).await.unwrap();
    let err = restore_fails(&store).await;
    assert!(matches!(err, ConsumerError::NotReady { .. }), "{err}");
}

#[tokio::test]
async fn corrupt_manifest() {
    let store = make_backup().await;
    let path = format::manifest_path(&Path::from(PREFIX));
    put(&store, &path, b"{\"format\": 1".to_vec()).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { object, .. } if object == path.as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn foreign_objects_in_the_backup_folders() {
    for name in [
        "logs/README.txt",
        "logs/nested/0001_x.bin",
        "snapshots/notes.bin",
    ] {
        let store = make_backup().await;
        let path = Path::from(format!("{PREFIX}/{name}"));
        put(&store, &path, b"hello".to_vec()).await;
        let err = restore_fails(&store).await;
        assert!(
            matches!(&err, ConsumerError::ForeignObject { object, .. } if object == path.as_ref()),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("unexpected object"), "{err}");
    }
}

#[tokio::test]
async fn segment_content_not_matching_its_name() {
    let store = make_backup().await;
    let logs = list(&store, "logs").await;
    // Swap the contents of two segments: each checksum is fine, the names are not.
    let a = get(&store, &logs[1]).await;
    let b = get(&store, &logs[2]).await;
    put(&store, &logs[1], b.to_vec()).await;
    put(&store, &logs[2], a.to_vec()).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Corrupt { source: FormatError::SegmentNameMismatch { .. }, object } if object == logs[1].as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn snapshot_entry_newer_than_the_differential_is_inconsistent() {
    let store = make_backup().await;
    let ranges = list(&store, "snapshots").await;
    let body = format::encode_snapshot_range(&[ExportEntry {
        key: key("from-the-future"),
        value: KvValue::U64(1),
        versionstamp: Versionstamp::from_version(1_000_000),
        expire_at_ms: None,
    }]);
    put(&store, &ranges[0], body.to_vec()).await;
    let err = restore_fails(&store).await;
    assert!(
        matches!(&err, ConsumerError::Inconsistent { object, .. } if object == ranges[0].as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn segment_replaced_by_a_folder_is_reported() {
    // A local-filesystem store whose segment file became a folder.
    let dir = tempfile::tempdir().unwrap();
    let mem = make_backup().await;
    let store = common::local_store(dir.path());
    for dir_name in ["", "snapshots", "logs"] {
        let listed: Vec<Path> = if dir_name.is_empty() {
            vec![
                format::differential_path(&Path::from(PREFIX)),
                format::manifest_path(&Path::from(PREFIX)),
            ]
        } else {
            list(&mem, dir_name).await
        };
        for p in listed {
            let body = get(&mem, &p).await;
            store.put(&p, body.into()).await.unwrap();
        }
    }
    let logs = list(&store, "logs").await;
    let victim = dir.path().join(logs[0].as_ref());
    std::fs::remove_file(&victim).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("inner"), b"x").unwrap();
    let err = restore_fails(&store).await;
    // Either the listing or the read names the object.
    assert!(err.to_string().contains("logs/"), "{err}");
}
