//! Streaming, all-or-nothing restores: a restore writes in bounded chunks as it reads, a
//! failure midway deletes what it wrote (memory engine) or leaves the target file untouched
//! (file engines, which restore into a temporary file swapped in when complete).

mod common;

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::Ordering;

use common::{backed_up, broken_logs_reader as reader, dump, memory_db, Source};
use kv_db::{Db, DbConfig};
use kv_engine_redb::RedbBackend;
use kv_engine_sqlite::SqliteBackend;
use kv_pitr::file_restore::{restore_file, temp_path, FileRestoreError};
use kv_pitr::restore::{restore, RestoreError, RestoreProgress, RestoreTarget};
use kv_traits::{Database, KvError, Versionstamp};

async fn open_sqlite(path: PathBuf) -> Result<Db, KvError> {
    Db::open(
        SqliteBackend::open(&path, Default::default())?,
        DbConfig::default(),
    )
    .await
}

async fn open_redb(path: PathBuf) -> Result<Db, KvError> {
    Db::open(
        RedbBackend::open(&path, Default::default())?,
        DbConfig::default(),
    )
    .await
}

/// The files in `dir`, by name.
fn files_in(dir: &FsPath) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn latest(src: &Source) -> Versionstamp {
    *src.states.keys().next_back().unwrap()
}

#[tokio::test]
async fn memory_restore_streams_and_a_failure_midway_deletes_what_it_wrote() {
    let (src, store) = backed_up().await;
    let reader = reader(&store);

    store.hooks.broken.store(true, Ordering::SeqCst);
    let db = memory_db().await;
    let mut written = 0;
    let err = restore(&reader, &db, RestoreTarget::Latest, |p| {
        if let RestoreProgress::Writing { written: w } = p {
            written = w;
        }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, RestoreError::Backup(_)), "{err}");
    assert!(
        written >= 2000,
        "the snapshot was being written before the log failed ({written})"
    );
    assert!(dump(&db).await.is_empty(), "what was written is deleted");
    assert_eq!(db.current_versionstamp().await.unwrap(), Versionstamp::ZERO);
    // Not taken for a copy of any point.
    assert!(matches!(
        db.imported_through().await.unwrap(),
        None | Some(Versionstamp::ZERO)
    ));

    // The same database takes the restore once the store works.
    store.hooks.broken.store(false, Ordering::SeqCst);
    let outcome = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.versionstamp, latest(&src));
    assert_eq!(dump(&db).await, src.states[&latest(&src)]);
    assert_eq!(outcome.keys, src.states[&latest(&src)].len());
}

#[tokio::test]
async fn file_restores_build_a_temporary_file_and_swap_it_in() {
    let (src, store) = backed_up().await;
    let reader = reader(&store);
    let dir = tempfile::tempdir().unwrap();
    for (name, sqlite) in [("a.sqlite", true), ("a.redb", false)] {
        let path = dir.path().join(name);
        let saw_temp = std::cell::Cell::new(false);
        let progress = |_: RestoreProgress| {
            if temp_path(&path).exists() {
                saw_temp.set(true);
            }
            assert!(!path.exists(), "the target appears only when complete");
        };
        let outcome = if sqlite {
            restore_file(&reader, &path, open_sqlite, RestoreTarget::Latest, progress).await
        } else {
            restore_file(&reader, &path, open_redb, RestoreTarget::Latest, progress).await
        }
        .unwrap();
        assert!(saw_temp.get(), "{name}: built in the temporary file");
        assert!(!temp_path(&path).exists());
        assert_eq!(outcome.versionstamp, latest(&src));
        let db = if sqlite {
            open_sqlite(path.clone()).await
        } else {
            open_redb(path.clone()).await
        }
        .unwrap();
        assert_eq!(dump(&db).await, src.states[&latest(&src)], "{name}");
        assert_eq!(
            db.imported_through().await.unwrap(),
            Some(outcome.versionstamp)
        );
        db.close().await.unwrap();
    }
    let left: Vec<String> = files_in(dir.path())
        .into_iter()
        .filter(|f| f.contains("pitr-restore"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[tokio::test]
async fn a_failed_file_restore_leaves_the_target_untouched() {
    let (src, store) = backed_up().await;
    let reader = reader(&store);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");

    // No target yet: a failure leaves none (and no temporary file).
    store.hooks.broken.store(true, Ordering::SeqCst);
    let err = restore_file(&reader, &path, open_sqlite, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, FileRestoreError::Restore(RestoreError::Backup(_))),
        "{err}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    // An empty target database stays as it was.
    open_sqlite(path.clone())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    restore_file(&reader, &path, open_sqlite, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!temp_path(&path).exists());

    // A temporary file left by a killed restore is replaced by the next one.
    std::fs::write(temp_path(&path), b"half a database").unwrap();
    store.hooks.broken.store(false, Ordering::SeqCst);
    restore_file(&reader, &path, open_sqlite, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    assert!(!temp_path(&path).exists());
    let db = open_sqlite(path.clone()).await.unwrap();
    assert_eq!(dump(&db).await, src.states[&latest(&src)]);
    db.close().await.unwrap();

    // A target holding data is refused, untouched.
    let before = dump(&open_sqlite(path.clone()).await.unwrap()).await;
    let err = restore_file(&reader, &path, open_sqlite, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FileRestoreError::Restore(RestoreError::NotEmpty { .. })
        ),
        "{err}"
    );
    let db = open_sqlite(path.clone()).await.unwrap();
    assert_eq!(dump(&db).await, before);
    db.close().await.unwrap();
}
