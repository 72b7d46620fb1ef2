//! The file format: its version (table `meta`), creating a new file, and upgrading an old one.
//!
//! | version | layout |
//! |---|---|
//! | 1 | table `kv`: key → value, stored whole ([`Layout::Whole`]) |
//! | 2 | tables `kv` and `kv_chunks`: values over the chunk size in chunks ([`Layout::Chunked`]) |
//!
//! Opening a file:
//! - a new (empty) file is initialised in format 2;
//! - a format-2 file is served in format 2;
//! - a format-1 file is upgraded ([`upgrade`]) when [`RedbOptions::upgrade_on_open`] is set, else
//!   served as it is, in format 1; a format-1 file with an upgrade in progress (table `upgrade`
//!   holds its cursor) is always upgraded: half of it is already in format 2;
//! - a version this build does not know is refused with [`BackendError::UnsupportedFormat`], and
//!   data without a version with [`BackendError::Corrupt`].
//!
//! The upgrade rewrites the keys in order, in batches of at most [`UPGRADE_BATCH_KEYS`] keys or
//! [`UPGRADE_BATCH_BYTES`] bytes, each batch one durable commit that also records the cursor (the
//! first key not yet rewritten); the last batch sets the version to 2 and drops the cursor. Keys
//! below the cursor are in format 2 and the others in format 1, so a crash anywhere leaves a file
//! the next open resumes upgrading from the cursor.

use kv_traits::BackendError;
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::error::{commit_error, durability_error, storage_error, table_error, transaction_error};
use crate::layout::{self, Layout, Replacing, CHUNKS, DATA};
use crate::RedbOptions;

/// The format version this build writes and reads, stored in the `meta` table.
pub const FORMAT_VERSION: u64 = 2;

/// The oldest format version this build opens (and upgrades).
pub const OLDEST_FORMAT_VERSION: u64 = 1;

/// The table holding engine metadata (the format version).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key of the format version in [`META`].
const FORMAT_KEY: &str = "format_version";
/// The table holding the cursor of an upgrade in progress.
const UPGRADE: TableDefinition<&str, &[u8]> = TableDefinition::new("upgrade");
/// Key of the cursor in [`UPGRADE`]: the first key not yet rewritten.
const CURSOR_KEY: &str = "next_key";

/// Most keys one upgrade commit rewrites.
pub(crate) const UPGRADE_BATCH_KEYS: usize = 10_000;
/// Most key and value bytes one upgrade commit rewrites (a batch's dirty pages stay in memory
/// until it commits).
pub(crate) const UPGRADE_BATCH_BYTES: usize = 16 << 20;

/// What [`inspect`] found in a file.
#[derive(Debug, PartialEq, Eq)]
enum FileState {
    /// No format version and no data.
    Empty,
    /// Format [`FORMAT_VERSION`].
    Current,
    /// Format 1; `upgrading` when an upgrade is in progress.
    Whole { upgrading: bool },
}

fn write_txn(db: &Database, options: &RedbOptions) -> Result<WriteTransaction, BackendError> {
    let mut txn = db.begin_write().map_err(transaction_error)?;
    txn.set_durability(Durability::Immediate)
        .map_err(durability_error)?;
    txn.set_quick_repair(options.quick_repair);
    Ok(txn)
}

/// Reads the format version (and whether an upgrade is in progress). Does not change the file.
fn inspect(db: &Database, options: &RedbOptions) -> Result<FileState, BackendError> {
    // A write transaction (rolled back) so that missing tables read as empty.
    let txn = write_txn(db, options)?;
    let meta = txn.open_table(META).map_err(table_error)?;
    let stored = meta
        .get(FORMAT_KEY)
        .map_err(storage_error)?
        .map(|g| g.value());
    match stored {
        Some(FORMAT_VERSION) => Ok(FileState::Current),
        Some(OLDEST_FORMAT_VERSION) => {
            let upgrade = txn.open_table(UPGRADE).map_err(table_error)?;
            let upgrading = upgrade.get(CURSOR_KEY).map_err(storage_error)?.is_some();
            Ok(FileState::Whole { upgrading })
        }
        Some(found) => Err(BackendError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        }),
        None => {
            let data = txn.open_table(DATA).map_err(table_error)?;
            if data.is_empty().map_err(storage_error)? {
                Ok(FileState::Empty)
            } else {
                Err(BackendError::Corrupt(
                    "the key-value table has data but no format version".into(),
                ))
            }
        }
    }
}

