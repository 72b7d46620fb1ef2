//! On-disk behaviour: WAL mode, the format identification and version checks, durability
//! options. (Data surviving a close or a plain drop is the shared contract's, in `contract.rs`.)

use kv_engine_sqlite::{
    Durability, SqliteBackend, SqliteOptions, APPLICATION_ID, FORMAT_VERSION, PAGE_SIZE,
};
use kv_traits::{Backend, BackendError};
use rusqlite::Connection;

async fn read(b: &SqliteBackend, k: &[u8]) -> Option<Vec<u8>> {
    b.begin_read().await.unwrap().get(k).await.unwrap()
}

#[tokio::test]
async fn file_is_identified_versioned_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"v").await.unwrap();
    w.commit().await.unwrap();

    let raw = Connection::open(&path).unwrap();
    let app: i32 = raw
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let ver: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    assert_eq!(ver as u64, FORMAT_VERSION);
    assert_eq!(mode, "wal");
    // The committed row is visible to an independent connection (it is in the file/WAL).
    let v: Vec<u8> = raw
        .query_row("SELECT v FROM kv WHERE k = x'6b'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, b"v");
}

#[tokio::test]
async fn newer_format_version_is_refused_without_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    {
        let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
        b.close().await.unwrap();
    }
    {
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", FORMAT_VERSION as i64 + 1)
            .unwrap();
        raw.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let err = SqliteBackend::open(&path, SqliteOptions::default()).unwrap_err();
    assert_eq!(
        err,
        BackendError::UnsupportedFormat {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        }
    );
    assert!(
        err.to_string().contains(&format!(
            "unsupported storage format version {}",
            FORMAT_VERSION + 1
        )),
        "{err}"
    );
    let raw = Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "a refused file must not be switched to WAL");

    // Version 0 with our application id (e.g. a half-initialized file) is refused too.
    raw.pragma_update(None, "user_version", 0).unwrap();
    drop(raw);
    assert!(matches!(
        SqliteBackend::open(&path, SqliteOptions::default()).unwrap_err(),
        BackendError::UnsupportedFormat { found: 0, .. }
    ));
}

#[tokio::test]
async fn other_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    // Another application's SQLite database (for example a denokv_sqlite file).
    let foreign = dir.path().join("foreign.sqlite3");
    {
        let raw = Connection::open(&foreign).unwrap();
        raw.execute_batch("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB, v_encoding INTEGER)")
            .unwrap();
    }
    let err = SqliteBackend::open(&foreign, SqliteOptions::default()).unwrap_err();
    assert!(
        matches!(&err, BackendError::Corrupt(m) if m.message().contains("not a kv-engine-sqlite database")),
        "{err}"
    );

    // Not an SQLite file at all.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![0x5au8; 8192]).unwrap();
    let err = SqliteBackend::open(&garbage, SqliteOptions::default()).unwrap_err();
    assert!(matches!(err, BackendError::Corrupt(_)), "{err}");
    // The source chain reaches SQLite's own error.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source.downcast_ref::<rusqlite::Error>().is_some(),
        "{source:?}"
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5au8; 8192]);

    // A directory that does not exist.
    let err =
        SqliteBackend::open(dir.path().join("missing/db"), SqliteOptions::default()).unwrap_err();
    assert!(matches!(err, BackendError::Io(_)), "{err}");
}

#[tokio::test]
async fn an_empty_existing_file_is_initialized() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.sqlite3");
    std::fs::write(&path, b"").unwrap();
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"v").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&b, b"k").await, Some(b"v".to_vec()));
}

#[tokio::test]
async fn normal_durability_reads_back_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let opts = SqliteOptions::default().with_durability(Durability::Normal);
    {
        let b = SqliteBackend::open(&path, opts.clone()).unwrap();
        assert_eq!(b.options().durability, Durability::Normal);
        let mut w = b.begin_write().await.unwrap();
        w.put(b"k", b"v").await.unwrap();
        w.commit().await.unwrap();
    }
    // Reopening with another durability level is allowed (it is a per-connection setting).
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(read(&b, b"k").await, Some(b"v".to_vec()));
}

/// Builds a file exactly as format 1 wrote it (4 KiB pages, WAL mode, the same table), holding
/// `n` keys with `value_len`-byte values.
fn format_1_file(path: &std::path::Path, n: u32, value_len: usize) {
    let raw = Connection::open(path).unwrap();
    raw.pragma_update(None, "page_size", 4096).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
    )
    .unwrap();
    raw.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    raw.pragma_update(None, "user_version", 1).unwrap();
    for i in 0..n {
        raw.execute(
            "INSERT INTO kv (k, v) VALUES (?1, ?2)",
            rusqlite::params![
                format!("key-{i:06}").into_bytes(),
                vec![(i % 251) as u8; value_len]
            ],
        )
        .unwrap();
    }
    raw.execute_batch("COMMIT").unwrap();
    // Leave committed rows in the WAL, as a crashed or running format-1 server would.
}

fn pragma_i64(path: &std::path::Path, name: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn format_1_file_is_upgraded_on_open_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    format_1_file(&path, 2000, 1000);
    assert_eq!(pragma_i64(&path, "page_size"), 4096);
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(
        read(&b, b"key-001234").await,
        Some(vec![(1234 % 251) as u8; 1000])
    );
    let all = b
        .begin_read()
        .await
        .unwrap()
        .scan(b"", b"\xff", 10_000, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 2000);
    // Writable after the upgrade.
    let mut w = b.begin_write().await.unwrap();
    w.put(b"new", b"v").await.unwrap();
    w.commit().await.unwrap();
    b.close().await.unwrap();

    assert_eq!(pragma_i64(&path, "user_version") as u64, FORMAT_VERSION);
    assert_eq!(pragma_i64(&path, "page_size"), i64::from(PAGE_SIZE));
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // 2,000 rows of 1,010 bytes: format 1 spent an overflow page on each (over 8 MB).
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 3_000_000, "upgraded file is {size} bytes");

    // Opening it again is a plain open.
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(read(&b, b"new").await, Some(b"v".to_vec()));
    b.close().await.unwrap();
}

#[tokio::test]
async fn format_1_file_is_served_as_it_is_without_upgrade_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    format_1_file(&path, 10, 1000);
    let options = SqliteOptions {
        upgrade_on_open: false,
        ..SqliteOptions::default()
    };
    let b = SqliteBackend::open(&path, options.clone()).unwrap();
    assert_eq!(read(&b, b"key-000007").await, Some(vec![7; 1000]));
    let mut w = b.begin_write().await.unwrap();
    w.put(b"new", b"v").await.unwrap();
    w.commit().await.unwrap();
    b.close().await.unwrap();
    assert_eq!(pragma_i64(&path, "user_version"), 1);
    assert_eq!(pragma_i64(&path, "page_size"), 4096);

    // A later open with the default options upgrades it.
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(read(&b, b"new").await, Some(b"v".to_vec()));
    b.close().await.unwrap();
    assert_eq!(pragma_i64(&path, "user_version") as u64, FORMAT_VERSION);
    assert_eq!(pragma_i64(&path, "page_size"), i64::from(PAGE_SIZE));
}

#[tokio::test]
async fn new_files_use_the_format_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite3");
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    b.close().await.unwrap();
    assert_eq!(pragma_i64(&path, "page_size"), i64::from(PAGE_SIZE));
}
