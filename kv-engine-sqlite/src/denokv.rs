//! Reading a database file of the reference server (`denokv`, whose SQLite backend is also the
//! Deno CLI's local one), to move its data into a database of this project.
//!
//! The reference keeps one SQLite table of entries, `kv(k, v, v_encoding, version, seq,
//! expiration_ms)`, and the database version in `data_version(k = 0, version, seq)`; a key's
//! versionstamp is its `version` as 8 big-endian bytes followed by two zero bytes (the same
//! layout as [`kv_traits::Versionstamp::from_version`]). Files written before the reference
//! added expiry have no `expiration_ms` column (nothing expires). Queue messages live in
//! `queue` and `queue_running`; they are only counted here.
//!
//! Contract: [`DenokvFile::open`] opens the file read-only and never modifies it; a file
//! without those tables is refused with [`BackendError::Corrupt`] naming what is missing.
//! [`DenokvFile::entries_after`] pages through the entries in key order, each converted
//! exactly (an unknown value encoding or a negative version is an error, never skipped).

use std::path::Path;

use kv_traits::{BackendError, KvValue};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::sql_err;

/// One entry of a reference database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenokvEntry {
    /// The encoded key.
    pub key: Vec<u8>,
    /// The value.
    pub value: KvValue,
    /// The commit version that wrote it (the versionstamp's first 8 bytes).
    pub version: u64,
    /// Expiry time in ms since the Unix epoch, if any.
    pub expire_at_ms: Option<u64>,
}

/// A reference database file, open read-only.
pub struct DenokvFile {
    conn: Connection,
    has_expiry: bool,
}

fn corrupt(what: String) -> BackendError {
    BackendError::Corrupt(what.into())
}

impl DenokvFile {
    /// Opens `path` read-only and checks that it holds the reference's tables.
    pub fn open(path: impl AsRef<Path>) -> Result<DenokvFile, BackendError> {
        let path = path.as_ref();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err)?;
        let has_table = |name: &str| -> Result<bool, BackendError> {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(sql_err)
        };
        for table in ["kv", "data_version"] {
            if !has_table(table)? {
                return Err(corrupt(format!(
                    "{} is not a denokv database: it has no `{table}` table",
                    path.display()
                )));
            }
        }
        let has_expiry = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('kv') WHERE name = 'expiration_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(sql_err)?
            > 0;
        Ok(DenokvFile { conn, has_expiry })
    }

    /// The database version: the last commit's (0 for a database never written).
    pub fn version(&self) -> Result<u64, BackendError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT version FROM data_version WHERE k = 0", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql_err)?;
        let v = v.unwrap_or(0);
        u64::try_from(v).map_err(|_| corrupt(format!("negative database version {v}")))
    }

    /// Up to `limit` entries with keys after `after` (from the first when `None`), in key order.
    pub fn entries_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DenokvEntry>, BackendError> {
        let expiry = if self.has_expiry {
            "expiration_ms"
        } else {
            "-1"
        };
        let sql = format!(
            "SELECT k, v, v_encoding, version, {expiry} FROM kv WHERE k > ?1 ORDER BY k LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(rusqlite::params![after.unwrap_or(&[]), limit], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (key, data, encoding, version, expiry) = row.map_err(sql_err)?;
            let value = i32::try_from(encoding)
                .ok()
                .and_then(|e| KvValue::from_encoded(e, data).ok())
                .ok_or_else(|| {
                    corrupt(format!(
                        "the value of key {} has an unknown encoding {encoding}",
                        hex(&key)
                    ))
                })?;
            let version = u64::try_from(version).map_err(|_| {
                corrupt(format!(
                    "key {} has a negative version {version}",
                    hex(&key)
                ))
            })?;
            out.push(DenokvEntry {
                key,
                value,
                version,
                expire_at_ms: u64::try_from(expiry).ok(),
            });
        }
        Ok(out)
    }

    /// Queue messages the file holds (waiting and in delivery); they cannot be imported.
    pub fn queued_messages(&self) -> Result<u64, BackendError> {
        let mut n = 0u64;
        for table in ["queue", "queue_running"] {
            let exists: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            if exists > 0 {
                let c: i64 = self
                    .conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .map_err(sql_err)?;
                n += u64::try_from(c).unwrap_or(0);
            }
        }
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the reference's layout (its tables as its migrations leave them).
    fn reference_file(dir: &Path, with_expiry: bool) -> std::path::PathBuf {
        let path = dir.join(format!("denokv-{with_expiry}.sqlite"));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE data_version (k INTEGER PRIMARY KEY, version INTEGER NOT NULL);
             INSERT INTO data_version (k, version) VALUES (0, 7);
             CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL, v_encoding INTEGER NOT NULL,
                              version INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE queue (ts INTEGER NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                                 backoff_schedule TEXT NOT NULL, keys_if_undelivered BLOB NOT NULL,
                                 PRIMARY KEY (ts, id));",
        )
        .unwrap();
        if with_expiry {
            conn.execute_batch(
                "ALTER TABLE kv ADD COLUMN expiration_ms INTEGER NOT NULL DEFAULT -1;",
            )
            .unwrap();
        }
        let mut insert = conn
            .prepare("INSERT INTO kv (k, v, v_encoding, version) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        insert
            .execute(rusqlite::params![
                b"\x02a".to_vec(),
                b"\xff\x0f\x22\x01x".to_vec(),
                1,
                3
            ])
            .unwrap();
        insert
            .execute(rusqlite::params![
                b"\x02b".to_vec(),
                5u64.to_le_bytes().to_vec(),
                2,
                5
            ])
            .unwrap();
        insert
            .execute(rusqlite::params![b"\x02c".to_vec(), b"raw".to_vec(), 3, 7])
            .unwrap();
        if with_expiry {
            conn.execute("UPDATE kv SET expiration_ms = 1234 WHERE k = x'0263'", [])
                .unwrap();
        }
        conn.execute("INSERT INTO queue VALUES (1, 'id', x'00', '[]', x'')", [])
            .unwrap();
        path
    }

    #[test]
    fn reads_every_entry_in_key_order_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        for with_expiry in [false, true] {
            let file = DenokvFile::open(reference_file(dir.path(), with_expiry)).unwrap();
            assert_eq!(file.version().unwrap(), 7);
            assert_eq!(file.queued_messages().unwrap(), 1);
            let first = file.entries_after(None, 2).unwrap();
            assert_eq!(first.len(), 2);
            assert_eq!(first[0].value, KvValue::V8(b"\xff\x0f\x22\x01x".to_vec()));
            assert_eq!(first[1].value, KvValue::U64(5));
            assert_eq!(first[1].version, 5);
            let rest = file.entries_after(Some(&first[1].key), 2).unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].value, KvValue::Bytes(b"raw".to_vec()));
            assert_eq!(rest[0].expire_at_ms, with_expiry.then_some(1234));
            assert!(file
                .entries_after(Some(&rest[0].key), 2)
                .unwrap()
                .is_empty());
        }
    }

    #[test]
    fn other_files_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.sqlite");
        drop(crate::SqliteBackend::open(&ours, crate::SqliteOptions::default()).unwrap());
        assert!(matches!(
            DenokvFile::open(&ours),
            Err(BackendError::Corrupt(_))
        ));
        let path = reference_file(dir.path(), true);
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE kv SET v_encoding = 9 WHERE k = x'0261'", [])
            .unwrap();
        let file = DenokvFile::open(&path).unwrap();
        assert!(matches!(
            file.entries_after(None, 10),
            Err(BackendError::Corrupt(_))
        ));
    }
}
