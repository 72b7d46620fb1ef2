//! The on-disk format: identification (`PRAGMA application_id`), version (`PRAGMA
//! user_version`) and schema.
//!
//! The schema is one table, `kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID`; SQLite
//! compares BLOBs with `memcmp` and then by length, which is the unsigned bytewise order the
//! [`kv_traits::Backend`] contract requires.
//!
//! | version | schema | page size |
//! |---|---|---|
//! | 1 | `kv` as above | SQLite's default, 4 KiB |
//! | 2 | the same | [`PAGE_SIZE`] (32 KiB) |
//!
//! Why format 2: a `WITHOUT ROWID` table keeps a row in its B-tree page only up to about a
//! quarter of the page (1,002 bytes of 4 KiB pages); a longer row keeps about 490 bytes there and
//! moves the rest to overflow pages of its own, each a whole page. A 1 KB value then cost 4.7 KB
//! of file. With 32 KiB pages rows up to 8,198 bytes stay inline, so values up to 4 KB (with a
//! key of up to a few hundred bytes) cost their size plus the B-tree's free space (measured
//! 1.15x–1.35x of keys+values, random insertion order; see the README's Performance section).
//! Rows between about 8 KiB and 32 KiB still spill into a partly used overflow page.
//!
//! A format-1 file is upgraded when it is opened ([`upgrade`]): `VACUUM` rewrites it with the
//! new page size (it needs free disk space for a copy of the database and takes time in
//! proportion to its size; it is crash-safe: an interrupted `VACUUM` rolls back and the next open
//! tries again), then the version is set to 2. With [`crate::SqliteOptions::upgrade_on_open`]
//! off a format-1 file is served as it is: the schema is the same, only the page size differs.

use kv_traits::BackendError;
use rusqlite::Connection;

use crate::error::sql_err;

/// `PRAGMA application_id` of files written by this crate (ASCII `"KVSQ"`).
pub const APPLICATION_ID: i32 = 0x4B56_5351;

/// The format version this build writes and reads (`PRAGMA user_version`).
pub const FORMAT_VERSION: u64 = 2;

/// The oldest format version this build opens (and upgrades).
pub const OLDEST_FORMAT_VERSION: u64 = 1;

/// `PRAGMA page_size` of format-2 files, in bytes.
pub const PAGE_SIZE: u32 = 32 * 1024;

const SCHEMA: &str = "CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;";

/// What [`inspect`] found in a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileState {
    /// A new or empty SQLite file: no schema objects, no identification.
    Empty,
    /// A file of this crate in the format this build writes.
    Current,
    /// A file of this crate in an older format this build opens and can upgrade.
    Outdated(u64),
}

/// Reads the identification and version of the file behind `conn` and decides whether it can be
/// used. Does not modify the file.
pub(crate) fn inspect(conn: &Connection) -> Result<FileState, BackendError> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql_err)?;
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(FileState::Empty);
    }
    if app_id != APPLICATION_ID {
        return Err(BackendError::Corrupt(
            format!(
                "not a kv-engine-sqlite database (application_id {app_id:#010x}, expected \
             {APPLICATION_ID:#010x}, {objects} schema objects); refusing to open it"
            )
            .into(),
        ));
    }
    match u64::try_from(version) {
        Ok(FORMAT_VERSION) => Ok(FileState::Current),
        Ok(old @ OLDEST_FORMAT_VERSION..FORMAT_VERSION) => Ok(FileState::Outdated(old)),
        Ok(found) => Err(BackendError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        }),
        Err(_) => Err(BackendError::Corrupt(
            format!("negative format version {version} in a kv-engine-sqlite database").into(),
        )),
    }
}

/// Sets the page size of a new file; must run before anything is written to it (including the
/// switch to WAL mode).
pub(crate) fn prepare_new(conn: &Connection) -> Result<(), BackendError> {
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(sql_err)
}

fn page_size(conn: &Connection) -> Result<u32, BackendError> {
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(sql_err)
}

/// Upgrades a file of an older format (see [`inspect`]) to [`FORMAT_VERSION`].
///
/// Format 1 to 2: leaves WAL mode (the page size of a WAL database cannot change), sets
/// [`PAGE_SIZE`] and runs `VACUUM`, which rebuilds the file with it; the caller switches back to
/// WAL mode. Then sets the version, in a transaction that re-checks it. Each step is atomic and
/// the sequence is idempotent, so a crash anywhere leaves a file the next open upgrades again.
/// `conn` must be the only connection of this process to the file.
pub(crate) fn upgrade(conn: &mut Connection, from: u64) -> Result<(), BackendError> {
    let started = std::time::Instant::now();
    let before = page_size(conn)?;
    if before < PAGE_SIZE {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(BackendError::Io(
                format!(
                    "upgrading the format needs the database out of WAL mode, but journal_mode                      stayed {mode} (is another process using it?)"
                )
                .into(),
            ));
        }
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(sql_err)?;
        conn.execute_batch("VACUUM").map_err(sql_err)?;
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if inspect(&tx)? == FileState::Outdated(from) {
        tx.pragma_update(None, "user_version", FORMAT_VERSION as i64)
            .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)?;
    tracing::info!(
        from,
        to = FORMAT_VERSION,
        page_size_before = before,
        page_size = page_size(conn)?,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upgraded the kv-engine-sqlite database format"
    );
    Ok(())
}

/// Creates the schema in an empty file (inside an immediate transaction, re-checking that the
/// file is still empty so that two processes racing to create it cannot both do it).
pub(crate) fn initialize(conn: &mut Connection) -> Result<(), BackendError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if inspect(&tx)? == FileState::Current {
        return Ok(());
    }
    tx.execute_batch(SCHEMA).map_err(sql_err)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql_err)?;
    tx.pragma_update(None, "user_version", FORMAT_VERSION as i64)
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    tracing::info!(
        format = FORMAT_VERSION,
        "initialized a new kv-engine-sqlite database"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_then_current() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(inspect(&conn).unwrap(), FileState::Empty);
        initialize(&mut conn).unwrap();
        assert_eq!(inspect(&conn).unwrap(), FileState::Current);
        // Idempotent.
        initialize(&mut conn).unwrap();
        assert_eq!(inspect(&conn).unwrap(), FileState::Current);
    }

    #[test]
    fn newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        initialize(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        assert_eq!(
            inspect(&conn).unwrap_err(),
            BackendError::UnsupportedFormat {
                found: 3,
                supported: 2
            }
        );
    }

    #[test]
    fn version_1_is_outdated_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("v1.sqlite3")).unwrap();
        initialize(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        assert_eq!(inspect(&conn).unwrap(), FileState::Outdated(1));
        upgrade(&mut conn, 1).unwrap();
        assert_eq!(inspect(&conn).unwrap(), FileState::Current);
        assert_eq!(page_size(&conn).unwrap(), PAGE_SIZE);
    }

    #[test]
    fn foreign_file_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE other (x)").unwrap();
        let err = inspect(&conn).unwrap_err();
        assert!(
            matches!(err, BackendError::Corrupt(m) if m.message().contains("not a kv-engine-sqlite"))
        );
    }
}
