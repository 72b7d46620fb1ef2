//! Streaming, all-or-nothing restores: a restore writes in bounded chunks as it reads, a
//! failure midway deletes what it wrote (memory engine) or leaves the target file untouched
//! (file engines, which restore into a temporary file swapped in when complete).

mod common;

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{dump, key, memory_db, HookedStore, Source, StoreHooks};
use kv_db::{Db, DbConfig};
use kv_engine_redb::RedbBackend;
use kv_engine_sqlite::SqliteBackend;
use kv_pitr::consumer::BackupReader;
use kv_pitr::file_restore::{restore_file, temp_path, FileRestoreError};
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, RestoreError, RestoreProgress, RestoreTarget};
use kv_traits::{Database, KvError, KvValue, Mutation, Versionstamp};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};

/// Keys in the initial snapshot: more than one import chunk, so a restore has written some
/// before it reaches the log.
const SNAPSHOT_KEYS: u32 = 2600;

/// Fails every read of a log segment while `broken` is set.
#[derive(Debug, Default)]
struct BrokenLogs {
    broken: AtomicBool,
}

impl StoreHooks for BrokenLogs {
    const NAME: &'static str = "BrokenLogs";

    fn fail_get(&self, location: &Path, options: &GetOptions) -> object_store::Result<()> {
        if !options.head
            && self.broken.load(Ordering::SeqCst)
            && location.as_ref().contains("/logs/")
        {
            return Err(object_store::Error::Generic {
                store: "BrokenLogs",
                source: "injected failure".into(),
            });
        }
        Ok(())
    }
}

/// A backup of `SNAPSHOT_KEYS` keys (in ranges of 500) followed by a few logged commits,
/// stopped. Returns the source and the store, whose log reads can be broken.
async fn backed_up() -> (Source, Arc<HookedStore<BrokenLogs>>) {
    let mut src = Source::new().await;
    for batch in 0..SNAPSHOT_KEYS / 200 {
        let muts = (0..200)
            .map(|i| {
                let n = batch * 200 + i;
                Mutation::set(key(&format!("k{n:05}")), KvValue::Bytes(vec![n as u8; 64]))
            })
            .collect();
        src.commit(muts).await;
    }
    let store = HookedStore::new(Arc::new(InMemory::new()), BrokenLogs::default());
    let mut config = BackupConfig::new(store.clone(), Path::from("b"));
    config.flush_interval = Duration::from_millis(10);
    config.snapshot_range_entries = 500;
    config.max_segment_batches = 2;
    let backup = Backup::start(src.db.clone(), config).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    for i in 0..6u8 {
        src.commit(vec![
            Mutation::set(key("log"), KvValue::U64(u64::from(i))),
            Mutation::delete(key(&format!("k{:05}", u32::from(i) * 7))),
        ])
        .await;
    }
    backup.flush(Duration::from_secs(30)).await.unwrap();
    backup.shutdown().await.unwrap();
    (src, store)
}

fn reader(store: &Arc<HookedStore<BrokenLogs>>) -> BackupReader {
    let store: Arc<dyn ObjectStore> = store.clone();
    BackupReader::new(store, Path::from("b"))
}

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
