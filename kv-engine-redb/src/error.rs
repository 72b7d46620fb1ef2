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
//!
//! The redb error itself is kept as the [`std::error::Error::source`] of the result (for a
//! layered error, the innermost [`StorageError`] when that is what decided the variant).

use kv_traits::{BackendError, Cause};
use redb::{
    CommitError, DatabaseError, SetDurabilityError, StorageError, TableError, TransactionError,
};

/// The redb file format version that redb 4.x reads and writes.
const REDB_FILE_FORMAT: u64 = 3;

/// A cause whose message is the error's text and whose source is the error.
fn cause(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
    Cause::with_source(error.to_string(), error)
}

pub(crate) fn storage_error(error: StorageError) -> BackendError {
    match error {
        StorageError::Corrupted(message) => BackendError::Corrupt(Cause::with_source(
            message.clone(),
            StorageError::Corrupted(message),
        )),
        StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            BackendError::Corrupt(Cause::with_source(
                format!("not a readable redb file: {io}"),
                StorageError::Io(io),
            ))
        }
        StorageError::PreviousIo => BackendError::Poisoned(cause(StorageError::PreviousIo)),
        StorageError::DatabaseClosed => BackendError::Closed,
        other => BackendError::Io(cause(other)),
    }
}

pub(crate) fn transaction_error(error: TransactionError) -> BackendError {
    match error {
        TransactionError::Storage(storage) => storage_error(storage),
        other => BackendError::Io(cause(other)),
    }
}

pub(crate) fn table_error(error: TableError) -> BackendError {
    match error {
        TableError::Storage(storage) => storage_error(storage),
        other => BackendError::Corrupt(Cause::with_source(
            format!("cannot open table: {other}"),
            other,
        )),
    }
}

pub(crate) fn commit_error(error: CommitError) -> BackendError {
    match error {
        CommitError::Storage(storage) => storage_error(storage),
        other => BackendError::Io(cause(other)),
    }
}

pub(crate) fn database_error(error: DatabaseError) -> BackendError {
    match error {
        DatabaseError::Storage(storage) => storage_error(storage),
        DatabaseError::UpgradeRequired(found) => BackendError::UnsupportedFormat {
            found: u64::from(found),
            supported: REDB_FILE_FORMAT,
        },
        DatabaseError::DatabaseAlreadyOpen => BackendError::Io(Cause::with_source(
            format!(
                "{} (another handle or process has the file open)",
                DatabaseError::DatabaseAlreadyOpen
            ),
            DatabaseError::DatabaseAlreadyOpen,
        )),
        other => BackendError::Io(cause(other)),
    }
}

pub(crate) fn durability_error(error: SetDurabilityError) -> BackendError {
    BackendError::Io(cause(error))
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
            matches!(storage_error(StorageError::Io(io)), BackendError::Io(m) if m.message().contains("disk on fire"))
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

    /// The redb error that `err`'s source chain reaches first, as `E`.
    fn native<E: std::error::Error + 'static>(err: &BackendError) -> &E {
        let source = std::error::Error::source(err).expect("a source");
        source
            .downcast_ref::<E>()
            .unwrap_or_else(|| panic!("source is not the redb error: {source:?}"))
    }

    #[test]
    fn sources_are_the_redb_errors() {
        let io = std::io::Error::other("disk on fire");
        let err = storage_error(StorageError::Io(io));
        assert!(
            matches!(native::<StorageError>(&err), StorageError::Io(io) if io.to_string() == "disk on fire")
        );
        let err = storage_error(StorageError::Corrupted("bad page".into()));
        assert!(
            matches!(native::<StorageError>(&err), StorageError::Corrupted(m) if m == "bad page")
        );
        let err = transaction_error(TransactionError::Storage(StorageError::PreviousIo));
        assert!(matches!(
            native::<StorageError>(&err),
            StorageError::PreviousIo
        ));
        let err = database_error(DatabaseError::DatabaseAlreadyOpen);
        assert!(matches!(
            native::<DatabaseError>(&err),
            DatabaseError::DatabaseAlreadyOpen
        ));
        let err = durability_error(SetDurabilityError::PersistentSavepointModified);
        assert!(matches!(
            native::<SetDurabilityError>(&err),
            SetDurabilityError::PersistentSavepointModified
        ));
        let kv = kv_traits::KvError::from(storage_error(StorageError::PreviousIo));
        let source = std::error::Error::source(&kv).expect("a source");
        assert!(source.downcast_ref::<StorageError>().is_some());
    }
}
