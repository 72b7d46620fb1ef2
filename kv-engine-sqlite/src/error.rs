//! Mapping of SQLite errors to [`BackendError`].

use kv_traits::BackendError;
use rusqlite::ErrorCode;

/// Converts a rusqlite error: "not a database" and "corrupt" become
/// [`BackendError::Corrupt`], everything else [`BackendError::Io`]. The text carries SQLite's
/// extended result code (for example 778 = `SQLITE_IOERR_WRITE`) for diagnosis.
pub(crate) fn sql_err(e: rusqlite::Error) -> BackendError {
    let text = error_text(&e);
    match e.sqlite_error_code() {
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
}
