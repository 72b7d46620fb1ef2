//! The on-disk format: identification (`PRAGMA application_id`), version (`PRAGMA
//! user_version`) and schema.
//!
//! Format 1 is one table, `kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID`; SQLite
//! compares BLOBs with `memcmp` and then by length, which is the unsigned bytewise order the
//! [`kv_traits::Backend`] contract requires.

use kv_traits::BackendError;
use rusqlite::Connection;

use crate::error::sql_err;

/// `PRAGMA application_id` of files written by this crate (ASCII `"KVSQ"`).
pub const APPLICATION_ID: i32 = 0x4B56_5351;

/// The format version this build writes and reads (`PRAGMA user_version`).
pub const FORMAT_VERSION: u64 = 1;

const SCHEMA_V1: &str = "CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;";

/// What [`inspect`] found in a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileState {
    /// A new or empty SQLite file: no schema objects, no identification.
    Empty,
    /// A file of this crate in a format this build understands.
    Current,
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
    // Future format versions add migrations from older versions here.
    match u64::try_from(version) {
        Ok(FORMAT_VERSION) => Ok(FileState::Current),
        Ok(found) => Err(BackendError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        }),
        Err(_) => Err(BackendError::Corrupt(
            format!("negative format version {version} in a kv-engine-sqlite database").into(),
        )),
    }
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
    tx.execute_batch(SCHEMA_V1).map_err(sql_err)?;
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
        conn.pragma_update(None, "user_version", 2).unwrap();
        assert_eq!(
            inspect(&conn).unwrap_err(),
            BackendError::UnsupportedFormat {
                found: 2,
                supported: 1
            }
        );
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
