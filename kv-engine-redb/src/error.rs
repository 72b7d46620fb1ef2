//! Mapping of redb's error types onto [`BackendError`].
//!
//! redb's errors are layered (`StorageError` inside `TransactionError`, `TableError`,
//! `CommitError`, `DatabaseError`) and non-exhaustive; every variant lands on the
//! [`BackendError`] that tells the caller what it can do about it:
//!
//! - redb's "previous I/O error" latch ([`redb::StorageError::PreviousIo`]) becomes
//!   [`BackendError::Poisoned`] (the engine refuses writes until reopened);
//! - a closed database becomes [`BackendError::Closed`];
//! - corruption, and a file that is not a redb database, become [`BackendError::Corrupt`];
//! - a file needing a redb format upgrade becomes [`BackendError::UnsupportedFormat`];
//! - everything else (I/O, lock conflicts, internal errors) becomes [`BackendError::Io`].

use kv_traits::BackendError;
use redb::{CommitError, DatabaseError, StorageError, TableError, TransactionError};

/// The redb file format version that redb 4.x reads and writes.
const REDB_FILE_FORMAT: u64 = 3;

pub(crate) fn storage_error(error: StorageError) -> BackendError {
    match error {
        StorageError::Corrupted(message) => BackendError::Corrupt(message),
        StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            BackendError::Corrupt(format!("not a readable redb file: {io}"))
        }
        StorageError::PreviousIo => BackendError::Poisoned(StorageError::PreviousIo.to_string()),
        StorageError::DatabaseClosed => BackendError::Closed,
        other => BackendError::Io(other.to_string()),
    }
}

pub(crate) fn transaction_error(error: TransactionError) -> BackendError {
    match error {
        TransactionError::Storage(storage) => storage_error(storage),
        other => BackendError::Io(other.to_string()),
    }
}

pub(crate) fn table_error(error: TableError) -> BackendError {
    match error {
        TableError::Storage(storage) => storage_error(storage),
        other => BackendError::Corrupt(format!("cannot open table: {other}")),
    }
}

pub(crate) fn commit_error(error: CommitError) -> BackendError {
    match error {
        CommitError::Storage(storage) => storage_error(storage),
        other => BackendError::Io(other.to_string()),
    }
}

pub(crate) fn database_error(error: DatabaseError) -> BackendError {
    match error {
        DatabaseError::Storage(storage) => storage_error(storage),
        DatabaseError::UpgradeRequired(found) => BackendError::UnsupportedFormat {
            found: u64::from(found),
            supported: REDB_FILE_FORMAT,
        },
        DatabaseError::DatabaseAlreadyOpen => BackendError::Io(format!(
            "{} (another handle or process has the file open)",
            DatabaseError::DatabaseAlreadyOpen
        )),
        other => BackendError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_io_is_poisoned() {
        assert!(matches!(
            storage_error(StorageError::PreviousIo),
            BackendError::Poisoned(_)
        ));
        assert!(matches!(
            transaction_error(TransactionError::Storage(StorageError::PreviousIo)),
            BackendError::Poisoned(_)
        ));
    }

    #[test]
    fn closed_and_corrupt() {
        assert_eq!(
            storage_error(StorageError::DatabaseClosed),
            BackendError::Closed
        );
        assert_eq!(
            storage_error(StorageError::Corrupted("bad page".into())),
            BackendError::Corrupt("bad page".into())
        );
        let not_db = std::io::Error::new(std::io::ErrorKind::InvalidData, "magic");
        assert!(matches!(
            storage_error(StorageError::Io(not_db)),
            BackendError::Corrupt(_)
        ));
        let io = std::io::Error::other("disk on fire");
        assert!(
            matches!(storage_error(StorageError::Io(io)), BackendError::Io(m) if m.contains("disk on fire"))
        );
    }

    #[test]
    fn upgrade_required_is_unsupported_format() {
        assert_eq!(
            database_error(DatabaseError::UpgradeRequired(2)),
            BackendError::UnsupportedFormat {
                found: 2,
                supported: 3
            }
        );
        assert!(matches!(
            database_error(DatabaseError::DatabaseAlreadyOpen),
            BackendError::Io(_)
        ));
    }
}
