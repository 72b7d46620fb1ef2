//! Reopening files: the format version, foreign and locked files, and the durability opt-in.
//! (Data surviving a close or a plain drop is the shared contract's, in `contract.rs`.)

mod common;

use common::{open, put_all};
use kv_engine_redb::{RedbBackend, RedbDurability, RedbOptions, FORMAT_VERSION};
use kv_traits::{Backend, BackendError};
use redb::{ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

#[tokio::test]
async fn a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let db = open(&path);
        put_all(&db, &[(b"k", b"v")]).await;
        db.close().await.unwrap();
    }
    // The stored version is the one this build writes.
    {
        let raw = redb::Database::open(&path).unwrap();
        let r = raw.begin_read().unwrap();
        let meta = r.open_table(META).unwrap();
        assert_eq!(
            meta.get("format_version").unwrap().unwrap().value(),
            FORMAT_VERSION
        );
    }
    for bad in [FORMAT_VERSION + 1, 0] {
        {
            let raw = redb::Database::open(&path).unwrap();
            let w = raw.begin_write().unwrap();
            w.open_table(META)
                .unwrap()
                .insert("format_version", bad)
                .unwrap();
            w.commit().unwrap();
        }
        let err = RedbBackend::open(&path, RedbOptions::default()).unwrap_err();
        assert_eq!(
            err,
            BackendError::UnsupportedFormat {
                found: bad,
                supported: FORMAT_VERSION
            }
        );
    }
}

#[tokio::test]
async fn data_without_a_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let raw = redb::Database::create(&path).unwrap();
        let w = raw.begin_write().unwrap();
        w.open_table(DATA)
            .unwrap()
            .insert(&b"k"[..], &b"v"[..])
            .unwrap();
        w.commit().unwrap();
    }
    let err = RedbBackend::open(&path, RedbOptions::default()).unwrap_err();
    assert!(matches!(err, BackendError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-redb");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = RedbBackend::open(&path, RedbOptions::default()).unwrap_err();
    assert!(matches!(err, BackendError::Corrupt(_)), "{err:?}");
    // The file was left alone.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x42u8; 8192]);
}

#[tokio::test]
async fn a_file_open_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let db = open(&path);
    let err = RedbBackend::open(&path, RedbOptions::default()).unwrap_err();
    assert!(
        matches!(err, BackendError::Io(ref m) if m.message().contains("already open")),
        "{err:?}"
    );
    db.close().await.unwrap();
    // After closing, the file can be opened again.
    let again = open(&path);
    again.close().await.unwrap();
}

#[tokio::test]
async fn non_durable_opt_in_still_commits_and_persists_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let options = RedbOptions {
        durability: RedbDurability::None,
        cache_size: Some(16 << 20),
        ..RedbOptions::default()
    };
    {
        let db = RedbBackend::open(&path, options.clone()).unwrap();
        for i in 0..50u32 {
            put_all(&db, &[(&i.to_be_bytes(), b"v")]).await;
        }
        assert_eq!(
            db.begin_read()
                .await
                .unwrap()
                .scan(b"", b"\xff", 100, false)
                .await
                .unwrap()
                .len(),
            50
        );
        db.close().await.unwrap();
    }
    let db = RedbBackend::open(&path, options).unwrap();
    assert_eq!(
        db.begin_read()
            .await
            .unwrap()
            .scan(b"", b"\xff", 100, false)
            .await
            .unwrap()
            .len(),
        50
    );
}
