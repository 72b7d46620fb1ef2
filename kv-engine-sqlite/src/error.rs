//! Mapping of SQLite errors to [`BackendError`].
//!
//! The resulting error's [`std::error::Error::source`] is the original [`rusqlite::Error`].

use kv_traits::{BackendError, Cause};
use rusqlite::ErrorCode;

/// Converts a rusqlite error: "not a database" and "corrupt" become
/// [`BackendError::Corrupt`], everything else [`BackendError::Io`]. The text carries SQLite's
/// extended result code (for example 778 = `SQLITE_IOERR_WRITE`) for diagnosis; the error
/// itself is kept as the source.
pub(crate) fn sql_err(e: rusqlite::Error) -> BackendError {
    let code = e.sqlite_error_code();
    let text = Cause::with_source(error_text(&e), e);
    match code {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            BackendError::Corrupt(text)
        }
        _ => BackendError::Io(text),
    }
}

/// The text of an SQLite error with its extended result code.
pub(crate) fn error_text(e: &rusqlite::Error) -> String {
    match e.sqlite_error() {
        Some(ffi) => format!("{e} (SQLite code {})", ffi.extended_code),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_codes_map_to_corrupt() {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            None,
        );
        assert!(matches!(sql_err(e), BackendError::Corrupt(_)));
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("disk I/O error".into()),
        );
        assert!(
            matches!(sql_err(e), BackendError::Io(m) if m == "disk I/O error (SQLite code 10)")
        );
    }

    #[test]
    fn source_is_the_rusqlite_error() {
        use std::error::Error as _;
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("disk I/O error".into()),
        );
        let err = sql_err(e);
        let source = err.source().expect("the rusqlite error is the source");
        match source.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(ffi, Some(text))) => {
                assert_eq!(ffi.code, ErrorCode::SystemIoFailure);
                assert_eq!(text, "disk I/O error");
            }
            other => panic!("expected the rusqlite error, got {other:?}"),
        }
        let kv = kv_traits::KvError::from(err);
        assert!(kv
            .source()
            .unwrap()
            .downcast_ref::<rusqlite::Error>()
            .is_some());
    }
}