/// Creates the tables of a new file, in format [`FORMAT_VERSION`].
fn initialise(db: &Database, options: &RedbOptions) -> Result<(), BackendError> {
    let txn = write_txn(db, options)?;
    {
        txn.open_table(DATA).map_err(table_error)?;
        txn.open_table(CHUNKS).map_err(table_error)?;
        let mut meta = txn.open_table(META).map_err(table_error)?;
        meta.insert(FORMAT_KEY, FORMAT_VERSION)
            .map_err(storage_error)?;
    }
    txn.commit().map_err(commit_error)?;
    tracing::debug!(
        version = FORMAT_VERSION,
        "initialised redb key-value format"
    );
    Ok(())
}

/// Checks, initialises or upgrades the file's format as [`RedbOptions`] say (see the module
/// docs), and returns the layout to serve it in.
pub(crate) fn open(db: &Database, options: &RedbOptions) -> Result<Layout, BackendError> {
    let chunked = Layout::Chunked {
        chunk_size: options.chunk_size.get(),
    };
    match inspect(db, options)? {
        FileState::Empty => {
            initialise(db, options)?;
            Ok(chunked)
        }
        FileState::Current => Ok(chunked),
        FileState::Whole { upgrading } if upgrading || options.upgrade_on_open => {
            upgrade(db, options)?;
            Ok(chunked)
        }
        FileState::Whole { .. } => {
            tracing::info!(
                version = OLDEST_FORMAT_VERSION,
                "serving a redb file of an older format as it is (upgrade_on_open is off)"
            );
            Ok(Layout::Whole)
        }
    }
}

/// Upgrades a format-1 file to format [`FORMAT_VERSION`] (see the module docs).
fn upgrade(db: &Database, options: &RedbOptions) -> Result<(), BackendError> {
    let started = std::time::Instant::now();
    let mut keys = 0;
    loop {
        let (rewritten, done) =
            upgrade_batch(db, options, UPGRADE_BATCH_KEYS, UPGRADE_BATCH_BYTES)?;
        keys += rewritten;
        if done {
            break;
        }
        tracing::debug!(keys, "upgrading the redb key-value format");
    }
    tracing::info!(
        from = OLDEST_FORMAT_VERSION,
        to = FORMAT_VERSION,
        keys,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upgraded the redb key-value format"
    );
    Ok(())
}

/// One upgrade commit: rewrites up to `max_keys` keys or `max_bytes` bytes from the cursor on.
/// Returns how many keys it rewrote and whether the upgrade is complete.
pub(crate) fn upgrade_batch(
    db: &Database,
    options: &RedbOptions,
    max_keys: usize,
    max_bytes: usize,
) -> Result<(usize, bool), BackendError> {
    let layout = Layout::Chunked {
        chunk_size: options.chunk_size.get(),
    };
    let txn = write_txn(db, options)?;
    let (rewritten, done) = {
        let mut meta = txn.open_table(META).map_err(table_error)?;
        // Another process may have finished it; the version says.
        if meta
            .get(FORMAT_KEY)
            .map_err(storage_error)?
            .map(|g| g.value())
            != Some(OLDEST_FORMAT_VERSION)
        {
            return Ok((0, true));
        }
        let mut upgrade = txn.open_table(UPGRADE).map_err(table_error)?;
        let mut data = txn.open_table(DATA).map_err(table_error)?;
        let mut chunks = txn.open_table(CHUNKS).map_err(table_error)?;
        let cursor = upgrade
            .get(CURSOR_KEY)
            .map_err(storage_error)?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for item in data
            .range::<&[u8]>(cursor.as_slice()..)
            .map_err(storage_error)?
        {
            if batch.len() >= max_keys.max(1) || bytes >= max_bytes {
                more = true;
                break;
            }
            let (k, v) = item.map_err(storage_error)?;
            bytes += k.value().len() + v.value().len();
            batch.push((k.value().to_vec(), v.value().to_vec()));
        }
        for (key, value) in &batch {
            layout::put(
                layout,
                &mut data,
                Some(&mut chunks),
                key,
                value,
                Replacing::WholeValue,
            )?;
        }
        match batch.last() {
            Some((last, _)) if more => {
                // The smallest key above `last`.
                let mut next = last.clone();
                next.push(0);
                upgrade
                    .insert(CURSOR_KEY, next.as_slice())
                    .map_err(storage_error)?;
            }
            _ => {
                upgrade.remove(CURSOR_KEY).map_err(storage_error)?;
                meta.insert(FORMAT_KEY, FORMAT_VERSION)
                    .map_err(storage_error)?;
            }
        }
        (batch.len(), !more)
    };
    if done {
        txn.delete_table(UPGRADE).map_err(table_error)?;
    }
    txn.commit().map_err(commit_error)?;
    Ok((rewritten, done))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use redb::ReadableDatabase;

    use super::*;

    fn format_1_database(pairs: &[(Vec<u8>, Vec<u8>)]) -> Database {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, OLDEST_FORMAT_VERSION)
                .unwrap();
            let mut data = txn.open_table(DATA).unwrap();
            for (k, v) in pairs {
                data.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        db
    }

    fn version(db: &Database) -> Option<u64> {
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let version = meta.get(FORMAT_KEY).unwrap().map(|g| g.value());
        version
    }

    /// An upgrade interrupted after its first batch leaves version 1 and a cursor; the next open
    /// finishes it even with `upgrade_on_open` off, and every value reads back.
    #[test]
    fn an_interrupted_upgrade_resumes() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..25u8)
            .map(|i| (vec![i], vec![i; usize::from(i) * 3]))
            .collect();
        let db = format_1_database(&pairs);
        let options = RedbOptions {
            chunk_size: NonZeroUsize::new(20).unwrap(),
            upgrade_on_open: false,
            ..RedbOptions::default()
        };
        assert_eq!(
            upgrade_batch(&db, &options, 10, usize::MAX).unwrap(),
            (10, false)
        );
        assert_eq!(version(&db), Some(OLDEST_FORMAT_VERSION));
        assert_eq!(
            inspect(&db, &options).unwrap(),
            FileState::Whole { upgrading: true }
        );

        let layout = open(&db, &options).unwrap();
        assert_eq!(layout, Layout::Chunked { chunk_size: 20 });
        assert_eq!(version(&db), Some(FORMAT_VERSION));
        let txn = db.begin_read().unwrap();
        let data = txn.open_table(DATA).unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        assert!(txn.open_table(UPGRADE).is_err(), "the cursor table is gone");
        let read = layout::scan(layout, &data, Some(&chunks), (b"", b"\xff"), 100, false).unwrap();
        assert_eq!(read, pairs);
    }

    /// Limits by bytes too; an upgrade of an empty format-1 file is one commit.
    #[test]
    fn batches_are_bounded_by_bytes() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5u8).map(|i| (vec![i], vec![i; 50])).collect();
        let db = format_1_database(&pairs);
        let options = RedbOptions::default();
        assert_eq!(upgrade_batch(&db, &options, 100, 100).unwrap(), (2, false));
        assert_eq!(upgrade_batch(&db, &options, 100, 100).unwrap(), (2, false));
        assert_eq!(upgrade_batch(&db, &options, 100, 100).unwrap(), (1, true));
        assert_eq!(upgrade_batch(&db, &options, 100, 100).unwrap(), (0, true));

        let empty = format_1_database(&[]);
        assert_eq!(
            upgrade_batch(&empty, &options, 100, 100).unwrap(),
            (0, true)
        );
        assert_eq!(version(&empty), Some(FORMAT_VERSION));
    }
}
